//! Running the `latchkey` binary from tests: a process whose output is
//! captured line by line and which is killed when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
