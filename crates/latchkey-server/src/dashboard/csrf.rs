//! CSRF protection and form bodies.
//!
//! Every form carries a token in a hidden `csrf` field: HMAC-SHA256 of a
//! fixed purpose string keyed with a secret only this browser holds in an
//! `HttpOnly; SameSite=Strict` cookie (the session id; on the sign-in form,
//! a random sign-in cookie). The token reveals nothing about the key, and
//! is checked in constant time (`ring::hmac::verify`). Independently, a POST
//! whose `Origin` is another origin, or whose `Sec-Fetch-Site` says it came
//! from another site, is refused before anything else happens.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::header::{CONTENT_TYPE, HOST, ORIGIN};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

use super::session::{Session, to_signin};
use super::view::PageError;
use crate::ops::WriteGuard;
use crate::state::AppState;

/// What the session's form tokens are derived for.
pub const SESSION_PURPOSE: &[u8] = b"latchkey dashboard form v1";
/// What the sign-in form's token is derived for.
pub const SIGNIN_PURPOSE: &[u8] = b"latchkey dashboard sign-in v1";

/// The form token for `key` (a cookie value).
pub fn token(key: &str, purpose: &[u8]) -> String {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes());
    URL_SAFE_NO_PAD.encode(hmac::sign(&k, purpose).as_ref())
}

/// Whether `given` is the form token for `key`, compared in constant time.
pub fn verify(key: &str, purpose: &[u8], given: Option<&str>) -> bool {
    let Some(tag) = given.and_then(|t| URL_SAFE_NO_PAD.decode(t).ok()) else {
        return false;
    };
    let k = hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes());
    hmac::verify(&k, purpose, &tag).is_ok()
}

fn cross_site() -> PageError {
    PageError::new(
        StatusCode::FORBIDDEN,
        "Refused",
        "This form was sent from another site, so it was refused and nothing changed. \
         Use the dashboard's own pages.",
    )
}

/// Refuses a request that a browser says comes from another origin.
pub fn same_origin(parts: &Parts) -> Result<(), PageError> {
    if let Some(site) = parts.headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Err(cross_site());
    }
    if let Some(origin) = parts.headers.get(ORIGIN) {
        let host = parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()));
        let origin = origin.to_str().unwrap_or("null");
        let authority = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        if host.is_none() || authority.is_none() || authority != host {
            return Err(cross_site());
        }
    }
    Ok(())
}

/// A parsed `application/x-www-form-urlencoded` body.
#[derive(Debug, Default)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    /// The first value of a field.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a field (checkboxes).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

impl From<Vec<(String, String)>> for Fields {
    fn from(pairs: Vec<(String, String)>) -> Self {
        Fields(pairs)
    }
}

/// Reads a form body of at most the configured size.
pub async fn read_form(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Fields, PageError> {
    let is_form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(PageError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Not a form",
            "Send this from the form on the dashboard page.",
        ));
    }
    let bytes = axum::body::to_bytes(body, state.config.max_body_bytes)
        .await
        .map_err(|_| {
            PageError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too large",
                "The form is larger than the server accepts. Shorten what you entered.",
            )
        })?;
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
        .map(Fields)
        .map_err(|_| {
            PageError::new(
                StatusCode::BAD_REQUEST,
                "Unreadable form",
                "The form could not be read. Reload the page and try again.",
            )
        })
}

/// A form posted by a signed-in person: same origin, a live session, the
/// session's CSRF token. It holds the write lock (`WriteGuard`) that API
/// writes hold, taken after the body has been read (so a slow client cannot
/// hold it) and before the session is checked, for as long as the handler
/// runs.
#[derive(Debug)]
pub struct SignedForm {
    pub session: Session,
    pub fields: Fields,
    /// Passed to the operations that need it.
    pub write: WriteGuard,
}

impl FromRequest<AppState> for SignedForm {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (parts, body) = req.into_parts();
        same_origin(&parts).map_err(IntoResponse::into_response)?;
        let fields = read_form(state, &parts.headers, body)
            .await
            .map_err(IntoResponse::into_response)?;
        let write = WriteGuard::for_session(state)
            .await
            .map_err(IntoResponse::into_response)?;
        let session = match Session::load(state, &parts).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(to_signin()),
            Err(e) => return Err(e.into_response()),
        };
        let id = super::session::cookie(&parts.headers, super::session::SESSION_COOKIE)
            .unwrap_or_default();
        if !verify(id, SESSION_PURPOSE, fields.get("csrf")) {
            return Err(PageError::new(
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form has expired or did not come from this dashboard, so nothing changed. \
                 Go back, reload the page and try again.",
            )
            .into_response());
        }
        Ok(SignedForm {
            session,
            fields,
            write,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_for_their_key_and_purpose() {
        let key = "k".repeat(43);
        let t = token(&key, SESSION_PURPOSE);
        assert!(verify(&key, SESSION_PURPOSE, Some(&t)));
        assert!(!verify(&key, SIGNIN_PURPOSE, Some(&t)));
        assert!(!verify(&"j".repeat(43), SESSION_PURPOSE, Some(&t)));
        assert!(!verify(&key, SESSION_PURPOSE, None));
        assert!(!verify(&key, SESSION_PURPOSE, Some("")));
        assert!(!verify(&key, SESSION_PURPOSE, Some(&t[..20])));
    }

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().method("POST").uri("/dashboard/apps");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    #[test]
    fn cross_site_posts_are_refused() {
        let host = ("host", "127.0.0.1:7400");
        assert!(same_origin(&parts(&[host])).is_ok());
        assert!(same_origin(&parts(&[host, ("origin", "http://127.0.0.1:7400")])).is_ok());
        assert!(
            same_origin(&parts(&[
                host,
                ("origin", "https://127.0.0.1:7400"),
                ("sec-fetch-site", "same-origin")
            ]))
            .is_ok()
        );
        for bad in [
            vec![host, ("origin", "https://evil.example")],
            vec![host, ("origin", "null")],
            vec![host, ("origin", "http://127.0.0.1:7401")],
            vec![host, ("sec-fetch-site", "cross-site")],
            vec![host, ("sec-fetch-site", "same-site")],
            vec![("origin", "http://127.0.0.1:7400")],
        ] {
            assert!(same_origin(&parts(&bad)).is_err(), "{bad:?}");
        }
    }
}
