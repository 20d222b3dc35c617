//! App settings that Latchkey itself acts on. Other members of `settings`
//! are the customer's own and are stored as given.

use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

/// A key older than this is reported as due for rotation.
pub const MAX_KEY_AGE_DAYS: &str = "maxKeyAgeDays";
/// JWTs signed by the app's keys may live at most this long (`exp - iat`),
/// and must carry `exp`.
pub const MAX_TOKEN_TTL_SECONDS: &str = "maxTokenTtlSeconds";

const KEY_AGE_RANGE: (i64, i64) = (1, 3650);
const TOKEN_TTL_RANGE: (i64, i64) = (60, 31_536_000);

fn check_int(settings: &Map<String, Value>, name: &str, (lo, hi): (i64, i64)) -> ApiResult<()> {
    match settings.get(name) {
        None => Ok(()),
        Some(v) => match v.as_i64() {
            Some(n) if (lo..=hi).contains(&n) => Ok(()),
            _ => Err(ApiError::bad_request(format!(
                "settings.{name} must be an integer from {lo} to {hi}, or null to remove it"
            ))),
        },
    }
}

/// Checks the settings Latchkey acts on (after a merge).
pub fn validate(settings: &Map<String, Value>) -> ApiResult<()> {
    check_int(settings, MAX_KEY_AGE_DAYS, KEY_AGE_RANGE)?;
    check_int(settings, MAX_TOKEN_TTL_SECONDS, TOKEN_TTL_RANGE)
}

pub fn max_token_ttl(settings: &Map<String, Value>) -> Option<i64> {
    settings.get(MAX_TOKEN_TTL_SECONDS).and_then(Value::as_i64)
}

pub fn max_key_age_days(settings: &Map<String, Value>) -> Option<i64> {
    settings.get(MAX_KEY_AGE_DAYS).and_then(Value::as_i64)
}
