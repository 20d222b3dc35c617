//! The main listener's connections over real TCP: header and idle
//! timeouts, the connection limit that closes the longest-idle connection
//! to make room, requests in flight never cut, TLS handshakes bounded, and
//! graceful shutdown (issue 16). The limit on open files is tested with
//! the binary (`crates/latchkey/tests/connections.rs`).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{TestApp, read_response};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(app: &TestApp) -> SocketAddr {
    app.server.as_ref().expect("running").local_addr
}

async fn connect(app: &TestApp) -> TcpStream {
    let conn = TcpStream::connect(addr(app)).await.expect("connect");
    conn.set_nodelay(true).expect("nodelay");
    conn
}

/// Whether the server closes `conn` within `within`: end of stream or a
/// reset (a socket closed with unread bytes is reset). Anything the server
/// sends first is read past.
async fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Whether `conn` is still open: nothing to read, no end of stream.
fn still_open(conn: &TcpStream) -> bool {
    let mut buf = [0u8; 1];
    matches!(conn.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

async fn healthz(conn: &mut TcpStream) -> u16 {
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    read_response(conn).await.0
}

/// A request whose body is still coming: the head and all but the last
/// five bytes of `body` are sent, [`finish`] sends the rest.
struct Unfinished {
    conn: TcpStream,
    rest: String,
}

async fn begin(app: &TestApp, path: &str, auth: &str, body: &str) -> Unfinished {
    let mut conn = connect(app).await;
    let (sent, rest) = body.split_at(body.len() - 5);
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{sent}",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.expect("write");
    Unfinished {
        conn,
        rest: rest.to_string(),
    }
}

async fn finish(mut request: Unfinished) -> (TcpStream, u16, String) {
    request
        .conn
        .write_all(request.rest.as_bytes())
        .await
        .expect("write the rest");
    let (status, body) = read_response(&mut request.conn).await;
    (request.conn, status, body)
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_header_timeout() {
    let app = TestApp::spawn_with(|c| c.header_timeout = Duration::from_millis(500)).await;
    let mut silent = connect(&app).await;
    let opened = Instant::now();
    assert!(
        closed_within(&mut silent, Duration::from_secs(3)).await,
        "a connection that sends nothing was kept"
    );
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}, before the header timeout"
    );
    assert_eq!(
        app.server.as_ref().expect("running").connections(),
        0,
        "the registry forgot it"
    );
}

#[tokio::test]
async fn a_request_head_trickled_in_is_closed_after_the_header_timeout() {
    let app = TestApp::spawn_with(|c| c.header_timeout = Duration::from_millis(500)).await;
    let mut slow = connect(&app).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let opened = Instant::now();
    // A header line every 100 ms, never the blank line that ends the head.
    let mut closed = false;
    while opened.elapsed() < Duration::from_secs(3) {
        if slow.write_all(b"x-slow: 1\r\n").await.is_err()
            || closed_within(&mut slow, Duration::from_millis(100)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "a head trickled in for 3 s was kept");
    assert!(
        opened.elapsed() < Duration::from_secs(2),
        "closed only after {:?}",
        opened.elapsed()
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let app = TestApp::spawn_with(|c| {
        c.header_timeout = Duration::from_millis(300);
        c.idle_timeout = Duration::from_millis(1500);
    })
    .await;
    let mut conn = connect(&app).await;
    assert_eq!(healthz(&mut conn).await, 200);
    let served = Instant::now();
    // Past the header timeout: a connection that was served gets the idle
    // timeout instead.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(still_open(&conn), "closed before the idle timeout");
    assert_eq!(healthz(&mut conn).await, 200, "still usable");
    let served_again = Instant::now();
    assert!(
        closed_within(&mut conn, Duration::from_secs(4)).await,
        "an idle keep-alive connection was kept"
    );
    let idle = served_again.elapsed();
    assert!(
        idle >= Duration::from_millis(1000),
        "closed after {idle:?} idle, idle timeout 1.5 s (first served {:?} ago)",
        served.elapsed()
    );
}

#[tokio::test]
async fn a_full_listener_closes_the_longest_idle_connection_to_serve_a_new_one() {
    let app = TestApp::spawn_with(|c| {
        c.max_connections = 3;
        // Longer than the test: only shedding can make room.
        c.header_timeout = Duration::from_secs(60);
    })
    .await;
    let mut oldest = connect(&app).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut served = connect(&app).await;
    assert_eq!(healthz(&mut served).await, 200);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let newest = connect(&app).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(app.server.as_ref().expect("running").connections(), 3);

    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(3),
        app.http.get(app.url("/healthz")).send(),
    )
    .await
    .expect("answered within 3 s with the listener full")
    .expect("response");
    assert_eq!(r.status(), 200, "after {:?}", started.elapsed());
    assert!(
        closed_within(&mut oldest, Duration::from_secs(2)).await,
        "the longest-idle connection made room"
    );
    assert!(still_open(&served), "a connection idle for less was kept");
    assert!(still_open(&newest), "the newest connection was kept");
    assert!(app.server.as_ref().expect("running").connections() <= 3);
}

#[tokio::test]
async fn requests_in_flight_are_never_shed_and_a_busy_listener_refuses_new_connections() {
    let app = TestApp::spawn_with(|c| {
        c.max_connections = 2;
        c.header_timeout = Duration::from_secs(60);
    })
    .await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "A").await;
    let key = app.create_app_key(&owner, &app_id).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Two requests whose bodies are still coming: one on the direct
    // verification path, one through the router.
    let verify_body = json!({"authorization": key.basic(), "appId": app_id}).to_string();
    let verifying = begin(&app, "/v1/verify", &app.operator(), &verify_body).await;
    let creating = begin(&app, "/v1/apps", &owner, r#"{"displayName":"B"}"#).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Every connection is busy: a new one is refused, neither is cut.
    let mut refused = connect(&app).await;
    assert!(
        closed_within(&mut refused, Duration::from_secs(2)).await,
        "a connection beyond the limit was kept while every other was busy"
    );
    assert!(still_open(&verifying.conn), "a request in flight was cut");
    assert!(still_open(&creating.conn), "a request in flight was cut");

    let (verifying, status, answer) = finish(verifying).await;
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(answer["valid"], true, "{answer}");
    let (creating, status, answer) = finish(creating).await;
    assert_eq!(status, 201, "{answer}");

    // Both idle now: a new connection takes the place of one of them.
    let mut third = connect(&app).await;
    assert_eq!(healthz(&mut third).await, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let open = [&verifying, &creating]
        .into_iter()
        .filter(|c| still_open(c))
        .count();
    assert_eq!(open, 1, "one idle connection made room for the new one");
}

#[tokio::test]
async fn a_tls_handshake_that_never_comes_is_closed_after_the_header_timeout() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("key");
    let app = TestApp::spawn_with(|c| {
        c.tls = Some(latchkey_server::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        });
        c.header_timeout = Duration::from_millis(500);
    })
    .await;
    let mut silent = connect(&app).await;
    assert!(
        closed_within(&mut silent, Duration::from_secs(3)).await,
        "a connection that never starts its TLS handshake was kept"
    );

    // A client that completes the handshake is served as before.
    let port = addr(&app).port();
    let http = common::client_builder()
        .tls_certs_only([
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).expect("cert"),
        ])
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], port)))
        .build()
        .expect("client");
    let r = http
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .expect("https");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish_and_closes_idle_connections() {
    let mut app = TestApp::spawn().await;
    let owner = app.owner();
    let mut idle = connect(&app).await;
    assert_eq!(healthz(&mut idle).await, 200);
    let creating = begin(&app, "/v1/apps", &owner, r#"{"displayName":"B"}"#).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let server = app.server.take().expect("running");
    let stopping = tokio::spawn(server.shutdown());
    assert!(
        closed_within(&mut idle, Duration::from_secs(2)).await,
        "an idle connection was kept through shutdown"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!stopping.is_finished(), "stopped with a request in flight");
    let (_, status, answer) = finish(creating).await;
    assert_eq!(status, 201, "{answer}");
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("stopped once the request was answered")
        .expect("join")
        .expect("shutdown");
}
