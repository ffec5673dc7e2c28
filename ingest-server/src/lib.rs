//! The HTTP front door of the petition engine: API v1 over hyper 1.x and tokio.
//!
//! The server is a thin layer: every answer comes from the [`engine::Engine`] it wraps, which
//! is the only source of truth. What the server adds is HTTP: routing, JSON and NDJSON, API keys,
//! request limits and load shedding, Prometheus metrics, readiness and a graceful drain.
//!
//! Layout:
//! - `server`: the listener, the connection limit, the graceful drain;
//! - `watchdog`: header-read and idle timeouts of each connection;
//! - `routes`: the route table, the one list the router and the OpenAPI test use;
//! - `handlers`: the service function and one module per resource (`signatures`,
//!   `validations`, `petitions`, `invalidations`, `milestones`, `events`, `webhooks`,
//!   `operations`);
//! - `events`: an event's JSON and SSE renderings, and the hub that renders each new event
//!   once for every stream reader;
//! - `delivery`: one task per webhook, delivering its events in order, signed, with retries,
//!   moving its durable cursor;
//! - `webhooks`: delivery's parts: Standard Webhooks signing, the guard against server-side
//!   request forgery, one attempt over HTTP/1.1 and the backoff;
//! - `request`: what handlers check of a request (key, in-flight slot, content type, body);
//! - `response`: answers, the error shape, `Retry-After`;
//! - `state`: what every handler shares;
//! - `auth`, `config`, `metrics`: API keys and rate limits, settings, Prometheus counters;
//! - `cluster`: the replicated deployment on NATS JetStream (owner, standbys, forwarding).
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use ingest_server::{Server, ServerConfig};
//!
//! let engine = engine::Engine::open(engine::Config::persistent("petition-data"))?;
//! let server = Server::bind(ServerConfig::default(), engine.clone()).await?;
//! println!("listening on {}", server.local_addr());
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! engine.close()?;
//! # Ok(())
//! # }
//! ```

mod auth;
pub mod cluster;
mod config;
mod delivery;
mod events;
mod exposition;
mod handlers;
mod metrics;
mod request;
mod response;
mod routes;
mod server;
mod state;
mod watchdog;
pub mod webhooks;

pub use auth::{ApiKey, ApiKeyError, Role};
pub use config::ServerConfig;
pub use routes::ROUTES;
pub use server::{DrainReport, Server};
pub use webhooks::guard::AllowedNetworks;

/// The OpenAPI 3 description of API v1, as served at `GET /openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");
