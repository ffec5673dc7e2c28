//! Webhooks as the engine keeps them: a name, a destination, the kinds of event it wants, its
//! signing secret and its durable cursor (the last event delivered). Delivery itself (HTTP,
//! signatures, retries) belongs to the embedding service; the engine keeps registrations and
//! cursors in the store, written by the single writer like every other change, so that a
//! restart resumes each webhook after the last event it confirmed.

use crate::error::StoreError;
use crate::event::EventKind;
use crate::record::Reader;
use crate::signature::InvalidField;

/// Most bytes of a webhook name.
pub const WEBHOOK_NAME_BYTES_MAX: usize = 64;
/// Most bytes of a webhook URL.
pub const WEBHOOK_URL_BYTES_MAX: usize = 2_048;
/// Most bytes of a webhook secret as stored.
pub const WEBHOOK_SECRET_BYTES_MAX: usize = 256;
/// Most webhooks one engine keeps.
pub const WEBHOOKS_MAX: usize = 256;

const RECORD_VERSION: u8 = 1;

/// What to register (or replace) under a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSpec {
    /// 1–64 characters of `[A-Za-z0-9._-]`.
    pub name: String,
    /// Where deliveries go. The engine checks only its length; the deliverer checks the rest.
    pub url: String,
    /// The kinds delivered; empty means every kind but `source_alert`, which names signers'
    /// addresses and is delivered only when listed.
    pub events: Vec<EventKind>,
    /// The signing secret, opaque to the engine.
    pub secret: String,
    /// Where a new webhook starts: after this event. `None`: after the newest event (it gets
    /// what happens from now on). A replaced webhook keeps its cursor unless this is given.
    pub after: Option<u64>,
}

/// A registered webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub name: String,
    pub url: String,
    /// The kinds delivered; empty means every kind but `source_alert`, which names signers'
    /// addresses and is delivered only when listed.
    pub events: Vec<EventKind>,
    pub secret: String,
    /// The last event delivered (or skipped as not wanted): delivery resumes after it.
    pub cursor: u64,
    /// When it was registered (Unix milliseconds).
    pub created_at_ms: u64,
    /// New at each registration or replacement (increasing, never reused while the engine is
    /// open). A cursor is moved only for the revision it was delivered under, so a deliverer
    /// still running for a replaced (or deleted and registered again) webhook cannot undo the
    /// new registration's `after`.
    pub revision: u64,
}

impl Webhook {
    /// Whether it wants events of `kind`.
    pub fn wants(&self, kind: EventKind) -> bool {
        if self.events.is_empty() {
            return kind != EventKind::SourceAlert;
        }
        self.events.contains(&kind)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.name.len() + self.url.len() + self.secret.len());
        out.push(RECORD_VERSION);
        // Lengths are bounded by `check`.
        out.push(self.name.len() as u8);
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&(self.url.len() as u16).to_be_bytes());
        out.extend_from_slice(self.url.as_bytes());
        out.extend_from_slice(&(self.secret.len() as u16).to_be_bytes());
        out.extend_from_slice(self.secret.as_bytes());
        let mask = self.events.iter().fold(0u8, |m, k| m | 1 << k.code());
        out.push(mask);
        out.extend_from_slice(&self.cursor.to_be_bytes());
        out.extend_from_slice(&self.created_at_ms.to_be_bytes());
        out.extend_from_slice(&self.revision.to_be_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Webhook, StoreError> {
        let mut r = Reader::new(bytes, "webhook");
        if r.u8()? != RECORD_VERSION {
            return Err(StoreError::Corrupt { what: "webhook" });
        }
        let len = usize::from(r.u8()?);
        let name = r.str(len)?.to_owned();
        let len = usize::from(r.u16()?);
        let url = r.str(len)?.to_owned();
        let len = usize::from(r.u16()?);
        let secret = r.str(len)?.to_owned();
        let mask = r.u8()?;
        let events = EventKind::ALL
            .into_iter()
            .filter(|k| mask & (1 << k.code()) != 0)
            .collect();
        let cursor = r.u64()?;
        let created_at_ms = r.u64()?;
        let revision = r.u64()?;
        r.finish()?;
        Ok(Webhook {
            name,
            url,
            events,
            secret,
            cursor,
            created_at_ms,
            revision,
        })
    }
}

/// Checks a webhook name: 1–64 characters of `[A-Za-z0-9._-]`.
pub(crate) fn check_name(name: &str) -> Result<(), InvalidField> {
    let ok = !name.is_empty()
        && name.len() <= WEBHOOK_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidField {
            field: "name",
            reason: "1 to 64 characters of A-Z a-z 0-9 . _ -",
        })
    }
}

impl WebhookSpec {
    pub(crate) fn check(&self) -> Result<(), InvalidField> {
        check_name(&self.name)?;
        if self.url.is_empty() || self.url.len() > WEBHOOK_URL_BYTES_MAX {
            return Err(InvalidField {
                field: "url",
                reason: "1 to 2048 bytes",
            });
        }
        if self.secret.is_empty() || self.secret.len() > WEBHOOK_SECRET_BYTES_MAX {
            return Err(InvalidField {
                field: "secret",
                reason: "1 to 256 bytes",
            });
        }
        Ok(())
    }
}

/// A change to the webhooks, made by the writer.
#[derive(Debug, Clone)]
pub(crate) enum WebhookChange {
    /// Register or replace.
    Put(Webhook),
    Delete(String),
    /// Move a webhook's cursor forward: name, the revision delivered under, cursor.
    Cursor(String, u64, u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let hook = Webhook {
            name: "responders".into(),
            url: "http://10.0.0.5:8080/hook".into(),
            events: vec![
                EventKind::ThresholdCrossed,
                EventKind::Responded,
                EventKind::SourceAlert,
            ],
            secret: "whsec_abc".into(),
            cursor: 42,
            created_at_ms: 7,
            revision: 3,
        };
        let bytes = hook.encode();
        assert_eq!(Webhook::decode(&bytes).expect("decodes"), hook);
        assert!(Webhook::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(hook.wants(EventKind::Responded));
        assert!(hook.wants(EventKind::SourceAlert));
        assert!(!hook.wants(EventKind::PetitionClosed));
        let all = Webhook {
            events: vec![],
            ..hook
        };
        assert!(all.wants(EventKind::PetitionClosed));
        assert!(
            !all.wants(EventKind::SourceAlert),
            "addresses only to a webhook that lists source_alert"
        );
    }

    #[test]
    fn specs_are_checked() {
        let spec = WebhookSpec {
            name: "a-b.c_d".into(),
            url: "http://x/".into(),
            events: vec![],
            secret: "s".into(),
            after: None,
        };
        assert!(spec.check().is_ok());
        for bad in ["", "a b", "a/b", &"x".repeat(65)] {
            let s = WebhookSpec {
                name: bad.into(),
                ..spec.clone()
            };
            assert!(s.check().is_err(), "{bad:?}");
        }
        let s = WebhookSpec {
            url: "h".repeat(2049),
            ..spec.clone()
        };
        assert!(s.check().is_err());
        let s = WebhookSpec {
            secret: String::new(),
            ..spec
        };
        assert!(s.check().is_err());
    }
}
