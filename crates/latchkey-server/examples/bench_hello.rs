//! Benchmark baseline: a bare axum hello-world server, on the same tokio
//! multi-thread runtime as `latchkey serve` (see docs/BENCHMARKS.md and
//! scripts/bench-http.sh).
//!
//! ```sh
//! cargo run --release -p latchkey-server --example bench_hello -- 127.0.0.1:7401
//! ```
#![allow(clippy::print_stdout)]

use std::io::Write;

use axum::Router;
use axum::routing::get;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7401".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the async runtime");
    runtime.block_on(async move {
        // Every other path answers the same (the upstream of the front-door
        // benchmarks, scripts/bench-front.sh).
        let app = Router::new()
            .route("/", get(|| async { "Hello, World!" }))
            .fallback(|| async { "Hello, World!" });
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .expect("binding the listen address");
        let local = listener.local_addr().expect("the bound address");
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "hello listening on http://{local}").expect("stdout");
            out.flush().expect("stdout");
        }
        axum::serve(listener, app).await.expect("serving");
    });
}
