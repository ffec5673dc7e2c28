//! [`Health`]: whether the store takes writes, and the storage errors seen.
//!
//! After a failed durable write the engine refuses signatures until the writer has reopened the
//! store, reconciled memory with it and seen a probe write succeed (fjall's "poisoned" state):
//! nothing is acknowledged past a failed write. Every failure goes through [`Health::fail`], so
//! none goes uncounted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::error::StoreError;

/// The health flag, the storage error counter and the last storage error.
pub(crate) struct Health {
    healthy: AtomicBool,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            healthy: AtomicBool::new(true),
            errors: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }
}

impl Health {
    /// Whether the store takes writes.
    #[inline]
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// A write (or the recovery) failed: records `error` and refuses writes until
    /// [`Health::recovered`].
    pub fn fail(&self, error: &StoreError) {
        self.record(error);
        self.healthy.store(false, Ordering::Release);
    }

    /// Records an error that leaves the health as it is (a failed attempt to recover).
    pub fn record(&self, error: &StoreError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = Some(error.to_string());
    }

    /// The store is back: writes are taken again.
    pub fn recovered(&self) {
        self.healthy.store(true, Ordering::Release);
    }

    /// Storage errors since open.
    pub fn errors_total(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The last storage error's message.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }
}
