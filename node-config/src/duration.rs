//! Go-style durations (`metav1.Duration`): `"1m30s"`, `"300ms"`, `"1.5h"`, `"0s"`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ConfigError;

const NANOSECOND: u64 = 1;
const MICROSECOND: u64 = 1_000 * NANOSECOND;
const MILLISECOND: u64 = 1_000 * MICROSECOND;
const SECOND: u64 = 1_000 * MILLISECOND;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;

/// A signed duration with nanosecond resolution, written and read the way Go's
/// `time.Duration` does (`time.ParseDuration` / `Duration.String`).
///
/// This is the type of every duration field in the file format. It can be negative (Go's can),
/// so that validation can report a negative value instead of the parser rejecting it; the
/// resolved [`KubeletConfiguration`](crate::KubeletConfiguration) uses
/// [`std::time::Duration`].
///
/// ```
/// use node_config::Duration;
/// let d: Duration = "1m30s".parse().unwrap();
/// assert_eq!(d.as_std(), std::time::Duration::from_secs(90));
/// assert_eq!(Duration::from_secs(120).to_string(), "2m0s");
/// assert_eq!("1.5h".parse::<Duration>().unwrap().to_string(), "1h30m0s");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(i64);

impl Duration {
    /// The zero duration, written `0s`.
    pub const ZERO: Duration = Duration(0);

    /// A duration of `nanos` nanoseconds (may be negative).
    pub const fn from_nanos(nanos: i64) -> Self {
        Duration(nanos)
    }

    /// A duration of whole seconds, saturating at Go's limits (about 292 years).
    pub const fn from_secs(secs: i64) -> Self {
        Duration(secs.saturating_mul(SECOND as i64))
    }

    /// A duration of milliseconds, saturating at Go's limits.
    pub const fn from_millis(millis: i64) -> Self {
        Duration(millis.saturating_mul(MILLISECOND as i64))
    }

    /// The signed number of nanoseconds.
    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// Whether the duration is below zero.
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// Whether the duration is exactly zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Converts to [`std::time::Duration`]; a negative duration becomes zero.
    pub const fn as_std(self) -> std::time::Duration {
        if self.0 <= 0 {
            std::time::Duration::ZERO
        } else {
            std::time::Duration::from_nanos(self.0 as u64)
        }
    }

    /// Converts to [`std::time::Duration`], or `None` when negative.
    pub const fn to_std(self) -> Option<std::time::Duration> {
        if self.0 < 0 {
            None
        } else {
            Some(std::time::Duration::from_nanos(self.0 as u64))
        }
    }
}

impl From<std::time::Duration> for Duration {
    /// Converts, saturating at Go's maximum duration (about 292 years).
    fn from(d: std::time::Duration) -> Self {
        Duration(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }
}

fn invalid(input: &str, reason: &'static str) -> ConfigError {
    ConfigError::InvalidDuration {
        input: input.to_string(),
        reason,
    }
}

/// Consumes leading decimal digits; errors on overflow beyond 2^63 like Go's `leadingInt`.
fn leading_int(s: &[u8]) -> Result<(u64, usize), ()> {
    let mut x: u64 = 0;
    let mut i = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        if x > (1u64 << 63) / 10 {
            return Err(());
        }
        x = x * 10 + u64::from(s[i] - b'0');
        if x > 1u64 << 63 {
            return Err(());
        }
        i += 1;
    }
    Ok((x, i))
}

/// Consumes leading digits of a fraction; digits beyond the representable precision are
/// consumed but ignored, like Go's `leadingFraction`.
fn leading_fraction(s: &[u8]) -> (u64, u64, usize) {
    let mut x: u64 = 0;
    let mut scale: u64 = 1;
    let mut overflow = false;
    let mut i = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        if !overflow {
            if x > (i64::MAX as u64) / 10 {
                overflow = true;
            } else {
                let y = x * 10 + u64::from(s[i] - b'0');
                if y > 1u64 << 63 {
                    overflow = true;
                } else {
                    x = y;
                    scale *= 10;
                }
            }
        }
        i += 1;
    }
    (x, scale, i)
}

fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => NANOSECOND,
        "us" | "\u{00b5}s" | "\u{03bc}s" => MICROSECOND,
        "ms" => MILLISECOND,
        "s" => SECOND,
        "m" => MINUTE,
        "h" => HOUR,
        _ => return None,
    })
}

impl FromStr for Duration {
    type Err = ConfigError;

    /// Parses like Go's `time.ParseDuration`: a possibly signed sequence of decimal numbers,
    /// each with optional fraction and a unit suffix (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`).
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let mut s = input.as_bytes();
        let mut neg = false;
        if let Some(&c) = s.first()
            && (c == b'-' || c == b'+')
        {
            neg = c == b'-';
            s = &s[1..];
        }
        if s == b"0" {
            return Ok(Duration::ZERO);
        }
        if s.is_empty() {
            return Err(invalid(input, "empty duration"));
        }
        let mut total: u64 = 0;
        while !s.is_empty() {
            if !(s[0] == b'.' || s[0].is_ascii_digit()) {
                return Err(invalid(input, "expected a number"));
            }
            let (mut v, consumed) =
                leading_int(s).map_err(|()| invalid(input, "number out of range"))?;
            let pre = consumed > 0;
            s = &s[consumed..];
            let mut frac = (0u64, 1u64);
            let mut post = false;
            if s.first() == Some(&b'.') {
                s = &s[1..];
                let (f, scale, n) = leading_fraction(s);
                frac = (f, scale);
                post = n > 0;
                s = &s[n..];
            }
            if !pre && !post {
                return Err(invalid(input, "expected a number"));
            }
            let unit_len = s
                .iter()
                .position(|&c| c == b'.' || c.is_ascii_digit())
                .unwrap_or(s.len());
            if unit_len == 0 {
                return Err(invalid(input, "missing unit"));
            }
            let unit_text =
                std::str::from_utf8(&s[..unit_len]).map_err(|_| invalid(input, "unknown unit"))?;
            let unit = unit_nanos(unit_text).ok_or_else(|| invalid(input, "unknown unit"))?;
            s = &s[unit_len..];
            if v > (1u64 << 63) / unit {
                return Err(invalid(input, "out of range"));
            }
            v *= unit;
            if frac.0 > 0 {
                let extra = u128::from(frac.0) * u128::from(unit) / u128::from(frac.1);
                v = v.saturating_add(u64::try_from(extra).unwrap_or(u64::MAX));
                if v > 1u64 << 63 {
                    return Err(invalid(input, "out of range"));
                }
            }
            total = total.saturating_add(v);
            if total > 1u64 << 63 {
                return Err(invalid(input, "out of range"));
            }
        }
        if neg {
            // total <= 2^63 here, so the negation fits.
            return Ok(Duration((total as i128).wrapping_neg() as i64));
        }
        if total > i64::MAX as u64 {
            return Err(invalid(input, "out of range"));
        }
        Ok(Duration(total as i64))
    }
}

/// Writes the fraction `v / 10^prec` as `.ddd` without trailing zeros (nothing when zero) and
/// returns the integer part.
fn write_frac(out: &mut String, v: u64, prec: u32) -> u64 {
    let div = 10u64.pow(prec);
    let int = v / div;
    let mut frac = v % div;
    if frac != 0 {
        let mut digits = prec as usize;
        while frac.is_multiple_of(10) {
            frac /= 10;
            digits -= 1;
        }
        out.push('.');
        out.push_str(&format!("{frac:0digits$}"));
    }
    int
}

impl fmt::Display for Duration {
    /// Formats like Go's `Duration.String`: `72h3m0.5s`, `1m30s`, `2m0s`, `300ms`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let neg = self.0 < 0;
        let u = self.0.unsigned_abs();
        let mut text = String::new();
        if neg {
            text.push('-');
        }
        if u < SECOND {
            let (prec, unit) = match u {
                0 => return f.write_str("0s"),
                u if u < MICROSECOND => (0, "ns"),
                u if u < MILLISECOND => (3, "\u{00b5}s"),
                _ => (6, "ms"),
            };
            let mut frac = String::new();
            let int = write_frac(&mut frac, u, prec);
            text.push_str(&int.to_string());
            text.push_str(&frac);
            text.push_str(unit);
        } else {
            let mut frac = String::new();
            let secs = write_frac(&mut frac, u, 9);
            let hours = secs / 3600;
            let minutes = secs / 60;
            if hours > 0 {
                text.push_str(&format!("{hours}h"));
            }
            if minutes > 0 {
                text.push_str(&format!("{}m", minutes % 60));
            }
            text.push_str(&format!("{}{frac}s", secs % 60));
        }
        f.write_str(&text)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"1m30s\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Duration {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_go_durations() {
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d("0s"), Duration::ZERO);
        assert_eq!(d("-0"), Duration::ZERO);
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        assert_eq!(d("300ms"), Duration::from_millis(300));
        assert_eq!(d("2h"), Duration::from_secs(7200));
        assert_eq!(d("1.5h"), Duration::from_secs(5400));
        assert_eq!(d(".5s"), Duration::from_millis(500));
        assert_eq!(d("5.s"), Duration::from_secs(5));
        assert_eq!(d("1h2m3s4ms5us6ns").as_nanos(), 3_723_004_005_006);
        assert_eq!(d("1µs"), Duration::from_nanos(1000));
        assert_eq!(d("1μs"), Duration::from_nanos(1000));
        assert_eq!(d("-1m"), Duration::from_secs(-60));
        assert_eq!(d("+20s"), Duration::from_secs(20));
        assert_eq!(d("1.000000001s").as_nanos(), 1_000_000_001);
        assert_eq!(
            d("0.1234567890123456789s").as_nanos(),
            123_456_789,
            "digits beyond nanoseconds are truncated"
        );
        assert_eq!(d("2562047h47m16.854775807s").as_nanos(), i64::MAX);
        assert_eq!(d("-2562047h47m16.854775808s").as_nanos(), i64::MIN);
    }

    #[test]
    fn rejects_bad_durations() {
        for bad in [
            "",
            "-",
            "s",
            "1",
            "10",
            "1d",
            "1.5",
            ".",
            ".s",
            "1s1",
            "1 s",
            "1s ",
            " 1s",
            "--1s",
            "1e3s",
            "3000000h",
            "9223372036854775808ns",
            "1\u{00e9}s",
        ] {
            assert!(
                bad.parse::<Duration>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn formats_like_go() {
        let cases = [
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1µs"),
            (2_200_000, "2.2ms"),
            (3_300_000_000, "3.3s"),
            (90 * SECOND as i64, "1m30s"),
            (120 * SECOND as i64, "2m0s"),
            (HOUR as i64, "1h0m0s"),
            (
                4 * HOUR as i64 + 5 * MINUTE as i64 + 6 * SECOND as i64 + 7,
                "4h5m6.000000007s",
            ),
            (-(90 * SECOND as i64), "-1m30s"),
            (i64::MAX, "2562047h47m16.854775807s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ];
        for (nanos, want) in cases {
            assert_eq!(Duration::from_nanos(nanos).to_string(), want);
        }
    }

    #[test]
    fn round_trips() {
        for s in [
            "0s",
            "1ns",
            "999ns",
            "1.5µs",
            "300ms",
            "1s",
            "1.5s",
            "59s",
            "1m0s",
            "1m30s",
            "2m0s",
            "5m0s",
            "1h0m0s",
            "1h30m0s",
            "100h0m0.001s",
            "-3s",
        ] {
            let parsed = d(s);
            assert_eq!(parsed.to_string(), s);
            assert_eq!(d(&parsed.to_string()), parsed);
        }
        for s in ["90s", "1.5h", "120m", "0.5ms", "1h90m"] {
            let once = d(s);
            assert_eq!(d(&once.to_string()), once, "{s}");
        }
    }

    #[test]
    fn std_conversion() {
        assert_eq!(d("1m").as_std(), std::time::Duration::from_secs(60));
        assert_eq!(d("-1m").as_std(), std::time::Duration::ZERO);
        assert_eq!(d("-1m").to_std(), None);
        assert_eq!(
            Duration::from(std::time::Duration::from_millis(1500)),
            d("1.5s")
        );
        assert_eq!(
            Duration::from(std::time::Duration::MAX).as_nanos(),
            i64::MAX
        );
    }

    #[test]
    fn serde_uses_go_strings() {
        let v = serde_json::to_value(d("90s")).unwrap();
        assert_eq!(v, serde_json::json!("1m30s"));
        let back: Duration = serde_json::from_value(v).unwrap();
        assert_eq!(back, d("90s"));
        assert!(serde_json::from_value::<Duration>(serde_json::json!(90)).is_err());
        assert!(serde_json::from_value::<Duration>(serde_json::json!("90")).is_err());
    }
}
