//! A test server on 127.0.0.1:0 over a real engine in a temp dir, and a small HTTP client.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use engine::{Config, Engine, FlushError};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::HeaderMap;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use ingest_server::{DrainReport, Server, ServerConfig};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN: &str = "Bearer admin-key-0001";
pub const INGEST: &str = "Bearer ingest-key-0001";

pub struct TestServer {
    pub addr: SocketAddr,
    pub engine: Engine,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<DrainReport, FlushError>>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// A server with an admin and an ingest key, over a `sync` engine in a temp dir.
    pub async fn start(tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
        TestServer::start_with(|_| {}, tweak).await
    }

    /// [`TestServer::start`] over an engine whose configuration `engine_tweak` changes first
    /// (a manual clock, no background sweep, small lifecycle steps, ...).
    pub async fn start_with(
        engine_tweak: impl FnOnce(&mut Config),
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut engine_config = Config::persistent(dir.path());
        engine_tweak(&mut engine_config);
        let engine = Engine::open(engine_config).expect("engine opens");
        engine.wait_ready().expect("ready");
        let mut config = ServerConfig::default();
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.api_keys = vec![
            "admin:admin-key-0001".parse().expect("key"),
            "ingest:ingest-key-0001".parse().expect("key"),
        ];
        tweak(&mut config);
        let server = Server::bind(config, engine.clone()).await.expect("binds");
        let addr = server.local_addr();
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stop.await;
        }));
        TestServer {
            addr,
            engine,
            shutdown: Some(shutdown),
            task: Some(task),
            _dir: dir,
        }
    }

    pub async fn conn(&self) -> Conn {
        Conn::open(self.addr).await
    }

    /// One request on a fresh connection.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        self.conn()
            .await
            .send(method, path, headers, body.to_string())
            .await
    }

    pub async fn register(&self, id: &str, body: &str) -> Reply {
        let reply = self
            .send(
                Method::PUT,
                &format!("/v1/petitions/{id}"),
                &[
                    ("authorization", ADMIN),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await;
        assert!(
            reply.status == 201 || reply.status == 200,
            "register {id}: {reply:?}"
        );
        reply
    }

    pub async fn sign(&self, petition: &str, email: &str) -> Reply {
        self.send(
            Method::POST,
            &format!("/v1/petitions/{petition}/signatures"),
            &[
                ("authorization", INGEST),
                ("content-type", "application/json"),
            ],
            &format!(r#"{{"email":"{email}"}}"#),
        )
        .await
    }

    /// `POST` of a JSON body with this `Authorization` value.
    pub async fn post_json(&self, path: &str, auth: &str, body: &str) -> Reply {
        self.send(
            Method::POST,
            path,
            &[
                ("authorization", auth),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
    }

    /// `POST /v1/validations` of this token with the ingest key.
    pub async fn validate(&self, token: &str) -> Reply {
        self.post_json(
            "/v1/validations",
            INGEST,
            &serde_json::json!({ "token": token }).to_string(),
        )
        .await
    }

    /// `POST /v1/invalidations` with the admin key.
    pub async fn invalidate(&self, body: &str) -> Reply {
        self.post_json("/v1/invalidations", ADMIN, body).await
    }

    /// `GET` with the admin key.
    pub async fn get_admin(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[("authorization", ADMIN)], "")
            .await
    }

    /// `GET /v1/petitions/{id}`'s body.
    pub async fn petition(&self, id: &str) -> serde_json::Value {
        let reply = self
            .send(Method::GET, &format!("/v1/petitions/{id}"), &[], "")
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.json()
    }

    /// Polls invalidation job `id` until it is no longer running (at most 30 s) and returns it.
    pub async fn finished_job(&self, id: u64) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let reply = self.get_admin(&format!("/v1/invalidations/{id}")).await;
            assert_eq!(reply.status, 200, "{reply:?}");
            let job = reply.json();
            if job["state"] != "running" {
                return job;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job {id} still running after 30 s: {job}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `POST /v1/petitions/{id}/close` with the admin key.
    pub async fn close(&self, id: &str) -> Reply {
        self.send(
            Method::POST,
            &format!("/v1/petitions/{id}/close"),
            &[("authorization", ADMIN)],
            "",
        )
        .await
    }

    /// Stops and drains the server; the engine stays open.
    pub async fn stop(mut self) -> DrainReport {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let task = self.task.take().expect("running");
        task.await.expect("server task").expect("drain flushes")
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `code` of an error answer.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not the error shape: {self:?}"))
            .to_string()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        Conn::try_open(addr).await.expect("connects")
    }

    /// A connection, or why none could be made (refused, ...).
    pub async fn try_open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn { sender })
    }

    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        self.try_send(method, path, headers, body)
            .await
            .expect("request answered")
    }

    pub async fn try_send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Reply, hyper::Error> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "test");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body.into())).expect("request");
        self.sender.ready().await?;
        let response =
            tokio::time::timeout(Duration::from_secs(30), self.sender.send_request(request))
                .await
                .expect("answer within 30 s")?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

/// The real binary, started on `dir` with the two test keys and `extra` flags, listening on
/// 127.0.0.1:0: the child, where it listens, and the thread collecting its log lines (they end
/// when it exits).
pub fn start_binary(
    dir: &std::path::Path,
    extra: &[&str],
) -> (
    std::process::Child,
    SocketAddr,
    std::thread::JoinHandle<Vec<String>>,
) {
    let (child, addr, logs, _live) = start_binary_live(dir, extra);
    (child, addr, logs)
}

/// [`start_binary`], and each log line also as it comes.
pub fn start_binary_live(
    dir: &std::path::Path,
    extra: &[&str],
) -> (
    std::process::Child,
    SocketAddr,
    std::thread::JoinHandle<Vec<String>>,
    std::sync::mpsc::Receiver<String>,
) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_ingest-server"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args([
            "--api-key",
            "admin:admin-key-0001",
            "--api-key",
            "ingest:ingest-key-0001",
        ])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("server starts");
    let stdout = child.stdout.take().expect("piped");
    let (found, listen) = std::sync::mpsc::channel::<SocketAddr>();
    let (live, lines_live) = std::sync::mpsc::channel::<String>();
    let logs = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // `listen=ADDR` in text logs, `"listen":"ADDR"` in JSON ones.
            for (key, end) in [("listen=", ' '), ("\"listen\":\"", '"')] {
                if let Some(at) = line.find(key) {
                    let addr = line[at + key.len()..].split(end).next().unwrap_or("");
                    if let Ok(addr) = addr.parse() {
                        let _ = found.send(addr);
                    }
                }
            }
            // Nobody may be listening: then the line is only kept.
            let _ = live.send(line.clone());
            lines.push(line);
        }
        lines
    });
    let addr = listen
        .recv_timeout(Duration::from_secs(30))
        .expect("the server logs where it listens");
    (child, addr, logs, lines_live)
}

/// Waits up to `within` for a log line holding every one of `parts`; returns it.
pub fn wait_for_line(
    lines: &std::sync::mpsc::Receiver<String>,
    parts: &[&str],
    within: Duration,
) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if parts.iter().all(|part| line.contains(part)) => return line,
            Ok(_) => {}
            Err(e) => panic!("no log line with {parts:?} within {within:?} ({e})"),
        }
    }
}

/// Sends raw bytes on a new TCP connection and reads until the server closes it (or 10 s).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    stream.write_all(request).await.expect("writes");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status code of a raw HTTP answer.
pub fn raw_status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

/// An outside program a test drives (`promtool`, `chromium`): its path, found on `PATH` or
/// named by the variable `env` (e.g. `PROMTOOL=/opt/bin/promtool`). Missing, the test is
/// skipped with a message saying what to install, unless `INGEST_TEST_TOOLS=required` (as
/// `.ci/run` sets, after installing them): then a missing program fails the test.
pub fn tool(test: &str, names: &[&str], env: &str, install: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os(env)
        .map(std::path::PathBuf::from)
        .filter(|path| path.is_file())
        .or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path)
                .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
                .find(|candidate| candidate.is_file())
        });
    if found.is_none() {
        let message = format!(
            "{test} needs {} (on PATH, or named by {env}): {install}",
            names.join(" or ")
        );
        assert!(
            std::env::var("INGEST_TEST_TOOLS").as_deref() != Ok("required"),
            "{message}"
        );
        eprintln!("skipped: {message}");
    }
    found
}

/// Waits (up to 30 s) until the server at `addr` is ready, then registers petition `id`.
pub async fn ready_with_petition(addr: SocketAddr, id: &str) {
    let mut admin = Conn::open(addr).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while admin.send(Method::GET, "/readyz", &[], "").await.status != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::task::yield_now().await;
    }
    let put = admin
        .send(
            Method::PUT,
            &format!("/v1/petitions/{id}"),
            &[("authorization", ADMIN)],
            "{}",
        )
        .await;
    assert_eq!(put.status, 201, "{put:?}");
}

/// Waits for the real binary to exit, which must be with success and after logging `line`;
/// reopens its store in `dir` and checks that every signer of `acked` is stored on petition
/// `petition`. Returns the petition's count.
pub async fn exited_and_stored(
    mut child: std::process::Child,
    logs: std::thread::JoinHandle<Vec<String>>,
    line: &str,
    dir: &std::path::Path,
    petition: &str,
    acked: &[String],
) -> u64 {
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("joined")
        .expect("waited");
    let logs = logs.join().expect("log lines");
    assert!(exit.success(), "exit {exit:?}; logs:\n{}", logs.join("\n"));
    assert!(
        logs.iter().any(|l| l.contains(line)),
        "no {line:?} in the logs:\n{}",
        logs.join("\n")
    );
    let engine = Engine::open(Config::persistent(dir)).expect("the store opens");
    engine.wait_ready().expect("ready");
    let count = engine.count(petition).expect("the petition");
    let answers = engine.submit_batch(
        acked
            .iter()
            .map(|e| engine::NewSignature::new(petition, e.as_str()))
            .collect(),
    );
    for (email, answer) in acked.iter().zip(answers) {
        assert!(
            matches!(answer, Ok(engine::Outcome::Duplicate { .. })),
            "{email} acknowledged but not stored: {answer:?}"
        );
    }
    engine.close().expect("closes");
    count
}

/// Kills the process `pid` (a server started by [`start_binary`]) if the test panics, so a
/// failing test leaves no server running (and holding the test run's output open).
pub struct KillOnPanic(pub u32);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &self.0.to_string()])
                .status();
        }
    }
}
