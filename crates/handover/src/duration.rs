//! Parsing of human-written durations such as `30s` or `500ms`.
//!
//! Why not `humantime`: the documented `DUR` form has decimals (`1.5s`, `0.1s` exactly
//! 100 ms) and plain seconds (`30`), which `humantime::parse_duration` rejects ("time unit
//! needed", no fractions), while it accepts forms this one refuses on purpose (`1h 30m`,
//! `2days`, `5M` for months). A wrapper would have to split the number from the unit and do
//! the exact decimal arithmetic itself, which is all this file does; the error messages, which
//! the command lines show, stay the ones documented below.

use std::fmt;
use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Units and their length in nanoseconds. The unit is compared as a whole
/// string, so the order does not matter (`m` cannot shadow `ms`).
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("h", 3600 * NANOS_PER_SEC),
];

/// Error returned by [`parse_duration`].
///
/// Its message names the input and the accepted forms:
///
/// ```
/// let err = handover::parse_duration("3x").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     r#"invalid duration "3x": unknown unit "x"; expected a number with an optional unit (ns, us, ms, s, m, h), e.g. 30s, 500ms or 30"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: {reason}; expected a number with an optional unit \
     (ns, us, ms, s, m, h), e.g. 30s, 500ms or 30"
)]
pub struct DurationParseError {
    input: String,
    reason: Reason,
}

/// Why parsing failed. Private so the wording can change freely.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reason {
    Empty,
    Negative,
    NoNumber,
    UnknownUnit(String),
    TooLarge,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Empty => f.write_str("empty"),
            Reason::Negative => f.write_str("negative durations are not allowed"),
            Reason::NoNumber => f.write_str("not a number"),
            Reason::UnknownUnit(u) => write!(f, "unknown unit {u:?}"),
            Reason::TooLarge => f.write_str("too large"),
        }
    }
}

/// Parses a duration such as `30s`, `500ms`, `250us`, `2m`, `1h` or `1.5s`.
///
/// A number without a unit is seconds (`30`, `0.5`). Surrounding whitespace
/// is ignored; there must be no space between number and unit. Units are
/// `ns`, `us` (or `µs`), `ms`, `s`, `m` and `h`; exponents, signs, `inf` and
/// `NaN` are rejected. The number is parsed as an exact decimal, so `0.1s` is
/// exactly 100ms; digits below one nanosecond are truncated.
///
/// ```
/// use std::time::Duration;
/// use handover::parse_duration;
///
/// assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
/// assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
/// assert_eq!(parse_duration(" 500ms ").unwrap(), Duration::from_millis(500));
/// assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
/// assert!(parse_duration("-1s").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, DurationParseError> {
    parse(s.trim()).map_err(|reason| DurationParseError {
        input: s.to_owned(),
        reason,
    })
}

fn parse(s: &str) -> Result<Duration, Reason> {
    if s.is_empty() {
        return Err(Reason::Empty);
    }
    if s.starts_with('-') {
        return Err(Reason::Negative);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    // Rejects "", ".", "1.2.3" (the second '.' lands in frac_part).
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return Err(Reason::NoNumber);
    }
    let unit_nanos = if unit.is_empty() {
        NANOS_PER_SEC
    } else {
        match UNITS.iter().find(|(name, _)| *name == unit) {
            Some(&(_, nanos)) => nanos,
            None => return Err(Reason::UnknownUnit(unit.to_owned())),
        }
    };

    // Exact fixed-point arithmetic instead of f64, so "0.1s" is not 99.99..ms
    // and huge inputs are detected as overflow rather than becoming inf.
    let mut total: u128 = 0;
    for b in int_part.bytes() {
        total = total
            .checked_mul(10)
            .and_then(|t| t.checked_add(u128::from(b - b'0')))
            .ok_or(Reason::TooLarge)?;
    }
    total = total.checked_mul(unit_nanos).ok_or(Reason::TooLarge)?;
    // Fraction: take it as an integer over 10^digits and scale once, so the
    // result is the exact value floored to a nanosecond. Digits past the 20th
    // are worth less than 1e-7ns even in hours, so they are ignored; that also
    // bounds the product (< 1e20 * 3.6e12) well inside u128.
    let frac_digits = &frac_part.as_bytes()[..frac_part.len().min(20)];
    let mut frac: u128 = 0;
    for &b in frac_digits {
        frac = frac * 10 + u128::from(b - b'0');
    }
    let frac_nanos = frac * unit_nanos / 10u128.pow(frac_digits.len() as u32);
    total = total.checked_add(frac_nanos).ok_or(Reason::TooLarge)?;
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| Reason::TooLarge)?;
    let nanos = (total % NANOS_PER_SEC) as u32;
    Ok(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        parse_duration(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn accepts_documented_forms() {
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("250us"), Duration::from_micros(250));
        assert_eq!(ok("250µs"), Duration::from_micros(250));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok("30"), Duration::from_secs(30));
        assert_eq!(ok("0.5"), Duration::from_millis(500));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("  10s\n"), Duration::from_secs(10));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("5.s"), Duration::from_secs(5));
        assert_eq!(ok("007s"), Duration::from_secs(7));
    }

    #[test]
    fn decimal_fractions_are_exact() {
        assert_eq!(ok("0.1s"), Duration::from_millis(100));
        assert_eq!(ok("1.25m"), Duration::from_secs(75));
        assert_eq!(ok("0.001ms"), Duration::from_nanos(1_000));
        assert_eq!(ok("1.123456789123s"), Duration::new(1, 123_456_789));
        assert_eq!(ok("0.5ns"), Duration::ZERO);
        assert_eq!(
            ok("1.0000000000000000000000000001h"),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn large_values() {
        let max_secs = u64::MAX.to_string();
        assert_eq!(ok(&max_secs), Duration::from_secs(u64::MAX));
        assert!(parse_duration(&format!("{max_secs}0")).is_err());
        assert!(parse_duration("99999999999999999999999999999999999999999h").is_err());
        assert!(parse_duration(&"9".repeat(100)).is_err());
        let err = parse_duration("1e400").unwrap_err().to_string();
        assert!(err.contains("unknown unit \"e400\""), "{err}");
        let err = parse_duration(&format!("{max_secs}h"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("too large"), "{err}");
    }

    #[test]
    fn rejects_invalid() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("   ", "empty"),
            ("-1s", "negative"),
            ("-0", "negative"),
            ("+1s", "not a number"),
            ("s", "not a number"),
            (".", "not a number"),
            (".s", "not a number"),
            ("1.2.3s", "not a number"),
            ("3x", "unknown unit \"x\""),
            ("3 s", "unknown unit \" s\""),
            ("3S", "unknown unit \"S\""),
            ("1m30s", "unknown unit \"m30s\""),
            ("NaN", "not a number"),
            ("inf", "not a number"),
            ("infinity", "not a number"),
            ("1e3", "unknown unit"),
            ("0x10", "unknown unit"),
        ];
        for (input, needle) in cases {
            let msg = parse_duration(input)
                .expect_err(&format!("{input:?} should be rejected"))
                .to_string();
            assert!(msg.contains(needle), "{input:?}: {msg:?} lacks {needle:?}");
            assert!(
                msg.starts_with(&format!("invalid duration {input:?}: ")),
                "{msg}"
            );
            assert!(msg.contains("e.g. 30s, 500ms or 30"), "{msg}");
        }
    }
}
