//! [`States`]: where each signature is in its life, two bits per signature sequence, in memory.
//!
//! A validation, an invalidation or the expiry sweep must know a signature's state; reading it
//! from the store and writing it back at a random key made the writer spend most of its time in
//! RocksDB's memtable skip lists (validations in random order: 99 k/s at 300 k signatures, 61 k/s
//! at 2 M). Here the state is a 2-bit lookup. The store stays the source of truth: a pending
//! signature's `lifecycle` entry is written once, when it is signed, and every later change
//! appends a transition to the `transitions` log; recovery replays both into this table.
//!
//! The table is paged by 65,536 sequences (16 KiB a page); a page is allocated only when one of
//! its signatures leaves the default state, `validated`, so a store whose petitions do not
//! validate by email spends nothing here. At 100 M signatures all in pages: 25 MB, 0.25 bytes a
//! signature.

use parking_lot::RwLock;

use crate::lifecycle::SignatureState;

const PAGE_BITS: u32 = 16;
const PAGE_SEQS: u64 = 1 << PAGE_BITS;
/// 32 states of 2 bits per u64.
const PAGE_WORDS: usize = (PAGE_SEQS / 32) as usize;

/// The 2-bit code of a state; 0 is `validated`, what a page that was never allocated holds.
fn code(state: SignatureState) -> u64 {
    match state {
        SignatureState::Validated => 0,
        SignatureState::Pending => 1,
        SignatureState::Invalidated => 2,
        SignatureState::Expired => 3,
    }
}

fn state(code: u64) -> SignatureState {
    match code & 3 {
        0 => SignatureState::Validated,
        1 => SignatureState::Pending,
        2 => SignatureState::Invalidated,
        _ => SignatureState::Expired,
    }
}

/// The states of all signatures, by sequence.
#[derive(Default)]
pub(crate) struct States {
    pages: RwLock<Vec<Option<Box<[u64]>>>>,
}

/// The table under its read lock, for a run of lookups.
pub(crate) struct StatesRead<'a> {
    pages: parking_lot::RwLockReadGuard<'a, Vec<Option<Box<[u64]>>>>,
}

impl StatesRead<'_> {
    #[inline]
    pub fn get(&self, seq: u64) -> SignatureState {
        lookup(&self.pages, seq)
    }
}

#[inline]
fn lookup(pages: &[Option<Box<[u64]>>], seq: u64) -> SignatureState {
    let page = (seq >> PAGE_BITS) as usize;
    match pages.get(page) {
        Some(Some(words)) => {
            let at = (seq & (PAGE_SEQS - 1)) as usize;
            state(words[at / 32] >> (2 * (at % 32)))
        }
        _ => SignatureState::Validated,
    }
}

impl States {
    pub fn get(&self, seq: u64) -> SignatureState {
        lookup(&self.pages.read(), seq)
    }

    pub fn read(&self) -> StatesRead<'_> {
        StatesRead {
            pages: self.pages.read(),
        }
    }

    /// Sets the states of `changes`, in order, under one write lock.
    pub fn set_all(&self, changes: impl IntoIterator<Item = (u64, SignatureState)>) {
        let mut pages = self.pages.write();
        for (seq, new) in changes {
            let page = (seq >> PAGE_BITS) as usize;
            if page >= pages.len() {
                if new == SignatureState::Validated {
                    continue;
                }
                pages.resize_with(page + 1, || None);
            }
            let words = match &mut pages[page] {
                Some(words) => words,
                slot @ None => {
                    if new == SignatureState::Validated {
                        continue;
                    }
                    slot.insert(vec![0u64; PAGE_WORDS].into_boxed_slice())
                }
            };
            let at = (seq & (PAGE_SEQS - 1)) as usize;
            let shift = 2 * (at % 32);
            words[at / 32] = (words[at / 32] & !(3 << shift)) | (code(new) << shift);
        }
    }

    #[cfg(test)]
    pub fn set(&self, seq: u64, new: SignatureState) {
        self.set_all([(seq, new)]);
    }

    /// Forgets everything: every signature `validated` (before a rebuild from the store).
    pub fn clear(&self) {
        self.pages.write().clear();
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        let pages = self.pages.read();
        let allocated = pages.iter().filter(|p| p.is_some()).count();
        (allocated * PAGE_WORDS * 8 + pages.len() * std::mem::size_of::<Option<Box<[u64]>>>())
            as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_kept_per_sequence_and_default_to_validated() {
        let states = States::default();
        assert_eq!(states.get(5), SignatureState::Validated);
        assert_eq!(states.bytes(), 0);
        states.set(5, SignatureState::Validated);
        assert_eq!(states.bytes(), 0, "the default allocates nothing");
        let all = [
            SignatureState::Pending,
            SignatureState::Invalidated,
            SignatureState::Expired,
            SignatureState::Validated,
        ];
        for (i, s) in all.iter().enumerate() {
            states.set(PAGE_SEQS * 3 + 31 + i as u64, *s);
        }
        for (i, s) in all.iter().enumerate() {
            assert_eq!(states.get(PAGE_SEQS * 3 + 31 + i as u64), *s);
        }
        assert_eq!(states.get(PAGE_SEQS * 3 + 30), SignatureState::Validated);
        assert_eq!(states.get(PAGE_SEQS * 3 + 35), SignatureState::Validated);
        assert_eq!(states.get(PAGE_SEQS * 9), SignatureState::Validated);
        states.set(PAGE_SEQS * 3 + 31, SignatureState::Validated);
        assert_eq!(states.get(PAGE_SEQS * 3 + 31), SignatureState::Validated);
        assert_eq!(
            states.read().get(PAGE_SEQS * 3 + 32),
            SignatureState::Invalidated
        );
        assert!(states.bytes() >= PAGE_WORDS as u64 * 8);
        states.clear();
        assert_eq!(states.get(PAGE_SEQS * 3 + 32), SignatureState::Validated);
    }
}
