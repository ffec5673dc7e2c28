//! Signatures: `POST /v1/petitions/{id}/signatures` (one, JSON) and `POST /v1/signatures:batch`
//! (NDJSON, one group commit). Bodies are parsed into structs that borrow from the request
//! body, handed to the engine as [`SignatureRef`]s, and each answer is written by
//! [`write_outcome`] or [`error_line`].

use std::borrow::Cow;
use std::fmt::Write;
use std::time::Instant;

use engine::{Outcome, SignatureRef, SubmitError};
use hyper::header::HeaderMap;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use crate::auth::{Role, Take};
use crate::metrics::SignatureOutcome;
use crate::request::{
    admit, authorize, content_type, json_error_status, read_body, Body, BodyKind,
};
use crate::response::{
    close_connection, error, json, ndjson, rate_limited, retry_later, shed, Response, JSON, NDJSON,
};
use crate::state::State;

/// Declares a signature body: the given leading fields, then the fields of a signature, each
/// borrowed from the request body where no JSON escape had to be decoded; and `signature`,
/// which lends them to the engine. One field list for the single and the batch forms (serde
/// derives for each exactly what it would for a hand-written struct).
macro_rules! signature_json {
    ($(#[$doc:meta])* $name:ident { $($lead:ident),* }) => {
        $(#[$doc])*
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name<'a> {
            $(
                #[serde(borrow)]
                $lead: Cow<'a, str>,
            )*
            #[serde(borrow)]
            email: Cow<'a, str>,
            #[serde(borrow)]
            name: Option<Cow<'a, str>>,
            #[serde(borrow)]
            postcode: Option<Cow<'a, str>>,
            #[serde(borrow)]
            country: Option<Cow<'a, str>>,
            #[serde(borrow)]
            ip: Option<Cow<'a, str>>,
        }

        impl $name<'_> {
            /// The engine's view of this signature, borrowing every field.
            fn signature<'s>(
                &'s self,
                petition: &'s str,
                source: Option<&'s str>,
            ) -> SignatureRef<'s> {
                SignatureRef {
                    petition,
                    email: &self.email,
                    name: self.name.as_deref(),
                    postcode: self.postcode.as_deref(),
                    country: self.country.as_deref(),
                    ip: self.ip.as_deref(),
                    source,
                }
            }
        }
    };
}

signature_json! {
    /// The body of `POST /v1/petitions/{id}/signatures`.
    SignatureBody {}
}

signature_json! {
    /// One line of `POST /v1/signatures:batch`.
    BatchLine { petition }
}

/// The longest answer [`write_outcome`] writes: `{"status":"duplicate","count":` and 20 digits.
const OUTCOME_BYTES_MAX: usize = 64;

/// `POST /v1/petitions/{id}/signatures`.
pub(crate) async fn sign(
    state: &State,
    petition: &str,
    headers: &HeaderMap,
    body: &mut Body,
) -> Response {
    let caller = match authorize(state, headers, Role::Ingest) {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    if let Err(response) = content_type(headers, &[JSON]) {
        return response;
    }
    let body = match read_body(state, headers, body, BodyKind::Small).await {
        Ok(body) => body,
        Err(response) => {
            if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                state.metrics.signature(SignatureOutcome::Overloaded);
            }
            return response;
        }
    };
    // The slot is taken once the body is in: a slow body holds no slot.
    let Some(_permit) = admit(state, &state.inflight) else {
        state.metrics.signature(SignatureOutcome::Overloaded);
        return shed(state);
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
    let signature = parsed.signature(petition, state.keys.source(caller));
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
            let mut out = String::with_capacity(OUTCOME_BYTES_MAX);
            let status = write_outcome(state, outcome, &mut out);
            json(status, out)
        }
        Err(e) => {
            state.metrics.signature(SignatureOutcome::from(&e));
            if e.is_retryable() {
                retry_later(state, submit_status(&e), e.code(), &e)
            } else {
                error(submit_status(&e), e.code(), &e)
            }
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
    // Each line is a signature to submit or an answer already known.
    let mut answers: Vec<Option<(SignatureOutcome, String)>> = Vec::with_capacity(lines.len());
    let mut parsed_lines = Vec::with_capacity(lines.len());
    for line in &lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match serde_json::from_slice::<BatchLine<'_>>(line) {
            Ok(parsed) => {
                parsed_lines.push(parsed);
                answers.push(None);
            }
            Err(e) => {
                let (_, outcome) = json_error_kind(&e);
                state.metrics.signature(outcome);
                answers.push(Some((outcome, e.to_string())));
            }
        }
    }
    let source = state.keys.source(caller);
    let signatures: Vec<SignatureRef<'_>> = parsed_lines
        .iter()
        .map(|line| line.signature(&line.petition, source))
        .collect();
    match state.keys.take(caller, signatures.len() as u64) {
        Take::Taken => {}
        Take::Short => {
            state
                .metrics
                .signature_n(SignatureOutcome::RateLimited, signatures.len());
            return rate_limited(state);
        }
        Take::Never => {
            state
                .metrics
                .signature_n(SignatureOutcome::BatchExceedsRate, signatures.len());
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                SignatureOutcome::BatchExceedsRate.label(),
                format_args!(
                    "this batch has {} signatures and this API key may send at most {} a \
                     second: split it into batches of at most that many",
                    signatures.len(),
                    state.keys.burst().unwrap_or(0)
                ),
            );
        }
    }
    let line_count = lines.len();
    state.metrics.batch(line_count);
    let started = Instant::now();
    // As in `sign`: the body is released before the wait for the write.
    let answer = state.engine.submit_batch_ref_async(&signatures);
    drop(signatures);
    drop(parsed_lines);
    drop(lines);
    drop(body);
    let mut results = answer.await.into_iter();
    state.metrics.ack_latency.record(started.elapsed());
    let mut out = String::with_capacity(line_count * 40);
    for answer in answers {
        match answer {
            Some((outcome, message)) => out.push_str(&error_line(outcome.label(), &message)),
            None => match results.next() {
                Some(Ok(outcome)) => {
                    write_outcome(state, outcome, &mut out);
                }
                Some(Err(e)) => {
                    state.metrics.signature(SignatureOutcome::from(&e));
                    out.push_str(&error_line(e.code(), &e.to_string()));
                }
                None => out.push_str(&error_line("shutting_down", "no answer from the engine")),
            },
        }
        out.push('\n');
    }
    ndjson(out)
}

/// Writes the answer to a signature the engine took, `{"status":"accepted","count":N}` or
/// `{"status":"duplicate","count":N}`, to `out`; counts it; returns its HTTP status (201 or 200).
fn write_outcome(state: &State, outcome: Outcome, out: &mut String) -> StatusCode {
    let (status, counted, count) = match outcome {
        Outcome::Accepted { count } => (StatusCode::CREATED, SignatureOutcome::Accepted, count),
        Outcome::Duplicate { count } => (StatusCode::OK, SignatureOutcome::Duplicate, count),
    };
    state.metrics.signature(counted);
    // Writing to a `String` cannot fail.
    let _ = write!(out, r#"{{"status":"{}","count":{count}}}"#, counted.label());
    status
}

/// A batch answer line for a signature that was refused: `{"status":"error","code","message"}`.
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

fn submit_status(e: &SubmitError) -> StatusCode {
    match e {
        SubmitError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        SubmitError::UnknownPetition => StatusCode::NOT_FOUND,
        SubmitError::PetitionClosed => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
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
