//! What became of one signature, validation (or plain GET), read from the server's answer.
//!
//! Two views: [`Outcome`] is the detailed one the report counts; [`LedgerClass`] is the one that
//! matters for durability: was the signature acknowledged (counted, or pending validation),
//! definitely refused, or can we not tell? Likewise for a validation.
//!
//! The load path sends every signature once and retries nothing: an answer is an outcome,
//! counted. Among the refusals, three kinds of answer are the server doing its job, and are
//! told apart from the rest:
//!
//! - 429 `ip_rate_limited` ([`Outcome::IpRateLimited`]; a batch line with that code too): the
//!   signer's address is over the server's limits per (petition, address). Final: counted, not
//!   acknowledged, `failed` in the ledger (the server took nothing), and not an error in the
//!   progress line. Distinct from the per-key 429 `rate_limited` ([`Outcome::RateLimited`]),
//!   which is handled as before.
//! - 403 `blocked` ([`Outcome::Blocked`]; a batch line too): a block list matches the signer.
//!   Final, in the same way.
//! - 503 `signing_paused` and `read_only` ([`SWITCH_CODES`]; batch lines too): an operator's
//!   switch. Counted as unavailable by code with the other 503s (and as errors in the progress
//!   line: no signature gets in while a switch is on), but `failed` in the ledger rather than
//!   `indeterminate`, since the server refuses these before it stores anything.

use hyper::StatusCode;
use serde::Deserialize;

use crate::token::{self, Token};

/// Error codes of the batch endpoint after which the line may be retried: the server did not
/// take the signature, but whether it reached the store cannot be ruled out.
pub const RETRYABLE_CODES: [&str; 4] = [
    "overloaded",
    "storage_unavailable",
    "recovering",
    "shutting_down",
];

/// The error code of a 429 that refuses a pending signer's resubmissions for good (it is not
/// a rate limit, and retrying does not help).
pub const TOO_MANY_RESUBMISSIONS: &str = "too_many_resubmissions";

/// The error code of a 429 (or batch line) that refuses a signature over the server's limits
/// per (petition, address).
pub const IP_RATE_LIMITED: &str = "ip_rate_limited";

/// The error code of a 403 (or batch line) that refuses a signature a block list matches.
pub const BLOCKED: &str = "blocked";

/// Error codes of a 503 (or batch line) that an operator's switch answers: the server refused
/// the signature (or validation) before storing anything.
pub const SWITCH_CODES: [&str; 2] = ["signing_paused", "read_only"];

/// What a request carried, and so which answers it may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// Signatures: accepted, duplicate or pending.
    Signatures,
    /// Validations (`POST /v1/validations`, batch lines `{"validate":...}`): validated or
    /// already validated.
    Validations,
}

/// The detailed outcome of one signature, validation or GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `201 accepted`: a new signer, counted.
    Accepted,
    /// `200 duplicate`: the signer was counted before.
    Duplicate,
    /// `202 pending` (an email-validated petition): a new signer, not counted until its token
    /// is validated; a pending signer signing again gets the same token.
    Pending {
        /// The token that validates it.
        token: Token,
        /// When the token expires, in Unix seconds (rounded down).
        expires_unix_s: i64,
    },
    /// `200 validated`: the validation counted the signer, now.
    Validated,
    /// `200 already_validated`: the token had been validated before.
    AlreadyValidated,
    /// `--get` mode: any 2xx.
    Ok,
    /// A 4xx other than a 429 `rate_limited`, a 429 `ip_rate_limited` and a 403 `blocked` (or
    /// a non-retryable batch line error), by error code; a 429 `too_many_resubmissions` is one.
    Rejected(String),
    /// 429 `rate_limited`, the per-key limit (any 429 but `too_many_resubmissions` and
    /// `ip_rate_limited`).
    RateLimited,
    /// 429 `ip_rate_limited` (or a batch line with that code): over the limits per (petition,
    /// address). A final refusal.
    IpRateLimited,
    /// 403 `blocked` (or a batch line with that code): a block list matches. A final refusal.
    Blocked,
    /// 503 (or a retryable or [`SWITCH_CODES`] batch line error), by error code.
    Unavailable(String),
    /// Any other 5xx, by status.
    ServerError(u16),
    /// An answer that does not follow the contract (wrong status/body pairing, unparsable batch).
    BadResponse,
    /// No answer within `--timeout`.
    Timeout,
    /// The connection failed or closed while the request was outstanding.
    ConnectionError,
}

/// The durability view of an outcome, as written to the ledger. The first four are the classes
/// of ledger v1; the rest came with the signature lifecycle (ledger v2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerClass {
    /// The server said it counted the signer, now.
    Accepted,
    /// The server said the signer was counted before.
    Duplicate,
    /// The server said no and did not take the signature (4xx, 429, a switch's 503).
    Failed,
    /// Cannot tell: timeout, reset, 5xx, nonsense.
    Indeterminate,
    /// The server took the signature as pending validation, with a token (not counted yet).
    Pending,
    /// A validation: the server said it counted the signer, now.
    Validated,
    /// A validation: the server said the token had been validated before.
    AlreadyValidated,
    /// A validation the server refused without counting the signer (4xx, 429, a switch's 503).
    ValidationFailed,
    /// A validation whose outcome cannot be told: timeout, reset, 5xx, nonsense.
    ValidationIndeterminate,
}

impl LedgerClass {
    /// Every class, in the order of the ledger's documentation.
    pub const ALL: [LedgerClass; 9] = [
        LedgerClass::Accepted,
        LedgerClass::Duplicate,
        LedgerClass::Failed,
        LedgerClass::Indeterminate,
        LedgerClass::Pending,
        LedgerClass::Validated,
        LedgerClass::AlreadyValidated,
        LedgerClass::ValidationFailed,
        LedgerClass::ValidationIndeterminate,
    ];

    /// The word used in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerClass::Accepted => "accepted",
            LedgerClass::Duplicate => "duplicate",
            LedgerClass::Failed => "failed",
            LedgerClass::Indeterminate => "indeterminate",
            LedgerClass::Pending => "pending",
            LedgerClass::Validated => "validated",
            LedgerClass::AlreadyValidated => "already_validated",
            LedgerClass::ValidationFailed => "validation_failed",
            LedgerClass::ValidationIndeterminate => "validation_indeterminate",
        }
    }

    /// Parses the word written by [`LedgerClass::as_str`].
    pub fn parse(word: &str) -> Option<LedgerClass> {
        LedgerClass::ALL.into_iter().find(|c| c.as_str() == word)
    }

    /// Whether a line of this class carries a token (the lifecycle classes).
    pub fn has_token(self) -> bool {
        !matches!(
            self,
            LedgerClass::Accepted
                | LedgerClass::Duplicate
                | LedgerClass::Failed
                | LedgerClass::Indeterminate
        )
    }
}

impl Outcome {
    /// The durability class of this outcome as the answer to a signature.
    pub fn ledger_class(&self) -> LedgerClass {
        match self {
            Outcome::Accepted => LedgerClass::Accepted,
            Outcome::Duplicate => LedgerClass::Duplicate,
            Outcome::Pending { .. } => LedgerClass::Pending,
            Outcome::Rejected(_)
            | Outcome::RateLimited
            | Outcome::IpRateLimited
            | Outcome::Blocked => LedgerClass::Failed,
            Outcome::Unavailable(code) if is_switch(code) => LedgerClass::Failed,
            // `Ok` only happens in --get mode, which keeps no ledger; the classifiers never
            // give a signature a validation's answer (it would be a `BadResponse`).
            Outcome::Ok
            | Outcome::Validated
            | Outcome::AlreadyValidated
            | Outcome::Unavailable(_)
            | Outcome::ServerError(_)
            | Outcome::BadResponse
            | Outcome::Timeout
            | Outcome::ConnectionError => LedgerClass::Indeterminate,
        }
    }

    /// The durability class of this outcome as the answer to a validation.
    pub fn validation_ledger_class(&self) -> LedgerClass {
        match self {
            Outcome::Validated => LedgerClass::Validated,
            Outcome::AlreadyValidated => LedgerClass::AlreadyValidated,
            Outcome::Rejected(_)
            | Outcome::RateLimited
            | Outcome::IpRateLimited
            | Outcome::Blocked => LedgerClass::ValidationFailed,
            Outcome::Unavailable(code) if is_switch(code) => LedgerClass::ValidationFailed,
            // As above: a validation is never classified as a signature's answer.
            Outcome::Accepted
            | Outcome::Duplicate
            | Outcome::Pending { .. }
            | Outcome::Ok
            | Outcome::Unavailable(_)
            | Outcome::ServerError(_)
            | Outcome::BadResponse
            | Outcome::Timeout
            | Outcome::ConnectionError => LedgerClass::ValidationIndeterminate,
        }
    }

    /// Whether this counts as an error in the live progress line: not the answers the server
    /// owes (accepted, duplicate, pending, validated, ok), nor its abuse controls' final
    /// refusals (`ip_rate_limited`, `blocked`), which are the server doing its job.
    pub fn is_error(&self) -> bool {
        !matches!(
            self,
            Outcome::Accepted
                | Outcome::Duplicate
                | Outcome::Ok
                | Outcome::Pending { .. }
                | Outcome::Validated
                | Outcome::AlreadyValidated
                | Outcome::IpRateLimited
                | Outcome::Blocked
        )
    }

    /// A short detail for the ledger's fourth column.
    pub fn detail(&self) -> String {
        match self {
            Outcome::Rejected(code) | Outcome::Unavailable(code) => code.clone(),
            Outcome::RateLimited => "rate_limited".to_owned(),
            Outcome::IpRateLimited => IP_RATE_LIMITED.to_owned(),
            Outcome::Blocked => BLOCKED.to_owned(),
            Outcome::ServerError(status) => format!("http_{status}"),
            Outcome::BadResponse => "bad_response".to_owned(),
            Outcome::Timeout => "timeout".to_owned(),
            Outcome::ConnectionError => "connection_error".to_owned(),
            Outcome::Accepted
            | Outcome::Duplicate
            | Outcome::Ok
            | Outcome::Pending { .. }
            | Outcome::Validated
            | Outcome::AlreadyValidated => "-".to_owned(),
        }
    }

    /// A short description for people, e.g. `pending (202)`, `rejected unknown_token`.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Accepted => "accepted".to_owned(),
            Outcome::Duplicate => "duplicate".to_owned(),
            Outcome::Pending { .. } => "pending".to_owned(),
            Outcome::Validated => "validated".to_owned(),
            Outcome::AlreadyValidated => "already_validated".to_owned(),
            Outcome::Ok => "ok".to_owned(),
            Outcome::Rejected(code) => format!("rejected {code}"),
            Outcome::RateLimited => "rate limited".to_owned(),
            Outcome::IpRateLimited => "ip rate limited".to_owned(),
            Outcome::Blocked => "blocked".to_owned(),
            Outcome::Unavailable(code) => format!("unavailable {code}"),
            Outcome::ServerError(status) => format!("server error {status}"),
            Outcome::BadResponse => "an answer outside the contract".to_owned(),
            Outcome::Timeout => "no answer in time".to_owned(),
            Outcome::ConnectionError => "a connection error".to_owned(),
        }
    }
}

/// An answer with a status: single answers and batch lines alike.
#[derive(Deserialize)]
struct Ack<'a> {
    #[serde(borrow)]
    status: &'a str,
    #[serde(borrow, default)]
    code: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    token: Option<&'a str>,
    #[serde(borrow, default)]
    expires_at: Option<&'a str>,
    /// The petition's count after this answer (accepted, duplicate, validated).
    #[serde(default)]
    count: Option<u64>,
}

impl Ack<'_> {
    /// The outcome of a `pending` answer: a token in its exact form and a valid expiry, or else
    /// an answer outside the contract.
    fn pending(&self) -> Outcome {
        let token = self.token.and_then(Token::parse);
        let expires = self.expires_at.and_then(token::parse_rfc3339);
        match (token, expires) {
            (Some(token), Some(expires_unix_s)) => Outcome::Pending {
                token,
                expires_unix_s,
            },
            _ => Outcome::BadResponse,
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody<'a> {
    #[serde(borrow)]
    error: ErrorDetail<'a>,
}

#[derive(Deserialize)]
struct ErrorDetail<'a> {
    #[serde(borrow)]
    code: std::borrow::Cow<'a, str>,
}

/// The error code of an error body, or `http_<status>` if the body is not in the error shape.
pub fn error_code(status: StatusCode, body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => parsed.error.code.into_owned(),
        Err(_) => format!("http_{}", status.as_u16()),
    }
}

/// Whether `code` is one of the [`SWITCH_CODES`].
fn is_switch(code: &str) -> bool {
    SWITCH_CODES.contains(&code)
}

/// Classifies a non-2xx answer (shared by all endpoints).
fn classify_error(status: StatusCode, body: &[u8]) -> Outcome {
    match status.as_u16() {
        429 => match error_code(status, body) {
            code if code == TOO_MANY_RESUBMISSIONS => Outcome::Rejected(code),
            code if code == IP_RATE_LIMITED => Outcome::IpRateLimited,
            _ => Outcome::RateLimited,
        },
        403 => match error_code(status, body) {
            code if code == BLOCKED => Outcome::Blocked,
            code => Outcome::Rejected(code),
        },
        503 => Outcome::Unavailable(error_code(status, body)),
        400..=499 => Outcome::Rejected(error_code(status, body)),
        500..=599 => Outcome::ServerError(status.as_u16()),
        _ => Outcome::BadResponse,
    }
}

/// Classifies the answer to `POST /v1/petitions/{id}/signatures`.
pub fn classify_single(status: StatusCode, body: &[u8]) -> Outcome {
    classify_single_counted(status, body).0
}

/// [`classify_single`], with the petition's count the answer carries (0 if none): the count an
/// accepted signature brought the petition to.
pub fn classify_single_counted(status: StatusCode, body: &[u8]) -> (Outcome, u64) {
    if !matches!(
        status,
        StatusCode::CREATED | StatusCode::OK | StatusCode::ACCEPTED
    ) {
        return (classify_error(status, body), 0);
    }
    match serde_json::from_slice::<Ack>(body) {
        Ok(ack) => {
            let outcome = match (status, ack.status) {
                (StatusCode::CREATED, "accepted") => Outcome::Accepted,
                (StatusCode::OK, "duplicate") => Outcome::Duplicate,
                (StatusCode::ACCEPTED, "pending") => ack.pending(),
                _ => Outcome::BadResponse,
            };
            (outcome, ack.count.unwrap_or(0))
        }
        Err(_) => (Outcome::BadResponse, 0),
    }
}

/// Classifies the answer to `POST /v1/validations`.
pub fn classify_validation(status: StatusCode, body: &[u8]) -> Outcome {
    classify_validation_counted(status, body).0
}

/// [`classify_validation`], with the petition's count the answer carries (0 if none).
pub fn classify_validation_counted(status: StatusCode, body: &[u8]) -> (Outcome, u64) {
    if status != StatusCode::OK {
        return (classify_error(status, body), 0);
    }
    match serde_json::from_slice::<Ack>(body) {
        Ok(ack) if ack.status == "validated" => (Outcome::Validated, ack.count.unwrap_or(0)),
        Ok(ack) if ack.status == "already_validated" => {
            (Outcome::AlreadyValidated, ack.count.unwrap_or(0))
        }
        _ => (Outcome::BadResponse, 0),
    }
}

/// Classifies the answer to a plain GET (`--get`).
pub fn classify_get(status: StatusCode, body: &[u8]) -> Outcome {
    if status.is_success() {
        Outcome::Ok
    } else {
        classify_error(status, body)
    }
}

/// Classifies the answer to `POST /v1/signatures:batch` with `lines` lines, all of the kind
/// `carried`, into `out` (cleared first), one outcome per line in order.
pub fn classify_batch(
    status: StatusCode,
    body: &[u8],
    lines: usize,
    carried: Carried,
    out: &mut Vec<Outcome>,
) {
    classify_batch_lines(status, body, lines, carried, out, None);
}

/// [`classify_batch`], with each line's petition count in `counts` (cleared first; 0 for a line
/// that carries none), in the same order as `out`.
pub fn classify_batch_counted(
    status: StatusCode,
    body: &[u8],
    lines: usize,
    carried: Carried,
    out: &mut Vec<Outcome>,
    counts: &mut Vec<u64>,
) {
    classify_batch_lines(status, body, lines, carried, out, Some(counts));
}

fn classify_batch_lines(
    status: StatusCode,
    body: &[u8],
    lines: usize,
    carried: Carried,
    out: &mut Vec<Outcome>,
    mut counts: Option<&mut Vec<u64>>,
) {
    out.clear();
    if let Some(counts) = counts.as_deref_mut() {
        counts.clear();
    }
    if status != StatusCode::OK {
        let outcome = classify_error(status, body);
        out.resize(lines, outcome);
        if let Some(counts) = counts {
            counts.resize(lines, 0);
        }
        return;
    }
    for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let parsed = serde_json::from_slice::<Ack>(line);
        if let Some(counts) = counts.as_deref_mut() {
            counts.push(parsed.as_ref().ok().and_then(|ack| ack.count).unwrap_or(0));
        }
        let outcome = match parsed {
            Ok(parsed) => match (carried, parsed.status) {
                (Carried::Signatures, "accepted") => Outcome::Accepted,
                (Carried::Signatures, "duplicate") => Outcome::Duplicate,
                (Carried::Signatures, "pending") => parsed.pending(),
                (Carried::Validations, "validated") => Outcome::Validated,
                (Carried::Validations, "already_validated") => Outcome::AlreadyValidated,
                (_, "error") => match parsed.code {
                    Some(code) if code == IP_RATE_LIMITED => Outcome::IpRateLimited,
                    Some(code) if code == BLOCKED => Outcome::Blocked,
                    Some(code) if RETRYABLE_CODES.contains(&code.as_ref()) || is_switch(&code) => {
                        Outcome::Unavailable(code.into_owned())
                    }
                    Some(code) => Outcome::Rejected(code.into_owned()),
                    None => Outcome::BadResponse,
                },
                _ => Outcome::BadResponse,
            },
            Err(_) => Outcome::BadResponse,
        };
        out.push(outcome);
    }
    if out.len() != lines {
        // Without one answer per line in order, no line's answer can be trusted.
        out.clear();
        out.resize(lines, Outcome::BadResponse);
        if let Some(counts) = counts {
            counts.clear();
            counts.resize(lines, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn single() {
        let check = |status: u16, body: &str, expected: Outcome| {
            let status = StatusCode::from_u16(status).expect("valid status");
            assert_eq!(classify_single(status, body.as_bytes()), expected, "{body}");
        };
        check(201, r#"{"status":"accepted","count":1}"#, Outcome::Accepted);
        check(
            200,
            r#"{"status":"duplicate","count":1}"#,
            Outcome::Duplicate,
        );
        check(
            201,
            r#"{"status":"duplicate","count":1}"#,
            Outcome::BadResponse,
        );
        check(200, "ok", Outcome::BadResponse);
        let error = |code: &str| format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#);
        check(
            422,
            &error("invalid_signature"),
            Outcome::Rejected("invalid_signature".into()),
        );
        check(
            404,
            &error("unknown_petition"),
            Outcome::Rejected("unknown_petition".into()),
        );
        check(429, &error("rate_limited"), Outcome::RateLimited);
        check(
            503,
            &error("overloaded"),
            Outcome::Unavailable("overloaded".into()),
        );
        check(503, "", Outcome::Unavailable("http_503".into()));
        check(500, "boom", Outcome::ServerError(500));
        check(302, "", Outcome::BadResponse);
    }

    #[test]
    fn batch() {
        let mut out = Vec::new();
        let body = concat!(
            r#"{"status":"accepted","count":1}"#,
            "\n",
            r#"{"status":"duplicate","count":1}"#,
            "\n",
            r#"{"status":"error","code":"overloaded","message":"m"}"#,
            "\n",
            r#"{"status":"error","code":"invalid_signature","message":"m"}"#,
            "\n"
        );
        classify_batch(
            StatusCode::OK,
            body.as_bytes(),
            4,
            Carried::Signatures,
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                Outcome::Accepted,
                Outcome::Duplicate,
                Outcome::Unavailable("overloaded".into()),
                Outcome::Rejected("invalid_signature".into()),
            ]
        );
        classify_batch(
            StatusCode::OK,
            body.as_bytes(),
            5,
            Carried::Signatures,
            &mut out,
        );
        assert_eq!(out, vec![Outcome::BadResponse; 5]);
        classify_batch(
            StatusCode::PAYLOAD_TOO_LARGE,
            br#"{"error":{"code":"body_too_large","message":"m"}}"#,
            2,
            Carried::Signatures,
            &mut out,
        );
        assert_eq!(out, vec![Outcome::Rejected("body_too_large".into()); 2]);
    }

    #[test]
    fn counts() {
        let status = |n: u16| StatusCode::from_u16(n).expect("valid status");
        assert_eq!(
            classify_single_counted(status(201), br#"{"status":"accepted","count":1000}"#),
            (Outcome::Accepted, 1000)
        );
        assert_eq!(
            classify_single_counted(status(201), br#"{"status":"accepted"}"#),
            (Outcome::Accepted, 0)
        );
        assert_eq!(
            classify_single_counted(status(503), br#"{"error":{"code":"overloaded"}}"#),
            (Outcome::Unavailable("overloaded".into()), 0)
        );
        assert_eq!(
            classify_validation_counted(status(200), br#"{"status":"validated","count":7}"#),
            (Outcome::Validated, 7)
        );
        let (mut out, mut counts) = (Vec::new(), vec![99]);
        let body = concat!(
            r#"{"status":"accepted","count":10}"#,
            "\n",
            r#"{"status":"error","code":"overloaded","message":"m"}"#,
            "\n",
            r#"{"status":"duplicate","count":10}"#,
            "\n",
        );
        classify_batch_counted(
            StatusCode::OK,
            body.as_bytes(),
            3,
            Carried::Signatures,
            &mut out,
            &mut counts,
        );
        assert_eq!(out[0], Outcome::Accepted);
        assert_eq!(counts, vec![10, 0, 10]);
        // A body out of step with the lines sent: no counts to trust either.
        classify_batch_counted(
            StatusCode::OK,
            body.as_bytes(),
            4,
            Carried::Signatures,
            &mut out,
            &mut counts,
        );
        assert_eq!(counts, vec![0; 4]);
        classify_batch_counted(
            StatusCode::SERVICE_UNAVAILABLE,
            b"",
            2,
            Carried::Signatures,
            &mut out,
            &mut counts,
        );
        assert_eq!(counts, vec![0; 2]);
    }

    const TOKEN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00112233";

    fn pending() -> Outcome {
        Outcome::Pending {
            token: Token::parse(TOKEN).unwrap(),
            expires_unix_s: 1_796_119_200,
        }
    }

    #[test]
    fn lifecycle_single() {
        let token = TOKEN;
        let check = |status: u16, body: &str, expected: Outcome| {
            let status = StatusCode::from_u16(status).expect("valid status");
            assert_eq!(classify_single(status, body.as_bytes()), expected, "{body}");
        };
        let answer = |token: &str, expires: &str| {
            format!(r#"{{"status":"pending","token":"{token}","expires_at":"{expires}"}}"#)
        };
        check(202, &answer(token, "2026-12-01T10:00:00Z"), pending());
        check(202, &answer(token, "2026-12-01T10:00:00.75Z"), pending());
        // The token in any other form, a bad expiry, or the wrong status: outside the contract.
        check(
            202,
            &answer(&token.to_uppercase(), "2026-12-01T10:00:00Z"),
            Outcome::BadResponse,
        );
        check(
            202,
            &answer(&token[..70], "2026-12-01T10:00:00Z"),
            Outcome::BadResponse,
        );
        check(202, &answer(token, "tomorrow"), Outcome::BadResponse);
        check(
            202,
            &format!(r#"{{"status":"pending","token":"{token}"}}"#),
            Outcome::BadResponse,
        );
        check(
            200,
            &answer(token, "2026-12-01T10:00:00Z"),
            Outcome::BadResponse,
        );
        check(
            202,
            r#"{"status":"accepted","count":1}"#,
            Outcome::BadResponse,
        );
        let error = |code: &str| format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#);
        check(
            429,
            &error("too_many_resubmissions"),
            Outcome::Rejected("too_many_resubmissions".into()),
        );
        check(429, &error("rate_limited"), Outcome::RateLimited);
    }

    #[test]
    fn validations() {
        let check = |status: u16, body: &str, expected: Outcome| {
            let status = StatusCode::from_u16(status).expect("valid status");
            assert_eq!(
                classify_validation(status, body.as_bytes()),
                expected,
                "{body}"
            );
        };
        let error = |code: &str| format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#);
        check(
            200,
            r#"{"status":"validated","count":3}"#,
            Outcome::Validated,
        );
        check(
            200,
            r#"{"status":"already_validated","count":3}"#,
            Outcome::AlreadyValidated,
        );
        check(
            200,
            r#"{"status":"duplicate","count":3}"#,
            Outcome::BadResponse,
        );
        check(
            201,
            r#"{"status":"validated","count":3}"#,
            Outcome::BadResponse,
        );
        for (status, code) in [
            (404, "unknown_token"),
            (422, "malformed_token"),
            (410, "token_expired"),
            (409, "petition_closed"),
            (409, "invalidated"),
        ] {
            check(status, &error(code), Outcome::Rejected(code.into()));
        }
        check(429, &error("rate_limited"), Outcome::RateLimited);
        check(
            503,
            &error("overloaded"),
            Outcome::Unavailable("overloaded".into()),
        );
        assert_eq!(
            Outcome::Rejected("token_expired".into()).validation_ledger_class(),
            LedgerClass::ValidationFailed
        );
        assert_eq!(
            Outcome::Unavailable("overloaded".into()).validation_ledger_class(),
            LedgerClass::ValidationIndeterminate
        );
        assert_eq!(
            Outcome::Validated.validation_ledger_class(),
            LedgerClass::Validated
        );
    }

    #[test]
    fn lifecycle_batch() {
        let token = TOKEN;
        let mut out = Vec::new();
        let body = format!(
            "{}\n{}\n{}\n",
            format_args!(
                r#"{{"status":"pending","token":"{token}","expires_at":"2026-12-01T10:00:00Z"}}"#
            ),
            r#"{"status":"duplicate","count":4}"#,
            r#"{"status":"error","code":"too_many_resubmissions","message":"m"}"#,
        );
        classify_batch(
            StatusCode::OK,
            body.as_bytes(),
            3,
            Carried::Signatures,
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                pending(),
                Outcome::Duplicate,
                Outcome::Rejected("too_many_resubmissions".into())
            ]
        );
        let body = concat!(
            r#"{"status":"validated","count":1}"#,
            "\n",
            r#"{"status":"already_validated","count":1}"#,
            "\n",
            r#"{"status":"error","code":"unknown_token","message":"m"}"#,
            "\n",
            r#"{"status":"error","code":"recovering","message":"m"}"#,
            "\n",
            r#"{"status":"accepted","count":1}"#,
            "\n",
        );
        classify_batch(
            StatusCode::OK,
            body.as_bytes(),
            5,
            Carried::Validations,
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                Outcome::Validated,
                Outcome::AlreadyValidated,
                Outcome::Rejected("unknown_token".into()),
                Outcome::Unavailable("recovering".into()),
                // A signature's answer to a validation line is outside the contract.
                Outcome::BadResponse,
            ]
        );
    }

    #[test]
    fn the_abuse_controls_are_final_refusals_apart_from_the_key_limit() {
        let error = |code: &str| format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#);
        let status = |n: u16| StatusCode::from_u16(n).expect("valid status");
        let single = |n: u16, code: &str| classify_single(status(n), error(code).as_bytes());
        assert_eq!(single(429, "ip_rate_limited"), Outcome::IpRateLimited);
        assert_eq!(single(403, "blocked"), Outcome::Blocked);
        // The per-key limit, and other 403s, as before.
        assert_eq!(single(429, "rate_limited"), Outcome::RateLimited);
        assert_eq!(
            single(403, "forbidden"),
            Outcome::Rejected("forbidden".into())
        );
        assert_eq!(
            single(503, "signing_paused"),
            Outcome::Unavailable("signing_paused".into())
        );
        assert_eq!(
            classify_validation(status(403), error("blocked").as_bytes()),
            Outcome::Blocked
        );
        // Batch lines with the same codes.
        let body = concat!(
            r#"{"status":"error","code":"ip_rate_limited","message":"m"}"#,
            "\n",
            r#"{"status":"error","code":"blocked","message":"m"}"#,
            "\n",
            r#"{"status":"error","code":"signing_paused","message":"m"}"#,
            "\n",
            r#"{"status":"error","code":"read_only","message":"m"}"#,
            "\n",
        );
        let mut out = Vec::new();
        classify_batch(
            StatusCode::OK,
            body.as_bytes(),
            4,
            Carried::Signatures,
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                Outcome::IpRateLimited,
                Outcome::Blocked,
                Outcome::Unavailable("signing_paused".into()),
                Outcome::Unavailable("read_only".into()),
            ]
        );
        // In the ledger: refused for good, with the code; neither lost nor in doubt.
        for outcome in [
            Outcome::IpRateLimited,
            Outcome::Blocked,
            Outcome::Unavailable("signing_paused".into()),
            Outcome::Unavailable("read_only".into()),
        ] {
            assert_eq!(outcome.ledger_class(), LedgerClass::Failed, "{outcome:?}");
            assert_eq!(
                outcome.validation_ledger_class(),
                LedgerClass::ValidationFailed,
                "{outcome:?}"
            );
        }
        assert_eq!(Outcome::IpRateLimited.detail(), "ip_rate_limited");
        assert_eq!(Outcome::Blocked.detail(), "blocked");
        assert_eq!(
            Outcome::Unavailable("signing_paused".into()).detail(),
            "signing_paused"
        );
        // The other 503s stay in doubt: the signature may have reached the store.
        assert_eq!(
            Outcome::Unavailable("overloaded".into()).ledger_class(),
            LedgerClass::Indeterminate
        );
        // The server doing its job is not an error; a switch's 503 and the key's 429 are.
        assert!(!Outcome::IpRateLimited.is_error());
        assert!(!Outcome::Blocked.is_error());
        assert!(Outcome::RateLimited.is_error());
        assert!(Outcome::Unavailable("signing_paused".into()).is_error());
        assert_eq!(Outcome::IpRateLimited.describe(), "ip rate limited");
    }

    #[test]
    fn ledger_classes() {
        assert_eq!(Outcome::Accepted.ledger_class(), LedgerClass::Accepted);
        assert_eq!(Outcome::RateLimited.ledger_class(), LedgerClass::Failed);
        assert_eq!(
            Outcome::Unavailable("x".into()).ledger_class(),
            LedgerClass::Indeterminate
        );
        assert_eq!(Outcome::Timeout.ledger_class(), LedgerClass::Indeterminate);
        assert_eq!(pending().ledger_class(), LedgerClass::Pending);
        for class in LedgerClass::ALL {
            assert_eq!(LedgerClass::parse(class.as_str()), Some(class));
        }
        assert_eq!(LedgerClass::parse("maybe"), None);
    }
}
