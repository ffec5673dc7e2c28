//! Keyed signer fingerprints.
//!
//! A fingerprint is the 128-bit XXH3 of `(petition number, canonical signer)` under a secret of
//! [`SECRET_BYTES`] random bytes that is generated once and kept in the store. Without the secret
//! nobody can aim a collision at a victim signer. The index keeps 108 of the 128 bits (see
//! `index.rs`), so over 10^9 signatures the chance of any false "duplicate" is about
//! (10^9)^2 / 2^109 ≈ 1.5e-15, below the 1e-12 the design asks for.

use xxhash_rust::xxh3::xxh3_128_with_secret;

/// Length of the fingerprint secret, in bytes (XXH3 needs at least 136).
pub const SECRET_BYTES: usize = 192;

/// A keyed 128-bit fingerprint of one `(petition, signer)` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u128);

impl Fingerprint {
    /// Width of a fingerprint, in bytes: what the `fingerprints` column family stores per
    /// signature.
    pub const BYTES: usize = 16;

    /// Big-endian bytes, as stored in the `fingerprints` column family.
    pub fn to_bytes(self) -> [u8; Fingerprint::BYTES] {
        self.0.to_be_bytes()
    }

    /// Inverse of [`Fingerprint::to_bytes`].
    pub fn from_bytes(bytes: [u8; Fingerprint::BYTES]) -> Fingerprint {
        Fingerprint(u128::from_be_bytes(bytes))
    }
}

/// Computes fingerprints under one secret.
#[derive(Clone)]
pub struct Fingerprinter {
    secret: Box<[u8; SECRET_BYTES]>,
}

impl std::fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Fingerprinter").finish_non_exhaustive()
    }
}

impl Fingerprinter {
    /// A fingerprinter with the given secret.
    pub fn new(secret: [u8; SECRET_BYTES]) -> Fingerprinter {
        Fingerprinter {
            secret: Box::new(secret),
        }
    }

    /// A fingerprinter with a fresh random secret.
    pub fn random() -> Fingerprinter {
        let mut secret = [0u8; SECRET_BYTES];
        rand::fill(&mut secret[..]);
        Fingerprinter::new(secret)
    }

    /// The secret, for persisting it.
    pub(crate) fn secret(&self) -> &[u8; SECRET_BYTES] {
        &self.secret
    }

    /// The fingerprint of `signer` on the petition numbered `petition`.
    #[inline]
    pub fn fingerprint(&self, petition: u32, signer: &str) -> Fingerprint {
        // Hash `petition (4 bytes LE) ++ signer` from a small stack buffer: no allocation for
        // the emails people have, and little to zero per call; longer ones (up to 254 bytes, or
        // more once non-ASCII text is lower-cased) take the fallback.
        let mut buffer = [0u8; 128];
        let total = 4 + signer.len();
        if total <= buffer.len() {
            buffer[..4].copy_from_slice(&petition.to_le_bytes());
            buffer[4..total].copy_from_slice(signer.as_bytes());
            Fingerprint(xxh3_128_with_secret(&buffer[..total], &self.secret[..]))
        } else {
            let mut input = Vec::with_capacity(total);
            input.extend_from_slice(&petition.to_le_bytes());
            input.extend_from_slice(signer.as_bytes());
            Fingerprint(xxh3_128_with_secret(&input, &self.secret[..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_on_petition_signer_and_secret() {
        let a = Fingerprinter::new([7; SECRET_BYTES]);
        let b = Fingerprinter::new([8; SECRET_BYTES]);
        let base = a.fingerprint(1, "a@example.org");
        assert_eq!(base, a.fingerprint(1, "a@example.org"));
        assert_ne!(base, a.fingerprint(2, "a@example.org"));
        assert_ne!(base, a.fingerprint(1, "b@example.org"));
        assert_ne!(base, b.fingerprint(1, "a@example.org"));
        let long = "x".repeat(700);
        assert_eq!(a.fingerprint(3, &long), a.fingerprint(3, &long));
        assert_ne!(a.fingerprint(3, &long), a.fingerprint(4, &long));
    }

    #[test]
    fn bytes_round_trip() {
        let fp = Fingerprinter::random().fingerprint(9, "z@example.org");
        assert_eq!(Fingerprint::from_bytes(fp.to_bytes()), fp);
    }

    #[test]
    fn debug_hides_the_secret() {
        let text = format!("{:?}", Fingerprinter::new([42; SECRET_BYTES]));
        assert!(!text.contains("42"), "{text}");
    }
}
