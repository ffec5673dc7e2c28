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
use std::sync::Arc;

use engine::ListName;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Request, StatusCode, Version};

use crate::request::{finish_unread, Body};
use crate::response::{error, Reply, Response};
use crate::routes::{route, NoRoute, RouteId};
use crate::state::State;
use crate::watchdog::Clock;

/// The service function: routes, answers, counts.
pub(crate) async fn handle(
    state: Arc<State>,
    clock: Arc<Clock>,
    request: Request<Incoming>,
) -> Result<hyper::Response<Reply>, Infallible> {
    clock.request_started();
    let (parts, body) = request.into_parts();
    let get = parts.method == hyper::Method::GET || parts.method == hyper::Method::HEAD;
    if get && parts.uri.path() == EVENT_STREAM {
        // The one streamed answer: the connection is serving until the stream ends (its body
        // marks the request done when dropped).
        let response = events::stream(&state, &clock, &parts.headers, parts.uri.query());
        state
            .metrics
            .request(Some(RouteId::EventStream), response.status().as_u16());
        if let Reply::Full(_) = response.body() {
            clock.request_done();
        }
        return Ok(response);
    }
    let mut body = Body::new(body);
    let (route_id, mut response) = dispatch(&state, &parts, &mut body).await;
    finish_unread(&mut body, &mut response).await;
    state.metrics.request(route_id, response.status().as_u16());
    clock.request_done();
    Ok(response.map(Reply::Full))
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
        RouteId::Metrics => operations::metrics(state),
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
