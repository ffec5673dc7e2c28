//! `loadtest run`: register the petitions, then drive `-c` keep-alive connections for `-z`;
//! with `--validate-share`, then validate the tokens kept over the same connections.
//!
//! `--threads` load threads, each with its own current-thread tokio runtime (wrk's model: one
//! event loop per thread), share the connections round-robin. One task per connection; it writes
//! each request and reads its answer on its socket itself ([`crate::wire`]: no hop between tasks
//! or threads per request) and keeps its own latency samples and counts, merged into [`Live`] every
//! [`FLUSH_INTERVAL`](crate::stats::FLUSH_INTERVAL). Orchestration (registration, progress,
//! Ctrl-C) runs on the caller's runtime.
//!
//! Open loop (`-R`): request `k` is due at `start + k × batch / R`; a free task takes the next due
//! slot from a shared counter, sleeps until it is due, sends, and measures latency from the due
//! time. A stalled server therefore shows up as the queue of slots it delayed (corrected), not as
//! one slow request per connection (what a closed-loop tool sees). Closed loop: each task sends
//! its next request as soon as the previous one is answered.
//!
//! Two phases with `--validate-share` (a `Phase` per `Plan`): phase 1 signs, and each
//! connection keeps the tokens of pending answers that [`crate::kept`] chooses; phase 2 merges
//! them and validates them, slot `k` taking tokens `k × batch ..`, paced and bounded as phase 1
//! is. Ctrl-C during phase 1 ends the run: phase 2 does not start.
//!
//! With `--sse-readers` or `--webhook` ([`crate::events`]), each connection also reads the
//! count of every accepted (or validated) answer and notes, when it is one of the petition's
//! thresholds, the crossing and the instant the answer was parsed; without them the counts are
//! not looked at.
//!
//! With `--countries` ([`crate::countries`]), each signature's JSON carries the country (and
//! region) chosen for its signer, and each connection counts the signatures its answers say
//! were counted, per petition, so that the report can read the breakdown of the busiest one.
//!
//! With `--ips` ([`crate::ips`]), each signature's JSON also carries its signer's address, and
//! with `--abusers` each connection counts its signatures' outcomes per group (abusers,
//! everyone else) for the report. Nothing is ever retried: a 429 `ip_rate_limited` or a 403
//! `blocked` is a final refusal, counted, never acknowledged (so never re-sent by
//! `--dup-ratio`), `failed` in the ledger.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode, Uri};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Notify;

use crate::cli::{RunArgs, ShapeKind, Target};
use crate::client::{self, Client};
use crate::countries::{self, Countries, Tally};
use crate::events::{Crossing, Crossings, Events, Thresholds};
use crate::ips::Ips;
use crate::kept::{KeptSet, KeptToken, KEPT_TOKENS_MAX};
use crate::ledger::{LedgerSink, LedgerWriter};
use crate::outcome::{self, Carried, Outcome};
use crate::report::{CountriesReport, IpsReport, Report, ValidationReport};
use crate::schedule::Schedule;
use crate::shape::{self, Picker};
use crate::stats::{Live, Recent, Stats, FLUSH_INTERVAL};
use crate::timeline::TimelineRow;
use crate::wire::Wire;

/// Acknowledged (or pending) signers a connection remembers for `--dup-ratio` re-sends.
const ACKED_REMEMBERED_MAX: usize = 4096;

/// Longest wait between two attempts to connect.
const CONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How late tokio's millisecond timer may wake a connection that waits for its slot, on top of
/// the slot's due time, without that lateness counting as latency (see `Worker::drive`).
const TIMER_SLACK: Duration = Duration::from_micros(1500);

/// Between setting up and the first due request: the load threads start and connect meanwhile.
const START_DELAY: Duration = Duration::from_millis(100);

/// Connections used to register petitions.
const REGISTER_CONNECTIONS_MAX: u32 = 16;

/// Attempts per petition registration when the server answers 429/503.
const REGISTER_ATTEMPTS_MAX: u32 = 20;

/// What each request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET <target URL>` (`--get`).
    Get,
    /// `POST /v1/petitions/{id}/signatures`, one signature per request.
    Single,
    /// `POST /v1/signatures:batch` with this many lines.
    Batch(u32),
}

impl Endpoint {
    /// Signatures (or GETs) per request.
    pub fn size(self) -> u32 {
        match self {
            Endpoint::Get | Endpoint::Single => 1,
            Endpoint::Batch(lines) => lines,
        }
    }
}

/// The seed used when `--seed` is not given: the clock's nanoseconds, so runs do not collide.
pub fn default_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_000_000)
}

/// The open loop's schedule: `--stages`, or `-R`; None in closed loop.
pub fn schedule_of(args: &RunArgs, endpoint: Endpoint) -> Option<Schedule> {
    match (&args.stages, args.rate) {
        (Some(stages), _) => Some(Schedule::stages(stages, endpoint.size())),
        (None, Some(rate)) => Some(Schedule::constant(rate, endpoint.size())),
        (None, None) => None,
    }
}

/// The viral ramp: `--ramp`, or a quarter of the duration.
pub fn ramp_of(args: &RunArgs) -> Duration {
    args.ramp.unwrap_or(args.duration / 4)
}

/// What a plan's connections send.
#[derive(Debug)]
enum Phase {
    /// Phase 1: signatures (or GETs); with `--validate-share`, pending answers' tokens are kept
    /// at this share.
    Sign { validate_share: Option<f64> },
    /// Phase 2: validations of these tokens, `endpoint.size()` per request.
    Validate { tokens: Vec<KeptToken> },
}

/// Ctrl-C, shared by the plans of both phases.
#[derive(Debug, Default)]
struct Stop {
    requested: AtomicBool,
    /// When it was requested.
    at: OnceLock<Instant>,
}

impl Stop {
    fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }
}

/// Everything the connection tasks of one phase share (read-only except the atomics and
/// `live`).
struct Plan {
    target: Target,
    endpoint: Endpoint,
    phase: Phase,
    /// The request target of `--get`, of the batch endpoint, and of single validations.
    fixed_path: String,
    auth: Option<HeaderValue>,
    picker: Picker,
    seed: u64,
    dup_ratio: f64,
    timeout: Duration,
    start: Instant,
    duration: Duration,
    /// Open loop (`-R`, `--stages`): when each request is due.
    schedule: Option<Schedule>,
    /// Slots taken so far (open loop, and phase 2 in either loop).
    next_slot: AtomicU64,
    stop: Arc<Stop>,
    /// Phase 1: tokens kept by all connections (the bound is [`KEPT_TOKENS_MAX`]).
    kept_total: AtomicUsize,
    live: Live,
    /// `--sse-readers`, `--webhook`: where the threshold crossings answers acknowledge go;
    /// without them, answers' counts are not even looked at.
    crossings: Option<Arc<Crossings>>,
    /// `--countries`: the country and region of each signer; without it, every signature
    /// carries `"country":"GB"`.
    countries: Option<Countries>,
    /// `--countries`: the signatures counted per petition (accepted, or validated).
    tally: Option<Arc<Tally>>,
    /// `--ips` (and `--abusers`): the address of each signer; without it, signatures carry
    /// none.
    ips: Option<Ips>,
}

enum Slot {
    /// Send slot `number` when this time comes; latency counts from it.
    Due { at: Instant, number: u64 },
    /// Closed loop: send now (`number` counts only in phase 2, which needs it to find its
    /// tokens; phase 1 does not touch the shared counter).
    Now { number: u64 },
    /// The phase is over.
    Done,
}

impl Plan {
    fn next_slot(&self) -> Slot {
        // `-z` bounds each phase: a slot still untaken at the end is never sent, however far
        // behind the connections are (`not_sent` counts it).
        if self.stop.is_requested() || self.start.elapsed() >= self.duration {
            return Slot::Done;
        }
        let number = match (&self.phase, &self.schedule) {
            (Phase::Sign { .. }, None) => return Slot::Now { number: 0 },
            _ => self.next_slot.fetch_add(1, Ordering::Relaxed),
        };
        if let Phase::Validate { tokens } = &self.phase {
            if self.tokens_of(number, tokens.len()).is_empty() {
                return Slot::Done;
            }
        }
        match &self.schedule {
            Some(schedule) => match schedule.offset(number) {
                Some(offset) if offset < self.duration => Slot::Due {
                    at: self.start + offset,
                    number,
                },
                _ => Slot::Done,
            },
            None => Slot::Now { number },
        }
    }

    /// Phase 2: the indices of the tokens slot `number` validates (empty past the last).
    fn tokens_of(&self, number: u64, tokens: usize) -> Range<usize> {
        let size = self.endpoint.size() as usize;
        let start = usize::try_from(number)
            .unwrap_or(usize::MAX)
            .saturating_mul(size)
            .min(tokens);
        start..start.saturating_add(size).min(tokens)
    }

    /// Whether the phase is over, so that a connection task need not (re)connect.
    fn is_over(&self) -> bool {
        if self.stop.is_requested() || self.start.elapsed() >= self.duration {
            return true;
        }
        match &self.phase {
            Phase::Validate { tokens } => self
                .tokens_of(self.next_slot.load(Ordering::Relaxed), tokens.len())
                .is_empty(),
            Phase::Sign { .. } => false,
        }
    }
}

/// Open loop: the slots due before `end` (the duration, or the moment the run was stopped),
/// and of them how many no connection took.
fn slots_not_taken(taken: u64, schedule: &Schedule, end: Duration) -> u64 {
    schedule.due_before(end).saturating_sub(taken)
}

/// One signature in a request: petition index, signer number (of this connection), re-send?
#[derive(Debug, Clone, Copy)]
struct Signature {
    petition: u32,
    signer: u64,
    resend: bool,
}

/// The `Host` and (if keyed) `Authorization` header lines of every load request.
fn common_headers(plan: &Plan) -> Vec<u8> {
    let mut lines = Vec::with_capacity(128);
    lines.extend_from_slice(b"host: ");
    lines.extend_from_slice(plan.target.host.as_bytes());
    lines.extend_from_slice(b"\r\n");
    if let Some(auth) = &plan.auth {
        lines.extend_from_slice(b"authorization: ");
        lines.extend_from_slice(auth.as_bytes());
        lines.extend_from_slice(b"\r\n");
    }
    lines
}

/// The state of one connection task that outlives its TCP connections.
struct Worker {
    id: u32,
    rng: SmallRng,
    next_signer: u64,
    acked: Vec<(u32, u64)>,
    recent: Recent,
    last_flush: Instant,
    ledger: Option<LedgerSink>,
    /// Phase 1: the signatures of the request out.
    in_flight: Vec<Signature>,
    /// Phase 2: the indices of the tokens the request out validates.
    validating: Range<usize>,
    /// Phase 1: the tokens this connection kept for phase 2.
    kept: KeptSet,
    /// A request was sent and its signatures (or validations) are not settled yet.
    pending: bool,
    outcomes: Vec<Outcome>,
    /// With `plan.crossings`: the petition's count each answer in `outcomes` carried (0 if
    /// none).
    answer_counts: Vec<u64>,
    /// Threshold crossings acknowledged since the last flush, with the instant their answer was
    /// parsed.
    crossings: Vec<(Crossing, Instant)>,
    /// With `plan.tally`: signatures counted per petition since the last flush.
    counted: HashMap<u32, u64>,
    response_body: Vec<u8>,
    /// The request being sent, head and body, rebuilt in place each time.
    request: Vec<u8>,
    /// The header lines every request carries (`Host`, `Authorization` if any), ready to copy.
    common_headers: Vec<u8>,
    body: Vec<u8>,
    text: String,
}

impl Worker {
    fn new(plan: &Plan, id: u32, ledger: Option<LedgerSink>) -> Worker {
        Worker {
            id,
            rng: SmallRng::seed_from_u64(plan.seed ^ (u64::from(id) << 32 | 0x9e37)),
            next_signer: 0,
            acked: Vec::new(),
            recent: Recent::default(),
            last_flush: Instant::now(),
            ledger,
            in_flight: Vec::new(),
            validating: 0..0,
            kept: KeptSet::default(),
            pending: false,
            outcomes: Vec::new(),
            answer_counts: Vec::new(),
            crossings: Vec::new(),
            counted: HashMap::new(),
            response_body: Vec::with_capacity(1024),
            request: Vec::with_capacity(512),
            common_headers: common_headers(plan),
            body: Vec::with_capacity(256),
            text: String::with_capacity(128),
        }
    }

    /// Chooses the next signature: a re-send of an acknowledged signer (`--dup-ratio`) or a new
    /// signer on a petition picked by the shape.
    fn next_signature(&mut self, plan: &Plan, elapsed: Duration) -> Signature {
        if plan.dup_ratio > 0.0 && !self.acked.is_empty() && self.rng.random_bool(plan.dup_ratio) {
            let (petition, signer) = self.acked[self.rng.random_range(0..self.acked.len())];
            return Signature {
                petition,
                signer,
                resend: true,
            };
        }
        let signer = self.next_signer;
        self.next_signer += 1;
        Signature {
            petition: plan.picker.pick(&mut self.rng, elapsed),
            signer,
            resend: false,
        }
    }

    /// Appends a signature's JSON object (without a newline) to the body buffer.
    fn write_signature(&mut self, plan: &Plan, signature: Signature, with_petition: bool) {
        self.body.extend_from_slice(b"{");
        if with_petition {
            self.text.clear();
            shape::write_petition_id(&mut self.text, plan.seed, signature.petition);
            self.body.extend_from_slice(b"\"petition\":\"");
            self.body.extend_from_slice(self.text.as_bytes());
            self.body.extend_from_slice(b"\",");
        }
        self.text.clear();
        shape::write_email(&mut self.text, plan.seed, self.id, signature.signer);
        self.body.extend_from_slice(b"\"email\":\"");
        self.body.extend_from_slice(self.text.as_bytes());
        self.body.extend_from_slice(b"\",\"name\":\"Load Test\"");
        match &plan.countries {
            None => self.body.extend_from_slice(b",\"country\":\"GB\""),
            Some(countries) => {
                countries.write_members(&mut self.body, plan.seed, self.id, signature.signer);
            }
        }
        if let Some(ips) = &plan.ips {
            ips.write_member(&mut self.body, plan.seed, self.id, signature.signer);
        }
        self.body.push(b'}');
    }

    /// Builds the request of slot `number` into `request` and fills `in_flight` with the
    /// signatures it carries (or `validating` with its tokens).
    fn build_request(&mut self, plan: &Plan, number: u64) {
        self.in_flight.clear();
        self.body.clear();
        self.request.clear();
        let content_type = match (&plan.phase, plan.endpoint) {
            (Phase::Validate { tokens }, endpoint) => {
                self.validating = plan.tokens_of(number, tokens.len());
                let batch = matches!(endpoint, Endpoint::Batch(_));
                for kept in &tokens[self.validating.clone()] {
                    self.body.extend_from_slice(if batch {
                        b"{\"validate\":\""
                    } else {
                        b"{\"token\":\""
                    });
                    kept.token.write_hex(&mut self.body);
                    self.body.extend_from_slice(b"\"}");
                    if batch {
                        self.body.push(b'\n');
                    }
                }
                self.request.extend_from_slice(b"POST ");
                self.request.extend_from_slice(plan.fixed_path.as_bytes());
                Some(if batch {
                    &b"application/x-ndjson"[..]
                } else {
                    &b"application/json"[..]
                })
            }
            (Phase::Sign { .. }, Endpoint::Get) => {
                self.request.extend_from_slice(b"GET ");
                self.request.extend_from_slice(plan.fixed_path.as_bytes());
                None
            }
            (Phase::Sign { .. }, Endpoint::Single) => {
                let signature = self.next_signature(plan, plan.start.elapsed());
                self.in_flight.push(signature);
                self.write_signature(plan, signature, false);
                self.request.extend_from_slice(b"POST ");
                self.request
                    .extend_from_slice(plan.target.base_path.as_bytes());
                self.request.extend_from_slice(b"/v1/petitions/");
                self.text.clear();
                shape::write_petition_id(&mut self.text, plan.seed, signature.petition);
                self.request.extend_from_slice(self.text.as_bytes());
                self.request.extend_from_slice(b"/signatures");
                Some(&b"application/json"[..])
            }
            (Phase::Sign { .. }, Endpoint::Batch(lines)) => {
                let elapsed = plan.start.elapsed();
                for _ in 0..lines {
                    let signature = self.next_signature(plan, elapsed);
                    self.in_flight.push(signature);
                    self.write_signature(plan, signature, true);
                    self.body.push(b'\n');
                }
                self.request.extend_from_slice(b"POST ");
                self.request.extend_from_slice(plan.fixed_path.as_bytes());
                Some(&b"application/x-ndjson"[..])
            }
        };
        self.request.extend_from_slice(b" HTTP/1.1\r\n");
        self.request.extend_from_slice(&self.common_headers);
        if let Some(content_type) = content_type {
            self.request.extend_from_slice(b"content-type: ");
            self.request.extend_from_slice(content_type);
            self.request.extend_from_slice(b"\r\ncontent-length: ");
            self.text.clear();
            self.text.push_str(&self.body.len().to_string());
            self.request.extend_from_slice(self.text.as_bytes());
            self.request.extend_from_slice(b"\r\n");
        }
        self.request.extend_from_slice(b"\r\n");
        self.request.extend_from_slice(&self.body);
    }

    /// Counts and logs one outcome per signature (or validation) in flight (`outcomes` in
    /// order, or `all` for every one).
    fn settle(&mut self, plan: &Plan, all: Option<Outcome>) {
        self.pending = false;
        if let Phase::Validate { tokens } = &plan.phase {
            self.settle_validations(plan, tokens, all);
            return;
        }
        let second = plan.live.second_of(Instant::now());
        if plan.endpoint == Endpoint::Get {
            if let Some(outcome) = all.as_ref().or(self.outcomes.first()) {
                self.recent.add(second, outcome);
            }
            return;
        }
        // The instant this answer was parsed, taken at its first crossing.
        let mut parsed_at = None;
        for (i, signature) in self.in_flight.iter().enumerate() {
            let outcome = match &all {
                Some(outcome) => outcome,
                None => &self.outcomes[i],
            };
            self.recent.add(second, outcome);
            if let Some(ips) = plan.ips.filter(|ips| ips.abusers().is_some()) {
                let group = ips.group(plan.seed, self.id, signature.signer);
                self.recent.counts.groups.add(group, outcome);
            }
            if plan.tally.is_some() && matches!(outcome, Outcome::Accepted) {
                *self.counted.entry(signature.petition).or_default() += 1;
            }
            if let (Some(crossings), None, Outcome::Accepted) = (&plan.crossings, &all, outcome) {
                note_crossing(
                    crossings.thresholds(),
                    &mut self.crossings,
                    &mut parsed_at,
                    signature.petition,
                    self.answer_counts.get(i).copied(),
                );
            }
            if signature.resend {
                self.recent.counts.resends += 1;
            } else if matches!(
                outcome,
                Outcome::Accepted | Outcome::Duplicate | Outcome::Pending { .. }
            ) {
                // A pending signer is re-sent too: the server owes it the same token.
                let entry = (signature.petition, signature.signer);
                if self.acked.len() < ACKED_REMEMBERED_MAX {
                    self.acked.push(entry);
                } else {
                    let slot = self.rng.random_range(0..self.acked.len());
                    self.acked[slot] = entry;
                }
                if let (
                    Outcome::Pending { token, .. },
                    Phase::Sign {
                        validate_share: Some(share),
                    },
                ) = (outcome, &plan.phase)
                {
                    let kept =
                        KeptToken::new(self.id, signature.signer, signature.petition, *token);
                    self.kept
                        .offer(plan.seed, *share, kept, &plan.kept_total, KEPT_TOKENS_MAX);
                }
            }
            if let Some(ledger) = &mut self.ledger {
                self.text.clear();
                shape::write_email(&mut self.text, plan.seed, self.id, signature.signer);
                let petition = shape::petition_id(plan.seed, signature.petition);
                match outcome {
                    Outcome::Pending {
                        token,
                        expires_unix_s,
                    } => ledger.record_lifecycle(
                        &petition,
                        &self.text,
                        outcome.ledger_class(),
                        "-",
                        token,
                        Some(*expires_unix_s),
                    ),
                    _ => ledger.record(
                        &petition,
                        &self.text,
                        outcome.ledger_class(),
                        &outcome.detail(),
                    ),
                }
            }
        }
    }

    /// Phase 2's [`Worker::settle`]: one outcome per token in `validating`.
    fn settle_validations(&mut self, plan: &Plan, tokens: &[KeptToken], all: Option<Outcome>) {
        let mut parsed_at = None;
        let second = plan.live.second_of(Instant::now());
        for (i, kept) in tokens[self.validating.clone()].iter().enumerate() {
            let outcome = match &all {
                Some(outcome) => outcome,
                None => &self.outcomes[i],
            };
            self.recent.add(second, outcome);
            if plan.tally.is_some() && matches!(outcome, Outcome::Validated) {
                *self.counted.entry(kept.petition).or_default() += 1;
            }
            if let (Some(crossings), None, Outcome::Validated) = (&plan.crossings, &all, outcome) {
                note_crossing(
                    crossings.thresholds(),
                    &mut self.crossings,
                    &mut parsed_at,
                    kept.petition,
                    self.answer_counts.get(i).copied(),
                );
            }
            if let Some(ledger) = &mut self.ledger {
                self.text.clear();
                shape::write_email(&mut self.text, plan.seed, kept.connection(), kept.number());
                ledger.record_lifecycle(
                    &shape::petition_id(plan.seed, kept.petition),
                    &self.text,
                    outcome.validation_ledger_class(),
                    &outcome.detail(),
                    &kept.token,
                    None,
                );
            }
        }
    }

    /// Merges into the shared totals now and then, and hands full ledger chunks over.
    async fn maybe_flush(&mut self, plan: &Plan, now: Instant) {
        if now.duration_since(self.last_flush) >= FLUSH_INTERVAL {
            plan.live.absorb(&mut self.recent);
            if let Some(crossings) = &plan.crossings {
                crossings.absorb(&mut self.crossings);
            }
            if let Some(tally) = &plan.tally {
                tally.absorb(&mut self.counted);
            }
            self.last_flush = now;
        }
        if let Some(ledger) = &mut self.ledger {
            ledger.flush_if_full().await;
        }
    }

    /// Sends requests over one connection until the run is over (returns false) or the
    /// connection must be replaced (returns true). While a request is out, `watch.sent_ns` holds
    /// its send time for the watchdog.
    async fn drive(&mut self, plan: &Plan, wire: &mut Wire, watch: &Watch) -> bool {
        if Instant::now() < plan.start {
            tokio::time::sleep_until(plan.start.into()).await;
        }
        loop {
            let (due, number) = match plan.next_slot() {
                Slot::Done => return false,
                Slot::Now { number } => (None, number),
                Slot::Due { at: due, number } => {
                    let due = if due > Instant::now() {
                        // The connection is free before its slot: any lateness now is our own
                        // timer's (it ticks in whole milliseconds), not the server's, so up to
                        // TIMER_SLACK of it is not charged to the server.
                        tokio::time::sleep_until(due.into()).await;
                        Instant::now().min(due + TIMER_SLACK)
                    } else {
                        // Overdue: the connections were busy; the wait is the server's doing.
                        due
                    };
                    (Some(due), number)
                }
            };
            self.build_request(plan, number);
            let sent_at = Instant::now();
            self.pending = true;
            let carried = match (&plan.phase, plan.endpoint) {
                (Phase::Validate { .. }, _) => self.validating.len(),
                (Phase::Sign { .. }, Endpoint::Get) => 1,
                (Phase::Sign { .. }, _) => self.in_flight.len(),
            };
            plan.live.note_sent(sent_at, carried as u64);
            watch.sent_ns.store(
                (sent_at.duration_since(plan.start).as_nanos() as u64).max(1),
                Ordering::Relaxed,
            );
            let result = wire.exchange(&self.request, &mut self.response_body).await;
            watch.sent_ns.store(0, Ordering::Relaxed);
            let answered_at = Instant::now();
            let replace = match result {
                Ok(status) => {
                    self.recent.record_latency(
                        plan.live.second_of(answered_at),
                        answered_at.duration_since(due.unwrap_or(sent_at)),
                        answered_at.duration_since(sent_at),
                    );
                    self.recent.counts.requests += 1;
                    let body = std::mem::take(&mut self.response_body);
                    self.classify(plan, status, &body);
                    self.response_body = body;
                    self.settle(plan, None);
                    false
                }
                Err(_) if watch.timed_out.load(Ordering::Relaxed) => {
                    self.settle(plan, Some(Outcome::Timeout));
                    true
                }
                Err(_) => {
                    self.settle(plan, Some(Outcome::ConnectionError));
                    true
                }
            };
            self.maybe_flush(plan, answered_at).await;
            if replace || wire.is_closed() {
                return true;
            }
        }
    }

    fn classify(&mut self, plan: &Plan, status: StatusCode, body: &[u8]) {
        let validating = matches!(plan.phase, Phase::Validate { .. });
        if plan.crossings.is_some() {
            self.classify_counted(plan, status, body, validating);
            return;
        }
        match plan.endpoint {
            Endpoint::Get => {
                self.outcomes.clear();
                self.outcomes.push(outcome::classify_get(status, body));
            }
            Endpoint::Single if validating => {
                self.outcomes.clear();
                self.outcomes
                    .push(outcome::classify_validation(status, body));
            }
            Endpoint::Single => {
                self.outcomes.clear();
                self.outcomes.push(outcome::classify_single(status, body));
            }
            Endpoint::Batch(_) if validating => {
                let lines = self.validating.len();
                outcome::classify_batch(
                    status,
                    body,
                    lines,
                    Carried::Validations,
                    &mut self.outcomes,
                );
            }
            Endpoint::Batch(_) => {
                let lines = self.in_flight.len();
                outcome::classify_batch(
                    status,
                    body,
                    lines,
                    Carried::Signatures,
                    &mut self.outcomes,
                );
            }
        }
    }

    /// [`Worker::classify`] that also keeps each answer's count, for the crossings.
    fn classify_counted(&mut self, plan: &Plan, status: StatusCode, body: &[u8], validating: bool) {
        self.outcomes.clear();
        self.answer_counts.clear();
        let (lines, carried) = if validating {
            (self.validating.len(), Carried::Validations)
        } else {
            (self.in_flight.len(), Carried::Signatures)
        };
        let (outcome, count) = match plan.endpoint {
            Endpoint::Batch(_) => {
                outcome::classify_batch_counted(
                    status,
                    body,
                    lines,
                    carried,
                    &mut self.outcomes,
                    &mut self.answer_counts,
                );
                return;
            }
            Endpoint::Single if validating => outcome::classify_validation_counted(status, body),
            Endpoint::Single => outcome::classify_single_counted(status, body),
            Endpoint::Get => (outcome::classify_get(status, body), 0),
        };
        self.outcomes.push(outcome);
        self.answer_counts.push(count);
    }
}

/// Notes a crossing when an acknowledged `count` of `petition` is one of its thresholds, with
/// the instant the answer was parsed (taken once per answer, at its first crossing).
fn note_crossing(
    thresholds: &Thresholds,
    crossings: &mut Vec<(Crossing, Instant)>,
    parsed_at: &mut Option<Instant>,
    petition: u32,
    count: Option<u64>,
) {
    if let Some(threshold) = count.filter(|&count| thresholds.contains(count)) {
        let at = *parsed_at.get_or_insert_with(Instant::now);
        crossings.push((
            Crossing {
                petition,
                threshold,
            },
            at,
        ));
    }
}

/// Shared by a connection's request loop and its watchdog.
#[derive(Debug, Default)]
struct Watch {
    /// Send time of the request out (nanoseconds since the start, never 0); 0 when idle.
    sent_ns: AtomicU64,
    /// Set by the watchdog before it shuts the socket down.
    timed_out: AtomicBool,
    /// Set when the connection is finished with; the watchdog then exits.
    closed: AtomicBool,
}

/// Shuts down the socket of a connection whose request has waited longer than `--timeout`
/// (checked a few times per timeout). The request loop then sees its request fail and, finding
/// `timed_out` set, counts a timeout. Working from a separate task through a duplicate of the
/// socket costs the request path nothing: no timer is armed or polled per request.
async fn watchdog(plan: Arc<Plan>, watch: Arc<Watch>, socket: std::net::TcpStream) {
    let period = (plan.timeout / 8).clamp(Duration::from_millis(1), Duration::from_millis(250));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if watch.closed.load(Ordering::Relaxed) {
            return;
        }
        let sent = watch.sent_ns.load(Ordering::Relaxed);
        let now = plan.start.elapsed().as_nanos() as u64;
        if sent != 0 && now.saturating_sub(sent) >= plan.timeout.as_nanos() as u64 {
            watch.timed_out.store(true, Ordering::Relaxed);
            let _ = socket.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

/// Connects and keeps a duplicate of the socket for the watchdog.
async fn open_connection(plan: &Plan) -> Option<(Wire, std::net::TcpStream)> {
    let stream = client::connect(&plan.target).await.ok()?;
    let std_stream = stream.into_std().ok()?;
    let duplicate = std_stream.try_clone().ok()?;
    let stream = tokio::net::TcpStream::from_std(std_stream).ok()?;
    Some((Wire::new(stream), duplicate))
}

/// The body of one connection task: connect, drive, reconnect, until the phase is over.
/// Returns the tokens it kept (phase 1).
async fn connection_task(plan: Arc<Plan>, id: u32, ledger: Option<LedgerSink>) -> KeptSet {
    let mut worker = Worker::new(&plan, id, ledger);
    let mut backoff = Duration::from_millis(10);
    loop {
        if plan.is_over() {
            break;
        }
        let Some((mut wire, duplicate)) = open_connection(&plan).await else {
            worker
                .recent
                .connect_failed(plan.live.second_of(Instant::now()));
            worker.maybe_flush(&plan, Instant::now()).await;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(CONNECT_BACKOFF_MAX);
            continue;
        };
        backoff = Duration::from_millis(10);
        let watch = Arc::new(Watch::default());
        tokio::spawn(watchdog(Arc::clone(&plan), Arc::clone(&watch), duplicate));
        let keep_going = worker.drive(&plan, &mut wire, &watch).await;
        drop(wire);
        watch.closed.store(true, Ordering::Relaxed);
        if worker.pending {
            // The request loop settles every request it sends before it returns; this is a
            // guard, so that nothing sent is ever left out of the counts or the ledger.
            worker.settle(&plan, Some(Outcome::ConnectionError));
        }
        if !keep_going {
            break;
        }
    }
    plan.live.absorb(&mut worker.recent);
    if let Some(crossings) = &plan.crossings {
        crossings.absorb(&mut worker.crossings);
    }
    if let Some(tally) = &plan.tally {
        tally.absorb(&mut worker.counted);
    }
    if let Some(ledger) = &mut worker.ledger {
        ledger.flush().await;
    }
    worker.kept
}

/// Load threads when `--threads` is not given: one per CPU.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// Starts one OS thread with its own current-thread tokio runtime running `connections`; the
/// receiver yields how many of its connection tasks panicked, and the tokens the others kept.
///
/// One event loop per thread, as wrk does: a connection's task, its hyper connection and its
/// socket stay on one thread, with no work-stealing, cross-thread wake-ups or shared run queue.
/// Measured on the 2-core machine against the hello-world, this drove about a quarter more
/// requests per second than the same tasks on one multi-threaded runtime.
fn spawn_load_thread(
    plan: Arc<Plan>,
    thread: usize,
    connections: Vec<(u32, Option<LedgerSink>)>,
) -> Result<tokio::sync::oneshot::Receiver<(usize, KeptSet)>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a load thread's runtime")?;
    let (finished, receiver) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("load-{thread}"))
        .spawn(move || {
            let result = runtime.block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                for (id, sink) in connections {
                    tasks.spawn(connection_task(Arc::clone(&plan), id, sink));
                }
                let mut panicked = 0;
                let mut kept = KeptSet::default();
                while let Some(joined) = tasks.join_next().await {
                    match joined {
                        Ok(connection_kept) => kept.merge(connection_kept),
                        Err(_) => panicked += 1,
                    }
                }
                (panicked, kept)
            });
            // The receiver is gone only if `execute` was itself dropped; nothing to tell then.
            let _ = finished.send(result);
        })
        .context("starting a load thread")?;
    Ok(receiver)
}

/// Registers petitions `0..count` with `PUT /v1/petitions/{id}` and body `{}`, with
/// `"validation":"email"` for `--validate-share` and `"thresholds":[K, 2K, ..., 32K]` for
/// `--threshold-step K`.
///
/// The key is `--admin-key`, else `--api-key`; without either, no `Authorization` is sent (a
/// server with keys off).
async fn register(args: &RunArgs, seed: u64) -> Result<()> {
    let auth = match args.admin_key.as_deref().or(args.api_key.as_deref()) {
        Some(key) => Some(client::bearer(key)?),
        None => None,
    };
    let mut spec = serde_json::Map::new();
    if args.validate_share.is_some() {
        spec.insert("validation".to_owned(), "email".into());
    }
    if let Some(step) = args.threshold_step {
        spec.insert("thresholds".to_owned(), Thresholds::of_step(step).into());
    }
    let body = Bytes::from(serde_json::to_vec(&spec).context("encoding a petition")?);
    let next = Arc::new(AtomicU32::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.connections.min(REGISTER_CONNECTIONS_MAX) {
        let next = Arc::clone(&next);
        let auth = auth.clone();
        let mut client = Client::new(&args.target, args.timeout);
        let count = args.petitions;
        let body = body.clone();
        tasks.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return anyhow::Ok(());
                }
                let id = shape::petition_id(seed, index);
                register_one(&mut client, &id, auth.as_ref(), body.clone()).await?;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a registration task panicked")??;
    }
    Ok(())
}

async fn register_one(
    client: &mut Client,
    id: &str,
    auth: Option<&HeaderValue>,
    body: Bytes,
) -> Result<()> {
    let path = format!("/v1/petitions/{id}");
    for _ in 0..REGISTER_ATTEMPTS_MAX {
        let answer = client
            .request(Method::PUT, &path, auth, "application/json", body.clone())
            .await
            .with_context(|| format!("registering petition {id}"))?;
        match answer.status.as_u16() {
            200 | 201 => return Ok(()),
            429 | 503 => {
                let wait = answer.retry_after.unwrap_or(Duration::from_millis(100));
                tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
            }
            status => {
                let code = outcome::error_code(answer.status, &answer.body);
                let hint = match (status, auth) {
                    (401, None) => {
                        " (the server wants a key and none was given: pass --admin-key, or \
                         --api-key with the admin role)"
                    }
                    (401 | 403, _) => " (registering needs an admin key: pass --admin-key)",
                    _ => "",
                };
                bail!("registering petition {id}: server answered {status} {code}{hint}");
            }
        }
    }
    bail!("registering petition {id}: still refused after {REGISTER_ATTEMPTS_MAX} attempts")
}

/// Shows rate, errors and p99 every half second until `done` is notified.
async fn show_progress(plan: Arc<Plan>, bar: ProgressBar, done: Arc<Notify>) {
    let size = u64::from(plan.endpoint.size());
    let mut last_answered = 0u64;
    let mut last_at = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            () = done.notified() => break,
            _ = ticker.tick() => {}
        }
        let (counts, p99) = plan.live.snapshot();
        let now = Instant::now();
        let seconds = now.duration_since(last_at).as_secs_f64().max(1e-3);
        let rate = (counts.answered - last_answered) as f64 / seconds;
        last_answered = counts.answered;
        last_at = now;
        let p99 = p99.map_or_else(|| "-".to_owned(), crate::report::format_latency);
        let unit = match (&plan.phase, size > 1) {
            (_, false) => "req/s",
            (Phase::Sign { .. }, true) => "sig/s",
            (Phase::Validate { .. }, true) => "val/s",
        };
        bar.set_position(plan.start.elapsed().as_millis() as u64);
        bar.set_message(format!(
            "{rate:>10.0} {unit}  answered {:>10}  errors {:>7}  p99 {p99}",
            counts.answered,
            counts.errors()
        ));
    }
    bar.finish_and_clear();
}

/// What one phase measured.
struct PhaseResult {
    stats: Stats,
    /// From the first due request to the last answer.
    elapsed: Duration,
    /// Phase 1: the tokens its connections kept.
    kept: KeptSet,
    /// Connection tasks that panicked (their figures are missing).
    panicked: usize,
    /// The per-second timeline (target rates not filled in yet).
    timeline: Vec<TimelineRow>,
    /// Seconds past the timeline's bound, not in it.
    timeline_dropped: u64,
    /// Answers that came after their second was closed.
    timeline_late: u64,
}

/// Runs one phase: its connections on `--threads` load threads, with the progress line if
/// asked, until the plan is over; every connection's ledger lines are handed over when this
/// returns.
async fn run_phase(
    plan: &Arc<Plan>,
    args: &RunArgs,
    ledger: Option<&LedgerWriter>,
    progress: bool,
) -> Result<PhaseResult> {
    let done = Arc::new(Notify::new());
    let progress_task = progress.then(|| {
        let bar = ProgressBar::new(plan.duration.as_millis() as u64);
        // The template is a constant known to parse.
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:20} {msg}")
        {
            bar.set_style(style);
        }
        tokio::spawn(show_progress(Arc::clone(plan), bar, Arc::clone(&done)))
    });

    let threads = args.threads.map_or_else(default_threads, |t| t as usize);
    let mut ledger_sinks: Vec<Option<LedgerSink>> = (0..args.connections)
        .map(|_| ledger.map(LedgerWriter::sink))
        .collect();
    let mut load_threads = Vec::with_capacity(threads);
    for thread in 0..threads {
        // Connection i runs on thread i mod threads.
        let share: Vec<(u32, Option<LedgerSink>)> = (0..args.connections)
            .filter(|id| *id as usize % threads == thread)
            .map(|id| (id, ledger_sinks[id as usize].take()))
            .collect();
        load_threads.push(spawn_load_thread(Arc::clone(plan), thread, share)?);
    }
    drop(ledger_sinks);
    let mut panicked = 0;
    let mut kept = KeptSet::default();
    for finished in load_threads {
        match finished.await {
            Ok((thread_panicked, thread_kept)) => {
                panicked += thread_panicked;
                kept.merge(thread_kept);
            }
            Err(_) => panicked += 1,
        }
    }
    // (elapsed counts from the first due request to the last answer.)
    let elapsed = plan.start.elapsed();
    done.notify_one();
    if let Some(task) = progress_task {
        let _ = task.await;
    }
    let (timeline, timeline_dropped, timeline_late) = plan.live.finish_timeline(elapsed);
    Ok(PhaseResult {
        stats: plan.live.total(),
        elapsed,
        kept,
        panicked,
        timeline,
        timeline_dropped,
        timeline_late,
    })
}

/// Runs the load described by `args`: registers petitions (unless `--get`/`--no-register`),
/// drives the connections for the duration, waits for the answers still outstanding, with
/// `--validate-share` validates the tokens kept the same way, and returns the report. The
/// ledger, if asked for, is complete and synced when this returns.
///
/// With `--sse-readers` or `--webhook`, the readers are connected and the webhook registered
/// after the petitions and before the load; after it, the report waits for the last events
/// ([`Events::finish`]), and the webhook is deleted whether the load succeeded or not.
///
/// With `--countries`, the report then reads the breakdown by country of the petition with the
/// most signatures counted ([`countries_report`]).
pub async fn execute(args: &RunArgs, seed: u64, progress: bool) -> Result<Report> {
    let args = &args.resolved();
    let endpoint = if args.get {
        Endpoint::Get
    } else {
        match args.batch {
            Some(lines) => Endpoint::Batch(lines),
            None => Endpoint::Single,
        }
    };
    let ips =
        Ips::from_flags(args.ips, args.abusers, args.abuse_share).map_err(anyhow::Error::msg)?;
    if endpoint != Endpoint::Get && !args.no_register {
        register(args, seed).await?;
    }
    let events = Events::start(args, seed).await?;
    let crossings = events.as_ref().map(Events::crossings);
    let tally = args.countries.as_ref().map(|_| Arc::new(Tally::default()));
    let result = run_load(
        args,
        seed,
        progress,
        endpoint,
        ips,
        crossings,
        tally.clone(),
    )
    .await;
    let mut report = match (result, events) {
        (Ok(mut report), Some(events)) => {
            report.events = Some(events.finish().await);
            report
        }
        (Err(error), Some(events)) => {
            events.abandon().await;
            return Err(error);
        }
        (result, None) => result?,
    };
    if let (Some(countries), Some(tally)) = (&args.countries, &tally) {
        report.countries = Some(countries_report(args, seed, countries, tally).await);
    }
    let corrected = &report.latency_ms.corrected;
    report.criteria = args
        .criteria()
        .check(corrected.p99, corrected.count, &report.outcomes);
    Ok(report)
}

/// `--countries`: the server's breakdown by country of the petition the run's answers counted
/// the most signatures on (the hot one of `--shape viral`; petition 0 if none was counted). A
/// failure to read it is reported in the block, not raised: the rest of the report stands.
async fn countries_report(
    args: &RunArgs,
    seed: u64,
    countries: &Countries,
    tally: &Tally,
) -> CountriesReport {
    let (index, counted) = tally.busiest().unwrap_or((0, 0));
    let petition = shape::petition_id(seed, index);
    let mut client = Client::new(&args.target, args.timeout);
    let breakdown = countries::fetch_breakdown(&mut client, &petition).await;
    CountriesReport::new(countries.spec(), petition, counted, breakdown)
}

/// The load of [`execute`]: both phases, the ledger, and the report without its events.
async fn run_load(
    args: &RunArgs,
    seed: u64,
    progress: bool,
    endpoint: Endpoint,
    ips: Option<Ips>,
    crossings: Option<Arc<Crossings>>,
    tally: Option<Arc<Tally>>,
) -> Result<Report> {
    let auth = match &args.api_key {
        Some(key) if endpoint != Endpoint::Get => Some(client::bearer(key)?),
        _ => None,
    };
    let batch_path = format!("{}/v1/signatures:batch", args.target.base_path);
    let fixed_path = match endpoint {
        Endpoint::Get => args.target.path_and_query.clone(),
        Endpoint::Single | Endpoint::Batch(_) => batch_path.clone(),
    };
    // The flag checks make this a valid request target; refuse it here if it somehow is not.
    Uri::try_from(fixed_path.as_str()).context("building the request URI")?;
    let ledger = match &args.ledger {
        Some(path) => Some(LedgerWriter::create(path)?),
        None => None,
    };
    let picker = Picker::new(
        args.shape,
        args.petitions,
        args.hot_share,
        ramp_of(args),
        args.zipf_exponent,
    );
    let schedule = schedule_of(args, endpoint);
    let stop = Arc::new(Stop::default());
    let plan_of = |phase: Phase, fixed_path: String| {
        // A moment to start the load threads and open the connections, so the first due
        // requests are not late for reasons of our own.
        let start = Instant::now() + START_DELAY;
        Plan {
            target: args.target.clone(),
            endpoint,
            phase,
            fixed_path,
            auth: auth.clone(),
            picker: picker.clone(),
            seed,
            dup_ratio: args.dup_ratio,
            timeout: args.timeout,
            start,
            duration: args.duration,
            schedule: schedule.clone(),
            next_slot: AtomicU64::new(0),
            stop: Arc::clone(&stop),
            kept_total: AtomicUsize::new(0),
            live: Live::new(start),
            crossings: crossings.clone(),
            countries: args.countries.clone(),
            tally: tally.clone(),
            ips,
        }
    };

    // Ctrl-C ends the run early but still waits for the answers outstanding, so the ledger
    // stays true.
    let interrupt = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = stop.at.set(Instant::now());
                stop.requested.store(true, Ordering::Relaxed);
                eprintln!(
                    "\nloadtest: stopping; waiting for the answers outstanding \
                     (Ctrl-C again to quit at once, leaving the ledger incomplete)"
                );
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        })
    };

    let plan = Arc::new(plan_of(
        Phase::Sign {
            validate_share: args.validate_share,
        },
        fixed_path,
    ));
    let mut signing = run_phase(&plan, args, ledger.as_ref(), progress).await;
    let validating = match (&mut signing, args.validate_share) {
        (Ok(signed), Some(share)) if signed.panicked == 0 => {
            let path = match endpoint {
                Endpoint::Batch(_) => batch_path,
                _ => format!("{}/v1/validations", args.target.base_path),
            };
            let phase_two = |tokens| plan_of(Phase::Validate { tokens }, path);
            let kept = std::mem::take(&mut signed.kept);
            let stopped = stop.is_requested();
            Some(
                validate(
                    args,
                    kept,
                    share,
                    stopped,
                    phase_two,
                    ledger.as_ref(),
                    progress,
                )
                .await,
            )
        }
        _ => None,
    };
    interrupt.abort();
    if let Some(ledger) = ledger {
        ledger.finish()?;
    }
    let signing = signing?;
    if signing.panicked > 0 {
        bail!(
            "{} connection tasks panicked; the figures would be incomplete",
            signing.panicked
        );
    }
    let mut stats = signing.stats;
    if let Some(schedule) = &plan.schedule {
        let taken = plan.next_slot.load(Ordering::Relaxed);
        // After Ctrl-C only the slots due before the stop count as not sent.
        let end = match stop.at.get() {
            Some(at) => plan.duration.min(at.saturating_duration_since(plan.start)),
            None => plan.duration,
        };
        stats.counts.not_sent = slots_not_taken(taken, schedule, end) * u64::from(endpoint.size());
    }
    let mut report = Report::new(args, seed, endpoint, signing.elapsed, &stats);
    report.timeline = signing.timeline;
    if let Some(schedule) = &plan.schedule {
        let size = f64::from(endpoint.size());
        for row in &mut report.timeline {
            // The rate due over the row's span, of which only what falls before -z counts.
            let from = Duration::from_secs(u64::from(row.second));
            let to = from + Duration::from_secs_f64(row.span_s);
            let due = schedule
                .due_before(to.min(plan.duration))
                .saturating_sub(schedule.due_before(from.min(plan.duration)));
            row.target_per_s = Some(due as f64 * size / row.span_s);
        }
    }
    report.timeline_late = signing.timeline_late;
    if signing.timeline_dropped > 0 {
        eprintln!(
            "loadtest: the timeline keeps {} seconds; the last {} are not in it",
            crate::timeline::ROWS_MAX,
            signing.timeline_dropped
        );
    }
    report.ips = ips.map(|ips| IpsReport::new(&ips, &stats.counts));
    report.validation = validating.transpose()?;
    Ok(report)
}

/// Phase 2: validates the tokens phase 1 kept on the plan `plan_of` makes of them (unless the
/// run was `stopped` already) and reports on it.
async fn validate(
    args: &RunArgs,
    mut kept: KeptSet,
    share: f64,
    stopped: bool,
    plan_of: impl FnOnce(Vec<KeptToken>) -> Plan,
    ledger: Option<&LedgerWriter>,
    progress: bool,
) -> Result<ValidationReport> {
    if kept.over_bound > 0 {
        eprintln!(
            "loadtest: the bound of {KEPT_TOKENS_MAX} kept tokens was reached: {} more pending \
             signers that --validate-share chose were not kept and will not be validated",
            kept.over_bound
        );
    }
    let tokens = std::mem::take(&mut kept.tokens);
    let count = tokens.len() as u64;
    if stopped || tokens.is_empty() {
        if stopped {
            eprintln!("loadtest: stopped before phase 2; {count} kept tokens not validated");
        } else if kept.candidates == 0 {
            eprintln!(
                "loadtest: phase 2: nothing to validate: no new signer was answered pending \
                 (are the petitions registered with \"validation\":\"email\"?)"
            );
        } else {
            eprintln!(
                "loadtest: phase 2: nothing to validate: --validate-share {share} chose none of \
                 the {} pending new signers",
                kept.candidates
            );
        }
        return Ok(ValidationReport::new(
            args,
            share,
            &kept,
            count,
            Duration::ZERO,
            &Stats::default(),
        ));
    }
    eprintln!(
        "loadtest: phase 2: validating {count} kept tokens (of {} pending new signers)",
        kept.candidates
    );
    let plan = Arc::new(plan_of(tokens));
    let validated = run_phase(&plan, args, ledger, progress).await?;
    if validated.panicked > 0 {
        bail!(
            "{} connection tasks panicked in phase 2; the figures would be incomplete",
            validated.panicked
        );
    }
    Ok(ValidationReport::new(
        args,
        share,
        &kept,
        count,
        validated.elapsed,
        &validated.stats,
    ))
}

/// Describes the shape for humans, e.g. `viral: lt-7-0 from 1% to 90% over 2.5s`.
pub fn describe_shape(args: &RunArgs, seed: u64) -> String {
    match args.shape {
        ShapeKind::Uniform => format!("uniform over {} petitions", args.petitions),
        ShapeKind::Zipf => format!(
            "zipf (s = {}) over {} petitions",
            args.zipf_exponent, args.petitions
        ),
        ShapeKind::Viral => format!(
            "viral over {} petitions: {} from {:.2}% to {:.0}% over {}",
            args.petitions,
            shape::petition_id(seed, 0),
            100.0 / f64::from(args.petitions),
            args.hot_share * 100.0,
            humantime::format_duration(ramp_of(args))
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A phase-1 plan of one petition for `http://127.0.0.1:9/base` with key `k` and seed 7.
    fn signing_plan(endpoint: Endpoint) -> Plan {
        let target = crate::cli::parse_target("http://127.0.0.1:9/base").unwrap();
        Plan {
            fixed_path: format!("{}/v1/signatures:batch", target.base_path),
            target,
            endpoint,
            phase: Phase::Sign {
                validate_share: None,
            },
            auth: Some(client::bearer("k").unwrap()),
            picker: Picker::new(ShapeKind::Uniform, 1, 0.9, Duration::ZERO, 1.0),
            seed: 7,
            dup_ratio: 0.0,
            timeout: Duration::from_secs(1),
            start: Instant::now(),
            duration: Duration::from_secs(1),
            schedule: None,
            next_slot: AtomicU64::new(0),
            stop: Arc::default(),
            kept_total: AtomicUsize::new(0),
            live: Live::default(),
            crossings: None,
            countries: None,
            tally: None,
            ips: None,
        }
    }

    /// The bytes of the first `count` requests connection 3 builds on `plan`.
    fn requests(plan: &Plan, count: u64) -> Vec<String> {
        let mut worker = Worker::new(plan, 3, None);
        (0..count)
            .map(|number| {
                worker.build_request(plan, number);
                String::from_utf8(worker.request.clone()).unwrap()
            })
            .collect()
    }

    #[test]
    fn signature_requests_are_byte_for_byte_what_they_were() {
        let single = requests(&signing_plan(Endpoint::Single), 2);
        assert_eq!(
            single,
            [
                "POST /base/v1/petitions/lt-7-0/signatures HTTP/1.1\r\n\
                 host: 127.0.0.1:9\r\n\
                 authorization: Bearer k\r\n\
                 content-type: application/json\r\n\
                 content-length: 65\r\n\
                 \r\n\
                 {\"email\":\"lt7.3.0@example.org\",\"name\":\"Load Test\",\"country\":\"GB\"}",
                "POST /base/v1/petitions/lt-7-0/signatures HTTP/1.1\r\n\
                 host: 127.0.0.1:9\r\n\
                 authorization: Bearer k\r\n\
                 content-type: application/json\r\n\
                 content-length: 65\r\n\
                 \r\n\
                 {\"email\":\"lt7.3.1@example.org\",\"name\":\"Load Test\",\"country\":\"GB\"}",
            ]
        );
        let batch = requests(&signing_plan(Endpoint::Batch(2)), 1);
        assert_eq!(
            batch,
            ["POST /base/v1/signatures:batch HTTP/1.1\r\n\
              host: 127.0.0.1:9\r\n\
              authorization: Bearer k\r\n\
              content-type: application/x-ndjson\r\n\
              content-length: 172\r\n\
              \r\n\
              {\"petition\":\"lt-7-0\",\"email\":\"lt7.3.0@example.org\",\"name\":\"Load Test\",\"country\":\"GB\"}\n\
              {\"petition\":\"lt-7-0\",\"email\":\"lt7.3.1@example.org\",\"name\":\"Load Test\",\"country\":\"GB\"}\n"]
        );
    }

    #[test]
    fn with_countries_each_signature_carries_its_signers_country_and_region() {
        let countries = Countries::parse("GB:0.5:20,FR:0.3").unwrap();
        for endpoint in [Endpoint::Single, Endpoint::Batch(300)] {
            let mut plan = signing_plan(endpoint);
            plan.countries = Some(countries.clone());
            let mut kinds = std::collections::BTreeSet::new();
            let mut number = 0u64;
            for request in requests(&plan, 300 / u64::from(endpoint.size())) {
                let (head, body) = request.split_once("\r\n\r\n").unwrap();
                assert!(
                    head.ends_with(&format!("content-length: {}", body.len())),
                    "{head}"
                );
                for line in body.lines() {
                    let signature: serde_json::Value = serde_json::from_str(line).unwrap();
                    let expected = countries.place(7, 3, number);
                    assert_eq!(signature["email"], format!("lt7.3.{number}@example.org"));
                    let field = |name: &str| signature.get(name).and_then(|v| v.as_str());
                    assert_eq!(field("country"), expected.map(|p| p.country), "{line}");
                    assert_eq!(
                        field("region").map(str::to_owned),
                        expected.and_then(|p| p.region).map(|r| format!("R{r}")),
                        "{line}"
                    );
                    kinds.insert((
                        field("country").map(str::to_owned),
                        field("region").is_some(),
                    ));
                    number += 1;
                }
            }
            assert_eq!(number, 300);
            // GB with a region, FR without, and no country at all (no "country":"GB" default).
            assert_eq!(
                kinds.into_iter().collect::<Vec<_>>(),
                [
                    (None, false),
                    (Some("FR".to_owned()), false),
                    (Some("GB".to_owned()), true)
                ]
            );
        }
    }

    #[test]
    fn with_ips_each_signature_carries_its_signers_address_last() {
        let ips = Ips::new(50, Some((2, 0.3))).unwrap();
        for endpoint in [Endpoint::Single, Endpoint::Batch(400)] {
            let mut plan = signing_plan(endpoint);
            plan.ips = Some(ips);
            plan.countries = Some(Countries::parse("FR:0.5:3").unwrap());
            let mut groups = std::collections::BTreeMap::new();
            let mut number = 0u64;
            for request in requests(&plan, 400 / u64::from(endpoint.size())) {
                let (head, body) = request.split_once("\r\n\r\n").unwrap();
                assert!(
                    head.ends_with(&format!("content-length: {}", body.len())),
                    "{head}"
                );
                for line in body.lines() {
                    let signature: serde_json::Value = serde_json::from_str(line).unwrap();
                    let source = ips.source(7, 3, number);
                    assert_eq!(signature["email"], format!("lt7.3.{number}@example.org"));
                    assert_eq!(signature["ip"], source.address().to_string(), "{line}");
                    // The address comes after everything else, the country included.
                    assert!(
                        line.ends_with(&format!(",\"ip\":\"{}\"}}", source.address())),
                        "{line}"
                    );
                    *groups.entry(source.group).or_insert(0u32) += 1;
                    number += 1;
                }
            }
            assert_eq!(number, 400);
            assert_eq!(groups.len(), 2, "both groups among 400 signers: {groups:?}");
        }
        // Without --ips not one byte changes (signature_requests_are_byte_for_byte_what_they_were
        // pins the bytes): no signature carries an address.
        let plain = requests(&signing_plan(Endpoint::Batch(50)), 1);
        assert!(!plain[0].contains("\"ip\""), "{}", plain[0]);
    }

    #[test]
    fn slots_not_taken_counts_the_slots_due_within_the_duration() {
        let second = Duration::from_secs(1);
        let every = |interval_ns| Schedule::Constant { interval_ns };
        // 4 per second for 1 s: slots at 0, 250, 500 and 750 ms.
        assert_eq!(slots_not_taken(0, &every(250e6), second), 4);
        assert_eq!(slots_not_taken(3, &every(250e6), second), 1);
        // Taking past the end (the calls that found the run over) is not negative.
        assert_eq!(slots_not_taken(9, &every(250e6), second), 0);
        // 3 per second: 0, 333 and 666 ms; a fourth at 999.99 ms would also be due.
        assert_eq!(slots_not_taken(0, &every(1e9 / 3.0), second), 3);
        assert_eq!(slots_not_taken(0, &every(333_333_333.0), second), 4);
        // Stopped at 600 ms with 2 taken: the slot at 500 ms was due and not sent; the one at
        // 750 ms never came due.
        let stopped = Duration::from_millis(600);
        assert_eq!(slots_not_taken(2, &every(250e6), stopped), 1);
        // An absurd rate does not overflow.
        assert_eq!(slots_not_taken(0, &every(1e-30), second), u64::MAX);
    }
}
