//! The replicated deployment under faults: a real 3-node NATS JetStream cluster on loopback
//! (`nats-server` ≥ 2.10 on PATH or named by `NATS_SERVER`; `.ci/run` installs it), engine nodes
//! of this workspace's `ingest-server`, `loadtest run` with an ack ledger, a fault, and `loadtest
//! verify` against a surviving node: nothing acknowledged lost, nothing counted twice.
//!
//! Each load runs `INGEST_CLUSTER_LOAD_SECONDS` (default 6) seconds; set it higher for a longer
//! run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::crash_e2e::{get, hot_count, ingest_server};

const KEY: &str = "admin:cluster-key-0001";
const SECRET: &str = "cluster-key-0001";
/// The lease's TTL in these tests.
const LEASE_TTL_S: u64 = 2;

fn load_seconds() -> u64 {
    std::env::var("INGEST_CLUSTER_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6)
}

/// The nats-server binary: named by `NATS_SERVER` or on PATH. Missing, the test is skipped
/// with a message, unless `INGEST_TEST_TOOLS=required` (as `.ci/run` sets after installing it).
fn nats_server() -> Option<PathBuf> {
    let found = std::env::var_os("NATS_SERVER")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|dir| dir.join("nats-server"))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        let message = "the replicated deployment's tests need nats-server >= 2.10 on PATH or \
                       named by NATS_SERVER (.ci/run installs a pinned one)";
        assert!(
            std::env::var("INGEST_TEST_TOOLS").as_deref() != Ok("required"),
            "{message}"
        );
        eprintln!("skipped: {message}");
    }
    found
}

/// A port free now and given to no other server of this process: the tests run at once, and
/// the kernel may hand a port just let go of to the next `bind(0)`, so two clusters could
/// otherwise be given the same one.
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if GIVEN.lock().expect("the ports given").insert(port) {
            return port;
        }
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

/// Three NATS servers in one JetStream cluster, killed when dropped.
struct Nats {
    binary: PathBuf,
    dir: PathBuf,
    servers: Vec<Option<Child>>,
    client: Vec<u16>,
    monitor: Vec<u16>,
    routes: Vec<u16>,
}

impl Nats {
    /// Starts the cluster, or `None` (the test is skipped) without a nats-server.
    ///
    /// A port can still be taken between `free_port` and the server's bind (by a connection's
    /// local port, say); a server that exits for it is seen, and the cluster starts again on
    /// new ports, up to three times.
    fn start(dir: &Path) -> Option<Nats> {
        let binary = nats_server()?;
        let ports = |_| free_port();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut nats = Nats {
                binary: binary.clone(),
                dir: dir.to_owned(),
                servers: Vec::new(),
                client: (0..3).map(ports).collect(),
                monitor: (0..3).map(ports).collect(),
                routes: (0..3).map(ports).collect(),
            };
            for i in 0..3 {
                let child = nats.spawn(i);
                nats.servers.push(Some(child));
            }
            match nats.wait_meta_leader() {
                Ok(()) => return Some(nats),
                Err(why) if attempt < 3 => eprintln!("the NATS cluster starts again: {why}"),
                Err(why) => panic!("{why}"),
            }
        }
    }

    fn spawn(&self, i: usize) -> Child {
        let routes: Vec<String> = self
            .routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let config = format!(
            "server_name: n{i}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\nmax_payload: 8MB\n\
             jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n\
             cluster {{\n  name: test\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
            self.client[i],
            self.monitor[i],
            self.dir.join(format!("nats-{i}")).display(),
            self.routes[i],
            routes.join(", ")
        );
        let path = self.dir.join(format!("nats-{i}.conf"));
        std::fs::write(&path, config).expect("writes the config");
        let log = std::fs::File::create(self.dir.join(format!("nats-{i}.log"))).expect("log");
        Command::new(&self.binary)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts")
    }

    fn urls(&self) -> String {
        let urls: Vec<String> = self
            .client
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        urls.join(",")
    }

    fn pid(&self, i: usize) -> u32 {
        self.servers[i].as_ref().expect("running").id()
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self, i: usize) {
        self.kill(i);
        self.servers[i] = Some(self.spawn(i));
    }

    /// The JetStream state server `i` reports, if it answers.
    fn jsz(&self, i: usize) -> Option<serde_json::Value> {
        use std::io::{Read, Write};
        // HTTP/1.0: the answer comes whole, not chunked.
        let addr = SocketAddr::from(([127, 0, 0, 1], self.monitor[i]));
        let mut stream = std::net::TcpStream::connect(addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream
            .write_all(b"GET /jsz?streams=true HTTP/1.0\r\n\r\n")
            .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        let (head, body) = answer.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.0 200 OK")
            .then(|| serde_json::from_str(body).ok())?
    }

    /// Waits until all three servers know the JetStream meta leader. The error says which
    /// server exited, or that 30 s went by, with the end of each server's log.
    fn wait_meta_leader(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let leaders = (0..3)
                .filter_map(|i| self.jsz(i))
                .filter(|j| j["meta_cluster"]["leader"].is_string())
                .count();
            if leaders == 3 {
                return Ok(());
            }
            let exited = (0..3).find_map(|i| {
                let child = self.servers[i].as_mut()?;
                let status = child.try_wait().ok()??;
                Some(format!("n{i} exited ({status})"))
            });
            let why = match exited {
                Some(exited) => exited,
                None if Instant::now() >= deadline => "no JetStream meta leader in 30 s".into(),
                None => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let logs: String = (0..3).map(|i| self.log_tail(i)).collect();
            for i in 0..3 {
                self.kill(i);
            }
            return Err(format!("{why}\n{logs}"));
        }
    }

    /// The last lines of server `i`'s log.
    fn log_tail(&self, i: usize) -> String {
        let log =
            std::fs::read_to_string(self.dir.join(format!("nats-{i}.log"))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(12)..].join("\n");
        format!("--- nats-{i}.log (last lines)\n{tail}\n")
    }

    /// What the servers report of `stream`'s state (its first and last sequence, bytes, ...).
    fn stream_state(&self, stream: &str) -> Option<serde_json::Value> {
        let jsz = (0..3).find_map(|i| self.jsz(i))?;
        let accounts = jsz["account_details"].as_array()?;
        accounts
            .iter()
            .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
            .find(|s| s["name"] == stream)
            .map(|s| s["state"].clone())
    }

    /// The index of the server leading `stream`.
    fn stream_leader(&self, stream: &str) -> usize {
        for i in 0..3 {
            let Some(jsz) = self.jsz(i) else { continue };
            for account in jsz["account_details"].as_array().into_iter().flatten() {
                for s in account["stream_detail"].as_array().into_iter().flatten() {
                    if s["name"] == stream {
                        if let Some(leader) = s["cluster"]["leader"].as_str() {
                            return leader[1..].parse().expect("n<i>");
                        }
                    }
                }
            }
        }
        panic!("no server knows the leader of {stream}");
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            if let Some(child) = &self.servers[i] {
                // A stopped server would not die of SIGKILL's pending delivery otherwise.
                let _ = Command::new("kill")
                    .args(["-CONT", &child.id().to_string()])
                    .status();
            }
            self.kill(i);
        }
    }
}

/// An engine node of the replicated deployment.
struct Node {
    child: Option<Child>,
    addr: SocketAddr,
    data: PathBuf,
    name: String,
    log: PathBuf,
    /// Flags beyond the ones every node gets.
    flags: Vec<String>,
}

impl Node {
    fn start(nats: &Nats, dir: &Path, name: &str) -> Node {
        Node::start_with(nats, dir, name, &[])
    }

    fn start_with(nats: &Nats, dir: &Path, name: &str, flags: &[&str]) -> Node {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut node = Node {
            child: None,
            addr,
            data: dir.join(name),
            name: name.to_owned(),
            log: dir.join(format!("{name}.log")),
            flags: flags.iter().map(|f| f.to_string()).collect(),
        };
        node.spawn(nats);
        node
    }

    fn spawn(&mut self, nats: &Nats) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(ingest_server())
            .args(["--nats", &nats.urls(), "--node", &self.name])
            .args(["--listen", &self.addr.to_string(), "--api-key", KEY])
            .args(["--lease-ttl", &format!("{LEASE_TTL_S}s")])
            .args(&self.flags)
            .arg("--data-dir")
            .arg(&self.data)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("ingest-server starts");
        self.child = Some(child);
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it with SIGTERM and waits for it to exit.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let status = child.wait().expect("waits");
            assert!(status.success(), "{} exited with {status}", self.name);
        }
    }

    /// What `/readyz` says: status code and body.
    fn readyz(&self) -> Option<(u16, serde_json::Value)> {
        let (status, body) = get(self.addr, "/readyz")?;
        Some((status, serde_json::from_str(&body).ok()?))
    }

    fn role(&self) -> Option<String> {
        let (_, body) = self.readyz()?;
        body["role"].as_str().map(str::to_owned)
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until one of `nodes` owns and is ready, and every other one is ready too (a standby
/// is once it knows the owner); the owner's index.
fn wait_owner(nodes: &[&Node], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let ready = nodes
            .iter()
            .all(|node| node.readyz().is_some_and(|(status, _)| status == 200));
        if !ready && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        for (i, node) in nodes.iter().enumerate() {
            if let Some((200, body)) = node.readyz() {
                if body["role"] == "owner" {
                    return i;
                }
            }
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = nodes.iter().map(|n| n.logs()).collect();
            panic!("no owner within {within:?}:\n{}", logs.join("\n----\n"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `loadtest run` against `addr` for the load's duration, writing `ledger`.
fn start_load(addr: SocketAddr, ledger: &Path, seed: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "run",
            "--target",
            &format!("http://{addr}"),
            "--api-key",
            SECRET,
        ])
        .args(["-c", "16", "-z", &format!("{}s", load_seconds())])
        .args([
            "--petitions",
            "20",
            "--shape",
            "viral",
            "--hot-share",
            "0.9",
        ])
        .args(["--dup-ratio", "0.1", "--timeout", "3s", "--no-progress"])
        .args(["--seed", &seed.to_string(), "--ledger"])
        .arg(ledger)
        .stdout(Stdio::null())
        .spawn()
        .expect("loadtest starts")
}

/// Waits for the load to end; it must succeed.
fn finish_load(mut load: Child) {
    let deadline = Instant::now() + Duration::from_secs(load_seconds() + 60);
    let status = loop {
        if let Some(status) = load.try_wait().expect("polls") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = load.kill();
            panic!("loadtest did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "loadtest run failed: {status:?}");
}

fn accepted(ledger: &Path) -> usize {
    std::fs::read_to_string(ledger)
        .expect("ledger")
        .lines()
        .filter(|l| l.split('\t').nth(2) == Some("accepted"))
        .count()
}

/// `loadtest verify` of `ledger` against `node`: must pass, within 2 minutes.
fn verify(node: &Node, ledger: &Path) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["verify", "--target", &format!("http://{}", node.addr)])
        .args(["--api-key", SECRET, "--ledger"])
        .arg(ledger)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("loadtest verify runs");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().expect("polls").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "verify against {} did not finish:\n{}",
                node.name,
                node.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let verify = child.wait_with_output().expect("its output");
    assert!(
        verify.status.success(),
        "verify against {} failed:\n{}\n{}\n{}",
        node.name,
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr),
        node.logs()
    );
}

/// Waits until the load has `n` signatures counted on its hot petition, read through `node`.
fn wait_counted(node: &Node, load: &mut Child, seed: u64, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while hot_count(node.addr, seed) < n {
        assert!(Instant::now() < deadline, "the load never got going");
        assert!(
            load.try_wait().expect("polls").is_none(),
            "loadtest ended early"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Creates petition `id` through `node`.
fn create_petition(node: &Node, id: &str) {
    let put = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
        .args(["-H", &format!("authorization: Bearer {SECRET}")])
        .args(["-H", "content-type: application/json", "-d", "{}"])
        .arg(format!("http://{}/v1/petitions/{id}", node.addr))
        .output()
        .expect("curl runs");
    assert_eq!(String::from_utf8_lossy(&put.stdout), "201", "PUT {id}");
}

/// Sends one signature through `node`; the status.
fn sign(node: &Node, email: &str, petition: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let body = format!(r#"{{"email":"{email}","name":"N"}}"#);
    let mut stream = std::net::TcpStream::connect(node.addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .ok()?;
    write!(
        stream,
        "POST /v1/petitions/{petition}/signatures HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Authorization: Bearer {SECRET}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split(' ').nth(1)?.parse().ok()
}

#[test]
fn owner_killed_under_load_a_standby_takes_over_and_nothing_acknowledged_is_lost() {
    let dir = crate::scratch("cluster-owner-killed");
    let Some(nats) = Nats::start(&dir) else {
        return;
    };
    let a = Node::start(&nats, &dir, "a");
    let b = Node::start(&nats, &dir, "b");
    let (mut owner, standby) = match wait_owner(&[&a, &b], Duration::from_secs(60)) {
        0 => (a, b),
        _ => (b, a),
    };
    // The load goes to the standby, which forwards it: it carries on after the owner dies.
    let ledger = dir.join("ledger.tsv");
    let seed = 21;
    let mut load = start_load(standby.addr, &ledger, seed);
    wait_counted(&standby, &mut load, seed, 1000);
    owner.kill();
    let killed = Instant::now();
    wait_owner(&[&standby], Duration::from_secs(LEASE_TTL_S + 30));
    let takeover = killed.elapsed();
    eprintln!("takeover after kill -9 of the owner: {takeover:?}");
    assert!(
        takeover < Duration::from_secs(LEASE_TTL_S + 10),
        "took {takeover:?}"
    );
    finish_load(load);
    assert!(accepted(&ledger) >= 1000, "{} accepted", accepted(&ledger));
    verify(&standby, &ledger);
}

#[test]
fn stream_leader_killed_under_load_nothing_acknowledged_is_lost() {
    let dir = crate::scratch("cluster-leader-killed");
    let Some(mut nats) = Nats::start(&dir) else {
        return;
    };
    let a = Node::start(&nats, &dir, "a");
    let b = Node::start(&nats, &dir, "b");
    let owner = wait_owner(&[&a, &b], Duration::from_secs(60));
    let owner = [&a, &b][owner];
    let ledger = dir.join("ledger.tsv");
    let seed = 22;
    // A petition of its own for the signature after the leader's death: one on the ledger's
    // petitions would be counted without the ledger knowing it.
    let after = "after-the-leader";
    create_petition(owner, after);
    let mut load = start_load(owner.addr, &ledger, seed);
    wait_counted(owner, &mut load, seed, 1000);
    let leader = nats.stream_leader("ingest_log");
    nats.kill(leader);
    finish_load(load);
    nats.restart(leader);
    let owner = wait_owner(&[&a, &b], Duration::from_secs(60));
    let owner = [&a, &b][owner];
    // Signing goes on after the leader's death.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sign(owner, "after@example.org", after) != Some(201) {
        assert!(
            Instant::now() < deadline,
            "no signature accepted after the leader died"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(accepted(&ledger) >= 1000);
    verify(owner, &ledger);
}

#[test]
fn an_owner_paused_past_its_lease_is_fenced_acknowledges_nothing_and_steps_down() {
    let dir = crate::scratch("cluster-owner-paused");
    let Some(nats) = Nats::start(&dir) else {
        return;
    };
    let a = Node::start(&nats, &dir, "a");
    let b = Node::start(&nats, &dir, "b");
    let (old, new) = match wait_owner(&[&a, &b], Duration::from_secs(60)) {
        0 => (&a, &b),
        _ => (&b, &a),
    };
    // The load goes to the old owner itself: requests it takes after waking are the ones a
    // fenced owner must not acknowledge.
    let ledger = dir.join("ledger.tsv");
    let seed = 23;
    let mut load = start_load(old.addr, &ledger, seed);
    wait_counted(old, &mut load, seed, 1000);
    signal(old.pid(), "STOP");
    let stopped = Instant::now();
    wait_owner(&[new], Duration::from_secs(LEASE_TTL_S + 30));
    eprintln!(
        "takeover after SIGSTOP of the owner: {:?}",
        stopped.elapsed()
    );
    let counted = hot_count(new.addr, seed);
    signal(old.pid(), "CONT");
    // It steps down to standby, and from then on forwards to the new owner.
    let deadline = Instant::now() + Duration::from_secs(30);
    while old.role().as_deref() != Some("standby") {
        assert!(
            Instant::now() < deadline,
            "the old owner never stepped down:\n{}",
            old.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    finish_load(load);
    assert!(hot_count(new.addr, seed) >= counted);
    // Everything anyone acknowledged, the old owner included, is in the new owner's state.
    verify(new, &ledger);
    verify(old, &ledger);
}

#[test]
fn without_a_nats_quorum_writes_get_503_never_accepted_and_resume_after() {
    let dir = crate::scratch("cluster-no-quorum");
    let Some(nats) = Nats::start(&dir) else {
        return;
    };
    let a = Node::start(&nats, &dir, "a");
    let b = Node::start(&nats, &dir, "b");
    let owner = [&a, &b][wait_owner(&[&a, &b], Duration::from_secs(60))];
    let petition = "quorum";
    create_petition(owner, petition);
    assert_eq!(sign(owner, "before@example.org", petition), Some(201));
    let (x, y) = (nats.pid(0), nats.pid(1));
    signal(x, "STOP");
    signal(y, "STOP");
    let mut refused = 0;
    let during: Vec<String> = ["a", "b"]
        .iter()
        .map(|n| format!("during-{n}@example.org"))
        .collect();
    for (node, email) in [&a, &b].into_iter().zip(&during) {
        match sign(node, email, petition) {
            Some(201) => panic!("accepted without a quorum"),
            Some(status) => {
                assert_eq!(status, 503, "refused with 503");
                refused += 1;
            }
            // Timed out or cut: not acknowledged either.
            None => {}
        }
    }
    assert!(refused > 0, "some answer said 503");
    signal(x, "CONT");
    signal(y, "CONT");
    let deadline = Instant::now() + Duration::from_secs(60);
    let owner = loop {
        let owner = [&a, &b][wait_owner(&[&a, &b], Duration::from_secs(60))];
        if sign(owner, "after@example.org", petition) == Some(201) {
            break owner;
        }
        assert!(Instant::now() < deadline, "writes never resumed");
        std::thread::sleep(Duration::from_millis(100));
    };
    // A refused signature may still have reached the stream (its append was proposed and
    // committed once the quorum came back): then it is counted, exactly once. Sent again, each
    // is accepted or a duplicate, and the count is exact either way.
    let count = |node: &Node| -> u64 {
        let (_, body) = get(node.addr, &format!("/v1/petitions/{petition}")).expect("reads");
        let petition: serde_json::Value = serde_json::from_str(&body).expect("json");
        petition["count"].as_u64().expect("a count")
    };
    let before = count(owner);
    assert!((2..=2 + during.len() as u64).contains(&before), "{before}");
    let mut new = 0;
    for email in &during {
        match sign(owner, email, petition) {
            Some(201) => new += 1,
            Some(200) => {}
            other => panic!("{email} sent again: {other:?}"),
        }
    }
    assert_eq!(count(owner), before + new);
    assert_eq!(count(owner), 2 + during.len() as u64);
}

#[test]
fn restarting_everything_gives_every_node_the_same_state() {
    let dir = crate::scratch("cluster-restart-all");
    let Some(mut nats) = Nats::start(&dir) else {
        return;
    };
    let mut a = Node::start(&nats, &dir, "a");
    let mut b = Node::start(&nats, &dir, "b");
    let owner = [&a, &b][wait_owner(&[&a, &b], Duration::from_secs(60))];
    let ledger = dir.join("ledger.tsv");
    let seed = 24;
    finish_load(start_load(owner.addr, &ledger, seed));
    a.stop();
    b.stop();
    for i in 0..3 {
        nats.restart(i);
    }
    nats.wait_meta_leader()
        .unwrap_or_else(|why| panic!("{why}"));
    a.spawn(&nats);
    b.spawn(&nats);
    let owner = [&a, &b][wait_owner(&[&a, &b], Duration::from_secs(60))];
    verify(owner, &ledger);
    // Both nodes' stores reach the log's last position, with the same epoch.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states: Vec<(u64, u64)> = [&a, &b]
            .iter()
            .filter_map(|n| n.readyz())
            .map(|(_, r)| {
                (
                    r["position"].as_u64().unwrap_or(0),
                    r["epoch"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        if states.len() == 2 && states[0] == states[1] {
            break;
        }
        assert!(Instant::now() < deadline, "the nodes differ: {states:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Each says when its newest entry was appended: the same entry, so the same moment (the
    // owner's clock at its acknowledgement, the stream's time on the standby), and /metrics
    // has it in seconds.
    let appended: Vec<u64> = [&a, &b]
        .iter()
        .map(|n| {
            n.readyz().expect("answers").1["applied_at_ms"]
                .as_u64()
                .unwrap_or(0)
        })
        .collect();
    assert!(appended.iter().all(|&ms| ms > 0), "{appended:?}");
    assert!(
        appended[0].abs_diff(appended[1]) < 5_000,
        "the same entry, appended at: {appended:?}"
    );
    let (_, metrics) = get(a.addr, "/metrics").expect("answers");
    let line = metrics
        .lines()
        .find(|l| l.starts_with("ingest_cluster_applied_at_seconds "))
        .unwrap_or_else(|| panic!("no applied_at in:\n{metrics}"));
    let seconds: f64 = line[line.find(' ').unwrap() + 1..]
        .parse()
        .expect("a number");
    let ms = (seconds * 1000.0).round() as u64;
    // Read after: the same, or later if the owner appended since.
    assert!(
        ms >= appended[0] && ms - appended[0] < 5_000,
        "{line} against {appended:?}"
    );
    // And the same state: each store, opened by itself, has the same counts.
    a.stop();
    b.stop();
    let counts = |data: &Path| {
        let engine = engine::Engine::open(engine::Config::persistent(data)).expect("opens");
        engine.wait_ready().expect("ready");
        let counts: Vec<(String, u64)> = engine
            .top_petitions(100)
            .into_iter()
            .map(|p| (p.id, p.count))
            .collect();
        engine.close().expect("closes");
        counts
    };
    let (in_a, in_b) = (counts(&a.data), counts(&b.data));
    assert!(!in_a.is_empty());
    assert_eq!(in_a, in_b);
}

#[test]
fn snapshots_bound_the_stream_and_a_new_node_starts_from_the_latest() {
    let dir = crate::scratch("cluster-snapshots");
    let Some(nats) = Nats::start(&dir) else {
        return;
    };
    // Small enough that the load makes several snapshots, each purging the stream.
    let flags = ["--snapshot-bytes", "200000"];
    let a = Node::start_with(&nats, &dir, "a", &flags);
    let b = Node::start_with(&nats, &dir, "b", &flags);
    let (owner, standby) = match wait_owner(&[&a, &b], Duration::from_secs(60)) {
        0 => (a, b),
        _ => (b, a),
    };
    let ledger = dir.join("ledger.tsv");
    let seed = 25;
    finish_load(start_load(standby.addr, &ledger, seed));
    assert!(accepted(&ledger) >= 1000, "{} accepted", accepted(&ledger));
    // The owner snapshots and purges: the stream no longer starts at its first entry.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let state = nats.stream_state("ingest_log").unwrap_or_default();
        let first = state["first_seq"].as_u64().unwrap_or(0);
        if first > 1 {
            break first;
        }
        assert!(
            Instant::now() < deadline,
            "the stream was never purged: {state}\n{}",
            owner.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let snapshot = owner.readyz().expect("answers").1["snapshot_position"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        snapshot + 1 >= first,
        "snapshot {snapshot}, first entry {first}"
    );
    // A new node cannot follow the stream from the start: it restores the latest snapshot and
    // follows the rest.
    let mut c = Node::start_with(&nats, &dir, "c", &flags);
    let position = |node: &Node| {
        node.readyz()
            .and_then(|(_, r)| r["position"].as_u64())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while position(&c) < position(&owner) || position(&c) == 0 {
        assert!(
            Instant::now() < deadline,
            "the new node never caught up:\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(c.logs().contains("snapshot restored"), "{}", c.logs());
    // With the others gone it owns, and holds every acknowledged signature once.
    drop(owner);
    drop(standby);
    wait_owner(&[&c], Duration::from_secs(LEASE_TTL_S + 30));
    verify(&c, &ledger);
    c.stop();
}
