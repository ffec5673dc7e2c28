//! `/metrics`: Prometheus exposition of the server's counters and the engine's statistics.
//!
//! The hot path only bumps atomics; everything is encoded by `prometheus-client` at scrape
//! time. No label carries an email, IP or petition id: labels are routes, status classes and
//! outcome codes, all from fixed sets.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use engine::{Engine, HistogramSnapshot, LatencyHistogram, SubmitError};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::delivery::Deliveries;
use crate::request::BodyBudget;
use crate::routes::RouteId;

/// Declares an outcome enum: its variants, each with the label it is counted under, and `ALL`,
/// every variant in declaration order (`outcome as usize` indexes it).
macro_rules! outcomes {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $label:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Every outcome, in the order of the variants.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The metric label, which is also the answer's status or error code.
            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)*
                }
            }
        }
    };
}

outcomes! {
    /// The outcome of one signature, as counted in `ingest_signatures_total{outcome}`. The labels
    /// are the codes of the answers (`accepted`, `duplicate`, `pending`, or the error code).
    SignatureOutcome {
        Accepted = "accepted",
        Duplicate = "duplicate",
        /// Stored pending on a petition that validates by email.
        Pending = "pending",
        InvalidSignature = "invalid_signature",
        MalformedJson = "malformed_json",
        UnknownPetition = "unknown_petition",
        PetitionClosed = "petition_closed",
        /// A pending signer signed again once too often.
        TooManyResubmissions = "too_many_resubmissions",
        RateLimited = "rate_limited",
        /// A batch with more signatures than the per-key rate's full bucket: never taken.
        BatchExceedsRate = "batch_exceeds_rate",
        /// Validation by email on an in-memory engine.
        Unsupported = "unsupported",
        /// The signer's address, email domain or email is on a block list.
        Blocked = "blocked",
        /// Over the limits of signatures per (petition, address).
        IpRateLimited = "ip_rate_limited",
        /// Signing is paused, everywhere or on the petition.
        SigningPaused = "signing_paused",
        /// The engine is read-only.
        ReadOnly = "read_only",
        Overloaded = "overloaded",
        StorageUnavailable = "storage_unavailable",
        Recovering = "recovering",
        ShuttingDown = "shutting_down",
        /// An engine error this server does not know yet (`SubmitError` is non-exhaustive).
        Other = "other",
    }
}

outcomes! {
    /// The outcome of one validation (`POST /v1/validations` or a batch's `validate` line), as
    /// counted in `ingest_validations_total{outcome}`.
    ValidationOutcome {
        Validated = "validated",
        AlreadyValidated = "already_validated",
        /// A body of the wrong shape (unknown field, no token, a token that is not a string).
        InvalidValidation = "invalid_validation",
        MalformedJson = "malformed_json",
        MalformedToken = "malformed_token",
        UnknownToken = "unknown_token",
        TokenExpired = "token_expired",
        PetitionClosed = "petition_closed",
        Invalidated = "invalidated",
        RateLimited = "rate_limited",
        BatchExceedsRate = "batch_exceeds_rate",
        Unsupported = "unsupported",
        /// The engine is read-only.
        ReadOnly = "read_only",
        Overloaded = "overloaded",
        StorageUnavailable = "storage_unavailable",
        Recovering = "recovering",
        ShuttingDown = "shutting_down",
        Other = "other",
    }
}

impl From<&SubmitError> for SignatureOutcome {
    fn from(e: &SubmitError) -> SignatureOutcome {
        match e {
            SubmitError::Invalid(_) => SignatureOutcome::InvalidSignature,
            SubmitError::UnknownPetition => SignatureOutcome::UnknownPetition,
            SubmitError::PetitionClosed => SignatureOutcome::PetitionClosed,
            SubmitError::TooManyResubmits => SignatureOutcome::TooManyResubmissions,
            SubmitError::Unsupported => SignatureOutcome::Unsupported,
            SubmitError::Blocked => SignatureOutcome::Blocked,
            SubmitError::RateLimited { .. } => SignatureOutcome::IpRateLimited,
            SubmitError::SigningPaused => SignatureOutcome::SigningPaused,
            SubmitError::ReadOnly => SignatureOutcome::ReadOnly,
            SubmitError::Overloaded => SignatureOutcome::Overloaded,
            SubmitError::StorageUnavailable => SignatureOutcome::StorageUnavailable,
            SubmitError::Recovering => SignatureOutcome::Recovering,
            SubmitError::ShuttingDown => SignatureOutcome::ShuttingDown,
            _ => SignatureOutcome::Other,
        }
    }
}

impl From<&SubmitError> for ValidationOutcome {
    fn from(e: &SubmitError) -> ValidationOutcome {
        match e {
            SubmitError::MalformedToken => ValidationOutcome::MalformedToken,
            SubmitError::UnknownToken => ValidationOutcome::UnknownToken,
            SubmitError::TokenExpired => ValidationOutcome::TokenExpired,
            SubmitError::PetitionClosed => ValidationOutcome::PetitionClosed,
            SubmitError::Invalidated => ValidationOutcome::Invalidated,
            SubmitError::Unsupported => ValidationOutcome::Unsupported,
            SubmitError::ReadOnly => ValidationOutcome::ReadOnly,
            SubmitError::Overloaded => ValidationOutcome::Overloaded,
            SubmitError::StorageUnavailable => ValidationOutcome::StorageUnavailable,
            SubmitError::Recovering => ValidationOutcome::Recovering,
            SubmitError::ShuttingDown => ValidationOutcome::ShuttingDown,
            _ => ValidationOutcome::Other,
        }
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const BATCH_BOUNDS: [u64; 6] = [1, 10, 100, 1_000, 10_000, 100_000];

/// The server's own counters.
#[derive(Debug)]
pub(crate) struct Metrics {
    requests: Vec<[AtomicU64; 5]>,
    /// Time from a request's head to its answer's head, per route (`RouteId::LABELS`).
    request_duration: Vec<LatencyHistogram>,
    signatures: [AtomicU64; SignatureOutcome::ALL.len()],
    validations: [AtomicU64; ValidationOutcome::ALL.len()],
    batch_lines: [AtomicU64; BATCH_BOUNDS.len() + 1],
    batch_lines_sum: AtomicU64,
    /// Time from a request's parsed body to its engine answers, per request.
    pub ack_latency: LatencyHistogram,
    pub connections_open: AtomicI64,
    pub connections_refused: AtomicU64,
    pub shed: AtomicU64,
    /// Event stream readers connected now.
    pub stream_readers: std::sync::atomic::AtomicUsize,
    /// Stream readers disconnected for falling behind the shared ring.
    pub stream_lagged: AtomicU64,
    /// Stream readers disconnected because their socket took nothing.
    pub stream_stalled: AtomicU64,
}

/// Bounds of the time-to-respond histogram: an hour, a day, a week, 30, 90, 180 and 365 days.
const RESPONSE_BOUNDS_SECONDS: [f64; 7] = [
    3_600.0,
    86_400.0,
    604_800.0,
    2_592_000.0,
    7_776_000.0,
    15_552_000.0,
    31_536_000.0,
];

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            requests: (0..RouteId::LABELS.len())
                .map(|_| Default::default())
                .collect(),
            request_duration: (0..RouteId::LABELS.len())
                .map(|_| LatencyHistogram::default())
                .collect(),
            signatures: Default::default(),
            validations: Default::default(),
            batch_lines: Default::default(),
            batch_lines_sum: AtomicU64::new(0),
            ack_latency: LatencyHistogram::default(),
            connections_open: AtomicI64::new(0),
            connections_refused: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            stream_readers: std::sync::atomic::AtomicUsize::new(0),
            stream_lagged: AtomicU64::new(0),
            stream_stalled: AtomicU64::new(0),
        }
    }

    /// Counts one answer, by route and status class, and the time it took.
    pub fn request(&self, route: Option<RouteId>, status: u16, took: Duration) {
        let route = route.map_or(RouteId::LABELS.len() - 1, |r| r as usize);
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[route][class].fetch_add(1, Ordering::Relaxed);
        self.request_duration[route].record(took);
    }

    /// Counts one signature's outcome.
    pub fn signature(&self, outcome: SignatureOutcome) {
        self.signature_n(outcome, 1);
    }

    /// Counts `n` signatures with one outcome (a batch refused whole).
    pub fn signature_n(&self, outcome: SignatureOutcome, n: usize) {
        self.signatures[outcome as usize].fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts one validation's outcome.
    pub fn validation(&self, outcome: ValidationOutcome) {
        self.validation_n(outcome, 1);
    }

    /// Counts `n` validations with one outcome (a batch refused whole).
    pub fn validation_n(&self, outcome: ValidationOutcome, n: usize) {
        self.validations[outcome as usize].fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn batch(&self, lines: usize) {
        let lines = lines as u64;
        let bucket = BATCH_BOUNDS.partition_point(|&bound| bound < lines);
        self.batch_lines[bucket].fetch_add(1, Ordering::Relaxed);
        self.batch_lines_sum.fetch_add(lines, Ordering::Relaxed);
    }
}

/// Encodes [`Metrics`] and the engine's [`engine::Stats`] on each scrape.
#[derive(Debug)]
struct Scrape {
    metrics: Arc<Metrics>,
    engine: Engine,
    /// The small-body and batch budgets.
    body_budgets: [Arc<BodyBudget>; 2],
    deliveries: Arc<Deliveries>,
}

/// A registry holding the scrape collector, with the `ingest` prefix.
pub(crate) fn registry(
    metrics: Arc<Metrics>,
    engine: Engine,
    body_budgets: [Arc<BodyBudget>; 2],
    deliveries: Arc<Deliveries>,
) -> Registry {
    let mut registry = Registry::with_prefix("ingest");
    registry.register(
        "build",
        "The server's version and the commit it was built from",
        Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION")),
            ("revision", env!("INGEST_REVISION")),
        ]),
    );
    registry.register_collector(Box::new(Scrape {
        metrics,
        engine,
        body_budgets,
        deliveries,
    }));
    registry
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Fmt {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: f64,
) -> Fmt {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

fn seconds_histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    snapshot: &HistogramSnapshot,
) -> Fmt {
    let mut metric =
        encoder.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    encode_snapshot(&mut metric, snapshot)
}

/// One histogram's samples from its snapshot (buckets from cumulative counts).
fn encode_snapshot(metric: &mut MetricEncoder, snapshot: &HistogramSnapshot) -> Fmt {
    let mut buckets = Vec::with_capacity(snapshot.cumulative_counts.len());
    let mut previous = 0;
    for (at, &cumulative) in snapshot.cumulative_counts.iter().enumerate() {
        let bound = snapshot
            .bounds_seconds
            .get(at)
            .copied()
            .unwrap_or(f64::INFINITY);
        buckets.push((bound, cumulative - previous));
        previous = cumulative;
    }
    metric.encode_histogram::<NoLabelSet>(snapshot.sum_seconds, snapshot.count(), &buckets, None)
}

type Fmt = Result<(), std::fmt::Error>;

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Fmt {
        let m = &self.metrics;
        {
            let mut family = encoder.encode_descriptor(
                "http_requests",
                "HTTP requests answered, by route and status class",
                None,
                MetricType::Counter,
            )?;
            for (route, classes) in m.requests.iter().enumerate() {
                for (class, value) in classes.iter().enumerate() {
                    let value = value.load(Ordering::Relaxed);
                    if value == 0 {
                        continue;
                    }
                    let labels = [("route", RouteId::LABELS[route]), ("class", CLASSES[class])];
                    ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "http_request_duration",
                "Time from a request's head to its answer's head, by route (the event stream: to \
                 its first byte)",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for (route, histogram) in m.request_duration.iter().enumerate() {
                let snapshot = histogram.snapshot();
                if snapshot.count() == 0 {
                    continue;
                }
                let labels = [("route", RouteId::LABELS[route])];
                encode_snapshot(&mut family.encode_family(&labels)?, &snapshot)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "signatures",
                "Signatures answered, by outcome",
                None,
                MetricType::Counter,
            )?;
            for (at, value) in m.signatures.iter().enumerate() {
                let labels = [("outcome", SignatureOutcome::ALL[at].label())];
                ConstCounter::new(value.load(Ordering::Relaxed))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "validations",
                "Validations of pending signatures answered, by outcome",
                None,
                MetricType::Counter,
            )?;
            for (at, value) in m.validations.iter().enumerate() {
                let labels = [("outcome", ValidationOutcome::ALL[at].label())];
                ConstCounter::new(value.load(Ordering::Relaxed))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        {
            let mut buckets = Vec::with_capacity(BATCH_BOUNDS.len() + 1);
            let mut count = 0;
            for (at, value) in m.batch_lines.iter().enumerate() {
                let n = value.load(Ordering::Relaxed);
                count += n;
                let bound = BATCH_BOUNDS.get(at).map_or(f64::INFINITY, |&b| b as f64);
                buckets.push((bound, n));
            }
            let sum = m.batch_lines_sum.load(Ordering::Relaxed) as f64;
            let mut metric = encoder.encode_descriptor(
                "batch_lines",
                "Lines per batch request",
                None,
                MetricType::Histogram,
            )?;
            metric.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        seconds_histogram(
            &mut encoder,
            "ack_latency",
            "Time from a parsed request to its engine answers (durable at the configured level)",
            &m.ack_latency.snapshot(),
        )?;
        let stats = self.engine.stats();
        seconds_histogram(
            &mut encoder,
            "store_write_latency",
            "Time of each group-commit write including its fsync",
            &stats.write_latency,
        )?;
        counter(
            &mut encoder,
            "store_batches",
            "Group-commit writes since start",
            stats.batches_total,
        )?;
        counter(
            &mut encoder,
            "store_errors",
            "Failed store operations since start",
            stats.storage_errors_total,
        )?;
        counter(
            &mut encoder,
            "connections_refused",
            "Connections closed at once because the connection limit was reached",
            m.connections_refused.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "requests_shed",
            "Requests answered 503 at once because an in-flight limit or the body budget was reached",
            m.shed.load(Ordering::Relaxed),
        )?;
        let gauges: [(&str, &str, f64); 12] = [
            (
                "connections_open",
                "Open HTTP connections",
                m.connections_open.load(Ordering::Relaxed) as f64,
            ),
            (
                "body_buffer_bytes",
                "Bytes of request bodies held now (read or being read), single and batch",
                self.body_budgets.iter().map(|b| b.held()).sum::<usize>() as f64,
            ),
            (
                "queue_signatures",
                "Signatures admitted and waiting for their group commit",
                stats.queue_signatures as f64,
            ),
            (
                "batch_signatures_last",
                "Signatures in the last group commit",
                stats.batch_signatures_last as f64,
            ),
            (
                "index_entries",
                "Entries in the dedup index",
                stats.index_entries as f64,
            ),
            (
                "index_bytes",
                "Bytes held by the dedup index",
                stats.index_bytes as f64,
            ),
            ("petitions", "Registered petitions", stats.petitions as f64),
            (
                "stored_signatures",
                "Sum of all petitions' counts",
                stats.signatures as f64,
            ),
            (
                "ready",
                "1 when the index is rebuilt and signatures are taken",
                f64::from(u8::from(stats.ready)),
            ),
            (
                "storage_healthy",
                "1 when the last store write succeeded",
                f64::from(u8::from(stats.storage_healthy)),
            ),
            (
                "recovery_loaded",
                "Signatures loaded into the index by recovery",
                stats.recovery_loaded as f64,
            ),
            (
                "index_saved_position",
                "Signatures below this are in the dedup index last saved beside the store; a restart after a crash reads back only those from it on (0: none saved)",
                stats.index_saved_from.unwrap_or(0) as f64,
            ),
        ];
        for (name, help, value) in gauges {
            gauge(&mut encoder, name, help, None, value)?;
        }
        gauge(
            &mut encoder,
            "recovery",
            "Time from open to ready (0 until ready)",
            Some(&Unit::Seconds),
            stats.recovery_seconds,
        )?;
        counter(
            &mut encoder,
            "index_saves",
            "Dedup indexes saved beside the store since start (in the background and at a clean close)",
            stats.index_saves_total,
        )?;
        counter(
            &mut encoder,
            "event_stream_lagged",
            "Event stream readers disconnected for falling further behind than the shared ring",
            m.stream_lagged.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "event_stream_stalled",
            "Event stream readers disconnected because their socket took nothing",
            m.stream_stalled.load(Ordering::Relaxed),
        )?;
        let responses = self.engine.response_stats();
        let gauges: [(&str, &str, f64); 4] = [
            (
                "event_stream_readers",
                "Event stream readers connected",
                m.stream_readers.load(Ordering::Relaxed) as f64,
            ),
            (
                "events_last",
                "Sequence of the newest event",
                self.engine.last_event_seq() as f64,
            ),
            (
                "petitions_awaiting_response",
                "Petitions past their response threshold without a recorded response",
                responses.awaiting as f64,
            ),
            (
                "petitions_overdue",
                "Petitions awaiting a response past its due time",
                responses.overdue as f64,
            ),
        ];
        for (name, help, value) in gauges {
            gauge(&mut encoder, name, help, None, value)?;
        }
        let mut snapshot = HistogramSnapshot {
            bounds_seconds: RESPONSE_BOUNDS_SECONDS.to_vec(),
            cumulative_counts: vec![0; RESPONSE_BOUNDS_SECONDS.len() + 1],
            sum_seconds: 0.0,
        };
        for ms in &responses.times_to_respond_ms {
            let seconds = *ms as f64 / 1000.0;
            snapshot.sum_seconds += seconds;
            let first = RESPONSE_BOUNDS_SECONDS.partition_point(|&b| b < seconds);
            for count in &mut snapshot.cumulative_counts[first..] {
                *count += 1;
            }
        }
        self.encode_webhooks(&mut encoder)?;
        seconds_histogram(
            &mut encoder,
            "response_time",
            "Time from a petition crossing its response threshold to its recorded response",
            &snapshot,
        )?;
        Ok(())
    }
}

impl Scrape {
    /// Per webhook (labelled by name: at most 256, chosen by an administrator): how many events
    /// it is behind, its failed attempts in a row, and the events delivered since start.
    fn encode_webhooks(&self, encoder: &mut DescriptorEncoder) -> Fmt {
        let hooks = self.engine.webhooks();
        let last = self.engine.last_event_seq();
        let rows: Vec<(String, u64, u64, u64)> = hooks
            .iter()
            .map(|hook| {
                let state = self.deliveries.state(&hook.name);
                (
                    hook.name.clone(),
                    last.saturating_sub(hook.cursor),
                    u64::from(state.failures),
                    state.delivered,
                )
            })
            .collect();
        let families: [(&str, &str, MetricType); 3] = [
            (
                "webhook_lag_events",
                "Events after a webhook's durable cursor (not yet confirmed delivered)",
                MetricType::Gauge,
            ),
            (
                "webhook_failures",
                "A webhook's failed delivery attempts in a row",
                MetricType::Gauge,
            ),
            (
                "webhook_delivered",
                "Events a webhook's receiver confirmed since the server started",
                MetricType::Counter,
            ),
        ];
        for (at, (name, help, kind)) in families.into_iter().enumerate() {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for row in &rows {
                let value = [row.1, row.2, row.3][at];
                let labels = [("webhook", row.0.as_str())];
                match kind {
                    MetricType::Counter => {
                        ConstCounter::new(value).encode(family.encode_family(&labels)?)?
                    }
                    _ => ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
                        .encode(family.encode_family(&labels)?)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_index_their_counters() {
        for (at, outcome) in SignatureOutcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, at, "ALL is in variant order");
        }
        for (at, outcome) in ValidationOutcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, at, "ALL is in variant order");
        }
    }

    #[test]
    fn engine_errors_count_under_their_code() {
        for e in [
            SubmitError::UnknownPetition,
            SubmitError::PetitionClosed,
            SubmitError::TooManyResubmits,
            SubmitError::Unsupported,
            SubmitError::Overloaded,
            SubmitError::StorageUnavailable,
            SubmitError::Recovering,
            SubmitError::ShuttingDown,
        ] {
            assert_eq!(SignatureOutcome::from(&e).label(), e.code());
        }
        for e in [
            SubmitError::MalformedToken,
            SubmitError::UnknownToken,
            SubmitError::TokenExpired,
            SubmitError::PetitionClosed,
            SubmitError::Invalidated,
            SubmitError::Unsupported,
            SubmitError::Overloaded,
            SubmitError::StorageUnavailable,
            SubmitError::Recovering,
            SubmitError::ShuttingDown,
        ] {
            assert_eq!(ValidationOutcome::from(&e).label(), e.code());
        }
    }
}
