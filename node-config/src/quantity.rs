//! Kubernetes resource quantities (`resource.Quantity`): `"100Mi"`, `"1.5Gi"`, `"500m"`, `"1e3"`.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ConfigError;

const NANOS_PER_UNIT: i128 = 1_000_000_000;
/// apimachinery caps quantities at the largest int64 (in units).
const MAX_UNITS: i128 = i64::MAX as i128;

/// How a quantity was written, which decides how it is formatted back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantityFormat {
    /// Powers of 1024: `Ki`, `Mi`, `Gi`, `Ti`, `Pi`, `Ei`.
    BinarySI,
    /// Powers of 1000: `n`, `u`, `m`, (none), `k`, `M`, `G`, `T`, `P`, `E`.
    DecimalSI,
    /// Scientific notation: `1e3`, `12E6`.
    DecimalExponent,
}

/// A Kubernetes resource quantity with nanounit precision.
///
/// Parsing follows apimachinery's `resource.ParseQuantity`: an optional sign, a decimal number
/// and a suffix (binary SI, decimal SI or an exponent); precision below `1n` is rounded up
/// (away from zero) and magnitudes are capped at 2^63-1. Formatting is the canonical form
/// Kubernetes prints: binary stays binary when it can be written exactly, decimal stays decimal,
/// with the largest suffix that keeps an integer mantissa.
///
/// Equality and ordering compare values, so `1Gi == 1073741824`, like `Quantity.Cmp`.
///
/// ```
/// use node_config::Quantity;
/// let q: Quantity = "1.5Gi".parse().unwrap();
/// assert_eq!(q.to_string(), "1536Mi");
/// assert_eq!(q.as_bytes(), 1_610_612_736);
/// assert_eq!("0.5".parse::<Quantity>().unwrap().to_string(), "500m");
/// assert_eq!("1000m".parse::<Quantity>().unwrap().value(), 1);
/// assert!("10%".parse::<Quantity>().is_err());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    nanos: i128,
    format: QuantityFormat,
}

impl Quantity {
    /// Zero.
    pub const ZERO: Quantity = Quantity {
        nanos: 0,
        format: QuantityFormat::DecimalSI,
    };

    /// A number of bytes, formatted in binary SI (`1048576` → `1Mi`).
    pub fn from_bytes(bytes: u64) -> Self {
        Quantity {
            nanos: i128::from(bytes).min(MAX_UNITS) * NANOS_PER_UNIT,
            format: QuantityFormat::BinarySI,
        }
    }

    /// A whole number of units in the given format.
    pub fn from_value(value: i64, format: QuantityFormat) -> Self {
        Quantity {
            nanos: i128::from(value) * NANOS_PER_UNIT,
            format,
        }
    }

    /// Thousandths of a unit, decimal SI (`500` → `500m`).
    pub fn from_milli(milli: i64) -> Self {
        Quantity {
            nanos: i128::from(milli) * 1_000_000,
            format: QuantityFormat::DecimalSI,
        }
    }

    /// The format the quantity was written in (and is printed in).
    pub fn format(&self) -> QuantityFormat {
        self.format
    }

    /// The exact value in billionths of a unit.
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// Whether the value is zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// Whether the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// The value in whole units, rounded away from zero like `Quantity.Value()`
    /// (`"100m"` → 1), saturating at the `i64` range.
    pub fn value(&self) -> i64 {
        scaled(self.nanos, NANOS_PER_UNIT)
    }

    /// The value in thousandths of a unit, rounded away from zero like
    /// `Quantity.MilliValue()` (`"1.5"` → 1500).
    pub fn milli_value(&self) -> i64 {
        scaled(self.nanos, 1_000_000)
    }

    /// The value read as a byte count: [`value`](Self::value), with negatives as zero.
    pub fn as_bytes(&self) -> u64 {
        u64::try_from(self.value()).unwrap_or(0)
    }
}

fn scaled(nanos: i128, per: i128) -> i64 {
    let q = nanos / per;
    let r = nanos % per;
    let rounded = if r > 0 {
        q + 1
    } else if r < 0 {
        q - 1
    } else {
        q
    };
    i64::try_from(rounded).unwrap_or(if rounded < 0 { i64::MIN } else { i64::MAX })
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl Hash for Quantity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.nanos.hash(state);
    }
}

impl Default for Quantity {
    fn default() -> Self {
        Quantity::ZERO
    }
}

fn invalid(input: &str, reason: &'static str) -> ConfigError {
    ConfigError::InvalidQuantity {
        input: input.to_string(),
        reason,
    }
}

/// The pieces apimachinery's `parseQuantityString` splits a quantity into.
struct Parts<'a> {
    positive: bool,
    /// Integer digits, leading zeros stripped (may be empty).
    int: &'a str,
    /// Fraction digits (may be empty).
    frac: &'a str,
    suffix: &'a str,
}

/// Mirrors apimachinery's `parseQuantityString`, including its leniency (`"."`, `"Mi"` and
/// `"-"` read as zero).
fn split(s: &str) -> Result<Parts<'_>, &'static str> {
    let b = s.as_bytes();
    let end = b.len();
    let mut pos = 0;
    let mut positive = true;
    match b.first() {
        Some(b'-') => {
            positive = false;
            pos += 1;
        }
        Some(b'+') => pos += 1,
        _ => {}
    }
    while pos < end && b[pos] == b'0' {
        pos += 1;
    }
    let int_start = pos;
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    let int = &s[int_start..pos];
    let mut frac = "";
    if pos < end && b[pos] == b'.' {
        pos += 1;
        let frac_start = pos;
        while pos < end && b[pos].is_ascii_digit() {
            pos += 1;
        }
        frac = &s[frac_start..pos];
    }
    let suffix_start = pos;
    while pos < end && b"eEinumkKMGTP".contains(&b[pos]) {
        pos += 1;
    }
    if pos < end && (b[pos] == b'-' || b[pos] == b'+') {
        pos += 1;
    }
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos != end {
        return Err("unexpected characters");
    }
    Ok(Parts {
        positive,
        int,
        frac,
        suffix: &s[suffix_start..],
    })
}

/// Decodes a suffix into (decimal exponent, binary exponent, format).
fn interpret(suffix: &str) -> Option<(i64, u32, QuantityFormat)> {
    let dec = match suffix {
        "n" => Some(-9),
        "u" => Some(-6),
        "m" => Some(-3),
        "" => Some(0),
        "k" => Some(3),
        "M" => Some(6),
        "G" => Some(9),
        "T" => Some(12),
        "P" => Some(15),
        "E" => Some(18),
        _ => None,
    };
    if let Some(e) = dec {
        return Some((e, 0, QuantityFormat::DecimalSI));
    }
    let bin = match suffix {
        "Ki" => Some(10),
        "Mi" => Some(20),
        "Gi" => Some(30),
        "Ti" => Some(40),
        "Pi" => Some(50),
        "Ei" => Some(60),
        _ => None,
    };
    if let Some(e) = bin {
        return Some((0, e, QuantityFormat::BinarySI));
    }
    let rest = suffix
        .strip_prefix('e')
        .or_else(|| suffix.strip_prefix('E'))?;
    if rest.is_empty() {
        return None;
    }
    let e: i64 = rest.parse().ok()?;
    Some((e, 0, QuantityFormat::DecimalExponent))
}

/// Computes `digits × 10^dec_exp × 2^bin_exp` in nanounits, rounding away from zero and
/// capping at the apimachinery maximum.
fn to_nanos(int: &str, frac: &str, dec_exp: i64, bin_exp: u32) -> i128 {
    let digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|c| c - b'0').collect();
    let Some(first) = digits.iter().position(|&d| d != 0) else {
        return 0;
    };
    let cap = MAX_UNITS * NANOS_PER_UNIT;
    // Position of the decimal point within `digits` once the value is in nanounits.
    let point = (int.len() as i64).saturating_add(dec_exp).saturating_add(9);
    // More than 30 significant integer digits is far beyond the cap (28 digits).
    if point.saturating_sub(first as i64) > 30 {
        return cap;
    }
    let multiplier: i128 = 1i128 << bin_exp;
    let mut int_part: i128 = 0;
    for i in (first as i64)..point {
        let d = usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i))
            .copied()
            .unwrap_or(0);
        int_part = int_part * 10 + i128::from(d);
    }
    let Some(total) = int_part.checked_mul(multiplier) else {
        return cap;
    };
    // The fraction (digits after the point, preceded by zeros when the point lies before the
    // first digit) times the multiplier, folded from the least significant digit:
    // carry = floor((d × multiplier + carry) / 10), remembering whether anything was dropped.
    let mut carry: i128 = 0;
    let mut dropped = false;
    let frac_start = usize::try_from(point.max(0)).unwrap_or(usize::MAX);
    if frac_start < digits.len() {
        for &d in digits[frac_start..].iter().rev() {
            let n = i128::from(d) * multiplier + carry;
            dropped |= n % 10 != 0;
            carry = n / 10;
        }
        let mut zeros = point.min(0).saturating_neg();
        while zeros > 0 && carry != 0 {
            dropped |= carry % 10 != 0;
            carry /= 10;
            zeros -= 1;
        }
    }
    let total = total
        .saturating_add(carry)
        .saturating_add(i128::from(dropped));
    total.min(cap)
}

impl FromStr for Quantity {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(invalid(s, "empty quantity"));
        }
        let parts = split(s).map_err(|reason| invalid(s, reason))?;
        let (dec_exp, bin_exp, format) =
            interpret(parts.suffix).ok_or_else(|| invalid(s, "unknown suffix"))?;
        let magnitude = to_nanos(parts.int, parts.frac, dec_exp, bin_exp);
        Ok(Quantity {
            nanos: if parts.positive {
                magnitude
            } else {
                -magnitude
            },
            format,
        })
    }
}

/// Removes factors of `base` from `v`, up to `limit` times; returns the rest and the count.
fn remove_factors(mut v: i128, base: i128, limit: u32) -> (i128, u32) {
    let mut times = 0;
    while v != 0 && v % base == 0 && times < limit {
        v /= base;
        times += 1;
    }
    (v, times)
}

impl fmt::Display for Quantity {
    /// The canonical form apimachinery's `Quantity.String()` produces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let mut format = self.format;
        if format == QuantityFormat::BinarySI {
            let small = self.nanos.abs() < 1024 * NANOS_PER_UNIT;
            if small || self.nanos % NANOS_PER_UNIT != 0 {
                format = QuantityFormat::DecimalSI;
            }
        }
        if format == QuantityFormat::BinarySI {
            let (mantissa, times) = remove_factors(self.nanos / NANOS_PER_UNIT, 1024, 6);
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][times as usize];
            return write!(f, "{mantissa}{suffix}");
        }
        let (mut mantissa, times) = remove_factors(self.nanos, 10, u32::MAX);
        let mut exponent = times as i64 - 9;
        while exponent.rem_euclid(3) != 0 {
            mantissa *= 10;
            exponent -= 1;
        }
        if format == QuantityFormat::DecimalExponent {
            if exponent == 0 {
                return write!(f, "{mantissa}");
            }
            return write!(f, "{mantissa}e{exponent}");
        }
        let suffix = match exponent {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            18 => "E",
            // Unreachable within the apimachinery range; fall back to an exponent.
            _ => return write!(f, "{mantissa}e{exponent}"),
        };
        write!(f, "{mantissa}{suffix}")
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    /// Accepts a string, or (like apimachinery's `UnmarshalJSON`) a bare number.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as \"100Mi\" or \"500m\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity::from_value(v, QuantityFormat::DecimalSI))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                v.to_string().parse().map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                if !v.is_finite() {
                    return Err(E::custom("quantity must be a finite number"));
                }
                format!("{v}").parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn canonical_forms() {
        let cases = [
            ("0", "0"),
            ("0Mi", "0"),
            ("-0", "0"),
            ("100Mi", "100Mi"),
            ("1024Mi", "1Gi"),
            ("1.5Gi", "1536Mi"),
            ("1.5Ki", "1536"),
            ("0.5Ki", "512"),
            ("1023Ki", "1023Ki"),
            ("1Ei", "1Ei"),
            ("1000m", "1"),
            ("0.5", "500m"),
            ("1.5", "1500m"),
            ("1500", "1500"),
            ("1000", "1k"),
            ("1e3", "1e3"),
            ("1E3", "1e3"),
            ("1000e0", "1e3"),
            ("1.5e3", "1500"),
            ("12e6", "12e6"),
            ("1e-3", "1e-3"),
            ("100m", "100m"),
            ("1n", "1n"),
            ("1.5n", "2n"),
            ("0.1n", "1n"),
            ("1u", "1u"),
            ("10M", "10M"),
            ("1G", "1G"),
            ("+5", "5"),
            ("-5", "-5"),
            ("-1.5Gi", "-1536Mi"),
            ("-100m", "-100m"),
            ("200m", "200m"),
            ("10Mi", "10Mi"),
            ("007", "7"),
            ("1.", "1"),
            (".5", "500m"),
            ("9223372036854775807", "9223372036854775807"),
            ("1e100", "9223372036854775807"),
            ("100Ei", "9223372036854775807"),
        ];
        for (input, want) in cases {
            assert_eq!(q(input).to_string(), want, "{input}");
        }
    }

    #[test]
    fn values() {
        assert_eq!(q("100Mi").as_bytes(), 104_857_600);
        assert_eq!(q("100Mi").value(), 104_857_600);
        assert_eq!(q("1.5").milli_value(), 1500);
        assert_eq!(q("100m").value(), 1);
        assert_eq!(q("100m").milli_value(), 100);
        assert_eq!(q("1n").milli_value(), 1);
        assert_eq!(q("-100m").value(), -1);
        assert_eq!(q("-1").as_bytes(), 0);
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(q("1k").value(), 1000);
        assert_eq!(q("2Ki").value(), 2048);
        assert_eq!(q("100Ei").value(), i64::MAX);
        assert_eq!(q("1Gi"), q("1073741824"));
        assert!(q("1Gi") > q("1G"));
        assert_eq!(Quantity::from_bytes(1 << 20).to_string(), "1Mi");
        assert_eq!(Quantity::from_milli(500).to_string(), "500m");
        assert_eq!(
            Quantity::from_value(3, QuantityFormat::DecimalSI).to_string(),
            "3"
        );
    }

    #[test]
    fn apimachinery_leniency() {
        // These read as zero in apimachinery too.
        for s in [".", "-", "+", "Mi", "m"] {
            assert!(q(s).is_zero(), "{s}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", "10%", "1Q", "1K", "1.5.5", "1 Mi", " 1", "1Mi ", "1e", "1ee3", "1e3.5", "Gi1",
            "1iM", "abc", "1e+", "0x10", "١",
        ] {
            assert!(
                bad.parse::<Quantity>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn round_trips() {
        for s in [
            "0",
            "1",
            "100Mi",
            "1536Mi",
            "500m",
            "1e3",
            "12e6",
            "1n",
            "999u",
            "5Gi",
            "-3Ki",
            "1500",
            "2k",
            "7E",
            "1234567890123",
            "1Ei",
            "1e-3",
        ] {
            let once = q(s);
            let text = once.to_string();
            assert_eq!(text, s, "{s} is canonical");
            let again = q(&text);
            assert_eq!(again, once);
            assert_eq!(again.format(), once.format(), "{s}");
        }
        for s in ["1.5Gi", "0.5", "1000m", "1.5e3", "0.25Ki", "123456789n"] {
            let once = q(s);
            assert_eq!(q(&once.to_string()), once, "{s}");
        }
    }

    #[test]
    fn serde_accepts_strings_and_numbers() {
        let v: Quantity = serde_json::from_value(serde_json::json!("1Gi")).unwrap();
        assert_eq!(v.to_string(), "1Gi");
        let v: Quantity = serde_json::from_value(serde_json::json!(2)).unwrap();
        assert_eq!(v.to_string(), "2");
        let v: Quantity = serde_json::from_value(serde_json::json!(0.5)).unwrap();
        assert_eq!(v.to_string(), "500m");
        assert_eq!(
            serde_json::to_value(q("1.5Gi")).unwrap(),
            serde_json::json!("1536Mi")
        );
        assert!(serde_json::from_value::<Quantity>(serde_json::json!("10%")).is_err());
        assert!(serde_json::from_value::<Quantity>(serde_json::json!(true)).is_err());
    }
}
