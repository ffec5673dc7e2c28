//! Slow and idle connection protection without a timer per request.
//!
//! hyper's own `header_read_timeout` arms a fresh timer for every request, which cost about 2 µs
//! of CPU per request (measured with commit 7919ad5, 2026-11-29: a fifth of a bare hello-world's
//! whole budget). Instead, each connection keeps a [`Clock`]: its I/O wrapper notes when the
//! first byte of a request's headers arrives, the service notes when the headers are complete
//! and when the answer is ready, and the connection task checks the clock on a coarse tick (a
//! quarter of the timeout). The first request's header clock starts when the connection is
//! accepted, so a connection that never sends a byte is closed at the header timeout, not the
//! idle timeout. A request whose headers take longer than the header timeout, or a connection
//! idle between requests for longer than the idle timeout, is closed.

use std::future::Future;
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
    /// The last time a request was answered.
    idle_since: AtomicU64,
    /// While an event stream is being answered, the last time hyper asked it for data (it
    /// asks whenever the socket took what it had), else [`NONE`].
    stream_polled_at: AtomicU64,
}

/// Why a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    Headers,
    Idle,
    /// An event stream whose socket took nothing for the stall timeout.
    Stalled,
}

impl Clock {
    pub fn new() -> Arc<Clock> {
        Arc::new(Clock {
            epoch: Instant::now(),
            // Accepted: the first request's headers are awaited from now.
            headers_since: AtomicU64::new(0),
            in_service: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            stream_polled_at: AtomicU64::new(NONE),
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

    /// The event stream being answered was asked for data: its socket is taking what it sends.
    pub fn stream_polled(&self) {
        self.stream_polled_at
            .store(self.now_ms(), Ordering::Relaxed);
    }

    /// The event stream ended.
    pub fn stream_ended(&self) {
        self.stream_polled_at.store(NONE, Ordering::Relaxed);
    }

    /// Whether the connection has overstayed. A stream is polled at least once a heartbeat
    /// while its socket takes data, so `stall` must be longer than the heartbeat.
    pub fn expired(&self, headers: Duration, idle: Duration, stall: Duration) -> Option<Expired> {
        let now = self.now_ms();
        let polled = self.stream_polled_at.load(Ordering::Relaxed);
        if polled != NONE && now.saturating_sub(polled) > stall.as_millis() as u64 {
            return Some(Expired::Stalled);
        }
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

/// How long a closing connection keeps reading (and dropping) what the client still sends.
const LINGER: Duration = Duration::from_secs(1);

/// A TCP stream that reports reads to its connection's [`Clock`], and closes lingering.
///
/// Closing a socket with unread input makes the kernel reset the connection, which can destroy
/// the last answer before the client reads it: a 413 or a 401 sent while the client is still
/// sending its body. So when hyper shuts the connection down, the stream sends its FIN and then
/// reads and drops input until the client closes too, for at most [`LINGER`].
pub(crate) struct Watched {
    stream: TcpStream,
    clock: Arc<Clock>,
    /// Set once the write side is shut: until when to read the client's leftovers.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Watched {
    pub fn new(stream: TcpStream, clock: Arc<Clock>) -> Watched {
        Watched {
            stream,
            clock,
            linger: None,
        }
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
        let this = &mut *self;
        if this.linger.is_none() {
            std::task::ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
            this.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let mut sink = [0u8; 8192];
        loop {
            let mut buf = ReadBuf::new(&mut sink);
            match Pin::new(&mut this.stream).poll_read(cx, &mut buf) {
                // The client closed too (or the connection broke): done.
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => continue,
                Poll::Pending => break,
            }
        }
        match this.linger.as_mut().map(|sleep| sleep.as_mut().poll(cx)) {
            Some(Poll::Pending) => Poll::Pending,
            _ => Poll::Ready(Ok(())),
        }
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
        assert_eq!(clock.expired(long, long, long), None);
        std::thread::sleep(Duration::from_millis(3));
        assert_eq!(
            clock.expired(short, long, long),
            Some(Expired::Headers),
            "a connection that sends nothing is on the header clock from its accept"
        );
        assert_eq!(
            clock.expired(long, short, long),
            None,
            "not idle: no request yet"
        );
        clock.bytes_read();
        std::thread::sleep(Duration::from_millis(3));
        assert_eq!(clock.expired(short, long, long), Some(Expired::Headers));
        clock.request_started();
        clock.bytes_read(); // body bytes do not start new headers
        assert_eq!(
            clock.expired(short, short, long),
            None,
            "a request in service never expires"
        );
        clock.request_done();
        assert_eq!(clock.expired(short, long, long), None);
        std::thread::sleep(Duration::from_millis(3));
        assert_eq!(clock.expired(long, short, long), Some(Expired::Idle));
        assert_eq!(
            Clock::period(Duration::from_secs(10), Duration::from_secs(60)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn a_stream_not_polled_for_the_stall_timeout_is_stalled() {
        let clock = Clock::new();
        let (short, long) = (Duration::from_millis(0), Duration::from_secs(3600));
        clock.request_started();
        clock.stream_polled();
        assert_eq!(clock.expired(long, long, long), None);
        std::thread::sleep(Duration::from_millis(3));
        assert_eq!(clock.expired(long, long, short), Some(Expired::Stalled));
        clock.stream_polled();
        assert_eq!(clock.expired(long, long, long), None, "polled again");
        clock.stream_ended();
        std::thread::sleep(Duration::from_millis(3));
        assert_eq!(clock.expired(long, long, short), None, "no stream");
    }
}
