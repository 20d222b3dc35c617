//! The `latchkey` binary's main listener under idle connections, started
//! with a low limit on open files as a service manager would start it
//! (issue 16): the soft limit is raised at start, and when the hard limit
//! is low too, the connection limit is lowered to fit and sheds the
//! longest-idle connections, so other clients are still served. Also the
//! timeout flags, over real TCP.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

mod support;
use support::{Proc, latchkey, latchkey_with_ulimit, serve_args};

/// Idle connections opened against a soft limit of 256 descriptors.
const IDLE: usize = 400;
const LOW_LIMIT: &str = "256";

/// Starts `cmd`; the process and the main listener's address.
fn start(cmd: Command) -> (Proc, SocketAddr) {
    let mut proc = Proc::spawn(cmd);
    let (url, _) = proc.wait_listening();
    let addr = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not an http URL: {url}"))
        .parse()
        .expect("address");
    (proc, addr)
}

/// This test process needs a descriptor per idle connection too.
fn allow_many_open_files() {
    let soft = rlimit::increase_nofile_limit(4096).expect("raise the test's own limit");
    assert!(
        soft >= (IDLE as u64) + 200,
        "the test process may open only {soft} files"
    );
}

/// Opens up to `n` connections that send nothing, stopping at the first
/// that cannot connect within 3 s (the server no longer accepts, and its
/// backlog is full).
fn idle_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map_while(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok())
        .collect()
}

/// `GET path` on a new connection; the response's head and body, or why
/// none came within `within`.
fn get(addr: SocketAddr, path: &str, within: Duration) -> Result<String, String> {
    let started = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, within).map_err(|e| format!("connect: {e}"))?;
    let left = within
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(1));
    s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    s.read_to_end(&mut response)
        .map_err(|e| format!("read after {:?}: {e}", started.elapsed()))?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// Reads one response (head, and a body of `content-length` bytes) from a
/// keep-alive connection.
fn read_response(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text;
            }
        }
        let n = s.read(&mut buf).expect("response");
        assert!(n > 0, "closed mid-response: {text}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// Whether the server still holds the connection open: nothing to read
/// yet, and no end of stream.
fn still_open(s: &TcpStream) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let mut byte = [0u8; 1];
    let open = matches!((&*s).read(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock);
    s.set_nonblocking(false).expect("blocking");
    open
}

/// Whether the server closes the connection within `within` (end of
/// stream, or a reset).
fn closed_within(s: &TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).expect("read timeout");
    let mut byte = [0u8; 1];
    match (&*s).read(&mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("the server sent something on an idle connection"),
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

/// Waits (up to 5 s) for the server's log to contain all of `needles` on
/// one line, and returns that line.
fn log_line(proc: &Proc, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = proc.stderr_text();
        if let Some(line) = log
            .lines()
            .find(|line| needles.iter().all(|n| line.contains(n)))
        {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needles:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn idle_connections_beyond_the_soft_limit_on_open_files_do_not_starve_the_server() {
    allow_many_open_files();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = latchkey_with_ulimit(&format!("-Sn {LOW_LIMIT}"));
    // A header timeout longer than the test: the connections stay open,
    // so only the raised limit can make room for them.
    serve_args(
        &mut cmd,
        &dir.path().join("data"),
        &["--header-timeout-seconds", "60"],
    );
    let (proc, addr) = start(cmd);

    let idle = idle_connections(addr, IDLE);
    let started = Instant::now();
    let answer = get(addr, "/healthz", Duration::from_secs(3));
    let answer = answer.unwrap_or_else(|e| {
        panic!(
            "no answer within 3 s with {IDLE} idle connections open (soft limit {LOW_LIMIT}): {e}"
        )
    });
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "after {:?}: {answer}",
        started.elapsed()
    );
    assert_eq!(idle.len(), IDLE, "every idle connection was accepted");
    let open = idle.iter().filter(|s| still_open(s)).count();
    assert_eq!(open, IDLE, "the server holds every idle connection");
    let line = log_line(&proc, &["INFO", "soft limit on open files"]);
    assert!(
        line.contains("raised") && line.contains(&format!("old={LOW_LIMIT} new=")),
        "{line}"
    );
}

#[test]
fn with_a_low_hard_limit_the_longest_idle_connections_are_shed() {
    allow_many_open_files();
    let dir = tempfile::tempdir().expect("tempdir");
    // Soft and hard: nothing to raise. The connection limit (4096 by
    // default) is lowered to fit, and the oldest idle connections make room.
    let mut cmd = latchkey_with_ulimit(&format!("-n {LOW_LIMIT}"));
    serve_args(
        &mut cmd,
        &dir.path().join("data"),
        &["--header-timeout-seconds", "60"],
    );
    let (proc, addr) = start(cmd);

    let idle = idle_connections(addr, IDLE);
    let started = Instant::now();
    let answer = get(addr, "/healthz", Duration::from_secs(3)).unwrap_or_else(|e| {
        panic!("no answer within 3 s with {IDLE} idle connections opened (limit {LOW_LIMIT}): {e}")
    });
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "after {:?}: {answer}",
        started.elapsed()
    );
    assert_eq!(idle.len(), IDLE, "every idle connection was accepted");
    let line = log_line(&proc, &["WARN", "lowered the connection limits"]);
    let max: usize = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("max_connections="))
        .unwrap_or_else(|| panic!("no max_connections in {line}"))
        .parse()
        .expect("max_connections");
    assert!(max < 256, "{line}");
    assert!(
        closed_within(&idle[0], Duration::from_secs(2)),
        "the oldest idle connection was closed to make room"
    );
    assert!(
        still_open(&idle[IDLE - 1]),
        "the newest idle connection is kept"
    );
    // Connections still in the accept queue look open from this side
    // until the server takes (and sheds) them: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut open = idle.iter().filter(|s| still_open(s)).count();
    while open > max && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        open = idle.iter().filter(|s| still_open(s)).count();
    }
    assert!(open <= max, "{open} idle connections open, limit {max}");
}

#[test]
fn the_timeout_flags_and_variables_reach_the_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = latchkey();
    serve_args(
        &mut cmd,
        &dir.path().join("data"),
        &["--header-timeout-seconds", "1"],
    );
    cmd.env("LATCHKEY_IDLE_TIMEOUT_SECONDS", "3");
    let (_proc, addr) = start(cmd);

    // Sends nothing: closed after the header timeout.
    let silent = TcpStream::connect(addr).expect("connect");
    let opened = Instant::now();
    assert!(
        closed_within(&silent, Duration::from_secs(4)),
        "a silent connection was not closed"
    );
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_millis(2500),
        "closed after {waited:?}, header timeout 1 s"
    );

    // Served once and then idle: kept past the header timeout, closed
    // after the idle timeout.
    let mut used = TcpStream::connect(addr).expect("connect");
    used.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("write");
    let response = read_response(&mut used);
    let served = Instant::now();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    std::thread::sleep(Duration::from_millis(1800));
    assert!(still_open(&used), "closed before the idle timeout");
    assert!(
        closed_within(&used, Duration::from_secs(4)),
        "the idle connection was not closed"
    );
    let idle = served.elapsed();
    assert!(
        idle >= Duration::from_millis(2500) && idle < Duration::from_millis(4500),
        "closed after {idle:?} idle, idle timeout 3 s"
    );
}
