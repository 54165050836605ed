//! Config values that carry a unit (SPEC §3): durations `"30s"`, sizes `"64KiB"`,
//! rates `"50/s"` and byte rates `"8MiB/s"`.
//!
//! The syntax is strict: a whole decimal number immediately followed by a unit, with no
//! sign, no fraction, no spaces and no surrounding whitespace. A rate of zero is refused:
//! a limit cannot be switched off by accident, and an operator who wants no practical
//! limit writes a large value.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The longest duration accepted anywhere: 36500 days (100 years). Longer values would
/// only overflow the clock arithmetic that deadlines are computed with.
pub const MAX_DURATION_SECS: u64 = 36_500 * DAY;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Which kind of value failed to parse; it picks the "expected ..." text of the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitKind {
    /// `"500ms"`, `"30s"`, `"15m"`, `"1h"`, `"7d"`.
    Duration,
    /// `"100B"`, `"64KiB"`, `"1MiB"`, `"1GiB"`.
    ByteSize,
    /// `"50/s"`.
    Rate,
    /// `"8MiB/s"`.
    ByteRate,
}

impl UnitKind {
    /// The format this kind expects, as the error message states it.
    pub fn expected(self) -> &'static str {
        match self {
            UnitKind::Duration => "a duration like \"30s\" (units: ms, s, m, h, d)",
            UnitKind::ByteSize => "a size like \"64KiB\" (units: B, KiB, MiB, GiB)",
            UnitKind::Rate => "a rate like \"50/s\" (a whole number per second)",
            UnitKind::ByteRate => {
                "a byte rate like \"8MiB/s\" (units: B, KiB, MiB, GiB, per second)"
            }
        }
    }
}

/// The rule a unit string broke: one variant per rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitRule {
    /// The string is empty.
    Empty,
    /// It does not start with a digit (a sign, a space, a letter).
    NoNumber,
    /// A number with no unit after it.
    NoUnit,
    /// A fraction such as `"1.5s"`.
    Fraction,
    /// A unit this kind does not know (including a space before the unit).
    UnknownUnit,
    /// `KB`, `MB`, `GB`...: ambiguous between 1000 and 1024, so refused.
    DecimalUnit,
    /// The value does not fit (or passes [`MAX_DURATION_SECS`]).
    TooLarge,
    /// A rate of zero.
    ZeroRate,
}

/// A unit string that was refused, with the input it was given (never a secret: these
/// are plain config values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitError {
    /// The kind of value expected.
    pub kind: UnitKind,
    /// The rule the input broke.
    pub rule: UnitRule,
    /// The input as written.
    pub input: String,
}

impl UnitError {
    fn new(kind: UnitKind, rule: UnitRule, input: &str) -> Self {
        UnitError {
            kind,
            rule,
            input: input.to_owned(),
        }
    }
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {}, got {:?}", self.kind.expected(), self.input)?;
        let hint = match self.rule {
            UnitRule::Empty | UnitRule::UnknownUnit => "",
            UnitRule::NoNumber => ": it must start with a whole number",
            UnitRule::NoUnit => ": the unit is missing",
            UnitRule::Fraction => ": fractions are not allowed, use a smaller unit",
            UnitRule::DecimalUnit => {
                ": use KiB, MiB or GiB (powers of 1024); KB, MB and GB are ambiguous"
            }
            UnitRule::TooLarge => ": too large",
            UnitRule::ZeroRate => {
                ": a rate must be above zero (to effectively disable a limit, use a large value)"
            }
        };
        f.write_str(hint)
    }
}

impl std::error::Error for UnitError {}

/// Splits `"30s"` into `("30", "s")`: the leading ASCII digits and the rest.
fn split_number(input: &str) -> (&str, &str) {
    let end = input
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(input.len());
    // `end` is at a digit boundary, hence a char boundary: split_at cannot panic.
    input.split_at(end)
}

/// Parses the number part; it is all ASCII digits, so the only failure is overflow.
fn parse_number(kind: UnitKind, digits: &str, input: &str) -> Result<u64, UnitError> {
    if digits.is_empty() {
        let rule = if input.is_empty() {
            UnitRule::Empty
        } else {
            UnitRule::NoNumber
        };
        return Err(UnitError::new(kind, rule, input));
    }
    digits
        .parse::<u64>()
        .map_err(|_| UnitError::new(kind, UnitRule::TooLarge, input))
}

/// Classifies a unit that was not recognized.
fn unknown_unit(kind: UnitKind, unit: &str, input: &str) -> UnitError {
    let rule = if unit.is_empty() {
        UnitRule::NoUnit
    } else if unit.starts_with('.') || unit.starts_with(',') {
        UnitRule::Fraction
    } else {
        UnitRule::UnknownUnit
    };
    UnitError::new(kind, rule, input)
}

/// A duration as written in the config: `"500ms"`, `"30s"`, `"15m"`, `"1h"`, `"7d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DurationStr(pub std::time::Duration);

impl DurationStr {
    /// Whole seconds (used for defaults).
    pub const fn secs(secs: u64) -> Self {
        DurationStr(std::time::Duration::from_secs(secs))
    }
}

impl FromStr for DurationStr {
    type Err = UnitError;

    fn from_str(input: &str) -> Result<Self, UnitError> {
        let kind = UnitKind::Duration;
        let (digits, unit) = split_number(input);
        let number = parse_number(kind, digits, input)?;
        let too_large = || UnitError::new(kind, UnitRule::TooLarge, input);
        let duration = match unit {
            "ms" => std::time::Duration::from_millis(number),
            "s" | "m" | "h" | "d" => {
                let scale = match unit {
                    "m" => MINUTE,
                    "h" => HOUR,
                    "d" => DAY,
                    _ => 1,
                };
                std::time::Duration::from_secs(number.checked_mul(scale).ok_or_else(too_large)?)
            }
            _ => return Err(unknown_unit(kind, unit, input)),
        };
        if duration.as_secs() > MAX_DURATION_SECS {
            return Err(too_large());
        }
        Ok(DurationStr(duration))
    }
}

impl fmt::Display for DurationStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let duration = self.0;
        if duration.subsec_nanos() % 1_000_000 != 0 {
            // Not expressible in this syntax; only reachable from code, never from parsing.
            return write!(f, "{duration:?}");
        }
        if duration.subsec_nanos() != 0 {
            return write!(f, "{}ms", duration.as_millis());
        }
        let secs = duration.as_secs();
        for (scale, unit) in [(DAY, "d"), (HOUR, "h"), (MINUTE, "m")] {
            if secs != 0 && secs % scale == 0 {
                return write!(f, "{}{unit}", secs / scale);
            }
        }
        write!(f, "{secs}s")
    }
}

/// A size in bytes as written in the config: `"100B"`, `"64KiB"`, `"1MiB"`, `"1GiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses with `kind` naming the expected format in errors (sizes and byte rates).
    fn parse_as(kind: UnitKind, text: &str, input: &str) -> Result<u64, UnitError> {
        let (digits, unit) = split_number(text);
        let number = parse_number(kind, digits, input)?;
        let scale = match unit {
            "B" => 1,
            "KiB" => KIB,
            "MiB" => MIB,
            "GiB" => GIB,
            _ => {
                let lower = unit.to_ascii_lowercase();
                if ["k", "kb", "m", "mb", "g", "gb", "t", "tb"].contains(&lower.as_str()) {
                    return Err(UnitError::new(kind, UnitRule::DecimalUnit, input));
                }
                return Err(unknown_unit(kind, unit, input));
            }
        };
        number
            .checked_mul(scale)
            .ok_or_else(|| UnitError::new(kind, UnitRule::TooLarge, input))
    }
}

impl FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(input: &str) -> Result<Self, UnitError> {
        ByteSize::parse_as(UnitKind::ByteSize, input, input).map(ByteSize)
    }
}

/// Writes `bytes` with the largest unit that divides it exactly.
fn write_bytes(f: &mut fmt::Formatter<'_>, bytes: u64) -> fmt::Result {
    for (scale, unit) in [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
        if bytes != 0 && bytes % scale == 0 {
            return write!(f, "{}{unit}", bytes / scale);
        }
    }
    write!(f, "{bytes}B")
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_bytes(f, self.0)
    }
}

/// Strips the `/s` suffix of a rate, or says which rule the input broke.
fn strip_per_second(kind: UnitKind, input: &str) -> Result<&str, UnitError> {
    if input.is_empty() {
        return Err(UnitError::new(kind, UnitRule::Empty, input));
    }
    match input.strip_suffix("/s") {
        Some(amount) => Ok(amount),
        None if input.contains('/') => Err(UnitError::new(kind, UnitRule::UnknownUnit, input)),
        None => Err(UnitError::new(kind, UnitRule::NoUnit, input)),
    }
}

/// A count per second, `"50/s"`: a token bucket whose burst equals the rate. Never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(pub u64);

impl FromStr for Rate {
    type Err = UnitError;

    fn from_str(input: &str) -> Result<Self, UnitError> {
        let kind = UnitKind::Rate;
        let amount = strip_per_second(kind, input)?;
        let (digits, rest) = split_number(amount);
        let number = parse_number(kind, digits, input)?;
        if !rest.is_empty() {
            return Err(unknown_unit(kind, rest, input));
        }
        if number == 0 {
            return Err(UnitError::new(kind, UnitRule::ZeroRate, input));
        }
        Ok(Rate(number))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", self.0)
    }
}

/// Bytes per second, `"8MiB/s"`: a token bucket whose burst equals the rate. Never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteRate(pub u64);

impl FromStr for ByteRate {
    type Err = UnitError;

    fn from_str(input: &str) -> Result<Self, UnitError> {
        let kind = UnitKind::ByteRate;
        let amount = strip_per_second(kind, input)?;
        let bytes = ByteSize::parse_as(kind, amount, input)?;
        if bytes == 0 {
            return Err(UnitError::new(kind, UnitRule::ZeroRate, input));
        }
        Ok(ByteRate(bytes))
    }
}

impl fmt::Display for ByteRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_bytes(f, self.0)?;
        f.write_str("/s")
    }
}

/// A serde visitor that accepts only strings and parses them with `FromStr`.
struct UnitVisitor<T>(UnitKind, std::marker::PhantomData<T>);

impl<T> Visitor<'_> for UnitVisitor<T>
where
    T: FromStr<Err = UnitError>,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.expected())
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
        value.parse().map_err(E::custom)
    }
}

macro_rules! deserialize_from_str {
    ($type:ty, $kind:expr) => {
        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(UnitVisitor($kind, std::marker::PhantomData))
            }
        }
    };
}

deserialize_from_str!(DurationStr, UnitKind::Duration);
deserialize_from_str!(ByteSize, UnitKind::ByteSize);
deserialize_from_str!(Rate, UnitKind::Rate);
deserialize_from_str!(ByteRate, UnitKind::ByteRate);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn duration(input: &str) -> Result<Duration, UnitRule> {
        input
            .parse::<DurationStr>()
            .map(|d| d.0)
            .map_err(|e| e.rule)
    }

    fn size(input: &str) -> Result<u64, UnitRule> {
        input.parse::<ByteSize>().map(|s| s.0).map_err(|e| e.rule)
    }

    fn rate(input: &str) -> Result<u64, UnitRule> {
        input.parse::<Rate>().map(|r| r.0).map_err(|e| e.rule)
    }

    fn byte_rate(input: &str) -> Result<u64, UnitRule> {
        input.parse::<ByteRate>().map(|r| r.0).map_err(|e| e.rule)
    }

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(duration("0s"), Ok(Duration::ZERO));
        assert_eq!(duration("0ms"), Ok(Duration::ZERO));
        assert_eq!(duration("007s"), Ok(Duration::from_secs(7)));
        assert_eq!(
            duration("36500d"),
            Ok(Duration::from_secs(MAX_DURATION_SECS))
        );
    }

    #[test]
    fn bad_durations() {
        assert_eq!(duration(""), Err(UnitRule::Empty));
        assert_eq!(duration("s"), Err(UnitRule::NoNumber));
        assert_eq!(duration("-5s"), Err(UnitRule::NoNumber));
        assert_eq!(duration("+5s"), Err(UnitRule::NoNumber));
        assert_eq!(duration(" 5s"), Err(UnitRule::NoNumber));
        assert_eq!(duration("30"), Err(UnitRule::NoUnit));
        assert_eq!(duration("30 s"), Err(UnitRule::UnknownUnit));
        assert_eq!(duration("30s "), Err(UnitRule::UnknownUnit));
        assert_eq!(duration("30S"), Err(UnitRule::UnknownUnit));
        assert_eq!(duration("30sec"), Err(UnitRule::UnknownUnit));
        assert_eq!(duration("30us"), Err(UnitRule::UnknownUnit));
        assert_eq!(duration("1m30s"), Err(UnitRule::UnknownUnit));
        assert_eq!(duration("1.5s"), Err(UnitRule::Fraction));
        assert_eq!(duration("36501d"), Err(UnitRule::TooLarge));
        assert_eq!(duration("99999999999999999999s"), Err(UnitRule::TooLarge));
        assert_eq!(duration("999999999999999999d"), Err(UnitRule::TooLarge));
    }

    #[test]
    fn duration_error_names_the_format() {
        let error = "30 s".parse::<DurationStr>().unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"expected a duration like "30s" (units: ms, s, m, h, d), got "30 s""#
        );
    }

    #[test]
    fn duration_display_round_trips() {
        for text in [
            "500ms", "1500ms", "30s", "90s", "15m", "1h", "25h", "7d", "0s",
        ] {
            let parsed: DurationStr = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(DurationStr::secs(60).to_string(), "1m");
        assert_eq!(DurationStr::secs(86400).to_string(), "1d");
    }

    #[test]
    fn sizes_in_every_unit() {
        assert_eq!(size("100B"), Ok(100));
        assert_eq!(size("0B"), Ok(0));
        assert_eq!(size("64KiB"), Ok(65536));
        assert_eq!(size("8KiB"), Ok(8192));
        assert_eq!(size("1MiB"), Ok(1 << 20));
        assert_eq!(size("1GiB"), Ok(1 << 30));
    }

    #[test]
    fn bad_sizes() {
        assert_eq!(size(""), Err(UnitRule::Empty));
        assert_eq!(size("KiB"), Err(UnitRule::NoNumber));
        assert_eq!(size("-1KiB"), Err(UnitRule::NoNumber));
        assert_eq!(size("100"), Err(UnitRule::NoUnit));
        assert_eq!(size("64KB"), Err(UnitRule::DecimalUnit));
        assert_eq!(size("64kB"), Err(UnitRule::DecimalUnit));
        assert_eq!(size("1MB"), Err(UnitRule::DecimalUnit));
        assert_eq!(size("1GB"), Err(UnitRule::DecimalUnit));
        assert_eq!(size("1M"), Err(UnitRule::DecimalUnit));
        assert_eq!(size("64kib"), Err(UnitRule::UnknownUnit));
        assert_eq!(size("64 KiB"), Err(UnitRule::UnknownUnit));
        assert_eq!(size("1TiB"), Err(UnitRule::UnknownUnit));
        assert_eq!(size("1.5MiB"), Err(UnitRule::Fraction));
        assert_eq!(size("17179869184GiB"), Err(UnitRule::TooLarge));
    }

    #[test]
    fn size_errors_say_what_to_use() {
        let error = "64KB".parse::<ByteSize>().unwrap_err().to_string();
        assert!(error
            .starts_with(r#"expected a size like "64KiB" (units: B, KiB, MiB, GiB), got "64KB""#));
        assert!(error.contains("use KiB, MiB or GiB"), "{error}");
    }

    #[test]
    fn size_display_round_trips() {
        for text in ["100B", "0B", "64KiB", "1MiB", "1GiB", "1025KiB", "1537B"] {
            let parsed: ByteSize = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(ByteSize(2048).to_string(), "2KiB");
    }

    #[test]
    fn rates() {
        assert_eq!(rate("50/s"), Ok(50));
        assert_eq!(rate("1/s"), Ok(1));
        assert_eq!(rate("1000/s"), Ok(1000));
        assert_eq!(rate("50/s").map(|r| Rate(r).to_string()), Ok("50/s".into()));
    }

    #[test]
    fn bad_rates() {
        assert_eq!(rate(""), Err(UnitRule::Empty));
        assert_eq!(rate("0/s"), Err(UnitRule::ZeroRate));
        assert_eq!(rate("50"), Err(UnitRule::NoUnit));
        assert_eq!(rate("50/m"), Err(UnitRule::UnknownUnit));
        assert_eq!(rate("50 /s"), Err(UnitRule::UnknownUnit));
        assert_eq!(rate("50/s "), Err(UnitRule::UnknownUnit));
        assert_eq!(rate("/s"), Err(UnitRule::NoNumber));
        assert_eq!(rate("-5/s"), Err(UnitRule::NoNumber));
        assert_eq!(rate("1.5/s"), Err(UnitRule::Fraction));
        assert_eq!(rate("8MiB/s"), Err(UnitRule::UnknownUnit));
        assert_eq!(rate("99999999999999999999/s"), Err(UnitRule::TooLarge));
    }

    #[test]
    fn zero_rate_explains_how_to_disable() {
        let error = "0/s".parse::<Rate>().unwrap_err().to_string();
        assert!(error.contains("use a large value"), "{error}");
        assert!(
            error.starts_with(r#"expected a rate like "50/s""#),
            "{error}"
        );
    }

    #[test]
    fn byte_rates() {
        assert_eq!(byte_rate("8MiB/s"), Ok(8 << 20));
        assert_eq!(byte_rate("100B/s"), Ok(100));
        assert_eq!(byte_rate("64KiB/s"), Ok(65536));
        assert_eq!(ByteRate(8 << 20).to_string(), "8MiB/s");
    }

    #[test]
    fn bad_byte_rates() {
        assert_eq!(byte_rate(""), Err(UnitRule::Empty));
        assert_eq!(byte_rate("0B/s"), Err(UnitRule::ZeroRate));
        assert_eq!(byte_rate("0MiB/s"), Err(UnitRule::ZeroRate));
        assert_eq!(byte_rate("8MiB"), Err(UnitRule::NoUnit));
        assert_eq!(byte_rate("100/s"), Err(UnitRule::NoUnit));
        assert_eq!(byte_rate("8MB/s"), Err(UnitRule::DecimalUnit));
        assert_eq!(byte_rate("8MiB/h"), Err(UnitRule::UnknownUnit));
        let error = "8MB/s".parse::<ByteRate>().unwrap_err().to_string();
        assert!(
            error.starts_with(r#"expected a byte rate like "8MiB/s""#),
            "{error}"
        );
    }

    #[derive(Debug, serde::Deserialize)]
    struct Sample {
        timeout: DurationStr,
        size: ByteSize,
        rate: Rate,
        bytes: ByteRate,
    }

    #[test]
    fn deserialize_from_toml_strings() {
        let sample: Sample = toml::from_str(
            "timeout = \"5s\"\nsize = \"8KiB\"\nrate = \"10/s\"\nbytes = \"1MiB/s\"",
        )
        .unwrap();
        assert_eq!(sample.timeout.0, Duration::from_secs(5));
        assert_eq!(sample.size.0, 8192);
        assert_eq!(sample.rate.0, 10);
        assert_eq!(sample.bytes.0, 1 << 20);
    }

    #[test]
    fn deserialize_refuses_other_types_and_names_the_format() {
        let error = toml::from_str::<Sample>(
            "timeout = 5\nsize = \"8KiB\"\nrate = \"10/s\"\nbytes = \"1MiB/s\"",
        )
        .unwrap_err();
        assert!(
            error
                .message()
                .contains(r#"expected a duration like "30s""#),
            "{}",
            error.message()
        );
        let error = toml::from_str::<Sample>(
            "timeout = \"5s\"\nsize = \"8KB\"\nrate = \"10/s\"\nbytes = \"1MiB/s\"",
        )
        .unwrap_err();
        assert!(
            error.message().contains("got \"8KB\""),
            "{}",
            error.message()
        );
    }
}
