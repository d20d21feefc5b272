//! The CLI's number parsers: each refuses a bad value with what the flag takes, in words
//! (clap prefixes the message with the value and the flag: `invalid value '0' for
//! '--epochs <EPOCHS>': a whole number of at least 1`).
//!
//! Flags parsed here also take values that start with `-` (`allow_negative_numbers`), so
//! `--lr -1` is refused as a negative learning rate rather than as an unknown flag `-1`.

use std::str::FromStr;

/// A whole number of at least 1 (`--epochs`, `--batch-size`, `--train-limit`, …).
///
/// # Errors
/// A value that is not a whole number, below 1, or beyond the type's range.
pub fn at_least_one<T>(value: &str) -> Result<T, String>
where
    T: FromStr + TryFrom<u128> + std::fmt::Display + num_bound::Max,
{
    let n = whole(value, "a whole number of at least 1")?;
    if n == 0 {
        return Err("a whole number of at least 1 (0 would do nothing)".into());
    }
    T::try_from(n).map_err(|_| format!("too large: at most {}", T::MAX_VALUE))
}

/// A whole number from 0 (`--seed`, `--threads`).
///
/// # Errors
/// A value that is not a whole number, negative, or beyond the type's range.
pub fn whole_number<T>(value: &str) -> Result<T, String>
where
    T: FromStr + TryFrom<u128> + std::fmt::Display + num_bound::Max,
{
    let n = whole(value, "a whole number from 0")?;
    T::try_from(n).map_err(|_| format!("too large: at most {}", T::MAX_VALUE))
}

/// `value` as a non-negative whole number; `what` says what is wanted.
fn whole(value: &str, what: &str) -> Result<u128, String> {
    let trimmed = value.trim();
    if let Ok(n) = trimmed.parse::<u128>() {
        return Ok(n);
    }
    if trimmed.starts_with('-') && trimmed[1..].parse::<f64>().is_ok() {
        return Err(format!("{what}, not a negative number"));
    }
    if trimmed.parse::<f64>().is_ok() {
        return Err(format!("{what}, not a fraction"));
    }
    Err(what.to_owned())
}

/// A positive, finite number (`--lr`).
///
/// # Errors
/// Zero, a negative number, NaN, infinity or not a number.
pub fn positive_number(value: &str) -> Result<f32, String> {
    let x = number(value, "a positive number such as 0.001")?;
    if x > 0.0 {
        Ok(x)
    } else {
        Err("a positive number such as 0.001 (it must be above 0)".into())
    }
}

/// A finite number of at least 0 (`--l2`, `--l1`).
///
/// # Errors
/// A negative number, NaN, infinity or not a number.
pub fn non_negative_number(value: &str) -> Result<f32, String> {
    let x = number(value, "a number of at least 0 such as 0.0001")?;
    if x >= 0.0 {
        Ok(x)
    } else {
        Err("a number of at least 0 such as 0.0001, not a negative one".into())
    }
}

/// `value` as a finite f32; `what` says what is wanted.
fn number(value: &str, what: &str) -> Result<f32, String> {
    let x: f32 = value.trim().parse().map_err(|_| what.to_owned())?;
    if x.is_finite() {
        Ok(x)
    } else {
        Err(format!("{what}, not {value}"))
    }
}

/// A size in bytes: a whole number with an optional binary suffix `K`, `M`, `G` or `T`
/// (`512M`, `8G`, `1.5G`; a trailing `B` or `iB` is allowed).
///
/// # Errors
/// Not a size, or zero.
pub fn byte_size(value: &str) -> Result<u64, String> {
    const WHAT: &str = "a size in bytes such as 512M, 8G or 16000000000";
    let upper = value.trim().to_ascii_uppercase();
    let digits = upper
        .trim_end_matches("IB")
        .trim_end_matches('B')
        .trim_end();
    let (number, unit) = match digits.chars().last() {
        Some('K') => (&digits[..digits.len() - 1], 1u64 << 10),
        Some('M') => (&digits[..digits.len() - 1], 1 << 20),
        Some('G') => (&digits[..digits.len() - 1], 1 << 30),
        Some('T') => (&digits[..digits.len() - 1], 1 << 40),
        _ => (digits, 1),
    };
    let x: f64 = number.trim().parse().map_err(|_| WHAT.to_owned())?;
    if !(x.is_finite() && x > 0.0) {
        return Err(format!("{WHAT}, above 0"));
    }
    let bytes = x * unit as f64;
    if bytes >= u64::MAX as f64 {
        return Err(format!("{WHAT}: {value} is too large"));
    }
    Ok(bytes as u64)
}

/// `bytes` in the units of [`byte_size`], rounded (`8589934592` → `8.0 GiB`).
pub fn show_bytes(bytes: u128) -> String {
    const UNITS: [(&str, u128); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, unit) in UNITS {
        if bytes >= unit {
            return format!("{:.1} {name}", bytes as f64 / unit as f64);
        }
    }
    format!("{bytes} bytes")
}

/// The largest value of an integer type, for the "too large" message.
pub mod num_bound {
    /// An integer type's largest value.
    pub trait Max {
        /// `Self::MAX`.
        const MAX_VALUE: u128;
    }
    impl Max for u32 {
        const MAX_VALUE: u128 = u32::MAX as u128;
    }
    impl Max for u64 {
        const MAX_VALUE: u128 = u64::MAX as u128;
    }
    impl Max for usize {
        const MAX_VALUE: u128 = usize::MAX as u128;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_say_what_they_take() {
        assert_eq!(at_least_one::<u32>("3"), Ok(3));
        assert!(at_least_one::<u32>("0").unwrap_err().contains("at least 1"));
        assert!(at_least_one::<u32>("-1").unwrap_err().contains("negative"));
        assert!(at_least_one::<u32>("1.5").unwrap_err().contains("fraction"));
        assert!(at_least_one::<u32>("99999999999")
            .unwrap_err()
            .contains("at most 4294967295"));
        assert_eq!(whole_number::<u64>("0"), Ok(0));
        assert!(whole_number::<u64>("-5").unwrap_err().contains("negative"));
    }

    #[test]
    fn numbers_must_be_finite_and_in_range() {
        assert_eq!(positive_number("0.01"), Ok(0.01));
        for bad in ["0", "-1", "nan", "inf", "fast"] {
            assert!(positive_number(bad)
                .unwrap_err()
                .contains("positive number"));
        }
        assert_eq!(non_negative_number("0"), Ok(0.0));
        assert!(non_negative_number("-0.1").is_err());
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(byte_size("512M"), Ok(512 << 20));
        assert_eq!(byte_size("8g"), Ok(8 << 30));
        assert_eq!(byte_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(byte_size("1000"), Ok(1000));
        assert!(byte_size("0").is_err());
        assert!(byte_size("lots").is_err());
        assert_eq!(show_bytes(8 << 30), "8.0 GiB");
    }
}
