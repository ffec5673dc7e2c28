//! Where a petition's signatures come from and when they came: `GET /v1/petitions/{id}/countries`,
//! `GET /v1/petitions/{id}/regions` and `GET /v1/petitions/{id}/history`.
//!
//! Countries and history are what a petition page polls beside the petition itself, so they are
//! served like petition reads: rendered once per change, kept per worker thread with their ETag
//! and reused while their [`Stamp`] is the current one (see [`RENDERED`] for the bounds).
//! Regions, read by analysts rather than by every visitor, are rendered on each read.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use engine::{Bucket, CountryCount, RegionCount, Resolution};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::StatusCode;
use serde::Serialize;

use super::petitions::{jobs_settled, unknown_petition};
use crate::request::query_pairs;
use crate::response::{bad_parameter, cacheable, etag_of, json, rfc3339, Response};
use crate::state::State;

/// Most entries of a countries answer: the 249 assigned ISO 3166-1 codes and `ZZ`.
pub(crate) const COUNTRIES_MAX: usize = 250;
/// Most entries of a regions answer, and how many by default.
const REGIONS_LIMIT_MAX: usize = 10_000;
const REGIONS_LIMIT_DEFAULT: usize = 1_000;

/// A petition's signatures from one country, as the API writes it (in a countries answer and
/// in every petition view).
#[derive(Serialize)]
pub(crate) struct CountryJson<'a> {
    country: &'a str,
    count: u64,
}

impl<'a> CountryJson<'a> {
    pub(crate) fn new(country: &'a CountryCount) -> CountryJson<'a> {
        CountryJson {
            country: &country.country,
            count: country.count,
        }
    }
}

/// Which cached answer of a petition: its countries up to a limit, or its history at a
/// resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Countries { limit: usize },
    History(Resolution),
}

/// What a cached answer was rendered from, as far as a cheap check can tell; the answer is
/// exact while its stamp is the current one.
///
/// - `count`: the petition's validated count. Every change of the counts by place and of the
///   history changes it (a signature counted or validated adds one, an invalidated one takes
///   one off); pending signatures, their expiry and admin changes show in neither. Only
///   invalidations take a count down, so only with them can it come back to a value it had
///   while the counts by place moved: hence
/// - `jobs`: [`State::jobs_settled`], read after [`jobs_settled`] found no invalidation job
///   running. While a job may run nothing is reused; once one is found finished this moves on
///   and every answer rendered before is stale.
/// - `minute`: for the minute history, the minute of [`engine::Engine::now_ms`] before the
///   engine was asked: the 48 h window moves with it and its oldest minutes leave the answer.
///   0 for answers time alone does not change (countries, the hourly history).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    count: u64,
    jobs: u64,
    minute: u64,
}

/// One rendered answer.
struct Rendered {
    view: View,
    stamp: Stamp,
    body: Bytes,
    /// The quoted ETag, ready to send.
    etag: HeaderValue,
}

/// One server's rendered answers in one worker thread, by petition id.
#[derive(Default)]
struct Cache {
    petitions: HashMap<Box<str>, Vec<Rendered>>,
    /// The bytes of every body held.
    bytes: usize,
}

/// Most petitions whose answers one worker thread keeps for one server.
const CACHED_PETITIONS_MAX: usize = 1_024;
/// Most bytes of bodies one worker thread keeps for one server (a minute history of a petition
/// signed every minute for 48 hours is ~150 KB; its countries at most ~8 KB).
const CACHED_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most answers kept per petition: its two histories and two countries limits.
const VIEWS_PER_PETITION_MAX: usize = 4;

thread_local! {
    /// This thread's rendered countries and history answers, by server ([`State::instance`]).
    /// Per thread, like the petition reads' cache and for the same reason: nothing shared is
    /// written on a read. Bounded by [`CACHED_PETITIONS_MAX`] petitions and
    /// [`CACHED_BYTES_MAX`] bytes per server: past either, other petitions' answers are dropped
    /// (whichever the map yields first, in effect at random).
    static RENDERED: RefCell<HashMap<u64, Cache>> = RefCell::new(HashMap::new());
}

impl Cache {
    /// The body and ETag of `view` of petition `id`, if rendered at `stamp`.
    fn get(&self, id: &str, view: View, stamp: Stamp) -> Option<(Bytes, HeaderValue)> {
        self.petitions
            .get(id)?
            .iter()
            .find(|r| r.view == view && r.stamp == stamp)
            .map(|r| (r.body.clone(), r.etag.clone()))
    }

    /// Keeps `rendered` as petition `id`'s answer for its view, then drops what is over the
    /// bounds.
    fn put(&mut self, id: &str, rendered: Rendered) {
        self.bytes += rendered.body.len();
        let views = match self.petitions.get_mut(id) {
            Some(views) => views,
            None => self.petitions.entry(id.into()).or_default(),
        };
        if let Some(at) = views.iter().position(|r| r.view == rendered.view) {
            self.bytes -= views.remove(at).body.len();
        } else if views.len() >= VIEWS_PER_PETITION_MAX {
            self.bytes -= views.remove(0).body.len();
        }
        views.push(rendered);
        while self.petitions.len() > CACHED_PETITIONS_MAX || self.bytes > CACHED_BYTES_MAX {
            let Some(victim) = self.petitions.keys().find(|k| ***k != *id).cloned() else {
                break;
            };
            let dropped = self.petitions.remove(&victim).unwrap_or_default();
            self.bytes -= dropped.iter().map(|r| r.body.len()).sum::<usize>();
        }
    }
}

/// The body and ETag of `view` of petition `id`: from this thread's cache while its stamp is
/// current, else rendered by `render`. Given the count read before it, `render` returns the
/// body and the count the body shows (that one, or the one the engine read with its answer),
/// or `None` for an unknown petition. `None`: no such petition.
fn rendered(
    state: &State,
    id: &str,
    view: View,
    render: impl FnOnce(u64) -> Option<(String, u64)>,
) -> Option<(Bytes, HeaderValue)> {
    // Settle first: the mark it may move must be the one read below. Then the minute, then
    // the count, each before the engine's answer, so a stamp is never newer than its answer.
    let settled = jobs_settled(state);
    let jobs = state.jobs_settled.load(Ordering::Acquire);
    let minute = match view {
        View::History(Resolution::Minute) => state.engine.now_ms() / 60_000,
        _ => 0,
    };
    let count = state.engine.count(id)?;
    let stamp = Stamp {
        count,
        jobs,
        minute,
    };
    if settled {
        let cached =
            RENDERED.with_borrow(|servers| servers.get(&state.instance)?.get(id, view, stamp));
        if cached.is_some() {
            return cached;
        }
    }
    let (body, shown) = render(count)?;
    let etag = etag_of(body.as_bytes());
    let body = Bytes::from(body);
    let answer = (body.clone(), etag.clone());
    if settled {
        // An answer the engine read with its count (countries) is stamped with that count:
        // it shows exactly the counts by place that go with it.
        let stamp = Stamp {
            count: shown,
            ..stamp
        };
        RENDERED.with_borrow_mut(|servers| {
            servers.entry(state.instance).or_default().put(
                id,
                Rendered {
                    view,
                    stamp,
                    body,
                    etag,
                },
            );
        });
    }
    Some(answer)
}

/// `limit` of a query: `1..=max`, else 400 naming it.
// The error is the finished answer to send, built once per refused request.
#[allow(clippy::result_large_err)]
fn parse_limit(value: &str, max: usize) -> Result<usize, Response> {
    match value.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(bad_parameter("limit", &format!("limit is 1 to {max}"))),
    }
}

/// `GET /v1/petitions/{id}/countries?limit=N`: the petition's count and its signatures by
/// country, the largest first (ties by code), `ZZ` for those that name none; all of them
/// (at most 250) unless `limit` says fewer.
pub(crate) fn countries(
    state: &State,
    id: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    let mut limit = COUNTRIES_MAX;
    for (key, value) in query_pairs(query) {
        match key {
            "limit" => match parse_limit(value, COUNTRIES_MAX) {
                Ok(n) => limit = n,
                Err(response) => return response,
            },
            _ => return bad_parameter(key, "known parameters: limit"),
        }
    }
    let render = |_| {
        let (count, countries) = state.engine.countries(id)?;
        #[derive(Serialize)]
        struct Countries<'a> {
            petition: &'a str,
            count: u64,
            countries: Vec<CountryJson<'a>>,
        }
        let answer = Countries {
            petition: id,
            count,
            countries: countries.iter().take(limit).map(CountryJson::new).collect(),
        };
        Some((serde_json::to_string(&answer).unwrap_or_default(), count))
    };
    match rendered(state, id, View::Countries { limit }, render) {
        Some((body, etag)) => cacheable(headers, body, etag),
        None => unknown_petition(),
    }
}

/// `GET /v1/petitions/{id}/history?resolution=minute|hour`: how the petition's count changed
/// in each minute of the last 48 hours (the default) or each hour of its life, oldest first,
/// empty buckets left out.
pub(crate) fn history(
    state: &State,
    id: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    let mut resolution = Resolution::Minute;
    for (key, value) in query_pairs(query) {
        match key {
            "resolution" => match Resolution::parse(value) {
                Some(r) => resolution = r,
                None => return bad_parameter("resolution", "resolution is minute or hour"),
            },
            _ => return bad_parameter(key, "known parameters: resolution"),
        }
    }
    // The history, read after the count, shows at least what the count counts: the engine
    // changes both under the petition's breakdown lock.
    let render = |count| {
        let buckets = state.engine.history(id, resolution)?;
        Some((history_json(id, resolution, &buckets), count))
    };
    match rendered(state, id, View::History(resolution), render) {
        Some((body, etag)) => cacheable(headers, body, etag),
        None => unknown_petition(),
    }
}

fn history_json(id: &str, resolution: Resolution, buckets: &[Bucket]) -> String {
    #[derive(Serialize)]
    struct BucketJson {
        start: String,
        count: i64,
    }
    #[derive(Serialize)]
    struct History<'a> {
        petition: &'a str,
        resolution: &'static str,
        buckets: Vec<BucketJson>,
    }
    let answer = History {
        petition: id,
        resolution: resolution.as_str(),
        buckets: buckets
            .iter()
            .map(|b| BucketJson {
                start: rfc3339(b.start_ms),
                count: b.count,
            })
            .collect(),
    };
    serde_json::to_string(&answer).unwrap_or_default()
}

/// `GET /v1/petitions/{id}/regions?country=CC&limit=N`: the petition's signatures by region,
/// the largest first (ties by country, then region), of one country or of all; signatures
/// without a region are not in it. At most `limit` (default 1,000, at most 10,000).
pub(crate) fn regions(state: &State, id: &str, query: Option<&str>) -> Response {
    let mut limit = REGIONS_LIMIT_DEFAULT;
    let mut country = None;
    for (key, value) in query_pairs(query) {
        match key {
            "limit" => match parse_limit(value, REGIONS_LIMIT_MAX) {
                Ok(n) => limit = n,
                Err(response) => return response,
            },
            "country" => country = Some(value),
            _ => return bad_parameter(key, "known parameters: country, limit"),
        }
    }
    let regions = match state.engine.regions(id, country) {
        Ok(Some(regions)) => regions,
        Ok(None) => return unknown_petition(),
        Err(e) => return bad_parameter("country", e.reason),
    };
    #[derive(Serialize)]
    struct RegionJson<'a> {
        /// Absent when the answer is for one country.
        #[serde(skip_serializing_if = "Option::is_none")]
        country: Option<&'a str>,
        region: &'a str,
        count: u64,
    }
    #[derive(Serialize)]
    struct Regions<'a> {
        petition: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        country: Option<String>,
        regions: Vec<RegionJson<'a>>,
    }
    let one_country = country.is_some();
    let answer = Regions {
        petition: id,
        country: country.map(str::to_ascii_uppercase),
        regions: regions
            .iter()
            .take(limit)
            .map(|r: &RegionCount| RegionJson {
                country: (!one_country).then_some(r.country.as_str()),
                region: &r.region,
                count: r.count,
            })
            .collect(),
    };
    json(
        StatusCode::OK,
        serde_json::to_string(&answer).unwrap_or_default(),
    )
}
