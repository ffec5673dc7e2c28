//! What travels between admission, the writer and the syncer: the job, its items, the caller
//! to answer, the answers and the channel they go back on.

use std::ops::Range;
use std::sync::Arc;

use crate::error::{StoreError, SubmitError, VerifyError};
use crate::event::NewEvent;
use crate::fingerprint::Fingerprint;
use crate::invalidation::{JobChange, Step, StepResult};
use crate::petition::{Petition, PetitionMeta};
use crate::place::Place;
use crate::token::Token;
use crate::verify::VerifyReport;
use crate::webhook::WebhookChange;

/// The answer to one signature (or validation) that the engine took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new signer: counted and durable. `count` is the petition's count including this one
    /// (this signer's ordinal).
    Accepted {
        /// The petition's count with this signature.
        count: u64,
    },
    /// This signer had already signed this petition (and is validated, or was invalidated).
    /// `count` is the petition's current count.
    Duplicate {
        /// The petition's count now.
        count: u64,
    },
    /// A signature to a petition that validates by email: stored, holding its signer's slot,
    /// not counted until `token` is validated. A pending signer who signs again gets the same
    /// token (and expiry) back, up to [`crate::RESUBMITS_MAX`] times.
    Pending {
        /// What validates it ([`crate::Engine::validate`]); [`Token::expires_at_ms`] says
        /// when it expires unvalidated.
        token: Token,
    },
    /// A token validated its pending signature: counted now. `count` is the petition's count
    /// including it.
    Validated {
        /// The petition's count with this signature.
        count: u64,
    },
    /// The token's signature was validated before.
    AlreadyValidated {
        /// The petition's count now.
        count: u64,
    },
}

impl Outcome {
    /// The petition's count carried by the outcome (`None` for a pending signature).
    pub fn count(self) -> Option<u64> {
        match self {
            Outcome::Accepted { count }
            | Outcome::Duplicate { count }
            | Outcome::Validated { count }
            | Outcome::AlreadyValidated { count } => Some(count),
            Outcome::Pending { .. } => None,
        }
    }
}

/// What one item asks of the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ItemKind {
    /// A signature whose signer the index did not hold (or held pending, `awaiting`).
    Sign,
    /// A signature to a petition that validates by email whose signer the index holds: the
    /// writer looks for its pending signature (same token back) or answers duplicate.
    Resubmit,
    /// A genuine token's validation of the signature `seq`, which expires at `expires_at_ms`
    /// (both from the token), at the place the token names (`None`: a version 1 token, whose
    /// place is read from the record).
    Validate {
        seq: u64,
        expires_at_ms: u64,
        place: Option<Place>,
    },
}

/// One signature on its way to the writer.
pub(crate) struct Item {
    /// Position in the caller's batch.
    pub index: usize,
    /// Which of its job's `petitions` it signs.
    pub petition: u32,
    pub fp: Fingerprint,
    /// Where its encoded signature record ([`crate::record::encode`]), built at admission, lies
    /// in its job's `records`.
    pub record: Range<usize>,
    /// True: the index already held this fingerprint as pending when it was admitted, so its
    /// answer waits for the original's write (duplicate if it lands, retry if it fails).
    pub awaiting: bool,
    pub kind: ItemKind,
    /// Its petition validated by email when it was admitted: a new signature is stored pending.
    pub by_email: bool,
    /// Its country and region (signatures).
    pub place: Place,
}

/// Answers by position in the caller's batch.
pub(crate) type Answers = Vec<(usize, Result<Outcome, SubmitError>)>;

/// Work for the writer.
pub(crate) enum Job {
    Sign(SignJob),
    /// Persist new or changed petitions (number, meta) and the events the change makes in one
    /// synced batch, then answer.
    Petitions(
        Vec<(u32, PetitionMeta)>,
        Vec<NewEvent>,
        std::sync::mpsc::SyncSender<Result<(), StoreError>>,
    ),
    /// Register, replace or delete a webhook, or move its cursor.
    Webhook(
        WebhookChange,
        std::sync::mpsc::SyncSender<Result<(), StoreError>>,
    ),
    /// Add or remove a list entry, set the switches, or pause or resume a petition: synced,
    /// then in effect.
    Guard(
        crate::guard::GuardChange,
        std::sync::mpsc::SyncSender<Result<(), StoreError>>,
    ),
    /// Sync everything written so far.
    Flush(std::sync::mpsc::SyncSender<Result<(), StoreError>>),
    /// Check the whole store (see `verify.rs`).
    Verify(std::sync::mpsc::SyncSender<Result<VerifyReport, VerifyError>>),
    /// One step of the expiry sweep: answers how many pending signatures expired and whether
    /// more may be due.
    Sweep(std::sync::mpsc::SyncSender<Result<(u64, bool), StoreError>>),
    /// One step of an invalidation job.
    Invalidate(Step, std::sync::mpsc::SyncSender<StepResult>),
    /// Create, cancel or fail an invalidation job.
    JobChange(JobChange),
    /// Finish every queued job, flush memtables, and stop.
    Shutdown(std::sync::mpsc::SyncSender<Result<(), StoreError>>),
}

/// Signatures of one call, admitted as pending, for the writer to write.
pub(crate) struct SignJob {
    pub items: Vec<Item>,
    /// Every petition the call resolved (items refer to them by position), each once: a hot
    /// petition's reference count is touched once per call, not once per signature on every
    /// core.
    pub petitions: Vec<Arc<Petition>>,
    /// The items' encoded records, back to back: one allocation per call.
    pub records: Vec<u8>,
    /// The engine's reconcile generation when the items were admitted.
    pub generation: u64,
    /// Source alerts its signers made (see `sources.rs`): written in the batch that writes
    /// them, so an alert exists exactly when the signatures that raised it do.
    pub alerts: Vec<NewEvent>,
    /// Who waits for the items, and the answers decided so far (the writer adds them as it
    /// resolves items; the job is answered once `items` is empty).
    pub caller: Caller,
}

/// A caller to answer once all its signatures are decided (and the accepted ones durable).
pub(crate) struct Caller {
    pub reply: Reply,
    pub answers: Answers,
    /// In-flight signatures it holds, released before it is answered.
    pub reserved: usize,
}

/// Where the answers of a submission go: a blocking caller waits on a std channel, an async
/// caller awaits a tokio oneshot (which needs no runtime to send).
pub(crate) enum Reply {
    Blocking(std::sync::mpsc::SyncSender<Answers>),
    Async(tokio::sync::oneshot::Sender<Answers>),
}

impl Reply {
    pub fn send(self, answers: Answers) {
        // A caller that gave up (dropped its future) no longer needs the answers.
        match self {
            Reply::Blocking(sender) => {
                let _ = sender.send(answers);
            }
            Reply::Async(sender) => {
                let _ = sender.send(answers);
            }
        }
    }
}

/// The receiving end of a [`Reply`], kept by the submitting call.
pub(crate) enum Waiting {
    Blocking(std::sync::mpsc::Receiver<Answers>),
    Async(tokio::sync::oneshot::Receiver<Answers>),
}

/// A reply channel and its receiving end: a tokio oneshot for an async caller, a std channel for
/// a blocking one.
pub(crate) fn reply_channel(async_reply: bool) -> (Reply, Waiting) {
    if async_reply {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        (Reply::Async(sender), Waiting::Async(receiver))
    } else {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        (Reply::Blocking(sender), Waiting::Blocking(receiver))
    }
}
