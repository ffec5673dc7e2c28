//! Validations: `POST /v1/validations` `{"token":"..."}` counts the pending signature a token
//! names (a petition with `"validation": "email"`), exactly once. The same key and limits as a
//! single signature; the batch form is a `{"validate":"..."}` line of `POST /v1/signatures:batch`.

use std::borrow::Cow;
use std::time::Instant;

use hyper::header::HeaderMap;
use hyper::StatusCode;
use serde::Deserialize;

use super::signatures::{submit_error, write_outcome};
use crate::auth::{Role, Take};
use crate::metrics::ValidationOutcome;
use crate::request::{admit_json, json_error_status, Admitted, Body};
use crate::response::{error, json, rate_limited, Response};
use crate::state::State;

/// The body of `POST /v1/validations`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidationBody<'a> {
    /// 72 lower-case hex digits, as the pending answer gave it.
    #[serde(borrow)]
    token: Cow<'a, str>,
}

/// `{"status":"validated","count":N}` with the largest count.
const ANSWER_BYTES_MAX: usize = 64;

/// `POST /v1/validations`.
pub(crate) async fn validate(state: &State, headers: &HeaderMap, body: &mut Body) -> Response {
    let overloaded = || state.metrics.validation(ValidationOutcome::Overloaded);
    let Admitted {
        caller,
        body,
        permit: _permit,
    } = match admit_json(state, headers, body, Role::Ingest, overloaded).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let parsed: ValidationBody<'_> = match serde_json::from_slice(&body) {
        Ok(parsed) => parsed,
        Err(e) => {
            let status = json_error_status(&e);
            let outcome = if status == StatusCode::BAD_REQUEST {
                ValidationOutcome::MalformedJson
            } else {
                ValidationOutcome::InvalidValidation
            };
            state.metrics.validation(outcome);
            return error(status, outcome.label(), e);
        }
    };
    // A validation is a write like a signature: it is charged to the key's rate.
    if state.keys.take(caller, 1) != Take::Taken {
        state.metrics.validation(ValidationOutcome::RateLimited);
        return rate_limited(state);
    }
    let started = Instant::now();
    // The token is checked (and the validation admitted) in this call; only the write is
    // awaited, after the body is released.
    let answer = state.engine.validate_async(&parsed.token);
    drop(parsed);
    drop(body);
    let result = answer.await;
    state.metrics.ack_latency.record(started.elapsed());
    match result {
        Ok(outcome) => {
            let mut out = String::with_capacity(ANSWER_BYTES_MAX);
            let status = write_outcome(state, outcome, &mut out);
            json(status, out)
        }
        Err(e) => {
            state.metrics.validation(ValidationOutcome::from(&e));
            submit_error(state, &e)
        }
    }
}
