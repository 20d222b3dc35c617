//! WebDriver plumbing for the real-browser tests: Debian's headless
//! Chromium, driven through a ChromeDriver this module starts on a free
//! port and kills (with the browser it launched) when dropped.
//!
//! Included by `tests/browser.rs` only (`#[path]`), so the other test
//! binaries do not compile it.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tempfile::TempDir;

/// How long a page condition may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(15);
/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(50);
/// How long ChromeDriver may take to answer `/status`.
const DRIVER_START: Duration = Duration::from_secs(20);

const INSTALL_HINT: &str = "the browser tests need Debian's packages `chromium chromium-driver`: \
     `apt-get install chromium chromium-driver` (.ci/run installs them when missing)";

/// Chromium's flags: headless, no sandbox (CI runs as root), nothing that
/// phones home, a fixed window for comparable screenshots.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-crash-reporter",
    "--disable-breakpad",
    "--window-size=1280,1100",
];

/// `name` on the PATH, else in /usr/bin; fails the test with the install
/// hint when it is in neither.
fn program(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` not found on the PATH nor in /usr/bin; {INSTALL_HINT}"))
}

/// A ChromeDriver process, in a process group of its own so that dropping
/// it also ends the Chromium it launched.
struct Driver {
    child: Child,
    log: PathBuf,
}

impl Driver {
    /// `dir` holds the log and the temporary files of the driver and the
    /// browser (TMPDIR), so that nothing is left behind.
    fn spawn(port: u16, dir: &Path) -> Self {
        use std::os::unix::process::CommandExt;
        let log = dir.join("chromedriver.log");
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).expect("temporary directory");
        let child = Command::new(program("chromedriver"))
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting chromedriver: {e}; {INSTALL_HINT}"));
        Self { child, log }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group is ours: ChromeDriver (its leader) and the browser.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One headless Chromium session with a fresh profile.
pub struct Browser {
    pub client: Client,
    // Dropped after the client: kills the driver, then removes the profile.
    driver: Driver,
    _profile: TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").finish_non_exhaustive()
    }
}

/// Polls `check` until it yields a value, or `WAIT` passes (None).
pub async fn poll<T, F, Fut>(mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

impl Browser {
    /// Starts ChromeDriver on a free port, waits until it answers, and
    /// opens a Chromium session.
    pub async fn start() -> Self {
        let chromium = program("chromium");
        let profile = tempfile::tempdir().expect("profile dir");
        let port = crate::common::free_port();
        let mut driver = Driver::spawn(port, profile.path());
        let base = format!("http://127.0.0.1:{port}");
        let http = crate::common::http_client();
        let deadline = Instant::now() + DRIVER_START;
        loop {
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!(
                    "chromedriver exited at start ({status}); {INSTALL_HINT}\n{}",
                    driver.log_tail()
                );
            }
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on {base} within {DRIVER_START:?}\n{}",
                driver.log_tail()
            );
            tokio::time::sleep(POLL).await;
        }

        let user_data_dir = profile.path().join("chromium");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", user_data_dir.display()));
        let mut caps = Capabilities::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": chromium.display().to_string(), "args": args}),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&base)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no Chromium session through chromedriver: {e}; {INSTALL_HINT}\n{}",
                    driver.log_tail()
                )
            });
        Self {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Ends the session (closing Chromium); the driver is killed on drop.
    pub async fn close(self) {
        let Self {
            client,
            driver,
            _profile,
        } = self;
        client.close().await.expect("close the session");
        drop(driver);
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    pub async fn current_url(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("current url")
            .to_string()
    }

    /// The value waited for, or a failure that tells what the page shows.
    async fn or_fail<T>(&self, found: Option<T>, what: &str) -> T {
        match found {
            Some(v) => v,
            None => {
                let url = self
                    .client
                    .current_url()
                    .await
                    .map(|u| u.to_string())
                    .unwrap_or_default();
                let text = match self.client.find(Locator::Css("body")).await {
                    Ok(body) => body.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                let text: String = text.chars().take(2000).collect();
                panic!("timed out after {WAIT:?} waiting for {what}; the page is {url}:\n{text}")
            }
        }
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the
    /// page and returns its value.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` until it returns something other than null.
    pub async fn wait_for_js(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        let found = poll(|| {
            let args = args.clone();
            async move {
                let v = self.client.execute(script, args).await.ok()?;
                (!v.is_null()).then_some(v)
            }
        })
        .await;
        self.or_fail(found, what).await
    }

    /// The element matching the CSS `selector`, waiting for it to appear.
    pub async fn find(&self, selector: &str) -> fantoccini::elements::Element {
        let found = poll(|| async { self.client.find(Locator::Css(selector)).await.ok() }).await;
        self.or_fail(found, &format!("an element matching `{selector}`"))
            .await
    }

    /// Whether an element matches `selector` now (no waiting).
    pub async fn exists(&self, selector: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(selector))
            .await
            .expect("find_all")
            .is_empty()
    }

    /// Waits until the page's URL satisfies `check`; returns it.
    pub async fn wait_for_url(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let found = poll(|| async {
            let url = self.client.current_url().await.ok()?.to_string();
            check(&url).then_some(url)
        })
        .await;
        self.or_fail(found, what).await
    }

    /// Replaces the value of the field matching `selector` with `text`.
    pub async fn fill(&self, selector: &str, text: &str) {
        let field = self.find(selector).await;
        field.clear().await.expect("clear field");
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("typing into `{selector}`: {e}"));
    }

    pub async fn click(&self, selector: &str) {
        self.find(selector)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking `{selector}`: {e}"));
    }

    /// The visible text of the whole page.
    pub async fn body_text(&self) -> String {
        self.find("body").await.text().await.expect("body text")
    }

    /// Saves a PNG of the window to docs/screenshots/NAME.png, only when
    /// LATCHKEY_SCREENSHOTS is set (so CI does not rewrite them).
    pub async fn screenshot(&self, name: &str) {
        if std::env::var_os("LATCHKEY_SCREENSHOTS").is_none() {
            return;
        }
        let png = self.client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
        std::fs::create_dir_all(&dir).expect("docs/screenshots");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}
