//! The `text/event-stream` parser of the SSE readers: chunks in, events out, lines joined
//! across chunks. Kept apart from the readers so that it can be tested on every way a stream
//! can be cut.

use std::ops::ControlFlow;

/// Longest SSE line a reader buffers; a longer one ends the reader as failed.
pub const SSE_LINE_BYTES_MAX: usize = 64 * 1024;

/// One event of a stream, as dispatched by [`SseParser`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event` field, `message` if the event named none.
    pub kind: &'a [u8],
    /// The `data` fields, joined by `\n`.
    pub data: &'a [u8],
    /// The stream's last event id (carried over from an earlier event if this one set none).
    pub id: &'a [u8],
}

/// Why [`SseParser::feed`] stopped before the end of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseStop {
    /// The event handler asked to stop.
    Asked,
    /// A line grew past [`SSE_LINE_BYTES_MAX`] without ending.
    LineTooLong,
}

/// An incremental `text/event-stream` parser (the WHATWG "event stream interpretation"): lines
/// end in CRLF, LF or CR, anywhere across chunks; `event`, `data` and `id` fields are kept,
/// `retry` and unknown fields ignored, lines starting with `:` (heartbeats) skipped; a blank
/// line dispatches the event unless it has no data. A leading byte order mark is dropped.
/// Its buffers hold one line and one event, so a reader's state stays small.
#[derive(Debug, Default)]
pub struct SseParser {
    /// The start of a line whose end has not come yet.
    partial: Vec<u8>,
    /// The last chunk ended in CR: an LF opening the next one ends nothing.
    after_cr: bool,
    /// The first line was seen (its byte order mark, if any, dropped).
    started: bool,
    kind: Vec<u8>,
    data: Vec<u8>,
    id: Vec<u8>,
}

impl SseParser {
    /// Parses a chunk of the stream, calling `on_event` for each event it completes; stops
    /// early when `on_event` breaks or a line is too long.
    pub fn feed(
        &mut self,
        mut chunk: &[u8],
        mut on_event: impl FnMut(SseEvent<'_>) -> ControlFlow<()>,
    ) -> ControlFlow<SseStop> {
        if chunk.is_empty() {
            return ControlFlow::Continue(());
        }
        if std::mem::take(&mut self.after_cr) && chunk[0] == b'\n' {
            chunk = &chunk[1..];
        }
        while let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let mut next = end + 1;
            if chunk[end] == b'\r' {
                match chunk.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            let flow = if self.partial.is_empty() {
                self.line(&chunk[..end], &mut on_event)
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&chunk[..end]);
                let flow = self.line(&line, &mut on_event);
                line.clear();
                self.partial = line;
                flow
            };
            chunk = &chunk[next..];
            if flow.is_break() {
                return ControlFlow::Break(SseStop::Asked);
            }
        }
        if self.partial.len() + chunk.len() > SSE_LINE_BYTES_MAX {
            return ControlFlow::Break(SseStop::LineTooLong);
        }
        self.partial.extend_from_slice(chunk);
        ControlFlow::Continue(())
    }

    fn line(
        &mut self,
        mut line: &[u8],
        on_event: &mut impl FnMut(SseEvent<'_>) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        if !self.started {
            self.started = true;
            line = line.strip_prefix(&b"\xEF\xBB\xBF"[..]).unwrap_or(line);
        }
        if line.is_empty() {
            return self.dispatch(on_event);
        }
        if line[0] == b':' {
            return ControlFlow::Continue(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => {
                self.kind.clear();
                self.kind.extend_from_slice(value);
            }
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"id" if !value.contains(&0) => {
                self.id.clear();
                self.id.extend_from_slice(value);
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn dispatch(
        &mut self,
        on_event: &mut impl FnMut(SseEvent<'_>) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        if self.data.is_empty() {
            self.kind.clear();
            return ControlFlow::Continue(());
        }
        self.data.pop();
        let kind: &[u8] = if self.kind.is_empty() {
            b"message"
        } else {
            &self.kind
        };
        let flow = on_event(SseEvent {
            kind,
            data: &self.data,
            id: &self.id,
        });
        self.data.clear();
        self.kind.clear();
        flow
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Feeds `stream` split at `splits` and returns the events as (kind, data, id) strings.
    fn parse(stream: &[u8], splits: &[usize]) -> Vec<(String, String, String)> {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        let mut start = 0;
        for end in splits.iter().copied().chain([stream.len()]) {
            let flow = parser.feed(&stream[start..end], |event| {
                let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
                events.push((text(event.kind), text(event.data), text(event.id)));
                ControlFlow::Continue(())
            });
            assert_eq!(flow, ControlFlow::Continue(()));
            start = end;
        }
        events
    }

    /// Parses `stream` whole, then split at every point and at every pair of points: the events
    /// must not depend on where the chunks end.
    fn check(stream: &str, expected: &[(&str, &str, &str)]) {
        let stream = stream.as_bytes();
        let expected: Vec<(String, String, String)> = expected
            .iter()
            .map(|(k, d, i)| ((*k).to_owned(), (*d).to_owned(), (*i).to_owned()))
            .collect();
        assert_eq!(parse(stream, &[]), expected, "whole");
        for a in 0..=stream.len() {
            assert_eq!(parse(stream, &[a]), expected, "split at {a}");
            for b in a..=stream.len().min(a + 12) {
                assert_eq!(parse(stream, &[a, b]), expected, "split at {a}, {b}");
            }
        }
    }

    #[test]
    fn sse_events() {
        let crossed = r#"{"seq":17,"type":"threshold_crossed","petition":"p1","threshold":1000}"#;
        check(
            &format!("id: 17\nevent: threshold_crossed\ndata: {crossed}\n\n"),
            &[("threshold_crossed", crossed, "17")],
        );
        // CRLF and CR line ends, heartbeats, a field without a space, no event name.
        check(
            ": heartbeat\r\n\r\nid:1\revent:a\rdata:x\r\r: heartbeat\r\ndata: y\r\n\r\n",
            &[("a", "x", "1"), ("message", "y", "1")],
        );
        // Several data lines join with \n; an event without data is not dispatched; the id
        // carries over; a field without a colon has an empty value; unknown fields and retry
        // are ignored.
        check(
            "event: a\nid: 5\n\nretry: 10\nfoo: bar\ndata: one\ndata\ndata: three\n\nid\ndata: z\n\n",
            &[("message", "one\n\nthree", "5"), ("message", "z", "")],
        );
        // Only the first space of a value goes; a byte order mark opens the stream only.
        check(
            "\u{feff}data:  two spaces\n\ndata: \u{feff}kept\n\n",
            &[
                ("message", " two spaces", ""),
                ("message", "\u{feff}kept", ""),
            ],
        );
        // An event not ended by a blank line is not dispatched.
        check("data: a\n\ndata: b\n", &[("message", "a", "")]);
        // An id with a NUL is ignored.
        check("id: 3\nid: 4\0\ndata: d\n\n", &[("message", "d", "3")]);
    }

    #[test]
    fn sse_stops_when_asked_and_on_endless_lines() {
        let mut parser = SseParser::default();
        let mut seen = 0;
        let stream = b"event: lagged\ndata: {\"resume_after\":9}\n\ndata: later\n\n";
        let flow = parser.feed(stream, |event| {
            seen += 1;
            if event.kind == b"lagged" {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!((flow, seen), (ControlFlow::Break(SseStop::Asked), 1));
        let mut parser = SseParser::default();
        let chunk = vec![b'x'; SSE_LINE_BYTES_MAX / 2 + 1];
        let ignore = |_: SseEvent<'_>| ControlFlow::Continue(());
        assert_eq!(parser.feed(&chunk, ignore), ControlFlow::Continue(()));
        assert_eq!(
            parser.feed(&chunk, ignore),
            ControlFlow::Break(SseStop::LineTooLong)
        );
    }
}
