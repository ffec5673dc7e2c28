//! End to end: ingest-server under a viral load with an ack ledger is killed with SIGKILL,
//! restarted on the same data dir, and `loadtest verify` must pass: every acknowledged signature
//! is counted, none twice. Needs the `ingest-server` binary of this workspace, which
//! `cargo test --workspace` builds next to this test.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "admin:crash-e2e-key-01";
const SECRET: &str = "crash-e2e-key-01";

pub(crate) fn ingest_server() -> PathBuf {
    // target/<profile>/deps/it-<hash> → target/<profile>/ingest-server
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join(format!("ingest-server{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds it",
        path.display()
    );
    path
}

/// Starts ingest-server on 127.0.0.1:0 and returns it with the address it logged.
fn start_server(data: &Path) -> (Child, SocketAddr) {
    let mut child = Command::new(ingest_server())
        .args(["--listen", "127.0.0.1:0", "--api-key", KEY, "--data-dir"])
        .arg(data)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("ingest-server starts");
    let stdout = child.stdout.take().unwrap();
    let (found, listen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(at) = line.find("listen=") {
                if let Ok(addr) = line[at + 7..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .parse::<SocketAddr>()
                {
                    let _ = found.send(addr);
                }
            }
        }
    });
    let addr = listen
        .recv_timeout(Duration::from_secs(60))
        .expect("ingest-server logs its address");
    (child, addr)
}

/// One HTTP/1.1 GET with `Connection: close`; the status and body.
pub(crate) fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

fn wait_ready(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(addr, "/readyz").map(|(status, _)| status) != Some(200) {
        assert!(Instant::now() < deadline, "{addr} never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn hot_count(addr: SocketAddr, seed: u64) -> u64 {
    get(addr, &format!("/v1/petitions/lt-{seed}-0"))
        .filter(|(status, _)| *status == 200)
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
        .and_then(|petition| petition["count"].as_u64())
        .unwrap_or(0)
}

#[test]
fn kill_9_mid_run_then_verify_passes() {
    let dir = crate::scratch("crash-e2e");
    let data = dir.join("data");
    let ledger = dir.join("ledger.tsv");
    let seed = 7;
    let (mut server, addr) = start_server(&data);
    wait_ready(addr);

    let target = format!("http://{addr}");
    let mut load = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["run", "--target", &target, "--api-key", SECRET])
        .args([
            "-c",
            "16",
            "-z",
            "8s",
            "--petitions",
            "20",
            "--shape",
            "viral",
        ])
        .args([
            "--hot-share",
            "0.9",
            "--dup-ratio",
            "0.1",
            "--timeout",
            "2s",
            "--no-progress",
        ])
        .args(["--seed", &seed.to_string(), "--ledger"])
        .arg(&ledger)
        .stdout(Stdio::null())
        .spawn()
        .expect("loadtest starts");

    // Kill the server once a good number of signatures are acknowledged.
    let deadline = Instant::now() + Duration::from_secs(60);
    while hot_count(addr, seed) < 1000 {
        assert!(Instant::now() < deadline, "the load never got going");
        assert!(load.try_wait().unwrap().is_none(), "loadtest ended early");
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill().expect("SIGKILL");
    server.wait().unwrap();
    // The run lasts 8 s; it must end by itself soon after, dead server or not.
    let deadline = Instant::now() + Duration::from_secs(60);
    let load_status = loop {
        if let Some(status) = load.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = load.kill();
            panic!("loadtest did not finish within 60 s of a run of 8 s after the server died");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        load_status.success(),
        "loadtest run failed: {load_status:?}"
    );

    let text = std::fs::read_to_string(&ledger).unwrap();
    let accepted = text
        .lines()
        .filter(|l| l.split('\t').nth(2) == Some("accepted"))
        .count();
    assert!(
        accepted >= 1000,
        "only {accepted} acknowledged in the ledger"
    );

    let (mut server, addr) = start_server(&data);
    wait_ready(addr);
    let verify = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "verify",
            "--target",
            &format!("http://{addr}"),
            "--api-key",
            SECRET,
        ])
        .arg("--ledger")
        .arg(&ledger)
        .output()
        .expect("loadtest verify runs");
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(
        verify.status.success(),
        "verify failed after kill -9:\n{}\n{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
