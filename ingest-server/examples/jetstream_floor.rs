//! The floor under a replicated acknowledgement: bare JetStream publishes of the entries an
//! owner appended, without the engine.
//!
//! Reads entries FIRST..=LAST of the log's stream (an owner's group commits and other batches,
//! as `ingest-server --nats` appended them) and publishes the same payloads to a stream of its
//! own (same replica count, file storage, on the same servers), one at a time as the owner does,
//! each with the owner's headers (`Nats-Msg-Id`, `Nats-Expected-Last-Sequence`) and at the
//! owner's pacing: entry i is sent at the offset the owner appended it at, or when the previous
//! acknowledgement came if that is later. Prints the acknowledgement latency of the publishes
//! (from send to acknowledgement) and the entries' sizes. The stream is deleted afterwards.
//!
//! ```text
//! cargo run --release -p ingest-server --example jetstream_floor -- \
//!     --nats nats://127.0.0.1:4222 --stream ingest_log --first 100 --last 2000
//! ```

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Bare JetStream publishes of an owner's log entries, as a latency floor")]
struct Args {
    /// The NATS servers, comma-separated.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// The owner's log stream (`<cluster-name>_log`).
    #[arg(long, default_value = "ingest_log")]
    stream: String,
    /// The first entry to replay (a stream sequence).
    #[arg(long)]
    first: u64,
    /// The last entry to replay.
    #[arg(long)]
    last: u64,
    /// Replicas of the floor's stream.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=5))]
    replicas: u8,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.first >= 1 && args.first <= args.last,
        "--first must be at least 1 and at most --last"
    );
    let client = async_nats::connect(&args.nats)
        .await
        .with_context(|| format!("cannot connect to {}", args.nats))?;
    let js = jetstream::new(client);
    let source = js
        .get_stream(&args.stream)
        .await
        .with_context(|| format!("no stream {}", args.stream))?;
    let mut entries = Vec::with_capacity((args.last - args.first + 1) as usize);
    for sequence in args.first..=args.last {
        let message = source
            .get_raw_message(sequence)
            .await
            .with_context(|| format!("cannot read entry {sequence}"))?;
        entries.push((message.time.unix_timestamp_nanos(), message.payload));
    }

    let name = format!("{}_floor", args.stream);
    let subject = format!("{name}.log");
    // A stream left by an interrupted run is replaced.
    let _ = js.delete_stream(&name).await;
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![subject.clone()],
        num_replicas: usize::from(args.replicas),
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .context("cannot create the floor's stream")?;

    let first_time = entries[0].0;
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(entries.len());
    for (position, (time, payload)) in (1u64..).zip(&entries) {
        let offset = u64::try_from(time - first_time).unwrap_or(0);
        let due = start + Duration::from_nanos(offset);
        tokio::time::sleep_until(due.into()).await;
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload.clone())
            .message_id(format!("1.{position}"))
            .expected_last_sequence(position - 1);
        let sent = Instant::now();
        let ack = js
            .send_publish(subject.clone(), publish)
            .await
            .context("publish")?
            .await
            .context("acknowledgement")?;
        latencies.push(sent.elapsed());
        anyhow::ensure!(ack.sequence == position, "the floor's stream is not ours");
    }
    let elapsed = start.elapsed();
    let _ = js.delete_stream(&name).await;

    let bytes: usize = entries.iter().map(|(_, payload)| payload.len()).sum();
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1e3
    };
    println!(
        "floor: {} entries in {:.1} s, {:.0} bytes each on average; publish to acknowledgement \
         p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        entries.len(),
        elapsed.as_secs_f64(),
        bytes as f64 / entries.len() as f64,
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0)
    );
    Ok(())
}
