//! Validation tokens: what the signer of a pending signature gets, to validate it later.
//!
//! A token names one stored signature and carries what its validation needs without a lookup
//! table: the petition number, the signature's sequence and when it expires (the body, 20
//! bytes), and a 128-bit HMAC-SHA256 tag over the body under a key derived from the store's
//! secret. Nothing is kept in memory per token; a token is checked by recomputing its tag (in
//! constant time), so an altered or invented one, or one from another store, names nothing.
//!
//! The body is sent encrypted, so that tokens show neither the store's volume (sequences are
//! global) nor how fast a petition signs: XORed with a keystream that is the HMAC-SHA256 of the
//! tag under a second key (deterministic authenticated encryption in the SIV manner: the tag,
//! a PRF of the body, is the IV). The same signature always gets the same token, as a pending
//! signer who signs again must.
//!
//! Text form ([`Token::text`]): 72 lower-case hex digits (36 bytes: the encrypted 20-byte body,
//! then the 16-byte tag). The body, big-endian, is version 2's: petition u32, sequence (40 bits),
//! expiry (48 bits, ms since the epoch), the signature's place u32 (its country and region, so
//! that a validation counts it there without reading the record) and a zero byte. Version 1
//! (petition u32, sequence u64, expiry u64, no place) was issued before places existed; its
//! tokens stay valid, under version 1's keys, and their validation reads the place from the
//! record. A token is tried under version 2's keys first.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::place::Place;

/// Bytes of a token before hex encoding.
const TOKEN_BYTES: usize = 36;
/// Characters of a token's text form.
pub const TOKEN_CHARS: usize = 2 * TOKEN_BYTES;
const BODY_BYTES: usize = 20;
const TAG_BYTES: usize = 16;

/// A validation token, as handed to the signer of a pending signature. Kept as its 36 bytes
/// (an answer carrying one stays small: answers are copied several times on their way back);
/// [`Token::text`] and `Display` give its text form.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token {
    bytes: [u8; TOKEN_BYTES],
    expires_at_ms: u64,
}

impl Token {
    /// The token's text: 72 lower-case hex digits.
    pub fn text(&self) -> TokenText {
        let mut text = [0u8; TOKEN_CHARS];
        for (pair, byte) in text.chunks_exact_mut(2).zip(self.bytes) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0xf)];
        }
        TokenText(text)
    }

    /// When the signature it names expires unvalidated (Unix milliseconds).
    pub fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text().as_str())
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({self})")
    }
}

/// A token's text form: 72 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenText([u8; TOKEN_CHARS]);

impl TokenText {
    /// The text.
    pub fn as_str(&self) -> &str {
        // Only hex digits are ever written into it.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Display for TokenText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for TokenText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// What a genuine token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Named {
    pub petition: u32,
    pub seq: u64,
    pub expires_at_ms: u64,
    /// The signature's place; `None` in a version 1 token.
    pub place: Option<Place>,
}

/// Sequences and expiries a version 2 body has room for.
const SEQ_V2_LIMIT: u64 = 1 << 40;
const EXPIRY_V2_LIMIT: u64 = 1 << 48;

/// Why a token names nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// Not 72 hex digits.
    Malformed,
    /// Well formed, but its tag is not this store's for what it names.
    Unknown,
}

/// Issues and checks tokens under one store's key.
pub(crate) struct TokenKey {
    mac: Hmac<Sha256>,
    /// Derives the keystream that encrypts the body, from the tag.
    stream: Hmac<Sha256>,
    /// Version 1's (see the module documentation).
    mac_v1: Hmac<Sha256>,
    stream_v1: Hmac<Sha256>,
}

impl TokenKey {
    /// The token key of the store whose fingerprint secret is `secret`: SHA-256 of a label and
    /// the secret, so that tokens and fingerprints never share a key.
    pub fn new(secret: &[u8]) -> TokenKey {
        let derive = |label: &[u8]| {
            let mut hasher = Sha256::new();
            hasher.update(label);
            hasher.update(secret);
            <Hmac<Sha256> as Mac>::new_from_slice(&hasher.finalize())
                .expect("HMAC takes keys of any length")
        };
        TokenKey {
            mac: derive(b"petition-engine validation token v2\0"),
            stream: derive(b"petition-engine validation token body v2\0"),
            mac_v1: derive(b"petition-engine validation token v1\0"),
            stream_v1: derive(b"petition-engine validation token body v1\0"),
        }
    }

    /// Encrypts or decrypts `body` in place with the keystream of `tag` under `stream`.
    fn crypt(stream: &Hmac<Sha256>, tag: &[u8], body: &mut [u8]) {
        let mut stream = stream.clone();
        stream.update(tag);
        let keystream = stream.finalize().into_bytes();
        for (byte, key) in body.iter_mut().zip(keystream) {
            *byte ^= key;
        }
    }

    /// The body of `named`, and whether it is version 2's (version 1's when the place is
    /// unknown or a field does not fit version 2).
    fn body(named: Named) -> ([u8; BODY_BYTES], bool) {
        let mut body = [0u8; BODY_BYTES];
        body[..4].copy_from_slice(&named.petition.to_be_bytes());
        match named.place {
            Some(place) if named.seq < SEQ_V2_LIMIT && named.expires_at_ms < EXPIRY_V2_LIMIT => {
                body[4..9].copy_from_slice(&named.seq.to_be_bytes()[3..]);
                body[9..15].copy_from_slice(&named.expires_at_ms.to_be_bytes()[2..]);
                body[15..19].copy_from_slice(&place.0.to_be_bytes());
                (body, true)
            }
            _ => {
                body[4..12].copy_from_slice(&named.seq.to_be_bytes());
                body[12..].copy_from_slice(&named.expires_at_ms.to_be_bytes());
                (body, false)
            }
        }
    }

    /// The token of the signature `named`.
    pub fn issue(&self, named: Named) -> Token {
        let (body, v2) = Self::body(named);
        let (mac, stream) = if v2 {
            (&self.mac, &self.stream)
        } else {
            (&self.mac_v1, &self.stream_v1)
        };
        let mut mac = mac.clone();
        mac.update(&body);
        let tag = mac.finalize().into_bytes();
        let mut bytes = [0u8; TOKEN_BYTES];
        bytes[..BODY_BYTES].copy_from_slice(&body);
        bytes[BODY_BYTES..].copy_from_slice(&tag[..TAG_BYTES]);
        let (body, tag) = bytes.split_at_mut(BODY_BYTES);
        Self::crypt(stream, tag, body);
        Token {
            bytes,
            expires_at_ms: named.expires_at_ms,
        }
    }

    /// What `text` names, if it is a token this key issued.
    pub fn check(&self, text: &str) -> Result<Named, TokenError> {
        let text = text.as_bytes();
        if text.len() != TOKEN_CHARS {
            return Err(TokenError::Malformed);
        }
        let mut bytes = [0u8; TOKEN_BYTES];
        for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            let (Some(high), Some(low)) = (nibble(pair[0]), nibble(pair[1])) else {
                return Err(TokenError::Malformed);
            };
            *byte = high << 4 | low;
        }
        let (sealed, tag) = bytes.split_at(BODY_BYTES);
        let open = |mac: &Hmac<Sha256>, stream: &Hmac<Sha256>| {
            let mut body = [0u8; BODY_BYTES];
            body.copy_from_slice(sealed);
            Self::crypt(stream, tag, &mut body);
            let mut mac = mac.clone();
            mac.update(&body);
            mac.verify_truncated_left(tag).ok().map(|()| body)
        };
        let field = |body: &[u8], range: std::ops::Range<usize>| {
            body[range]
                .iter()
                .fold(0u64, |n, &byte| n << 8 | u64::from(byte))
        };
        if let Some(body) = open(&self.mac, &self.stream) {
            return Ok(Named {
                petition: field(&body, 0..4) as u32,
                seq: field(&body, 4..9),
                expires_at_ms: field(&body, 9..15),
                place: Some(Place(field(&body, 15..19) as u32)),
            });
        }
        let body = open(&self.mac_v1, &self.stream_v1).ok_or(TokenError::Unknown)?;
        Ok(Named {
            petition: field(&body, 0..4) as u32,
            seq: field(&body, 4..12),
            expires_at_ms: field(&body, 12..20),
            place: None,
        })
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The value of one lower-case hex digit. Upper case is refused: a token has one spelling.
fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMED: Named = Named {
        petition: 7,
        seq: 123_456_789,
        expires_at_ms: 1_800_000_000_000,
        place: Some(Place(0x1234_5678)),
    };

    #[test]
    fn version_1_tokens_still_name_their_signature_without_a_place() {
        let key = TokenKey::new(&[1; 192]);
        let v1 = Named {
            place: None,
            ..NAMED
        };
        let token = key.issue(v1);
        assert_eq!(key.check(token.text().as_str()), Ok(v1));
        assert_ne!(token, key.issue(NAMED), "another version, another token");
        // Fields beyond version 2's room go out as version 1.
        let far = Named {
            seq: SEQ_V2_LIMIT,
            ..NAMED
        };
        assert_eq!(
            key.check(key.issue(far).text().as_str()),
            Ok(Named { place: None, ..far })
        );
        let last = Named {
            seq: SEQ_V2_LIMIT - 1,
            expires_at_ms: EXPIRY_V2_LIMIT - 1,
            ..NAMED
        };
        assert_eq!(key.check(key.issue(last).text().as_str()), Ok(last));
    }

    #[test]
    fn a_token_names_what_it_was_issued_for() {
        let key = TokenKey::new(&[1; 192]);
        let token = key.issue(NAMED);
        assert_eq!(token.text().as_str().len(), TOKEN_CHARS);
        assert!(token.text().as_str().bytes().all(|b| HEX.contains(&b)));
        assert_eq!(key.check(token.text().as_str()), Ok(NAMED));
        assert_eq!(
            key.issue(NAMED),
            token,
            "the same signature, the same token"
        );
    }

    #[test]
    fn a_token_shows_nothing_of_what_it_names() {
        let key = TokenKey::new(&[1; 192]);
        // Consecutive signatures of one petition, with one expiry: in clear, their bodies would
        // share 19 of 20 bytes.
        let a = key.issue(NAMED).text();
        let b = key
            .issue(Named {
                seq: NAMED.seq + 1,
                ..NAMED
            })
            .text();
        let same = a.as_str()[..40]
            .bytes()
            .zip(b.as_str()[..40].bytes())
            .filter(|(x, y)| x == y)
            .count();
        assert!(same < 12, "{same} of 40 body digits alike: {a} {b}");
        assert!(!a.as_str().contains(&format!("{:016x}", NAMED.seq)));
    }

    #[test]
    fn altered_truncated_and_foreign_tokens_name_nothing() {
        let key = TokenKey::new(&[1; 192]);
        let token = key.issue(NAMED).to_string();
        // Every single-character change, in body or tag.
        for at in 0..token.len() {
            let mut altered = token.clone().into_bytes();
            altered[at] = if altered[at] == b'0' { b'1' } else { b'0' };
            let altered = String::from_utf8(altered).expect("ascii");
            assert_eq!(key.check(&altered), Err(TokenError::Unknown), "at {at}");
        }
        for len in [0, 1, 71, 73] {
            let text: String = token.chars().cycle().take(len).collect();
            assert_eq!(key.check(&text), Err(TokenError::Malformed), "{len} chars");
        }
        assert_eq!(key.check(&token.to_uppercase()), Err(TokenError::Malformed));
        assert_eq!(
            key.check(&token.replace('a', "g")),
            if token.contains('a') {
                Err(TokenError::Malformed)
            } else {
                Ok(NAMED)
            }
        );
        let other = TokenKey::new(&[2; 192]);
        assert_eq!(
            other.check(&token),
            Err(TokenError::Unknown),
            "another store"
        );
        // Another signature's body with this one's tag.
        let mut spliced = key
            .issue(Named {
                seq: NAMED.seq + 1,
                ..NAMED
            })
            .to_string();
        spliced.replace_range(40.., &token[40..]);
        assert_eq!(key.check(&spliced), Err(TokenError::Unknown));
    }
}
