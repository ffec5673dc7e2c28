//! The ack ledger: one line per signature sent, with what the server answered.
//!
//! Format (UTF-8, `\n`-terminated lines, tab-separated):
//!
//! ```text
//! # loadtest ledger v1: petition<TAB>email<TAB>outcome<TAB>detail
//! lt-42-0<TAB>lt42.3.17@example.org<TAB>accepted<TAB>-
//! lt-42-5<TAB>lt42.1.9@example.org<TAB>indeterminate<TAB>timeout
//! ```
//!
//! `outcome` is one of `accepted`, `duplicate`, `failed`, `indeterminate` ([`LedgerClass`]);
//! `detail` is `-` or the error code / cause. Lines starting with `#` are comments.
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

/// First line of every ledger.
pub const HEADER: &str = "# loadtest ledger v1: petition\temail\toutcome\tdetail";

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
    /// Appends one line.
    pub fn record(&mut self, petition: &str, email: &str, class: LedgerClass, detail: &str) {
        let buffer = &mut self.buffer;
        buffer.extend_from_slice(petition.as_bytes());
        buffer.push(b'\t');
        buffer.extend_from_slice(email.as_bytes());
        buffer.push(b'\t');
        buffer.extend_from_slice(class.as_str().as_bytes());
        buffer.push(b'\t');
        buffer.extend_from_slice(detail.as_bytes());
        buffer.push(b'\n');
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
        bail!("expected petition<TAB>email<TAB>outcome[<TAB>detail]");
    };
    if petition.is_empty() || email.is_empty() {
        bail!("empty petition or email");
    }
    let class = LedgerClass::parse(class).with_context(|| {
        format!("unknown outcome {class:?} (accepted, duplicate, failed or indeterminate)")
    })?;
    Ok(Some(Entry {
        petition,
        email,
        class,
        detail: detail.unwrap_or("-"),
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
