//! The refusal log of the real binary: a refused credential is logged at
//! INFO under `latchkey::refusals` with its code, key id, path and request
//! id, never its secret, at most once per key per 10 s, and the next line
//! says how many were left out. Also the separate metrics listener's line.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Proc, client, init, serve_cmd};

/// The refusal lines of the server's stderr.
fn refusal_lines(proc: &Proc) -> Vec<String> {
    proc.stderr_text()
        .lines()
        .filter(|l| l.contains("latchkey::refusals"))
        .map(str::to_string)
        .collect()
}

/// Waits (the log is written in batches) until `n` refusal lines are there.
fn wait_for_lines(proc: &Proc, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines = refusal_lines(proc);
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn refusals_are_logged_once_per_key_per_window_without_the_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let init = init(&data, None);
    let mut proc = Proc::spawn(serve_cmd(&data, &["--metrics-listen", "127.0.0.1:0"]));
    let (url, _) = proc.wait_listening();
    let http = client();
    let wrong_secret = "lksk_this_is_not_the_secret_at_all";
    let wrong = latchkey_testkit::basic(&init.key_id, wrong_secret);
    let verify = |authorization: String, id: &'static str| {
        http.post(format!("{url}/v1/verify"))
            .header("authorization", init.operator())
            .header("x-request-id", id)
            .json(&json!({ "authorization": authorization }))
            .send()
    };
    for _ in 0..5 {
        let r = verify(wrong.clone(), "refused-1").await.expect("verify");
        assert_eq!(r.status(), 200);
    }
    let other = latchkey_testkit::basic("app_SomeOtherKeyId12345678", wrong_secret);
    verify(other, "refused-2").await.expect("verify");
    let lines = wait_for_lines(&proc, 2);
    // Give a third line, if the rate limit let one through, time to show.
    std::thread::sleep(Duration::from_millis(300));
    let lines = if lines.len() >= 2 {
        refusal_lines(&proc)
    } else {
        lines
    };
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let first = &lines[0];
    assert!(first.contains("INFO"), "{first}");
    assert!(first.contains("code=\"unauthorized\""), "{first}");
    assert!(
        first.contains(&format!("key_id=\"{}\"", init.key_id)),
        "{first}"
    );
    assert!(first.contains("path=\"verify\""), "{first}");
    assert!(first.contains("request_id=\"refused-1\""), "{first}");
    assert!(first.contains("suppressed=0"), "{first}");
    assert!(
        lines[1].contains("app_SomeOtherKeyId12345678"),
        "{}",
        lines[1]
    );
    // After the window, one line again, with the count left out.
    tokio::time::sleep(Duration::from_millis(10_300)).await;
    verify(wrong.clone(), "refused-3").await.expect("verify");
    let lines = wait_for_lines(&proc, 3);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines[2].contains("suppressed=4"), "{}", lines[2]);
    assert!(
        lines[2].contains("request_id=\"refused-3\""),
        "{}",
        lines[2]
    );
    // Never the secret, in any line.
    let stderr = proc.stderr_text();
    assert!(!stderr.contains(wrong_secret), "{stderr}");
    assert!(!stderr.contains(&init.key_secret), "{stderr}");
    assert!(!stderr.contains(&init.operator_token), "{stderr}");
    // The metrics listener's line follows the listening line.
    let stdout = proc.stdout_text();
    assert!(
        stdout.contains("latchkey metrics listening on http://127.0.0.1:"),
        "{stdout}"
    );
    proc.signal("-TERM");
    proc.wait_exit(Duration::from_secs(10));
}

/// A line a request writes on the gateway's busy path carries its request
/// id too (there is no span there): the upstream that cannot be reached.
#[tokio::test]
async fn the_gateways_upstream_failure_line_names_the_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let init = init(&data, None);
    // Port 9 (discard) is closed here: every forward fails.
    let mut proc = Proc::spawn(serve_cmd(
        &data,
        &[
            "--gateway-listen",
            "127.0.0.1:0",
            "--gateway-upstream",
            "http://127.0.0.1:9",
        ],
    ));
    proc.wait_listening();
    let deadline = Instant::now() + Duration::from_secs(30);
    let gateway = loop {
        let out = proc.stdout_text();
        if let Some(rest) = out.split("latchkey gateway listening on ").nth(1) {
            break rest.lines().next().expect("a line").trim().to_string();
        }
        assert!(Instant::now() < deadline, "no gateway line:\n{out}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let r = client()
        .get(format!("{gateway}/anything"))
        .header("authorization", init.owner())
        .header("x-request-id", "upstream-down-1")
        .send()
        .await
        .expect("gateway");
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["x-request-id"], "upstream-down-1");
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let err = proc.stderr_text();
        if let Some(line) = err
            .lines()
            .find(|l| l.contains("the upstream could not be reached"))
        {
            break line.to_string();
        }
        assert!(Instant::now() < deadline, "no upstream line:\n{err}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("upstream-down-1"), "{line}");
}
