//! A small axum API protected by a Latchkey replica: every request is
//! verified in this process, from memory.
//!
//! ```sh
//! LATCHKEY_URL=http://127.0.0.1:8080 LATCHKEY_REPLICA_TOKEN=lkrp_… \
//!     cargo run -p latchkey-replica --example protect_axum
//! curl -u "$KEY_ID:$SECRET" http://127.0.0.1:3000/apps/$APP_ID/users/alice/messages
//! ```
//!
//! Set `LISTEN` to listen elsewhere than 127.0.0.1:3000.

use axum::{Extension, Router, routing::get};
use latchkey_replica::{Replica, ReplicaLayer, TargetRoutes, Verification};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (url, token) = (
        std::env::var("LATCHKEY_URL")?,
        std::env::var("LATCHKEY_REPLICA_TOKEN")?,
    );
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    // The operator's code: the replica, the routes, the layer.
    let replica = Replica::connect(&url, &token).await?;
    let routes = TargetRoutes::parse(["/apps/{appId}/users/{userId}", "/apps/{appId}"])?;
    let messages = async |Extension(v): Extension<Verification>| {
        format!("messages of {:?} in {:?}\n", v.user_id(), v.app_id())
    };
    let api = Router::new()
        .route("/apps/{app}/users/{user}/messages", get(messages))
        .layer(ReplicaLayer::new(replica).routes(routes));
    axum::serve(tokio::net::TcpListener::bind(&listen).await?, api).await?;
    Ok(())
}
