//! Kubernetes resource quantities (`500m`, `2Gi`, `1.5`, `1e3`, `128974848`).
//!
//! Requests, limits, capacity and allocatable are all quantities. The scheduler, the kubelet
//! admission check and validation must agree on their numeric value, so parsing lives here once.
//! Values are held exactly in milli-units; anything finer than a milli-unit is rounded up (toward
//! +infinity), as the API server does when it normalises requests.

use std::collections::BTreeMap;
use std::fmt;

/// A parsed quantity, held exactly in milli-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quantity {
    milli: i128,
}

/// Why a quantity string was rejected. The messages are the API server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The text does not have the shape `<signed number><suffix>`.
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    Format,
    /// The shape is right but the suffix is not a known one (`1K`, `1ki`, `1e`).
    #[error("unable to parse quantity's suffix")]
    Suffix,
    /// The number is too large (or too precise) to be held in milli-units.
    #[error("unable to parse quantity's numeric part")]
    Numeric,
}

/// The multiplier a suffix stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Multiplier {
    /// `10^n` (decimal SI suffixes and `eN` exponents).
    Pow10(i32),
    /// `2^n` (binary SI suffixes).
    Pow2(u32),
}

/// The pieces of a quantity string before any arithmetic.
struct Parts<'a> {
    negative: bool,
    /// Integer digits with leading zeros removed (may be empty).
    int_digits: &'a str,
    /// Digits after the decimal point (may be empty).
    frac_digits: &'a str,
    suffix: &'a str,
}

const BINARY_SUFFIXES: [(&str, u32); 6] = [
    ("Ki", 10),
    ("Mi", 20),
    ("Gi", 30),
    ("Ti", 40),
    ("Pi", 50),
    ("Ei", 60),
];

const DECIMAL_SUFFIXES: [(&str, i32); 10] = [
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("", 0),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

/// Characters that may start a suffix (everything the exponent/SI suffixes are made of).
const SUFFIX_CHARS: &str = "eEinumkKMGTP";

impl Quantity {
    /// Parses Kubernetes quantity syntax: an optional sign, a decimal number, and an optional
    /// suffix (binary SI `Ki`..`Ei`, decimal SI `n u m k M G T P E`, or an exponent `e3`/`E-2`).
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        if s.is_empty() {
            return Err(QuantityError::Format);
        }
        let parts = split(s)?;
        let multiplier = interpret_suffix(parts.suffix)?;
        let magnitude = ceil_or_floor_milli(&parts, multiplier)?;
        Ok(Quantity {
            milli: if parts.negative {
                -magnitude
            } else {
                magnitude
            },
        })
    }

    pub fn from_milli(milli: i128) -> Quantity {
        Quantity { milli }
    }

    /// A quantity of `units` whole units (bytes, cores, pods).
    pub fn from_units(units: i128) -> Quantity {
        Quantity {
            milli: units.saturating_mul(1000),
        }
    }

    /// The value in milli-units (cpu: millicores), rounded up.
    pub fn milli_value(&self) -> i128 {
        self.milli
    }

    /// The value in whole units (memory: bytes), rounded up.
    pub fn value(&self) -> i128 {
        (self.milli + 999).div_euclid(1000)
    }

    pub fn is_zero(&self) -> bool {
        self.milli == 0
    }
}

impl std::ops::Add for Quantity {
    type Output = Quantity;
    fn add(self, rhs: Quantity) -> Quantity {
        Quantity {
            milli: self.milli.saturating_add(rhs.milli),
        }
    }
}

impl std::ops::Sub for Quantity {
    type Output = Quantity;
    fn sub(self, rhs: Quantity) -> Quantity {
        Quantity {
            milli: self.milli.saturating_sub(rhs.milli),
        }
    }
}

impl std::ops::AddAssign for Quantity {
    fn add_assign(&mut self, rhs: Quantity) {
        *self = *self + rhs;
    }
}

impl std::ops::SubAssign for Quantity {
    fn sub_assign(&mut self, rhs: Quantity) {
        *self = *self - rhs;
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Quantity, QuantityError> {
        Quantity::parse(s)
    }
}

/// Canonical text: `500m` for fractional values, a binary suffix (`2Gi`, `123Mi`) for whole
/// multiples of 1024 that are not also multiples of 1000, otherwise the largest decimal suffix
/// that keeps the number whole (`2k`, `5M`, `1500`, `0`). The text parses back to the same value.
impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.milli % 1000 != 0 {
            return write!(f, "{}m", self.milli);
        }
        let units = self.milli / 1000;
        if units == 0 {
            return f.write_str("0");
        }
        if units % 1024 == 0 && units % 1000 != 0 {
            let (mantissa, suffix) =
                largest_suffix(units, 1024, &["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]);
            return write!(f, "{mantissa}{suffix}");
        }
        let (mantissa, suffix) = largest_suffix(units, 1000, &["k", "M", "G", "T", "P", "E"]);
        write!(f, "{mantissa}{suffix}")
    }
}

/// Divides `units` by `base` as often as it stays whole (at most `suffixes.len()` times).
fn largest_suffix(mut units: i128, base: i128, suffixes: &[&'static str]) -> (i128, &'static str) {
    let mut suffix = "";
    for s in suffixes {
        if units % base != 0 {
            break;
        }
        units /= base;
        suffix = s;
    }
    (units, suffix)
}

/// Splits `s` into sign, digits and suffix, following the API server's scanner (which accepts
/// a few degenerate forms such as `1.`, `.5`, `-` and `.` as zero-ish numbers).
fn split(s: &str) -> Result<Parts<'_>, QuantityError> {
    let bytes = s.as_bytes();
    let mut pos = 0;
    let mut negative = false;
    match bytes.first() {
        Some(b'-') => {
            negative = true;
            pos = 1;
        }
        Some(b'+') => pos = 1,
        _ => {}
    }
    while pos < bytes.len() && bytes[pos] == b'0' {
        pos += 1;
    }
    if pos == bytes.len() {
        // Only a sign and zeros: the value is zero.
        return Ok(Parts {
            negative,
            int_digits: "",
            frac_digits: "",
            suffix: "",
        });
    }
    let int_start = pos;
    pos = skip_digits(bytes, pos);
    let int_digits = &s[int_start..pos];
    let mut frac_digits = "";
    if pos < bytes.len() && bytes[pos] == b'.' {
        let frac_start = pos + 1;
        pos = skip_digits(bytes, frac_start);
        frac_digits = &s[frac_start..pos];
    }
    let suffix_start = pos;
    while pos < bytes.len() && SUFFIX_CHARS.as_bytes().contains(&bytes[pos]) {
        pos += 1;
    }
    if pos < bytes.len() && (bytes[pos] == b'-' || bytes[pos] == b'+') {
        pos += 1;
    }
    pos = skip_digits(bytes, pos);
    if pos != bytes.len() {
        return Err(QuantityError::Format);
    }
    Ok(Parts {
        negative,
        int_digits,
        frac_digits,
        suffix: &s[suffix_start..],
    })
}

fn skip_digits(bytes: &[u8], mut pos: usize) -> usize {
    while pos < bytes.len() && bytes[pos].is_ascii_digit() {
        pos += 1;
    }
    pos
}

/// Maps a suffix to its multiplier.
fn interpret_suffix(suffix: &str) -> Result<Multiplier, QuantityError> {
    if let Some((_, p)) = BINARY_SUFFIXES.iter().find(|(s, _)| *s == suffix) {
        return Ok(Multiplier::Pow2(*p));
    }
    if let Some((_, p)) = DECIMAL_SUFFIXES.iter().find(|(s, _)| *s == suffix) {
        return Ok(Multiplier::Pow10(*p));
    }
    let exponent = suffix
        .strip_prefix('e')
        .or_else(|| suffix.strip_prefix('E'))
        .filter(|rest| !rest.is_empty())
        .ok_or(QuantityError::Suffix)?;
    let exponent: i64 = exponent.parse().map_err(|_| QuantityError::Suffix)?;
    // Anything beyond this is far outside what milli-units in an i128 can hold.
    let exponent = i32::try_from(exponent.clamp(-1000, 1000)).unwrap_or(0);
    Ok(Multiplier::Pow10(exponent))
}

/// The absolute value in milli-units: rounded up for positive quantities and down for negative
/// ones (so that the signed result is always rounded toward +infinity).
fn ceil_or_floor_milli(parts: &Parts<'_>, multiplier: Multiplier) -> Result<i128, QuantityError> {
    // digits × 10^exp10 × 2^exp2 is the absolute value in milli-units.
    let digits = format!("{}{}", parts.int_digits, parts.frac_digits);
    let digits = digits.trim_start_matches('0');
    let trimmed = digits.trim_end_matches('0');
    let frac_len = i64::try_from(parts.frac_digits.len()).map_err(|_| QuantityError::Numeric)?;
    let trailing =
        i64::try_from(digits.len() - trimmed.len()).map_err(|_| QuantityError::Numeric)?;
    if trimmed.is_empty() {
        return Ok(0);
    }
    let (mut exp10, exp2) = match multiplier {
        Multiplier::Pow10(p) => (i64::from(p), 0u32),
        Multiplier::Pow2(p) => (0, p),
    };
    exp10 += 3 - frac_len + trailing;
    let mantissa: i128 = trimmed.parse().map_err(|_| QuantityError::Numeric)?;
    let mantissa = mantissa
        .checked_mul(1i128 << exp2)
        .ok_or(QuantityError::Numeric)?;
    if exp10 >= 0 {
        let scale = pow10(exp10).ok_or(QuantityError::Numeric)?;
        return mantissa.checked_mul(scale).ok_or(QuantityError::Numeric);
    }
    let magnitude = match pow10(-exp10) {
        Some(divisor) => {
            let whole = mantissa / divisor;
            let exact = mantissa % divisor == 0;
            (whole, exact)
        }
        // The divisor exceeds i128, so the value is a non-zero fraction of one milli-unit.
        None => (0, false),
    };
    Ok(match magnitude {
        (whole, true) => whole,
        (whole, false) if parts.negative => whole,
        (whole, false) => whole + 1,
    })
}

fn pow10(exp: i64) -> Option<i128> {
    let exp = u32::try_from(exp).ok()?;
    10i128.checked_pow(exp)
}

/// Parses every value of a k8s-openapi resource list (requests, limits, capacity).
/// On failure returns the offending key with the error.
pub fn parse_resource_list(
    map: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) -> Result<BTreeMap<String, Quantity>, (String, QuantityError)> {
    map.iter()
        .map(|(k, v)| match Quantity::parse(&v.0) {
            Ok(q) => Ok((k.clone(), q)),
            Err(e) => Err((k.clone(), e)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn milli(s: &str) -> i128 {
        Quantity::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .milli_value()
    }

    #[test]
    fn plain_numbers() {
        assert_eq!(milli("0"), 0);
        assert_eq!(milli("1"), 1000);
        assert_eq!(milli("2"), 2000);
        assert_eq!(milli("1.5"), 1500);
        assert_eq!(milli(".5"), 500);
        assert_eq!(milli("1."), 1000);
        assert_eq!(milli("007"), 7000);
        assert_eq!(milli("+3"), 3000);
        assert_eq!(milli("-3"), -3000);
        assert_eq!(milli("128974848"), 128_974_848_000);
    }

    #[test]
    fn decimal_si() {
        assert_eq!(milli("500m"), 500);
        assert_eq!(milli("100m"), 100);
        assert_eq!(milli("1k"), 1_000_000);
        assert_eq!(milli("1M"), 1_000_000_000);
        assert_eq!(milli("1G"), 1_000_000_000_000);
        assert_eq!(milli("1T"), 1_000_000_000_000_000);
        assert_eq!(milli("1P"), 1_000_000_000_000_000_000);
        assert_eq!(milli("1E"), 1_000_000_000_000_000_000_000);
        assert_eq!(milli("129M"), 129_000_000_000);
        assert_eq!(milli("1.5G"), 1_500_000_000_000);
        assert_eq!(milli("1000000u"), 1000);
        assert_eq!(milli("1000000000n"), 1000);
    }

    #[test]
    fn binary_si() {
        assert_eq!(milli("1Ki"), 1024 * 1000);
        assert_eq!(milli("2Gi"), 2 * (1 << 30) * 1000);
        assert_eq!(milli("123Mi"), 123 * (1 << 20) * 1000);
        assert_eq!(milli("1.5Gi"), 1_610_612_736_000);
        assert_eq!(milli("1Ei"), (1i128 << 60) * 1000);
        assert_eq!(milli("0.5Ki"), 512_000);
    }

    #[test]
    fn exponents() {
        assert_eq!(milli("1e3"), 1_000_000);
        assert_eq!(milli("1E3"), 1_000_000);
        assert_eq!(milli("1e+3"), 1_000_000);
        assert_eq!(milli("12E-2"), 120);
        assert_eq!(milli("1e-3"), 1);
        assert_eq!(milli("1.5e1"), 15_000);
    }

    #[test]
    fn rounds_up_toward_positive_infinity() {
        assert_eq!(milli("1n"), 1);
        assert_eq!(milli("1u"), 1);
        assert_eq!(milli("0.0001"), 1);
        assert_eq!(milli("1.0001"), 1001);
        assert_eq!(milli("1e-50"), 1);
        assert_eq!(milli("-1n"), 0);
        assert_eq!(milli("-1.0001"), -1000);
        assert_eq!(milli("0n"), 0);
        assert_eq!(milli("0.000"), 0);
    }

    #[test]
    fn value_rounds_up() {
        assert_eq!(Quantity::parse("1500m").unwrap().value(), 2);
        assert_eq!(Quantity::parse("2Gi").unwrap().value(), 2 << 30);
        assert_eq!(Quantity::parse("1m").unwrap().value(), 1);
    }

    #[test]
    fn api_server_quirks_accepted() {
        assert_eq!(milli("-"), 0);
        assert_eq!(milli("+"), 0);
        assert_eq!(milli("."), 0);
        assert_eq!(milli("0Gi"), 0);
    }

    #[test]
    fn errors() {
        assert_eq!(Quantity::parse(""), Err(QuantityError::Format));
        assert_eq!(Quantity::parse("abc"), Err(QuantityError::Format));
        assert_eq!(Quantity::parse("1x"), Err(QuantityError::Format));
        assert_eq!(Quantity::parse("1 Gi"), Err(QuantityError::Format));
        assert_eq!(Quantity::parse("1Gi "), Err(QuantityError::Format));
        assert_eq!(Quantity::parse("1.2.3"), Err(QuantityError::Format));
        assert_eq!(Quantity::parse("1Mi5x"), Err(QuantityError::Format));
        assert_eq!(Quantity::parse("1K"), Err(QuantityError::Suffix));
        assert_eq!(Quantity::parse("1ki"), Err(QuantityError::Suffix));
        assert_eq!(Quantity::parse("1e"), Err(QuantityError::Suffix));
        assert_eq!(Quantity::parse("1Mi5"), Err(QuantityError::Suffix));
        assert_eq!(Quantity::parse("1e1000"), Err(QuantityError::Numeric));
        assert_eq!(
            QuantityError::Suffix.to_string(),
            "unable to parse quantity's suffix"
        );
    }

    #[test]
    fn display_round_trips() {
        for (input, shown) in [
            ("500m", "500m"),
            ("0.1", "100m"),
            ("2", "2"),
            ("0", "0"),
            ("1500", "1500"),
            ("2000", "2k"),
            ("5M", "5M"),
            ("2Gi", "2Gi"),
            ("128974848", "123Mi"),
            ("1024", "1Ki"),
            ("1.5Gi", "1536Mi"),
            ("-2", "-2"),
            ("-1500m", "-1500m"),
        ] {
            let q = Quantity::parse(input).unwrap();
            assert_eq!(q.to_string(), shown, "{input}");
            assert_eq!(Quantity::parse(shown).unwrap(), q, "{input}");
        }
    }

    #[test]
    fn arithmetic() {
        let a = Quantity::parse("250m").unwrap();
        let b = Quantity::parse("1").unwrap();
        assert_eq!((a + b).milli_value(), 1250);
        assert_eq!((b - a).milli_value(), 750);
        assert!(a < b);
    }

    #[test]
    fn resource_list() {
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
        let mut m = BTreeMap::new();
        m.insert("cpu".to_string(), Q("250m".into()));
        m.insert("memory".to_string(), Q("64Mi".into()));
        let parsed = parse_resource_list(&m).unwrap();
        assert_eq!(parsed["cpu"].milli_value(), 250);
        assert_eq!(parsed["memory"].value(), 64 << 20);
        m.insert("nvidia.com/gpu".to_string(), Q("1z".into()));
        assert_eq!(
            parse_resource_list(&m),
            Err(("nvidia.com/gpu".to_string(), QuantityError::Format))
        );
    }
}
