//! The self-contained parts of webhook delivery.
//!
//! - `signing`: Standard Webhooks secrets (`whsec_…`) and `v1` HMAC-SHA256 signatures.
//!
//! What is not here: registering endpoints, the delivery loop and its state, which live with the
//! handlers and the engine and use these pieces.

pub mod signing;
