//! Criterion benchmarks of the engine's in-memory path: hashing, index hits and misses, and a hot
//! petition from one and two threads.

use std::time::Instant;

use benches::workload::{Shape, Workload};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use engine::{canonical_signer, Config, Engine, Fingerprinter, PetitionSpec, SignerPolicy};

const BATCH: u64 = 1024;

fn engine_with(petitions: u32, expected: u64) -> Engine {
    let mut config = Config::in_memory();
    config.signatures_expected = expected;
    let engine = Engine::open(config).expect("in-memory engine opens");
    let specs = (0..petitions)
        .map(|n| PetitionSpec::new(Workload::petition_id(n)))
        .collect();
    for result in engine.register_many(specs) {
        result.expect("registers");
    }
    engine
}

fn hashing(c: &mut Criterion) {
    let mut group = c.benchmark_group("hashing");
    group.throughput(Throughput::Elements(1));
    let fingerprinter = Fingerprinter::random();
    let email = "jo.smith+petitions@example.org";
    group.bench_function("fingerprint", |b| {
        b.iter(|| fingerprinter.fingerprint(std::hint::black_box(42), std::hint::black_box(email)))
    });
    group.bench_function("canonical_signer", |b| {
        b.iter(|| {
            canonical_signer(
                std::hint::black_box("Jo.Smith@Example.org"),
                SignerPolicy::default(),
            )
            .map(|s| s.len())
        })
    });
    group.finish();
}

fn index(c: &mut Criterion) {
    let mut group = c.benchmark_group("index");
    group.throughput(Throughput::Elements(BATCH));
    let workload = Workload::with(u64::MAX, 10_000, Shape::Uniform, 0.0, 0.0, 1);
    // Misses: every signer is new. The engine grows as the benchmark runs, as in production.
    group.bench_function("insert_miss", |b| {
        let engine = engine_with(10_000, 4_000_000);
        let mut next = 0u64;
        b.iter_custom(|iters| {
            let mut elapsed = std::time::Duration::ZERO;
            for _ in 0..iters {
                let batch = workload.signatures(next..next + BATCH);
                next += BATCH;
                let started = Instant::now();
                std::hint::black_box(engine.submit_batch(batch));
                elapsed += started.elapsed();
            }
            elapsed
        })
    });
    // Hits: re-sends of signers already in a 1 M-entry index.
    group.bench_function("insert_hit", |b| {
        let engine = engine_with(10_000, 1_000_000);
        for start in (0..1_000_000).step_by(BATCH as usize) {
            engine.submit_batch(workload.signatures(start..start + BATCH));
        }
        let mut next = 0u64;
        b.iter_custom(|iters| {
            let mut elapsed = std::time::Duration::ZERO;
            for _ in 0..iters {
                let batch = workload.signatures(next..next + BATCH);
                next = (next + BATCH) % 1_000_000;
                let started = Instant::now();
                std::hint::black_box(engine.submit_batch(batch));
                elapsed += started.elapsed();
            }
            elapsed
        })
    });
    group.finish();
}

fn hot_petition(c: &mut Criterion) {
    let mut group = c.benchmark_group("hot_petition");
    for threads in [1u64, 2] {
        group.throughput(Throughput::Elements(BATCH * threads));
        group.bench_with_input(
            BenchmarkId::new("threads", threads),
            &threads,
            |b, &threads| {
                let engine = engine_with(10_000, 8_000_000);
                let workload = Workload::with(u64::MAX, 10_000, Shape::Viral, 0.9, 0.0, 2);
                let mut round = 0u64;
                b.iter_custom(|iters| {
                    let batches: Vec<Vec<Vec<_>>> = (0..threads)
                        .map(|t| {
                            (0..iters)
                                .map(|k| {
                                    let start = ((round + k) * threads + t) * BATCH;
                                    workload.signatures(start..start + BATCH)
                                })
                                .collect()
                        })
                        .collect();
                    round += iters;
                    let started = Instant::now();
                    std::thread::scope(|scope| {
                        for mine in batches {
                            let engine = &engine;
                            scope.spawn(move || {
                                for batch in mine {
                                    std::hint::black_box(engine.submit_batch(batch));
                                }
                            });
                        }
                    });
                    started.elapsed()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, hashing, index, hot_petition);
criterion_main!(benches);
