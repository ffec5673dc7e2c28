//! The signature model: what an upstream tier submits, how it is validated, and how a signer's
//! identity (the canonical email) is derived from it.
//!
//! Validation is total: every input either yields a [`ValidRef`] or an [`InvalidField`]
//! naming the field and the reason. Nothing here panics, whatever the bytes.
//!
//! An all-ASCII email, the common case, takes a table-driven path that none of the Unicode
//! rules below touch. Any other email goes through [`unicode_signer`]: invisible characters are
//! refused, the local part is lower-cased and put in NFC, and a non-ASCII domain is brought to
//! its A-label (punycode) form by UTS 46, so the spellings of one mailbox give one signer.

use std::borrow::Cow;
use std::net::IpAddr;

use icu_normalizer::ComposingNormalizerBorrowed;
use icu_properties::props::{DefaultIgnorableCodePoint, GeneralCategory};
use icu_properties::{CodePointMapData, CodePointSetData};
use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

/// Longest petition id, in bytes (ids are ASCII).
pub const PETITION_ID_BYTES_MAX: usize = 64;
/// Longest email address, in bytes (RFC 5321 path limit).
pub const EMAIL_BYTES_MAX: usize = 254;
/// Longest local part of an email address, in bytes.
pub const EMAIL_LOCAL_BYTES_MAX: usize = 64;
/// Longest signer name, in bytes.
pub const NAME_BYTES_MAX: usize = 200;
/// Longest postcode, in bytes.
pub const POSTCODE_BYTES_MAX: usize = 16;
/// Longest `source` tag, in bytes.
pub const SOURCE_BYTES_MAX: usize = 64;
/// Longest region code, in bytes.
pub const REGION_BYTES_MAX: usize = 16;

/// A signature as submitted by an upstream tier, before validation.
///
/// `received_at` is stamped by the engine, not taken from the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewSignature {
    /// Petition id: 1–64 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
    pub petition: String,
    /// The signer's email address; its canonical form is the signer identity.
    pub email: String,
    /// Optional display name (at most [`NAME_BYTES_MAX`] bytes, no control characters).
    pub name: Option<String>,
    /// Optional postcode (at most [`POSTCODE_BYTES_MAX`] bytes of `[A-Za-z0-9 -]`).
    pub postcode: Option<String>,
    /// Optional ISO 3166-1 alpha-2 country code; stored upper-case.
    pub country: Option<String>,
    /// Optional region within the country (a constituency code, `US-CA`): 1–16 characters of
    /// `[A-Za-z0-9-]`, stored upper-case; requires `country`.
    pub region: Option<String>,
    /// Optional IPv4 or IPv6 address of the signer, as text.
    pub ip: Option<String>,
    /// Optional tag naming the upstream tier or API key that sent the signature.
    pub source: Option<String>,
}

impl NewSignature {
    /// A signature with only the required fields set.
    pub fn new(petition: impl Into<String>, email: impl Into<String>) -> NewSignature {
        NewSignature {
            petition: petition.into(),
            email: email.into(),
            ..NewSignature::default()
        }
    }
}

/// Why a signature was rejected: the field and a human reason. Stable enough to show to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidField {
    /// The field that failed validation (`petition`, `email`, `name`, ...).
    pub field: &'static str,
    /// Why it failed, as a lower-case phrase.
    pub reason: &'static str,
}

const fn invalid(field: &'static str, reason: &'static str) -> InvalidField {
    InvalidField { field, reason }
}

/// Opt-in provider rules applied when deriving the signer identity from an email.
///
/// Both are off by default: `a+x@example.org` and `a@example.org` are then different signers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignerPolicy {
    /// Drop a `+tag` suffix from the local part (`jo+petitions@x.org` → `jo@x.org`).
    pub strip_plus_tags: bool,
    /// Drop dots from the local part of `gmail.com` and `googlemail.com` addresses, and treat
    /// `googlemail.com` as `gmail.com`.
    pub gmail_dots: bool,
}

impl SignerPolicy {
    pub(crate) fn to_byte(self) -> u8 {
        u8::from(self.strip_plus_tags) | (u8::from(self.gmail_dots) << 1)
    }

    pub(crate) fn from_byte(byte: u8) -> SignerPolicy {
        SignerPolicy {
            strip_plus_tags: byte & 1 != 0,
            gmail_dots: byte & 2 != 0,
        }
    }
}

/// A signature borrowed from the caller's buffers (for example a request body that was parsed in
/// place): [`Engine::submit_batch_ref`](crate::Engine::submit_batch_ref) takes these without
/// copying a field unless the signature has to be stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignatureRef<'a> {
    /// Petition id, as in [`NewSignature::petition`].
    pub petition: &'a str,
    /// The signer's email address, as in [`NewSignature::email`].
    pub email: &'a str,
    /// Optional display name.
    pub name: Option<&'a str>,
    /// Optional postcode.
    pub postcode: Option<&'a str>,
    /// Optional ISO 3166-1 alpha-2 country code.
    pub country: Option<&'a str>,
    /// Optional region within the country, as in [`NewSignature::region`].
    pub region: Option<&'a str>,
    /// Optional IPv4 or IPv6 address, as text.
    pub ip: Option<&'a str>,
    /// Optional upstream tag.
    pub source: Option<&'a str>,
}

impl NewSignature {
    /// A borrowed view of this signature.
    pub fn as_signature_ref(&self) -> SignatureRef<'_> {
        SignatureRef {
            petition: &self.petition,
            email: &self.email,
            name: self.name.as_deref(),
            postcode: self.postcode.as_deref(),
            country: self.country.as_deref(),
            region: self.region.as_deref(),
            ip: self.ip.as_deref(),
            source: self.source.as_deref(),
        }
    }
}

/// Something the engine can read a signature from: [`NewSignature`] (owned) or [`SignatureRef`]
/// (borrowed).
pub trait AsSignatureRef {
    /// The borrowed view of the signature.
    fn signature_ref(&self) -> SignatureRef<'_>;
}

impl AsSignatureRef for NewSignature {
    #[inline]
    fn signature_ref(&self) -> SignatureRef<'_> {
        self.as_signature_ref()
    }
}

impl AsSignatureRef for SignatureRef<'_> {
    #[inline]
    fn signature_ref(&self) -> SignatureRef<'_> {
        *self
    }
}

/// One operation of a mixed batch ([`Engine::submit_ops_ref_async`]): a signature, or the
/// validation of a pending one by its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// Sign.
    Sign(SignatureRef<'a>),
    /// Validate the pending signature this token names.
    Validate(&'a str),
}

/// A signature that passed validation, still borrowing the caller's text: fields trimmed, empty
/// optional fields mapped to `None`. Admission needs nothing more in memory mode; the persistent
/// path encodes it with [`ValidRef::encode`] (in `record.rs`, beside the layout) for the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ValidRef<'a> {
    pub email: &'a str,
    pub name: Option<&'a str>,
    pub postcode: Option<&'a str>,
    pub country: Option<&'a str>,
    pub region: Option<&'a str>,
    pub ip: Option<&'a str>,
    /// `ip` as parsed.
    pub ip_addr: Option<IpAddr>,
    pub source: Option<&'a str>,
}

/// Whether `text` has only the characters a region may: `[A-Za-z0-9-]` (its length is the
/// caller's to check).
pub(crate) fn is_region_text(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Checks a petition id: 1–64 characters of `[A-Za-z0-9._-]`, and not `.` or `..` (which
/// clients and proxies that normalise URL paths would resolve away).
pub fn validate_petition_id(id: &str) -> Result<(), InvalidField> {
    if id.is_empty() {
        return Err(invalid("petition", "must not be empty"));
    }
    if id.len() > PETITION_ID_BYTES_MAX {
        return Err(invalid("petition", "longer than 64 characters"));
    }
    let ok = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if !ok {
        return Err(invalid(
            "petition",
            "may only contain A-Z, a-z, 0-9, '.', '_' and '-'",
        ));
    }
    if id == "." || id == ".." {
        return Err(invalid("petition", "must not be '.' or '..'"));
    }
    Ok(())
}

/// Validates every field and derives the signer identity without copying: the result borrows
/// the caller's text.
///
/// `signer` is called once with the canonical signer (the identity is derived once per signature
/// on the hot path); its result is returned beside the signature.
pub(crate) fn validate<'a, T>(
    signature: &SignatureRef<'a>,
    policy: SignerPolicy,
    signer: impl FnOnce(&str) -> T,
) -> Result<(ValidRef<'a>, T), InvalidField> {
    validate_petition_id(signature.petition)?;
    let email = trim(signature.email);
    let derived = signer(&canonical_signer(email, policy)?);
    let name = optional(signature.name, "name", NAME_BYTES_MAX, |s| {
        if s.chars().any(char::is_control) {
            Err("must not contain control characters")
        } else {
            Ok(())
        }
    })?;
    let postcode = optional(signature.postcode, "postcode", POSTCODE_BYTES_MAX, |s| {
        if s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b'-')
        {
            Ok(())
        } else {
            Err("may only contain letters, digits, spaces and '-'")
        }
    })?;
    let country = optional(signature.country, "country", 2, |s| {
        if crate::country::is_assigned(s) {
            Ok(())
        } else {
            Err(crate::country::refusal(s))
        }
    })?;
    let region = optional(signature.region, "region", REGION_BYTES_MAX, |s| {
        if is_region_text(s) {
            Ok(())
        } else {
            Err("may only contain letters, digits and '-'")
        }
    })?;
    if region.is_some() && country.is_none() {
        return Err(invalid("region", "a region needs a country"));
    }
    let ip_addr = std::cell::Cell::new(None);
    let ip = optional(signature.ip, "ip", 45, |s| {
        let parsed = s
            .parse::<IpAddr>()
            .map_err(|_| "must be an IPv4 or IPv6 address")?;
        ip_addr.set(Some(parsed));
        Ok(())
    })?;
    let source = optional(signature.source, "source", SOURCE_BYTES_MAX, |s| {
        if s.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(())
        } else {
            Err("must be printable ASCII without spaces")
        }
    })?;
    let valid = ValidRef {
        ip_addr: ip_addr.get(),
        email,
        name,
        postcode,
        country,
        region,
        ip,
        source,
    };
    Ok((valid, derived))
}

/// Trims an optional field, maps empty to `None`, and checks its length and content.
fn optional<'a>(
    value: Option<&'a str>,
    field: &'static str,
    bytes_max: usize,
    check: impl Fn(&str) -> Result<(), &'static str>,
) -> Result<Option<&'a str>, InvalidField> {
    let Some(value) = value else { return Ok(None) };
    let value = trim(value);
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > bytes_max {
        return Err(invalid(field, "too long"));
    }
    check(value).map_err(|reason| invalid(field, reason))?;
    Ok(Some(value))
}

const fn local_special(c: char) -> bool {
    matches!(
        c,
        '@' | '(' | ')' | '<' | '>' | '[' | ']' | '\\' | ',' | ';' | ':' | '"'
    )
}

/// Whether an email's local part has only allowed characters: printable, no spaces, none of the
/// RFC 5322 specials. ASCII, the common case, is checked a byte at a time.
fn local_part_ok(local: &str) -> bool {
    if local.is_ascii() {
        local
            .bytes()
            .all(|b| b.is_ascii_graphic() && !local_special(char::from(b)))
    } else {
        local
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && !local_special(c))
    }
}

/// Whether an email's domain is an ASCII host name: two or more dot-separated labels of 1-63
/// ASCII alphanumerics or '-', not starting or ending with '-'. (A non-ASCII domain is checked
/// by UTS 46 in [`idn_domain`], and its A-label form here.)
fn domain_ok(domain: &str) -> bool {
    domain.contains('.') && labels_ok(domain)
}

/// Whether every dot-separated label of `name` is 1-63 ASCII alphanumerics or '-', not starting
/// or ending with '-' (a single label too: the block lists take `*.ru`).
pub(crate) fn labels_ok(name: &str) -> bool {
    name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

const ERROR_LENGTH: InvalidField = invalid("email", "longer than 254 bytes");
const ERROR_NO_AT: InvalidField = invalid("email", "must contain '@'");
const ERROR_LOCAL_LENGTH: InvalidField = invalid("email", "local part must be 1-64 bytes");
const ERROR_LOCAL_CHARACTER: InvalidField =
    invalid("email", "local part contains a character not allowed here");
const ERROR_DOMAIN: InvalidField = invalid("email", "domain is not a valid host name");
const ERROR_INVISIBLE: InvalidField =
    invalid("email", "contains an invisible or formatting character");

/// Byte classes for [`ascii_layout`]: allowed in a local part (printable, no space, none of
/// the RFC 5322 specials), allowed in a domain label (alphanumeric or '-'), upper-case, '.',
/// '-', and allowed anywhere in a domain (a label byte or '.').
const LOCAL_OK: u8 = 1;
const LABEL_OK: u8 = 2;
const UPPER: u8 = 4;
const DOT: u8 = 8;
/// `DOT << 1`: [`ascii_layout`] relies on it.
const HYPHEN: u8 = 16;
const DOMAIN_OK: u8 = 32;
const ASCII_CLASSES: [u8; 256] = {
    let mut classes = [0u8; 256];
    let mut b = 0;
    while b < 128 {
        let byte = b as u8;
        let mut class = 0;
        if byte.is_ascii_graphic() && !local_special(byte as char) {
            class |= LOCAL_OK;
        }
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            class |= LABEL_OK | DOMAIN_OK;
        }
        if byte.is_ascii_uppercase() {
            class |= UPPER;
        }
        if byte == b'.' {
            class |= DOT | DOMAIN_OK;
        }
        if byte == b'-' {
            class |= HYPHEN;
        }
        classes[b] = class;
        b += 1;
    }
    classes
};
const _: () = assert!(HYPHEN == DOT << 1);

/// Checks an email of any text: where its last '@' is and whether it has upper-case letters.
/// A domain that is not ASCII is left to [`idn_domain`].
fn general_layout(email: &str) -> Result<(usize, bool), InvalidField> {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Err(ERROR_NO_AT);
    };
    if local.is_empty() || local.len() > EMAIL_LOCAL_BYTES_MAX {
        return Err(ERROR_LOCAL_LENGTH);
    }
    if !local_part_ok(local) {
        return Err(ERROR_LOCAL_CHARACTER);
    }
    if domain.is_ascii() && !domain_ok(domain) {
        return Err(ERROR_DOMAIN);
    }
    Ok((local.len(), email.chars().any(char::is_uppercase)))
}

/// [`general_layout`] for ASCII, the common case, without branching per byte: the same checks
/// in the same order, so the same answer and the same error.
fn ascii_layout(email: &[u8]) -> Result<(usize, bool), InvalidField> {
    let Some(at) = memchr::memrchr(b'@', email) else {
        return Err(ERROR_NO_AT);
    };
    let (local, domain) = (&email[..at], &email[at + 1..]);
    if local.is_empty() || local.len() > EMAIL_LOCAL_BYTES_MAX {
        return Err(ERROR_LOCAL_LENGTH);
    }
    // The local part: AND the "allowed" bits, OR the "upper-case" bits.
    let (mut all, mut any) = (LOCAL_OK, 0u8);
    for &b in local {
        let class = ASCII_CLASSES[usize::from(b)];
        all &= class;
        any |= class;
    }
    if all & LOCAL_OK == 0 {
        return Err(ERROR_LOCAL_CHARACTER);
    }
    // The domain: every byte a label byte or '.'; no '.' after '.' or '-', no '-' after '.',
    // neither first nor last (the start counts as a '.'); at least one '.'.
    let (mut all, mut seen, mut bad, mut previous) = (DOMAIN_OK, 0u8, 0u8, DOT);
    for &b in domain {
        let class = ASCII_CLASSES[usize::from(b)];
        all &= class;
        seen |= class;
        // What may not come just before this byte: '.' or '-' before a '.', '.' before a '-'.
        let forbidden = (class & DOT) | ((class & DOT) << 1) | ((class & HYPHEN) >> 1);
        bad |= forbidden & previous;
        previous = class & (DOT | HYPHEN);
    }
    if all & DOMAIN_OK == 0 || bad != 0 || previous != 0 || seen & DOT == 0 {
        return Err(ERROR_DOMAIN);
    }
    // Labels of at most 63 bytes: only a longer domain can hold a longer one.
    if domain.len() > 63 && domain.split(|&b| b == b'.').any(|label| label.len() > 63) {
        return Err(ERROR_DOMAIN);
    }
    Ok((at, (any | seen) & UPPER != 0))
}

/// `text.trim()`, without decoding characters when both ends are printable ASCII (as they
/// almost always are).
#[inline]
fn trim(text: &str) -> &str {
    match (text.as_bytes().first(), text.as_bytes().last()) {
        (Some(first), Some(last)) if first.is_ascii_graphic() && last.is_ascii_graphic() => text,
        _ => text.trim(),
    }
}

/// Derives the signer identity from an email: trimmed, lower-cased, and with the opt-in provider
/// rules of `policy` applied. Rejects what is not an email address.
///
/// An email that is not all ASCII must also hold no invisible or formatting character (see
/// [`invisible`]); its local part is then lower-cased and put in NFC, and a non-ASCII domain is
/// replaced by its A-label form (UTS 46 ToASCII: `bücher.de` → `xn--bcher-kva.de`). Nothing
/// else is merged: a domain or local part in another script that merely looks the same (a
/// Cyrillic `а` in `exаmple.org`) is another mailbox, hence another signer. The result is its
/// own canonical form.
pub fn canonical_signer(email: &str, policy: SignerPolicy) -> Result<Cow<'_, str>, InvalidField> {
    let email = trim(email);
    if email.is_empty() {
        return Err(invalid("email", "is required"));
    }
    if email.len() > EMAIL_BYTES_MAX {
        return Err(ERROR_LENGTH);
    }
    if !email.is_ascii() {
        return unicode_signer(email, policy);
    }
    let (at, needs_lowercase) = ascii_layout(email.as_bytes())?;
    let (local, domain) = (&email[..at], &email[at + 1..]);
    if needs_lowercase {
        if !policy.strip_plus_tags && !policy.gmail_dots {
            // Nothing else to change: one allocation for the whole address.
            return Ok(Cow::Owned(email.to_ascii_lowercase()));
        }
        let local = Cow::Owned(local.to_ascii_lowercase());
        let domain = Cow::Owned(domain.to_ascii_lowercase());
        return Ok(with_policy(email, local, domain, true, policy));
    }
    Ok(with_policy(
        email,
        Cow::Borrowed(local),
        Cow::Borrowed(domain),
        false,
        policy,
    ))
}

/// [`canonical_signer`] for an email that is not all ASCII. Kept out of line: the ASCII path
/// never runs any of it.
#[cold]
fn unicode_signer(email: &str, policy: SignerPolicy) -> Result<Cow<'_, str>, InvalidField> {
    // First, so that the error names the character class rather than a symptom of it.
    if email.chars().any(invisible) {
        return Err(ERROR_INVISIBLE);
    }
    // Lower-casing is decided character by character below (a title-case letter such as U+01C5
    // is not upper-case, yet lower-cases), so the layout's upper-case flag is not needed.
    let (at, _) = general_layout(email)?;
    let (local, domain) = (&email[..at], &email[at + 1..]);
    let local = local_identity(local);
    // Normalising can change the local part's length and, through singleton decompositions
    // such as U+037E GREEK QUESTION MARK → ';', its characters: check what is kept.
    if local.len() > EMAIL_LOCAL_BYTES_MAX {
        return Err(ERROR_LOCAL_LENGTH);
    }
    if !local_part_ok(&local) {
        return Err(ERROR_LOCAL_CHARACTER);
    }
    let domain = if domain.is_ascii() {
        if domain.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(domain.to_ascii_lowercase())
        } else {
            Cow::Borrowed(domain)
        }
    } else {
        Cow::Owned(idn_domain(domain)?)
    };
    if local.len() + 1 + domain.len() > EMAIL_BYTES_MAX {
        return Err(ERROR_LENGTH);
    }
    let changed = matches!(local, Cow::Owned(_)) || matches!(domain, Cow::Owned(_));
    let signer = with_policy(email, local, domain, changed, policy);
    // Dropping Gmail dots can bring a combining mark next to the letter it composes with
    // (`a.\u{301}b` → `a\u{301}b`): put the result in NFC again. Composing only shortens it.
    let nfc = ComposingNormalizerBorrowed::new_nfc();
    if nfc.is_normalized(&signer) {
        Ok(signer)
    } else {
        Ok(Cow::Owned(nfc.normalize(&signer).into_owned()))
    }
}

/// Whether a character is invisible or formats text rather than being part of it: General
/// Category Cf (U+00AD soft hyphen, U+200B..U+200F zero-width characters and marks, U+202A..U+202E
/// bidirectional controls, U+2060 word joiner, U+FEFF, ...) or Default_Ignorable_Code_Point
/// (which adds U+034F, the variation selectors, the Hangul fillers U+115F, U+1160, U+3164 and
/// U+FFA0, ...). Such a character renders as nothing, so `z\u{200b}w@example.org` looks like
/// `zw@example.org`, and mail systems may drop it and deliver both to one mailbox.
fn invisible(c: char) -> bool {
    CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
        || CodePointMapData::<GeneralCategory>::new().get(c) == GeneralCategory::Format
}

/// A local part lower-cased and then put in NFC (Unicode normalisation form C), so that a
/// decomposed `rene\u{301}` and a composed `ren\u{e9}` are one signer. Borrowed when unchanged.
fn local_identity(local: &str) -> Cow<'_, str> {
    let lower = local.to_lowercase();
    let normalised = match ComposingNormalizerBorrowed::new_nfc().normalize(&lower) {
        Cow::Owned(normalised) => Some(normalised),
        Cow::Borrowed(_) => None,
    };
    let normalised = normalised.unwrap_or(lower);
    if normalised == local {
        Cow::Borrowed(local)
    } else {
        Cow::Owned(normalised)
    }
}

/// A non-ASCII domain in its A-label form, by UTS 46 ToASCII (case folding, NFC and the other
/// UTS 46 mappings, then punycode) with the STD3 rules (letters, digits and '-' only), no '-'
/// first or last in a label, and DNS lengths. What UTS 46 refuses is not a host name.
fn idn_domain(domain: &str) -> Result<String, InvalidField> {
    let ascii = Uts46::new()
        .to_ascii(
            domain.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::CheckFirstLast,
            DnsLength::Verify,
        )
        .map_err(|_| ERROR_DOMAIN)?;
    // UTS 46 accepts a single label ("bücher"); an email's domain needs two.
    if !domain_ok(&ascii) {
        return Err(ERROR_DOMAIN);
    }
    Ok(ascii.into_owned())
}

/// Applies the opt-in provider rules of `policy` to a lower-cased local part and domain, and
/// joins them; `changed` says whether they already differ from `email`.
#[inline]
fn with_policy<'a>(
    email: &'a str,
    mut local: Cow<'a, str>,
    mut domain: Cow<'a, str>,
    mut changed: bool,
    policy: SignerPolicy,
) -> Cow<'a, str> {
    if policy.strip_plus_tags {
        if let Some(at) = local.find('+') {
            if at > 0 {
                local = Cow::Owned(local[..at].to_owned());
                changed = true;
            }
        }
    }
    if policy.gmail_dots && (domain == "gmail.com" || domain == "googlemail.com") {
        let undotted: String = local.chars().filter(|&c| c != '.').collect();
        if !undotted.is_empty() {
            local = Cow::Owned(undotted);
            domain = Cow::Borrowed("gmail.com");
            changed = true;
        }
    }
    if !changed {
        return Cow::Borrowed(email);
    }
    Cow::Owned(format!("{local}@{domain}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_signer(email: &str, policy: SignerPolicy, expected: Result<&str, &str>) {
        let actual = canonical_signer(email, policy);
        match (actual, expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "email {email:?}"),
            (Err(got), Err(want)) => assert_eq!(got.reason, want, "email {email:?}"),
            (got, want) => panic!("email {email:?}: got {got:?}, want {want:?}"),
        }
    }

    const OFF: SignerPolicy = SignerPolicy {
        strip_plus_tags: false,
        gmail_dots: false,
    };
    const ALL: SignerPolicy = SignerPolicy {
        strip_plus_tags: true,
        gmail_dots: true,
    };

    #[test]
    fn canonical_signers() {
        check_signer("a@example.org", OFF, Ok("a@example.org"));
        check_signer("  Jo.Smith@Example.ORG \n", OFF, Ok("jo.smith@example.org"));
        check_signer(
            "jo+petitions@example.org",
            OFF,
            Ok("jo+petitions@example.org"),
        );
        check_signer("jo+petitions@example.org", ALL, Ok("jo@example.org"));
        check_signer("+only@example.org", ALL, Ok("+only@example.org"));
        check_signer("J.O.Smith+x@GoogleMail.com", ALL, Ok("josmith@gmail.com"));
        check_signer("j.o.smith@gmail.com", OFF, Ok("j.o.smith@gmail.com"));
        check_signer("j.o@other.com", ALL, Ok("j.o@other.com"));
        check_signer("ÉLODIE@exemple.fr", OFF, Ok("élodie@exemple.fr"));
        check_signer("", OFF, Err("is required"));
        check_signer("   ", OFF, Err("is required"));
        check_signer("no-at-sign", OFF, Err("must contain '@'"));
        check_signer("@example.org", OFF, Err("local part must be 1-64 bytes"));
        check_signer(
            "a b@example.org",
            OFF,
            Err("local part contains a character not allowed here"),
        );
        check_signer("a@localhost", OFF, Err("domain is not a valid host name"));
        check_signer(
            "a@.example.org",
            OFF,
            Err("domain is not a valid host name"),
        );
        check_signer(
            "a@example..org",
            OFF,
            Err("domain is not a valid host name"),
        );
        check_signer("a@-x.org", OFF, Err("domain is not a valid host name"));
        check_signer(
            "a@ex_ample.org",
            OFF,
            Err("domain is not a valid host name"),
        );
        check_signer(
            &format!("{}@x.org", "a".repeat(65)),
            OFF,
            Err("local part must be 1-64 bytes"),
        );
        check_signer(
            &format!("a@{}.org", "b".repeat(260)),
            OFF,
            Err("longer than 254 bytes"),
        );
    }

    /// Every string over a small alphabet of the characters the email checks care about, up to
    /// five bytes, plus some longer shapes.
    fn ascii_cases() -> Vec<String> {
        let alphabet = [b'a', b'Z', b'0', b'-', b'.', b'@', b' ', b'+', b'(', b'_'];
        let mut cases: Vec<String> = vec![
            "a@example.org".into(),
            "A.B@Sub.Example-1.ORG".into(),
            "x@a-.org".into(),
            "x@a.-org".into(),
            "x@a.org-".into(),
            "x@a..org".into(),
            "x@.a.org".into(),
            "x@a.org.".into(),
            format!("x@{}.org", "l".repeat(63)),
            format!("x@{}.org", "l".repeat(64)),
            format!("x@org.{}", "l".repeat(63)),
            format!("x@org.{}", "l".repeat(64)),
            format!("x@a.{}l.org", "l-".repeat(31)),
            format!("x@a.{}l.org", "l-".repeat(32)),
            "x@a-b.c--d.org".into(),
            "x@a.b-.org".into(),
            "x@a.-b.org".into(),
            "x@-a.org".into(),
            "x@A.ORG".into(),
            "x@ab".into(),
            "x@".into(),
            format!("{}@x.org", "a".repeat(64)),
            format!("{}@x.org", "a".repeat(65)),
        ];
        let mut stack = vec![Vec::new()];
        while let Some(prefix) = stack.pop() {
            cases.push(String::from_utf8(prefix.clone()).expect("ascii"));
            if prefix.len() < 5 {
                for &b in &alphabet {
                    let mut next = prefix.clone();
                    next.push(b);
                    stack.push(next);
                }
            }
        }
        cases
    }

    #[test]
    fn ascii_fast_path_agrees_with_the_general_checks() {
        // The table-driven ASCII check must give the same layout or the same error as the
        // general one.
        for email in &ascii_cases() {
            assert_eq!(
                ascii_layout(email.as_bytes()),
                general_layout(email),
                "email {email:?}"
            );
        }
    }

    #[test]
    fn unicode_rules_agree_with_the_ascii_path_on_ascii() {
        // The Unicode path, run on ASCII (which `canonical_signer` never lets it see), gives
        // the ASCII path's answers: its rules only add to them for other text.
        for email in &ascii_cases() {
            if email.is_empty() || email.trim() != email {
                continue;
            }
            for policy in [OFF, ALL] {
                assert_eq!(
                    unicode_signer(email, policy),
                    canonical_signer(email, policy),
                    "email {email:?}"
                );
            }
        }
    }

    const INVISIBLE: &str = "contains an invisible or formatting character";

    #[test]
    fn unicode_signers() {
        // One mailbox, one signer: NFC in the local part, A-labels for the domain.
        let rene = Ok("ren\u{e9}@example.org");
        check_signer("ren\u{e9}@example.org", OFF, rene);
        check_signer("rene\u{301}@example.org", OFF, rene);
        check_signer("RENE\u{301}@Example.org", OFF, rene);
        check_signer("REN\u{c9}@example.org", OFF, rene);
        let bucher = Ok("pu@xn--bcher-kva.de");
        check_signer("pu@b\u{fc}cher.de", OFF, bucher);
        check_signer("pu@B\u{dc}CHER.de", OFF, bucher);
        check_signer("pu@bu\u{308}cher.de", OFF, bucher);
        check_signer("pu@b\u{fc}cher\u{3002}de", OFF, bucher);
        check_signer("pu@xn--bcher-kva.de", OFF, bucher);
        check_signer("PU@XN--BCHER-KVA.DE", OFF, bucher);
        check_signer(
            "r\u{e9}ne@b\u{fc}cher.de",
            OFF,
            Ok("r\u{e9}ne@xn--bcher-kva.de"),
        );
        check_signer("zw@\u{ff45}xample.org", OFF, Ok("zw@example.org"));
        // Lower-casing is per character: title case and the Kelvin sign too.
        check_signer("\u{1c5}@example.org", OFF, Ok("\u{1c6}@example.org"));
        check_signer("\u{212a}@example.org", OFF, Ok("k@example.org"));
        // Policies apply after normalising.
        check_signer("J.O\u{301}+x@GoogleMail.com", ALL, Ok("j\u{f3}@gmail.com"));
        check_signer(
            "r\u{e9}.ne+x@gm\u{e0}il.com",
            ALL,
            Ok("r\u{e9}.ne@xn--gmil-1na.com"),
        );
        // Look-alikes in another script are other mailboxes, kept as they are.
        check_signer("a@ex\u{430}mple.org", OFF, Ok("a@xn--exmple-4nf.org"));
        check_signer("p\u{430}ul@example.org", OFF, Ok("p\u{430}ul@example.org"));
        // Invisible and formatting characters, in the local part or the domain.
        for c in [
            '\u{ad}',
            '\u{34f}',
            '\u{61c}',
            '\u{115f}',
            '\u{1160}',
            '\u{180b}',
            '\u{180e}',
            '\u{200b}',
            '\u{200c}',
            '\u{200d}',
            '\u{200e}',
            '\u{202a}',
            '\u{202e}',
            '\u{2060}',
            '\u{2066}',
            '\u{3164}',
            '\u{fe00}',
            '\u{fe0f}',
            '\u{feff}',
            '\u{ffa0}',
            '\u{1d173}',
            '\u{e0001}',
            '\u{e0100}',
        ] {
            check_signer(&format!("z{c}w@example.org"), OFF, Err(INVISIBLE));
            check_signer(&format!("{c}zw@example.org"), OFF, Err(INVISIBLE));
            check_signer(&format!("zw@exa{c}mple.org"), OFF, Err(INVISIBLE));
            check_signer(&format!("zw@b\u{fc}{c}cher.de"), OFF, Err(INVISIBLE));
        }
        // What normalising makes of a local part is checked again.
        check_signer(
            "a\u{37e}b@example.org",
            OFF,
            Err("local part contains a character not allowed here"),
        );
        check_signer(
            &format!("{}@example.org", "\u{958}".repeat(21)),
            OFF,
            Err("local part must be 1-64 bytes"),
        );
        // 239 bytes as sent, 263 with its domain's A-labels.
        let label = format!("{}\u{fc}", "a".repeat(40));
        let long = format!("{}@{}.de", "a".repeat(64), vec![label; 4].join("."));
        assert!(long.len() <= EMAIL_BYTES_MAX);
        check_signer(&long, OFF, Err("longer than 254 bytes"));
        // Domains UTS 46 refuses, or that are not host names.
        for domain in [
            "b\u{fc}cher",
            "-b\u{fc}cher.de",
            "b\u{fc}cher-.de",
            "b\u{fc}_cher.de",
            "b\u{fc}cher..de",
            "b\u{fc}cher.de.",
            "xn--zz\u{fc}.de",
            "xn--a.b\u{fc}cher.de",
            "b\u{fc}cher.d\u{2f}e",
        ] {
            check_signer(
                &format!("a@{domain}"),
                OFF,
                Err("domain is not a valid host name"),
            );
        }
    }

    #[test]
    fn policies_keep_unicode_signers_in_nfc() {
        let gmail = SignerPolicy {
            strip_plus_tags: false,
            gmail_dots: true,
        };
        let dotted = canonical_signer("a.\u{301}b@gmail.com", gmail).expect("valid");
        assert_eq!(dotted, "\u{e1}b@gmail.com", "the dot removed, then NFC");
        assert_eq!(
            canonical_signer(&dotted, gmail).expect("valid"),
            dotted,
            "its own canonical form"
        );
        assert_eq!(
            canonical_signer("\u{e1}b@gmail.com", gmail).expect("valid"),
            dotted,
            "one mailbox under the dot rule, one signer"
        );
    }

    #[test]
    fn one_mailbox_one_signer() {
        // Each variant is the plain address's signer or refused; never a signer of its own.
        let variants = [
            ("zw@example.org", "z\u{200b}w@example.org"),
            ("zw@example.org", "z\u{200d}w@example.org"),
            ("zw@example.org", "\u{feff}zw@example.org"),
            ("zw@example.org", "z\u{ad}w@example.org"),
            ("zw@example.org", "z\u{202e}w@example.org"),
            ("zw@example.org", "z\u{34f}w@example.org"),
            ("zw@example.org", "zw\u{fe0f}@example.org"),
            ("zw@example.org", "zw\u{3164}@example.org"),
            ("zw@example.org", "zw@exa\u{200b}mple.org"),
            ("ren\u{e9}@example.org", "rene\u{301}@example.org"),
            ("pu@bücher.de", "pu@xn--bcher-kva.de"),
            ("pu@bücher.de", "pu@BÜCHER.de"),
            ("pu@bücher.de", "pu@bu\u{308}cher.de"),
        ];
        for policy in [OFF, ALL] {
            for (plain, variant) in variants {
                let plain_signer = canonical_signer(plain, policy).expect("plain is valid");
                match canonical_signer(variant, policy) {
                    Ok(signer) => assert_eq!(signer, plain_signer, "{variant:?}"),
                    Err(e) => assert_eq!(e.reason, INVISIBLE, "{variant:?}"),
                }
            }
        }
        assert_eq!(
            canonical_signer("z\u{200b}w@example.org", OFF),
            Err(ERROR_INVISIBLE)
        );
        assert_eq!(
            canonical_signer("pu@bücher.de", OFF),
            canonical_signer("pu@xn--bcher-kva.de", OFF)
        );
    }

    #[test]
    fn canonical_signers_are_their_own_canonical_form() {
        let emails = [
            "a@example.org",
            "  Jo.Smith+x@Example.ORG ",
            "J.O.Smith+x@GoogleMail.com",
            "\u{c9}LODIE@exemple.fr",
            "RENE\u{301}@Example.org",
            "pu@B\u{dc}CHER.de",
            "pu@bu\u{308}cher\u{3002}de",
            "\u{130}stanbul@\u{130}stanbul.tr",
            "\u{39f}\u{394}\u{39f}\u{3a3}@\u{3a3}\u{3a3}.gr",
            "\u{1c5}\u{1c4}@example.org",
            "\u{212a}\u{212b}\u{2126}@example.org",
            "\u{1f88}\u{345}@example.org",
            "a\u{301}\u{327}\u{300}@example.org",
            "\u{fb01}@\u{fb01}.org",
            "\u{ff21}@\u{ff21}.org",
            "\u{d55c}\u{1100}\u{1161}@\u{d55c}\u{ad6d}.kr",
            "\u{5d0}\u{5b8}@example.org",
            "p\u{430}ul@ex\u{430}mple.org",
            "x@xn--bcher-kva.XN--P1AI",
            "st\u{df}@stra\u{df}e.de",
            "\u{3c2}\u{3a3}@example.org",
            "r\u{e9}.ne+x@GM\u{c0}IL.com",
        ];
        for policy in [OFF, ALL] {
            for email in emails {
                let once =
                    canonical_signer(email, policy).unwrap_or_else(|e| panic!("{email:?}: {e}"));
                let twice = canonical_signer(&once, policy)
                    .unwrap_or_else(|e| panic!("{email:?} → {once:?}: {e}"));
                assert_eq!(twice, once, "{email:?}");
            }
        }
    }

    #[test]
    fn trim_is_str_trim() {
        for text in [
            "",
            " ",
            "a",
            " a",
            "a ",
            "\ta\n",
            "a b",
            "\u{a0}a",
            "a\u{2003}",
            "é",
            " é ",
        ] {
            assert_eq!(trim(text), text.trim(), "{text:?}");
        }
    }

    fn check_petition(id: &str, ok: bool) {
        assert_eq!(validate_petition_id(id).is_ok(), ok, "petition id {id:?}");
    }

    #[test]
    fn petition_ids() {
        check_petition("revoke-article-50", true);
        check_petition("A.b_c-9", true);
        check_petition(&"x".repeat(64), true);
        check_petition(&"x".repeat(65), false);
        check_petition("", false);
        check_petition("has space", false);
        check_petition("slash/", false);
        check_petition("émoji", false);
        check_petition(".", false);
        check_petition("..", false);
        check_petition("...", true);
        check_petition(".a", true);
        check_petition("a..b", true);
        assert_eq!(
            validate_petition_id(".."),
            Err(invalid("petition", "must not be '.' or '..'"))
        );
    }

    fn check_field(mutate: impl FnOnce(&mut NewSignature), expected: Result<(), &str>) {
        let mut signature = NewSignature::new("p1", "a@example.org");
        mutate(&mut signature);
        let got = validate(&signature.as_signature_ref(), OFF, |_| ())
            .map(|_| ())
            .map_err(|e| e.field);
        assert_eq!(got, expected);
    }

    #[test]
    fn optional_fields() {
        check_field(|_| {}, Ok(()));
        check_field(|s| s.name = Some("Jo Smith".into()), Ok(()));
        check_field(|s| s.name = Some("   ".into()), Ok(()));
        check_field(|s| s.name = Some("a\u{0}b".into()), Err("name"));
        check_field(|s| s.name = Some("n".repeat(201)), Err("name"));
        check_field(|s| s.postcode = Some("SW1A 1AA".into()), Ok(()));
        check_field(|s| s.postcode = Some("SW1A;1AA".into()), Err("postcode"));
        check_field(|s| s.country = Some("gb".into()), Ok(()));
        check_field(|s| s.country = Some("GBR".into()), Err("country"));
        check_field(|s| s.country = Some("1A".into()), Err("country"));
        check_field(|s| s.country = Some("UK".into()), Err("country"));
        check_field(|s| s.country = Some("ZZ".into()), Err("country"));
        let in_gb = |region: &str| {
            let region = region.to_string();
            move |s: &mut NewSignature| {
                s.country = Some("GB".into());
                s.region = Some(region);
            }
        };
        check_field(in_gb("E14000639"), Ok(()));
        check_field(in_gb("us-ca"), Ok(()));
        check_field(in_gb(&"R".repeat(16)), Ok(()));
        check_field(in_gb(&"R".repeat(17)), Err("region"));
        check_field(in_gb("E1 4"), Err("region"));
        check_field(in_gb("E1_4"), Err("region"));
        check_field(|s| s.region = Some("E14000639".into()), Err("region"));
        check_field(|s| s.ip = Some("192.0.2.1".into()), Ok(()));
        check_field(|s| s.ip = Some("2001:db8::1".into()), Ok(()));
        check_field(|s| s.ip = Some("999.1.1.1".into()), Err("ip"));
        check_field(|s| s.source = Some("tier-a".into()), Ok(()));
        check_field(|s| s.source = Some("tier a".into()), Err("source"));
        check_field(|s| s.petition = "bad id".into(), Err("petition"));
        check_field(|s| s.email = "bad".into(), Err("email"));
    }

    #[test]
    fn policy_round_trips_through_a_byte() {
        for policy in [
            OFF,
            ALL,
            SignerPolicy {
                strip_plus_tags: true,
                gmail_dots: false,
            },
        ] {
            assert_eq!(SignerPolicy::from_byte(policy.to_byte()), policy);
        }
    }
}
