//! Invalidations (admin): `POST /v1/invalidations` previews (`dry_run`) or starts a job that
//! invalidates the signatures matching criteria, in the background; `GET /v1/invalidations`
//! and `GET /v1/invalidations/{id}` show jobs and their progress;
//! `POST /v1/invalidations/{id}/cancel` stops one.
//!
//! Preview, start and cancel wait for the store (a preview reads every signature in scope, a
//! start or cancel is a synced write), so they run off the async workers.

use std::sync::atomic::Ordering;

use engine::{Criteria, InvalidationError, InvalidationJob, InvalidationRequest};
use hyper::header::HeaderMap;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use super::blocking;
use crate::auth::Role;
use crate::request::{admin_json, admit, authorize, parse_time, Body};
use crate::response::{error, json, retry_later, rfc3339, shed, Response};
use crate::state::State;

/// The body of `POST /v1/invalidations`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidationBody {
    /// The petition whose signatures are in scope; absent or null: every petition's.
    petition: Option<String>,
    criteria: CriteriaBody,
    /// Count the matching signatures and change nothing.
    #[serde(default)]
    dry_run: bool,
}

/// The criteria of an invalidation, as the API spells them (times in RFC 3339).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CriteriaBody {
    email_domain: Option<String>,
    email_pattern: Option<String>,
    ip: Option<String>,
    country: Option<String>,
    region: Option<String>,
    postcode: Option<String>,
    received_after: Option<String>,
    received_before: Option<String>,
}

impl CriteriaBody {
    /// The engine's criteria; the engine checks the rest and names the field it refuses.
    fn criteria(self) -> Result<Criteria, String> {
        let time =
            |field, text: Option<String>| text.map(|text| parse_time(field, &text)).transpose();
        Ok(Criteria {
            received_after_ms: time("criteria.received_after", self.received_after)?,
            received_before_ms: time("criteria.received_before", self.received_before)?,
            email_domain: self.email_domain,
            email_pattern: self.email_pattern,
            ip: self.ip,
            country: self.country,
            region: self.region,
            postcode: self.postcode,
        })
    }
}

/// A job as every invalidation route answers it.
#[derive(Serialize)]
struct JobJson<'a> {
    id: u64,
    petition: Option<&'a str>,
    criteria: CriteriaJson<'a>,
    state: &'static str,
    scanned: u64,
    matched: u64,
    invalidated: u64,
    total: u64,
    progress: f64,
    created_at: String,
    finished_at: Option<String>,
    error: Option<&'a str>,
}

/// The criteria as given: only the fields given, times in RFC 3339.
#[derive(Serialize)]
struct CriteriaJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    email_domain: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email_pattern: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    country: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    postcode: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    received_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    received_before: Option<String>,
}

impl<'a> JobJson<'a> {
    fn new(job: &'a InvalidationJob) -> JobJson<'a> {
        let c = &job.criteria;
        JobJson {
            id: job.id,
            petition: job.petition.as_deref(),
            criteria: CriteriaJson {
                email_domain: c.email_domain.as_deref(),
                email_pattern: c.email_pattern.as_deref(),
                ip: c.ip.as_deref(),
                country: c.country.as_deref(),
                region: c.region.as_deref(),
                postcode: c.postcode.as_deref(),
                received_after: c.received_after_ms.map(rfc3339),
                received_before: c.received_before_ms.map(rfc3339),
            },
            state: job.state.as_str(),
            scanned: job.scanned,
            matched: job.matched,
            invalidated: job.invalidated,
            total: job.total,
            progress: job.progress(),
            created_at: rfc3339(job.created_at_ms),
            finished_at: job.finished_at_ms.map(rfc3339),
            error: job.error.as_deref(),
        }
    }
}

fn job_json(status: StatusCode, job: &InvalidationJob) -> Response {
    json(
        status,
        serde_json::to_string(&JobJson::new(job)).unwrap_or_default(),
    )
}

/// `POST /v1/invalidations` (admin).
pub(crate) async fn create(state: &State, headers: &HeaderMap, body: &mut Body) -> Response {
    let (parsed, _, _permit) =
        match admin_json::<InvalidationBody>(state, headers, body, "invalid_criteria").await {
            Ok(admitted) => admitted,
            Err(response) => return response,
        };
    let criteria = match parsed.criteria.criteria() {
        Ok(criteria) => criteria,
        Err(message) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_criteria",
                message,
            )
        }
    };
    let request = InvalidationRequest {
        petition: parsed.petition,
        criteria,
    };
    let engine = state.engine.clone();
    if parsed.dry_run {
        return match blocking(move || engine.preview_invalidation(&request)).await {
            Ok(Ok(matching)) => json(StatusCode::OK, format!(r#"{{"matching":{matching}}}"#)),
            Ok(Err(e)) => invalidation_error(state, &e),
            Err(response) => response,
        };
    }
    // Before the job exists: petition reads check the engine from now until it has finished.
    state.jobs_started.fetch_add(1, Ordering::AcqRel);
    match blocking(move || engine.start_invalidation(request)).await {
        Ok(Ok(job)) => job_json(StatusCode::ACCEPTED, &job),
        Ok(Err(e)) => invalidation_error(state, &e),
        Err(response) => response,
    }
}

/// `GET /v1/invalidations` (admin): every job, oldest first.
pub(crate) fn list(state: &State, headers: &HeaderMap) -> Response {
    if let Err(response) = authorize(state, headers, Role::Admin) {
        return response;
    }
    #[derive(Serialize)]
    struct List<'a> {
        invalidations: Vec<JobJson<'a>>,
    }
    let jobs = state.engine.invalidations();
    let list = List {
        invalidations: jobs.iter().map(JobJson::new).collect(),
    };
    json(
        StatusCode::OK,
        serde_json::to_string(&list).unwrap_or_default(),
    )
}

/// `GET /v1/invalidations/{id}` (admin).
pub(crate) fn get(state: &State, id: &str, headers: &HeaderMap) -> Response {
    if let Err(response) = authorize(state, headers, Role::Admin) {
        return response;
    }
    match job_id(id).and_then(|id| state.engine.invalidation(id)) {
        Some(job) => job_json(StatusCode::OK, &job),
        None => unknown_job(),
    }
}

/// `POST /v1/invalidations/{id}/cancel` (admin).
pub(crate) async fn cancel(state: &State, id: &str, headers: &HeaderMap) -> Response {
    if let Err(response) = authorize(state, headers, Role::Admin) {
        return response;
    }
    let Some(id) = job_id(id) else {
        return unknown_job();
    };
    let Some(_permit) = admit(state, &state.inflight) else {
        return shed(state);
    };
    let engine = state.engine.clone();
    match blocking(move || engine.cancel_invalidation(id)).await {
        Ok(Ok(job)) => job_json(StatusCode::OK, &job),
        Ok(Err(e)) => invalidation_error(state, &e),
        Err(response) => response,
    }
}

/// A job id of the path; `None` (so 404) for anything but a decimal number.
fn job_id(text: &str) -> Option<u64> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn unknown_job() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no invalidation job has this id",
    )
}

/// The answer to a refused preview, start or cancel.
fn invalidation_error(state: &State, e: &InvalidationError) -> Response {
    match e {
        InvalidationError::Invalid(_) => error(StatusCode::UNPROCESSABLE_ENTITY, e.code(), e),
        InvalidationError::UnknownPetition => error(StatusCode::NOT_FOUND, e.code(), e),
        InvalidationError::UnknownJob => unknown_job(),
        InvalidationError::Finished(_) => error(StatusCode::CONFLICT, e.code(), e),
        // Jobs take minutes, not a second: no `Retry-After`; poll the jobs instead.
        InvalidationError::TooManyJobs(_) => error(StatusCode::TOO_MANY_REQUESTS, e.code(), e),
        InvalidationError::Unsupported => error(StatusCode::NOT_IMPLEMENTED, e.code(), e),
        _ => retry_later(state, StatusCode::SERVICE_UNAVAILABLE, e.code(), e),
    }
}
