//! The stored layouts of one signature and of one batch's fingerprints: encode and decode.
//!
//! A signature record (a value of the `signatures` column family), integers big-endian:
//!
//! | bytes     | field                                                        |
//! |-----------|--------------------------------------------------------------|
//! | 1         | record version                                               |
//! | 4         | petition number                                              |
//! | 8         | received at, ms since the epoch                              |
//! | 1 + n     | email: length, then the bytes as given (trimmed)             |
//! | 1 (+ n)   | each of name, postcode, country, ip, source: 0 for none, else length + 1, then the bytes |
//! | 1 (+ n)   | region, the same way (version 2; a version 1 record has none)  |
//!
//! A fingerprint batch (a value of the `fingerprints` column family, keyed by the sequence of the
//! batch's first signature): the batch's fingerprints back to back, [`Fingerprint::BYTES`] each,
//! big-endian, in sequence order. The writer builds a batch with [`push_fingerprint`]; every
//! reader walks one with [`fingerprints`].
//!
//! Records are encoded at admission ([`ValidRef::encode`]), all of a call's records in one buffer,
//! so that the writer, the one serial stage, only copies bytes into its batch.

use std::ops::Range;

use crate::error::StoreError;
use crate::fingerprint::Fingerprint;
use crate::signature::ValidRef;

/// The version written: 2 adds the region. Version 1 records (no region) are read as well.
const RECORD_VERSION: u8 = 2;

/// One signature as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub petition: u32,
    pub received_at_ms: u64,
    pub email: &'a str,
    pub name: Option<&'a str>,
    pub postcode: Option<&'a str>,
    pub country: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub source: Option<&'a str>,
    pub region: Option<&'a str>,
}

impl ValidRef<'_> {
    /// The most bytes [`ValidRef::encode`] appends for this signature.
    pub fn encoded_len_max(&self) -> usize {
        32 + self.email.len()
            + [
                self.name,
                self.postcode,
                self.country,
                self.ip,
                self.source,
                self.region,
            ]
            .iter()
            .map(|field| field.map_or(1, |f| f.len() + 2))
            .sum::<usize>()
    }

    /// Appends the stored record of this signature (see [`encode`]) to `out`, and returns where
    /// it lies there. Encoded at admission, all of a call's records in one buffer, so that the
    /// writer, the one serial stage, only copies bytes into its batch, and no signature costs an
    /// allocation. The country and the region are stored upper-case.
    pub fn encode(self, petition: u32, received_at_ms: u64, out: &mut Vec<u8>) -> Range<usize> {
        let mut country = [0u8; 2];
        let country = self.country.map(|code| upper(code, &mut country));
        let mut region = [0u8; crate::signature::REGION_BYTES_MAX];
        let region = self.region.map(|code| upper(code, &mut region));
        let start = out.len();
        encode(
            &Record {
                petition,
                received_at_ms,
                email: self.email,
                name: self.name,
                postcode: self.postcode,
                country,
                ip: self.ip,
                source: self.source,
                region,
            },
            out,
        );
        start..out.len()
    }
}

/// `code` upper-cased into `buffer`. Validated codes are ASCII and fit; anything else is
/// returned as it is.
fn upper<'b>(code: &'b str, buffer: &'b mut [u8]) -> &'b str {
    if !code.is_ascii() || code.len() > buffer.len() {
        return code;
    }
    let buffer = &mut buffer[..code.len()];
    for (to, from) in buffer.iter_mut().zip(code.bytes()) {
        *to = from.to_ascii_uppercase();
    }
    std::str::from_utf8(buffer).unwrap_or(code)
}

fn push_optional(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        // Validated fields are at most 200 bytes, so `len + 1` fits a byte.
        Some(s) => {
            debug_assert!(s.len() < 255);
            out.push(s.len() as u8 + 1);
            out.extend_from_slice(s.as_bytes());
        }
        None => out.push(0),
    }
}

/// Appends the encoding of `record` to `out`.
pub(crate) fn encode(record: &Record<'_>, out: &mut Vec<u8>) {
    out.push(RECORD_VERSION);
    out.extend_from_slice(&record.petition.to_be_bytes());
    out.extend_from_slice(&record.received_at_ms.to_be_bytes());
    // Validated emails are at most 254 bytes.
    debug_assert!(record.email.len() <= 254);
    out.push(record.email.len() as u8);
    out.extend_from_slice(record.email.as_bytes());
    push_optional(out, record.name);
    push_optional(out, record.postcode);
    push_optional(out, record.country);
    push_optional(out, record.ip);
    push_optional(out, record.source);
    push_optional(out, record.region);
}

/// Decodes one record written by [`encode`].
pub(crate) fn decode(bytes: &[u8]) -> Result<Record<'_>, StoreError> {
    let mut r = Reader::new(bytes, "signature record");
    let version = r.u8()?;
    if !(1..=RECORD_VERSION).contains(&version) {
        return Err(StoreError::Corrupt {
            what: "signature record",
        });
    }
    let petition = r.u32()?;
    let received_at_ms = r.u64()?;
    let email_len = usize::from(r.u8()?);
    let email = r.str(email_len)?;
    let record = Record {
        petition,
        received_at_ms,
        email,
        name: r.optional_str()?,
        postcode: r.optional_str()?,
        country: r.optional_str()?,
        ip: r.optional_str()?,
        source: r.optional_str()?,
        region: if version >= 2 {
            r.optional_str()?
        } else {
            None
        },
    };
    r.finish()?;
    Ok(record)
}

/// Appends one fingerprint to a fingerprint batch being built.
#[inline]
pub(crate) fn push_fingerprint(batch: &mut Vec<u8>, fp: Fingerprint) {
    batch.extend_from_slice(&fp.to_bytes());
}

/// How many fingerprints a stored fingerprint batch holds; a length that is not a whole number
/// of fingerprints is corrupt.
pub(crate) fn fingerprints_in(batch: &[u8]) -> Result<u64, StoreError> {
    if !batch
        .chunks_exact(Fingerprint::BYTES)
        .remainder()
        .is_empty()
    {
        return Err(StoreError::Corrupt {
            what: "fingerprint batch",
        });
    }
    Ok((batch.len() / Fingerprint::BYTES) as u64)
}

/// The fingerprints of a batch, in order. The store hands out only batches that passed
/// [`fingerprints_in`].
pub(crate) fn fingerprints(
    batch: &[u8],
) -> impl ExactSizeIterator<Item = Fingerprint> + Clone + '_ {
    debug_assert_eq!(
        batch.len() % Fingerprint::BYTES,
        0,
        "a whole number of fingerprints"
    );
    batch.chunks_exact(Fingerprint::BYTES).map(|bytes| {
        let mut fp = [0u8; Fingerprint::BYTES];
        fp.copy_from_slice(bytes);
        Fingerprint::from_bytes(fp)
    })
}

pub(crate) fn decode_u32(bytes: &[u8], what: &'static str) -> Result<u32, StoreError> {
    <[u8; 4]>::try_from(bytes)
        .map(u32::from_be_bytes)
        .map_err(|_| StoreError::Corrupt { what })
}

pub(crate) fn decode_u64(bytes: &[u8], what: &'static str) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt { what })
}

/// Reads a stored value front to back; any shortfall or leftover is [`StoreError::Corrupt`].
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { bytes, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.bytes.len() < n {
            return Err(StoreError::Corrupt { what: self.what });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, StoreError> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, StoreError> {
        decode_u32(self.take(4)?, self.what)
    }

    pub fn u64(&mut self) -> Result<u64, StoreError> {
        decode_u64(self.take(8)?, self.what)
    }

    pub fn str(&mut self, len: usize) -> Result<&'a str, StoreError> {
        std::str::from_utf8(self.take(len)?).map_err(|_| StoreError::Corrupt { what: self.what })
    }

    pub fn optional_str(&mut self) -> Result<Option<&'a str>, StoreError> {
        match self.u8()? {
            0 => Ok(None),
            n => Ok(Some(self.str(usize::from(n) - 1)?)),
        }
    }

    pub fn finish(self) -> Result<(), StoreError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Corrupt { what: self.what })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::{validate, NewSignature, SignerPolicy};

    const OFF: SignerPolicy = SignerPolicy {
        strip_plus_tags: false,
        gmail_dots: false,
    };

    #[test]
    fn records_round_trip_and_truncations_are_corrupt() {
        let record = Record {
            petition: 7,
            received_at_ms: 1_700_000_000_000,
            email: "Jo@Example.org",
            name: Some("Jo Smith"),
            postcode: None,
            country: Some("GB"),
            ip: Some("2001:db8::1"),
            source: Some(""),
            region: Some("E14000639"),
        };
        let mut bytes = Vec::new();
        encode(&record, &mut bytes);
        assert_eq!(decode(&bytes).expect("decodes"), record);
        // A version 1 record: the same fields without the region.
        let mut v1 = bytes.clone();
        v1[0] = 1;
        v1.truncate(v1.len() - 1 - "E14000639".len());
        let old = decode(&v1).expect("a version 1 record decodes");
        assert_eq!(old.region, None);
        assert_eq!(old.source, record.source);
        let mut v3 = bytes.clone();
        v3[0] = 3;
        assert!(decode(&v3).is_err(), "an unknown version");
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "prefix of {len} bytes");
        }
        bytes.push(0);
        assert!(decode(&bytes).is_err(), "trailing byte");
    }

    #[test]
    fn country_and_region_are_stored_upper_case() {
        let mut signature = NewSignature::new("p1", " A@Example.org ");
        signature.country = Some("gb".into());
        signature.region = Some(" e14000639-x ".into());
        let (valid, signer) =
            validate(&signature.as_signature_ref(), OFF, str::to_owned).expect("valid");
        let mut bytes = vec![7; 3];
        let at = valid.encode(1, 0, &mut bytes);
        assert_eq!(at.start, 3);
        assert!(at.len() <= valid.encoded_len_max());
        assert_eq!(bytes[..3], [7; 3], "appends");
        let valid = decode(&bytes[at]).expect("decodes");
        assert_eq!(valid.country, Some("GB"));
        assert_eq!(valid.region, Some("E14000639-X"));
        assert_eq!(valid.email, "A@Example.org");
        assert_eq!(signer, "a@example.org");
    }

    #[test]
    fn fingerprint_batches_round_trip() {
        let fps = [Fingerprint(1), Fingerprint(u128::MAX), Fingerprint(7 << 64)];
        let mut batch = Vec::new();
        for fp in fps {
            push_fingerprint(&mut batch, fp);
        }
        assert_eq!(batch.len(), fps.len() * Fingerprint::BYTES);
        assert_eq!(fingerprints_in(&batch).expect("whole"), fps.len() as u64);
        assert!(fingerprints(&batch).eq(fps));
        assert!(fingerprints_in(&batch[1..]).is_err());
    }
}
