//! Benchmark tool: cold start and resident memory of `latchkey serve`.
//!
//! Starts the given binary on a data directory (listening on a free
//! loopback port), times from spawning it to its `latchkey listening on`
//! line, waits `--settle-ms`, reads `VmRSS` and `VmHWM` from
//! /proc/PID/status, stops it with SIGTERM and prints one JSON line per
//! run.
//!
//! ```sh
//! cargo run --release -p latchkey-server --example bench_coldstart -- \
//!     --bin target/release/latchkey --data-dir /tmp/lk1m [--runs 3] [--settle-ms 2000]
//! ```
#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Args {
    bin: PathBuf,
    data_dir: PathBuf,
    runs: u32,
    settle: Duration,
}

fn args() -> Args {
    let mut out = Args {
        bin: PathBuf::from("target/release/latchkey"),
        data_dir: PathBuf::from("latchkey-data"),
        runs: 3,
        settle: Duration::from_millis(2000),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().expect("every flag takes a value");
        match flag.as_str() {
            "--bin" => out.bin = PathBuf::from(value),
            "--data-dir" => out.data_dir = PathBuf::from(value),
            "--runs" => out.runs = value.parse().expect("--runs: a number"),
            "--settle-ms" => {
                out.settle = Duration::from_millis(value.parse().expect("--settle-ms: a number"));
            }
            other => panic!("unknown flag {other}"),
        }
    }
    out
}

/// A `kB` field of /proc/PID/status.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

fn main() {
    let args = args();
    for run in 1..=args.runs {
        let started = Instant::now();
        let mut child = Command::new(&args.bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(&args.data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("LATCHKEY_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting latchkey serve");
        let pid = child.id();
        let stdout = child.stdout.take().expect("the child's stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut url = None;
        for line in lines.by_ref() {
            let line = line.expect("reading the child's stdout");
            if let Some(rest) = line.strip_prefix("latchkey listening on ") {
                url = Some(rest.to_string());
                break;
            }
        }
        let cold_start = started.elapsed();
        let url = url.expect("latchkey serve exited before listening");
        std::thread::sleep(args.settle);
        let rss = status_kib(pid, "VmRSS").unwrap_or(0);
        let hwm = status_kib(pid, "VmHWM").unwrap_or(0);
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        // Drain what is left so the child never blocks on a full pipe.
        for _ in lines {}
        let status = child.wait().expect("waiting for latchkey serve");
        println!(
            "{}",
            serde_json::json!({
                "run": run,
                "url": url,
                "coldStartMs": cold_start.as_secs_f64() * 1000.0,
                "vmRssKiB": rss,
                "vmHwmKiB": hwm,
                "exit": status.code(),
            })
        );
    }
}
