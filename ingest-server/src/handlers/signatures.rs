//! Signatures: `POST /v1/petitions/{id}/signatures` (one, JSON) and `POST /v1/signatures:batch`
//! (NDJSON, one group commit; a line may also validate a pending signature by its token).
//! Bodies are parsed into structs that borrow from the request body, handed to the engine as
//! [`SignatureRef`]s (or [`Op`]s), and each answer is written by [`write_outcome`] or
//! [`error_line`].

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::Instant;

use engine::{Op, Outcome, SignatureRef, SubmitError};
use hyper::header::HeaderMap;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use crate::auth::{Role, Take};
use crate::metrics::{SignatureOutcome, ValidationOutcome};
use crate::request::{
    admit, admit_json, authorize, content_type, json_error_status, read_body, Admitted, Body,
    BodyKind,
};
use crate::response::{
    close_connection, error, json, ndjson, rate_limited, retry_later, rfc3339, shed, Response,
    NDJSON,
};
use crate::state::State;

/// Declares a signature body: the given leading fields, then the optional fields of a
/// signature, each borrowed from the request body where no JSON escape had to be decoded; and
/// `signature`, which lends them to the engine. One field list for the single and the batch
/// forms (serde derives for each exactly what it would for a hand-written struct).
macro_rules! signature_json {
    ($(#[$doc:meta])* $name:ident<$a:lifetime> { $($lead:ident: $lead_type:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name<$a> {
            $(
                #[serde(borrow)]
                $lead: $lead_type,
            )*
            #[serde(borrow)]
            name: Option<Cow<$a, str>>,
            #[serde(borrow)]
            postcode: Option<Cow<$a, str>>,
            #[serde(borrow)]
            country: Option<Cow<$a, str>>,
            #[serde(borrow)]
            region: Option<Cow<$a, str>>,
            #[serde(borrow)]
            ip: Option<Cow<$a, str>>,
        }

        impl $name<'_> {
            /// The engine's view of this signature, borrowing every field.
            fn signature<'s>(
                &'s self,
                petition: &'s str,
                email: &'s str,
                source: Option<&'s str>,
            ) -> SignatureRef<'s> {
                SignatureRef {
                    petition,
                    email,
                    name: self.name.as_deref(),
                    postcode: self.postcode.as_deref(),
                    country: self.country.as_deref(),
                    region: self.region.as_deref(),
                    ip: self.ip.as_deref(),
                    source,
                }
            }
        }
    };
}

signature_json! {
    /// The body of `POST /v1/petitions/{id}/signatures`.
    SignatureBody<'a> { email: Cow<'a, str> }
}

signature_json! {
    /// One line of `POST /v1/signatures:batch`: a signature (`petition`, `email`, ...) or the
    /// validation of a pending one (`validate`, alone). Every field is optional here, so that
    /// one parse reads either kind; [`BatchLine::op`] checks which it is.
    BatchLine<'a> {
        petition: Option<Cow<'a, str>>,
        email: Option<Cow<'a, str>>,
        validate: Option<Cow<'a, str>>,
    }
}

impl BatchLine<'_> {
    /// What the line asks the engine for, or why it is of the wrong shape.
    fn op<'s>(&'s self, source: Option<&'s str>) -> Result<Op<'s>, &'static str> {
        let optional_fields = self.name.is_some()
            || self.postcode.is_some()
            || self.country.is_some()
            || self.region.is_some()
            || self.ip.is_some();
        match (&self.validate, &self.petition, &self.email) {
            (Some(token), None, None) if !optional_fields => Ok(Op::Validate(token)),
            (Some(_), _, _) => Err(
                "a line either signs (petition, email, ...) or validates a pending signature \
                 (validate, alone), not both",
            ),
            (None, None, _) => Err("missing field `petition`"),
            (None, _, None) => Err("missing field `email`"),
            (None, Some(petition), Some(email)) => {
                Ok(Op::Sign(self.signature(petition, email, source)))
            }
        }
    }
}

/// The longest answer [`write_outcome`] writes: `{"status":"pending","token":"` and 72 hex
/// digits, `","expires_at":"`, an RFC 3339 time with milliseconds (24 bytes for years up to
/// 9999) and `"}`.
const OUTCOME_BYTES_MAX: usize = 160;

/// `POST /v1/petitions/{id}/signatures`.
pub(crate) async fn sign(
    state: &State,
    petition: &str,
    headers: &HeaderMap,
    body: &mut Body,
) -> Response {
    let overloaded = || state.metrics.signature(SignatureOutcome::Overloaded);
    let Admitted {
        caller,
        body,
        permit: _permit,
    } = match admit_json(state, headers, body, Role::Ingest, overloaded).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let parsed: SignatureBody<'_> = match serde_json::from_slice(&body) {
        Ok(parsed) => parsed,
        Err(e) => {
            let (status, outcome) = json_error_kind(&e);
            state.metrics.signature(outcome);
            return error(status, outcome.label(), e);
        }
    };
    if state.keys.take(caller, 1) != Take::Taken {
        state.metrics.signature(SignatureOutcome::RateLimited);
        return rate_limited(state);
    }
    let signature = parsed.signature(petition, &parsed.email, state.keys.source(caller));
    let started = Instant::now();
    // Admission happens in this call; only the wait for the write is awaited. The request body
    // is released before that wait: a version that held it across cost ~1.4 µs more CPU a
    // request (measured with commit 8b0df24, 2026-11-29), most likely because the body shares
    // hyper's read buffer.
    let answer = state.engine.submit_ref_async(&signature);
    drop(parsed);
    drop(body);
    let result = answer.await;
    state.metrics.ack_latency.record(started.elapsed());
    match result {
        Ok(outcome) => {
            if matches!(outcome, Outcome::Pending { .. }) {
                pending_answered(state);
            }
            let mut out = String::with_capacity(OUTCOME_BYTES_MAX);
            let status = write_outcome(state, outcome, &mut out);
            json(status, out)
        }
        Err(e) => {
            state.metrics.signature(SignatureOutcome::from(&e));
            submit_error(state, &e)
        }
    }
}

/// `POST /v1/signatures:batch`.
pub(crate) async fn batch(state: &State, headers: &HeaderMap, body: &mut Body) -> Response {
    let caller = match authorize(state, headers, Role::Ingest) {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    if let Err(response) = content_type(headers, &[NDJSON, "application/jsonl"]) {
        return response;
    }
    let body = match read_body(state, headers, body, BodyKind::Batch).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    // As in `sign`, the slot is taken once the body is in.
    let Some(_permit) = admit(state, &state.batch_inflight) else {
        // Its lines are not parsed, so they are not counted as signatures; `requests_shed`
        // counts it.
        return shed(state);
    };
    let mut lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|line| line.is_empty()) {
        lines.pop();
    }
    if lines.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "empty_batch",
            "the batch has no lines",
        );
    }
    if lines.len() > state.config.batch_lines_max {
        return close_connection(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_lines",
            format_args!(
                "a batch has at most {} lines, this one has {}",
                state.config.batch_lines_max,
                lines.len()
            ),
        ));
    }
    // Each line is an operation to submit (a signature or a validation) or an answer already
    // known.
    let mut answers: Vec<Line> = Vec::with_capacity(lines.len());
    let mut parsed_lines = Vec::with_capacity(lines.len());
    for line in &lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match serde_json::from_slice::<BatchLine<'_>>(line) {
            Ok(parsed) => {
                let kind = if parsed.validate.is_some() {
                    Kind::Validate
                } else {
                    Kind::Sign
                };
                parsed_lines.push(parsed);
                answers.push(Line::Submitted(kind));
            }
            Err(e) => {
                let (_, outcome) = json_error_kind(&e);
                state.metrics.signature(outcome);
                answers.push(Line::Known(outcome.label(), e.to_string()));
            }
        }
    }
    let source = state.keys.source(caller);
    let mut ops: Vec<Op<'_>> = Vec::with_capacity(parsed_lines.len());
    let mut parsed = parsed_lines.iter();
    for answer in &mut answers {
        let Line::Submitted(kind) = *answer else {
            continue;
        };
        // One parsed line per submitted answer, in order.
        let Some(line) = parsed.next() else { break };
        match line.op(source) {
            Ok(op) => ops.push(op),
            Err(message) => {
                let code = match kind {
                    Kind::Sign => {
                        state.metrics.signature(SignatureOutcome::InvalidSignature);
                        SignatureOutcome::InvalidSignature.label()
                    }
                    Kind::Validate => {
                        state
                            .metrics
                            .validation(ValidationOutcome::InvalidValidation);
                        ValidationOutcome::InvalidValidation.label()
                    }
                };
                *answer = Line::Known(code, message.to_string());
            }
        }
    }
    let validations = ops
        .iter()
        .filter(|op| matches!(op, Op::Validate(_)))
        .count();
    let signatures = ops.len() - validations;
    match state.keys.take(caller, ops.len() as u64) {
        Take::Taken => {}
        Take::Short => {
            state
                .metrics
                .signature_n(SignatureOutcome::RateLimited, signatures);
            state
                .metrics
                .validation_n(ValidationOutcome::RateLimited, validations);
            return rate_limited(state);
        }
        Take::Never => {
            state
                .metrics
                .signature_n(SignatureOutcome::BatchExceedsRate, signatures);
            state
                .metrics
                .validation_n(ValidationOutcome::BatchExceedsRate, validations);
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                SignatureOutcome::BatchExceedsRate.label(),
                format_args!(
                    "this batch has {} signatures and validations and this API key may send at \
                     most {} a second: split it into batches of at most that many",
                    ops.len(),
                    state.keys.burst().unwrap_or(0)
                ),
            );
        }
    }
    let line_count = lines.len();
    state.metrics.batch(line_count);
    let started = Instant::now();
    // As in `sign`: the body is released before the wait for the write.
    let answer = state.engine.submit_ops_ref_async(&ops);
    drop(ops);
    drop(parsed_lines);
    drop(lines);
    drop(body);
    let mut results = answer.await.into_iter();
    state.metrics.ack_latency.record(started.elapsed());
    let mut out = String::with_capacity(line_count * 40);
    let mut pending = false;
    for answer in answers {
        match answer {
            Line::Known(code, message) => out.push_str(&error_line(code, &message)),
            Line::Submitted(kind) => match results.next() {
                Some(Ok(outcome)) => {
                    pending |= matches!(outcome, Outcome::Pending { .. });
                    write_outcome(state, outcome, &mut out);
                }
                Some(Err(e)) => {
                    match kind {
                        Kind::Sign => state.metrics.signature(SignatureOutcome::from(&e)),
                        Kind::Validate => state.metrics.validation(ValidationOutcome::from(&e)),
                    }
                    out.push_str(&error_line(e.code(), &e.to_string()));
                }
                None => out.push_str(&error_line("shutting_down", "no answer from the engine")),
            },
        }
        out.push('\n');
    }
    if pending {
        pending_answered(state);
    }
    ndjson(out)
}

/// What a batch line is answered with: the engine's answer to the operation it submitted, or
/// an error known before submitting (its code and message).
enum Line {
    Submitted(Kind),
    Known(&'static str, String),
}

/// Which operation a batch line asks for, for the metrics.
#[derive(Clone, Copy)]
enum Kind {
    Sign,
    Validate,
}

/// A pending signature changes its petition's `pending_count` but not its count: rendered
/// petition reads are stale from now on.
fn pending_answered(state: &State) {
    state.generation.fetch_add(1, Ordering::AcqRel);
}

/// Writes the answer to a signature or validation the engine took to `out`: `{"status":
/// "accepted"|"duplicate"|"validated"|"already_validated","count":N}` or `{"status":"pending",
/// "token":"...","expires_at":"..."}`; counts it; returns its HTTP status (201, 200 or 202).
pub(super) fn write_outcome(state: &State, outcome: Outcome, out: &mut String) -> StatusCode {
    // Writing to a `String` cannot fail.
    let (status, label, count) = match outcome {
        Outcome::Accepted { count } => {
            state.metrics.signature(SignatureOutcome::Accepted);
            (
                StatusCode::CREATED,
                SignatureOutcome::Accepted.label(),
                count,
            )
        }
        Outcome::Duplicate { count } => {
            state.metrics.signature(SignatureOutcome::Duplicate);
            (StatusCode::OK, SignatureOutcome::Duplicate.label(), count)
        }
        Outcome::Validated { count } => {
            state.metrics.validation(ValidationOutcome::Validated);
            (StatusCode::OK, ValidationOutcome::Validated.label(), count)
        }
        Outcome::AlreadyValidated { count } => {
            state
                .metrics
                .validation(ValidationOutcome::AlreadyValidated);
            (
                StatusCode::OK,
                ValidationOutcome::AlreadyValidated.label(),
                count,
            )
        }
        Outcome::Pending { token } => {
            state.metrics.signature(SignatureOutcome::Pending);
            // The token is hex and the time RFC 3339: nothing to escape.
            let _ = write!(
                out,
                r#"{{"status":"pending","token":"{token}","expires_at":"{}"}}"#,
                rfc3339(token.expires_at_ms())
            );
            return StatusCode::ACCEPTED;
        }
    };
    let _ = write!(out, r#"{{"status":"{label}","count":{count}}}"#);
    status
}

/// A batch answer line for a signature or validation that was refused:
/// `{"status":"error","code","message"}`.
fn error_line(code: &str, message: &str) -> String {
    #[derive(Serialize)]
    struct ErrorLine<'a> {
        status: &'static str,
        code: &'a str,
        message: &'a str,
    }
    let line = ErrorLine {
        status: "error",
        code,
        message,
    };
    serde_json::to_string(&line).unwrap_or_default()
}

/// The HTTP status of a refused signature or validation.
fn submit_status(e: &SubmitError) -> StatusCode {
    match e {
        SubmitError::Invalid(_) | SubmitError::MalformedToken => StatusCode::UNPROCESSABLE_ENTITY,
        SubmitError::UnknownPetition | SubmitError::UnknownToken => StatusCode::NOT_FOUND,
        SubmitError::PetitionClosed | SubmitError::Invalidated => StatusCode::CONFLICT,
        SubmitError::TokenExpired => StatusCode::GONE,
        // Not a rate that passes: no `Retry-After` (the error is not retryable).
        SubmitError::TooManyResubmits => StatusCode::TOO_MANY_REQUESTS,
        SubmitError::Unsupported => StatusCode::NOT_IMPLEMENTED,
        SubmitError::Blocked => StatusCode::FORBIDDEN,
        SubmitError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        // Paused and read-only come with `Retry-After`: they pass when an administrator
        // resumes.
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The answer to a refused signature or validation; `Retry-After` when retrying may succeed.
pub(super) fn submit_error(state: &State, e: &SubmitError) -> Response {
    if let SubmitError::RateLimited { retry_after_s } = e {
        let mut response = error(submit_status(e), e.code(), e);
        response.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from(*retry_after_s),
        );
        return response;
    }
    let passes = matches!(e, SubmitError::SigningPaused | SubmitError::ReadOnly);
    if e.is_retryable() || passes {
        retry_later(state, submit_status(e), e.code(), e)
    } else {
        error(submit_status(e), e.code(), e)
    }
}

/// 400 `malformed_json` for text that is not JSON; 422 `invalid_signature` for JSON of the
/// wrong shape.
fn json_error_kind(e: &serde_json::Error) -> (StatusCode, SignatureOutcome) {
    let status = json_error_status(e);
    if status == StatusCode::BAD_REQUEST {
        (status, SignatureOutcome::MalformedJson)
    } else {
        (status, SignatureOutcome::InvalidSignature)
    }
}
