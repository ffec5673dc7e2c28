//! One delivery attempt: an HTTP/1.1 `POST` to a checked target under one deadline, and how long
//! to wait before the next attempt.
//!
//! An [`Endpoint`] keeps one connection to its endpoint alive between attempts (each new one made
//! through [`guard::connect`], which checks the address it dials), so a steady stream of
//! deliveries costs no handshake each; a connection is dropped after any failed or timed-out
//! attempt and after an answer whose body was not read to its end. [`post`] is one attempt on a
//! connection of its own.

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

use super::guard::{self, AllowedNetworks, ConnectError, Millis, RefusedAddress, Target};

/// The `User-Agent` of every delivery, so receivers can tell webhooks from other traffic.
pub const USER_AGENT_VALUE: &str = "petition-ingest-webhooks";

/// How much of a response body is read before the connection is dropped, in bytes. The status
/// is all an attempt needs; reading a little of the body lets a receiver finish a short answer
/// cleanly, and the bound keeps a huge or endless body from holding the attempt.
pub const RESPONSE_BODY_BYTES_MAX: usize = 64 * 1024;

/// hyper's read buffer, which bounds the response head, in bytes (hyper's minimum is 8 KiB).
const RESPONSE_HEAD_BYTES_MAX: usize = 16 * 1024;

/// The wait before the first retry.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two attempts, jitter included.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);
/// How far a wait may stray from its base, as a fraction, so that endpoints that failed together
/// are not retried together.
const BACKOFF_JITTER: f64 = 0.2;
/// Doublings past this cannot matter (2^9 s is already past the cap); the bound keeps the shift
/// in range for any failure count.
const BACKOFF_DOUBLINGS_MAX: u32 = 16;

/// Why an attempt has no status code. Each message is whole on its own, because it is stored as
/// the webhook's last error and shown as it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The host resolves only to addresses webhooks are not delivered to.
    #[error("every address of {host} is refused: {refused}")]
    Refused {
        /// The host of the target.
        host: String,
        /// The first refused address, and its range.
        refused: RefusedAddress,
    },
    /// The host could not be resolved or no permitted address accepted a connection.
    #[error(transparent)]
    Connect(ConnectError),
    /// The attempt did not finish within its timeout.
    #[error("no answer within {}", Millis(*.0))]
    Timeout(Duration),
    /// The HTTP exchange failed: a closed connection, a malformed answer, a head too large.
    #[error("the HTTP exchange failed: {}", Chain(.0))]
    Http(hyper::Error),
    /// A header given to [`post`] is not a valid HTTP header. A bug of the caller, reported
    /// rather than sent.
    #[error("the request could not be built: {0}")]
    Request(String),
}

impl From<ConnectError> for DeliveryError {
    // A refusal and a timeout are their own kinds of failure wherever they happened, so that
    // `Connect` only ever holds the failures to reach a permitted address.
    fn from(error: ConnectError) -> DeliveryError {
        match error {
            ConnectError::Refused { host, refused } => DeliveryError::Refused { host, refused },
            ConnectError::Timeout(timeout) => DeliveryError::Timeout(timeout),
            other => DeliveryError::Connect(other),
        }
    }
}

/// An error and its causes, `: `-separated: hyper's own message ("connection error") says little
/// without the I/O error under it.
struct Chain<'a>(&'a hyper::Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

/// Aborts the connection task when the attempt ends, whichever way: on a timeout the task would
/// otherwise go on holding a socket to a receiver that never answers.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Posts `body` to `target` once, on a connection of its own, and returns the status code the
/// receiver answered, whatever it is: deciding what counts as delivered is the caller's.
///
/// The request carries `Host`, `content-type: application/json`, `user-agent` and then
/// `headers` in order; the caller does not repeat the first three. Everything — resolving,
/// connecting, sending, reading the response head and up to [`RESPONSE_BODY_BYTES_MAX`] of its
/// body — happens within `timeout`.
pub async fn post(
    target: &Target,
    allow: &AllowedNetworks,
    headers: &[(&str, String)],
    body: Bytes,
    timeout: Duration,
) -> Result<u16, DeliveryError> {
    Endpoint::default()
        .post(target, allow, headers, body, timeout)
        .await
}

/// A kept-alive connection to one endpoint, reused by the attempts that follow.
#[derive(Default)]
pub struct Endpoint {
    open: Option<Open>,
}

/// An open connection: the request side and the task that drives it.
struct Open {
    sender: http1::SendRequest<Full<Bytes>>,
    _driver: AbortOnDrop,
}

impl Endpoint {
    /// [`post`] on this endpoint's kept connection, opening one if it has none (or the endpoint
    /// closed it). After a failure the connection is dropped.
    pub async fn post(
        &mut self,
        target: &Target,
        allow: &AllowedNetworks,
        headers: &[(&str, String)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<u16, DeliveryError> {
        // Built first, so a bad header costs no connection.
        let request = request(target, headers, body)?;
        let result = tokio::time::timeout(timeout, self.exchange(target, allow, request, timeout))
            .await
            .unwrap_or(Err(DeliveryError::Timeout(timeout)));
        if result.is_err() {
            self.open = None;
        }
        result
    }

    async fn exchange(
        &mut self,
        target: &Target,
        allow: &AllowedNetworks,
        request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<u16, DeliveryError> {
        if self.open.as_ref().is_none_or(|o| o.sender.is_closed()) {
            self.open = Some(open(target, allow, timeout).await?);
        }
        let Some(open) = self.open.as_mut() else {
            unreachable!("opened above")
        };
        open.sender.ready().await.map_err(DeliveryError::Http)?;
        let response = open
            .sender
            .send_request(request)
            .await
            .map_err(DeliveryError::Http)?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut read = 0;
        let mut ended = false;
        while read < RESPONSE_BODY_BYTES_MAX {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
                // The receiver has answered: a body that breaks off afterwards changes nothing.
                Some(Err(_)) => break,
                None => {
                    ended = true;
                    break;
                }
            }
        }
        if !ended {
            // The rest of the body would be read as the next answer's start.
            self.open = None;
        }
        Ok(status)
    }
}

/// Opens a connection to `target` (checked by [`guard::connect`]).
async fn open(
    target: &Target,
    allow: &AllowedNetworks,
    timeout: Duration,
) -> Result<Open, DeliveryError> {
    let (stream, _addr) = guard::connect(target, allow, timeout).await?;
    let (sender, connection) = http1::Builder::new()
        .max_buf_size(RESPONSE_HEAD_BYTES_MAX)
        .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(DeliveryError::Http)?;
    // The connection's own error needs no handling here: a failure that matters reaches the
    // response future as well.
    let driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    Ok(Open {
        sender,
        _driver: driver,
    })
}

/// The request of one attempt, with every header checked.
fn request(
    target: &Target,
    headers: &[(&str, String)],
    body: Bytes,
) -> Result<Request<Full<Bytes>>, DeliveryError> {
    let uri = Uri::try_from(target.path_and_query()).map_err(|e| {
        DeliveryError::Request(format!(
            "the path {:?} is not valid: {e}",
            target.path_and_query()
        ))
    })?;
    let host = HeaderValue::from_str(target.host_header()).map_err(|_| {
        DeliveryError::Request(format!("{:?} is not a valid host", target.host_header()))
    })?;
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    let fields = request.headers_mut();
    fields.insert(HOST, host);
    fields.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    fields.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    for (name, value) in headers {
        let field = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| DeliveryError::Request(format!("{name:?} is not a valid header name")))?;
        let value = HeaderValue::from_str(value).map_err(|_| {
            DeliveryError::Request(format!("the value of header {name} is not valid"))
        })?;
        fields.append(field, value);
    }
    Ok(request)
}

/// How long to wait after the `failures`-th failure in a row (1-based) before the next attempt:
/// 1 s after the first, doubling after each further one, at most [`BACKOFF_MAX`], each wait moved
/// at random by up to ±20%. `failures` 0 is taken as 1.
pub fn backoff(failures: u32) -> Duration {
    backoff_from(BACKOFF_FIRST, failures)
}

/// [`backoff`] with another first wait (`--webhook-retry-first`), doubling from it.
pub fn backoff_from(first: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(BACKOFF_DOUBLINGS_MAX);
    let base = first.saturating_mul(1 << doublings).min(BACKOFF_MAX);
    let jitter = rand::Rng::random_range(
        &mut rand::rng(),
        1.0 - BACKOFF_JITTER..=1.0 + BACKOFF_JITTER,
    );
    base.mul_f64(jitter).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Instant;

    use hyper::body::Incoming;
    use hyper::server::conn::http1 as server_http1;
    use hyper::service::service_fn;
    use hyper::{HeaderMap, Response};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    use super::*;
    use crate::webhooks::guard::check_url;

    /// What the test server saw of one request.
    #[derive(Debug)]
    struct Received {
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    }

    fn loopback() -> AllowedNetworks {
        AllowedNetworks::parse("127.0.0.0/8").expect("allow list")
    }

    fn target(addr: SocketAddr, path: &str) -> Target {
        check_url(&format!("http://{addr}{path}"), &loopback()).expect("test url")
    }

    /// A real hyper server on 127.0.0.1:0 that answers every request with `status` and reports
    /// what it received.
    async fn serve(status: u16) -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (sent, received) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sent = sent.clone();
                let service = service_fn(move |request: Request<Incoming>| {
                    let sent = sent.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await?.to_bytes();
                        let _ = sent.send(Received {
                            method: parts.method,
                            uri: parts.uri,
                            headers: parts.headers,
                            body,
                        });
                        let mut response = Response::new(Full::new(Bytes::from_static(b"noted")));
                        *response.status_mut() =
                            hyper::StatusCode::from_u16(status).expect("test status");
                        Ok::<_, hyper::Error>(response)
                    }
                });
                tokio::spawn(
                    server_http1::Builder::new().serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (addr, received)
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn returns_the_status_answered() {
        for status in [200, 204, 410, 500, 503] {
            let (addr, mut received) = serve(status).await;
            let answer = post(
                &target(addr, "/"),
                &loopback(),
                &[],
                Bytes::from_static(b"{}"),
                5 * SECOND,
            )
            .await;
            assert_eq!(answer.ok(), Some(status));
            assert!(
                received.recv().await.is_some(),
                "the server saw the request"
            );
        }
    }

    #[tokio::test]
    async fn headers_and_body_arrive_as_sent() {
        let (addr, mut received) = serve(200).await;
        // Larger than hyper's buffer, so the body is written in several pieces.
        let body: Bytes = format!("{{\"pad\":\"{}\"}}", "x".repeat(100_000)).into();
        let headers = [
            ("webhook-id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W".to_string()),
            ("webhook-timestamp", "1674087231".to_string()),
            (
                "webhook-signature",
                "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=".to_string(),
            ),
        ];
        let status = post(
            &target(addr, "/hooks/petitions?team=7"),
            &loopback(),
            &headers,
            body.clone(),
            5 * SECOND,
        )
        .await
        .expect("delivered");
        assert_eq!(status, 200);
        let seen = received.recv().await.expect("received");
        assert_eq!(seen.method, Method::POST);
        assert_eq!(seen.uri, "/hooks/petitions?team=7");
        assert_eq!(seen.body, body);
        let header = |name: &str| {
            let values: Vec<_> = seen.headers.get_all(name).iter().collect();
            assert_eq!(values.len(), 1, "{name} once: {:?}", seen.headers);
            values[0].to_str().expect("ascii").to_string()
        };
        assert_eq!(header("host"), addr.to_string());
        assert_eq!(header("content-type"), "application/json");
        assert_eq!(header("user-agent"), "petition-ingest-webhooks");
        assert_eq!(header("content-length"), body.len().to_string());
        for (name, value) in &headers {
            assert_eq!(&header(name), value);
        }
    }

    #[tokio::test]
    async fn a_silent_server_times_out_within_the_bound() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (accepted, mut connections) = mpsc::unbounded_channel();
        // Accepts, keeps the connection open, and never answers.
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = accepted.send(stream);
            }
        });
        let timeout = Duration::from_millis(300);
        let started = Instant::now();
        let answer = post(
            &target(addr, "/"),
            &loopback(),
            &[],
            Bytes::from_static(b"{}"),
            timeout,
        )
        .await;
        let elapsed = started.elapsed();
        assert!(
            matches!(answer, Err(DeliveryError::Timeout(t)) if t == timeout),
            "{answer:?}"
        );
        assert!(elapsed >= timeout, "{elapsed:?}");
        assert!(elapsed < timeout + SECOND, "{elapsed:?}");
        assert!(connections.recv().await.is_some(), "it did connect");
        assert_eq!(
            DeliveryError::Timeout(timeout).to_string(),
            "no answer within 300 ms"
        );
    }

    #[tokio::test]
    async fn an_endless_body_is_read_only_so_far() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            let _ = stream
                .write_all(b"HTTP/1.1 202 Accepted\r\ntransfer-encoding: chunked\r\n\r\n")
                .await;
            // Chunks of 4 KiB, well past the read bound, and then silence without the last chunk.
            let chunk = format!("1000\r\n{}\r\n", "y".repeat(4096));
            for _ in 0..(2 * RESPONSE_BODY_BYTES_MAX / 4096) {
                if stream.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let answer = post(
            &target(addr, "/"),
            &loopback(),
            &[],
            Bytes::from_static(b"{}"),
            5 * SECOND,
        )
        .await;
        assert_eq!(answer.ok(), Some(202));
    }

    #[tokio::test]
    async fn a_refused_address_is_not_dialled() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        for target in [target(addr, "/"), {
            let none = AllowedNetworks::default();
            check_url(&format!("http://localhost:{}/", addr.port()), &none).expect("url")
        }] {
            let answer = post(
                &target,
                &AllowedNetworks::default(),
                &[],
                Bytes::from_static(b"{}"),
                5 * SECOND,
            )
            .await;
            match &answer {
                Err(DeliveryError::Refused { refused, .. }) => {
                    assert_eq!(refused.range, "loopback")
                }
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
        let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(accepted.is_err(), "no connection was made");
    }

    #[tokio::test]
    async fn connection_failures_are_reported() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("local addr").port()
        };
        let answer = post(
            &target(SocketAddr::from(([127, 0, 0, 1], port)), "/"),
            &loopback(),
            &[],
            Bytes::from_static(b"{}"),
            5 * SECOND,
        )
        .await;
        let error = answer.expect_err("nothing listens");
        assert!(matches!(error, DeliveryError::Connect(_)), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with(&format!("could not connect to 127.0.0.1:{port}: ")),
            "{error}"
        );
    }

    #[tokio::test]
    async fn an_answer_that_is_not_http_is_an_http_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            if let Ok((mut stream, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await;
            }
        });
        let answer = post(
            &target(addr, "/"),
            &loopback(),
            &[],
            Bytes::from_static(b"{}"),
            5 * SECOND,
        )
        .await;
        let error = answer.expect_err("not HTTP");
        assert!(matches!(error, DeliveryError::Http(_)), "{error:?}");
        assert!(
            error.to_string().starts_with("the HTTP exchange failed: "),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_bad_header_is_refused_before_connecting() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        for headers in [
            [("bad header", "x".to_string())],
            [("webhook-id", "line\nbreak".to_string())],
        ] {
            let answer = post(
                &target(addr, "/"),
                &loopback(),
                &headers,
                Bytes::from_static(b"{}"),
                5 * SECOND,
            )
            .await;
            assert!(
                matches!(answer, Err(DeliveryError::Request(_))),
                "{answer:?}"
            );
        }
        let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(accepted.is_err(), "no connection was made");
    }

    #[test]
    fn backoff_doubles_within_bounds() {
        let within = |failures: u32, low: f64, high: f64| {
            for _ in 0..200 {
                let wait = backoff(failures).as_secs_f64();
                assert!(
                    (low..=high).contains(&wait),
                    "failure {failures}: {wait} s not in {low}..={high}"
                );
            }
        };
        within(0, 0.8, 1.2);
        within(1, 0.8, 1.2);
        within(2, 1.6, 2.4);
        within(3, 3.2, 4.8);
        within(6, 25.6, 38.4);
        within(8, 102.4, 153.6);
        // 256 s is the last base under the cap; ±20% would reach 307.2 s, which the cap cuts.
        within(9, 204.8, 300.0);
        for failures in [10, 11, 20, 64, u32::MAX] {
            within(failures, 240.0, 300.0);
        }
        assert!(backoff(1) <= Duration::from_secs(5));
        let first: Vec<_> = (0..50).map(|_| backoff(1)).collect();
        assert!(
            first.iter().any(|wait| *wait != first[0]),
            "the waits are jittered"
        );
    }
}
