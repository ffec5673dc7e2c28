//! The tokens phase 1 keeps for phase 2 (`--validate-share`): which ones, and how many at most.
//!
//! Which: a new signer's pending answer is kept when [`keep`] says so, a seeded hash of the run's
//! seed and the signer (connection and number), so the same seed keeps the same signers however
//! the run's timing falls, and tests can recompute the choice from the ledger. A re-send of a
//! pending signer (`--dup-ratio`) answers with the same token and is never kept again, so phase 2
//! validates each kept signer once.
//!
//! How many: at most [`KEPT_TOKENS_MAX`] in all (each [`KeptToken`] is 48 bytes, so 192 MiB at
//! the bound). Connection tasks keep their own tokens (nothing shared on the hot path but one
//! counter, touched only when a token is kept); past the bound a chosen token is counted as over
//! the bound instead of kept, and the run says so.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::token::Token;

/// Most tokens kept for phase 2 over all connections: 4,194,304 (192 MiB of [`KeptToken`]s).
pub const KEPT_TOKENS_MAX: usize = 4 << 20;

/// Bits of [`KeptToken`]'s packed signer that hold the signer number; the connection (at most
/// 100,000, 17 bits) goes above them.
pub(crate) const NUMBER_BITS: u32 = 47;

/// One token kept for phase 2 and whose it is, in 48 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeptToken {
    /// Connection (high 17 bits) and signer number (low 47 bits): the signer's email.
    signer: u64,
    /// Petition index.
    pub petition: u32,
    /// The token as the server gave it.
    pub token: Token,
}

impl KeptToken {
    /// A kept token of signer `number` of `connection`, on petition `petition`.
    pub fn new(connection: u32, number: u64, petition: u32, token: Token) -> KeptToken {
        // A connection would need over 10^14 signatures to overflow its 47 bits.
        assert!(
            number < 1 << NUMBER_BITS,
            "signer number {number} too large"
        );
        assert!(
            connection < 1 << (64 - NUMBER_BITS),
            "connection {connection}"
        );
        KeptToken {
            signer: u64::from(connection) << NUMBER_BITS | number,
            petition,
            token,
        }
    }

    /// The connection whose signer this is.
    pub fn connection(&self) -> u32 {
        (self.signer >> NUMBER_BITS) as u32
    }

    /// The signer's number on its connection.
    pub fn number(&self) -> u64 {
        self.signer & ((1 << NUMBER_BITS) - 1)
    }
}

/// Whether the pending answer to signer `number` of `connection` in a run seeded `seed` is kept
/// at `share`: true for a `share` of all signers, chosen by a hash that is the same on every
/// platform and Rust version.
pub fn keep(seed: u64, connection: u32, number: u64, share: f64) -> bool {
    let mixed = splitmix64(seed ^ splitmix64(u64::from(connection) << NUMBER_BITS ^ number));
    // The top 53 bits as a fraction in [0, 1): exact in an f64.
    let fraction = (mixed >> 11) as f64 / (1u64 << 53) as f64;
    fraction < share
}

/// SplitMix64's finaliser: a bijective mix of 64 bits.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The tokens one connection (or, merged, the whole run) kept in phase 1.
#[derive(Debug, Default)]
pub struct KeptSet {
    /// The tokens kept.
    pub tokens: Vec<KeptToken>,
    /// Pending answers to new signers: the candidates, each kept with probability `share`.
    pub candidates: u64,
    /// Candidates [`keep`] chose that were not kept because the run had kept
    /// [`KEPT_TOKENS_MAX`] already.
    pub over_bound: u64,
}

impl KeptSet {
    /// Offers one candidate: keeps it if [`keep`] chooses it and `total` (the run's kept count,
    /// shared by its connections) is still under `bound`.
    pub fn offer(
        &mut self,
        seed: u64,
        share: f64,
        kept: KeptToken,
        total: &AtomicUsize,
        bound: usize,
    ) {
        self.candidates += 1;
        if !keep(seed, kept.connection(), kept.number(), share) {
            return;
        }
        // The counter may pass the bound by the racing connections' offers; only those under it
        // keep their token.
        if total.fetch_add(1, Ordering::Relaxed) < bound {
            self.tokens.push(kept);
        } else {
            self.over_bound += 1;
        }
    }

    /// Adds another connection's set to this one.
    pub fn merge(&mut self, other: KeptSet) {
        if self.tokens.is_empty() {
            self.tokens = other.tokens;
        } else {
            self.tokens.extend_from_slice(&other.tokens);
        }
        self.candidates += other.candidates;
        self.over_bound += other.over_bound;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn token(n: u8) -> Token {
        Token::parse(&format!("{n:02x}").repeat(Token::BYTES)).unwrap()
    }

    #[test]
    fn a_kept_token_is_48_bytes_and_packs_its_signer() {
        assert_eq!(std::mem::size_of::<KeptToken>(), 48);
        let kept = KeptToken::new(99_999, (1 << NUMBER_BITS) - 1, 7, token(1));
        assert_eq!(kept.connection(), 99_999);
        assert_eq!(kept.number(), (1 << NUMBER_BITS) - 1);
        assert_eq!(kept.petition, 7);
    }

    #[test]
    fn keep_takes_the_share_and_depends_only_on_seed_and_signer() {
        for share in [0.01, 0.3, 0.5, 0.99] {
            let kept = (0..20_000u64)
                .filter(|n| keep(5, (n % 7) as u32, n / 7, share))
                .count() as f64;
            assert!(
                (kept / 20_000.0 - share).abs() < 0.015,
                "share {share}: kept {kept}"
            );
        }
        assert!((0..1000).all(|n| keep(5, 0, n, 1.0)));
        assert!((0..1000).all(|n| !keep(5, 0, n, 0.0)));
        // Deterministic, and a different seed picks different signers.
        let pick = |seed| (0..64).map(|n| keep(seed, 1, n, 0.5)).collect::<Vec<_>>();
        assert_eq!(pick(5), pick(5));
        assert_ne!(pick(5), pick(6));
    }

    #[test]
    fn the_bound_caps_what_is_kept_and_counts_the_rest() {
        let total = AtomicUsize::new(0);
        let (mut a, mut b) = (KeptSet::default(), KeptSet::default());
        for n in 0..10 {
            a.offer(1, 1.0, KeptToken::new(0, n, 0, token(1)), &total, 15);
            b.offer(1, 1.0, KeptToken::new(1, n, 0, token(2)), &total, 15);
        }
        a.merge(b);
        assert_eq!(a.tokens.len(), 15);
        assert_eq!((a.candidates, a.over_bound), (20, 5));
    }
}
