//! The dashboard in a real browser: headless Chromium driven through chromedriver (W3C
//! WebDriver over HTTP), against a real jobs-api on SQLite whose embedded worker runs the
//! built-in handlers. It filters the job list, follows a job's progress live, cancels and
//! retries jobs and pauses a queue from the page, signs in with an API key, and fails on
//! any console error or warning. Screenshots (desktop and phone widths) are saved under
//! `target/dashboard-screenshots/` for review.

use std::{path::PathBuf, time::Duration};

use base64::Engine;
use blackbox_tests::{Proc, create_key, free_port, spawn_program, start_api, wait_until};
use reqwest::Client;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(60);
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running jobs-api and how to call it.
struct Api {
    _proc: Proc,
    _dir: tempfile::TempDir,
    base: String,
    key: Option<String>,
    http: Client,
}

impl Api {
    /// A fresh api on SQLite; with `tenant`, an API key for it is created first.
    async fn start(label: &str, tenant: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display());
        let key = tenant.map(|tenant| create_key(&url, tenant));
        let (proc, base) = start_api(label, &url, &[]).await;
        Self {
            _proc: proc,
            _dir: dir,
            base,
            key,
            http: Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, self.url(path));
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON");
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Creates a job; `wait` seconds for it to end.
    async fn create(&self, body: Value, wait: u32) -> Value {
        self.post(&format!("/v1/jobs?wait={wait}"), body).await
    }

    async fn state(&self, id: &str) -> String {
        let job = self.get(&format!("/v1/jobs/{id}")).await;
        job["state"].as_str().unwrap().to_owned()
    }

    /// A job that failed for good, in queue `remote`, which no worker of this api serves:
    /// claimed and failed through the remote-worker API, so a retry leaves it pending.
    async fn failed_remote_job(&self) -> String {
        let job = self
            .create(json!({"kind": "remote-fail", "queue": "remote"}), 0)
            .await;
        let claimed = self
            .post(
                "/v1/claims",
                json!({"worker_id": "test", "queues": ["remote"]}),
            )
            .await;
        let claimed = &claimed["jobs"][0];
        assert_eq!(claimed["id"], job["id"], "{claimed}");
        let failure = json!({
            "worker_id": "test",
            "lease_token": claimed["lease_token"],
            "error": {"kind": "boom", "message": "it broke"},
            "retryable": false,
        });
        let id = job["id"].as_str().unwrap().to_owned();
        self.post(&format!("/v1/jobs/{id}/fail"), failure).await;
        id
    }
}

/// chromedriver and one headless Chromium session, ended when dropped.
struct Browser {
    _driver: Proc,
    /// chromedriver's `host:port`.
    driver: String,
    session_id: String,
    session: String,
    http: Client,
}

impl Drop for Browser {
    /// Ends the session even when the test failed midway: killing chromedriver alone
    /// would leave Chromium running. Blocking, and by hand, since drop cannot await.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let request = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            self.session_id, self.driver
        );
        let _ = std::net::TcpStream::connect(&self.driver).and_then(|mut stream| {
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            stream.write_all(request.as_bytes())?;
            stream.read_to_end(&mut Vec::new())
        });
    }
}

impl Browser {
    async fn start(label: &str) -> Self {
        let port = free_port();
        let driver = spawn_program(
            "chromedriver",
            label,
            &[&format!("--port={port}"), "--allowed-ips=127.0.0.1"],
        );
        let http = Client::new();
        let base = format!("http://127.0.0.1:{port}");
        wait_until("chromedriver to serve", LIMIT, async || {
            match http.get(format!("{base}/status")).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|s| s["value"]["ready"] == true),
                Err(_) => false,
            }
        })
        .await;
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("create a WebDriver session")
            .json()
            .await
            .expect("JSON");
        let id = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"));
        Self {
            session: format!("{base}/session/{id}"),
            session_id: id.to_owned(),
            driver: format!("127.0.0.1:{port}"),
            _driver: driver,
            http,
        }
    }

    /// One WebDriver command; its `value`.
    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.session));
        if method == reqwest::Method::POST {
            request = request.json(&body);
        }
        let reply: Value = request
            .send()
            .await
            .expect("WebDriver request")
            .json()
            .await
            .expect("JSON");
        if let Some(error) = reply["value"]["error"].as_str() {
            panic!("WebDriver {path}: {error}: {}", reply["value"]["message"]);
        }
        reply["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.command(reqwest::Method::POST, path, body).await
    }

    async fn open(&self, url: &str) {
        self.post("/url", json!({"url": url})).await;
    }

    /// Runs JavaScript in the page; its return value.
    async fn script(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": args}))
            .await
    }

    /// The elements that `css` matches now.
    async fn find_all(&self, css: &str) -> Vec<String> {
        let found = self
            .post("/elements", json!({"using": "css selector", "value": css}))
            .await;
        found
            .as_array()
            .unwrap_or_else(|| panic!("elements {css}: {found}"))
            .iter()
            .map(|e| {
                e[ELEMENT]
                    .as_str()
                    .unwrap_or_else(|| panic!("element {e}"))
                    .to_owned()
            })
            .collect()
    }

    /// The first element `css` matches, once one does.
    async fn find(&self, css: &str) -> String {
        let mut found = None;
        wait_until(&format!("an element {css}"), LIMIT, async || {
            found = self.find_all(css).await.into_iter().next();
            found.is_some()
        })
        .await;
        found.unwrap()
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.post(&format!("/element/{element}/click"), json!({}))
            .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.post(&format!("/element/{element}/clear"), json!({}))
            .await;
        self.post(&format!("/element/{element}/value"), json!({"text": text}))
            .await;
    }

    /// Clicks `css` and confirms in the page's dialog.
    async fn click_and_confirm(&self, css: &str) {
        self.click(css).await;
        wait_until("the confirmation dialog", LIMIT, async || {
            self.script("return document.getElementById('confirm').open", json!([]))
                .await
                == true
        })
        .await;
        self.click("#confirm-ok").await;
    }

    /// Waits until `script` (a JavaScript expression) is true in the page.
    async fn wait_for(&self, what: &str, script: &str) {
        let body = format!("return Boolean({script})");
        wait_until(what, LIMIT, async || {
            self.script(&body, json!([])).await == true
        })
        .await;
    }

    async fn resize(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({"width": width, "height": height}))
            .await;
    }

    async fn screenshot(&self, name: &str) {
        let png = self
            .command(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Fails on any console error or warning since the session began (chromedriver's
    /// log). A line logged here first must be in the log: proof that it is read at all.
    async fn assert_quiet_console(&self) {
        self.script("console.info('console check')", json!([]))
            .await;
        let entries = self.post("/se/log", json!({"type": "browser"})).await;
        let entries = entries.as_array().unwrap();
        let marked = entries.iter().any(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("console check"))
        });
        assert!(marked, "the console log was not read: {entries:#?}");
        let loud: Vec<&Value> = entries
            .iter()
            .filter(|e| matches!(e["level"].as_str(), Some("SEVERE" | "WARNING")))
            .collect();
        assert!(loud.is_empty(), "console errors or warnings: {loud:#?}");
    }

    /// Dismisses the status messages, which would cover the screenshots.
    async fn dismiss_messages(&self) {
        for button in self.find_all("#toasts button").await {
            self.post(&format!("/element/{button}/click"), json!({}))
                .await;
        }
    }
}

fn chromium() -> String {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("chromium")
        .to_owned()
}

/// `target/dashboard-screenshots`, found from this test's executable
/// (`target/<profile>/deps/<test>`).
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).expect("the target directory");
    target.join("dashboard-screenshots")
}

/// The ids of the rows the job list shows, with their `data-*` attribute `field`.
async fn rows(browser: &Browser, field: &str) -> Vec<(String, String)> {
    let rows = browser
        .script(
            "return [...document.querySelectorAll('tr[data-job-id]')].map(r => [r.dataset.jobId, r.dataset[arguments[0]]])",
            json!([field]),
        )
        .await;
    serde_json::from_value(rows).unwrap()
}

/// Filters the list through the form (after clearing it) and waits for the new page.
async fn filter(browser: &Browser, field: &str, value: &str) {
    browser.click("a[href='#/jobs'].button").await;
    browser
        .wait_for(
            "a cleared filter",
            "document.querySelector('.results')?.dataset.loaded === '#/jobs'",
        )
        .await;
    match field {
        "state" => {
            browser
                .click(&format!("#f-state option[value='{value}']"))
                .await
        }
        _ => browser.type_into(&format!("#f-{field}"), value).await,
    }
    browser.click("#apply-filter").await;
    let expected = format!("{field}={value}");
    browser
        .wait_for(
            &format!("the list filtered by {expected}"),
            &format!("document.querySelector('.results')?.dataset.loaded?.includes('{expected}')"),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(jobs_browser_tests),
    ignore = "browser test NOT RUN: chromedriver is not on the PATH (apt-get install chromium chromium-driver)"
)]
async fn the_dashboard_filters_follows_and_acts_on_jobs_and_queues() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = Api::start("dashboard-api", None).await;
    for i in 0..2 {
        let echo = api
            .create(json!({"kind": "echo", "args": {"i": i}}), 30)
            .await;
        assert_eq!(echo["state"], "completed", "{echo}");
    }
    let keyed = api
        .create(json!({"kind": "echo", "unique_key": "order-42"}), 30)
        .await;
    let failed = api
        .create(json!({"kind": "fail", "max_attempts": 1}), 30)
        .await;
    assert_eq!(failed["state"], "failed", "{failed}");
    let to_retry = api.failed_remote_job().await;
    api.post("/v1/queues/held/pause", json!({})).await;
    api.create(json!({"kind": "echo", "queue": "held"}), 0)
        .await;
    // Ten progress reports, one every 6 s; and one that runs until cancelled.
    let watched = api
        .create(json!({"kind": "sleep", "args": {"ms": 60_000}}), 0)
        .await;
    let to_cancel = api
        .create(json!({"kind": "sleep", "args": {"ms": 600_000}}), 0)
        .await;
    let (watched, to_cancel) = (
        watched["id"].as_str().unwrap(),
        to_cancel["id"].as_str().unwrap(),
    );
    wait_until("both sleeps to run", LIMIT, async || {
        api.state(watched).await == "running" && api.state(to_cancel).await == "running"
    })
    .await;

    let browser = Browser::start("dashboard-chromedriver").await;
    browser.open(&api.url("/ui#/jobs")).await;
    browser.find("tr[data-job-id]").await;

    filter(&browser, "state", "failed").await;
    let shown = rows(&browser, "state").await;
    assert_eq!(shown.len(), 2, "the two failed jobs: {shown:?}");
    assert!(
        shown.iter().all(|(_, state)| state == "failed"),
        "{shown:?}"
    );

    filter(&browser, "kind", "echo").await;
    let shown = rows(&browser, "kind").await;
    let listed = api.get("/v1/jobs?kind=echo").await;
    assert_eq!(
        shown.len(),
        listed["items"].as_array().unwrap().len(),
        "{shown:?}"
    );
    assert!(shown.iter().all(|(_, kind)| kind == "echo"), "{shown:?}");

    filter(&browser, "q", "order-42").await;
    let shown = rows(&browser, "kind").await;
    assert_eq!(
        shown,
        vec![(keyed["id"].as_str().unwrap().to_owned(), "echo".to_owned())]
    );

    // Open the sleeping job from the list and watch its progress move.
    filter(&browser, "kind", "sleep").await;
    browser.click(&format!("a[href='#/jobs/{watched}']")).await;
    let progress = "Number(document.getElementById('job-progress')?.value ?? -1)";
    browser
        .wait_for("some progress", &format!("{progress} > 0"))
        .await;
    let first = browser
        .script(&format!("return {progress}"), json!([]))
        .await;
    browser
        .wait_for(
            "the progress to move on, live",
            &format!("{progress} > {first} && document.getElementById('job-progress-text').textContent !== ''"),
        )
        .await;
    browser.screenshot("desktop-job").await;

    // Cancel the long sleep from its page.
    browser
        .open(&api.url(&format!("/ui#/jobs/{to_cancel}")))
        .await;
    browser
        .wait_for(
            "the running job",
            "document.querySelector('#job-state [data-state=running]')",
        )
        .await;
    browser.click_and_confirm("#cancel-job").await;
    browser
        .wait_for(
            "the job shown cancelled",
            "document.querySelector('#job-state [data-state=cancelled]')",
        )
        .await;
    assert_eq!(api.state(to_cancel).await, "cancelled");

    // Retry the failed job from its page: it waits in its queue again.
    browser
        .open(&api.url(&format!("/ui#/jobs/{to_retry}")))
        .await;
    browser
        .wait_for(
            "the failed job",
            "document.querySelector('#job-state [data-state=failed]')",
        )
        .await;
    browser.click_and_confirm("#retry-job").await;
    browser
        .wait_for(
            "the job shown pending",
            "document.querySelector('#job-state [data-state=pending]')",
        )
        .await;
    assert_eq!(api.state(&to_retry).await, "pending");

    // Pause queue `remote` from the queues view.
    browser.open(&api.url("/ui#/queues")).await;
    browser
        .click_and_confirm("section[data-queue='remote'] button[data-action='pause']")
        .await;
    browser
        .wait_for(
            "the queue shown paused",
            "document.querySelector(\"section[data-queue='remote'] button[data-action='resume']\")",
        )
        .await;
    let queues = api.get("/v1/queues").await;
    let remote = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "remote")
        .expect("queue remote");
    assert_eq!(remote["paused"], true, "{remote}");
    browser
        .wait_for(
            "a chart per queue",
            "document.querySelectorAll('section[data-queue] svg.chart').length >= 3",
        )
        .await;

    browser.dismiss_messages().await;
    browser.screenshot("desktop-queues").await;
    browser.open(&api.url("/ui#/jobs")).await;
    browser.find("tr[data-job-id]").await;
    browser.screenshot("desktop-jobs").await;
    browser.resize(390, 844).await;
    browser
        .wait_for("the phone layout", "window.innerWidth <= 400")
        .await;
    browser.screenshot("phone-jobs").await;
    browser.open(&api.url("/ui#/queues")).await;
    browser.find("section[data-queue] svg.chart").await;
    browser.screenshot("phone-queues").await;
    browser
        .open(&api.url(&format!("/ui#/jobs/{watched}")))
        .await;
    browser.find("#job-state [data-state]").await;
    browser.screenshot("phone-job").await;

    browser.assert_quiet_console().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(jobs_browser_tests),
    ignore = "browser test NOT RUN: chromedriver is not on the PATH (apt-get install chromium chromium-driver)"
)]
async fn the_dashboard_signs_in_with_an_api_key_and_shows_the_tenant() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = Api::start("dashboard-keyed-api", Some("t")).await;
    let job = api.create(json!({"kind": "echo"}), 30).await;
    let browser = Browser::start("dashboard-keyed-chromedriver").await;
    browser.open(&api.url("/ui#/jobs")).await;
    browser
        .type_into("#api-key", api.key.as_deref().unwrap())
        .await;
    browser.screenshot("desktop-sign-in").await;
    browser.click("#sign-in").await;
    browser
        .wait_for(
            "the tenant shown",
            "document.getElementById('tenant').textContent === 'Tenant: t'",
        )
        .await;
    browser
        .find(&format!(
            "tr[data-job-id='{}']",
            job["id"].as_str().unwrap()
        ))
        .await;
    // The key is kept for the session: a reload needs no sign-in.
    browser.open(&api.url("/ui#/queues")).await;
    browser.find("section[data-queue='default']").await;
    browser
        .wait_for(
            "the tenant shown again",
            "document.getElementById('tenant').textContent === 'Tenant: t'",
        )
        .await;
    browser.assert_quiet_console().await;
}
