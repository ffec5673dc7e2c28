//! SIGTERM under load: the real binary drains, flushes and exits 0, and every acknowledged
//! signature is in the store afterwards.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;

use crate::support::{
    exited_and_stored, ready_with_petition, start_binary, Conn, KillOnPanic, INGEST,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr, logs) = start_binary(dir.path(), &[]);
    let _kill = KillOnPanic(child.id());

    ready_with_petition(addr, "p").await;
    let mut admin = Conn::open(addr).await;

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
    assert!(acked.len() >= 500, "only {} acknowledged", acked.len());
    let count = exited_and_stored(child, logs, "closed cleanly", dir.path(), "p", &acked).await;
    assert!(
        count >= acked.len() as u64,
        "count {count} < acknowledged {}",
        acked.len()
    );
    assert!(count <= sent, "count {count} > sent {sent}");
}
