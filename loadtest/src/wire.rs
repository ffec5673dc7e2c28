//! The load path's HTTP/1.1 client: each request is written as one buffer of bytes and each
//! response is parsed with `httparse` (the parser under hyper) straight out of a reused read
//! buffer.
//!
//! Why not hyper's client here: per request it builds header maps, sends the request through a
//! channel to the connection future and the body back through another, which cost 2–3 µs of CPU
//! a request against `wrk`'s ~1 µs, on a machine whose two cores the server under test also
//! needs. The load path only ever has one request out per connection, sends bodies it built
//! itself and needs only the status and the body back, so none of that machinery is needed.
//! The slow paths (registration, `verify`) still use hyper through [`crate::client`].
//!
//! Responses may be delimited by `Content-Length`, by chunked encoding or by the connection
//! closing; interim `1xx` responses are skipped. Anything else malformed is an error, and the
//! caller replaces the connection.

use std::io;

use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Headers beyond this many make a response malformed (a hello-world sends 3, the server ~8).
const HEADERS_MAX: usize = 64;
/// A response head larger than this is malformed.
const HEAD_BYTES_MAX: usize = 64 << 10;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 << 10;
/// A response larger than this (head and body) is refused rather than buffered.
const RESPONSE_BYTES_MAX: usize = 64 << 20;

/// A complete response found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The final (non-1xx) status.
    pub status: StatusCode,
    /// Bytes of the buffer the response took, head and body (and any 1xx before it).
    pub consumed: usize,
    /// The server said `Connection: close`, or the body ran to the end of the stream.
    pub close: bool,
}

/// Looks for one whole response at the start of `buf`, its decoded body appended to `body`.
/// `Ok(None)`: more bytes are needed (and `body` is left as it was). `eof`: the stream has
/// ended after `buf`, which completes a body delimited by the connection closing.
pub fn parse_response(buf: &[u8], eof: bool, body: &mut Vec<u8>) -> io::Result<Option<Parsed>> {
    let mut start = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut response = httparse::Response::new(&mut headers);
        let head = match response.parse(&buf[start..]).map_err(malformed)? {
            httparse::Status::Complete(head) => head,
            httparse::Status::Partial if buf.len() - start > HEAD_BYTES_MAX => {
                return Err(malformed("response head too large"));
            }
            httparse::Status::Partial => return Ok(None),
        };
        let code = response.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(malformed)?;
        if status.is_informational() {
            // 100 Continue and friends come before the real answer and have no body.
            start += head;
            continue;
        }
        let mut length = None;
        let mut chunked = false;
        let mut close = response.version == Some(0);
        for header in response.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                let text = std::str::from_utf8(header.value).map_err(malformed)?;
                length = Some(text.trim().parse::<usize>().map_err(malformed)?);
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = header
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if header.name.eq_ignore_ascii_case("connection") {
                close = header.value.trim_ascii().eq_ignore_ascii_case(b"close");
            }
        }
        let body_start = start + head;
        let no_body = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        if no_body {
            return Ok(Some(Parsed {
                status,
                consumed: body_start,
                close,
            }));
        }
        if chunked {
            return Ok(parse_chunked(&buf[body_start..], body)?.map(|used| Parsed {
                status,
                consumed: body_start + used,
                close,
            }));
        }
        if let Some(length) = length {
            let Some(content) = buf.get(body_start..body_start + length) else {
                return Ok(None);
            };
            body.extend_from_slice(content);
            return Ok(Some(Parsed {
                status,
                consumed: body_start + length,
                close,
            }));
        }
        // Neither: the body runs to the end of the stream.
        if !eof {
            return Ok(None);
        }
        body.extend_from_slice(&buf[body_start..]);
        return Ok(Some(Parsed {
            status,
            consumed: buf.len(),
            close: true,
        }));
    }
}

/// Decodes a chunked body at the start of `buf` into `body`; returns the bytes it took
/// (through the trailer's final CRLF), or `None` if it is not complete yet.
fn parse_chunked(buf: &[u8], body: &mut Vec<u8>) -> io::Result<Option<usize>> {
    let before = body.len();
    let mut at = 0;
    loop {
        let (size_line, size) = match httparse::parse_chunk_size(&buf[at..]) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => break,
            Err(_) => return Err(malformed("bad chunk size")),
        };
        let size = usize::try_from(size).map_err(malformed)?;
        let data = at + size_line;
        if size == 0 {
            // Trailer fields (if any), then an empty line.
            let mut line = data;
            loop {
                let Some(end) = find_crlf(&buf[line..]) else {
                    body.truncate(before);
                    return Ok(None);
                };
                if end == 0 {
                    return Ok(Some(line + 2));
                }
                line += end + 2;
            }
        }
        let Some(chunk) = buf.get(data..data + size) else {
            break;
        };
        match buf.get(data + size..data + size + 2) {
            Some(b"\r\n") => {}
            Some(_) => return Err(malformed("chunk not followed by CRLF")),
            None => break,
        }
        body.extend_from_slice(chunk);
        at = data + size + 2;
    }
    body.truncate(before);
    Ok(None)
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|pair| pair == b"\r\n")
}

fn malformed(error: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed response: {error}"),
    )
}

/// One keep-alive connection of the load path.
pub struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` that hold data read from the socket.
    filled: usize,
    closed: bool,
    /// [`RESPONSE_BYTES_MAX`], smaller in tests.
    limit: usize,
}

impl Wire {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> Wire {
        Wire {
            stream,
            buf: vec![0; READ_CHUNK],
            filled: 0,
            closed: false,
            limit: RESPONSE_BYTES_MAX,
        }
    }

    /// Whether the server asked to close the connection (or closed it): it must not be reused.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Sends `request` (a whole HTTP/1.1 request) and reads its response; the body is written
    /// into `body` (cleared first).
    pub async fn exchange(&mut self, request: &[u8], body: &mut Vec<u8>) -> io::Result<StatusCode> {
        if self.closed {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection was closed",
            ));
        }
        self.stream.write_all(request).await?;
        body.clear();
        let mut eof = false;
        loop {
            if let Some(parsed) = parse_response(&self.buf[..self.filled], eof, body)? {
                // Keep whatever followed (nothing, from a well-behaved server).
                self.buf.copy_within(parsed.consumed..self.filled, 0);
                self.filled -= parsed.consumed;
                self.closed = parsed.close;
                return Ok(parsed.status);
            }
            if eof {
                self.closed = true;
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection closed before the response was complete",
                ));
            }
            if self.filled >= self.limit {
                self.closed = true;
                return Err(malformed(format_args!("larger than {} bytes", self.limit)));
            }
            if self.buf.len() - self.filled < READ_CHUNK / 2 {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let read = self.stream.read(&mut self.buf[self.filled..]).await?;
            if read == 0 {
                eof = true;
            }
            self.filled += read;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every strict prefix of `response` needs more bytes; the whole of it parses to `status`
    /// and `body`, and `extra` after it is left alone.
    fn check(response: &[u8], status: u16, body: &[u8], close: bool) {
        for cut in 0..response.len() {
            let mut got = Vec::new();
            let parsed = parse_response(&response[..cut], false, &mut got).expect("not malformed");
            assert_eq!(parsed, None, "prefix of {cut} bytes");
            assert!(got.is_empty(), "a partial parse leaves the body alone");
        }
        let mut whole = response.to_vec();
        whole.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let mut got = Vec::new();
        let parsed = parse_response(&whole, false, &mut got)
            .expect("not malformed")
            .expect("complete");
        assert_eq!(parsed.status.as_u16(), status);
        assert_eq!(parsed.consumed, response.len());
        assert_eq!(parsed.close, close);
        assert_eq!(got, body);
    }

    #[test]
    fn content_length_bodies() {
        check(
            b"HTTP/1.1 201 Created\r\ncontent-length: 13\r\ncontent-type: application/json\r\n\r\n{\"count\":42}\n",
            201,
            b"{\"count\":42}\n",
            false,
        );
        check(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            503,
            b"",
            true,
        );
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers() {
        check(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\n",
            200,
            b"Wikipedia",
            false,
        );
        check(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\nX-Trailer: 1\r\n\r\n",
            200,
            b"ok",
            false,
        );
    }

    #[test]
    fn interim_responses_and_empty_statuses() {
        check(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            200,
            b"ok",
            false,
        );
        check(
            b"HTTP/1.1 304 Not Modified\r\netag: \"7\"\r\n\r\n",
            304,
            b"",
            false,
        );
    }

    #[test]
    fn close_delimited_body_needs_the_end_of_the_stream() {
        let response = b"HTTP/1.0 200 OK\r\n\r\nhello";
        let mut body = Vec::new();
        assert_eq!(
            parse_response(response, false, &mut body).expect("ok"),
            None
        );
        let parsed = parse_response(response, true, &mut body)
            .expect("ok")
            .expect("complete at the end of the stream");
        assert_eq!(body, b"hello");
        assert!(parsed.close);
        assert_eq!(parsed.consumed, response.len());
    }

    #[test]
    fn malformed_responses_are_errors() {
        for response in [
            &b"HTTP/1.1 abc OK\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n",
            b"SMTP ready\r\n\r\n",
        ] {
            let mut body = Vec::new();
            assert!(
                parse_response(response, false, &mut body).is_err(),
                "{:?}",
                String::from_utf8_lossy(response)
            );
        }
    }

    /// A server on 127.0.0.1:0 that accepts one connection and hands it to `serve`, and a
    /// [`Wire`] connected to it.
    async fn one_connection<F, Fut>(serve: F) -> (Wire, tokio::task::JoinHandle<()>)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.expect("accept");
            serve(socket).await;
        });
        let stream = TcpStream::connect(addr).await.expect("connect");
        (Wire::new(stream), server)
    }

    #[tokio::test]
    async fn exchanges_over_a_real_socket_keep_the_connection() {
        let (mut wire, server) = one_connection(|mut socket| async move {
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            // Two requests on one connection; answer each, the second in two pieces.
            for answer in [
                &[&b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none"[..]][..],
                &[
                    &b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3\r\n"[..],
                    b"two\r\n0\r\n\r\n",
                ],
            ] {
                loop {
                    let n = socket.read(&mut buf).await.expect("read");
                    seen.extend_from_slice(&buf[..n]);
                    if seen.ends_with(b"\r\n\r\n") {
                        break;
                    }
                }
                seen.clear();
                for piece in answer {
                    socket.write_all(piece).await.expect("write");
                    socket.flush().await.expect("flush");
                    tokio::task::yield_now().await;
                }
            }
        })
        .await;
        let mut body = Vec::new();
        let request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        let status = wire.exchange(request, &mut body).await.expect("first");
        assert_eq!((status.as_u16(), &body[..]), (200, &b"one"[..]));
        let status = wire.exchange(request, &mut body).await.expect("second");
        assert_eq!((status.as_u16(), &body[..]), (201, &b"two"[..]));
        assert!(!wire.is_closed());
        server.await.expect("server task");
        // The server has gone: the next exchange fails rather than hangs.
        assert!(wire.exchange(request, &mut body).await.is_err());
    }

    #[tokio::test]
    async fn an_endless_response_is_refused_at_the_limit() {
        let (mut wire, server) = one_connection(|mut socket| async move {
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await.expect("read");
            // A close-delimited body that never ends (until the client gives up).
            socket
                .write_all(b"HTTP/1.1 200 OK\r\n\r\n")
                .await
                .expect("head");
            let chunk = [b'x'; 4096];
            while socket.write_all(&chunk).await.is_ok() {}
        })
        .await;
        wire.limit = 256 << 10;
        let mut body = Vec::new();
        let error = wire
            .exchange(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", &mut body)
            .await
            .expect_err("refused");
        assert!(error.to_string().contains("larger than"), "{error}");
        assert!(wire.is_closed());
        drop(wire);
        server.await.expect("server task");
    }
}
