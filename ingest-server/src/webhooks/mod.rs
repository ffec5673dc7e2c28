//! The self-contained parts of webhook delivery: what an attempt is signed with, where it may
//! go, and one attempt on the wire.
//!
//! - `signing`: Standard Webhooks secrets (`whsec_…`) and `v1` HMAC-SHA256 signatures;
//! - `guard`: the defence against server-side request forgery: which URLs may be registered,
//!   which addresses may be connected to, and a connect that checks the address it dials;
//! - `client`: one HTTP/1.1 `POST` to an endpoint under one deadline, and the retry backoff.
//!
//! What is not here: registering endpoints, the delivery loop and its state, which live with the
//! handlers and the engine and use these pieces.

pub mod client;
pub mod guard;
pub mod signing;
