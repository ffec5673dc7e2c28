//! Standard Webhooks signatures: `whsec_` secrets and `v1` HMAC-SHA256 signatures.
//!
//! The scheme is the symmetric one of the Standard Webhooks specification
//! (<https://www.standardwebhooks.com/>): the signed content is `msg_id.timestamp.body`, the MAC
//! is HMAC-SHA256 under the endpoint's secret, and both the secret and the MAC travel as standard
//! base64 with padding. Following it means a receiver can check our deliveries with any of the
//! specification's reference libraries instead of code written for this server.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// The header that carries the message id, the same on every attempt of one message.
pub const HEADER_ID: &str = "webhook-id";
/// The header that carries the attempt's Unix time in seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// The header that carries the signatures, `v1,<base64>`, space-separated when there are several.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// What a serialized secret starts with, so that people and secret scanners can tell one apart.
const PREFIX: &str = "whsec_";

/// The fewest key bytes the specification allows (192 bits).
pub const KEY_BYTES_MIN: usize = 24;
/// The most key bytes the specification allows (512 bits).
pub const KEY_BYTES_MAX: usize = 64;
/// How many bytes [`WebhookSecret::generate`] draws: 256 bits, the size of SHA-256's output, so
/// the key is not the weaker part of the MAC.
const KEY_BYTES_GENERATED: usize = 32;

/// The key an endpoint's deliveries are signed with.
///
/// `Debug` prints no key byte, so a secret can sit in a struct that is logged.
#[derive(Clone)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl fmt::Debug for WebhookSecret {
    // Secrets never reach logs, not even through `Debug`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookSecret({} bytes, ***)", self.key.len())
    }
}

/// Why a text is not a `whsec_` secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The text does not start with `whsec_`.
    #[error("a webhook secret starts with whsec_")]
    MissingPrefix,
    /// What follows `whsec_` is not standard, padded base64.
    #[error("the part of a webhook secret after whsec_ is not base64 (standard alphabet, padded)")]
    Base64(#[source] base64::DecodeError),
    /// The key decodes to fewer than 24 or more than 64 bytes.
    #[error("a webhook secret's key is 24 to 64 bytes, not {0}")]
    Length(usize),
}

impl WebhookSecret {
    /// A new random secret of 32 bytes.
    ///
    /// The bytes come from the thread-local generator of `rand`, a CSPRNG seeded from the
    /// operating system.
    pub fn generate() -> WebhookSecret {
        let mut key = vec![0u8; KEY_BYTES_GENERATED];
        rand::rng().fill_bytes(&mut key);
        WebhookSecret { key }
    }

    /// Reads a secret serialized as `whsec_<base64>`, as [`WebhookSecret::to_text`] writes it
    /// and as other Standard Webhooks producers hand them out.
    pub fn parse(text: &str) -> Result<WebhookSecret, SecretError> {
        let encoded = text
            .strip_prefix(PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let key = BASE64.decode(encoded).map_err(SecretError::Base64)?;
        if !(KEY_BYTES_MIN..=KEY_BYTES_MAX).contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(WebhookSecret { key })
    }

    /// The secret as `whsec_<base64>`, the form shown to the endpoint's owner once.
    pub fn to_text(&self) -> String {
        format!("{PREFIX}{}", BASE64.encode(&self.key))
    }

    /// The `v1` signature of one attempt: `v1,` and the base64 of
    /// HMAC-SHA256(key, `{msg_id}.{timestamp_s}.{body}`).
    ///
    /// `msg_id` must not contain a `.`: the specification forbids it, because a dot would let two
    /// different (id, timestamp) pairs sign the same content. Ids are made by this server, so a
    /// dot is a bug here, caught by a debug assertion.
    pub fn sign(&self, msg_id: &str, timestamp_s: u64, body: &[u8]) -> String {
        debug_assert!(
            !msg_id.contains('.'),
            "a webhook message id holds no dot: {msg_id:?}"
        );
        // HMAC takes a key of any length (longer ones are hashed first), so this cannot fail.
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_s.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of the specification's reference libraries (for example the Go library's
    /// `TestWebhookSign`).
    #[test]
    fn signs_the_reference_vector() {
        let secret =
            WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let signature = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn every_part_of_the_content_is_signed() {
        let secret =
            WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let base = secret.sign("msg_1", 1614265330, b"{}");
        assert_ne!(base, secret.sign("msg_2", 1614265330, b"{}"));
        assert_ne!(base, secret.sign("msg_1", 1614265331, b"{}"));
        assert_ne!(base, secret.sign("msg_1", 1614265330, b"{ }"));
        assert_ne!(
            base,
            WebhookSecret::generate().sign("msg_1", 1614265330, b"{}")
        );
    }

    #[test]
    fn text_round_trips() {
        let secret = WebhookSecret::generate();
        let text = secret.to_text();
        assert!(text.starts_with("whsec_"), "{text}");
        let again = WebhookSecret::parse(&text).expect("own text parses");
        assert_eq!(again.to_text(), text);
        assert_eq!(again.sign("m", 1, b"x"), secret.sign("m", 1, b"x"));
        assert_ne!(
            WebhookSecret::generate().to_text(),
            text,
            "two generated secrets differ"
        );
        for text in [
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            // 64 bytes, the longest allowed.
            &format!("whsec_{}", BASE64.encode([7u8; 64])),
        ] {
            let secret = WebhookSecret::parse(text).expect("valid secret");
            assert_eq!(secret.to_text(), text);
        }
    }

    #[test]
    fn refuses_bad_secrets() {
        let check = |text: &str, expected: fn(&SecretError) -> bool| {
            let error = WebhookSecret::parse(text).expect_err(text);
            assert!(expected(&error), "{text}: {error:?}");
            assert!(!error.to_string().is_empty());
        };
        check("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", |e| {
            *e == SecretError::MissingPrefix
        });
        check("WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", |e| {
            *e == SecretError::MissingPrefix
        });
        check("whsec_MfKQ9r8G!YqrTwjUPD8ILPZIo2LaLaSw", |e| {
            matches!(e, SecretError::Base64(_))
        });
        // 32 bytes need one `=` of padding.
        let unpadded = BASE64.encode([1u8; 32]);
        check(&format!("whsec_{}", unpadded.trim_end_matches('=')), |e| {
            matches!(e, SecretError::Base64(_))
        });
        check("whsec_", |e| *e == SecretError::Length(0));
        check(&format!("whsec_{}", BASE64.encode([1u8; 23])), |e| {
            *e == SecretError::Length(23)
        });
        check(&format!("whsec_{}", BASE64.encode([1u8; 65])), |e| {
            *e == SecretError::Length(65)
        });
    }

    #[test]
    fn debug_hides_the_key() {
        let secret =
            WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        assert_eq!(format!("{secret:?}"), "WebhookSecret(24 bytes, ***)");
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "no dot")]
    fn a_dot_in_the_message_id_is_a_bug() {
        WebhookSecret::generate().sign("msg.1", 1, b"{}");
    }
}
