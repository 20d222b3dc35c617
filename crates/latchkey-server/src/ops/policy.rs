//! App settings that Latchkey itself acts on. Other members of `settings`
//! are the customer's own and are stored as given.

use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::json_values;

/// A key older than this is reported as due for rotation.
pub const MAX_KEY_AGE_DAYS: &str = "maxKeyAgeDays";
/// JWTs signed by the app's keys may live at most this long (`exp - iat`),
/// and must carry `exp`.
pub const MAX_TOKEN_TTL_SECONDS: &str = "maxTokenTtlSeconds";

/// Exact origins (`scheme://host[:port]`) whose browsers may call the API
/// with appUser credentials; absent or null: any origin.
pub const ALLOWED_ORIGINS: &str = "allowedOrigins";
/// Refuse the app's server credentials (app key by Basic or JWT) when a
/// request carries an `Origin` header. On unless set to false.
pub const BLOCK_BROWSER_SECRETS: &str = "blockBrowserSecrets";

/// The rate limit of the app's keys that set none of their own:
/// `{"limit": N, "windowSeconds": S}`.
pub const DEFAULT_KEY_RATELIMIT: &str = "defaultKeyRatelimit";

const MAX_ORIGINS: usize = 50;

const KEY_AGE_RANGE: (i64, i64) = (1, 3650);
const TOKEN_TTL_RANGE: (i64, i64) = (60, 31_536_000);

/// Checks an integer setting, and stores one written with a zero fraction
/// (`3600.0`, an integer to JSON Schema) as the plain integer, so that
/// every reader of the stored settings sees an integer.
fn check_int(settings: &mut Map<String, Value>, name: &str, (lo, hi): (i64, i64)) -> ApiResult<()> {
    let Some(v) = settings.get_mut(name) else {
        return Ok(());
    };
    match json_values::integer_value(v) {
        Some(n) if (lo..=hi).contains(&n) => {
            *v = Value::from(n);
            Ok(())
        }
        _ => Err(ApiError::bad_request(format!(
            "settings.{name} must be an integer from {lo} to {hi}, or null to remove it"
        ))),
    }
}

/// An exact origin as browsers send it: `http(s)://host[:port]`, no path,
/// no trailing slash, lower-case scheme and host.
pub fn is_origin(s: &str) -> bool {
    let Some(rest) = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
    else {
        return false;
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.contains(']') || h.ends_with(']') => (h, Some(p)),
        _ => (rest, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.[]:".contains(c));
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok());
    host_ok && port_ok
}

/// Checks the settings Latchkey acts on (after a merge), writing integers
/// given with a zero fraction as plain integers.
pub fn validate(settings: &mut Map<String, Value>) -> ApiResult<()> {
    check_int(settings, MAX_KEY_AGE_DAYS, KEY_AGE_RANGE)?;
    check_int(settings, MAX_TOKEN_TTL_SECONDS, TOKEN_TTL_RANGE)?;
    if let Some(v) = settings.get(BLOCK_BROWSER_SECRETS)
        && !v.is_boolean()
    {
        return Err(ApiError::bad_request(format!(
            "settings.{BLOCK_BROWSER_SECRETS} must be true or false"
        )));
    }
    if let Some(v) = settings.get_mut(DEFAULT_KEY_RATELIMIT) {
        let limit = ratelimit_of(v).ok_or_else(|| {
            ApiError::bad_request(format!(
                "settings.{DEFAULT_KEY_RATELIMIT} must be {{\"limit\": N, \"windowSeconds\": S}} \
                 with N from 1 to {} and S from 1 to {}, or null to remove it",
                u32::MAX,
                latchkey_core::policy::MAX_WINDOW_SECONDS
            ))
        })?;
        *v = serde_json::json!({"limit": limit.limit, "windowSeconds": limit.window_seconds});
    }
    if let Some(v) = settings.get(ALLOWED_ORIGINS) {
        let ok = v.as_array().is_some_and(|list| {
            list.len() <= MAX_ORIGINS && list.iter().all(|o| o.as_str().is_some_and(is_origin))
        });
        if !ok {
            return Err(ApiError::bad_request(format!(
                "settings.{ALLOWED_ORIGINS} must be a list of at most {MAX_ORIGINS} exact origins \
                 such as \"https://app.example.com\" (scheme and host in lower case, no path), \
                 or null to allow any origin"
            )));
        }
    }
    Ok(())
}

/// What the settings ask of the verification path.
pub fn app_policy(settings: &Map<String, Value>) -> latchkey_core::AppPolicy {
    latchkey_core::AppPolicy {
        max_token_ttl: max_token_ttl(settings),
        allowed_origins: settings
            .get(ALLOWED_ORIGINS)
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            }),
        block_browser_secrets: settings
            .get(BLOCK_BROWSER_SECRETS)
            .and_then(Value::as_bool)
            .unwrap_or(true),
        default_key_ratelimit: settings.get(DEFAULT_KEY_RATELIMIT).and_then(ratelimit_of),
    }
}

/// A rate limit written as `{"limit": N, "windowSeconds": S}` (integers,
/// a zero fraction allowed), within the documented bounds.
pub fn ratelimit_of(v: &Value) -> Option<latchkey_core::policy::RateLimit> {
    let obj = v.as_object()?;
    if obj.keys().any(|k| k != "limit" && k != "windowSeconds") {
        return None;
    }
    let limit = u32::try_from(json_values::integer_value(obj.get("limit")?)?).ok()?;
    let window = u32::try_from(json_values::integer_value(obj.get("windowSeconds")?)?).ok()?;
    let limit = latchkey_core::policy::RateLimit {
        limit,
        window_seconds: window,
    };
    latchkey_core::policy::check_ratelimit(&limit).ok()?;
    Some(limit)
}

pub fn max_token_ttl(settings: &Map<String, Value>) -> Option<i64> {
    settings
        .get(MAX_TOKEN_TTL_SECONDS)
        .and_then(json_values::integer_value)
}

pub fn max_key_age_days(settings: &Map<String, Value>) -> Option<i64> {
    settings
        .get(MAX_KEY_AGE_DAYS)
        .and_then(json_values::integer_value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_exact() {
        for ok in [
            "https://app.example.com",
            "http://localhost:3000",
            "http://127.0.0.1:8080",
        ] {
            assert!(is_origin(ok), "{ok}");
        }
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://App.example.com",
            "https://app.example.com/path",
            "ftp://x",
            "https://",
            "https://x:99999",
            "*",
        ] {
            assert!(!is_origin(bad), "{bad}");
        }
    }
}
