//! `loadtest verify`: prove from a ledger that every acknowledged signature is counted, once.
//!
//! For each petition in the ledger, with A = signers the server counted by its own answers
//! (`accepted`, `duplicate`, `validated` or `already_validated`) and I = signers it may have
//! counted without the ledger knowing (an `indeterminate` answer to the signature on a petition
//! without validation, or a `validation_indeterminate` answer): `|A| <= count <= |A| + |I|`,
//! so `count == |A|` when no answer was in doubt. Besides: no signer accepted or validated twice
//! (one of the two was lost, or counted twice), no `duplicate` or `already_validated` without an
//! earlier acceptance or validation, or one in doubt (a false one), one token per pending signer,
//! and, when the server reports `pending_count`, that it lies between the signers that must
//! still be pending and those that may be (`expect` computes both bounds; the README says why
//! they are what they are). Then a sample of acknowledged signers is re-sent: each must come
//! back duplicate (an `accepted`, or `pending` for a validated signer, means the server had lost
//! it), and a validated signer's token re-validated must come back `already_validated`.
//!
//! With each count, the petition's breakdown by country is read
//! (`GET /v1/petitions/{id}/countries`) and its countries must add up to the count that came
//! with them (`countries: …`); the server reads both at one instant, so they must agree exactly.
//!
//! A petition is taken to have email validation when its ledger lines include any of the
//! lifecycle classes (pending and the validations); on such a petition a signature answered
//! `indeterminate` can at most be pending, never counted, since its token was never seen.
//!
//! The ledger must cover every signature sent to its petitions (which `run` guarantees for its own
//! `lt-<seed>-*` petitions). A v1 ledger (no lifecycle lines) is checked exactly as before.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use crate::cli::{Target, VerifyArgs};
use crate::client::{self, backoff, Client, ATTEMPTS_MAX};
use crate::countries::{self, Breakdown};
use crate::ledger::{self, Entry};
use crate::outcome::{self, LedgerClass, Outcome};
use crate::token::{self, Token};

// What the ledger says about one signer, as bit flags.
const ACCEPTED: u16 = 1;
const ACCEPTED_TWICE: u16 = 1 << 1;
const DUPLICATE: u16 = 1 << 2;
const INDETERMINATE: u16 = 1 << 3;
const FAILED: u16 = 1 << 4;
const PENDING: u16 = 1 << 5;
const VALIDATED: u16 = 1 << 6;
const VALIDATED_TWICE: u16 = 1 << 7;
const ALREADY_VALIDATED: u16 = 1 << 8;
const VALIDATION_FAILED: u16 = 1 << 9;
/// A validation refused with a code after which the signer is no longer pending
/// ([`ENDS_PENDING`]).
const VALIDATION_ENDED: u16 = 1 << 10;
const VALIDATION_INDETERMINATE: u16 = 1 << 11;
/// `Signer::token_fingerprint` holds the fingerprint of the signer's token.
const HAS_TOKEN: u16 = 1 << 12;
const TOKEN_CHANGED: u16 = 1 << 13;

/// Counted by the server's own answer.
const COUNTED: u16 = ACCEPTED | DUPLICATE | VALIDATED | ALREADY_VALIDATED;

/// Validation error codes after which the signer is not pending any more (the token expired,
/// the signature was invalidated, or the petition closed). Other refusals (`unknown_token`,
/// `malformed_token`, 429) leave it pending, as far as the server's contract goes.
const ENDS_PENDING: [&str; 3] = ["token_expired", "invalidated", "petition_closed"];

/// How far verify's clock and the server's may disagree: a token whose `expires_at` is less than
/// this far ahead of verify's clock may have expired on the server.
pub const CLOCK_SKEW_MAX: Duration = Duration::from_secs(60);

/// Problems of one kind printed in full; the rest are counted.
pub const PROBLEMS_SHOWN_MAX: usize = 20;

/// What the ledger says about one signer, in 8 bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Signer {
    /// The flags above.
    flags: u16,
    /// [`Token::fingerprint`] of the first token seen for the signer (if `HAS_TOKEN`).
    token_fingerprint: u16,
    /// The latest expiry a pending answer gave the signer's token, in Unix seconds clamped to
    /// `u32` (0: none).
    expires_unix_s: u32,
}

/// What the ledger says about one petition.
#[derive(Debug, Default)]
struct PetitionLedger {
    /// Per signer, keyed by a 64-bit hash of the canonical email (a collision among a billion
    /// signers has odds of about 1 in 36 million, and could only hide a problem).
    signers: HashMap<u64, Signer>,
    /// The ledger has lifecycle lines for this petition: it validates by email.
    lifecycle: bool,
    /// One signer accepted more than once, for the message.
    accepted_twice_example: Option<String>,
    /// One signer validated more than once, for the message.
    validated_twice_example: Option<String>,
    /// One signer given two different tokens, for the message.
    token_changed_example: Option<String>,
}

/// One acknowledged signer to re-send, with its token if it was validated.
#[derive(Debug, Clone)]
struct Sampled {
    petition: String,
    email: String,
    /// Re-validated too (expected `already_validated`), unless it may have expired by now.
    token: Option<Token>,
    signer: u64,
}

/// The ledger boiled down, plus a sample of acknowledged signers to re-send.
#[derive(Debug, Default)]
struct LedgerSummary {
    petitions: BTreeMap<String, PetitionLedger>,
    entries: u64,
    sample: Vec<Sampled>,
}

/// What `verify` found.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Lines read from the ledger.
    pub entries: u64,
    /// Petitions checked.
    pub petitions: usize,
    /// Distinct signers acknowledged (counted by the server's own answer), over all petitions.
    pub acknowledged: u64,
    /// Distinct signers the server may have counted without the ledger knowing.
    pub indeterminate: u64,
    /// Of `acknowledged`, signers validated (`validated` or `already_validated`).
    pub validated: u64,
    /// Signers answered pending and never validated.
    pub pending_signers: u64,
    /// Of those, signers whose token may have expired by now (they do not bind `pending_count`
    /// from below).
    pub possibly_expired: u64,
    /// Sum of the server's counts.
    pub counted: u64,
    /// Sum of the server's `pending_count`s (of the petitions that report one).
    pub pending_counted: u64,
    /// Sum of the server's `invalidated_count`s.
    pub invalidated_counted: u64,
    /// Petitions whose breakdown by country was read (and checked against its count).
    pub countries_checked: usize,
    /// Acknowledged signers re-sent.
    pub resent: usize,
    /// Validated signers whose token was re-validated.
    pub revalidated: usize,
    /// Everything wrong, one sentence each; empty means the check passed.
    pub problems: Vec<String>,
}

impl Verdict {
    /// True when nothing is wrong.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// A human summary: one line when it passed (two with validations), the problems (at most
    /// [`PROBLEMS_SHOWN_MAX`]) when not.
    pub fn render(&self) -> String {
        let mut out = format!(
            "verify: {} ledger lines, {} petitions, {} acknowledged signers, {} indeterminate, \
             server counts {} in all, {} breakdowns by country read, {} acknowledged signers \
             re-sent\n",
            self.entries,
            self.petitions,
            self.acknowledged,
            self.indeterminate,
            self.counted,
            self.countries_checked,
            self.resent
        );
        if self.validated + self.pending_signers + self.pending_counted > 0 {
            out.push_str(&format!(
                "verify: {} signers validated, {} pending and never validated ({} of them may \
                 have expired), server pending {} and invalidated {} in all, {} tokens \
                 re-validated\n",
                self.validated,
                self.pending_signers,
                self.possibly_expired,
                self.pending_counted,
                self.invalidated_counted,
                self.revalidated
            ));
        }
        if self.passed() {
            out.push_str(
                "verify: PASS: every acknowledged signature is counted, none twice, \
                 re-sends come back duplicate, countries add up to the counts\n",
            );
            return out;
        }
        for problem in self.problems.iter().take(PROBLEMS_SHOWN_MAX) {
            out.push_str("  ");
            out.push_str(problem);
            out.push('\n');
        }
        if self.problems.len() > PROBLEMS_SHOWN_MAX {
            out.push_str(&format!(
                "  ... and {} more\n",
                self.problems.len() - PROBLEMS_SHOWN_MAX
            ));
        }
        out.push_str(&format!("verify: FAIL: {} problems\n", self.problems.len()));
        out
    }
}

fn signer_key(email: &str) -> u64 {
    // The server's signer identity is the trimmed, lower-cased email.
    let mut hasher = DefaultHasher::new();
    email.trim().to_lowercase().hash(&mut hasher);
    hasher.finish()
}

/// Clamps Unix seconds into [`Signer::expires_unix_s`] (0 stays "none": an expiry at or before
/// 1970 is 1, long past either way).
fn clamp_expiry(unix_s: i64) -> u32 {
    u32::try_from(unix_s.max(1)).unwrap_or(u32::MAX)
}

/// Folds one ledger line into its petition's signer.
fn record(petition: &mut PetitionLedger, entry: &Entry<'_>) {
    let signer = petition.signers.entry(signer_key(entry.email)).or_default();
    let flags = &mut signer.flags;
    match entry.class {
        LedgerClass::Accepted => {
            if *flags & ACCEPTED != 0 {
                *flags |= ACCEPTED_TWICE;
                petition
                    .accepted_twice_example
                    .get_or_insert_with(|| entry.email.to_owned());
            }
            *flags |= ACCEPTED;
        }
        LedgerClass::Duplicate => *flags |= DUPLICATE,
        LedgerClass::Indeterminate => *flags |= INDETERMINATE,
        LedgerClass::Failed => *flags |= FAILED,
        LedgerClass::Pending => {
            *flags |= PENDING;
            if let Some(expires) = entry.expires_unix_s {
                signer.expires_unix_s = signer.expires_unix_s.max(clamp_expiry(expires));
            }
        }
        LedgerClass::Validated => {
            if *flags & VALIDATED != 0 {
                *flags |= VALIDATED_TWICE;
                petition
                    .validated_twice_example
                    .get_or_insert_with(|| entry.email.to_owned());
            }
            *flags |= VALIDATED;
        }
        LedgerClass::AlreadyValidated => *flags |= ALREADY_VALIDATED,
        LedgerClass::ValidationFailed => {
            *flags |= VALIDATION_FAILED;
            if ENDS_PENDING.contains(&entry.detail) {
                *flags |= VALIDATION_ENDED;
            }
        }
        LedgerClass::ValidationIndeterminate => *flags |= VALIDATION_INDETERMINATE,
    }
    if let Some(token) = &entry.token {
        petition.lifecycle = true;
        let fingerprint = token.fingerprint();
        if signer.flags & HAS_TOKEN == 0 {
            signer.flags |= HAS_TOKEN;
            signer.token_fingerprint = fingerprint;
        } else if signer.token_fingerprint != fingerprint {
            signer.flags |= TOKEN_CHANGED;
            petition
                .token_changed_example
                .get_or_insert_with(|| entry.email.to_owned());
        }
    }
}

fn summarize(path: &Path, sample_size: usize, seed: u64) -> Result<LedgerSummary> {
    let mut summary = LedgerSummary::default();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut acknowledged_seen = 0u64;
    summary.entries = ledger::read(path, |entry| {
        let petition = match summary.petitions.get_mut(entry.petition) {
            Some(petition) => petition,
            None => summary
                .petitions
                .entry(entry.petition.to_owned())
                .or_default(),
        };
        record(petition, &entry);
        if matches!(
            entry.class,
            LedgerClass::Accepted
                | LedgerClass::Duplicate
                | LedgerClass::Validated
                | LedgerClass::AlreadyValidated
        ) {
            // Reservoir sampling: every acknowledged line is equally likely to be re-sent.
            acknowledged_seen += 1;
            let sampled = || Sampled {
                petition: entry.petition.to_owned(),
                email: entry.email.to_owned(),
                token: entry.token,
                signer: signer_key(entry.email),
            };
            if summary.sample.len() < sample_size {
                summary.sample.push(sampled());
            } else {
                let slot = rng.random_range(0..acknowledged_seen);
                if let Some(kept) = summary.sample.get_mut(slot as usize) {
                    *kept = sampled();
                }
            }
        }
    })?;
    // A validated token is re-validated only while it cannot have expired: after its expiry
    // the server may answer `token_expired` or forget it, which proves nothing.
    let horizon = token::now_unix_s() + CLOCK_SKEW_MAX.as_secs() as i64;
    for sampled in &mut summary.sample {
        let expires = summary
            .petitions
            .get(&sampled.petition)
            .and_then(|p| p.signers.get(&sampled.signer))
            .map_or(0, |s| i64::from(s.expires_unix_s));
        if expires <= horizon {
            sampled.token = None;
        }
    }
    Ok(summary)
}

/// What one petition must show, from the ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Expected {
    id: String,
    /// |A|: the count's lower bound.
    acknowledged: u64,
    /// |I|: the count may exceed |A| by this much.
    indeterminate: u64,
    /// Signers validated (part of `acknowledged`).
    validated: u64,
    /// Signers answered pending and not counted.
    pending_signers: u64,
    /// `pending_count`'s lower bound.
    pending_min: u64,
    /// `pending_count`'s upper bound.
    pending_max: u64,
    /// Pending signers left out of `pending_min` because their token may have expired.
    possibly_expired: u64,
    /// The earliest expiry of the signers `pending_min` counts (Unix seconds): once verify's
    /// clock comes within [`CLOCK_SKEW_MAX`] of it, the bound no longer holds.
    pending_min_valid_until: Option<i64>,
}

/// The bounds one petition's ledger sets, `horizon` being the last instant (Unix seconds) at
/// which a token could have expired by now, clocks' skew included.
fn expect(id: &str, petition: &PetitionLedger, horizon: i64) -> Expected {
    // Without validation an indeterminate signature may have been counted; with it, it can at
    // most be pending (its token was never seen, so nothing validated it).
    let may_count = if petition.lifecycle {
        VALIDATION_INDETERMINATE
    } else {
        INDETERMINATE | VALIDATION_INDETERMINATE
    };
    let mut e = Expected {
        id: id.to_owned(),
        ..Expected::default()
    };
    for signer in petition.signers.values() {
        let f = signer.flags;
        if f & COUNTED != 0 {
            e.acknowledged += 1;
            if f & (VALIDATED | ALREADY_VALIDATED) != 0 {
                e.validated += 1;
            }
            continue;
        }
        if f & may_count != 0 {
            e.indeterminate += 1;
        }
        if f & (PENDING | INDETERMINATE) != 0 {
            e.pending_max += 1;
        }
        if f & PENDING == 0 {
            continue;
        }
        e.pending_signers += 1;
        if f & (VALIDATION_INDETERMINATE | VALIDATION_ENDED) != 0 {
            continue;
        }
        let expires = i64::from(signer.expires_unix_s);
        if expires > horizon {
            e.pending_min += 1;
            e.pending_min_valid_until = Some(
                e.pending_min_valid_until
                    .map_or(expires, |t| t.min(expires)),
            );
        } else {
            e.possibly_expired += 1;
        }
    }
    e
}

/// The problems of one petition that its ledger alone shows.
fn ledger_problems(id: &str, petition: &PetitionLedger, problems: &mut Vec<String>) {
    let count =
        |test: &dyn Fn(u16) -> bool| petition.signers.values().filter(|s| test(s.flags)).count();
    if let Some(example) = &petition.accepted_twice_example {
        let twice = count(&|f| f & ACCEPTED_TWICE != 0);
        problems.push(format!(
            "accepted twice: petition {id}: {twice} signers were accepted more than once, \
             so an acknowledged signature was lost or counted twice (e.g. {example})"
        ));
    }
    if let Some(example) = &petition.validated_twice_example {
        let twice = count(&|f| f & VALIDATED_TWICE != 0);
        problems.push(format!(
            "validated twice: petition {id}: {twice} signers were answered validated more than \
             once, so a validation was lost or counted twice (e.g. {example})"
        ));
    }
    // A duplicate answer is only honest if the signer was counted (or may have been) at some
    // point; order does not matter, since concurrent sends complete in any order.
    let falses = count(&|f| {
        f & DUPLICATE != 0
            && f & (ACCEPTED
                | INDETERMINATE
                | VALIDATED
                | ALREADY_VALIDATED
                | VALIDATION_INDETERMINATE)
                == 0
    });
    if falses > 0 {
        problems.push(format!(
            "false duplicate: petition {id}: {falses} signers were told duplicate but never \
             accepted or validated"
        ));
    }
    let falses =
        count(&|f| f & ALREADY_VALIDATED != 0 && f & (VALIDATED | VALIDATION_INDETERMINATE) == 0);
    if falses > 0 {
        problems.push(format!(
            "false already_validated: petition {id}: {falses} signers' tokens were answered \
             already_validated but never validated before"
        ));
    }
    if let Some(example) = &petition.token_changed_example {
        let changed = count(&|f| f & TOKEN_CHANGED != 0);
        problems.push(format!(
            "token changed: petition {id}: {changed} pending signers were given more than one \
             token (e.g. {example})"
        ));
    }
}

/// A petition as the server reports it.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
struct PetitionState {
    count: u64,
    /// Servers before the signature lifecycle do not report it.
    #[serde(default)]
    pending_count: Option<u64>,
    #[serde(default)]
    invalidated_count: Option<u64>,
}

/// The problems of one petition's counts, as read at `read_unix_s`.
fn count_problems(e: &Expected, state: &PetitionState, read_unix_s: i64) -> Vec<String> {
    let mut problems = Vec::new();
    let id = &e.id;
    let count = state.count;
    // Nothing in a load test invalidates signatures: if the server says some were, it says why
    // a count may be short.
    let invalidated_note = match state.invalidated_count {
        Some(n) if n > 0 => format!(
            " (the server reports {n} invalidated: loadtest never invalidates, so something \
             else did, which these bounds do not allow for)"
        ),
        _ => String::new(),
    };
    if count < e.acknowledged {
        problems.push(format!(
            "lost: petition {id}: count {count} but {} signers were acknowledged ({} missing){invalidated_note}",
            e.acknowledged,
            e.acknowledged - count
        ));
    } else if count > e.acknowledged + e.indeterminate {
        problems.push(format!(
            "over-counted: petition {id}: count {count} but at most {} signers could be counted ({} acknowledged + {} indeterminate)",
            e.acknowledged + e.indeterminate,
            e.acknowledged,
            e.indeterminate
        ));
    }
    let Some(pending) = state.pending_count else {
        return problems;
    };
    let skew = CLOCK_SKEW_MAX.as_secs() as i64;
    let lower_bound_holds = e
        .pending_min_valid_until
        .is_none_or(|until| read_unix_s + skew < until);
    if pending < e.pending_min && lower_bound_holds {
        problems.push(format!(
            "pending lost: petition {id}: pending_count {pending} but {} signers answered \
             pending are neither validated, refused for good, in doubt nor possibly expired \
             ({} missing){invalidated_note}",
            e.pending_min,
            e.pending_min - pending
        ));
    } else if pending > e.pending_max {
        problems.push(format!(
            "pending over-counted: petition {id}: pending_count {pending} but at most {} \
             signers can be pending (answered pending or indeterminate, and not counted)",
            e.pending_max
        ));
    }
    problems
}

/// The problem with a petition's breakdown by country, if its countries do not add up to the
/// count it came with.
fn breakdown_problem(id: &str, breakdown: &Breakdown) -> Option<String> {
    if breakdown.sums_to_count() {
        return None;
    }
    let (sum, count) = (breakdown.sum(), breakdown.count);
    let (difference, side) = if sum < count {
        (count - sum, "short of")
    } else {
        (sum - count, "over")
    };
    Some(format!(
        "countries: petition {id}: the countries add up to {sum} but the count that came with \
         them is {count} ({difference} {side} it, over {} countries)",
        breakdown.countries.len()
    ))
}

/// Reads one petition's count (and pending and invalidated counts, if the server has them);
/// `None` if the server does not know the petition (404).
async fn read_state(client: &mut Client, id: &str) -> Result<Option<PetitionState>> {
    client
        .get_json(&format!("/v1/petitions/{id}"), "a count")
        .await
}

/// Sends one request, retrying 429/503 and failures to answer; the outcome as `classify` reads
/// it, or the last reason it could not be had.
async fn send_retrying(
    client: &mut Client,
    key: &HeaderValue,
    path: &str,
    body: Bytes,
    classify: fn(StatusCode, &[u8]) -> Outcome,
) -> Result<(Outcome, u16), String> {
    let mut last_error = None;
    for attempt in 0..ATTEMPTS_MAX {
        match client
            .request(
                Method::POST,
                path,
                Some(key),
                "application/json",
                body.clone(),
            )
            .await
        {
            Ok(answer) => match classify(answer.status, &answer.body) {
                Outcome::RateLimited | Outcome::Unavailable(_) => {
                    last_error = Some(format!("answered {}", answer.status.as_u16()));
                    backoff(attempt, answer.retry_after).await;
                }
                other => return Ok((other, answer.status.as_u16())),
            },
            Err(error) => {
                last_error = Some(format!("{error:#}"));
                backoff(attempt, None).await;
            }
        }
    }
    Err(last_error.unwrap_or_else(|| "no answer".to_owned()))
}

/// Re-sends one acknowledged signer; `Ok(None)` when it came back duplicate, `Ok(Some(problem))`
/// when the server answered something else definite.
async fn resend(
    client: &mut Client,
    key: &HeaderValue,
    petition: &str,
    email: &str,
) -> Result<Option<String>> {
    let path = format!("/v1/petitions/{petition}/signatures");
    let body = serde_json::to_vec(&serde_json::json!({ "email": email }))
        .context("encoding a signature")?;
    Ok(
        match send_retrying(
            client,
            key,
            &path,
            Bytes::from(body),
            outcome::classify_single,
        )
        .await
        {
            Ok((Outcome::Duplicate, _)) => None,
            Ok((Outcome::Accepted, _)) => Some(format!(
                "lost: petition {petition}: acknowledged signer {email} was accepted \
                 again when re-sent (the server had lost it)"
            )),
            Ok((Outcome::Pending { .. }, _)) => Some(format!(
                "lost: petition {petition}: acknowledged signer {email} was answered pending \
                 when re-sent (the server had lost its validation)"
            )),
            Ok((other, status)) => Some(format!(
                "re-send: petition {petition}: acknowledged signer {email} got {} ({status}) \
                 instead of duplicate",
                other.describe()
            )),
            Err(reason) => Some(format!(
                "re-send: petition {petition}: signer {email} could not be checked: {reason}"
            )),
        },
    )
}

/// Re-validates a validated signer's token; `Ok(None)` when it came back `already_validated`.
async fn revalidate(
    client: &mut Client,
    key: &HeaderValue,
    petition: &str,
    email: &str,
    token: &Token,
) -> Result<Option<String>> {
    let body = serde_json::to_vec(&serde_json::json!({ "token": token.to_string() }))
        .context("encoding a validation")?;
    Ok(
        match send_retrying(
            client,
            key,
            "/v1/validations",
            Bytes::from(body),
            outcome::classify_validation,
        )
        .await
        {
            Ok((Outcome::AlreadyValidated, _)) => None,
            Ok((Outcome::Validated, _)) => Some(format!(
                "lost: petition {petition}: validated signer {email}'s token was validated \
                 again when re-sent (the server had lost the validation)"
            )),
            Ok((other, status)) => Some(format!(
                "re-validate: petition {petition}: validated signer {email}'s token got {} \
                 ({status}) instead of already_validated",
                other.describe()
            )),
            Err(reason) => Some(format!(
                "re-validate: petition {petition}: signer {email}'s token could not be checked: \
                 {reason}"
            )),
        },
    )
}

/// Runs `work(client, index)` for `0..count` over `connections` clients; collects the problems.
async fn fan_out<F, Fut>(
    target: &Target,
    timeout: Duration,
    connections: u32,
    count: usize,
    work: F,
) -> Result<Vec<(usize, String)>>
where
    F: Fn(Client, usize) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = (Client, Result<Vec<String>>)> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let next = Arc::clone(&next);
        let work = work.clone();
        let mut client = Client::new(target, timeout);
        tasks.spawn(async move {
            let mut problems = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return anyhow::Ok(problems);
                }
                let (returned, result) = work(client, index).await;
                client = returned;
                problems.extend(result?.into_iter().map(|problem| (index, problem)));
            }
        });
    }
    let mut problems = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        problems.extend(joined.context("a verify task panicked")??);
    }
    problems.sort();
    Ok(problems)
}

/// Checks the ledger against the server. `Err` only when the check itself could not be done
/// (unreadable ledger); everything wrong on the server side is a problem in the verdict.
pub async fn verify(args: &VerifyArgs) -> Result<Verdict> {
    let key = match (&args.api_key, args.no_resend) {
        (_, true) => None,
        (Some(key), false) => Some(client::bearer(key)?),
        (None, false) => anyhow::bail!("re-sending needs --api-key (or pass --no-resend)"),
    };
    let path = args.ledger.clone();
    let sample_size = if args.no_resend { 0 } else { args.sample };
    let seed = args.seed;
    let summary = tokio::task::spawn_blocking(move || summarize(&path, sample_size, seed))
        .await
        .context("the ledger reader panicked")??;

    let mut verdict = Verdict {
        entries: summary.entries,
        petitions: summary.petitions.len(),
        ..Verdict::default()
    };
    let horizon = token::now_unix_s() + CLOCK_SKEW_MAX.as_secs() as i64;
    let mut expected = Vec::with_capacity(summary.petitions.len());
    for (id, petition) in &summary.petitions {
        let e = expect(id, petition, horizon);
        verdict.acknowledged += e.acknowledged;
        verdict.indeterminate += e.indeterminate;
        verdict.validated += e.validated;
        verdict.pending_signers += e.pending_signers;
        verdict.possibly_expired += e.possibly_expired;
        ledger_problems(id, petition, &mut verdict.problems);
        expected.push(e);
    }

    let expected = Arc::new(expected);
    let states = Arc::new(std::sync::Mutex::new(vec![
        PetitionState::default();
        expected.len()
    ]));
    let breakdowns_read = Arc::new(AtomicUsize::new(0));
    let problems = {
        let expected = Arc::clone(&expected);
        let states = Arc::clone(&states);
        let breakdowns_read = Arc::clone(&breakdowns_read);
        fan_out(
            &args.target,
            args.timeout,
            args.connections,
            expected.len(),
            move |mut client, index| {
                let expected = Arc::clone(&expected);
                let states = Arc::clone(&states);
                let breakdowns_read = Arc::clone(&breakdowns_read);
                async move {
                    let e = &expected[index];
                    let read = read_state(&mut client, &e.id).await;
                    let found = matches!(read, Ok(Some(_)));
                    let mut problems = match read {
                        Err(error) => vec![format!(
                            "petition {}: could not read the count: {error:#}",
                            e.id
                        )],
                        Ok(None) if e.acknowledged > 0 => vec![format!(
                            "lost: petition {}: unknown to the server (404) but {} signers were acknowledged",
                            e.id, e.acknowledged
                        )],
                        Ok(None) => Vec::new(),
                        Ok(Some(state)) => {
                            if let Ok(mut states) = states.lock() {
                                states[index] = state;
                            }
                            count_problems(e, &state, token::now_unix_s())
                        }
                    };
                    if found {
                        match countries::fetch_breakdown(&mut client, &e.id).await {
                            Ok(breakdown) => {
                                breakdowns_read.fetch_add(1, Ordering::Relaxed);
                                problems.extend(breakdown_problem(&e.id, &breakdown));
                            }
                            Err(error) => problems.push(format!(
                                "countries: petition {}: could not read the breakdown by \
                                 country: {error:#}",
                                e.id
                            )),
                        }
                    }
                    (client, Ok(problems))
                }
            },
        )
        .await?
    };
    verdict.countries_checked = breakdowns_read.load(Ordering::Relaxed);
    if let Ok(states) = states.lock() {
        for state in states.iter() {
            verdict.counted += state.count;
            verdict.pending_counted += state.pending_count.unwrap_or(0);
            verdict.invalidated_counted += state.invalidated_count.unwrap_or(0);
        }
    }
    verdict
        .problems
        .extend(problems.into_iter().map(|(_, p)| p));

    if let Some(key) = key {
        let sample = Arc::new(summary.sample);
        verdict.resent = sample.len();
        verdict.revalidated = sample.iter().filter(|s| s.token.is_some()).count();
        let problems = fan_out(
            &args.target,
            args.timeout,
            args.connections,
            sample.len(),
            move |mut client, index| {
                let sample = Arc::clone(&sample);
                let key = key.clone();
                async move {
                    let s = &sample[index];
                    let mut problems = Vec::new();
                    let result = resend(&mut client, &key, &s.petition, &s.email).await;
                    match result {
                        Ok(problem) => problems.extend(problem),
                        Err(error) => return (client, Err(error)),
                    }
                    if let Some(token) = &s.token {
                        let result =
                            revalidate(&mut client, &key, &s.petition, &s.email, token).await;
                        match result {
                            Ok(problem) => problems.extend(problem),
                            Err(error) => return (client, Err(error)),
                        }
                    }
                    (client, Ok(problems))
                }
            },
        )
        .await?;
        verdict
            .problems
            .extend(problems.into_iter().map(|(_, p)| p));
    }
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn summary_of(lines: &str) -> LedgerSummary {
        let dir = std::env::temp_dir().join(format!(
            "lt-verify-test-{}-{}",
            std::process::id(),
            signer_key(lines)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.tsv");
        std::fs::write(&path, lines).unwrap();
        let summary = summarize(&path, 10, 1).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        summary
    }

    #[test]
    fn a_signer_takes_8_bytes() {
        // As the v1 verifier's u8 of flags did, in a map entry of 16 bytes.
        assert_eq!(std::mem::size_of::<Signer>(), 8);
        assert_eq!(std::mem::size_of::<(u64, Signer)>(), 16);
    }

    #[test]
    fn flags_per_signer() {
        let summary = summary_of(
            "# header\n\
             p\ta@x\taccepted\t-\n\
             p\tA@x \tduplicate\t-\n\
             p\tb@x\tindeterminate\ttimeout\n\
             p\tc@x\tfailed\trate_limited\n\
             p\td@x\taccepted\t-\n\
             p\td@x\taccepted\t-\n\
             q\te@x\tduplicate\t-\n",
        );
        assert_eq!(summary.entries, 7);
        let p = &summary.petitions["p"];
        assert_eq!(p.signers.len(), 4);
        assert_eq!(p.signers[&signer_key("a@x")].flags, ACCEPTED | DUPLICATE);
        assert_eq!(p.accepted_twice_example.as_deref(), Some("d@x"));
        assert!(!p.lifecycle);
        assert_eq!(
            summary.petitions["q"].signers[&signer_key("e@x")].flags,
            DUPLICATE
        );
        assert_eq!(summary.sample.len(), 5);
    }

    /// A token of 72 hex digits made of `n`.
    fn token(n: u8) -> String {
        format!("{n:02x}").repeat(Token::BYTES)
    }

    /// Far in the future, and long past.
    const LATER: &str = "2999-01-01T00:00:00Z";
    const PAST: &str = "2001-01-01T00:00:00Z";

    /// `lines` are `email class [detail]`, all on petition `p`, a pending line's token expiring
    /// at `LATER` unless its detail is `expired` (then `PAST`); every signer has its own token.
    fn ledger(lines: &[&str]) -> String {
        let mut text = String::new();
        for line in lines {
            let words: Vec<&str> = line.split(' ').collect();
            let (email, class) = (words[0], words[1]);
            let detail = words.get(2).copied().unwrap_or("-");
            let n = email.as_bytes()[0];
            text.push_str(&format!("p\t{email}@x\t{class}\t"));
            match class {
                "pending" => {
                    let expires = if detail == "expired" { PAST } else { LATER };
                    text.push_str(&format!("-\t{}\t{expires}", token(n)));
                }
                "validated"
                | "already_validated"
                | "validation_failed"
                | "validation_indeterminate" => {
                    text.push_str(&format!("{detail}\t{}", token(n)));
                }
                _ => text.push_str(detail),
            }
            text.push('\n');
        }
        text
    }

    /// The bounds of petition `p` (count from `acknowledged` to `acknowledged + indeterminate`,
    /// `pending_count` from `pending_min` to `pending_max`).
    fn check(lines: &[&str], expected: [u64; 4]) {
        let summary = summary_of(&ledger(lines));
        let e = expect("p", &summary.petitions["p"], token::now_unix_s() + 60);
        assert_eq!(
            [
                e.acknowledged,
                e.indeterminate,
                e.pending_min,
                e.pending_max
            ],
            expected,
            "{lines:?}"
        );
    }

    #[test]
    fn bounds() {
        // Without validation, as before: an indeterminate signature may be counted (or pending,
        // for all verify knows of the petition).
        check(&["a accepted", "b indeterminate timeout"], [1, 1, 0, 1]);
        check(&["a accepted", "a duplicate", "c failed x"], [1, 0, 0, 0]);
        // With validation: pending signers bind pending_count from below until validated.
        check(&["a pending", "b pending", "c pending"], [0, 0, 3, 3]);
        check(&["a pending", "a validated", "b pending"], [1, 0, 1, 1]);
        check(
            &["a pending", "a validated", "a already_validated"],
            [1, 0, 0, 0],
        );
        // A validation in doubt: maybe counted, maybe still pending.
        check(
            &["a pending", "a validation_indeterminate timeout"],
            [0, 1, 0, 1],
        );
        // A signature in doubt on a validated petition is never counted (its token was never
        // seen), but it may be pending.
        check(&["a pending", "b indeterminate timeout"], [0, 0, 1, 2]);
        // Refused for good: no longer pending (but a lazy server may still count it so).
        check(
            &["a pending", "a validation_failed token_expired"],
            [0, 0, 0, 1],
        );
        check(
            &["a pending", "a validation_failed invalidated"],
            [0, 0, 0, 1],
        );
        // Refused but still pending by the contract: still binds.
        check(
            &["a pending", "a validation_failed unknown_token"],
            [0, 0, 1, 1],
        );
        check(
            &["a pending", "a validation_failed rate_limited"],
            [0, 0, 1, 1],
        );
        // A token that may have expired by now does not bind from below.
        check(&["a pending expired", "b pending"], [0, 0, 1, 2]);
        // Re-sent pending signers are one signer; a too_many_resubmissions refusal changes
        // nothing.
        check(
            &["a pending", "a pending", "a failed too_many_resubmissions"],
            [0, 0, 1, 1],
        );
    }

    #[test]
    fn refusals_of_the_abuse_controls_are_neither_lost_nor_in_doubt() {
        // Signers refused by the limits per address, a block list or a switch, beside one
        // accepted whose re-send was then limited (a duplicate counts toward the limits).
        let lines = [
            "a accepted",
            "a failed ip_rate_limited",
            "b failed ip_rate_limited",
            "c failed blocked",
            "d failed signing_paused",
            "e failed read_only",
        ];
        check(&lines, [1, 0, 0, 0]);
        let text = ledger(&lines);
        assert!(problems_of(&text).is_empty(), "{:?}", problems_of(&text));
        let summary = summary_of(&text);
        let e = expect("p", &summary.petitions["p"], token::now_unix_s() + 60);
        let state = |count| PetitionState {
            count,
            pending_count: Some(0),
            invalidated_count: Some(0),
        };
        // Counted exactly once: nothing lost, nothing over; counting a refused one is over.
        assert!(count_problems(&e, &state(1), 0).is_empty());
        let over = count_problems(&e, &state(2), 0);
        assert!(
            over.len() == 1 && over[0].starts_with("over-counted: petition p: count 2"),
            "{over:?}"
        );
        // Only the acknowledged signer is sampled for a re-send.
        let sampled: Vec<&str> = summary.sample.iter().map(|s| s.email.as_str()).collect();
        assert_eq!(sampled, ["a@x"]);
    }

    fn problems_of(lines: &str) -> Vec<String> {
        let summary = summary_of(lines);
        let mut problems = Vec::new();
        for (id, petition) in &summary.petitions {
            ledger_problems(id, petition, &mut problems);
        }
        problems
    }

    #[test]
    fn problems_in_the_ledger_alone() {
        let (t1, t2) = (token(1), token(2));
        let check = |lines: String, needle: Option<&str>| {
            let problems = problems_of(&lines);
            match needle {
                None => assert!(problems.is_empty(), "{lines}: {problems:?}"),
                Some(needle) => assert!(
                    problems.iter().any(|p| p.starts_with(needle)),
                    "{lines}: {problems:?}"
                ),
            }
        };
        check(
            format!("p\ta@x\tpending\t-\t{t1}\t{LATER}\np\ta@x\tvalidated\t-\t{t1}\n"),
            None,
        );
        check(
            format!("p\ta@x\tvalidated\t-\t{t1}\np\ta@x\tvalidated\t-\t{t1}\n"),
            Some("validated twice: petition p: 1 signers"),
        );
        check(
            format!("p\ta@x\tpending\t-\t{t1}\t{LATER}\np\ta@x\tduplicate\t-\n"),
            Some("false duplicate: petition p"),
        );
        check(
            format!("p\ta@x\tvalidated\t-\t{t1}\np\ta@x\tduplicate\t-\n"),
            None,
        );
        check(
            format!("p\ta@x\talready_validated\t-\t{t1}\n"),
            Some("false already_validated: petition p: 1 signers"),
        );
        check(
            format!(
                "p\ta@x\tvalidation_indeterminate\ttimeout\t{t1}\n\
                 p\ta@x\talready_validated\t-\t{t1}\n"
            ),
            None,
        );
        check(
            format!("p\ta@x\tpending\t-\t{t1}\t{LATER}\np\ta@x\tpending\t-\t{t2}\t{LATER}\n"),
            Some("token changed: petition p: 1 pending signers"),
        );
    }

    #[test]
    fn counts_against_the_bounds() {
        let e = Expected {
            id: "p".into(),
            acknowledged: 10,
            indeterminate: 2,
            pending_min: 5,
            pending_max: 7,
            pending_min_valid_until: Some(2_000_000_000),
            ..Expected::default()
        };
        let check = |count: u64, pending: Option<u64>, read: i64, needle: Option<&str>| {
            let state = PetitionState {
                count,
                pending_count: pending,
                invalidated_count: Some(0),
            };
            let problems = count_problems(&e, &state, read);
            match needle {
                None => assert!(problems.is_empty(), "{count} {pending:?}: {problems:?}"),
                Some(needle) => assert!(
                    problems.len() == 1 && problems[0].starts_with(needle),
                    "{count} {pending:?}: {problems:?}"
                ),
            }
        };
        let now = 1_900_000_000;
        check(10, Some(5), now, None);
        check(12, Some(7), now, None);
        check(9, Some(5), now, Some("lost: petition p: count 9 but 10"));
        check(13, Some(5), now, Some("over-counted: petition p: count 13"));
        check(
            10,
            Some(4),
            now,
            Some("pending lost: petition p: pending_count 4 but 5"),
        );
        check(
            10,
            Some(8),
            now,
            Some("pending over-counted: petition p: pending_count 8"),
        );
        // A server without pending_count: only the count is checked.
        check(10, None, now, None);
        // Read so late that a token counted as unexpired may have expired meanwhile: the lower
        // bound no longer holds (the upper one does).
        check(10, Some(4), 2_000_000_000 - 30, None);
        check(
            10,
            Some(8),
            2_000_000_000 - 30,
            Some("pending over-counted"),
        );
    }

    #[test]
    fn a_breakdown_must_add_up_to_its_count() {
        let breakdown = |count: u64, counts: &[u64]| Breakdown {
            count,
            countries: counts
                .iter()
                .zip(["GB", "ZZ", "FR"])
                .map(|(&count, code)| countries::CountryCount {
                    country: code.to_owned(),
                    count,
                })
                .collect(),
        };
        assert_eq!(breakdown_problem("p", &breakdown(10, &[7, 3])), None);
        assert_eq!(breakdown_problem("p", &breakdown(0, &[])), None);
        assert_eq!(
            breakdown_problem("p", &breakdown(10, &[7, 2])).unwrap(),
            "countries: petition p: the countries add up to 9 but the count that came with them \
             is 10 (1 short of it, over 2 countries)"
        );
        assert_eq!(
            breakdown_problem("q", &breakdown(10, &[7, 3, 5])).unwrap(),
            "countries: petition q: the countries add up to 15 but the count that came with them \
             is 10 (5 over it, over 3 countries)"
        );
        assert!(breakdown_problem("p", &breakdown(3, &[])).is_some());
    }

    #[test]
    fn the_sample_keeps_tokens_only_while_they_cannot_have_expired() {
        let (t1, t2) = (token(1), token(2));
        let summary = summary_of(&format!(
            "p\ta@x\tpending\t-\t{t1}\t{LATER}\n\
             p\ta@x\tvalidated\t-\t{t1}\n\
             p\tb@x\tpending\t-\t{t2}\t{PAST}\n\
             p\tb@x\tvalidated\t-\t{t2}\n\
             p\tc@x\taccepted\t-\n"
        ));
        let tokens: Vec<(&str, Option<String>)> = summary
            .sample
            .iter()
            .map(|s| (s.email.as_str(), s.token.map(|t| t.to_string())))
            .collect();
        assert_eq!(
            tokens,
            vec![("a@x", Some(t1)), ("b@x", None), ("c@x", None)]
        );
    }
}
