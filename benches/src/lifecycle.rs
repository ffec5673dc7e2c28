//! The lifecycle benchmarks of `engine-bench`: pending signatures and their validations
//! (`lifecycle`), and an invalidation job on one petition of a large store while ingestion goes
//! on (`invalidate`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use engine::{
    Criteria, Engine, InvalidationRequest, JobState, NewSignature, Op, Outcome, PetitionSpec,
    Token, Validation,
};
use hdrhistogram::Histogram;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::open_loop::{latency_histogram, Pacer};
use crate::workload::Workload;

/// Registers `petitions` petitions (`p0`, `p1`, ...) with the given validation, 10,000 to a
/// synced write.
pub fn register(engine: &Engine, petitions: u32, validation: Validation) -> Result<()> {
    let ids: Vec<u32> = (0..petitions).collect();
    for chunk in ids.chunks(10_000) {
        let specs = chunk
            .iter()
            .map(|n| {
                let mut spec = PetitionSpec::new(Workload::petition_id(*n));
                spec.validation = Some(validation);
                spec
            })
            .collect();
        for result in engine.register_many(specs) {
            result.context("registering petitions")?;
        }
    }
    Ok(())
}

/// What one phase of a run measured.
#[derive(Debug)]
pub struct Phase {
    pub elapsed: Duration,
    /// Per call, µs.
    pub latency_us: Histogram<u64>,
}

impl Phase {
    pub fn per_sec(&self, n: u64) -> f64 {
        n as f64 / self.elapsed.as_secs_f64()
    }
}

/// Signs `signatures` new signers over `petitions` email-validated petitions from `threads`
/// threads in calls of `batch`; returns the tokens (by signature number) and the phase.
pub fn sign_pending(
    engine: &Engine,
    signatures: u64,
    petitions: u32,
    threads: usize,
    batch: usize,
) -> Result<(Vec<Token>, Phase)> {
    let started = Instant::now();
    let per_thread = signatures.div_ceil(threads as u64);
    let results: Vec<Result<(Vec<Token>, Histogram<u64>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads as u64)
            .map(|t| {
                scope.spawn(move || {
                    let range = t * per_thread..((t + 1) * per_thread).min(signatures);
                    let mut tokens = Vec::with_capacity((range.end - range.start) as usize);
                    let mut latency = latency_histogram();
                    let mut at = range.start;
                    while at < range.end {
                        let end = (at + batch as u64).min(range.end);
                        let calls: Vec<NewSignature> = (at..end)
                            .map(|i| {
                                NewSignature::new(
                                    Workload::petition_id((i % u64::from(petitions)) as u32),
                                    format!("v{i}@example.org"),
                                )
                            })
                            .collect();
                        let call = Instant::now();
                        let outcomes = engine.submit_batch(calls);
                        latency.saturating_record(call.elapsed().as_micros() as u64);
                        for outcome in outcomes {
                            match outcome {
                                Ok(Outcome::Pending { token, .. }) => tokens.push(token),
                                other => bail!("a new signer got {other:?}"),
                            }
                        }
                        at = end;
                    }
                    Ok((tokens, latency))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("signing thread"))
            .collect()
    });
    let mut tokens = Vec::with_capacity(signatures as usize);
    let mut latency_us = latency_histogram();
    for result in results {
        let (part, histogram) = result?;
        tokens.extend(part);
        latency_us.add(histogram).expect("same bounds");
    }
    Ok((
        tokens,
        Phase {
            elapsed: started.elapsed(),
            latency_us,
        },
    ))
}

/// Validates every token (shuffled with `seed` unless `in_order`) from `threads` threads in
/// calls of `batch`; returns how many answered `Validated`, and the phase.
pub fn validate_all(
    engine: &Engine,
    mut tokens: Vec<Token>,
    threads: usize,
    batch: usize,
    in_order: bool,
    seed: u64,
) -> Result<(u64, Phase)> {
    if !in_order {
        tokens.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    }
    let validated = AtomicU64::new(0);
    let started = Instant::now();
    let chunk = tokens.len().div_ceil(threads).max(1);
    let histograms: Vec<Result<Histogram<u64>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = tokens
            .chunks(chunk)
            .map(|part| {
                let validated = &validated;
                scope.spawn(move || {
                    let mut latency = latency_histogram();
                    for calls in part.chunks(batch) {
                        let texts: Vec<_> = calls.iter().map(Token::text).collect();
                        let ops: Vec<Op<'_>> =
                            texts.iter().map(|t| Op::Validate(t.as_str())).collect();
                        let call = Instant::now();
                        let outcomes = engine.submit_ops_ref(&ops);
                        latency.saturating_record(call.elapsed().as_micros() as u64);
                        let mut n = 0;
                        for outcome in outcomes {
                            match outcome {
                                Ok(Outcome::Validated { .. }) => n += 1,
                                other => bail!("a pending token got {other:?}"),
                            }
                        }
                        validated.fetch_add(n, Ordering::Relaxed);
                    }
                    Ok(latency)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("validating thread"))
            .collect()
    });
    let mut latency_us = latency_histogram();
    for histogram in histograms {
        latency_us.add(histogram?).expect("same bounds");
    }
    Ok((
        validated.into_inner(),
        Phase {
            elapsed: started.elapsed(),
            latency_us,
        },
    ))
}

/// The store of the invalidation benchmark: `signatures` signers, one in `1 / target_share` of
/// them on petition `p0` (interleaved with the others, as a petition among many would be), the
/// rest spread over the other petitions. Email domains cycle through `d0.example` …
/// `d9.example`, so a domain matches a tenth of any petition's signers.
pub fn fill(
    engine: &Engine,
    signatures: u64,
    petitions: u32,
    every: u64,
    threads: usize,
    batch: usize,
) -> Result<Phase> {
    let started = Instant::now();
    let per_thread = signatures.div_ceil(threads as u64);
    let others = u64::from(petitions - 1);
    let failures = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for t in 0..threads as u64 {
            let failures = &failures;
            scope.spawn(move || {
                let range = t * per_thread..((t + 1) * per_thread).min(signatures);
                let mut at = range.start;
                while at < range.end {
                    let end = (at + batch as u64).min(range.end);
                    let calls: Vec<NewSignature> = (at..end)
                        .map(|i| {
                            let p = if i % every == 0 { 0 } else { 1 + i % others };
                            NewSignature::new(
                                Workload::petition_id(p as u32),
                                format!("f{i}@d{}.example", (i / every) % 10),
                            )
                        })
                        .collect();
                    let refused = engine
                        .submit_batch(calls)
                        .iter()
                        .filter(|o| !matches!(o, Ok(Outcome::Accepted { .. })))
                        .count();
                    failures.fetch_add(refused as u64, Ordering::Relaxed);
                    at = end;
                }
            });
        }
    });
    if failures.load(Ordering::Relaxed) > 0 {
        bail!("{} signatures were not accepted", failures.into_inner());
    }
    Ok(Phase {
        elapsed: started.elapsed(),
        latency_us: latency_histogram(),
    })
}

/// The criteria the invalidation benchmark uses on `p0`: one of its ten email domains.
pub fn criteria() -> InvalidationRequest {
    InvalidationRequest {
        petition: Some(Workload::petition_id(0)),
        criteria: Criteria {
            email_domain: Some("d3.example".into()),
            ..Criteria::default()
        },
    }
}

/// What ingestion did while a job ran.
#[derive(Debug)]
pub struct Ingestion {
    pub accepted: u64,
    pub elapsed: Duration,
    /// Per call, µs from when it was due.
    pub latency_us: Histogram<u64>,
    pub late_calls: u64,
}

/// Runs the invalidation job while `threads` threads ingest new signers to the petitions other
/// than `p0` at `rate` signatures/s in calls of `batch` (open loop). Returns the finished job,
/// the job's elapsed time and the ingestion's figures.
pub fn job_under_load(
    engine: &Engine,
    petitions: u32,
    rate: u64,
    threads: usize,
    batch: usize,
) -> Result<(engine::InvalidationJob, Duration, Ingestion)> {
    let stop = AtomicBool::new(false);
    let epoch = Instant::now();
    let interval = Pacer::interval(rate, batch, threads);
    let others = u64::from(petitions - 1);
    let (job, job_elapsed, parts) = std::thread::scope(|scope| -> Result<_> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let stop = &stop;
                scope.spawn(move || {
                    let mut pacer = Pacer::new(epoch, interval, t, threads);
                    let mut latency = latency_histogram();
                    let mut accepted = 0u64;
                    let mut n = 0u64;
                    while !stop.load(Ordering::Acquire) {
                        let due = pacer.wait_turn();
                        let calls: Vec<NewSignature> = (0..batch as u64)
                            .map(|k| {
                                let i = n * batch as u64 + k;
                                NewSignature::new(
                                    Workload::petition_id((1 + i % others) as u32),
                                    format!("late{t}.{i}@example.org"),
                                )
                            })
                            .collect();
                        n += 1;
                        accepted += engine
                            .submit_batch(calls)
                            .iter()
                            .filter(|o| matches!(o, Ok(Outcome::Accepted { .. })))
                            .count() as u64;
                        latency.saturating_record(due.elapsed().as_micros() as u64);
                    }
                    (accepted, latency, pacer.late())
                })
            })
            .collect();
        // Let the load settle before the job starts.
        std::thread::sleep(Duration::from_secs(2));
        let started = Instant::now();
        let job = engine
            .start_invalidation(criteria())
            .map_err(anyhow::Error::msg)?;
        let job = loop {
            let now = engine.invalidation(job.id).context("the job exists")?;
            if now.state != JobState::Running {
                break now;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let job_elapsed = started.elapsed();
        stop.store(true, Ordering::Release);
        let parts: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("ingesting thread"))
            .collect();
        Ok((job, job_elapsed, parts))
    })?;
    let elapsed = epoch.elapsed();
    let mut latency_us = latency_histogram();
    let (mut accepted, mut late_calls) = (0, 0);
    for (n, histogram, late) in parts {
        accepted += n;
        late_calls += late;
        latency_us.add(histogram).expect("same bounds");
    }
    Ok((
        job,
        job_elapsed,
        Ingestion {
            accepted,
            elapsed,
            latency_us,
            late_calls,
        },
    ))
}
