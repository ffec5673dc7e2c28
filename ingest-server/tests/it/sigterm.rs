//! SIGTERM under load: the real binary drains, flushes and exits 0, and every acknowledged
//! signature is in the store afterwards.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{Config, Engine, NewSignature, Outcome};
use hyper::Method;

use crate::support::{start_binary, Conn, ADMIN, INGEST};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, logs) = start_binary(dir.path(), &[]);

    let mut admin = Conn::open(addr).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while admin.send(Method::GET, "/readyz", &[], "").await.status != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::task::yield_now().await;
    }
    let put = admin
        .send(
            Method::PUT,
            "/v1/petitions/p",
            &[("authorization", ADMIN)],
            "{}",
        )
        .await;
    assert_eq!(put.status, 201);

    // Load: 16 keep-alive connections submitting distinct signers until the server goes away.
    let signalled = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..16 {
        let signalled = signalled.clone();
        workers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut sent = 0u64;
            let mut conn = Conn::open(addr).await;
            for n in 0.. {
                let email = format!("w{worker}-{n}@example.org");
                sent += 1;
                let reply = conn
                    .try_send(
                        Method::POST,
                        "/v1/petitions/p/signatures",
                        &[
                            ("authorization", INGEST),
                            ("content-type", "application/json"),
                        ],
                        format!(r#"{{"email":"{email}"}}"#),
                    )
                    .await;
                match reply {
                    Ok(reply) if reply.status == 201 => acked.push(email),
                    Ok(reply) => {
                        assert!(
                            signalled.load(Ordering::Acquire),
                            "refused before SIGTERM: {reply:?}"
                        );
                        assert_eq!(reply.status, 503, "{reply:?}");
                    }
                    // The server closed this connection while draining.
                    Err(_) => {
                        assert!(
                            signalled.load(Ordering::Acquire),
                            "connection lost before SIGTERM"
                        );
                        break;
                    }
                }
            }
            (acked, sent)
        }));
    }
    // Let the load run until a good number of signatures are acknowledged.
    let started = Instant::now();
    loop {
        let reply = admin.send(Method::GET, "/v1/petitions/p", &[], "").await;
        if reply.json()["count"].as_u64().unwrap() >= 500
            || started.elapsed() > Duration::from_secs(20)
        {
            break;
        }
        tokio::task::yield_now().await;
    }
    drop(admin);
    signalled.store(true, Ordering::Release);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    let mut acked = Vec::new();
    let mut sent = 0;
    for worker in workers {
        let (worker_acked, worker_sent) = worker.await.unwrap();
        acked.extend(worker_acked);
        sent += worker_sent;
    }
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let logs = logs.join().unwrap();
    assert!(exit.success(), "exit {exit:?}; logs:\n{}", logs.join("\n"));
    assert!(
        logs.iter().any(|l| l.contains("closed cleanly")),
        "{}",
        logs.join("\n")
    );
    assert!(acked.len() >= 500, "only {} acknowledged", acked.len());

    let engine = Engine::open(Config::persistent(dir.path())).unwrap();
    engine.wait_ready().unwrap();
    let count = engine.count("p").unwrap();
    assert!(
        count >= acked.len() as u64,
        "count {count} < acknowledged {}",
        acked.len()
    );
    assert!(count <= sent, "count {count} > sent {sent}");
    let answers = engine.submit_batch(
        acked
            .iter()
            .map(|e| NewSignature::new("p", e.as_str()))
            .collect(),
    );
    for (email, answer) in acked.iter().zip(answers) {
        assert!(
            matches!(answer, Ok(Outcome::Duplicate { .. })),
            "{email} acknowledged but not stored: {answer:?}"
        );
    }
    engine.close().unwrap();
}
