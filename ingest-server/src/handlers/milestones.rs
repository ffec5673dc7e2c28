//! Milestones: `GET /v1/milestones`, the feed of thresholds crossed by petitions (and crossed
//! back down when an invalidation lowers a count), in order; a client resumes with `after` set
//! to the `next_after` it was given.

use hyper::StatusCode;
use serde::Serialize;

use crate::request::feed_query;
use crate::response::{json, rfc3339, Response};
use crate::state::State;

/// `GET /v1/milestones?after=SEQ&limit=N`.
pub(crate) fn list(state: &State, query: Option<&str>) -> Response {
    let (after, limit) = match feed_query(query, "a milestone") {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    #[derive(Serialize)]
    struct Item<'a> {
        seq: u64,
        petition: &'a str,
        threshold: u64,
        /// `threshold_crossed` or `threshold_regressed`.
        #[serde(rename = "type")]
        kind: &'static str,
        reached_at: String,
    }
    #[derive(Serialize)]
    struct Feed<'a> {
        milestones: Vec<Item<'a>>,
        next_after: u64,
    }
    let list = state.engine.milestones_after(after, limit);
    let feed = Feed {
        next_after: list.last().map_or(after, |m| m.seq),
        milestones: list
            .iter()
            .map(|m| Item {
                seq: m.seq,
                petition: &m.petition,
                threshold: m.threshold,
                kind: m.kind.as_str(),
                reached_at: rfc3339(m.reached_at_ms),
            })
            .collect(),
    };
    json(
        StatusCode::OK,
        serde_json::to_string(&feed).unwrap_or_default(),
    )
}
