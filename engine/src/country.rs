//! ISO 3166-1 alpha-2: the 249 officially assigned country codes, as a bitmap of the 26 × 26
//! two-letter codes. A signature's `country` (and an invalidation's) must be one of them; the
//! user-assigned (`ZZ`, `XA`…) and reserved (`UK`, `EU`) codes are refused, so the counts by
//! country that are built on them name real countries.

/// The assigned codes, grouped by first letter (the list of ISO 3166-1 as of 2026: 249 codes).
const ASSIGNED: [&str; 26] = [
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ",
    "BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ",
    "CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ",
    "DE DJ DK DM DO DZ",
    "EC EE EG EH ER ES ET",
    "FI FJ FK FM FO FR",
    "GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY",
    "HK HM HN HR HT HU",
    "ID IE IL IM IN IO IQ IR IS IT",
    "JE JM JO JP",
    "KE KG KH KI KM KN KP KR KW KY KZ",
    "LA LB LC LI LK LR LS LT LU LV LY",
    "MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ",
    "NA NC NE NF NG NI NL NO NP NR NU NZ",
    "OM",
    "PA PE PF PG PH PK PL PM PN PR PS PT PW PY",
    "QA",
    "RE RO RS RU RW",
    "SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ",
    "TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ",
    "UA UG UM US UY UZ",
    "VA VC VE VG VI VN VU",
    "WF WS",
    "",
    "YE YT",
    "ZA ZM ZW",
];

/// For each first letter, a bit per second letter.
const BITMAP: [u32; 26] = bitmap();

const fn bitmap() -> [u32; 26] {
    let mut out = [0u32; 26];
    let mut first = 0;
    while first < 26 {
        let row = ASSIGNED[first].as_bytes();
        let mut at = 0;
        while at + 1 < row.len() {
            // Each code is two letters, then a space.
            assert!(
                row[at] == b'A' + first as u8,
                "a code under the wrong letter"
            );
            out[first] |= 1 << (row[at + 1] - b'A');
            at += 3;
        }
        first += 1;
    }
    out
}

/// Whether `code` (either case) is an assigned ISO 3166-1 alpha-2 code.
pub fn is_assigned(code: &str) -> bool {
    let &[a, b] = code.as_bytes() else {
        return false;
    };
    let (a, b) = (a.to_ascii_uppercase(), b.to_ascii_uppercase());
    if !a.is_ascii_uppercase() || !b.is_ascii_uppercase() {
        return false;
    }
    BITMAP[usize::from(a - b'A')] & (1 << (b - b'A')) != 0
}

/// The message for a code that is not assigned; `UK` gets a hint, since it is the usual mistake.
pub(crate) fn refusal(code: &str) -> &'static str {
    if code.eq_ignore_ascii_case("UK") {
        "must be an ISO 3166-1 alpha-2 code: the United Kingdom is \"GB\""
    } else {
        "must be an assigned ISO 3166-1 alpha-2 code such as \"GB\""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_assigned_codes_are_the_249_of_the_standard() {
        let all: Vec<String> = (b'A'..=b'Z')
            .flat_map(|a| (b'A'..=b'Z').map(move |b| String::from_utf8_lossy(&[a, b]).into_owned()))
            .filter(|code| is_assigned(code))
            .collect();
        assert_eq!(all.len(), 249);
        for code in ["GB", "gb", "Us", "FR", "AX", "SS", "XK"] {
            assert_eq!(is_assigned(code), code != "XK", "{code}");
        }
        for code in ["UK", "EU", "ZZ", "XA", "AA", "G", "GBR", "", "1A", "é"] {
            assert!(!is_assigned(code), "{code}");
        }
        assert!(refusal("uk").contains("GB"));
    }
}
