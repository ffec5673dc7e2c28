//! Slow and idle connection protection without a timer per request.
//!
//! hyper's own `header_read_timeout` arms a fresh timer for every request, which cost about 2 µs
//! of CPU per request (measured with commit 7919ad5, 2026-11-29: a fifth of a bare hello-world's
//! whole budget). Instead, each connection keeps a [`Clock`]: its I/O wrapper notes when the
//! first byte of a request's headers arrives, the service notes when the headers are complete
//! and when the answer is ready, and the connection task checks the clock on a coarse tick (a
//! quarter of the timeout). A request whose headers take longer than the header timeout, or a
//! connection idle for longer than the idle timeout, is closed.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// `headers_since` value while no request's headers are being read.
const NONE: u64 = u64::MAX;

/// What a connection is doing, in milliseconds since the clock's epoch.
#[derive(Debug)]
pub(crate) struct Clock {
    epoch: Instant,
    /// When the first byte of the current request's headers arrived, or [`NONE`].
    headers_since: AtomicU64,
    /// Requests handed to the service and not yet answered.
    in_service: AtomicU64,
    /// The last time a request was answered (or the connection opened).
    idle_since: AtomicU64,
}

/// Why a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    Headers,
    Idle,
}

impl Clock {
    pub fn new() -> Arc<Clock> {
        Arc::new(Clock {
            epoch: Instant::now(),
            headers_since: AtomicU64::new(NONE),
            in_service: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Bytes arrived. Outside a request, they start a request's headers.
    fn bytes_read(&self) {
        if self.in_service.load(Ordering::Relaxed) == 0
            && self.headers_since.load(Ordering::Relaxed) == NONE
        {
            self.headers_since.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// The headers are complete: hyper calls the service.
    pub fn request_started(&self) {
        self.in_service.fetch_add(1, Ordering::Relaxed);
        self.headers_since.store(NONE, Ordering::Relaxed);
    }

    /// The service answered.
    pub fn request_done(&self) {
        self.idle_since.store(self.now_ms(), Ordering::Relaxed);
        self.in_service.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether the connection has overstayed.
    pub fn expired(&self, headers: Duration, idle: Duration) -> Option<Expired> {
        let now = self.now_ms();
        let since = self.headers_since.load(Ordering::Relaxed);
        if since != NONE && now.saturating_sub(since) > headers.as_millis() as u64 {
            return Some(Expired::Headers);
        }
        let quiet = since == NONE && self.in_service.load(Ordering::Relaxed) == 0;
        if quiet
            && now.saturating_sub(self.idle_since.load(Ordering::Relaxed)) > idle.as_millis() as u64
        {
            return Some(Expired::Idle);
        }
        None
    }

    /// How often to check: a quarter of the shorter timeout, between 10 ms and 1 s.
    pub fn period(headers: Duration, idle: Duration) -> Duration {
        (headers.min(idle) / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

/// A TCP stream that reports reads to its connection's [`Clock`].
pub(crate) struct Watched {
    stream: TcpStream,
    clock: Arc<Clock>,
}

impl Watched {
    pub fn new(stream: TcpStream, clock: Arc<Clock>) -> Watched {
        Watched { stream, clock }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_idle_and_in_service() {
        let clock = Clock::new();
        let short = Duration::from_millis(0);
        let long = Duration::from_secs(3600);
        assert_eq!(clock.expired(long, long), None);
        std::thread::sleep(Duration::from_millis(3));
        assert_eq!(clock.expired(long, short), Some(Expired::Idle));
        clock.bytes_read();
        std::thread::sleep(Duration::from_millis(3));
        assert_eq!(clock.expired(short, long), Some(Expired::Headers));
        clock.request_started();
        clock.bytes_read(); // body bytes do not start new headers
        assert_eq!(
            clock.expired(short, short),
            None,
            "a request in service never expires"
        );
        clock.request_done();
        assert_eq!(clock.expired(short, long), None);
        assert_eq!(
            Clock::period(Duration::from_secs(10), Duration::from_secs(60)),
            Duration::from_secs(1)
        );
    }
}
