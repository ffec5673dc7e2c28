//! API keys, roles, and the per-key rate limit.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Instant;

use subtle::ConstantTimeEq;
use xxhash_rust::xxh3::xxh3_128_with_seed;

/// What a key may do. Reads are public and need no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Submit signatures and validate pending ones (single and batch).
    Ingest,
    /// Everything `ingest` may, plus register, update and close petitions, and run
    /// invalidations.
    Admin,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Admin => "admin",
        }
    }
}

/// One configured API key: `ROLE:KEY`, e.g. `ingest:3f9a...`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// What the key may do.
    pub role: Role,
    /// The secret presented as `Authorization: Bearer <key>`.
    pub key: String,
}

impl fmt::Debug for ApiKey {
    // Keys never reach logs, not even through `Debug`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}:***)", self.role.as_str())
    }
}

/// Why a `ROLE:KEY` text is not an API key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiKeyError {
    /// No `:` between role and key.
    #[error("an API key is ROLE:KEY, e.g. ingest:s3cret")]
    NotRoleAndKey,
    /// The role is neither `ingest` nor `admin`.
    #[error("unknown role {0:?}: use ingest or admin")]
    UnknownRole(String),
    /// The key is shorter than 8 or longer than 256 characters.
    #[error("an API key is 8 to 256 characters")]
    Length,
    /// The key holds a space or a character that is not printable ASCII.
    #[error("an API key is printable ASCII without spaces")]
    NotPrintable,
}

impl FromStr for ApiKey {
    type Err = ApiKeyError;

    fn from_str(s: &str) -> Result<ApiKey, ApiKeyError> {
        let (role, key) = s.split_once(':').ok_or(ApiKeyError::NotRoleAndKey)?;
        let role = match role {
            "ingest" => Role::Ingest,
            "admin" => Role::Admin,
            other => return Err(ApiKeyError::UnknownRole(other.to_string())),
        };
        if key.len() < 8 || key.len() > 256 {
            return Err(ApiKeyError::Length);
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiKeyError::NotPrintable);
        }
        Ok(ApiKey {
            role,
            key: key.to_string(),
        })
    }
}

/// A key's name in the records of administrative changes (see [`Keys::who`]).
fn key_name(key: &ApiKey) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.key.as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}:{hex}", key.role.as_str())
}

/// Who made a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller {
    /// Index of the key in the configuration; `None` in open mode.
    pub key: Option<usize>,
}

/// What the rate limit says to a request of `n` signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// Taken from the bucket: go ahead.
    Taken,
    /// The bucket is short now; it refills, so retry later (429).
    Short,
    /// More than a full bucket holds: no retry can succeed; split the request (422).
    Never,
}

/// Why a request is not authorized.
pub(crate) enum Denied {
    /// No key, or a key that is not configured: 401.
    Unauthenticated,
    /// A valid key whose role may not do this: 403.
    Forbidden,
}

/// The configured keys, stored as keyed digests so that comparing is constant-time and the same
/// length for every key.
pub(crate) struct Keys {
    seed: u64,
    digests: Vec<([u8; 16], Role)>,
    /// The engine's `source` tag per key: its role and position, never the key.
    sources: Vec<String>,
    /// Who a key is in the records of administrative changes: its role and the first 8 hex
    /// digits of its SHA-256 (stable across restarts; not enough to find the key).
    names: Vec<String>,
    limiters: Vec<Mutex<Bucket>>,
    rate_per_s: u32,
}

impl Keys {
    pub fn new(keys: &[ApiKey], rate_per_s: u32) -> Keys {
        let seed = rand_seed();
        Keys {
            seed,
            digests: keys
                .iter()
                .map(|k| (digest(seed, k.key.as_bytes()), k.role))
                .collect(),
            sources: keys
                .iter()
                .enumerate()
                .map(|(index, k)| format!("{}-key-{}", k.role.as_str(), index + 1))
                .collect(),
            names: keys.iter().map(key_name).collect(),
            limiters: keys
                .iter()
                .map(|_| Mutex::new(Bucket::full(rate_per_s)))
                .collect(),
            rate_per_s,
        }
    }

    /// Open mode: no key is configured and every caller is admin.
    pub fn open_mode(&self) -> bool {
        self.digests.is_empty()
    }

    /// Checks the `Authorization` header value against every key (no early exit).
    pub fn authorize(&self, header: Option<&[u8]>, needed: Role) -> Result<Caller, Denied> {
        if self.open_mode() {
            return Ok(Caller { key: None });
        }
        let presented = header
            .and_then(bearer_token)
            .ok_or(Denied::Unauthenticated)?;
        let presented = digest(self.seed, presented);
        let mut found: Option<(usize, Role)> = None;
        for (index, (stored, role)) in self.digests.iter().enumerate() {
            if bool::from(stored.ct_eq(&presented)) {
                found = Some((index, *role));
            }
        }
        let (index, role) = found.ok_or(Denied::Unauthenticated)?;
        if role < needed {
            return Err(Denied::Forbidden);
        }
        Ok(Caller { key: Some(index) })
    }

    /// Who the caller is in the records of administrative changes: `admin:3f9a61c0` (its role
    /// and the first 8 hex digits of its key's SHA-256), or `open` in open mode.
    pub fn who(&self, caller: Caller) -> &str {
        caller
            .key
            .map_or("open", |index| self.names[index].as_str())
    }

    /// The engine's `source` tag for this caller (`None` in open mode).
    pub fn source(&self, caller: Caller) -> Option<&str> {
        caller.key.map(|index| self.sources[index].as_str())
    }

    /// Takes `n` signatures (or validations: each is a write too) from the caller's rate budget.
    pub fn take(&self, caller: Caller, n: u64) -> Take {
        if self.rate_per_s == 0 {
            return Take::Taken;
        }
        let Some(index) = caller.key else {
            return Take::Taken;
        };
        if n > u64::from(self.rate_per_s) {
            return Take::Never;
        }
        let mut bucket = match self.limiters[index].lock() {
            Ok(bucket) => bucket,
            Err(poisoned) => poisoned.into_inner(),
        };
        if bucket.take(self.rate_per_s, n) {
            Take::Taken
        } else {
            Take::Short
        }
    }

    /// The most signatures one request may carry under the rate limit (`None`: no limit).
    pub fn burst(&self) -> Option<u32> {
        (self.rate_per_s > 0).then_some(self.rate_per_s)
    }
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive and
/// one or more spaces separate it from the token (RFC 9110 §11.1, §11.4).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let rest = &value[SCHEME.len()..];
    let token = rest.trim_ascii_start();
    (token.len() < rest.len() && rest[0] == b' ' && !token.is_empty()).then_some(token)
}

fn digest(seed: u64, key: &[u8]) -> [u8; 16] {
    xxh3_128_with_seed(key, seed).to_le_bytes()
}

fn rand_seed() -> u64 {
    // A per-process seed: digests differ from run to run, so no table of them is useful.
    rand::random()
}

/// A token bucket holding up to one second of the rate.
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(rate_per_s: u32) -> Bucket {
        Bucket {
            tokens: f64::from(rate_per_s),
            last: Instant::now(),
        }
    }

    fn take(&mut self, rate_per_s: u32, n: u64) -> bool {
        let now = Instant::now();
        let rate = f64::from(rate_per_s);
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.last = now;
        let n = n as f64;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_and_rejects_bad_ones() {
        let key: ApiKey = "admin:0123456789".parse().expect("valid key");
        assert_eq!(key.role, Role::Admin);
        assert_eq!(key.key, "0123456789");
        for bad in [
            "admin",
            "root:0123456789",
            "ingest:short",
            "ingest:has space9",
        ] {
            assert!(bad.parse::<ApiKey>().is_err(), "{bad} must be refused");
        }
        assert!(!format!("{key:?}").contains("0123456789"));
    }

    #[test]
    fn roles_and_unknown_keys() {
        let keys = Keys::new(
            &[
                "ingest:ingest-key-1".parse().expect("key"),
                "admin:admin-key-12".parse().expect("key"),
            ],
            0,
        );
        assert!(keys
            .authorize(Some(b"Bearer ingest-key-1"), Role::Ingest)
            .is_ok());
        assert!(matches!(
            keys.authorize(Some(b"Bearer ingest-key-1"), Role::Admin),
            Err(Denied::Forbidden)
        ));
        let admin = keys
            .authorize(Some(b"Bearer admin-key-12"), Role::Admin)
            .ok()
            .expect("admin may");
        assert_eq!(keys.source(admin), Some("admin-key-2"));
        for header in [
            None,
            Some(&b"Bearer nope-nope-nope"[..]),
            Some(&b"ingest-key-1"[..]),
        ] {
            assert!(matches!(
                keys.authorize(header, Role::Ingest),
                Err(Denied::Unauthenticated)
            ));
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_with_one_or_more_spaces() {
        let keys = Keys::new(&["ingest:ingest-key-1".parse().expect("key")], 0);
        for header in [
            &b"Bearer ingest-key-1"[..],
            b"bearer ingest-key-1",
            b"BEARER ingest-key-1",
            b"bEaReR   ingest-key-1",
        ] {
            assert!(
                keys.authorize(Some(header), Role::Ingest).is_ok(),
                "{}",
                String::from_utf8_lossy(header)
            );
        }
        for header in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Bearer   ",
            b"Bearer\tingest-key-1",
            b"Bearer:ingest-key-1",
            b"Bearerx ingest-key-1",
            b"Basic ingest-key-1",
            b" Bearer ingest-key-1",
        ] {
            assert!(
                matches!(
                    keys.authorize(Some(header), Role::Ingest),
                    Err(Denied::Unauthenticated)
                ),
                "{}",
                String::from_utf8_lossy(header)
            );
        }
    }

    #[test]
    fn a_request_larger_than_a_full_bucket_is_never_taken() {
        let keys = Keys::new(&["ingest:ingest-key-1".parse().expect("key")], 5);
        let caller = keys
            .authorize(Some(b"Bearer ingest-key-1"), Role::Ingest)
            .ok()
            .expect("authorized");
        assert_eq!(keys.burst(), Some(5));
        assert_eq!(keys.take(caller, 6), Take::Never);
        assert_eq!(keys.take(caller, 5), Take::Taken, "Never took nothing");
        assert_eq!(keys.take(caller, 5), Take::Short);
        let open = Keys::new(&["ingest:ingest-key-1".parse().expect("key")], 0);
        assert_eq!(open.burst(), None);
        assert_eq!(open.take(caller, 1_000_000), Take::Taken);
    }

    #[test]
    fn bucket_refuses_past_the_rate() {
        let mut bucket = Bucket::full(10);
        assert!(bucket.take(10, 10));
        assert!(
            !bucket.take(10, 5),
            "the second of a burst of 15 in no time"
        );
    }
}
