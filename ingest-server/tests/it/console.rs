//! The operator console in a real headless browser (Debian's chromium), driven over the Chrome
//! DevTools Protocol: the page loads without a console error (a script error, a refused
//! request, a Content-Security-Policy violation), shows what the API answers, and follows a
//! new signature and new events live. The page keeps an event stream open, so it is never
//! idle: every wait is for content, polled, with a deadline.
//!
//! `CONSOLE_SCREENSHOT=docs/console.png` also fills the server with some realistic traffic
//! and saves a screenshot of the page there.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use engine::ManualClock;
use hyper::Method;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use crate::support::{tool, TestServer, ADMIN, INGEST};

/// How long the page may take to show what a step waits for (it polls every 2 s).
const WAIT: Duration = Duration::from_secs(20);

const MINUTE: u64 = 60_000;
const DAY: u64 = 24 * 60 * MINUTE;

/// What the page shows, read from its DOM in one evaluation.
const SNAPSHOT: &str = r#"(() => {
  const all = (s) => Array.from(document.querySelectorAll(s));
  const text = (id) => { const e = document.getElementById(id); return e ? e.textContent : null; };
  const rows = (id) => all('#' + id + ' tbody tr[data-id]').map((tr) => ({
    id: tr.dataset.id, cells: Array.from(tr.cells).map((c) => c.textContent), overdue: tr.classList.contains('overdue') }));
  const status = document.getElementById('status');
  let stored = null;
  try { stored = sessionStorage.getItem('ingest-console-admin-key'); } catch (e) { stored = 'unreadable'; }
  return {
    top: rows('top'), trending: rows('trending'), awaiting: rows('awaiting'),
    feed: all('#feed li[data-seq]').map((li) => ({ seq: Number(li.dataset.seq), text: li.textContent })),
    health: text('health-state'), selected: text('pet-id'), pet_count: text('pet-count'),
    countries: all('#pet-countries g.country').map((g) => [g.dataset.country, Number(g.dataset.count)]),
    minute_bars: all('#pet-chart rect').length,
    rate_peak: text('rate-peak'), p99: text('lat-p99'), rate_points: all('#rate-chart path, #rate-chart circle').length,
    role: text('role'), status: status ? status.textContent : null, status_error: status ? status.className === 'error' : null,
    stored: stored, href: location.href,
  };
})()"#;

#[test]
fn console_shows_what_the_api_answers_and_follows_it_live_in_a_browser() {
    let Some(chromium) = tool(
        "console_shows_what_the_api_answers_and_follows_it_live_in_a_browser",
        &["chromium", "chromium-browser", "google-chrome"],
        "CHROMIUM",
        "apt-get install chromium",
    ) else {
        return;
    };
    let screenshot = std::env::var_os("CONSOLE_SCREENSHOT").map(PathBuf::from);
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The screenshot's traffic spreads over the last hour (and a petition whose response is
    // overdue over the last months), so its clock is set by hand; it ends at the real time,
    // which the page reads from the `Date` header.
    let clock = Arc::new(ManualClock::new(now_ms() - 95 * DAY));
    let server = runtime.block_on(TestServer::start_with(
        |config| {
            config.sources = Some(engine::SourcesConfig {
                alert_threshold: Some(if screenshot.is_some() { 25 } else { 3 }),
                ..engine::SourcesConfig::DEFAULT
            });
            config.rate_limits = None;
            if screenshot.is_some() {
                config.clock = clock.clone();
            }
        },
        |_| {},
    ));
    let api = Api {
        runtime: &runtime,
        server: &server,
    };
    if screenshot.is_some() {
        api.realistic_history(&clock);
    } else {
        api.small_history();
    }

    // The page's own headers: its policy, and the redirect to it.
    let page = runtime.block_on(server.send(Method::GET, "/console", &[], ""));
    assert_eq!(page.status, 200);
    let policy = page.header("content-security-policy").unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'sha256-",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{directive} in {policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    let root = runtime.block_on(server.send(Method::GET, "/", &[], ""));
    assert_eq!(
        (root.status, root.header("location")),
        (307, Some("/console"))
    );

    let mut browser = Browser::launch(&chromium);
    browser.navigate(&format!("http://{}/", server.addr));

    // The lists, the feed, the store and the petition shown first are what the API answers.
    let first = browser.wait_for("the page shows what the API answers", |page| {
        api.page_matches(page)
    });
    assert_eq!(first["health"], "ready");
    assert!(first["minute_bars"].as_u64().unwrap() >= 1, "{first}");
    let alert = first["feed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["text"].as_str().unwrap().contains("source alert"))
        .cloned()
        .expect("the source alert is in the feed");
    assert!(
        alert["text"].as_str().unwrap().contains("shown to admins"),
        "a public reader is not shown the source: {alert}"
    );

    // Another petition, chosen in the top list: its countries.
    browser.evaluate("document.querySelector('#top tr[data-id=\"more-buses\"]').click()");
    browser.wait_for("more-buses is shown", |page| {
        if page["selected"] != "more-buses" {
            return Err(format!("selected {}", page["selected"]));
        }
        api.page_matches(page)
    });

    // One more signature: its count, and the threshold it crosses in the feed (the event
    // stream), the petition now awaiting a response, and the ingest rate.
    let before = api.get("/v1/petitions/more-buses")["count"]
        .as_u64()
        .unwrap();
    api.sign("more-buses", "late@signer.example", None);
    let last = api.get("/v1/events?after=0&limit=1")["last"]
        .as_u64()
        .unwrap();
    let live = browser.wait_for("the new signature and its events", |page| {
        if number(&page["pet_count"]) != Some(before + 1) {
            return Err(format!("count {} not {}", page["pet_count"], before + 1));
        }
        if !page["feed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["seq"].as_u64() == Some(last))
        {
            return Err(format!("event {last} not in the feed"));
        }
        if !rate(&page["rate_peak"]).is_some_and(|peak| peak > 0.0) {
            return Err(format!("ingest rate {}", page["rate_peak"]));
        }
        api.page_matches(page)
    });
    assert!(live["awaiting"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["id"] == "more-buses"));
    assert_ne!(live["p99"], "–", "{live}");

    // The admin key: kept for the tab, never in the address; the feed now names the source.
    browser.evaluate(
        "document.getElementById('key').value = 'admin-key-0001';\
         document.getElementById('key-form').requestSubmit()",
    );
    let admin = browser.wait_for("the admin view", |page| {
        if page["role"] != "admin" {
            return Err(format!("role {}", page["role"]));
        }
        let alert = page["feed"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["text"].as_str().unwrap().contains("source alert"));
        match alert {
            Some(e) if e["text"].as_str().unwrap().contains(api.alert_source()) => {
                api.page_matches(page)
            }
            other => Err(format!("alert {other:?}")),
        }
    });
    assert_eq!(admin["stored"], "admin-key-0001");
    assert!(!admin["href"].as_str().unwrap().contains("admin-key"));

    if let Some(path) = &screenshot {
        api.live_traffic(&clock, &mut browser);
        browser.wait_for("the page after the traffic", |page| api.page_matches(page));
        browser.save_screenshot(path);
    }

    // A last round trip, so that anything the page logged is read, then nothing was.
    let last = browser.evaluate(SNAPSHOT);
    assert!(
        browser.errors.is_empty(),
        "the page logged errors: {:#?}",
        browser.errors
    );
    assert_eq!(
        last["status_error"], false,
        "status line: {}",
        last["status"]
    );
    browser.close();
    eprintln!("console test took {:?}", started.elapsed());
}

/// The test server, spoken to from the test's thread.
struct Api<'a> {
    runtime: &'a tokio::runtime::Runtime,
    server: &'a TestServer,
}

impl Api<'_> {
    fn get(&self, path: &str) -> Value {
        let reply = self
            .runtime
            .block_on(self.server.send(Method::GET, path, &[], ""));
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
        reply.json()
    }

    fn register(&self, id: &str, body: &str) {
        self.runtime.block_on(self.server.register(id, body));
    }

    fn sign(&self, petition: &str, email: &str, ip: Option<&str>) {
        let mut body = json!({ "email": email });
        if let Some(ip) = ip {
            body["ip"] = ip.into();
        }
        let reply = self.runtime.block_on(self.server.post_json(
            &format!("/v1/petitions/{petition}/signatures"),
            INGEST,
            &body.to_string(),
        ));
        assert_eq!(reply.status, 201, "{reply:?}");
    }

    /// Signatures in one batch request: (petition, email, country, ip).
    fn batch(&self, lines: &[(String, String, Option<&str>, Option<String>)]) {
        let mut body = String::new();
        for (petition, email, country, ip) in lines {
            let mut line = json!({ "petition": petition, "email": email });
            if let Some(country) = country {
                line["country"] = (*country).into();
            }
            if let Some(ip) = ip {
                line["ip"] = ip.as_str().into();
            }
            body.push_str(&line.to_string());
            body.push('\n');
        }
        let reply = self.runtime.block_on(self.server.send(
            Method::POST,
            "/v1/signatures:batch",
            &[
                ("authorization", INGEST),
                ("content-type", "application/x-ndjson"),
            ],
            &body,
        ));
        assert_eq!(reply.status, 200, "{reply:?}");
        let accepted = String::from_utf8_lossy(&reply.body)
            .lines()
            .filter(|line| line.contains("\"accepted\""))
            .count();
        assert_eq!(accepted, lines.len(), "{reply:?}");
    }

    /// A few petitions and signatures: one petition awaiting a response, one close to its
    /// threshold, countries, and three signers from one /24 that make a source alert.
    fn small_history(&self) {
        self.register("clean-rivers", r#"{"thresholds":[10]}"#);
        self.register("more-buses", r#"{"thresholds":[6]}"#);
        self.register(
            "fix-the-bridge",
            r#"{"thresholds":[2],"response_due_days":30}"#,
        );
        let mut lines = Vec::new();
        for (petition, n, countries) in [
            ("clean-rivers", 12, &["FR", "DE", "FR"][..]),
            ("more-buses", 5, &["GB", "IE"][..]),
        ] {
            for i in 0..n {
                let country = countries.get(i % (countries.len() + 1)).copied();
                lines.push((
                    petition.to_string(),
                    format!("s{i}@{petition}-{i}.example"),
                    country,
                    None,
                ));
            }
        }
        self.batch(&lines);
        for i in 7..10 {
            self.sign(
                "fix-the-bridge",
                &format!("n{i}@net{i}.example"),
                Some(&format!("203.0.113.{i}")),
            );
        }
    }

    /// The source the alert names: the /24 of the signers above (or the screenshot's).
    fn alert_source(&self) -> &'static str {
        if std::env::var_os("CONSOLE_SCREENSHOT").is_some() {
            "198.51.100.0/24"
        } else {
            "203.0.113.0/24"
        }
    }

    /// An hour of traffic on several petitions, one of them overdue for a response.
    fn realistic_history(&self, clock: &ManualClock) {
        let now = now_ms();
        let mut random = Lcg(0x5eed);
        self.register(
            "repair-the-pier",
            r#"{"thresholds":[50],"response_due_days":90}"#,
        );
        let lines: Vec<_> = (0..64)
            .map(|i| {
                (
                    "repair-the-pier".to_string(),
                    format!("p{i}@pier{i}.example"),
                    Some("GB"),
                    None,
                )
            })
            .collect();
        self.batch(&lines);
        clock.set(now - 61 * MINUTE);
        let petitions: [(&str, &str, u64, &[&str]); 6] = [
            (
                "clean-rivers",
                r#"{"thresholds":[10000,20000]}"#,
                600,
                &["GB", "FR", "DE", "NL", "IE", "ES", "BE"],
            ),
            (
                "more-buses",
                r#"{"thresholds":[5000],"response_due_days":60}"#,
                240,
                &["GB", "IE"],
            ),
            (
                "night-trains",
                r#"{"thresholds":[10000]}"#,
                300,
                &["DE", "AT", "CH", "FR", "NL", "PL"],
            ),
            ("fix-the-bridge", r#"{"thresholds":[500]}"#, 40, &["GB"]),
            ("save-the-library", "{}", 60, &["GB", "US", "CA"]),
            ("cycle-lanes-now", "{}", 80, &["NL", "DK", "GB"]),
        ];
        for (id, body, _, _) in &petitions {
            self.register(id, body);
        }
        let mut serial = 0u64;
        for minute in 0..60u64 {
            clock.set(now - (60 - minute) * MINUTE);
            let mut lines = Vec::new();
            for (index, (id, _, rate, countries)) in petitions.iter().enumerate() {
                // A rise and fall per petition, peaking at a different time for each, with noise.
                let phase = (minute as f64 / 60.0 - index as f64 / 7.0) * std::f64::consts::TAU;
                let wave = 0.55 + 0.45 * phase.sin();
                let n = (*rate as f64 * wave * (0.6 + 0.8 * random.unit())) as u64;
                if *id == "cycle-lanes-now" && minute >= 40 {
                    continue;
                }
                for _ in 0..n {
                    serial += 1;
                    let country = (random.unit() > 0.08).then(|| {
                        countries[((random.unit().powi(2)) * countries.len() as f64) as usize]
                    });
                    lines.push((
                        id.to_string(),
                        format!("v{serial}@mail{serial}.example"),
                        country,
                        None,
                    ));
                }
            }
            if minute == 47 {
                for i in 0..30 {
                    serial += 1;
                    lines.push((
                        "night-trains".to_string(),
                        format!("b{serial}@bulk{serial}.example"),
                        Some("DE"),
                        Some(format!("198.51.100.{}", 10 + i)),
                    ));
                }
            }
            self.batch(&lines);
            if minute == 40 {
                let reply = self.runtime.block_on(self.server.close("cycle-lanes-now"));
                assert_eq!(reply.status, 200, "{reply:?}");
            }
            if minute == 52 {
                let reply = self.runtime.block_on(self.server.send(
                    Method::PUT,
                    "/v1/petitions/fix-the-bridge/response",
                    &[
                        ("authorization", ADMIN),
                        ("content-type", "application/json"),
                    ],
                    r#"{"summary":"The council will repair it by March."}"#,
                ));
                assert_eq!(reply.status, 200, "{reply:?}");
            }
        }
        clock.set(now_ms());
    }

    /// Half a minute of signatures at a varying rate while the page watches, for its charts.
    fn live_traffic(&self, clock: &ManualClock, browser: &mut Browser) {
        let mut random = Lcg(0x11fe);
        let start = Instant::now();
        let mut serial = 0u64;
        while start.elapsed() < Duration::from_secs(40) {
            clock.set(now_ms());
            let t = start.elapsed().as_secs_f64();
            // 15 to 55 a second, about what the last hour had.
            let n = (7.0 + 4.0 * (t / 6.0).sin() + 3.0 * random.unit()) as usize;
            let lines: Vec<_> = (0..n)
                .map(|_| {
                    serial += 1;
                    let id = ["clean-rivers", "clean-rivers", "night-trains", "more-buses"]
                        [(random.unit() * 4.0) as usize];
                    let country = ["GB", "FR", "DE", "IE", "NL"][(random.unit() * 5.0) as usize];
                    (
                        id.to_string(),
                        format!("l{serial}@live{serial}.example"),
                        Some(country),
                        None,
                    )
                })
                .collect();
            self.batch(&lines);
            // Reads what the page logged so far while the traffic runs.
            browser.evaluate("1");
            std::thread::sleep(Duration::from_millis(250));
        }
        clock.set(now_ms());
    }

    /// `Ok` when the page shows the counts the API answers now, else what differs.
    fn page_matches(&self, page: &Value) -> Result<(), String> {
        let rows = |list: &str| -> Vec<Vec<String>> {
            page[list]
                .as_array()
                .map(|rows| {
                    rows.iter()
                        .map(|row| {
                            let mut cells = vec![row["id"].as_str().unwrap_or("").to_string()];
                            for cell in row["cells"].as_array().into_iter().flatten().skip(1) {
                                cells.push(cell.as_str().unwrap_or("").replace(',', ""));
                            }
                            cells.push(row["overdue"].to_string());
                            cells
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let expect =
            |path: &str, cells: &dyn Fn(&Value) -> (String, String)| -> Vec<(String, String)> {
                self.get(path)["petitions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(cells)
                    .collect()
            };
        let shown = |list: &str, column: usize| -> Vec<(String, String)> {
            rows(list)
                .into_iter()
                .map(|row| (row[0].clone(), row[column].clone()))
                .collect()
        };
        let top = expect("/v1/petitions?sort=count&limit=10", &|p| {
            (p["id"].as_str().unwrap().into(), p["count"].to_string())
        });
        if shown("top", 1) != top {
            return Err(format!("top {:?}, the API {top:?}", shown("top", 1)));
        }
        let trending = expect("/v1/petitions?sort=trending&window=1h&limit=10", &|p| {
            (
                p["id"].as_str().unwrap().into(),
                format!("+{}", p["signatures_in_window"]),
            )
        });
        if shown("trending", 1) != trending {
            return Err(format!(
                "trending {:?}, the API {trending:?}",
                shown("trending", 1)
            ));
        }
        let awaiting = expect(
            "/v1/petitions?state=awaiting_response&sort=due&limit=20",
            &|p| (p["id"].as_str().unwrap().into(), p["overdue"].to_string()),
        );
        let awaiting_shown: Vec<_> = rows("awaiting")
            .into_iter()
            .map(|row| (row[0].clone(), row[row.len() - 1].clone()))
            .collect();
        if awaiting_shown != awaiting {
            return Err(format!("awaiting {awaiting_shown:?}, the API {awaiting:?}"));
        }
        let events = self.get("/v1/events?after=0&limit=1000");
        let last = events["last"].as_u64().unwrap();
        let mut seqs: Vec<u64> = page["feed"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["seq"].as_u64())
            .collect();
        seqs.sort_unstable();
        // The page starts from the last 100 events and adds every one after them.
        let first = last.saturating_sub(99).max(1);
        let contiguous = seqs.windows(2).all(|pair| pair[1] == pair[0] + 1);
        let complete = seqs.first().is_some_and(|&seq| seq <= first) && seqs.last() == Some(&last);
        if !(contiguous && (complete || last == 0 && seqs.is_empty())) {
            return Err(format!("feed {seqs:?}, the API's last event {last}"));
        }
        let Some(selected) = page["selected"].as_str().filter(|id| !id.starts_with('(')) else {
            return Err("no petition shown".into());
        };
        let petition = self.get(&format!("/v1/petitions/{selected}"));
        if number(&page["pet_count"]) != petition["count"].as_u64() {
            return Err(format!(
                "{selected} shows {}, the API {}",
                page["pet_count"], petition["count"]
            ));
        }
        let countries: Vec<Value> = self
            .get(&format!("/v1/petitions/{selected}/countries?limit=10"))["countries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| json!([c["country"], c["count"]]))
            .collect();
        if page["countries"].as_array() != Some(&countries) {
            return Err(format!(
                "{selected}'s countries {}, the API {countries:?}",
                page["countries"]
            ));
        }
        Ok(())
    }
}

/// A number as the page writes it (`1,234`).
fn number(text: &Value) -> Option<u64> {
    text.as_str()?.replace(',', "").parse().ok()
}

/// A rate as the page writes it (`0.50`), `None` for `–`.
fn rate(text: &Value) -> Option<f64> {
    text.as_str()?.replace(',', "").parse().ok()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A small fixed-seed generator, so the screenshot's traffic is the same each time.
struct Lcg(u64);

impl Lcg {
    fn unit(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Headless chromium and one page in it, over the DevTools WebSocket. Dropped (a test
/// that fails, too), it kills the browser.
struct Browser {
    child: Child,
    socket: WebSocket<TcpStream>,
    /// The DevTools id of the page's attachment (empty before): commands to the page carry it.
    attached: String,
    next_id: u64,
    /// What the page logged as an error: exceptions, `console.error`/`warn`, and the
    /// browser's own error entries (a refused request, a policy violation).
    errors: Vec<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch(program: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(profile.path().join("stderr.log")).unwrap();
        let data = profile.path().join("data");
        let child = Command::new(program)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--mute-audio",
                "--remote-debugging-port=0",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", data.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", program.display()));
        let mut browser_guard = Guard(Some(child));
        // Chromium writes its port and the browser's WebSocket path once it listens.
        let deadline = Instant::now() + WAIT;
        let (port, path) = loop {
            let text = std::fs::read_to_string(data.join("DevToolsActivePort")).unwrap_or_default();
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                if let Ok(port) = port.parse::<u16>() {
                    break (port, path.to_string());
                }
            }
            let log =
                std::fs::read_to_string(profile.path().join("stderr.log")).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "chromium did not open its DevTools port in {WAIT:?}: {log}"
            );
            if let Some(status) = browser_guard.0.as_mut().unwrap().try_wait().unwrap() {
                panic!("chromium exited ({status}): {log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        // A bound on every read: a browser that stops answering fails the test.
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let (socket, _) = tungstenite::client(format!("ws://127.0.0.1:{port}{path}"), stream)
            .unwrap_or_else(|e| panic!("DevTools WebSocket: {e}"));
        let mut browser = Browser {
            child: browser_guard.0.take().unwrap(),
            socket,
            attached: String::new(),
            next_id: 0,
            errors: Vec::new(),
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }));
        let attached = browser.call(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        browser.attached = attached["sessionId"].as_str().unwrap().to_string();
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            browser.call(domain, json!({}));
        }
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false }),
        );
        browser
    }

    fn navigate(&mut self, url: &str) {
        let answer = self.call("Page.navigate", json!({ "url": url }));
        assert!(answer.get("errorText").is_none(), "{url}: {answer}");
    }

    /// Sends one command (to the page once attached) and reads until its answer, noting the
    /// events on the way.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.attached.is_empty() {
            message["sessionId"] = self.attached.as_str().into();
        }
        self.socket
            .send(Message::text(message.to_string()))
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        loop {
            let frame = self
                .socket
                .read()
                .unwrap_or_else(|e| panic!("{method}: no answer from chromium: {e}"));
            let Message::Text(text) = frame else { continue };
            let message: Value = serde_json::from_str(text.as_str()).unwrap();
            if message["id"].as_u64() == Some(id) {
                if let Some(error) = message.get("error") {
                    panic!("{method}: {error}");
                }
                return message["result"].clone();
            }
            self.note(&message);
        }
    }

    fn note(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let details = &params["exceptionDetails"];
                self.errors.push(format!(
                    "exception: {} {}",
                    details["text"], details["exception"]["description"]
                ));
            }
            Some("Runtime.consoleAPICalled")
                if matches!(
                    params["type"].as_str(),
                    Some("error" | "warning" | "assert")
                ) =>
            {
                self.errors.push(format!(
                    "console.{}: {}",
                    params["type"].as_str().unwrap_or(""),
                    params["args"]
                ));
            }
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => {
                let entry = &params["entry"];
                self.errors
                    .push(format!("log: {} ({})", entry["text"], entry["url"]));
            }
            _ => {}
        }
    }

    /// The value of a JavaScript expression in the page (`null` while it loads).
    fn evaluate(&mut self, expression: &str) -> Value {
        let answer = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        if answer.get("exceptionDetails").is_some() {
            return Value::Null;
        }
        answer["result"]["value"].clone()
    }

    /// Reads the page every 100 ms until `check` accepts it (at most [`WAIT`]).
    fn wait_for(
        &mut self,
        what: &str,
        mut check: impl FnMut(&Value) -> Result<(), String>,
    ) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let page = self.evaluate(SNAPSHOT);
            let verdict = if page.is_null() {
                Err("the page is not loaded".to_string())
            } else {
                check(&page)
            };
            match verdict {
                Ok(()) => return page,
                Err(why) if Instant::now() > deadline => panic!(
                    "{what}: not within {WAIT:?}: {why}\nthe page: {page:#}\nerrors: {:#?}",
                    self.errors
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn save_screenshot(&mut self, path: &Path) {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": false }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, &png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("saved {} ({} bytes)", path.display(), png.len());
    }

    /// Closes the browser and waits for it to exit (killed after 10 s).
    fn close(mut self) {
        self.attached.clear();
        let _ = self.socket.send(Message::text(
            json!({ "id": 0, "method": "Browser.close" }).to_string(),
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills a browser that has not yet become a [`Browser`] (its start failed).
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
