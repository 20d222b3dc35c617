//! Benchmark tool: latency at a fixed request rate, corrected for
//! coordinated omission, with as little work per request as a client can
//! do. oha's fixed-rate mode on one core falls behind above ~40,000
//! requests/s (hello world's own p99 grows to tens of ms), which is below
//! half of what the servers now sustain; this probe keeps up there.
//!
//! It opens `--connections` HTTP/1.1 keep-alive connections and sends the
//! same request (`--request`, a file holding the raw request bytes) on them
//! at `--rate` requests/s in total: request `i` is due at `i / rate` s
//! after the start, on connection `i % connections`. When the connection
//! was still waiting for its previous response at the due time, the
//! latency is taken from the due time (the queueing a server that falls
//! behind causes counts); otherwise from when the request was sent, so
//! that the timer's 1 ms granularity is not counted as the server's. Responses are read up to their
//! `Content-Length`; anything but a 2xx stops the run with an error.
//!
//! ```sh
//! cargo run --release -p latchkey-server --example bench_latency -- \
//!     --addr 127.0.0.1:7401 --request /tmp/req.http --rate 45000 --seconds 10
//! ```
//!
//! Prints one JSON line: requests, the achieved rate, p50, p90, p99, p99.9
//! and max in milliseconds.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    addr: String,
    request: Vec<u8>,
    rate: f64,
    seconds: f64,
    connections: usize,
}

fn args() -> Args {
    let mut out = Args {
        addr: "127.0.0.1:7401".into(),
        request: b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        rate: 10_000.0,
        seconds: 10.0,
        connections: 50,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().expect("every flag takes a value");
        match flag.as_str() {
            "--addr" => out.addr = value,
            "--request" => out.request = std::fs::read(&value).expect("reading --request"),
            "--rate" => out.rate = value.parse().expect("--rate: requests per second"),
            "--seconds" => out.seconds = value.parse().expect("--seconds: a number"),
            "--connections" => out.connections = value.parse().expect("--connections: a number"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(out.rate > 0.0 && out.seconds > 0.0 && out.connections > 0);
    out
}

/// Reads one response (status line, headers, `Content-Length` body) into
/// `buf`, which may already hold bytes of it; returns its status and leaves
/// what followed it in `buf`.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).map_err(std::io::Error::other)?;
            let status: u16 = head
                .get(9..12)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| std::io::Error::other("no status line"))?;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .ok_or_else(|| std::io::Error::other("no Content-Length"))?;
            let total = end + 4 + length;
            while buf.len() < total {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::Error::other("connection closed mid-response"));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..total);
            return Ok(status);
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends requests `first, first + step, …` below `total`, each at its due
/// time, and returns their latencies in microseconds.
async fn connection(
    addr: String,
    request: std::sync::Arc<Vec<u8>>,
    start: Instant,
    interval: Duration,
    first: usize,
    step: usize,
    total: usize,
) -> std::io::Result<Vec<u32>> {
    let mut stream = TcpStream::connect(&addr).await?;
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(8192);
    let mut latencies = Vec::with_capacity(total / step + 1);
    let mut i = first;
    let mut free_at = start;
    while i < total {
        let due = start + interval * u32::try_from(i).map_err(std::io::Error::other)?;
        tokio::time::sleep_until(due.into()).await;
        let sent = Instant::now();
        let from = if free_at > due { due } else { sent };
        stream.write_all(&request).await?;
        let status = read_response(&mut stream, &mut buf).await?;
        if !(200..300).contains(&status) {
            return Err(std::io::Error::other(format!("status {status}")));
        }
        free_at = Instant::now();
        let micros = free_at.duration_since(from).as_micros();
        latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
        i += step;
    }
    Ok(latencies)
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("starting the async runtime");
    let total = (args.rate * args.seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let request = std::sync::Arc::new(args.request);
    let (mut latencies, elapsed) = runtime.block_on(async {
        // Connect first, so that connecting is not measured.
        let start = Instant::now() + Duration::from_millis(200);
        let tasks: Vec<_> = (0..args.connections)
            .map(|c| {
                tokio::spawn(connection(
                    args.addr.clone(),
                    request.clone(),
                    start,
                    interval,
                    c,
                    args.connections,
                    total,
                ))
            })
            .collect();
        let mut all = Vec::with_capacity(total);
        for task in tasks {
            all.extend(task.await.expect("task").expect("connection"));
        }
        (all, start.elapsed())
    });
    latencies.sort_unstable();
    let ms = |q: f64| {
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        f64::from(latencies[i]) / 1000.0
    };
    println!(
        "{{\"requests\":{},\"rate\":{:.0},\"p50\":{:.3},\"p90\":{:.3},\"p99\":{:.3},\"p999\":{:.3},\"max\":{:.3}}}",
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        ms(1.0)
    );
}
