//! What the tests of the `latchkey` binary share: running it (a process
//! whose output is captured line by line and which is killed when dropped;
//! one-shot commands; `init --json` and what it printed; `serve`'s
//! arguments) and an HTTP client with a timeout. HTTP calls, replies and
//! credentials come from `latchkey-testkit`, shared with the server's
//! tests.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use latchkey_testkit::{basic, field};
use serde_json::Value;

/// How long a server gets to print its listening line, and a one-shot
/// command to finish (generous: other builds share the machine).
pub const STARTUP: Duration = Duration::from_secs(60);

pub const LISTENING: &str = "latchkey listening on ";

/// `latchkey` with no `LATCHKEY_*` variables inherited from the test's
/// environment.
pub fn latchkey() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_latchkey"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LATCHKEY_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// `latchkey` run by `sh` after `ulimit LIMITS` (e.g. `-Sn 256`), as a
/// service manager with a low limit on open files would start it; no
/// `LATCHKEY_*` variables inherited either.
pub fn latchkey_with_ulimit(limits: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit {limits} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_latchkey"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LATCHKEY_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// A spawned `latchkey` process whose stdout and stderr are captured. It is
/// killed when dropped if it is still running, so a failing test never
/// leaves a server behind.
pub struct Proc {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    lines: Receiver<String>,
    readers: Vec<JoinHandle<()>>,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn latchkey");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let out_pipe = child.stdout.take().expect("stdout pipe");
        let err_pipe = child.stderr.take().expect("stderr pipe");
        let out_buf = Arc::clone(&stdout);
        let out_reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(out_pipe);
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        out_buf
                            .lock()
                            .expect("stdout lock")
                            .extend_from_slice(&line);
                        let text = String::from_utf8_lossy(&line).trim_end().to_string();
                        // The receiver may be gone; keep draining the pipe.
                        let _ = tx.send(text);
                    }
                }
            }
        });
        let err_buf = Arc::clone(&stderr);
        let err_reader = std::thread::spawn(move || {
            let mut pipe = err_pipe;
            let mut chunk = [0u8; 4096];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => err_buf
                        .lock()
                        .expect("stderr lock")
                        .extend_from_slice(&chunk[..n]),
                }
            }
        });
        Self {
            child,
            stdout,
            stderr,
            lines,
            readers: vec![out_reader, err_reader],
        }
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub fn stdout_bytes(&self) -> Vec<u8> {
        self.stdout.lock().expect("stdout lock").clone()
    }

    pub fn stderr_bytes(&self) -> Vec<u8> {
        self.stderr.lock().expect("stderr lock").clone()
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout_bytes()).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr_bytes()).into_owned()
    }

    /// Reads stdout lines until the listening line; returns the URL and the
    /// lines printed before it. Panics if the process exits first or the
    /// line does not come within `STARTUP`.
    pub fn wait_listening(&mut self) -> (String, Vec<String>) {
        let deadline = Instant::now() + STARTUP;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix(LISTENING) {
                        return (url.trim().to_string(), before);
                    }
                    before.push(line);
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit(STARTUP);
                    panic!(
                        "latchkey exited ({status}) before listening\nstdout:\n{}\nstderr:\n{}",
                        self.stdout_text(),
                        self.stderr_text()
                    );
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no listening line within {STARTUP:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout_text(),
                    self.stderr_text()
                ),
            }
        }
    }

    /// Waits for the process to exit (polling), then for its output to be
    /// fully read. Panics on timeout (the guard then kills it).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "latchkey (pid {}) did not exit within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                self.child.id(),
                self.stdout_text(),
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        for reader in self.readers.drain(..) {
            reader.join().expect("output reader");
        }
        status
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed: {status}");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// One-shot commands, init and serve
// ---------------------------------------------------------------------------

/// A finished one-shot command.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn assert_failed(&self, what: &str) {
        assert!(
            !self.status.success() && self.status.code().is_some(),
            "{what}: expected a non-zero exit, got {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
    }
}

/// Runs `cmd` to its end (within `STARTUP`).
pub fn run(cmd: Command) -> Finished {
    let mut p = Proc::spawn(cmd);
    let status = p.wait_exit(STARTUP);
    Finished {
        status,
        stdout: p.stdout_text(),
        stderr: p.stderr_text(),
    }
}

/// What `init` printed.
#[derive(Debug, Clone)]
pub struct Init {
    pub operator_token: String,
    pub account_id: String,
    pub user_id: String,
    pub email: String,
    pub password: String,
    pub key_id: String,
    pub key_secret: String,
}

impl Init {
    /// The report of `init --json`.
    pub fn from_json(v: &Value) -> Self {
        Init {
            operator_token: field(v, "/operatorToken"),
            account_id: field(v, "/account/id"),
            user_id: field(v, "/user/id"),
            email: field(v, "/user/email"),
            password: field(v, "/user/password"),
            key_id: field(v, "/key/id"),
            key_secret: field(v, "/key/secret"),
        }
    }

    /// The owner's user-account key (Basic).
    pub fn owner(&self) -> String {
        basic(&self.key_id, &self.key_secret)
    }

    pub fn operator(&self) -> String {
        format!("Bearer {}", self.operator_token)
    }
}

/// Runs `latchkey init --json` on `data` (and on `database_url`, when
/// given) and returns its report: one line of JSON with exactly the
/// members `operatorToken`, `account`, `user` and `key`.
pub fn init(data: &Path, database_url: Option<&str>) -> Init {
    let mut cmd = latchkey();
    cmd.arg("init").arg("--data-dir").arg(data).arg("--json");
    if let Some(url) = database_url {
        cmd.arg("--database-url").arg(url);
    }
    let out = run(cmd);
    assert!(
        out.status.success(),
        "init failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "init --json prints one line: {:?}",
        out.stdout
    );
    let v: Value = serde_json::from_str(lines[0]).expect("init --json prints JSON");
    let keys: BTreeSet<&str> = v
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["operatorToken", "account", "user", "key"]),
        "{v}"
    );
    Init::from_json(&v)
}

/// Adds `serve --data-dir DATA --listen 127.0.0.1:0 EXTRA…` to `cmd`.
pub fn serve_args(cmd: &mut Command, data: &Path, extra: &[&str]) {
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra);
}

/// `latchkey serve` on `data`, on 127.0.0.1:0, with `extra` arguments.
pub fn serve_cmd(data: &Path, extra: &[&str]) -> Command {
    let mut cmd = latchkey();
    serve_args(&mut cmd, data, extra);
    cmd
}

/// An HTTP client (see `latchkey_testkit::client_builder`) that gives up
/// on a request after 30 s, so a hung server fails the test.
pub fn client() -> reqwest::Client {
    latchkey_testkit::client_builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// `client()` that does not follow redirects (to see where a form sends
/// the browser).
pub fn client_no_redirects() -> reqwest::Client {
    latchkey_testkit::client_builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}
