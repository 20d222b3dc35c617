//! What only PostgreSQL does: announcing committed changes with NOTIFY on
//! the schema's channel, nodes that start at once on a fresh schema, and
//! telling an unreachable server ([`StoreError::Unavailable`]) from other
//! errors. (Two nodes writing at once are in the conformance suites, which
//! run on PostgreSQL too.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{TestDb, app, changes_after, ev, key, new_account};
use latchkey_store::{KeyKind, SqlStore, Store, StoreError};
use sqlx::Connection;
use sqlx::postgres::PgListener;
use tokio::net::{TcpListener, TcpStream};

/// A listener on the store's change channel.
async fn listen(url: &str, store: &SqlStore) -> PgListener {
    let channel = store.change_channel().expect("PostgreSQL has a channel");
    let mut listener = PgListener::connect(url).await.expect("listener");
    listener.listen(channel).await.expect("LISTEN");
    listener
}

/// The payload of the next notification (waiting at most 10 s).
async fn next_payload(listener: &mut PgListener) -> String {
    let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("a notification within 10 s")
        .expect("receive");
    n.payload().to_string()
}

/// The numbers of the changes recorded after `seq`, as payloads.
async fn seqs_after(store: &SqlStore, seq: i64) -> Vec<String> {
    changes_after(store, seq)
        .await
        .changes
        .iter()
        .map(|c| c.seq.to_string())
        .collect()
}

#[tokio::test]
async fn committed_changes_are_announced_with_their_numbers() {
    let db = TestDb::postgres().await;
    let url = db.postgres_url().expect("postgres");
    let channel = db.store.change_channel().expect("channel");
    assert!(channel.starts_with("latchkey_changes_"), "{channel}");
    assert!(channel.len() <= 63, "a PostgreSQL identifier: {channel}");
    let mut listener = listen(url, &db.store).await;

    // One notification per change, in order, carrying its number.
    db.store
        .create_account(&new_account(1), &ev())
        .await
        .expect("account");
    let expected = seqs_after(&db.store, 0).await;
    assert_eq!(expected.len(), 2);
    for seq in &expected {
        assert_eq!(&next_payload(&mut listener).await, seq);
    }

    // Another node on the same schema uses the same channel: its writes
    // are heard by listeners of the first.
    let other = db.open_again().await;
    assert_eq!(other.change_channel(), Some(channel));
    let newest: i64 = expected[1].parse().expect("a number");
    other
        .create_app(&app("ap_1", "acc_1"), None, &ev())
        .await
        .expect("app");
    let expected = seqs_after(&db.store, newest).await;
    assert_eq!(expected.len(), 1);
    assert_eq!(next_payload(&mut listener).await, expected[0]);
}

#[tokio::test]
async fn failed_writes_announce_nothing() {
    let db = TestDb::postgres().await;
    let s = &db.store;
    s.create_account(&new_account(1), &ev())
        .await
        .expect("account");
    s.create_app(&app("ap_1", "acc_1"), None, &ev())
        .await
        .expect("app");
    s.create_key(&key("app_1", KeyKind::App, "acc_1", "ap_1"), 1, 100, &ev())
        .await
        .expect("key");
    let newest = changes_after(s, 0).await.changes.last().expect("some").seq;
    let mut listener = listen(db.postgres_url().expect("postgres"), s).await;

    let r = s
        .create_key(&key("app_2", KeyKind::App, "acc_1", "ap_1"), 1, 100, &ev())
        .await;
    assert!(matches!(r, Err(StoreError::LimitReached(1))), "{r:?}");
    let r = s.create_app(&app("ap_1", "acc_1"), None, &ev()).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    // Rolled back after its rows were written: the audit event exists.
    let used = ev();
    s.record_audit(&used).await.expect("audit");
    let r = s
        .create_key(&key("app_3", KeyKind::App, "acc_1", "ap_1"), 10, 100, &used)
        .await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    let r = s
        .create_app(&app("ap_2", "acc_1"), Some("sa_missing"), &ev())
        .await;
    assert!(matches!(r, Err(StoreError::MissingParent)), "{r:?}");
    assert!(!s.delete_key("app_missing", &ev()).await.expect("delete"));
    assert!(!s.delete_app("ap_missing", &ev()).await.expect("delete"));

    // The first notification after them is the next successful write's.
    assert!(s.delete_key("app_1", &ev()).await.expect("delete"));
    let expected = seqs_after(s, newest).await;
    assert_eq!(expected.len(), 1, "only the delete was recorded");
    assert_eq!(next_payload(&mut listener).await, expected[0]);
}

#[tokio::test]
async fn each_schema_has_its_own_channel() {
    let a = TestDb::postgres().await;
    let b = TestDb::postgres().await;
    assert_ne!(a.store.change_channel(), b.store.change_channel());
    let mut listener = listen(a.postgres_url().expect("postgres"), &a.store).await;
    // b's changes are numbered 1 and 2, as a's will be: heard on a's
    // channel, they would come first.
    b.store
        .create_account(&new_account(1), &ev())
        .await
        .expect("account in b");
    a.store
        .create_account(&new_account(1), &ev())
        .await
        .expect("account in a");
    a.store
        .create_app(&app("ap_1", "acc_1"), None, &ev())
        .await
        .expect("app in a");
    let expected = seqs_after(&a.store, 0).await;
    assert_eq!(expected, ["1", "2", "3"]);
    for seq in &expected {
        assert_eq!(&next_payload(&mut listener).await, seq);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_starting_at_once_on_a_fresh_schema_all_start() {
    let schema = latchkey_testdb::fresh_schema().await;
    let mut starts = Vec::new();
    for _ in 0..4 {
        let url = schema.url.clone();
        starts.push(tokio::spawn(async move {
            SqlStore::connect_postgres(&url).await
        }));
    }
    let mut nodes = Vec::new();
    for s in starts {
        nodes.push(s.await.expect("join").expect("a node starts"));
    }
    // Every migration was applied once, and every node works.
    let mut probe = sqlx::PgConnection::connect(&schema.url)
        .await
        .expect("connect");
    let applied: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut probe)
            .await
            .expect("migrations table");
    let versions: Vec<i64> = applied.iter().map(|(v, _)| *v).collect();
    // The versions shipped, from the files' names (`0012_….sql`): numbers
    // may be missing, and the list grows with every migration.
    let mut expected: Vec<i64> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
            .expect("migrations")
            .map(|entry| {
                let name = entry.expect("entry").file_name();
                let name = name.to_str().expect("a UTF-8 name").to_string();
                name.split('_')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("{name}: no version number"))
            })
            .collect();
    expected.sort_unstable();
    assert_eq!(versions, expected);
    assert!(applied.iter().all(|(_, ok)| *ok));
    nodes[0]
        .create_account(&new_account(1), &ev())
        .await
        .expect("account");
    for node in &nodes {
        assert!(node.get_account("acc_1").await.expect("get").is_some());
        assert_eq!(node.change_channel(), nodes[0].change_channel());
    }
}

// --- an unreachable server ---------------------------------------------------

/// `url` pointed at `port` on this machine instead of its server.
fn via_port(url: &str, port: u16) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}host=127.0.0.1&port={port}")
}

#[tokio::test]
async fn a_refused_connection_is_unavailable() {
    // Nothing listens on port 1: every connection is refused. The pool
    // retries refused connections until its acquire timeout (5 s).
    let url = via_port(&latchkey_testdb::server_url(), 1);
    let started = Instant::now();
    let err = SqlStore::connect_postgres(&url)
        .await
        .expect_err("nothing listens on port 1");
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_server_that_hangs_up_is_unavailable_at_once() {
    // Accepts connections and closes them without a word.
    let hangup = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = hangup.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = hangup.accept().await else {
                return;
            };
            drop(socket);
        }
    });
    let started = Instant::now();
    let err = SqlStore::connect_postgres(&via_port(&latchkey_testdb::server_url(), port))
        .await
        .expect_err("the server hangs up");
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    server.abort();
}

/// A TCP proxy to the PostgreSQL server that can be cut: cutting closes
/// every forwarded connection and hangs up on new ones.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    cut_now: tokio::sync::watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let (cut_now, watch) = tokio::sync::watch::channel(false);
        let is_cut = cut.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if is_cut.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close
                }
                let upstream = upstream.clone();
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Proxy {
            port,
            cut,
            cut_now,
            accept,
        }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        self.cut_now.send_replace(cut);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// host:port of the test server.
fn upstream() -> String {
    use sqlx::postgres::PgConnectOptions;
    let options: PgConnectOptions = latchkey_testdb::server_url()
        .parse()
        .expect("a PostgreSQL URL");
    format!("{}:{}", options.get_host(), options.get_port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_are_unavailable_while_the_server_is_unreachable_and_work_after() {
    let db = TestDb::postgres().await;
    let url = db.postgres_url().expect("postgres");
    let proxy = Proxy::start(upstream()).await;
    let store = SqlStore::connect_postgres(&via_port(url, proxy.port))
        .await
        .expect("through the proxy");
    store
        .create_account(&new_account(1), &ev())
        .await
        .expect("account");

    proxy.set_cut(true);
    let started = Instant::now();
    let read = store.get_account("acc_1").await;
    assert!(
        read.as_ref().is_err_and(StoreError::is_unavailable),
        "{read:?}"
    );
    let write = store.create_app(&app("ap_1", "acc_1"), None, &ev()).await;
    assert!(
        write.as_ref().is_err_and(StoreError::is_unavailable),
        "{write:?}"
    );
    let feed = store.changes_since(0, 10).await;
    assert!(
        feed.as_ref().is_err_and(StoreError::is_unavailable),
        "{feed:?}"
    );
    let snapshot = store.snapshot().await;
    assert!(
        snapshot.as_ref().is_err_and(StoreError::is_unavailable),
        "{snapshot:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // The failed write did not happen.
    assert!(db.store.get_app("ap_1").await.expect("get").is_none());

    // Once the server is reachable again, the same store works again.
    proxy.set_cut(false);
    store
        .create_app(&app("ap_1", "acc_1"), None, &ev())
        .await
        .expect("the retried write");
    assert!(db.store.get_app("ap_1").await.expect("get").is_some());
}

#[tokio::test]
async fn only_connection_failures_are_unavailable() {
    let db = TestDb::postgres().await;
    let bad_url = SqlStore::connect_postgres("postgres://[::1").await;
    assert!(matches!(bad_url, Err(StoreError::Config(_))), "{bad_url:?}");
    db.store
        .create_account(&new_account(1), &ev())
        .await
        .expect("account");
    let conflict = db
        .store
        .create_account(&new_account(1), &ev())
        .await
        .expect_err("the same account twice");
    assert!(!conflict.is_unavailable(), "{conflict:?}");
    // A server that answers with an error (here: no such database) is
    // reachable: the configuration is wrong, not the network.
    let missing = format!(
        "{}&dbname=latchkey_no_such_database",
        db.postgres_url().expect("postgres")
    );
    let err = SqlStore::connect_postgres(&missing)
        .await
        .expect_err("no such database");
    assert!(!err.is_unavailable(), "{err:?}");
}
