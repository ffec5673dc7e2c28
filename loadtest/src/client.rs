//! A plain one-connection HTTP/1.1 client for the slow paths: registering petitions, reading
//! counts and re-sending signers in `verify`. The load itself goes through `run`'s connection
//! tasks, which write their requests as bytes ([`crate::wire`]).

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use crate::cli::Target;
use crate::outcome;

/// Attempts per request of the slow paths when the server answers 429/503 or not at all.
pub const ATTEMPTS_MAX: u32 = 5;

/// Waits before attempt `attempt + 1`: `Retry-After` if the server gave one, else 100 ms doubled
/// per attempt; at most 2 s either way.
pub async fn backoff(attempt: u32, retry_after: Option<Duration>) {
    let wait = retry_after.unwrap_or(Duration::from_millis(100 << attempt));
    tokio::time::sleep(wait.min(Duration::from_secs(2))).await;
}

/// The body type every request of this crate uses: a pre-built buffer.
pub type Body = Full<Bytes>;

/// `Authorization: Bearer <key>`.
pub fn bearer(key: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {key}"))
        .map_err(|_| anyhow!("the key contains characters not allowed in an HTTP header"))
}

/// Opens a TCP connection to the target with Nagle off (requests are small and latency counts).
pub async fn connect(target: &Target) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(target.addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// An answer: status, `Retry-After` if any, and the whole body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: StatusCode,
    /// `Retry-After` in seconds, if given.
    pub retry_after: Option<Duration>,
    /// The body.
    pub body: Bytes,
}

/// One keep-alive connection that reconnects after a failure.
#[derive(Debug)]
pub struct Client {
    target: Target,
    timeout: Duration,
    sender: Option<http1::SendRequest<Body>>,
}

impl Client {
    /// A client for `target`; nothing is opened until the first request.
    pub fn new(target: &Target, timeout: Duration) -> Client {
        Client {
            target: target.clone(),
            timeout,
            sender: None,
        }
    }

    async fn ready_sender(&mut self) -> Result<&mut http1::SendRequest<Body>> {
        if let Some(sender) = &mut self.sender {
            if sender.ready().await.is_ok() {
                // Reborrow through the Option; it is Some here.
                return self
                    .sender
                    .as_mut()
                    .ok_or_else(|| anyhow!("connection vanished"));
            }
        }
        let stream = connect(&self.target)
            .await
            .with_context(|| format!("connecting to {}", self.target.addr))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        // The connection ends by itself when the sender is dropped or the peer closes.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(self.sender.insert(sender))
    }

    /// Sends one request and reads the whole answer. `path` goes below the target's base path.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        key: Option<&HeaderValue>,
        content_type: &'static str,
        body: Bytes,
    ) -> Result<Answer> {
        let uri = format!("{}{}", self.target.base_path, path);
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header(header::HOST, self.target.host.clone());
        if let Some(key) = key {
            builder = builder.header(header::AUTHORIZATION, key.clone());
        }
        if !body.is_empty() {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        let request = builder
            .body(Full::new(body))
            .with_context(|| format!("building {method} {uri}"))?;
        let timeout = self.timeout;
        let exchange = async {
            let sender = self.ready_sender().await?;
            let response = sender.send_request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            let retry_after = parts
                .headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            anyhow::Ok(Answer {
                status: parts.status,
                retry_after,
                body,
            })
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(anyhow!("no answer within {timeout:?}")),
        };
        if result.is_err() {
            // The connection's state is unknown: start afresh next time.
            self.sender = None;
        }
        result.with_context(|| format!("{method} {uri}"))
    }
    /// `GET path` (below the target's base path) with its 200 body read as `T`, which must be
    /// `what` (for the message when it is not). 429, 503 and failures to answer are retried up
    /// to [`ATTEMPTS_MAX`] attempts in all, waiting as [`backoff`] says. `Ok(None)`: the server
    /// answered 404.
    pub async fn get_json<T: DeserializeOwned>(
        &mut self,
        path: &str,
        what: &str,
    ) -> Result<Option<T>> {
        let mut last_error = None;
        for attempt in 0..ATTEMPTS_MAX {
            match self
                .request(Method::GET, path, None, "application/json", Bytes::new())
                .await
            {
                Ok(answer) if answer.status == StatusCode::OK => {
                    let body: T = serde_json::from_slice(&answer.body)
                        .with_context(|| format!("GET {path}: body without {what}"))?;
                    return Ok(Some(body));
                }
                Ok(answer) if answer.status == StatusCode::NOT_FOUND => return Ok(None),
                Ok(answer) => {
                    last_error = Some(format!(
                        "answered {} {}",
                        answer.status.as_u16(),
                        outcome::error_code(answer.status, &answer.body)
                    ));
                    backoff(attempt, answer.retry_after).await;
                }
                Err(error) => {
                    last_error = Some(format!("{error:#}"));
                    backoff(attempt, None).await;
                }
            }
        }
        anyhow::bail!(
            "GET {path}: {}",
            last_error.unwrap_or_else(|| "no answer".to_owned())
        )
    }
}
