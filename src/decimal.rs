//! Exact decimal numbers, as JSON carries them.
//!
//! busbar keeps every number as the text it arrived as (serde_json's
//! `arbitrary_precision`), from the request body through the event store
//! and the mapping to the target column. [`Decimal`] reads that text as an
//! exact value — a sign, significant digits and a power of ten — so that
//! busbar can tell whether a column holds a number without rounding it,
//! and compare numbers by value (`1.50` equals `1.5`, `1e2` equals `100`).
//!
//! Pure and exact: floating point appears only where the question is
//! about floating point ([`Decimal::to_f64_exactly`]).

use std::cmp::Ordering;
use std::fmt;

/// The most digits before the decimal point PostgreSQL's `numeric` (and
/// so `jsonb`, which stores numbers as `numeric`) can hold.
pub const NUMERIC_MAX_INTEGER_DIGITS: i64 = 131_072;
/// The most digits after the decimal point `numeric` can hold.
pub const NUMERIC_MAX_SCALE: i64 = 16_383;
/// PostgreSQL refuses a written exponent of this size or more.
const NUMERIC_MAX_EXPONENT: i64 = i32::MAX as i64 / 2;
/// Exponents are clamped to this when parsed, far beyond every limit, so
/// that arithmetic on them cannot overflow.
const EXPONENT_CLAMP: i64 = 1 << 50;

/// An exact decimal number.
#[derive(Debug, Clone)]
pub struct Decimal {
    negative: bool,
    /// Significant digits, without leading or trailing zeros; empty for 0.
    digits: String,
    /// The power of ten of the last significant digit:
    /// the value is `digits × 10^exponent`.
    exponent: i64,
    /// Digits after the decimal point as written (`1.50` has 2, `1e-3` has
    /// 3, `15e1` has 0): what PostgreSQL's `numeric` keeps as the scale.
    written_scale: i64,
    /// The exponent as written (`1e400` has 400), for PostgreSQL's limit.
    written_exponent: i64,
}

/// Why a number is not exactly a floating-point value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FloatMisfit {
    /// Beyond the type's largest finite value.
    OutOfRange,
    /// Not zero, but so small the type would store 0.
    Underflow,
    /// Between two values of the type: it would be stored as this one.
    Rounded(f64),
}

impl Decimal {
    /// Reads a decimal number: an optional sign, digits with at most one
    /// decimal point (`.5` and `5.` are allowed), and an optional exponent.
    /// No spaces, no `NaN` or `Infinity`: the caller trims.
    pub fn parse(text: &str) -> Option<Decimal> {
        let (negative, body) = match text.as_bytes().first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let (mantissa, exponent_text) = match body.find(['e', 'E']) {
            Some(at) => (&body[..at], Some(&body[at + 1..])),
            None => (body, None),
        };
        let (integer, fraction) = match mantissa.split_once('.') {
            Some((integer, fraction)) => (integer, fraction),
            None => (mantissa, ""),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if integer.len() + fraction.len() == 0 || !all_digits(integer) || !all_digits(fraction) {
            return None;
        }
        let written_exponent = match exponent_text {
            None => 0,
            Some(text) => {
                let (sign, digits) = match text.as_bytes().first()? {
                    b'-' => (-1, &text[1..]),
                    b'+' => (1, &text[1..]),
                    _ => (1, text),
                };
                if digits.is_empty() || !all_digits(digits) {
                    return None;
                }
                let magnitude = digits
                    .trim_start_matches('0')
                    .parse::<i64>()
                    .unwrap_or(if digits.trim_start_matches('0').is_empty() {
                        0
                    } else {
                        EXPONENT_CLAMP
                    })
                    .min(EXPONENT_CLAMP);
                sign * magnitude
            }
        };
        let fraction_len = fraction.len() as i64;
        let all = format!("{integer}{fraction}");
        let without_trailing = all.trim_end_matches('0');
        let trailing = (all.len() - without_trailing.len()) as i64;
        let digits = without_trailing.trim_start_matches('0').to_owned();
        let exponent = if digits.is_empty() {
            0
        } else {
            written_exponent - fraction_len + trailing
        };
        Some(Decimal {
            negative: negative && !digits.is_empty(),
            digits,
            exponent,
            written_scale: (fraction_len - written_exponent).max(0),
            written_exponent,
        })
    }

    /// The value of a JSON number. Every JSON number parses; a number made
    /// in code (`from_f64`) too.
    pub fn of(number: &serde_json::Number) -> Decimal {
        Decimal::parse(&number.to_string()).expect("a JSON number is a decimal number")
    }

    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// Whether the value is a whole number (`1e2` and `4.0` are).
    pub fn is_integer(&self) -> bool {
        self.is_zero() || self.exponent >= 0
    }

    /// How many significant digits it has (`0.00120` has 2).
    pub fn significant_digits(&self) -> i64 {
        self.digits.len() as i64
    }

    /// How many digits stand before the decimal point, leading zeros aside
    /// (`123.4` has 3, `0.5` has 0).
    pub fn integer_digits(&self) -> i64 {
        if self.is_zero() {
            0
        } else {
            (self.digits.len() as i64 + self.exponent).max(0)
        }
    }

    /// How many digits after the decimal point it needs, trailing zeros
    /// aside (`1.50` needs 1, `100` needs 0).
    pub fn fraction_digits(&self) -> i64 {
        (-self.exponent).max(0)
    }

    /// The power of ten of the last significant digit (`1.25` → -2,
    /// `1200` → 2; 0 for zero).
    pub fn last_digit_power(&self) -> i64 {
        self.exponent
    }

    /// The whole number, when it is one and fits an `i128`.
    pub fn to_i128(&self) -> Option<i128> {
        if !self.is_integer() || self.integer_digits() > 39 {
            return None;
        }
        let zeros = usize::try_from(self.exponent).ok()?;
        let text = format!(
            "{}{}{}",
            if self.negative { "-" } else { "" },
            if self.is_zero() { "0" } else { &self.digits },
            "0".repeat(if self.is_zero() { 0 } else { zeros })
        );
        text.parse().ok()
    }

    /// The nearest `f64` (infinite or 0 when out of its range).
    pub fn to_f64(&self) -> f64 {
        self.scientific().parse().unwrap_or(f64::NAN)
    }

    /// The `f64` that is exactly this number, as far as decimal text goes:
    /// reading the double back gives this number again. `0.1` is one; a
    /// number with more digits than a double keeps is not.
    pub fn to_f64_exactly(&self) -> Result<f64, FloatMisfit> {
        let float = self.to_f64();
        Self::check_float(self, float, float.is_finite(), float == 0.0, || {
            format!("{float:e}")
        })
    }

    /// As [`Decimal::to_f64_exactly`], for a 32-bit float (`real`).
    pub fn to_f32_exactly(&self) -> Result<f32, FloatMisfit> {
        let float: f32 = self.scientific().parse().unwrap_or(f32::NAN);
        Self::check_float(
            self,
            f64::from(float),
            float.is_finite(),
            float == 0.0,
            || format!("{float:e}"),
        )
        .map(|_| float)
    }

    fn check_float(
        &self,
        float: f64,
        finite: bool,
        zero: bool,
        shortest: impl Fn() -> String,
    ) -> Result<f64, FloatMisfit> {
        if !finite {
            return Err(FloatMisfit::OutOfRange);
        }
        if zero {
            return if self.is_zero() {
                Ok(float)
            } else {
                Err(FloatMisfit::Underflow)
            };
        }
        match Decimal::parse(&shortest()) {
            Some(back) if back == *self => Ok(float),
            _ => Err(FloatMisfit::Rounded(float)),
        }
    }

    /// Why PostgreSQL's `numeric` (and `jsonb`) cannot store this number,
    /// or `None` when it can.
    pub fn numeric_misfit(&self) -> Option<String> {
        if self.written_exponent.abs() >= NUMERIC_MAX_EXPONENT {
            return Some(format!(
                "its exponent is beyond what a database can store (at most {NUMERIC_MAX_INTEGER_DIGITS} digits before the decimal point and {NUMERIC_MAX_SCALE} after)"
            ));
        }
        if self.integer_digits() > NUMERIC_MAX_INTEGER_DIGITS {
            return Some(format!(
                "{} digits before the decimal point, more than the {NUMERIC_MAX_INTEGER_DIGITS} a database can store",
                self.integer_digits()
            ));
        }
        if self.written_scale > NUMERIC_MAX_SCALE {
            return Some(format!(
                "{} digits after the decimal point, more than the {NUMERIC_MAX_SCALE} a database can store",
                self.written_scale
            ));
        }
        None
    }

    /// `[-]d.ddd…e±n`, for parsing as a float.
    fn scientific(&self) -> String {
        if self.is_zero() {
            return "0".to_owned();
        }
        format!(
            "{}0.{}e{}",
            if self.negative { "-" } else { "" },
            self.digits,
            self.exponent + self.digits.len() as i64
        )
    }
}

impl PartialEq for Decimal {
    /// Equal values, however written: `1.50 == 1.5`, `1e2 == 100`.
    fn eq(&self, other: &Self) -> bool {
        self.negative == other.negative
            && self.digits == other.digits
            && (self.is_zero() || self.exponent == other.exponent)
    }
}

impl Eq for Decimal {}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        let sign = |d: &Decimal| match (d.is_zero(), d.negative) {
            (true, _) => 0,
            (false, true) => -1,
            (false, false) => 1,
        };
        match sign(self).cmp(&sign(other)) {
            Ordering::Equal if sign(self) == 0 => Ordering::Equal,
            Ordering::Equal => {
                // Same sign: compare magnitudes, by the position of the
                // first digit, then digit by digit.
                let magnitude = (self.digits.len() as i64 + self.exponent)
                    .cmp(&(other.digits.len() as i64 + other.exponent))
                    .then_with(|| {
                        let a = self.digits.bytes().chain(std::iter::repeat(b'0'));
                        let b = other.digits.bytes().chain(std::iter::repeat(b'0'));
                        let len = self.digits.len().max(other.digits.len());
                        a.take(len).cmp(b.take(len))
                    });
                if self.negative {
                    magnitude.reverse()
                } else {
                    magnitude
                }
            }
            unequal => unequal,
        }
    }
}

impl fmt::Display for Decimal {
    /// The value in scientific notation, `-1.2345e+20`, or `0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0");
        }
        let (first, rest) = self.digits.split_at(1);
        let exponent = self.exponent + self.digits.len() as i64 - 1;
        write!(
            f,
            "{}{first}{}{rest}e{exponent}",
            if self.negative { "-" } else { "" },
            if rest.is_empty() { "" } else { "." }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        Decimal::parse(text).unwrap_or_else(|| panic!("{text} parses"))
    }

    #[test]
    fn numbers_are_compared_by_value_whatever_their_notation() {
        assert_eq!(d("1.50"), d("1.5"));
        assert_eq!(d("1e2"), d("100"));
        assert_eq!(d("100"), d("1.00E+2"));
        assert_eq!(d("-0.0"), d("0"));
        assert_eq!(d("0.001"), d("1e-3"));
        assert_ne!(d("18446744073709551617"), d("18446744073709551616"));
        assert!(d("18446744073709551617") > d("18446744073709551616"));
        assert!(d("1e-400") > d("0"));
        assert!(d("-1e-400") < d("0"));
        assert!(d("-2") < d("-1.5"));
        assert!(d("0.15") < d("0.2"));
        assert!(d("99") < d("1e2"));
    }

    #[test]
    fn digits_before_and_after_the_point() {
        let n = d("123.4500");
        assert_eq!(
            (n.integer_digits(), n.fraction_digits(), n.written_scale),
            (3, 2, 4)
        );
        let n = d("0.00120");
        assert_eq!(
            (
                n.integer_digits(),
                n.fraction_digits(),
                n.significant_digits()
            ),
            (0, 4, 2)
        );
        let n = d("1e400");
        assert_eq!(
            (n.integer_digits(), n.fraction_digits(), n.written_scale),
            (401, 0, 0)
        );
        let n = d("1e-400");
        assert_eq!(
            (n.integer_digits(), n.fraction_digits(), n.written_scale),
            (0, 400, 400)
        );
        assert!(d("4.0").is_integer() && d("1e2").is_integer() && !d("1.5").is_integer());
    }

    #[test]
    fn malformed_numbers_do_not_parse() {
        for bad in [
            "", ".", "-", "1,5", "1e", "1e+", "abc", "--1", "1.2.3", "NaN", "inf", " 1", "0x10",
            "1_000",
        ] {
            assert!(Decimal::parse(bad).is_none(), "{bad}");
        }
        for good in [
            "1",
            "-1.5",
            "+.5",
            "1.",
            "1e10",
            "1.5E-3",
            "0e99999999999999999999999",
        ] {
            assert!(Decimal::parse(good).is_some(), "{good}");
        }
    }

    #[test]
    fn whole_numbers_convert_exactly() {
        assert_eq!(d("1e2").to_i128(), Some(100));
        assert_eq!(d("-9223372036854775808").to_i128(), Some(i64::MIN as i128));
        assert_eq!(
            d("18446744073709551617").to_i128(),
            Some(18446744073709551617)
        );
        assert_eq!(d("1.5").to_i128(), None);
        assert_eq!(d("1e400").to_i128(), None);
    }

    #[test]
    fn floats_are_exact_only_when_reading_them_back_gives_the_number() {
        assert_eq!(d("0.1").to_f64_exactly(), Ok(0.1));
        assert_eq!(
            d("0.30000000000000004").to_f64_exactly(),
            Ok(0.30000000000000004)
        );
        assert_eq!(d("1e-310").to_f64_exactly(), Ok(1e-310));
        assert_eq!(d("1e400").to_f64_exactly(), Err(FloatMisfit::OutOfRange));
        assert_eq!(d("1e-400").to_f64_exactly(), Err(FloatMisfit::Underflow));
        assert_eq!(
            d("18446744073709551617").to_f64_exactly(),
            Err(FloatMisfit::Rounded(18446744073709551616.0))
        );
        assert_eq!(d("0.1").to_f32_exactly(), Ok(0.1f32));
        assert!(d("16777217").to_f32_exactly().is_err());
        assert!(d("1e39").to_f32_exactly().is_err());
    }

    #[test]
    fn what_postgresql_numeric_can_store() {
        assert_eq!(d("1e131071").numeric_misfit(), None);
        assert_eq!(d("1e-16383").numeric_misfit(), None);
        assert_eq!(d("0e131073").numeric_misfit(), None);
        assert!(d("1e131072").numeric_misfit().is_some());
        assert!(d("1.5e-16383").numeric_misfit().is_some());
        assert!(
            d(&format!("1.{}", "0".repeat(16384)))
                .numeric_misfit()
                .is_some()
        );
        assert!(d("0e2147483648").numeric_misfit().is_some());
    }

    #[test]
    fn display_is_scientific() {
        assert_eq!(
            d("18446744073709551617").to_string(),
            "1.8446744073709551617e19"
        );
        assert_eq!(d("-0.00120").to_string(), "-1.2e-3");
        assert_eq!(d("0.0").to_string(), "0");
    }
}
