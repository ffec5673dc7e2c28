//! Abuse controls (admin): the block and allow lists, the switches, and pausing one petition.
//!
//! - `GET|POST /v1/admin/blocks`, `DELETE /v1/admin/blocks/{id}`: entries of kind `ip` (an
//!   address or a CIDR network, v4 or v6), `email_domain` (`example.org`, or `*.example.org`
//!   for every domain under it) or `email`. A blocked signature is answered `403 blocked`.
//! - the same under `/v1/admin/allows`, kind `ip` only: addresses and networks exempt from the
//!   limits of signatures per address.
//! - `GET|PUT /v1/admin/switches` `{"paused","read_only"}`: `paused` stops new signatures,
//!   `read_only` every change; both are answered `503` with `Retry-After`.
//! - `POST /v1/petitions/{id}/pause|resume`: one petition's signing (`503 signing_paused`).
//!
//! Every change is synced before it is answered, applies to every signature after it, and
//! records who made it (the key's role and the first 8 hex digits of its SHA-256) and when.

use std::sync::atomic::Ordering;

use engine::{
    EntryKind, EntrySpec, GuardError, ListEntry, ListName, SourceCount, SourceHour, SourcesError,
    Switches,
};
use hyper::header::HeaderMap;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use super::blocking;
use super::petitions::{petition_json, unknown_petition, ChangeJson};
use crate::auth::Role;
use crate::request::{admin_json, admit, authorize, query_pairs, Body};
use crate::response::{bad_parameter, error, json, retry_later, rfc3339, shed, Response};
use crate::state::State;

/// The body of `POST /v1/admin/blocks` and `/allows`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryBody {
    kind: String,
    value: String,
}

/// A list entry as the API shows it.
#[derive(Serialize)]
struct EntryJson<'a> {
    id: u64,
    kind: &'static str,
    value: &'a str,
    added: ChangeJson<'a>,
}

impl<'a> EntryJson<'a> {
    fn new(entry: &'a ListEntry) -> EntryJson<'a> {
        EntryJson {
            id: entry.id,
            kind: entry.kind.as_str(),
            value: &entry.value,
            added: ChangeJson::new(&entry.added),
        }
    }
}

fn entry_json(entry: &ListEntry) -> String {
    serde_json::to_string(&EntryJson::new(entry)).unwrap_or_default()
}

/// `GET /v1/admin/blocks` or `/allows`.
pub(crate) fn list(state: &State, headers: &HeaderMap, list: ListName) -> Response {
    if let Err(response) = authorize(state, headers, Role::Admin) {
        return response;
    }
    #[derive(Serialize)]
    struct List<'a> {
        entries: Vec<EntryJson<'a>>,
    }
    let entries = state.engine.list_entries(list);
    let list = List {
        entries: entries.iter().map(EntryJson::new).collect(),
    };
    json(
        StatusCode::OK,
        serde_json::to_string(&list).unwrap_or_default(),
    )
}

/// `POST /v1/admin/blocks` or `/allows`: 201 with the entry.
pub(crate) async fn add(
    state: &State,
    headers: &HeaderMap,
    body: &mut Body,
    list: ListName,
) -> Response {
    let (parsed, caller, _permit) =
        match admin_json::<EntryBody>(state, headers, body, "invalid_entry").await {
            Ok(admitted) => admitted,
            Err(response) => return response,
        };
    let Some(kind) = EntryKind::parse(&parsed.kind) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_entry",
            format_args!("kind: {:?} is none of ip, email_domain, email", parsed.kind),
        );
    };
    let spec = EntrySpec {
        list,
        kind,
        value: parsed.value,
        by: state.keys.who(caller).to_owned(),
    };
    let engine = state.engine.clone();
    match blocking(move || engine.add_list_entry(spec)).await {
        Ok(Ok(entry)) => json(StatusCode::CREATED, entry_json(&entry)),
        Ok(Err(e)) => guard_error(state, &e),
        Err(response) => response,
    }
}

/// `DELETE /v1/admin/blocks/{id}` or `/allows/{id}`: 200 with the entry removed.
pub(crate) async fn delete(
    state: &State,
    id: &str,
    headers: &HeaderMap,
    list: ListName,
) -> Response {
    if let Err(response) = authorize(state, headers, Role::Admin) {
        return response;
    }
    let Some(_permit) = admit(state, &state.inflight) else {
        return shed(state);
    };
    // An id of the other list is unknown here: a block is never removed through `/allows`.
    let Some(id) = id
        .parse::<u64>()
        .ok()
        .filter(|&id| state.engine.list_entry(id).is_some_and(|e| e.list == list))
    else {
        return unknown_entry(list);
    };
    let engine = state.engine.clone();
    match blocking(move || engine.remove_list_entry(id)).await {
        Ok(Ok(entry)) => json(StatusCode::OK, entry_json(&entry)),
        Ok(Err(e)) => guard_error(state, &e),
        Err(response) => response,
    }
}

/// The switches as the API shows them.
#[derive(Serialize)]
struct SwitchesJson<'a> {
    paused: bool,
    read_only: bool,
    /// The last change; `null` if they were never set.
    changed: Option<ChangeJson<'a>>,
}

fn switches_json(switches: &Switches) -> String {
    let shown = SwitchesJson {
        paused: switches.paused,
        read_only: switches.read_only,
        changed: switches.changed.as_ref().map(ChangeJson::new),
    };
    serde_json::to_string(&shown).unwrap_or_default()
}

/// `GET /v1/admin/switches`.
pub(crate) fn switches(state: &State, headers: &HeaderMap) -> Response {
    if let Err(response) = authorize(state, headers, Role::Admin) {
        return response;
    }
    json(StatusCode::OK, switches_json(&state.engine.switches()))
}

/// The body of `PUT /v1/admin/switches`: a switch left out keeps its setting.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchesBody {
    paused: Option<bool>,
    read_only: Option<bool>,
}

/// `PUT /v1/admin/switches`.
pub(crate) async fn put_switches(state: &State, headers: &HeaderMap, body: &mut Body) -> Response {
    let (parsed, caller, _permit) =
        match admin_json::<SwitchesBody>(state, headers, body, "invalid_switches").await {
            Ok(admitted) => admitted,
            Err(response) => return response,
        };
    let now = state.engine.switches();
    let paused = parsed.paused.unwrap_or(now.paused);
    let read_only = parsed.read_only.unwrap_or(now.read_only);
    let by = state.keys.who(caller).to_owned();
    let engine = state.engine.clone();
    let result = blocking(move || engine.set_switches(paused, read_only, &by)).await;
    state.generation.fetch_add(1, Ordering::AcqRel);
    match result {
        Ok(Ok(switches)) => json(StatusCode::OK, switches_json(&switches)),
        Ok(Err(e)) => guard_error(state, &e),
        Err(response) => response,
    }
}

/// `POST /v1/petitions/{id}/pause` (`pause`) or `/resume`: the petition as it is after.
pub(crate) async fn pause(state: &State, id: &str, headers: &HeaderMap, pause: bool) -> Response {
    let caller = match authorize(state, headers, Role::Admin) {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let Some(_permit) = admit(state, &state.inflight) else {
        return shed(state);
    };
    let id = id.to_owned();
    let by = state.keys.who(caller).to_owned();
    let engine = state.engine.clone();
    let result = blocking(move || {
        if pause {
            engine.pause_petition(&id, &by)
        } else {
            engine.resume_petition(&id)
        }
    })
    .await;
    state.generation.fetch_add(1, Ordering::AcqRel);
    match result {
        Ok(Ok(info)) => json(StatusCode::OK, petition_json(&info)),
        Ok(Err(GuardError::UnknownPetition)) => unknown_petition(),
        Ok(Err(e)) => guard_error(state, &e),
        Err(response) => response,
    }
}

fn unknown_entry(list: ListName) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format_args!("no entry of the {} list has this id", list.as_str()),
    )
}

/// The answer to a refused list or switch change.
fn guard_error(state: &State, e: &GuardError) -> Response {
    match e {
        GuardError::Invalid { .. } => error(StatusCode::UNPROCESSABLE_ENTITY, e.code(), e),
        GuardError::Listed(_) | GuardError::TooMany(_) => error(StatusCode::CONFLICT, e.code(), e),
        GuardError::UnknownEntry => error(StatusCode::NOT_FOUND, "not_found", e),
        GuardError::UnknownPetition => unknown_petition(),
        _ => retry_later(state, StatusCode::SERVICE_UNAVAILABLE, e.code(), e),
    }
}

/// Most sources of each kind a read of trending sources returns.
pub(crate) const SOURCES_LIMIT_MAX: usize = 100;
/// Sources of each kind by default.
pub(crate) const SOURCES_LIMIT_DEFAULT: usize = 10;

/// `GET /v1/petitions/{id}/sources?window=1h&hour=current|previous&limit=10` (admin: it names
/// addresses): the top addresses, networks and email domains signing the petition in a clock
/// hour, each with its count and error bound (the true count lies in `[count - error, count]`).
/// Sources are counted per clock hour (`window=1h`, the only window).
pub(crate) fn sources(
    state: &State,
    id: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    if let Err(response) = authorize(state, headers, Role::Admin) {
        return response;
    }
    let mut hour = SourceHour::Current;
    let mut limit = SOURCES_LIMIT_DEFAULT;
    for (key, value) in query_pairs(query) {
        match key {
            "window" if value == "1h" => {}
            "window" => {
                return bad_parameter("window", "window is 1h: sources are counted per clock hour")
            }
            "hour" => match value {
                "current" => hour = SourceHour::Current,
                "previous" => hour = SourceHour::Previous,
                _ => return bad_parameter("hour", "hour is current or previous"),
            },
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=SOURCES_LIMIT_MAX).contains(&n) => limit = n,
                _ => return bad_parameter("limit", "limit is 1 to 100"),
            },
            _ => return bad_parameter(key, "known parameters: window, hour, limit"),
        }
    }
    let top = match state.engine.sources(id, hour, limit) {
        Ok(top) => top,
        Err(SourcesError::UnknownPetition) => return unknown_petition(),
        Err(SourcesError::Off) => {
            return error(
                StatusCode::NOT_FOUND,
                "sources_off",
                "trending sources are off on this server (--source-slots off)",
            )
        }
    };
    #[derive(Serialize)]
    struct Sources<'a> {
        petition: &'a str,
        window: &'static str,
        hour: &'static str,
        since: String,
        until: String,
        at: String,
        alert_threshold: Option<u64>,
        ips: Vec<CountJson<'a>>,
        networks: Vec<CountJson<'a>>,
        email_domains: Vec<CountJson<'a>>,
    }
    let answer = Sources {
        petition: id,
        window: "1h",
        hour: match hour {
            SourceHour::Current => "current",
            SourceHour::Previous => "previous",
        },
        since: rfc3339(top.hour_start_ms),
        until: rfc3339(top.hour_start_ms + engine::SOURCE_HOUR_MS),
        at: rfc3339(top.at_ms),
        alert_threshold: state
            .engine
            .sources_config()
            .and_then(|c| c.alert_threshold),
        ips: count_json(&top.ips),
        networks: count_json(&top.networks),
        email_domains: count_json(&top.email_domains),
    };
    json(
        StatusCode::OK,
        serde_json::to_string(&answer).unwrap_or_default(),
    )
}

#[derive(Serialize)]
struct CountJson<'a> {
    source: &'a str,
    count: u64,
    error: u64,
}

fn count_json(list: &[SourceCount]) -> Vec<CountJson<'_>> {
    list.iter()
        .map(|c| CountJson {
            source: &c.source.value,
            count: c.count,
            error: c.error,
        })
        .collect()
}
