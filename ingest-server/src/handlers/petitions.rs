//! Petitions: `GET /v1/petitions/{id}` (rendered once per change and served from a per-thread
//! cache, with an ETag), the `GET /v1/petitions` leaderboard, trending list and list of
//! petitions awaiting a response, and the admin routes `PUT /v1/petitions/{id}`,
//! `POST /v1/petitions/{id}/close` and `PUT /v1/petitions/{id}/response`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use engine::{
    JobState, PetitionError, PetitionInfo, PetitionSpec, PetitionState, Registered, Validation,
};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use super::blocking;
use super::places::CountryJson;
use crate::auth::Role;
use crate::request::{
    admin_json, admit, admit_json, authorize, parse_json, parse_time, query_pairs, Admitted, Body,
};
use crate::response::{
    bad_parameter, cacheable, error, etag_of, json, retry_later, rfc3339, shed, Response,
};
use crate::state::State;

/// A petition as every petition route answers it.
#[derive(Serialize)]
struct PetitionJson<'a> {
    id: &'a str,
    /// Validated signatures.
    count: u64,
    pending_count: u64,
    invalidated_count: u64,
    validation: &'static str,
    state: &'static str,
    created_at: String,
    deadline: Option<String>,
    closed_at: Option<String>,
    thresholds: &'a [u64],
    milestones_reached: &'a [u64],
    response_threshold: Option<u64>,
    response_due_days: u32,
    /// When the count crossed the response threshold (the crossing that made it due).
    response_threshold_reached_at: Option<String>,
    response_due_at: Option<String>,
    awaiting_response: bool,
    overdue: bool,
    response: Option<ResponseJson<'a>>,
    /// Its largest countries (at most [`engine::TOP_COUNTRIES`]), as in a countries answer.
    countries: Vec<CountryJson<'a>>,
    /// Who paused its signing and when; `null` when it is not paused.
    paused: Option<ChangeJson<'a>>,
}

/// Who made an administrative change, and when.
#[derive(Serialize)]
pub(super) struct ChangeJson<'a> {
    pub by: &'a str,
    pub at: String,
}

impl<'a> ChangeJson<'a> {
    pub(super) fn new(change: &'a engine::Change) -> ChangeJson<'a> {
        ChangeJson {
            by: &change.by,
            at: rfc3339(change.at_ms),
        }
    }
}

/// A recorded response.
#[derive(Serialize)]
struct ResponseJson<'a> {
    summary: &'a str,
    url: Option<&'a str>,
    responded_at: String,
}

impl<'a> PetitionJson<'a> {
    fn new(info: &'a PetitionInfo) -> PetitionJson<'a> {
        PetitionJson {
            id: &info.id,
            count: info.count,
            pending_count: info.pending_count,
            invalidated_count: info.invalidated_count,
            validation: info.validation.as_str(),
            state: info.state.as_str(),
            created_at: rfc3339(info.created_at_ms),
            deadline: info.deadline_ms.map(rfc3339),
            closed_at: info.closed_at_ms.map(rfc3339),
            thresholds: &info.thresholds,
            milestones_reached: &info.milestones_reached,
            response_threshold: info.response_threshold,
            response_due_days: info.response_due_days,
            response_threshold_reached_at: info.response_threshold_reached_at_ms.map(rfc3339),
            response_due_at: info.response_due_at_ms.map(rfc3339),
            awaiting_response: info.awaiting_response,
            overdue: info.overdue,
            response: info.response.as_ref().map(|r| ResponseJson {
                summary: &r.summary,
                url: r.url.as_deref(),
                responded_at: rfc3339(r.at_ms),
            }),
            countries: info.countries.iter().map(CountryJson::new).collect(),
            paused: info.paused.as_ref().map(ChangeJson::new),
        }
    }
}

pub(super) fn petition_json(info: &PetitionInfo) -> String {
    serde_json::to_string(&PetitionJson::new(info)).unwrap_or_default()
}

/// A rendered `GET /v1/petitions/{id}` answer and the snapshot it shows, reused while nothing
/// in it can have changed. Under a refresh storm on a viral petition this skips the JSON,
/// timestamps and ETag of every request but the first after a change.
///
/// Two ways to know it is still exact:
/// - the quick check, for a *quiet* snapshot (validation `none`, no pending signature) while no
///   invalidation job may be running: the same validated count, the same
///   [`State::generation`], and, for an open petition with a deadline, the deadline not yet
///   passed. Nothing else can change such a petition's view: without pending signatures
///   there is nothing to expire, pending or validate; a pending signature answered, an admin
///   change or a job found finished bumps the generation; a job while it runs forces the full
///   check. This is the path of the benchmarks and of most petitions.
/// - otherwise the full check: the engine's snapshot now ([`engine::Engine::petition`], two
///   short locks and three small copies) equals the one rendered. Background changes the
///   server never hears of (the expiry sweep, invalidation steps) show at once.
///
/// Each worker thread keeps its own (see [`RENDERED`]): a shared cache put a lock, a reference
/// count and two shared buffers' counts on every read, cache lines that the two cores then
/// passed back and forth at 100 k reads a second.
struct Rendered {
    info: PetitionInfo,
    /// [`State::generation`] when `info` was read (or found unchanged).
    generation: u64,
    body: Bytes,
    /// The quoted ETag, ready to send.
    etag: HeaderValue,
}

impl Rendered {
    /// Whether the quick check may vouch for it: see [`Rendered`].
    fn quiet(&self) -> bool {
        self.info.validation == Validation::None && self.info.pending_count == 0
    }

    /// Until when (Unix ms) the view stays what time alone can change: an open petition's
    /// state stays open until its deadline, a response awaited is not overdue until its due
    /// time. `None` if time cannot change it.
    fn exact_until_ms(&self) -> Option<u64> {
        let open_until = match self.info.state {
            PetitionState::Open => self.info.deadline_ms,
            _ => None,
        };
        let due = match (self.info.awaiting_response, self.info.overdue) {
            (true, false) => self.info.response_due_at_ms,
            _ => None,
        };
        match (open_until, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

thread_local! {
    /// This thread's rendered petitions, by server ([`State::instance`]) and petition id.
    /// Bounded by the registered petitions: an unknown id is never rendered.
    static RENDERED: RefCell<HashMap<u64, HashMap<Box<str>, Rendered>>> =
        RefCell::new(HashMap::new());
}

/// Whether no invalidation job can be changing counts now. While `jobs_started` moved past
/// `jobs_settled`, asks the engine; once it sees none running, settles and bumps the generation:
/// a job's last counts are published before it shows finished, so views rendered before now
/// may be stale and views rendered after are exact.
pub(super) fn jobs_settled(state: &State) -> bool {
    let started = state.jobs_started.load(Ordering::Acquire);
    if started == state.jobs_settled.load(Ordering::Acquire) {
        return true;
    }
    let running = state
        .engine
        .invalidations()
        .iter()
        .any(|job| job.state == JobState::Running);
    if running {
        return false;
    }
    // Only the jobs started before the engine was asked are settled: one started since may
    // not have shown up in its answer.
    if state.jobs_settled.fetch_max(started, Ordering::AcqRel) < started {
        state.generation.fetch_add(1, Ordering::AcqRel);
    }
    true
}

/// The body and ETag of `GET /v1/petitions/{id}`, from this thread's cache when still exact.
fn rendered_petition(state: &State, id: &str) -> Option<(Bytes, HeaderValue)> {
    // Settle first: the generation it may bump must be the one read below.
    let settled = jobs_settled(state);
    let generation = state.generation.load(Ordering::Acquire);
    let now_ms = || state.engine.now_ms();
    // One lookup: the answer is taken along with what the quick check needs (two reference
    // counts of this thread's own buffers, dropped again in the rare case it fails).
    let quick = RENDERED.with_borrow(|servers| {
        let r = servers.get(&state.instance)?.get(id)?;
        let candidate = settled && r.quiet() && r.generation == generation;
        candidate.then(|| {
            let answer = (r.body.clone(), r.etag.clone());
            (r.info.count, r.exact_until_ms(), answer)
        })
    });
    if let Some((count, open_until_ms, answer)) = quick {
        let exact = state.engine.count(id) == Some(count)
            && open_until_ms.is_none_or(|deadline| now_ms() < deadline);
        if exact {
            return Some(answer);
        }
    }
    let info = state.engine.petition(id)?;
    let unchanged = RENDERED.with_borrow_mut(|servers| {
        let r = servers.get_mut(&state.instance)?.get_mut(id)?;
        if r.info != info {
            return None;
        }
        // Read after `generation` was: as fresh as a new rendering would be.
        r.generation = generation;
        Some((r.body.clone(), r.etag.clone()))
    });
    if unchanged.is_some() {
        return unchanged;
    }
    let body = petition_json(&info);
    let etag = etag_of(body.as_bytes());
    let rendered = Rendered {
        info,
        generation,
        etag,
        body: Bytes::from(body),
    };
    let answer = (rendered.body.clone(), rendered.etag.clone());
    RENDERED.with_borrow_mut(|servers| {
        servers
            .entry(state.instance)
            .or_default()
            .insert(id.into(), rendered);
    });
    Some(answer)
}

/// `GET /v1/petitions/{id}`.
pub(crate) fn get(state: &State, id: &str, headers: &HeaderMap) -> Response {
    match rendered_petition(state, id) {
        Some((body, etag)) => cacheable(headers, body, etag),
        None => unknown_petition(),
    }
}

/// The order of `GET /v1/petitions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sort {
    /// The highest count first.
    Count,
    /// The longest due response first (with `state=awaiting_response`).
    Due,
    /// The largest growth in a window first.
    Trending,
}

/// `GET /v1/petitions?sort=count&limit=N` (the leaderboard),
/// `GET /v1/petitions?state=awaiting_response&sort=due&limit=N` (petitions awaiting a
/// response, the longest due first, overdue ones marked), and
/// `GET /v1/petitions?sort=trending&window=1h&limit=N` (the largest growth in the window first).
pub(crate) fn list(state: &State, query: Option<&str>) -> Response {
    let mut limit = 10;
    let mut awaiting = false;
    let mut sort = None;
    let mut window = None;
    for (key, value) in query_pairs(query) {
        match key {
            "sort" => match value {
                "count" => sort = Some(Sort::Count),
                "due" => sort = Some(Sort::Due),
                "trending" => sort = Some(Sort::Trending),
                _ => return bad_parameter("sort", "sort is count, due or trending"),
            },
            "state" if value == "awaiting_response" => awaiting = true,
            "state" => {
                return bad_parameter("state", "the only state listed is awaiting_response");
            }
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => limit = n,
                _ => return bad_parameter("limit", "limit is 1 to 1000"),
            },
            "window" => match parse_window(value) {
                Some(minutes) => window = Some(minutes),
                None => {
                    return bad_parameter(
                        "window",
                        "window is 1m to 48h, in minutes (15m) or hours (1h)",
                    )
                }
            },
            _ => {
                return bad_parameter(key, "known parameters: sort, state, limit, window");
            }
        }
    }
    let sort = sort.unwrap_or(if awaiting { Sort::Due } else { Sort::Count });
    if window.is_some() && sort != Sort::Trending {
        return bad_parameter("window", "window goes with sort=trending");
    }
    let petitions = match (awaiting, sort) {
        (false, Sort::Count) => state.engine.top_petitions(limit),
        (false, Sort::Trending) => {
            return trending(state, window.unwrap_or(TRENDING_WINDOW_DEFAULT), limit)
        }
        (true, Sort::Due) => state.engine.awaiting_response(limit),
        (true, _) => {
            return bad_parameter(
                "sort",
                "petitions awaiting a response are listed by sort=due",
            )
        }
        (false, Sort::Due) => {
            return bad_parameter(
                "sort",
                "sort=due lists petitions awaiting a response: add state=awaiting_response",
            )
        }
    };
    #[derive(Serialize)]
    struct List<'a> {
        petitions: Vec<PetitionJson<'a>>,
    }
    let list = List {
        petitions: petitions.iter().map(PetitionJson::new).collect(),
    };
    json(
        StatusCode::OK,
        serde_json::to_string(&list).unwrap_or_default(),
    )
}

/// The window of `sort=trending` without `window`: the last hour.
const TRENDING_WINDOW_DEFAULT: u32 = 60;
/// The longest window: the 48 hours of minutes the engine keeps.
const TRENDING_WINDOW_MAX: u32 = 48 * 60;

/// Minutes of a trending window written `Nm` or `Nh` (decimal digits, no sign), from 1 minute
/// to 48 hours.
fn parse_window(text: &str) -> Option<u32> {
    let (digits, per) = match text.as_bytes().last()? {
        b'm' => (&text[..text.len() - 1], 1),
        b'h' => (&text[..text.len() - 1], 60),
        _ => return None,
    };
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let minutes = digits.parse::<u32>().ok()? * per;
    (1..=TRENDING_WINDOW_MAX)
        .contains(&minutes)
        .then_some(minutes)
}

/// A window as answers write it: whole hours as `Nh`, else `Nm`.
fn window_text(minutes: u32) -> String {
    let (hours, rest) = (minutes / 60, minutes % 60);
    if rest == 0 {
        format!("{hours}h")
    } else {
        format!("{minutes}m")
    }
}

/// `GET /v1/petitions?sort=trending`: the petitions whose count grew most in the last
/// `window` whole minutes (the current one included), most first (ties by id), each with that
/// growth. The engine computes the list at most once per `--trending-refresh`.
fn trending(state: &State, window: u32, limit: usize) -> Response {
    #[derive(Serialize)]
    struct Entry<'a> {
        #[serde(flatten)]
        petition: PetitionJson<'a>,
        signatures_in_window: i64,
    }
    #[derive(Serialize)]
    struct Trending<'a> {
        window: String,
        petitions: Vec<Entry<'a>>,
    }
    let list = state.engine.trending(window, limit);
    let answer = Trending {
        window: window_text(window),
        petitions: list
            .iter()
            .map(|(info, growth)| Entry {
                petition: PetitionJson::new(info),
                signatures_in_window: *growth,
            })
            .collect(),
    };
    json(
        StatusCode::OK,
        serde_json::to_string(&answer).unwrap_or_default(),
    )
}

/// The body of `PUT /v1/petitions/{id}`; every field is optional.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PetitionBody {
    /// RFC 3339 in UTC; absent or null: no deadline.
    deadline: Option<String>,
    /// Absent: keep the current thresholds (defaults for a new petition).
    thresholds: Option<Vec<u64>>,
    /// `none` or `email`; absent or null: keep the current mode (`none` for a new petition).
    validation: Option<String>,
    /// Absent: keep the current one (the largest threshold for a new petition).
    response_threshold: Option<u64>,
    /// Absent: keep the current number (90 for a new petition).
    response_due_days: Option<u32>,
}

/// `PUT /v1/petitions/{id}` (admin).
pub(crate) async fn put(state: &State, id: &str, headers: &HeaderMap, body: &mut Body) -> Response {
    let Admitted {
        body,
        permit: _permit,
        ..
    } = match admit_json(state, headers, body, Role::Admin, || {}).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let parsed: PetitionBody = if body.iter().all(u8::is_ascii_whitespace) {
        PetitionBody::default()
    } else {
        match parse_json(&body, "invalid_petition") {
            Ok(parsed) => parsed,
            Err(response) => return response,
        }
    };
    let deadline_ms = match parsed
        .deadline
        .as_deref()
        .map(|text| parse_time("deadline", text))
        .transpose()
    {
        Ok(deadline) => deadline,
        Err(message) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_petition",
                message,
            )
        }
    };
    let validation = match parsed.validation.as_deref().map(Validation::parse) {
        None => None,
        Some(Some(validation)) => Some(validation),
        Some(None) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_petition",
                "invalid validation: must be none or email",
            )
        }
    };
    drop(body);
    let mut spec = PetitionSpec::new(id);
    spec.deadline_ms = deadline_ms;
    spec.thresholds = parsed.thresholds;
    spec.validation = validation;
    spec.response_threshold = parsed.response_threshold;
    spec.response_due_days = parsed.response_due_days;
    let engine = state.engine.clone();
    let result = blocking(move || engine.register(spec)).await;
    state.generation.fetch_add(1, Ordering::AcqRel);
    match result {
        Ok(Ok(registered)) => {
            let status = match registered {
                Registered::Created => StatusCode::CREATED,
                Registered::Updated => StatusCode::OK,
            };
            match state.engine.petition(id) {
                Some(info) => json(status, petition_json(&info)),
                None => unknown_petition(),
            }
        }
        Ok(Err(e)) => petition_error(state, &e),
        Err(response) => response,
    }
}

/// `POST /v1/petitions/{id}/close` (admin).
pub(crate) async fn close(state: &State, id: &str, headers: &HeaderMap) -> Response {
    if let Err(response) = authorize(state, headers, Role::Admin) {
        return response;
    }
    let Some(_permit) = admit(state, &state.inflight) else {
        return shed(state);
    };
    let id = id.to_string();
    let engine = state.engine.clone();
    let result = blocking(move || engine.close_petition(&id)).await;
    state.generation.fetch_add(1, Ordering::AcqRel);
    match result {
        Ok(Ok(info)) => json(StatusCode::OK, petition_json(&info)),
        Ok(Err(e)) => petition_error(state, &e),
        Err(response) => response,
    }
}

/// The body of `PUT /v1/petitions/{id}/response`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponseBody {
    summary: String,
    url: Option<String>,
}

/// `PUT /v1/petitions/{id}/response` (admin): records the petition's response (replacing an
/// earlier one); the events feed records `responded`.
pub(crate) async fn respond(
    state: &State,
    id: &str,
    headers: &HeaderMap,
    body: &mut Body,
) -> Response {
    let (parsed, _, _permit) =
        match admin_json::<ResponseBody>(state, headers, body, "invalid_response").await {
            Ok(admitted) => admitted,
            Err(response) => return response,
        };
    let id = id.to_string();
    let engine = state.engine.clone();
    let result =
        blocking(move || engine.respond(&id, &parsed.summary, parsed.url.as_deref())).await;
    state.generation.fetch_add(1, Ordering::AcqRel);
    match result {
        Ok(Ok(info)) => json(StatusCode::OK, petition_json(&info)),
        Ok(Err(PetitionError::Invalid(e))) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_response", e)
        }
        Ok(Err(e)) => petition_error(state, &e),
        Err(response) => response,
    }
}

/// The answer to a refused registration or close.
fn petition_error(state: &State, e: &PetitionError) -> Response {
    match e {
        PetitionError::Invalid(_) => error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_petition", e),
        PetitionError::UnknownPetition => unknown_petition(),
        PetitionError::TooMany => error(StatusCode::CONFLICT, "too_many_petitions", e),
        PetitionError::Unsupported => error(StatusCode::NOT_IMPLEMENTED, "unsupported", e),
        PetitionError::ReadOnly => {
            retry_later(state, StatusCode::SERVICE_UNAVAILABLE, "read_only", e)
        }
        PetitionError::StorageUnavailable => retry_later(
            state,
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            e,
        ),
        _ => retry_later(state, StatusCode::SERVICE_UNAVAILABLE, "shutting_down", e),
    }
}

pub(super) fn unknown_petition() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "unknown_petition",
        "no petition has this id",
    )
}
