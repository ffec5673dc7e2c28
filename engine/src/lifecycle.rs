//! The signature lifecycle: states, how a state is stored, and the criteria of an invalidation.
//!
//! A signature to a petition with [`Validation::None`] is `validated` when it is written and
//! stores nothing here. One to a petition with [`Validation::Email`] is written `pending`: it
//! holds its signer's slot in the index but is not counted until its token is validated, and two
//! entries are stored with it:
//!
//! - `lifecycle`, keyed by the signature's sequence: a [`LifecycleEntry`] (state `pending`,
//!   petition, expiry, fingerprint, when), written once.
//! - `pending_signers`, keyed by the fingerprint: a [`PendingSigner`] (sequence, expiry,
//!   re-submissions), so that a signer who signs again gets the same token back. It is not
//!   deleted when the signature is validated or invalidated (a random delete per validation);
//!   the expiry sweep clears such entries as it passes their signatures.
//!
//! Every later change of state (validated, invalidated, expired) appends a [`Transition`] to
//! the `transitions` log, keyed by its own sequence. A signature with neither entry nor
//! transition is `validated`. The states live in memory (`states.rs`); the store's entries and
//! log rebuild them. Expiry drops a pending signature: its record is deleted and its sequence is
//! kept in `removed`, so that an index rebuild leaves its fingerprint out.

use std::net::IpAddr;

use crate::error::StoreError;
use crate::fingerprint::Fingerprint;
use crate::place::Place;
use crate::record::{decode_u64, Reader, Record};
use crate::signature::InvalidField;

/// How a petition's signatures become counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Validation {
    /// The upstream tier has confirmed the signer: a signature is counted when it is written.
    #[default]
    None,
    /// A signature is stored pending and counted once its token is validated.
    Email,
}

impl Validation {
    /// Lower-case name, as the HTTP API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Validation::None => "none",
            Validation::Email => "email",
        }
    }

    /// Parses a name as [`Validation::as_str`] spells it.
    pub fn parse(name: &str) -> Option<Validation> {
        match name {
            "none" => Some(Validation::None),
            "email" => Some(Validation::Email),
            _ => None,
        }
    }

    pub(crate) fn to_byte(self) -> u8 {
        match self {
            Validation::None => 0,
            Validation::Email => 1,
        }
    }

    pub(crate) fn from_byte(byte: u8) -> Option<Validation> {
        match byte {
            0 => Some(Validation::None),
            1 => Some(Validation::Email),
            _ => None,
        }
    }
}

/// Where a signature is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureState {
    /// Stored, holding its signer's slot, not counted: waiting for its token.
    Pending,
    /// Counted.
    Validated,
    /// Removed by an invalidation: not counted; its signer stays taken.
    Invalidated,
    /// Dropped unvalidated after the grace period; its signer's slot is free again.
    Expired,
}

impl SignatureState {
    fn to_byte(self) -> u8 {
        match self {
            SignatureState::Pending => 1,
            SignatureState::Validated => 2,
            SignatureState::Invalidated => 3,
            SignatureState::Expired => 4,
        }
    }

    fn from_byte(byte: u8) -> Option<SignatureState> {
        Some(match byte {
            1 => SignatureState::Pending,
            2 => SignatureState::Validated,
            3 => SignatureState::Invalidated,
            4 => SignatureState::Expired,
            _ => return None,
        })
    }
}

/// A value of the `lifecycle` column family (37 bytes, big-endian), written once when a pending
/// signature is: its state as written (`pending`), petition number, expiry, fingerprint, and when
/// it was written. Later states are [`Transition`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LifecycleEntry {
    pub state: SignatureState,
    pub petition: u32,
    pub expires_at_ms: u64,
    pub fp: Fingerprint,
    pub changed_at_ms: u64,
}

impl LifecycleEntry {
    pub const BYTES: usize = 37;

    pub fn encode(&self) -> [u8; Self::BYTES] {
        let mut out = [0u8; Self::BYTES];
        out[0] = self.state.to_byte();
        out[1..5].copy_from_slice(&self.petition.to_be_bytes());
        out[5..13].copy_from_slice(&self.expires_at_ms.to_be_bytes());
        out[13..29].copy_from_slice(&self.fp.to_bytes());
        out[29..].copy_from_slice(&self.changed_at_ms.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<LifecycleEntry, StoreError> {
        const CORRUPT: StoreError = StoreError::Corrupt {
            what: "lifecycle entry",
        };
        if bytes.len() != Self::BYTES {
            return Err(CORRUPT);
        }
        let state = SignatureState::from_byte(bytes[0]).ok_or(CORRUPT)?;
        let mut r = Reader::new(&bytes[1..], "lifecycle entry");
        let petition = r.u32()?;
        let expires_at_ms = r.u64()?;
        let mut fp = [0u8; Fingerprint::BYTES];
        fp.copy_from_slice(&bytes[13..29]);
        Ok(LifecycleEntry {
            state,
            petition,
            expires_at_ms,
            fp: Fingerprint::from_bytes(fp),
            changed_at_ms: decode_u64(&bytes[29..], "lifecycle entry")?,
        })
    }
}

/// A value of the `transitions` column family (17 bytes), keyed by the transition's own
/// sequence: the signature's sequence, its new state, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transition {
    pub seq: u64,
    pub state: SignatureState,
    pub at_ms: u64,
}

impl Transition {
    pub fn encode(&self) -> [u8; 17] {
        let mut out = [0u8; 17];
        out[..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8] = self.state.to_byte();
        out[9..].copy_from_slice(&self.at_ms.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Transition, StoreError> {
        let mut r = Reader::new(bytes, "transition");
        let seq = r.u64()?;
        let state =
            SignatureState::from_byte(r.u8()?).ok_or(StoreError::Corrupt { what: "transition" })?;
        let at_ms = r.u64()?;
        r.finish()?;
        Ok(Transition { seq, state, at_ms })
    }
}

/// A value of the `pending_signers` column family (17 bytes): the pending signature's sequence,
/// its expiry, and how many times its signer has signed again since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PendingSigner {
    pub seq: u64,
    pub expires_at_ms: u64,
    pub resubmits: u8,
    /// Its signature's place, for the token given back; `None` in an entry written before
    /// places (17 bytes: the place is then read from the record).
    pub place: Option<Place>,
}

impl PendingSigner {
    /// 21 bytes: sequence, expiry, re-submissions, place.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(21);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        out.push(self.resubmits);
        if let Some(place) = self.place {
            out.extend_from_slice(&place.0.to_be_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<PendingSigner, StoreError> {
        let mut r = Reader::new(bytes, "pending signer");
        let signer = PendingSigner {
            seq: r.u64()?,
            expires_at_ms: r.u64()?,
            resubmits: r.u8()?,
            place: match bytes.len() {
                17 => None,
                _ => Some(Place(r.u32()?)),
            },
        };
        r.finish()?;
        Ok(signer)
    }
}

/// Most times a pending signer may sign again and get its token back (the UK site's cap); the
/// next time is refused.
pub const RESUBMITS_MAX: u8 = 5;

/// Which signatures an invalidation removes: every given criterion must match. At least one is
/// required.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Criteria {
    /// The email's domain, exactly (case-insensitive).
    pub email_domain: Option<String>,
    /// A glob over the whole email, lower-cased: `*` any run, `?` one character, `[...]` a set.
    pub email_pattern: Option<String>,
    /// An IP address, or a network in CIDR notation (`203.0.113.0/24`, `2001:db8::/32`).
    pub ip: Option<String>,
    /// An ISO 3166-1 alpha-2 country code (case-insensitive).
    pub country: Option<String>,
    /// A region code, exactly (case-insensitive).
    pub region: Option<String>,
    /// A postcode, compared without spaces and case.
    pub postcode: Option<String>,
    /// Received at or after this time (ms since the epoch).
    pub received_after_ms: Option<u64>,
    /// Received before this time (ms since the epoch).
    pub received_before_ms: Option<u64>,
}

/// Criteria checked and compiled for matching.
#[derive(Debug, Clone)]
pub(crate) struct Matcher {
    email_domain: Option<String>,
    email_pattern: Option<glob::Pattern>,
    ip: Option<ipnet::IpNet>,
    country: Option<String>,
    region: Option<String>,
    postcode: Option<String>,
    received_after_ms: Option<u64>,
    received_before_ms: Option<u64>,
}

fn invalid(field: &'static str, reason: &'static str) -> InvalidField {
    InvalidField { field, reason }
}

fn squeeze_postcode(postcode: &str) -> String {
    postcode
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_uppercase)
        .collect()
}

const GLOB_OPTIONS: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: false,
    require_literal_leading_dot: false,
};

impl Criteria {
    /// Checks the criteria and compiles them; a bad one is refused with the field it names.
    pub(crate) fn compile(&self) -> Result<Matcher, InvalidField> {
        let empty = self.email_domain.is_none()
            && self.email_pattern.is_none()
            && self.ip.is_none()
            && self.country.is_none()
            && self.region.is_none()
            && self.postcode.is_none()
            && self.received_after_ms.is_none()
            && self.received_before_ms.is_none();
        if empty {
            return Err(invalid("criteria", "at least one criterion is required"));
        }
        let text = |value: &Option<String>, field, max| -> Result<Option<String>, InvalidField> {
            match value {
                None => Ok(None),
                Some(v) if v.trim().is_empty() => Err(invalid(field, "must not be empty")),
                Some(v) if v.len() > max => Err(invalid(field, "too long")),
                Some(v) => Ok(Some(v.trim().to_owned())),
            }
        };
        let email_domain =
            text(&self.email_domain, "criteria.email_domain", 253)?.map(|d| d.to_lowercase());
        if email_domain.as_deref().is_some_and(|d| d.contains('@')) {
            return Err(invalid("criteria.email_domain", "a domain has no '@'"));
        }
        let email_pattern = text(&self.email_pattern, "criteria.email_pattern", 254)?
            .map(|p| {
                glob::Pattern::new(&p.to_lowercase())
                    .map_err(|_| invalid("criteria.email_pattern", "not a valid glob"))
            })
            .transpose()?;
        let ip = text(&self.ip, "criteria.ip", 64)?
            .map(|ip| {
                ip.parse::<ipnet::IpNet>()
                    .or_else(|_| ip.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| invalid("criteria.ip", "not an IP address or CIDR network"))
            })
            .transpose()?;
        let country = text(&self.country, "criteria.country", 2)?.map(|c| c.to_uppercase());
        if let Some(c) = country
            .as_deref()
            .filter(|c| !crate::country::is_assigned(c))
        {
            return Err(invalid("criteria.country", crate::country::refusal(c)));
        }
        let region = text(
            &self.region,
            "criteria.region",
            crate::signature::REGION_BYTES_MAX,
        )?
        .map(|r| r.to_ascii_uppercase());
        if region
            .as_deref()
            .is_some_and(|r| !crate::signature::is_region_text(r))
        {
            return Err(invalid(
                "criteria.region",
                "may only contain letters, digits and '-'",
            ));
        }
        let postcode = text(&self.postcode, "criteria.postcode", 16)?.map(|p| squeeze_postcode(&p));
        if let (Some(after), Some(before)) = (self.received_after_ms, self.received_before_ms) {
            if after >= before {
                return Err(invalid(
                    "criteria.received_before",
                    "must be later than received_after",
                ));
            }
        }
        Ok(Matcher {
            email_domain,
            email_pattern,
            ip,
            country,
            region,
            postcode,
            received_after_ms: self.received_after_ms,
            received_before_ms: self.received_before_ms,
        })
    }

    /// Appends the criteria's stored form to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        for field in [
            &self.email_domain,
            &self.email_pattern,
            &self.ip,
            &self.country,
            &self.region,
            &self.postcode,
        ] {
            match field {
                None => out.push(0),
                Some(value) => {
                    // Checked by `compile`: at most 254 bytes.
                    out.push(1);
                    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
                    out.extend_from_slice(value.as_bytes());
                }
            }
        }
        for time in [self.received_after_ms, self.received_before_ms] {
            out.extend_from_slice(&time.unwrap_or(u64::MAX).to_be_bytes());
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Criteria, StoreError> {
        let mut text = || -> Result<Option<String>, StoreError> {
            match r.u8()? {
                0 => Ok(None),
                _ => {
                    let len = usize::from(r.u16()?);
                    Ok(Some(r.str(len)?.to_owned()))
                }
            }
        };
        let email_domain = text()?;
        let email_pattern = text()?;
        let ip = text()?;
        let country = text()?;
        let region = text()?;
        let postcode = text()?;
        let time = |ms: u64| (ms != u64::MAX).then_some(ms);
        Ok(Criteria {
            email_domain,
            email_pattern,
            ip,
            country,
            region,
            postcode,
            received_after_ms: time(r.u64()?),
            received_before_ms: time(r.u64()?),
        })
    }
}

impl Matcher {
    /// Whether the stored signature `record` matches every criterion.
    pub fn matches(&self, record: &Record<'_>) -> bool {
        if let Some(after) = self.received_after_ms {
            if record.received_at_ms < after {
                return false;
            }
        }
        if let Some(before) = self.received_before_ms {
            if record.received_at_ms >= before {
                return false;
            }
        }
        if let Some(country) = &self.country {
            if record.country != Some(country.as_str()) {
                return false;
            }
        }
        if let Some(region) = &self.region {
            if record.region != Some(region.as_str()) {
                return false;
            }
        }
        if let Some(net) = &self.ip {
            let inside = record
                .ip
                .and_then(|ip| ip.trim().parse::<IpAddr>().ok())
                .is_some_and(|ip| net.contains(&ip));
            if !inside {
                return false;
            }
        }
        if let Some(postcode) = &self.postcode {
            if record.postcode.map(squeeze_postcode).as_ref() != Some(postcode) {
                return false;
            }
        }
        if let Some(domain) = &self.email_domain {
            let email = record.email.trim();
            let at = email.rfind('@').map_or(0, |at| at + 1);
            let given = &email[at..];
            // Without an allocation for the usual, ASCII, domain.
            let same = if given.is_ascii() {
                given.eq_ignore_ascii_case(domain)
            } else {
                given.to_lowercase() == **domain
            };
            if !same {
                return false;
            }
        }
        if let Some(pattern) = &self.email_pattern {
            if !pattern.matches_with(&record.email.trim().to_lowercase(), GLOB_OPTIONS) {
                return false;
            }
        }
        true
    }
}

/// The `by_petition` column family: for each petition and each batch that wrote signatures to
/// it, the batch's first sequence (key: petition u32, first sequence u64, big-endian) and the
/// runs of that petition's sequences in the batch (value: offset from the key's sequence u32,
/// length u32, per run). One entry per petition per batch, so a petition's signatures are found
/// in signing order without reading anyone else's.
pub(crate) fn by_petition_key(petition: u32, first_seq: u64) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..4].copy_from_slice(&petition.to_be_bytes());
    key[4..].copy_from_slice(&first_seq.to_be_bytes());
    key
}

/// Appends the sequence `seq` (of a batch starting at `first_seq`) to a run list being built.
pub(crate) fn push_run(runs: &mut Vec<u8>, first_seq: u64, seq: u64) {
    let offset = (seq - first_seq) as u32;
    let n = runs.len();
    if n >= 8 {
        let start = u32::from_be_bytes([runs[n - 8], runs[n - 7], runs[n - 6], runs[n - 5]]);
        let len = u32::from_be_bytes([runs[n - 4], runs[n - 3], runs[n - 2], runs[n - 1]]);
        if start + len == offset {
            runs[n - 4..].copy_from_slice(&(len + 1).to_be_bytes());
            return;
        }
    }
    runs.extend_from_slice(&offset.to_be_bytes());
    runs.extend_from_slice(&1u32.to_be_bytes());
}

/// The runs `(first sequence, length)` of a `by_petition` entry, in order.
pub(crate) fn run_pairs(first_seq: u64, value: &[u8]) -> Result<Vec<(u64, u64)>, StoreError> {
    if !value.chunks_exact(8).remainder().is_empty() {
        return Err(StoreError::Corrupt {
            what: "petition index entry",
        });
    }
    Ok(value
        .chunks_exact(8)
        .map(|run| {
            let start = u32::from_be_bytes([run[0], run[1], run[2], run[3]]);
            let len = u32::from_be_bytes([run[4], run[5], run[6], run[7]]);
            (first_seq + u64::from(start), u64::from(len))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(email: &'a str, ip: Option<&'a str>) -> Record<'a> {
        Record {
            petition: 0,
            received_at_ms: 1_000,
            email,
            name: None,
            postcode: Some("sw1a 1aa"),
            country: Some("GB"),
            ip,
            source: None,
            region: Some("E14000639"),
        }
    }

    #[test]
    fn entries_round_trip() {
        let entry = LifecycleEntry {
            state: SignatureState::Pending,
            petition: 3,
            expires_at_ms: 99,
            fp: Fingerprint(u128::MAX - 5),
            changed_at_ms: 42,
        };
        assert_eq!(LifecycleEntry::decode(&entry.encode()), Ok(entry));
        assert!(LifecycleEntry::decode(&entry.encode()[1..]).is_err());
        let mut bad = entry.encode();
        bad[0] = 9;
        assert!(LifecycleEntry::decode(&bad).is_err());
        let signer = PendingSigner {
            seq: 5,
            expires_at_ms: 6,
            resubmits: 2,
            place: Some(Place(77)),
        };
        assert_eq!(PendingSigner::decode(&signer.encode()), Ok(signer));
        let old = PendingSigner {
            place: None,
            ..signer
        };
        assert_eq!(old.encode().len(), 17, "the entry of a build before places");
        assert_eq!(PendingSigner::decode(&old.encode()), Ok(old));
        assert!(PendingSigner::decode(&signer.encode()[..19]).is_err());
    }

    #[test]
    fn runs_round_trip() {
        let mut value = Vec::new();
        for seq in [100, 101, 102, 105, 107, 108] {
            push_run(&mut value, 100, seq);
        }
        assert_eq!(value.len(), 3 * 8, "three runs");
        assert_eq!(
            run_pairs(100, &value).expect("decodes"),
            [(100, 3), (105, 1), (107, 2)]
        );
        assert!(run_pairs(100, &value[1..]).is_err());
    }

    #[test]
    fn criteria_are_checked() {
        let refused = |criteria: Criteria| criteria.compile().expect_err("refused").field;
        assert_eq!(refused(Criteria::default()), "criteria");
        let c = |f: fn(&mut Criteria)| {
            let mut criteria = Criteria::default();
            f(&mut criteria);
            criteria
        };
        assert_eq!(
            refused(c(|c| c.ip = Some("10.0.0.0/33".into()))),
            "criteria.ip"
        );
        assert_eq!(refused(c(|c| c.ip = Some("10.0.0".into()))), "criteria.ip");
        assert_eq!(
            refused(c(|c| c.email_pattern = Some("[a-".into()))),
            "criteria.email_pattern"
        );
        assert_eq!(
            refused(c(|c| c.country = Some("GBR".into()))),
            "criteria.country"
        );
        assert_eq!(
            refused(c(|c| c.region = Some("GB ENG".into()))),
            "criteria.region"
        );
        assert_eq!(
            refused(c(|c| {
                c.received_after_ms = Some(5);
                c.received_before_ms = Some(5);
            })),
            "criteria.received_before"
        );
        assert_eq!(
            refused(c(|c| c.email_domain = Some(" ".into()))),
            "criteria.email_domain"
        );
    }

    #[test]
    fn criteria_match_as_documented() {
        let m = |f: fn(&mut Criteria)| {
            let mut criteria = Criteria::default();
            f(&mut criteria);
            criteria.compile().expect("valid")
        };
        let jo = record("Jo@Example.ORG", Some("203.0.113.7"));
        assert!(m(|c| c.email_domain = Some("example.org".into())).matches(&jo));
        assert!(!m(|c| c.email_domain = Some("ample.org".into())).matches(&jo));
        assert!(m(|c| c.email_pattern = Some("j?@*.org".into())).matches(&jo));
        assert!(!m(|c| c.email_pattern = Some("j?@*.com".into())).matches(&jo));
        assert!(m(|c| c.ip = Some("203.0.113.0/24".into())).matches(&jo));
        assert!(m(|c| c.ip = Some("203.0.113.7".into())).matches(&jo));
        assert!(!m(|c| c.ip = Some("203.0.114.0/24".into())).matches(&jo));
        assert!(!m(|c| c.ip = Some("2001:db8::/32".into())).matches(&jo));
        assert!(!m(|c| c.ip = Some("203.0.113.0/24".into())).matches(&record("a@b.c", None)));
        assert!(m(|c| c.country = Some("gb".into())).matches(&jo));
        assert!(m(|c| c.region = Some("e14000639".into())).matches(&jo));
        assert!(!m(|c| c.region = Some("E14000640".into())).matches(&jo));
        let mut elsewhere = jo.clone();
        elsewhere.region = None;
        assert!(!m(|c| c.region = Some("E14000639".into())).matches(&elsewhere));
        assert!(m(|c| c.postcode = Some("SW1A1AA".into())).matches(&jo));
        assert!(m(|c| c.received_after_ms = Some(1_000)).matches(&jo));
        assert!(!m(|c| c.received_before_ms = Some(1_000)).matches(&jo));
        // Every criterion must match.
        let both = m(|c| {
            c.country = Some("GB".into());
            c.email_domain = Some("elsewhere.org".into());
        });
        assert!(!both.matches(&jo));
    }

    #[test]
    fn criteria_round_trip() {
        let criteria = Criteria {
            email_domain: Some("example.org".into()),
            ip: Some("10.0.0.0/8".into()),
            received_before_ms: Some(7),
            ..Criteria::default()
        };
        let mut out = Vec::new();
        criteria.encode(&mut out);
        let mut r = Reader::new(&out, "criteria");
        assert_eq!(Criteria::decode(&mut r), Ok(criteria));
        r.finish().expect("whole");
    }
}
