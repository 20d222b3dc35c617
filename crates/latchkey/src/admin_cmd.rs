//! `latchkey admin`, `backup` and `restore`: what the operator types at 3
//! a.m., printed for a person or, with `--json`, as one line for scripts.
//! The work itself is in `latchkey_server::admin`.

use std::io::Write;
use std::path::Path;

use latchkey_server::admin;
use serde::Serialize;

use crate::cli::{AdminCommand, OperatorTokenCommand, StoreArgs};
use crate::{clock, config};

fn print(as_json: bool, value: &impl Serialize, text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", serde_json::to_string(value)?)?;
    } else {
        writeln!(out, "{text}")?;
    }
    out.flush()?;
    Ok(())
}

pub async fn admin(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::OperatorToken { command } => operator_token(command).await,
        AdminCommand::ResetPassword { store, email, json } => {
            let store = admin::open_store(&config(store)?).await?;
            let done = admin::reset_password(&store, clock().as_ref(), &email).await;
            store.close().await;
            let reset = done?;
            print(
                json,
                &reset,
                &format!(
                    "New password for {} ({}), shown once: {}\n\
                     Their dashboard sessions have ended; they sign in with this password.",
                    reset.email,
                    reset.user_account_id,
                    reset.password.expose()
                ),
            )
        }
    }
}

async fn operator_token(command: OperatorTokenCommand) -> anyhow::Result<()> {
    match command {
        OperatorTokenCommand::Create { store, json } => {
            let store = admin::open_store(&config(store)?).await?;
            let done = admin::create_operator_token(&store, clock().as_ref()).await;
            store.close().await;
            let issued = done?;
            print(
                json,
                &issued,
                &format!(
                    "operator token {} (shown once; store it now):\n{}\n\
                     A running server accepts it within a second. The other tokens keep \
                     working until revoked (`latchkey admin operator-token revoke ID`).",
                    issued.id,
                    issued.token.expose()
                ),
            )
        }
        OperatorTokenCommand::List { store, json } => {
            let store = admin::open_store(&config(store)?).await?;
            let done = admin::list_operator_tokens(&store).await;
            store.close().await;
            let tokens = done?;
            let mut text = format!("{:<28} created", "id");
            for t in &tokens {
                text.push_str(&format!("\n{:<28} {}", t.id, t.created_at));
            }
            print(
                json,
                &serde_json::json!({ "operatorTokens": tokens }),
                &text,
            )
        }
        OperatorTokenCommand::Revoke {
            store,
            id,
            force,
            json,
        } => {
            let store = admin::open_store(&config(store)?).await?;
            let done = admin::revoke_operator_token(&store, clock().as_ref(), &id, force).await;
            store.close().await;
            done?;
            print(
                json,
                &serde_json::json!({ "revoked": id }),
                &format!("revoked operator token {id}; running servers refuse it within a second"),
            )
        }
    }
}

pub async fn backup(store: StoreArgs, to: &Path, json: bool) -> anyhow::Result<()> {
    let report = admin::backup(&config(store)?, to).await?;
    print(
        json,
        &report,
        &format!(
            "wrote a backup of the store to {} ({} bytes). It does not hold the master key: \
             keep master.key (or your LATCHKEY_MASTER_KEY) safe, apart from it.",
            report.file.display(),
            report.bytes
        ),
    )
}

pub async fn restore(store: StoreArgs, from: &Path, force: bool, json: bool) -> anyhow::Result<()> {
    let report = admin::restore(&config(store)?, from, force, clock().as_ref()).await?;
    let mut text = format!(
        "restored {} to {}",
        from.display(),
        report.database.display()
    );
    if let Some(old) = &report.replaced {
        text.push_str(&format!(
            "; the store it replaced is kept as {}",
            old.display()
        ));
    }
    print(json, &report, &text)
}
