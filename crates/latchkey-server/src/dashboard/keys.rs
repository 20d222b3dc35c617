//! Keys of an app, of a service account and of the signed-in person's own
//! user account: create (the secret shown once), rotate with a chosen grace
//! period, delete after a confirmation. All through `ops::keys`.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use latchkey_core::principal::AppRef;
use latchkey_store::{App, KeyOwnerRef, ServiceAccount};
use serde_json::Value;

use super::csrf::SignedForm;
use super::session::Session;
use super::view::{EXPIRY_CHOICES, Flash, Layout, PageError, render};
use super::{apps, pages};
use crate::error::require;
use crate::ops::keys::{self as key_ops, CreateKey, KeyContext, RotateKey};
use crate::ops::{app_ref, load_app, service_accounts};
use crate::state::AppState;
use crate::views::rfc3339;

/// Whose keys.
pub enum Owner {
    App(App),
    ServiceAccount(ServiceAccount),
    /// The signed-in person's own user account.
    Me,
}

impl Owner {
    pub fn key_owner<'a>(&'a self, session: &'a Session) -> KeyOwnerRef<'a> {
        match self {
            Owner::App(a) => KeyOwnerRef::App(&a.id),
            Owner::ServiceAccount(s) => KeyOwnerRef::ServiceAccount(&s.id),
            Owner::Me => KeyOwnerRef::UserAccount(&session.user_account_id),
        }
    }

    pub fn ctx(&self) -> KeyContext<'_> {
        KeyContext {
            app: match self {
                Owner::App(a) => Some(a),
                _ => None,
            },
        }
    }

    /// The page that lists these keys.
    pub fn url(&self) -> String {
        match self {
            Owner::App(a) => format!("/dashboard/apps/{}", a.id),
            Owner::ServiceAccount(s) => format!("/dashboard/service-accounts/{}", s.id),
            Owner::Me => "/dashboard".to_string(),
        }
    }

    /// Where its key actions are posted.
    pub fn keys_url(&self) -> String {
        match self {
            Owner::Me => "/dashboard/account/keys".to_string(),
            other => format!("{}/keys", other.url()),
        }
    }

    /// The page of one of these keys, and where its form is posted.
    pub fn key_url(&self, key_id: &str) -> String {
        format!("{}/{key_id}", self.keys_url())
    }

    fn describe(&self) -> String {
        match self {
            Owner::App(a) => format!("the app “{}”", a.display_name),
            Owner::ServiceAccount(s) => format!("the service account “{}”", s.display_name),
            Owner::Me => "your user account".to_string(),
        }
    }

    /// The page that lists these keys, with a message.
    async fn page(&self, state: &AppState, session: &Session, flash: Flash) -> Response {
        let page = match self {
            Owner::App(a) => {
                apps::render_keys_tab(state, session, a, flash, Default::default()).await
            }
            Owner::ServiceAccount(s) => {
                pages::render_service_account(state, session, s, flash).await
            }
            Owner::Me => pages::render_account(state, session, flash).await,
        };
        page.unwrap_or_else(IntoResponse::into_response)
    }
}

/// An app of the signed-in person's account, or 404.
pub async fn own_app(state: &AppState, session: &Session, app_id: &str) -> Result<App, PageError> {
    let app = load_app(state, app_id).await?;
    let principal = session.principal();
    let r: AppRef<'_> = app_ref(state, &principal, &app);
    require(principal.may_manage_app(r), "app", "not your app")?;
    Ok(app)
}

/// A service account of the signed-in person's account, or 404.
pub async fn own_service_account(
    state: &AppState,
    session: &Session,
    sa_id: &str,
) -> Result<ServiceAccount, PageError> {
    Ok(service_accounts::load(state, &session.caller(), sa_id).await?)
}

#[derive(Template)]
#[template(path = "dashboard/secret.html")]
pub struct SecretPage<'a> {
    pub l: &'a Layout,
    pub title: &'a str,
    pub what: &'a str,
    /// The element id of the new object's id (`new-key-id`).
    pub id_element: &'a str,
    pub object_id: &'a str,
    /// The element id of the secret (`new-key-secret`).
    pub secret_element: &'a str,
    pub secret: &'a str,
    pub usage: &'a str,
    pub previous: Option<Previous>,
    pub back: &'a str,
}

#[derive(Debug)]
pub struct Previous {
    pub id: String,
    pub expires: String,
}

const KEY_USAGE: &str = "Send it as HTTP Basic (key id as the user name, secret as the password), \
     or sign HS256 JWTs with the secret and the key id as kid.";

async fn key_created_page(
    state: &AppState,
    session: &Session,
    owner: &Owner,
    title: &str,
    key_id: &str,
    secret: &str,
    previous: Option<Previous>,
) -> Response {
    let l = match Layout::of(state, session).await {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    let what = format!("a key of {}", owner.describe());
    render(
        StatusCode::OK,
        &SecretPage {
            l: &l,
            title,
            what: &what,
            id_element: "new-key-id",
            object_id: key_id,
            secret_element: "new-key-secret",
            secret,
            usage: KEY_USAGE,
            previous,
            back: &owner.url(),
        },
    )
}

async fn create(state: &AppState, form: SignedForm, owner: Owner) -> Response {
    let session = &form.session;
    let expires_at = match form
        .fields
        .get("expires_in_days")
        .unwrap_or("0")
        .parse::<i64>()
    {
        Ok(0) => None,
        Ok(days) if EXPIRY_CHOICES.iter().any(|(d, _)| *d == days) => {
            Some(rfc3339(state.now().saturating_add(days * 86_400)))
        }
        _ => {
            let flash = Flash {
                error: Some("Choose when the key expires from the list.".into()),
                status: Some(StatusCode::BAD_REQUEST),
                notice: None,
            };
            return owner.page(state, session, flash).await;
        }
    };
    let body = CreateKey {
        display_name: form.fields.get("display_name").unwrap_or("").to_string(),
        expires_at,
        ..CreateKey::default()
    };
    let account_id = match &owner {
        Owner::App(a) => a.account_id.as_str(),
        Owner::ServiceAccount(s) => s.account_id.as_str(),
        Owner::Me => session.account_id.as_str(),
    };
    let created = key_ops::create_key(
        state,
        &form.write,
        &session.caller(),
        owner.ctx(),
        account_id,
        owner.key_owner(session),
        &body,
    )
    .await;
    match created {
        Ok(view) => {
            let secret = view.secret.as_ref().map(|s| s.expose()).unwrap_or_default();
            key_created_page(
                state,
                session,
                &owner,
                "Key created",
                &view.id,
                secret,
                None,
            )
            .await
        }
        Err(e) => owner.page(state, session, Flash::error(&e)).await,
    }
}

async fn rotate(state: &AppState, form: SignedForm, owner: Owner, key_id: &str) -> Response {
    let session = &form.session;
    let Some(grace) = form
        .fields
        .get("grace_seconds")
        .and_then(|g| g.parse::<i64>().ok())
    else {
        let flash = Flash {
            error: Some("Choose how long the old key keeps working.".into()),
            status: Some(StatusCode::BAD_REQUEST),
            notice: None,
        };
        return owner.page(state, session, flash).await;
    };
    let body = RotateKey {
        grace_seconds: Some(grace),
        // A public-key key rotates through the API, which takes the
        // successor's public key; the dashboard says so (see `rotate`).
        public_key: None,
    };
    let rotated = key_ops::rotate_key(
        state,
        &form.write,
        &session.caller(),
        owner.ctx(),
        owner.key_owner(session),
        key_id,
        &body,
    )
    .await;
    match rotated {
        Ok(out) => {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            let previous = Previous {
                id: text(&out["previousKey"]["id"]),
                expires: time::OffsetDateTime::parse(
                    out["previousKey"]["expiresAt"].as_str().unwrap_or_default(),
                    &time::format_description::well_known::Rfc3339,
                )
                .map(|t| super::view::when(t.unix_timestamp()))
                .unwrap_or_default(),
            };
            key_created_page(
                state,
                session,
                &owner,
                "Key rotated",
                &text(&out["key"]["id"]),
                &text(&out["key"]["secret"]),
                Some(previous),
            )
            .await
        }
        Err(e) => owner.page(state, session, Flash::error(&e)).await,
    }
}

#[derive(Template)]
#[template(path = "dashboard/confirm.html")]
pub struct ConfirmPage<'a> {
    pub l: &'a Layout,
    pub title: &'a str,
    pub message: &'a str,
    pub action: &'a str,
    pub button: &'a str,
    pub cancel: &'a str,
}

async fn confirm_delete(
    state: &AppState,
    session: &Session,
    owner: Owner,
    key_id: &str,
) -> Response {
    let key = match key_ops::load_key(state, owner.key_owner(session), key_id).await {
        Ok(k) => k,
        Err(e) => return PageError::from(e).into_response(),
    };
    let l = match Layout::of(state, session).await {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    let message = format!(
        "Delete the key “{}” ({}) of {}? Basic with it and every JWT it signed are refused \
         from the very next request. This cannot be undone.",
        key.display_name,
        key.id,
        owner.describe()
    );
    let action = format!("{}/{}/delete", owner.keys_url(), key.id);
    render(
        StatusCode::OK,
        &ConfirmPage {
            l: &l,
            title: "Delete key",
            message: &message,
            action: &action,
            button: "Delete key",
            cancel: &owner.url(),
        },
    )
}

async fn delete(state: &AppState, form: SignedForm, owner: Owner, key_id: &str) -> Response {
    let session = &form.session;
    let deleted = key_ops::delete_key(
        state,
        &form.write,
        &session.caller(),
        owner.ctx(),
        owner.key_owner(session),
        key_id,
    )
    .await;
    match deleted {
        Ok(_) => Redirect::to(&format!("{}?done=key-deleted", owner.url())).into_response(),
        Err(e) => owner.page(state, session, Flash::error(&e)).await,
    }
}

// --- apps --------------------------------------------------------------

pub async fn create_app_key(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    form: SignedForm,
) -> Response {
    let app = or_page!(own_app(&state, &form.session, &app_id).await);
    create(&state, form, Owner::App(app)).await
}

pub async fn rotate_app_key(
    State(state): State<AppState>,
    Path((app_id, key_id)): Path<(String, String)>,
    form: SignedForm,
) -> Response {
    let app = or_page!(own_app(&state, &form.session, &app_id).await);
    rotate(&state, form, Owner::App(app), &key_id).await
}

pub async fn confirm_delete_app_key(
    State(state): State<AppState>,
    session: Session,
    Path((app_id, key_id)): Path<(String, String)>,
) -> Response {
    let app = or_page!(own_app(&state, &session, &app_id).await);
    confirm_delete(&state, &session, Owner::App(app), &key_id).await
}

pub async fn delete_app_key(
    State(state): State<AppState>,
    Path((app_id, key_id)): Path<(String, String)>,
    form: SignedForm,
) -> Response {
    let app = or_page!(own_app(&state, &form.session, &app_id).await);
    delete(&state, form, Owner::App(app), &key_id).await
}

// --- service accounts --------------------------------------------------

pub async fn create_sa_key(
    State(state): State<AppState>,
    Path(sa_id): Path<String>,
    form: SignedForm,
) -> Response {
    let sa = or_page!(own_service_account(&state, &form.session, &sa_id).await);
    create(&state, form, Owner::ServiceAccount(sa)).await
}

pub async fn rotate_sa_key(
    State(state): State<AppState>,
    Path((sa_id, key_id)): Path<(String, String)>,
    form: SignedForm,
) -> Response {
    let sa = or_page!(own_service_account(&state, &form.session, &sa_id).await);
    rotate(&state, form, Owner::ServiceAccount(sa), &key_id).await
}

pub async fn confirm_delete_sa_key(
    State(state): State<AppState>,
    session: Session,
    Path((sa_id, key_id)): Path<(String, String)>,
) -> Response {
    let sa = or_page!(own_service_account(&state, &session, &sa_id).await);
    confirm_delete(&state, &session, Owner::ServiceAccount(sa), &key_id).await
}

pub async fn delete_sa_key(
    State(state): State<AppState>,
    Path((sa_id, key_id)): Path<(String, String)>,
    form: SignedForm,
) -> Response {
    let sa = or_page!(own_service_account(&state, &form.session, &sa_id).await);
    delete(&state, form, Owner::ServiceAccount(sa), &key_id).await
}

// --- the signed-in person's own user-account keys ----------------------

pub async fn create_own_key(State(state): State<AppState>, form: SignedForm) -> Response {
    create(&state, form, Owner::Me).await
}

pub async fn rotate_own_key(
    State(state): State<AppState>,
    Path(key_id): Path<String>,
    form: SignedForm,
) -> Response {
    rotate(&state, form, Owner::Me, &key_id).await
}

pub async fn confirm_delete_own_key(
    State(state): State<AppState>,
    session: Session,
    Path(key_id): Path<String>,
) -> Response {
    confirm_delete(&state, &session, Owner::Me, &key_id).await
}

/// User-account keys are deleted here only: the API cannot delete them.
pub async fn delete_own_key(
    State(state): State<AppState>,
    Path(key_id): Path<String>,
    form: SignedForm,
) -> Response {
    delete(&state, form, Owner::Me, &key_id).await
}
