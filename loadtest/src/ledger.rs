//! The ack ledger: one line per signature or validation sent, with what the server answered.
//!
//! Format v2 (UTF-8, `\n`-terminated lines, tab-separated):
//!
//! ```text
//! # loadtest ledger v2: petition<TAB>email<TAB>outcome<TAB>detail[<TAB>token[<TAB>expires_at]]
//! lt-42-0<TAB>lt42.3.17@example.org<TAB>accepted<TAB>-
//! lt-42-5<TAB>lt42.1.9@example.org<TAB>indeterminate<TAB>timeout
//! lt-43-1<TAB>lt43.0.4@example.org<TAB>pending<TAB>-<TAB><72 hex digits><TAB>2026-12-01T10:00:00Z
//! lt-43-1<TAB>lt43.0.4@example.org<TAB>validated<TAB>-<TAB><72 hex digits>
//! ```
//!
//! `outcome` is a [`LedgerClass`]: `accepted`, `duplicate`, `failed`, `indeterminate` (all v1
//! has), and, from the signature lifecycle, `pending` and the validations' `validated`,
//! `already_validated`, `validation_failed`, `validation_indeterminate`. `detail` is `-` or the
//! error code / cause. Lines of the lifecycle classes carry the token in a fifth column, and
//! `pending` lines the token's expiry (RFC 3339, UTC, whole seconds) in a sixth. Lines starting
//! with `#` are comments. A v1 ledger is a v2 ledger without lifecycle lines, and reads as one.
//!
//! Connection tasks format lines into their own buffer and hand full chunks to one writer thread
//! over a bounded channel, so no task blocks on file I/O and no lock is held across it.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};
use tokio::sync::mpsc;

use crate::outcome::LedgerClass;
use crate::token::{self, Token};

/// First line of every ledger written now.
pub const HEADER: &str =
    "# loadtest ledger v2: petition\temail\toutcome\tdetail[\ttoken[\texpires_at]]";

/// First line of the ledgers written before the signature lifecycle; they still read.
pub const HEADER_V1: &str = "# loadtest ledger v1: petition\temail\toutcome\tdetail";

/// A connection task hands its lines over once it has this many bytes.
const CHUNK_BYTES: usize = 64 * 1024;

/// Chunks in flight to the writer thread before the tasks wait (the backpressure).
const CHANNEL_CHUNKS_MAX: usize = 64;

/// Owns the ledger file and the thread that writes it.
#[derive(Debug)]
pub struct LedgerWriter {
    sender: mpsc::Sender<Vec<u8>>,
    thread: JoinHandle<io::Result<()>>,
}

impl LedgerWriter {
    /// Creates (truncates) the ledger at `path` and starts its writer thread.
    pub fn create(path: &Path) -> Result<LedgerWriter> {
        let file =
            File::create(path).with_context(|| format!("creating ledger {}", path.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        writeln!(out, "{HEADER}").with_context(|| format!("writing ledger {}", path.display()))?;
        let (sender, mut receiver) = mpsc::channel::<Vec<u8>>(CHANNEL_CHUNKS_MAX);
        let thread = std::thread::Builder::new()
            .name("ledger-writer".to_owned())
            .spawn(move || {
                while let Some(chunk) = receiver.blocking_recv() {
                    out.write_all(&chunk)?;
                }
                out.flush()?;
                out.get_ref().sync_all()
            })
            .context("starting the ledger writer thread")?;
        Ok(LedgerWriter { sender, thread })
    }

    /// A buffer for one connection task.
    pub fn sink(&self) -> LedgerSink {
        LedgerSink {
            sender: self.sender.clone(),
            buffer: Vec::with_capacity(CHUNK_BYTES + 512),
        }
    }

    /// Waits until every chunk handed over is written and synced. Call after every sink has
    /// been flushed and dropped.
    pub fn finish(self) -> Result<()> {
        drop(self.sender);
        match self.thread.join() {
            Ok(result) => result.context("writing the ledger"),
            Err(_) => bail!("the ledger writer thread panicked"),
        }
    }
}

/// One connection task's ledger buffer.
#[derive(Debug)]
pub struct LedgerSink {
    sender: mpsc::Sender<Vec<u8>>,
    buffer: Vec<u8>,
}

impl LedgerSink {
    /// Appends one line of a class without a token.
    pub fn record(&mut self, petition: &str, email: &str, class: LedgerClass, detail: &str) {
        debug_assert!(!class.has_token(), "{class:?} lines carry a token");
        self.start(petition, email, class, detail);
        self.buffer.push(b'\n');
    }

    /// Appends one line of a lifecycle class: with its token and, for `pending`, the token's
    /// expiry in Unix seconds.
    pub fn record_lifecycle(
        &mut self,
        petition: &str,
        email: &str,
        class: LedgerClass,
        detail: &str,
        token: &Token,
        expires_unix_s: Option<i64>,
    ) {
        debug_assert!(class.has_token(), "{class:?} lines carry no token");
        debug_assert_eq!(class == LedgerClass::Pending, expires_unix_s.is_some());
        self.start(petition, email, class, detail);
        self.buffer.push(b'\t');
        token.write_hex(&mut self.buffer);
        if let Some(expires_unix_s) = expires_unix_s {
            self.buffer.push(b'\t');
            self.buffer
                .extend_from_slice(token::format_rfc3339(expires_unix_s).as_bytes());
        }
        self.buffer.push(b'\n');
    }

    /// The four columns every line has.
    fn start(&mut self, petition: &str, email: &str, class: LedgerClass, detail: &str) {
        let buffer = &mut self.buffer;
        buffer.extend_from_slice(petition.as_bytes());
        buffer.push(b'\t');
        buffer.extend_from_slice(email.as_bytes());
        buffer.push(b'\t');
        buffer.extend_from_slice(class.as_str().as_bytes());
        buffer.push(b'\t');
        buffer.extend_from_slice(detail.as_bytes());
    }

    /// Hands the buffer to the writer if it is full enough.
    pub async fn flush_if_full(&mut self) {
        if self.buffer.len() >= CHUNK_BYTES {
            self.flush().await;
        }
    }

    /// Hands whatever is buffered to the writer.
    pub async fn flush(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK_BYTES + 512));
        // The receiver is gone only if the writer thread failed; `finish` reports that error.
        let _ = self.sender.send(chunk).await;
    }
}

/// One line of a ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Petition id.
    pub petition: &'a str,
    /// Signer email as sent.
    pub email: &'a str,
    /// What the server's answer means for durability.
    pub class: LedgerClass,
    /// `-` or the error code / cause.
    pub detail: &'a str,
    /// The token, on lines of the lifecycle classes (and only there).
    pub token: Option<Token>,
    /// When the token expires, in Unix seconds: on `pending` lines (and only there).
    pub expires_unix_s: Option<i64>,
}

/// Parses one line (without its `\n`); `None` for a comment or blank line.
pub fn parse_line(line: &str) -> Result<Option<Entry<'_>>> {
    let line = line.trim_end_matches('\r');
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut fields = line.split('\t');
    let (Some(petition), Some(email), Some(class), detail) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        bail!("expected petition<TAB>email<TAB>outcome[<TAB>detail[<TAB>token[<TAB>expires_at]]]");
    };
    if petition.is_empty() || email.is_empty() {
        bail!("empty petition or email");
    }
    let class = LedgerClass::parse(class).with_context(|| {
        let known: Vec<&str> = LedgerClass::ALL.iter().map(|c| c.as_str()).collect();
        format!("unknown outcome {class:?} (one of {})", known.join(", "))
    })?;
    let (token, expires_at) = (fields.next(), fields.next());
    let token = match (class.has_token(), token) {
        (false, None) => None,
        (false, Some(_)) => bail!("a {} line carries no token", class.as_str()),
        (true, None) => bail!("a {} line needs its token", class.as_str()),
        (true, Some(hex)) => Some(Token::parse(hex).with_context(|| {
            format!(
                "{hex:?} is not a token ({} lowercase hex digits)",
                Token::HEX_LEN
            )
        })?),
    };
    let expires_unix_s = match (class == LedgerClass::Pending, expires_at) {
        (false, None) => None,
        (false, Some(_)) => bail!("only pending lines carry an expiry"),
        (true, None) => bail!("a pending line needs the token's expiry"),
        (true, Some(text)) => Some(
            token::parse_rfc3339(text)
                .with_context(|| format!("{text:?} is not an RFC 3339 time"))?,
        ),
    };
    if fields.next().is_some() {
        bail!("too many columns");
    }
    Ok(Some(Entry {
        petition,
        email,
        class,
        detail: detail.unwrap_or("-"),
        token,
        expires_unix_s,
    }))
}

/// Calls `each` for every entry of the ledger at `path`, in file order.
pub fn read(path: &Path, mut each: impl FnMut(Entry<'_>)) -> Result<u64> {
    let file = File::open(path).with_context(|| format!("opening ledger {}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = String::new();
    let mut number = 0u64;
    let mut entries = 0u64;
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .with_context(|| format!("reading ledger {}", path.display()))?;
        if read == 0 {
            return Ok(entries);
        }
        number += 1;
        let entry = parse_line(line.trim_end_matches('\n'))
            .with_context(|| format!("{}:{number}: not a ledger line", path.display()))?;
        if let Some(entry) = entry {
            entries += 1;
            each(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn lines() {
        let entry = parse_line("lt-1-0\ta@b.c\taccepted\t-").unwrap().unwrap();
        assert_eq!(entry.petition, "lt-1-0");
        assert_eq!(entry.class, LedgerClass::Accepted);
        assert_eq!(
            parse_line("p\te\tindeterminate").unwrap().unwrap().detail,
            "-"
        );
        assert_eq!(parse_line("# comment").unwrap(), None);
        assert_eq!(parse_line("").unwrap(), None);
        assert!(parse_line("p\te\tmaybe\t-").is_err());
        assert!(parse_line("p e accepted").is_err());
    }

    #[test]
    fn lifecycle_lines() {
        let hex = "ab".repeat(Token::BYTES);
        let token = Token::parse(&hex).unwrap();
        let line = format!("p\te\tpending\t-\t{hex}\t2026-12-01T10:00:00Z");
        let entry = parse_line(&line).unwrap().unwrap();
        assert_eq!(entry.class, LedgerClass::Pending);
        assert_eq!(entry.token, Some(token));
        assert_eq!(entry.expires_unix_s, Some(1_796_119_200));
        let line = format!("p\te\tvalidation_failed\ttoken_expired\t{hex}");
        let entry = parse_line(&line).unwrap().unwrap();
        assert_eq!(
            (entry.class, entry.detail, entry.token, entry.expires_unix_s),
            (
                LedgerClass::ValidationFailed,
                "token_expired",
                Some(token),
                None
            )
        );
        let refused = |line: String, needle: &str| {
            let error = format!("{:#}", parse_line(&line).unwrap_err());
            assert!(error.contains(needle), "{line}: {error}");
        };
        refused("p\te\tvalidated\t-".into(), "needs its token");
        refused(
            format!("p\te\tpending\t-\t{hex}"),
            "needs the token's expiry",
        );
        refused(format!("p\te\taccepted\t-\t{hex}"), "carries no token");
        refused(
            format!("p\te\tvalidated\t-\t{hex}\t2026-12-01T10:00:00Z"),
            "only pending",
        );
        refused(
            format!("p\te\tvalidated\t-\t{}", hex.to_uppercase()),
            "not a token",
        );
        refused(
            format!("p\te\tpending\t-\t{hex}\tsoon"),
            "not an RFC 3339 time",
        );
        refused(
            format!("p\te\tpending\t-\t{hex}\t2026-12-01T10:00:00Z\tx"),
            "too many",
        );
    }

    #[tokio::test]
    async fn lifecycle_lines_round_trip() {
        let dir = std::env::temp_dir().join(format!("lt-ledger-v2-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.tsv");
        let writer = LedgerWriter::create(&path).unwrap();
        let mut sink = writer.sink();
        let token = Token::parse(&"0f".repeat(Token::BYTES)).unwrap();
        sink.record("p", "a@x", LedgerClass::Accepted, "-");
        sink.record_lifecycle(
            "p",
            "b@x",
            LedgerClass::Pending,
            "-",
            &token,
            Some(1_796_119_200),
        );
        sink.record_lifecycle("p", "b@x", LedgerClass::Validated, "-", &token, None);
        sink.flush().await;
        drop(sink);
        writer.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(HEADER), "{text}");
        let mut seen = Vec::new();
        read(&path, |entry| {
            seen.push((entry.class, entry.token, entry.expires_unix_s));
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (LedgerClass::Accepted, None, None),
                (LedgerClass::Pending, Some(token), Some(1_796_119_200)),
                (LedgerClass::Validated, Some(token), None),
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn write_then_read() {
        let dir = std::env::temp_dir().join(format!("lt-ledger-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.tsv");
        let writer = LedgerWriter::create(&path).unwrap();
        let mut sinks = [writer.sink(), writer.sink()];
        for i in 0..10_000u32 {
            let sink = &mut sinks[i as usize % 2];
            sink.record(
                "lt-1-0",
                &format!("s{i}@x.org"),
                LedgerClass::Duplicate,
                "-",
            );
            sink.flush_if_full().await;
        }
        for mut sink in sinks {
            sink.flush().await;
        }
        writer.finish().unwrap();
        let mut seen = 0;
        let entries = read(&path, |entry| {
            assert_eq!(entry.class, LedgerClass::Duplicate);
            seen += 1;
        })
        .unwrap();
        assert_eq!((entries, seen), (10_000, 10_000));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
