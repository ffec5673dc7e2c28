//! Request handlers, one module per resource: `signatures`, `validations`, `petitions`,
//! `places` (a petition's countries, regions and history), `invalidations`, `milestones`,
//! `events` (the feed and its live stream), `webhooks`, `operations` (metrics, health, the
//! OpenAPI document) and `console` (the operator's page). This module is the service function hyper calls for every request: it
//! matches the request against [`crate::routes::ROUTES`], calls the route's handler and counts
//! the answer.

mod console;
mod controls;
mod events;
mod invalidations;
mod milestones;
mod operations;
mod petitions;
mod places;
mod signatures;
mod validations;
mod webhooks;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use engine::ListName;

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Request, StatusCode, Version};

use crate::request::{finish_unread, Body};
use crate::response::{error, Reply, Response};
use crate::routes::{route, NoRoute, RouteId};
use crate::state::State;
use crate::watchdog::Clock;

/// The service function: routes, answers, counts, and tags the answer with the request's id.
pub(crate) async fn handle(
    state: Arc<State>,
    clock: Arc<Clock>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<hyper::Response<Reply>, Infallible> {
    let started = Instant::now();
    clock.request_started();
    let (parts, body) = request.into_parts();
    let get = parts.method == hyper::Method::GET || parts.method == hyper::Method::HEAD;
    if get && parts.uri.path() == EVENT_STREAM {
        // The one streamed answer: the connection is serving until the stream ends (its body
        // marks the request done when dropped).
        let mut response = events::stream(&state, &clock, &parts.headers, parts.uri.query());
        finish(
            &state,
            &parts,
            Some(RouteId::EventStream),
            &mut response,
            started,
            peer,
        );
        if let Reply::Full(_) = response.body() {
            clock.request_done();
        }
        return Ok(response);
    }
    let mut body = Body::new(body);
    let (route_id, mut response) = dispatch(&state, &parts, &mut body).await;
    finish_unread(&mut body, &mut response).await;
    finish(&state, &parts, route_id, &mut response, started, peer);
    clock.request_done();
    Ok(response.map(Reply::Full))
}

/// Answers a request another node forwarded over NATS (see `cluster::forward`), its body
/// already read: routed, answered and counted like one from a connection.
pub(crate) async fn forwarded(
    state: &Arc<State>,
    parts: Parts,
    body: bytes::Bytes,
    peer: SocketAddr,
) -> Response {
    let started = Instant::now();
    let mut body = Body::whole(body);
    let (route_id, mut response) = dispatch(state, &parts, &mut body).await;
    finish(state, &parts, route_id, &mut response, started, peer);
    response
}

/// What every answer gets last: its request's id, `Connection: close` while the server is
/// shutting down, its count and time in the metrics, and its access log line.
fn finish<B>(
    state: &State,
    request: &Parts,
    route_id: Option<RouteId>,
    response: &mut hyper::Response<B>,
    started: Instant,
    peer: SocketAddr,
) {
    let took = started.elapsed();
    let status = response.status().as_u16();
    state.metrics.request(route_id, status, took);
    let request_id = request_id(&request.headers);
    if state.config.access_log {
        tracing::info!(
            target: "access",
            method = %request.method,
            path = request.uri.path(),
            route = route_id.map_or("unmatched", |r| RouteId::LABELS[r as usize]),
            status,
            micros = took.as_micros() as u64,
            request_id = request_id.to_str().unwrap_or(""),
            peer = %peer,
            "request"
        );
    }
    let headers = response.headers_mut();
    if state.draining.load(Ordering::Relaxed) {
        // During the shutdown delay: the client opens its next connection, which the load
        // balancer sends elsewhere once it has seen /readyz fail.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    headers.insert(REQUEST_ID, request_id);
}

/// `X-Request-Id`: taken from the request when it sends a usable one (1 to 128 visible ASCII
/// characters), else made: 32 random hex digits. Echoed on the answer and logged with it.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(given) = headers.get(REQUEST_ID) {
        let bytes = given.as_bytes();
        if !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic()) {
            return given.clone();
        }
    }
    let mut text = [0u8; 32];
    let random: u128 = rand::random();
    for (at, digit) in text.iter_mut().enumerate() {
        let nibble = (random >> (4 * at)) as u8 & 0xf;
        *digit = b"0123456789abcdef"[usize::from(nibble)];
    }
    HeaderValue::from_bytes(&text).expect("hex digits are a valid header value")
}

/// The path of the event stream (`RouteId::EventStream`), answered before the other routes.
const EVENT_STREAM: &str = "/v1/events/stream";

async fn dispatch(state: &State, request: &Parts, body: &mut Body) -> (Option<RouteId>, Response) {
    if request.version == Version::HTTP_11 && !request.headers.contains_key(header::HOST) {
        // RFC 9112 §3.2: a server must answer 400 to an HTTP/1.1 request without Host.
        return (
            None,
            error(
                StatusCode::BAD_REQUEST,
                "missing_host",
                "an HTTP/1.1 request must have a Host header",
            ),
        );
    }
    let (route_id, id) = match route(&request.method, request.uri.path()) {
        Ok(found) => found,
        Err(NoRoute::NotFound) => {
            return (
                None,
                error(StatusCode::NOT_FOUND, "not_found", "no such route"),
            )
        }
        Err(NoRoute::MethodNotAllowed(allow)) => {
            let mut response = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format_args!("this route takes {allow}"),
            );
            if let Ok(allow) = HeaderValue::from_str(&allow) {
                response.headers_mut().insert(header::ALLOW, allow);
            }
            return (None, response);
        }
    };
    let response = match route_id {
        RouteId::Sign => signatures::sign(state, id, &request.headers, body).await,
        RouteId::Batch => signatures::batch(state, &request.headers, body).await,
        RouteId::PetitionGet => petitions::get(state, id, &request.headers),
        RouteId::PetitionList => petitions::list(state, request.uri.query()),
        RouteId::PetitionCountries => {
            places::countries(state, id, request.uri.query(), &request.headers)
        }
        RouteId::PetitionRegions => places::regions(state, id, request.uri.query()),
        RouteId::PetitionHistory => {
            places::history(state, id, request.uri.query(), &request.headers)
        }
        RouteId::PetitionPut => petitions::put(state, id, &request.headers, body).await,
        RouteId::PetitionClose => petitions::close(state, id, &request.headers).await,
        RouteId::Milestones => milestones::list(state, request.uri.query()),
        RouteId::Events => events::list(state, &request.headers, request.uri.query()).await,
        RouteId::EventStream => unreachable!("the event stream is answered by `handle`"),
        RouteId::PetitionRespond => petitions::respond(state, id, &request.headers, body).await,
        RouteId::BlockList => controls::list(state, &request.headers, ListName::Block),
        RouteId::BlockAdd => controls::add(state, &request.headers, body, ListName::Block).await,
        RouteId::BlockDelete => {
            controls::delete(state, id, &request.headers, ListName::Block).await
        }
        RouteId::AllowList => controls::list(state, &request.headers, ListName::Allow),
        RouteId::AllowAdd => controls::add(state, &request.headers, body, ListName::Allow).await,
        RouteId::AllowDelete => {
            controls::delete(state, id, &request.headers, ListName::Allow).await
        }
        RouteId::SwitchesGet => controls::switches(state, &request.headers),
        RouteId::SwitchesPut => controls::put_switches(state, &request.headers, body).await,
        RouteId::PetitionPause => controls::pause(state, id, &request.headers, true).await,
        RouteId::PetitionResume => controls::pause(state, id, &request.headers, false).await,
        RouteId::PetitionSources => {
            controls::sources(state, id, request.uri.query(), &request.headers)
        }
        RouteId::WebhookList => webhooks::list(state, &request.headers),
        RouteId::WebhookPut => webhooks::put(state, id, &request.headers, body).await,
        RouteId::WebhookGet => webhooks::get(state, id, &request.headers),
        RouteId::WebhookDelete => webhooks::delete(state, id, &request.headers).await,
        RouteId::Validate => validations::validate(state, &request.headers, body).await,
        RouteId::InvalidationCreate => invalidations::create(state, &request.headers, body).await,
        RouteId::InvalidationList => invalidations::list(state, &request.headers),
        RouteId::InvalidationGet => invalidations::get(state, id, &request.headers),
        RouteId::InvalidationCancel => invalidations::cancel(state, id, &request.headers).await,
        RouteId::Metrics => operations::metrics(state, &request.headers),
        RouteId::Livez => operations::livez(),
        RouteId::Readyz => operations::readyz(state),
        RouteId::OpenApi => operations::openapi(),
        RouteId::Console => console::page(),
        RouteId::Root => console::root(),
    };
    (Some(route_id), response)
}

/// Runs a blocking engine call (one that waits for a synced write or reads the store) off the
/// async workers.
// The error is the finished answer to send, built once per failed call: its size does not
// matter.
#[allow(clippy::result_large_err)]
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(call).await.map_err(|_| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the engine call failed",
        )
    })
}
