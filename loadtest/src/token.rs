//! A pending signature's validation token and its expiry, as the server hands them out.
//!
//! The server's token is an opaque string of [`Token::HEX_LEN`] lowercase hex digits; it is kept
//! decoded ([`Token::BYTES`] bytes), so that the tokens phase 1 keeps for phase 2 take half the
//! memory, and written back as hex when it is sent or logged. An answer whose token is not in
//! that form is outside the contract. The expiry (`expires_at`, RFC 3339) is kept as whole Unix
//! seconds, rounded down: `verify` only ever asks "could this token have expired by now?", for
//! which an earlier instant is the safe side.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A validation token, decoded.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token([u8; Token::BYTES]);

impl Token {
    /// Bytes of a decoded token.
    pub const BYTES: usize = 36;
    /// Hex digits of a token as the server writes it.
    pub const HEX_LEN: usize = 2 * Token::BYTES;

    /// Decodes exactly [`Token::HEX_LEN`] lowercase hex digits; `None` for anything else.
    pub fn parse(hex: &str) -> Option<Token> {
        let hex = hex.as_bytes();
        if hex.len() != Token::HEX_LEN {
            return None;
        }
        let mut bytes = [0u8; Token::BYTES];
        for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
            *byte = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
        }
        Some(Token(bytes))
    }

    /// Appends the token's [`Token::HEX_LEN`] lowercase hex digits to `out`.
    pub fn write_hex(&self, out: &mut Vec<u8>) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for byte in self.0 {
            out.push(DIGITS[usize::from(byte >> 4)]);
            out.push(DIGITS[usize::from(byte & 0xf)]);
        }
    }

    /// A 16-bit fingerprint, for telling two tokens apart cheaply (`verify` keeps it per signer).
    pub fn fingerprint(&self) -> u16 {
        // FNV-1a, folded: stable across platforms and Rust versions.
        let mut hash: u32 = 0x811c_9dc5;
        for byte in self.0 {
            hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
        }
        (hash ^ (hash >> 16)) as u16
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut hex = Vec::with_capacity(Token::HEX_LEN);
        self.write_hex(&mut hex);
        // Hex digits are ASCII.
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({self})")
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

/// Parses an RFC 3339 timestamp (`2026-12-01T10:00:00Z`, `...T10:00:00.5+01:00`; `t`/`z` in
/// either case) into Unix seconds, the fraction dropped. `None` if it is not one.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < "2026-12-01T10:00:00Z".len()
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let length = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if length == 0 {
            return None;
        }
        rest = &fraction[length..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (hours, minutes) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Formats Unix seconds as RFC 3339 in UTC, e.g. `2026-12-01T10:00:00Z` (what the ledger
/// writes; [`parse_rfc3339`] reads it back).
pub fn format_rfc3339(unix_s: i64) -> String {
    let (days, second_of_day) = (unix_s.div_euclid(86_400), unix_s.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// The current time in Unix seconds.
pub fn now_unix_s() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn digits(text: &[u8]) -> Option<i64> {
    text.iter().try_fold(0i64, |value, &c| {
        c.is_ascii_digit().then(|| value * 10 + i64::from(c - b'0'))
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of the proleptic Gregorian calendar that is `days` after 1970-01-01 (the inverse of
/// [`days_from_civil`], Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn tokens() {
        let hex = "0123456789abcdef".repeat(5)[..72].to_owned();
        let token = Token::parse(&hex).unwrap();
        assert_eq!(token.to_string(), hex);
        let mut out = b"x".to_vec();
        token.write_hex(&mut out);
        assert_eq!(&out[1..], hex.as_bytes());
        let check_refused = |text: &str| assert_eq!(Token::parse(text), None, "{text}");
        check_refused(&hex[..70]);
        check_refused(&format!("{hex}00"));
        check_refused(&hex.to_uppercase());
        check_refused(&format!("g{}", &hex[1..]));
        check_refused("");
        let other = Token::parse(&format!("1{}", &hex[1..])).unwrap();
        assert_ne!(token, other);
        assert_ne!(token.fingerprint(), other.fingerprint());
        assert_eq!(
            token.fingerprint(),
            Token::parse(&hex).unwrap().fingerprint()
        );
    }

    #[test]
    fn timestamps() {
        let check = |text: &str, expected: Option<i64>| {
            assert_eq!(parse_rfc3339(text), expected, "{text}");
        };
        check("1970-01-01T00:00:00Z", Some(0));
        check("2000-02-29T00:00:00Z", Some(951_782_400));
        check("2026-12-01T10:00:00Z", Some(1_796_119_200));
        check("2026-12-01T10:00:00.999z", Some(1_796_119_200));
        check("2026-12-01t11:30:00+01:30", Some(1_796_119_200));
        check("2026-12-01T08:00:00-02:00", Some(1_796_119_200));
        check("1969-12-31T23:59:59Z", Some(-1));
        check("2026-12-01T10:00:00", None);
        check("2026-12-01 10:00:00Z", None);
        check("2026-13-01T10:00:00Z", None);
        check("2026-02-29T10:00:00Z", None);
        check("2026-12-01T24:00:00Z", None);
        check("2026-12-01T10:00:00.Z", None);
        check("2026-12-01T10:00:00+0100", None);
        check("2026-12-01T10:00:00Zjunk", None);
        check("not a time at all!!", None);
        for unix_s in [
            0,
            1,
            951_782_400,
            1_796_119_200,
            4_102_444_800,
            -86_400,
            253_402_300_799,
        ] {
            assert_eq!(parse_rfc3339(&format_rfc3339(unix_s)), Some(unix_s));
        }
        assert_eq!(format_rfc3339(1_796_119_200), "2026-12-01T10:00:00Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
        // Every day of four centuries round-trips.
        for days in -73_000..73_000 {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(days_from_civil(year, month, day), days);
            assert!(day >= 1 && day <= days_in_month(year, month));
        }
        assert!(now_unix_s() > 1_700_000_000);
    }
}
