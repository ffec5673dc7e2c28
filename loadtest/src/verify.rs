//! `loadtest verify`: prove from a ledger that every acknowledged signature is counted, once.
//!
//! For each petition in the ledger, with A = signers the server acknowledged (accepted or
//! duplicate) and I = signers with only indeterminate answers (timeout, reset, 5xx):
//! `|A| <= count <= |A| + |I|`. Besides, no signer may have been accepted twice (its first
//! acceptance was lost, or it was counted twice),
//! and no signer may have been told duplicate without ever being accepted or possibly accepted
//! (a false duplicate). Then a sample of acknowledged signers is re-sent: each must come back
//! duplicate; an `accepted` means the server had lost it.
//!
//! The ledger must cover every signature sent to its petitions (which `run` guarantees for its own
//! `lt-<seed>-*` petitions).

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
use crate::client::{self, Client};
use crate::ledger;
use crate::outcome::{self, LedgerClass};

const ACCEPTED: u8 = 1;
const ACCEPTED_TWICE: u8 = 2;
const DUPLICATE: u8 = 4;
const INDETERMINATE: u8 = 8;
const FAILED: u8 = 16;

/// Attempts per request when the server answers 429/503 or not at all.
const ATTEMPTS_MAX: u32 = 5;

/// Problems of one kind printed in full; the rest are counted.
pub const PROBLEMS_SHOWN_MAX: usize = 20;

/// What the ledger says about one petition.
#[derive(Debug, Default)]
struct PetitionLedger {
    /// Flags per signer, keyed by a 64-bit hash of the canonical email (a collision among a
    /// billion signers has odds of about 1 in 36 million, and could only hide a problem).
    signers: HashMap<u64, u8>,
    /// One signer accepted more than once, for the message.
    accepted_twice_example: Option<String>,
}

/// The ledger boiled down, plus a sample of acknowledged signers to re-send.
#[derive(Debug, Default)]
struct LedgerSummary {
    petitions: BTreeMap<String, PetitionLedger>,
    entries: u64,
    sample: Vec<(String, String)>,
}

/// What `verify` found.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Lines read from the ledger.
    pub entries: u64,
    /// Petitions checked.
    pub petitions: usize,
    /// Distinct signers acknowledged, over all petitions.
    pub acknowledged: u64,
    /// Distinct signers with only indeterminate answers.
    pub indeterminate: u64,
    /// Sum of the server's counts.
    pub counted: u64,
    /// Acknowledged signers re-sent.
    pub resent: usize,
    /// Everything wrong, one sentence each; empty means the check passed.
    pub problems: Vec<String>,
}

impl Verdict {
    /// True when nothing is wrong.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// A human summary: one line when it passed, the problems (at most [`PROBLEMS_SHOWN_MAX`])
    /// when not.
    pub fn render(&self) -> String {
        let mut out = format!(
            "verify: {} ledger lines, {} petitions, {} acknowledged signers, {} indeterminate, \
             server counts {} in all, {} acknowledged signers re-sent\n",
            self.entries,
            self.petitions,
            self.acknowledged,
            self.indeterminate,
            self.counted,
            self.resent
        );
        if self.passed() {
            out.push_str(
                "verify: PASS: every acknowledged signature is counted, none twice, \
                 re-sends come back duplicate\n",
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
        let flags = petition.signers.entry(signer_key(entry.email)).or_default();
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
        }
        if matches!(entry.class, LedgerClass::Accepted | LedgerClass::Duplicate) {
            // Reservoir sampling: every acknowledged line is equally likely to be re-sent.
            acknowledged_seen += 1;
            if summary.sample.len() < sample_size {
                summary
                    .sample
                    .push((entry.petition.to_owned(), entry.email.to_owned()));
            } else {
                let slot = rng.random_range(0..acknowledged_seen);
                if let Some(kept) = summary.sample.get_mut(slot as usize) {
                    *kept = (entry.petition.to_owned(), entry.email.to_owned());
                }
            }
        }
    })?;
    Ok(summary)
}

#[derive(Deserialize)]
struct PetitionBody {
    count: u64,
}

/// Reads one petition's count; `None` if the server does not know the petition (404).
async fn read_count(client: &mut Client, id: &str) -> Result<Option<u64>> {
    let path = format!("/v1/petitions/{id}");
    let mut last_error = None;
    for attempt in 0..ATTEMPTS_MAX {
        match client
            .request(Method::GET, &path, None, "application/json", Bytes::new())
            .await
        {
            Ok(answer) if answer.status == StatusCode::OK => {
                let body: PetitionBody = serde_json::from_slice(&answer.body)
                    .with_context(|| format!("GET {path}: body without a count"))?;
                return Ok(Some(body.count));
            }
            Ok(answer) if answer.status == StatusCode::NOT_FOUND => return Ok(None),
            Ok(answer) => {
                last_error = Some(format!(
                    "answered {} {}",
                    answer.status.as_u16(),
                    outcome::error_code(answer.status, &answer.body)
                ));
                backoff(attempt, answer.retry_after).await;
            }
            Err(error) => {
                last_error = Some(format!("{error:#}"));
                backoff(attempt, None).await;
            }
        }
    }
    anyhow::bail!(
        "GET {path}: {}",
        last_error.unwrap_or_else(|| "no answer".to_owned())
    )
}

async fn backoff(attempt: u32, retry_after: Option<Duration>) {
    let wait = retry_after.unwrap_or(Duration::from_millis(100 << attempt));
    tokio::time::sleep(wait.min(Duration::from_secs(2))).await;
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
    let body = Bytes::from(body);
    let mut last_error = None;
    for attempt in 0..ATTEMPTS_MAX {
        match client
            .request(
                Method::POST,
                &path,
                Some(key),
                "application/json",
                body.clone(),
            )
            .await
        {
            Ok(answer) => match outcome::classify_single(answer.status, &answer.body) {
                outcome::Outcome::Duplicate => return Ok(None),
                outcome::Outcome::Accepted => {
                    return Ok(Some(format!(
                        "lost: petition {petition}: acknowledged signer {email} was accepted \
                         again when re-sent (the server had lost it)"
                    )))
                }
                outcome::Outcome::RateLimited | outcome::Outcome::Unavailable(_) => {
                    last_error = Some(format!("answered {}", answer.status.as_u16()));
                    backoff(attempt, answer.retry_after).await;
                }
                other => {
                    return Ok(Some(format!(
                        "re-send: petition {petition}: acknowledged signer {email} got \
                         {other:?} ({}) instead of duplicate",
                        answer.status.as_u16()
                    )))
                }
            },
            Err(error) => {
                last_error = Some(format!("{error:#}"));
                backoff(attempt, None).await;
            }
        }
    }
    Ok(Some(format!(
        "re-send: petition {petition}: signer {email} could not be checked: {}",
        last_error.unwrap_or_else(|| "no answer".to_owned())
    )))
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
    Fut: std::future::Future<Output = (Client, Result<Option<String>>)> + Send + 'static,
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
                if let Some(problem) = result? {
                    problems.push((index, problem));
                }
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
    struct Expected {
        id: String,
        acknowledged: u64,
        indeterminate: u64,
    }
    let mut expected = Vec::with_capacity(summary.petitions.len());
    for (id, petition) in &summary.petitions {
        let acknowledged = petition
            .signers
            .values()
            .filter(|&&f| f & (ACCEPTED | DUPLICATE) != 0)
            .count() as u64;
        let indeterminate = petition
            .signers
            .values()
            .filter(|&&f| f & (ACCEPTED | DUPLICATE) == 0 && f & INDETERMINATE != 0)
            .count() as u64;
        verdict.acknowledged += acknowledged;
        verdict.indeterminate += indeterminate;
        let twice = petition
            .signers
            .values()
            .filter(|&&f| f & ACCEPTED_TWICE != 0)
            .count();
        if let Some(example) = &petition.accepted_twice_example {
            verdict.problems.push(format!(
                "accepted twice: petition {id}: {twice} signers were accepted more than once, \
                 so an acknowledged signature was lost or counted twice (e.g. {example})"
            ));
        }
        // A duplicate answer is only honest if the signer was accepted (or may have been) at
        // some point; order does not matter, since concurrent sends complete in any order.
        let falses = petition
            .signers
            .values()
            .filter(|&&f| f & DUPLICATE != 0 && f & (ACCEPTED | INDETERMINATE) == 0)
            .count();
        if falses > 0 {
            verdict.problems.push(format!(
                "false duplicate: petition {id}: {falses} signers were told duplicate but never \
                 accepted"
            ));
        }
        expected.push(Expected {
            id: id.clone(),
            acknowledged,
            indeterminate,
        });
    }

    let expected = Arc::new(expected);
    let counts = Arc::new(std::sync::Mutex::new(vec![0u64; expected.len()]));
    let problems = {
        let expected = Arc::clone(&expected);
        let counts = Arc::clone(&counts);
        fan_out(
            &args.target,
            args.timeout,
            args.connections,
            expected.len(),
            move |mut client, index| {
                let expected = Arc::clone(&expected);
                let counts = Arc::clone(&counts);
                async move {
                    let e = &expected[index];
                    let problem = match read_count(&mut client, &e.id).await {
                        Err(error) => Some(format!("petition {}: could not read the count: {error:#}", e.id)),
                        Ok(None) if e.acknowledged > 0 => Some(format!(
                            "lost: petition {}: unknown to the server (404) but {} signers were acknowledged",
                            e.id, e.acknowledged
                        )),
                        Ok(None) => None,
                        Ok(Some(count)) => {
                            if let Ok(mut counts) = counts.lock() {
                                counts[index] = count;
                            }
                            if count < e.acknowledged {
                                Some(format!(
                                    "lost: petition {}: count {count} but {} signers were acknowledged ({} missing)",
                                    e.id, e.acknowledged, e.acknowledged - count
                                ))
                            } else if count > e.acknowledged + e.indeterminate {
                                Some(format!(
                                    "over-counted: petition {}: count {count} but at most {} signers could be counted ({} acknowledged + {} indeterminate)",
                                    e.id, e.acknowledged + e.indeterminate, e.acknowledged, e.indeterminate
                                ))
                            } else {
                                None
                            }
                        }
                    };
                    (client, Ok(problem))
                }
            },
        )
        .await?
    };
    verdict.counted = counts.lock().map(|c| c.iter().sum()).unwrap_or(0);
    verdict
        .problems
        .extend(problems.into_iter().map(|(_, p)| p));

    if let Some(key) = key {
        let sample = Arc::new(summary.sample);
        verdict.resent = sample.len();
        let problems = fan_out(
            &args.target,
            args.timeout,
            args.connections,
            sample.len(),
            move |mut client, index| {
                let sample = Arc::clone(&sample);
                let key = key.clone();
                async move {
                    let (petition, email) = &sample[index];
                    let result = resend(&mut client, &key, petition, email).await;
                    (client, result)
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
        assert_eq!(p.signers[&signer_key("a@x")], ACCEPTED | DUPLICATE);
        assert_eq!(p.accepted_twice_example.as_deref(), Some("d@x"));
        assert_eq!(
            summary.petitions["q"].signers[&signer_key("e@x")],
            DUPLICATE
        );
        assert_eq!(summary.sample.len(), 5);
    }
}
