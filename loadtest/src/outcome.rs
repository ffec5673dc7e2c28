//! What became of one signature (or one plain GET), read from the server's answer.
//!
//! Two views: [`Outcome`] is the detailed one the report counts; [`LedgerClass`] is the one that
//! matters for durability: was the signature acknowledged, definitely refused, or can we not tell?

use hyper::StatusCode;
use serde::Deserialize;

/// Error codes of the batch endpoint after which the line may be retried: the server did not
/// take the signature, but whether it reached the store cannot be ruled out.
pub const RETRYABLE_CODES: [&str; 4] = [
    "overloaded",
    "storage_unavailable",
    "recovering",
    "shutting_down",
];

/// The detailed outcome of one signature or GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `201 accepted`: a new signer, counted.
    Accepted,
    /// `200 duplicate`: the signer was counted before.
    Duplicate,
    /// `--get` mode: any 2xx.
    Ok,
    /// A 4xx other than 429 (or a non-retryable batch line error), by error code.
    Rejected(String),
    /// 429 `rate_limited`.
    RateLimited,
    /// 503 (or a retryable batch line error), by error code.
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

/// The durability view of an outcome, as written to the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerClass {
    /// The server said it counted the signer, now.
    Accepted,
    /// The server said the signer was counted before.
    Duplicate,
    /// The server said no and did not count it (4xx, 429).
    Failed,
    /// Cannot tell: timeout, reset, 5xx, nonsense.
    Indeterminate,
}

impl LedgerClass {
    /// The word used in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerClass::Accepted => "accepted",
            LedgerClass::Duplicate => "duplicate",
            LedgerClass::Failed => "failed",
            LedgerClass::Indeterminate => "indeterminate",
        }
    }

    /// Parses the word written by [`LedgerClass::as_str`].
    pub fn parse(word: &str) -> Option<LedgerClass> {
        Some(match word {
            "accepted" => LedgerClass::Accepted,
            "duplicate" => LedgerClass::Duplicate,
            "failed" => LedgerClass::Failed,
            "indeterminate" => LedgerClass::Indeterminate,
            _ => return None,
        })
    }
}

impl Outcome {
    /// The durability class of this outcome.
    pub fn ledger_class(&self) -> LedgerClass {
        match self {
            Outcome::Accepted => LedgerClass::Accepted,
            Outcome::Duplicate => LedgerClass::Duplicate,
            Outcome::Rejected(_) | Outcome::RateLimited => LedgerClass::Failed,
            // `Ok` only happens in --get mode, which keeps no ledger.
            Outcome::Ok
            | Outcome::Unavailable(_)
            | Outcome::ServerError(_)
            | Outcome::BadResponse
            | Outcome::Timeout
            | Outcome::ConnectionError => LedgerClass::Indeterminate,
        }
    }

    /// Whether this counts as an error in the live progress line.
    pub fn is_error(&self) -> bool {
        !matches!(self, Outcome::Accepted | Outcome::Duplicate | Outcome::Ok)
    }

    /// A short detail for the ledger's fourth column.
    pub fn detail(&self) -> String {
        match self {
            Outcome::Rejected(code) | Outcome::Unavailable(code) => code.clone(),
            Outcome::RateLimited => "rate_limited".to_owned(),
            Outcome::ServerError(status) => format!("http_{status}"),
            Outcome::BadResponse => "bad_response".to_owned(),
            Outcome::Timeout => "timeout".to_owned(),
            Outcome::ConnectionError => "connection_error".to_owned(),
            Outcome::Accepted | Outcome::Duplicate | Outcome::Ok => "-".to_owned(),
        }
    }
}

#[derive(Deserialize)]
struct Ack<'a> {
    #[serde(borrow)]
    status: &'a str,
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

#[derive(Deserialize)]
struct BatchLine<'a> {
    #[serde(borrow)]
    status: &'a str,
    #[serde(borrow, default)]
    code: Option<std::borrow::Cow<'a, str>>,
}

/// The error code of an error body, or `http_<status>` if the body is not in the error shape.
pub fn error_code(status: StatusCode, body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => parsed.error.code.into_owned(),
        Err(_) => format!("http_{}", status.as_u16()),
    }
}

/// Classifies a non-2xx answer (shared by all endpoints).
fn classify_error(status: StatusCode, body: &[u8]) -> Outcome {
    match status.as_u16() {
        429 => Outcome::RateLimited,
        503 => Outcome::Unavailable(error_code(status, body)),
        400..=499 => Outcome::Rejected(error_code(status, body)),
        500..=599 => Outcome::ServerError(status.as_u16()),
        _ => Outcome::BadResponse,
    }
}

/// Classifies the answer to `POST /v1/petitions/{id}/signatures`.
pub fn classify_single(status: StatusCode, body: &[u8]) -> Outcome {
    let expected = match status {
        StatusCode::CREATED => "accepted",
        StatusCode::OK => "duplicate",
        _ => return classify_error(status, body),
    };
    match serde_json::from_slice::<Ack>(body) {
        Ok(ack) if ack.status == expected => {
            if status == StatusCode::CREATED {
                Outcome::Accepted
            } else {
                Outcome::Duplicate
            }
        }
        _ => Outcome::BadResponse,
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

/// Classifies the answer to `POST /v1/signatures:batch` with `lines` signatures into `out`
/// (cleared first), one outcome per line in order.
pub fn classify_batch(status: StatusCode, body: &[u8], lines: usize, out: &mut Vec<Outcome>) {
    out.clear();
    if status != StatusCode::OK {
        let outcome = classify_error(status, body);
        out.resize(lines, outcome);
        return;
    }
    for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let outcome = match serde_json::from_slice::<BatchLine>(line) {
            Ok(parsed) => match (parsed.status, parsed.code) {
                ("accepted", _) => Outcome::Accepted,
                ("duplicate", _) => Outcome::Duplicate,
                ("error", Some(code)) if RETRYABLE_CODES.contains(&code.as_ref()) => {
                    Outcome::Unavailable(code.into_owned())
                }
                ("error", Some(code)) => Outcome::Rejected(code.into_owned()),
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
    }
}

#[cfg(test)]
mod tests {
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
        classify_batch(StatusCode::OK, body.as_bytes(), 4, &mut out);
        assert_eq!(
            out,
            vec![
                Outcome::Accepted,
                Outcome::Duplicate,
                Outcome::Unavailable("overloaded".into()),
                Outcome::Rejected("invalid_signature".into()),
            ]
        );
        classify_batch(StatusCode::OK, body.as_bytes(), 5, &mut out);
        assert_eq!(out, vec![Outcome::BadResponse; 5]);
        classify_batch(
            StatusCode::PAYLOAD_TOO_LARGE,
            br#"{"error":{"code":"body_too_large","message":"m"}}"#,
            2,
            &mut out,
        );
        assert_eq!(out, vec![Outcome::Rejected("body_too_large".into()); 2]);
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
        for class in [
            LedgerClass::Accepted,
            LedgerClass::Duplicate,
            LedgerClass::Failed,
            LedgerClass::Indeterminate,
        ] {
            assert_eq!(LedgerClass::parse(class.as_str()), Some(class));
        }
    }
}
