//! Signing in and out, the session cookie, and the throttle on failed
//! sign-ins.
//!
//! A session id is 256 random bits, sent to the browser once in an
//! `HttpOnly; SameSite=Strict; Path=/dashboard` cookie (`Secure` when the
//! server runs with TLS) and stored only as its SHA-256. Sessions end after
//! [`SESSION_LIFETIME_SECONDS`], at sign-out, or when the user account or
//! its account is deleted.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};

use askama::Template;
use axum::Extension;
use axum::extract::{ConnectInfo, FromRequestParts, RawQuery, Request, State};
use axum::http::header::{COOKIE, RETRY_AFTER, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_core::{Principal, password};
use latchkey_store::{DashboardSession, UserAccount};
use ring::rand::SecureRandom;

use super::csrf::{self, SignedForm};
use super::view::{PageError, render};
use crate::audit;
use crate::bootstrap::normalize_email;
use crate::error::ApiError;
use crate::extract::Caller;
use crate::state::AppState;

/// The session cookie.
pub const SESSION_COOKIE: &str = "latchkey_session";
/// The sign-in form's own cookie (the key of its CSRF token).
pub const SIGNIN_COOKIE: &str = "latchkey_signin";
/// A session ends this long after sign-in, whatever happens: 12 hours.
pub const SESSION_LIFETIME_SECONDS: i64 = 12 * 3600;
/// How long a sign-in form stays usable.
const SIGNIN_FORM_SECONDS: i64 = 3600;

/// Failed sign-ins are counted over this window...
const THROTTLE_WINDOW: i64 = 15 * 60;
/// ...per email address...
const FAILURES_PER_EMAIL: usize = 5;
/// ...and per client address (several people may share one).
const FAILURES_PER_ADDRESS: usize = 20;
/// Most keys the throttle tracks; past it, those with the fewest recent
/// failures are forgotten first.
const MAX_TRACKED: usize = 50_000;

/// Sign-in failures per email and per client address, in memory.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, Vec<i64>>>,
}

impl Throttle {
    fn keys(email: &str, address: Option<&str>) -> Vec<(String, usize)> {
        let mut keys = vec![(format!("email:{email}"), FAILURES_PER_EMAIL)];
        if let Some(a) = address {
            keys.push((format!("address:{a}"), FAILURES_PER_ADDRESS));
        }
        keys
    }

    /// Starts an attempt: `Err(seconds to wait)` if the email or the
    /// address has failed too often lately; otherwise the attempt is
    /// counted as a failure until [`Throttle::succeeded`] says otherwise.
    /// Checking and counting under one lock means parallel guesses cannot
    /// slip past the limit while their passwords are being verified.
    pub fn begin(&self, email: &str, address: Option<&str>, now: i64) -> Result<(), i64> {
        let Ok(mut map) = self.failures.lock() else {
            return Ok(());
        };
        let keys = Self::keys(email, address);
        let wait = keys
            .iter()
            .filter_map(|(key, limit)| {
                let times = map.get_mut(key)?;
                times.retain(|t| now - t < THROTTLE_WINDOW);
                // Allowed again once the failure `limit` places from the
                // newest leaves the window.
                let n = times.len();
                (n >= *limit).then(|| times[n - limit] + THROTTLE_WINDOW - now)
            })
            .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        if map.len() >= MAX_TRACKED {
            map.retain(|_, times| {
                times.retain(|t| now - t < THROTTLE_WINDOW);
                !times.is_empty()
            });
        }
        if map.len() >= MAX_TRACKED {
            let mut counts: Vec<(usize, String)> =
                map.iter().map(|(k, v)| (v.len(), k.clone())).collect();
            counts.sort();
            for (_, key) in counts.into_iter().take(MAX_TRACKED / 10) {
                map.remove(&key);
            }
        }
        for (key, _) in keys {
            map.entry(key).or_default().push(now);
        }
        Ok(())
    }

    /// A successful sign-in (begun at `at`): the email's failures are
    /// cleared, and the address's count loses this attempt only (one good
    /// account must not reset a guesser's count).
    pub fn succeeded(&self, email: &str, address: Option<&str>, at: i64) {
        let Ok(mut map) = self.failures.lock() else {
            return;
        };
        map.remove(&format!("email:{email}"));
        if let Some(times) = address.and_then(|a| map.get_mut(&format!("address:{a}")))
            && let Some(i) = times.iter().rposition(|t| *t == at)
        {
            times.remove(i);
        }
    }
}

/// The value of a cookie in the request, if it looks like one of ours
/// (43 base64url characters: 256 bits).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
        .filter(|v| {
            v.len() == 43
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A `Set-Cookie` value for one of the dashboard's cookies; `max_age` 0
/// removes it.
pub(super) fn set_cookie(state: &AppState, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state.config.tls.is_some() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// 256 random bits, base64url.
pub(super) fn random_token(state: &AppState) -> Result<String, PageError> {
    let mut bytes = [0u8; 32];
    state.rng.fill(&mut bytes).map_err(|_| {
        tracing::error!("the system random number generator failed");
        PageError::from(ApiError::internal())
    })?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

pub(super) fn hash(session_id: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, session_id.as_bytes())
        .as_ref()
        .to_vec()
}

/// The client's address, for the audit log and the throttle.
pub fn address(parts: &Parts) -> Option<String> {
    peer(parts).map(|ip| ip.to_string())
}

/// The client's IP address.
pub fn peer(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip())
}

/// A signed-in person.
#[derive(Debug, Clone)]
pub struct Session {
    pub id_hash: Vec<u8>,
    pub user_account_id: String,
    pub account_id: String,
    pub email: String,
    /// The person's role in the account (teams), read with the session.
    pub role: latchkey_core::policy::Role,
    /// The token every form of this session carries.
    pub csrf: String,
    pub peer: Option<IpAddr>,
}

impl Session {
    /// The request's session, if its cookie names a live one.
    pub async fn load(state: &AppState, parts: &Parts) -> Result<Option<Session>, PageError> {
        let Some(id) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Ok(None);
        };
        let id_hash = hash(id);
        let Some(found) = state
            .store
            .get_dashboard_session(&id_hash, state.now())
            .await
            .map_err(ApiError::from)?
        else {
            return Ok(None);
        };
        let Some(user) = state
            .store
            .get_user_account(&found.user_account_id)
            .await
            .map_err(ApiError::from)?
        else {
            return Ok(None);
        };
        Ok(Some(Session {
            id_hash,
            user_account_id: found.user_account_id,
            account_id: found.account_id,
            email: user.email,
            role: user.role,
            csrf: csrf::token(id, csrf::SESSION_PURPOSE),
            peer: peer(parts),
        }))
    }

    pub fn principal(&self) -> Principal {
        Principal::Session {
            account_id: self.account_id.as_str().into(),
            user_account_id: self.user_account_id.as_str().into(),
        }
    }

    /// The caller the API's shared functions act for: this person, without
    /// a key.
    pub fn caller(&self) -> Caller {
        Caller {
            principal: self.principal(),
            peer: self.peer,
            policy: None,
            role: Some(self.role),
        }
    }
}

/// Where a request without a live session is sent.
pub fn to_signin() -> Response {
    Redirect::to("/dashboard/signin").into_response()
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match Session::load(state, parts).await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(to_signin()),
            Err(e) => Err(e.into_response()),
        }
    }
}

#[derive(Template)]
#[template(path = "dashboard/signin.html")]
struct SigninPage<'a> {
    csrf: &'a str,
    email: &'a str,
    error: Option<&'a str>,
    notice: Option<&'a str>,
}

/// The sign-in page, with the sign-in cookie its token is bound to.
fn signin_page(
    state: &AppState,
    key: &str,
    status: StatusCode,
    email: &str,
    error: Option<&str>,
    notice: Option<&str>,
) -> Response {
    let csrf = csrf::token(key, csrf::SIGNIN_PURPOSE);
    let mut response = render(
        status,
        &SigninPage {
            csrf: &csrf,
            email,
            error,
            notice,
        },
    );
    response.headers_mut().append(
        SET_COOKIE,
        set_cookie(state, SIGNIN_COOKIE, key, SIGNIN_FORM_SECONDS),
    );
    response
}

/// `GET /dashboard/signin`.
pub async fn signin_form(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    match Session::load(&state, &parts).await {
        Ok(Some(_)) => return Redirect::to("/dashboard").into_response(),
        Ok(None) => {}
        Err(e) => return e.into_response(),
    }
    let key = match cookie(&parts.headers, SIGNIN_COOKIE) {
        Some(k) => k.to_string(),
        None => match random_token(&state) {
            Ok(k) => k,
            Err(e) => return e.into_response(),
        },
    };
    let signed_out = query.as_deref() == Some("done=signed-out");
    signin_page(
        &state,
        &key,
        StatusCode::OK,
        "",
        None,
        signed_out.then_some("You have signed out."),
    )
}

/// The same message for an unknown email and a wrong password.
pub const BAD_CREDENTIALS: &str = "The email or password is not right.";

/// A PHC string to verify against when the email is unknown, so that the
/// answer takes as long as for a known one.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        password::hash("not the password of anyone at all").unwrap_or_else(|_| {
            "$argon2id$v=19$m=19456,t=2,p=1$bm90IGEgcmVhbCBzYWx0$WBe7nJxY2Cg3o6bS+0WcW8Hcl0Wf0pKjBf/7UOSSPdk".into()
        })
    })
}

/// Computes the dummy hash in the background, so the first sign-in with an
/// unknown email is not slower than later ones.
pub fn warm_up() {
    std::thread::spawn(|| {
        let _ = dummy_hash();
    });
}

/// `POST /dashboard/signin`.
pub async fn signin(
    State(state): State<AppState>,
    Extension(throttle): Extension<Arc<Throttle>>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    if let Err(e) = csrf::same_origin(&parts) {
        return e.into_response();
    }
    let fields = match csrf::read_form(&state, &parts.headers, body).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let email_given = fields.get("email").unwrap_or("").trim();
    let password_given = fields.get("password").unwrap_or("").to_string();
    // The form's token must match the sign-in cookie, which a page on
    // another site can neither read nor send (SameSite=Strict).
    let signin_key = cookie(&parts.headers, SIGNIN_COOKIE);
    let Some(key) = signin_key
        .filter(|k| csrf::verify(k, csrf::SIGNIN_PURPOSE, fields.get("csrf")))
        .map(str::to_string)
    else {
        let key = match random_token(&state) {
            Ok(k) => k,
            Err(e) => return e.into_response(),
        };
        return signin_page(
            &state,
            &key,
            StatusCode::FORBIDDEN,
            email_given,
            Some("This sign-in form has expired. Please sign in again."),
            None,
        );
    };
    let address = address(&parts);
    let now = state.now();
    let email = normalize_email(email_given);
    let throttle_key = email.clone().unwrap_or_else(|| email_given.to_lowercase());
    if let Err(wait) = throttle.begin(&throttle_key, address.as_deref(), now) {
        tracing::warn!(
            address = address.as_deref().unwrap_or("unknown"),
            "dashboard sign-in throttled after repeated failures"
        );
        return too_many_attempts(wait);
    }
    let user = match &email {
        Some(e) => match state.store.find_user_account_by_email(e).await {
            Ok(u) => u,
            Err(e) => return PageError::from(ApiError::from(e)).into_response(),
        },
        None => None,
    };
    let phc = user.as_ref().map(|u| u.password_hash.clone());
    // argon2id takes tens of milliseconds of CPU: keep it off the runtime.
    // An unknown email is verified against a dummy hash, so it takes as
    // long as a wrong password.
    let matches = tokio::task::spawn_blocking(move || match phc {
        Some(phc) => password::verify(&password_given, &phc),
        None => {
            let _ = password::verify(&password_given, dummy_hash());
            false
        }
    })
    .await
    .unwrap_or(false);
    let Some(user) = user.filter(|_| matches) else {
        return signin_page(
            &state,
            &key,
            StatusCode::UNAUTHORIZED,
            email_given,
            Some(BAD_CREDENTIALS),
            None,
        );
    };
    throttle.succeeded(&throttle_key, address.as_deref(), now);

    start_session(&state, &user, peer(&parts)).await
}

/// Signs `user` in: a new session, its cookie, and the account page.
pub async fn start_session(state: &AppState, user: &UserAccount, peer: Option<IpAddr>) -> Response {
    let now = state.now();
    let id = match random_token(state) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let session = DashboardSession {
        id_hash: hash(&id),
        user_account_id: user.id.clone(),
        account_id: user.account_id.clone(),
        created_at: now,
        expires_at: now.saturating_add(SESSION_LIFETIME_SECONDS),
    };
    let caller = Caller {
        principal: Principal::Session {
            account_id: user.account_id.as_str().into(),
            user_account_id: user.id.as_str().into(),
        },
        peer,
        policy: None,
        role: Some(user.role),
    };
    let event = audit::event(
        state,
        &caller,
        "dashboard.signedIn",
        "userAccount",
        &user.id,
    );
    if let Err(e) = state.store.create_dashboard_session(&session, &event).await {
        return PageError::from(ApiError::from(e)).into_response();
    }
    if let Err(e) = state.store.delete_expired_dashboard_sessions(now).await {
        tracing::warn!(error = %e, "could not remove expired dashboard sessions");
    }
    let mut response = Redirect::to("/dashboard").into_response();
    let headers = response.headers_mut();
    headers.append(
        SET_COOKIE,
        set_cookie(state, SESSION_COOKIE, &id, SESSION_LIFETIME_SECONDS),
    );
    headers.append(SET_COOKIE, set_cookie(state, SIGNIN_COOKIE, "", 0));
    response
}

/// 429 with a page that says when to try again.
fn too_many_attempts(wait_seconds: i64) -> Response {
    let minutes = (wait_seconds.max(1) + 59) / 60;
    let unit = if minutes == 1 { "minute" } else { "minutes" };
    let mut response = PageError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many attempts",
        &format!(
            "Too many failed sign-in attempts. Try again in {minutes} {unit}. \
             If you have lost the password, ask your Latchkey operator."
        ),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&wait_seconds.max(1).to_string()) {
        response.headers_mut().insert(RETRY_AFTER, v);
    }
    response
}

/// `POST /dashboard/signout`: ends the session here and in the store.
pub async fn signout(State(state): State<AppState>, form: SignedForm) -> Response {
    let session = &form.session;
    let event = audit::event(
        &state,
        &session.caller(),
        "dashboard.signedOut",
        "userAccount",
        &session.user_account_id,
    );
    if let Err(e) = state
        .store
        .delete_dashboard_session(&session.id_hash, &event)
        .await
    {
        return PageError::from(ApiError::from(e)).into_response();
    }
    let mut response = Redirect::to("/dashboard/signin?done=signed-out").into_response();
    response
        .headers_mut()
        .append(SET_COOKIE, set_cookie(&state, SESSION_COOKIE, "", 0));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_counts_failures_per_email_and_address_in_a_window() {
        let t = Throttle::default();
        let ip = Some("1.2.3.4");
        for i in 0..FAILURES_PER_EMAIL as i64 {
            assert_eq!(t.begin("a@x", ip, 1000 + i), Ok(()));
        }
        // Blocked until the oldest of the last five failures leaves.
        assert_eq!(t.begin("a@x", ip, 1010), Err(1000 + THROTTLE_WINDOW - 1010));
        assert_eq!(t.begin("a@x", None, 1000 + THROTTLE_WINDOW), Ok(()));
        // A success clears the email, and takes only itself off the
        // address.
        assert_eq!(t.begin("b@x", ip, 1011), Ok(()));
        t.succeeded("b@x", ip, 1011);
        t.succeeded("a@x", ip, 1010);
        assert_eq!(t.begin("a@x", ip, 1012), Ok(()));
        // The address has its own, larger, limit: 6 attempts so far.
        for i in 0..(FAILURES_PER_ADDRESS - 6) as i64 {
            assert_eq!(t.begin(&format!("u{i}@x"), ip, 1020), Ok(()));
        }
        assert!(t.begin("new@x", ip, 1030).is_err());
        assert_eq!(t.begin("new@x", Some("5.6.7.8"), 1030), Ok(()));
    }

    #[test]
    fn cookies_are_found_by_name_and_shape() {
        let mut h = HeaderMap::new();
        let id = "a".repeat(43);
        h.append(
            COOKIE,
            HeaderValue::from_str(&format!("x=1; {SESSION_COOKIE}={id}")).expect("header"),
        );
        h.append(COOKIE, HeaderValue::from_static("latchkey_signin=short"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some(id.as_str()));
        assert_eq!(cookie(&h, SIGNIN_COOKIE), None);
        assert_eq!(cookie(&h, "x"), None);
    }
}
