//! Money and identity primitives shared by every layer.
//!
//! Money is always an integer count of minor units (fen for CNY). There are no floats anywhere
//! near money in dzero; every arithmetic operation on [`Amount`] is checked.

use std::fmt;

/// An amount of money in minor units of some currency (fen for CNY).
///
/// The ledger only ever moves strictly positive amounts; balances are sums of such amounts and
/// are never negative. A signed integer is used so that derived figures (a net balance, a
/// discrepancy) can be expressed with the same type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(i64);

impl Amount {
    pub const ZERO: Amount = Amount(0);
    pub const MAX: Amount = Amount(i64::MAX);

    pub const fn from_minor(minor: i64) -> Amount {
        Amount(minor)
    }

    pub const fn minor(self) -> i64 {
        self.0
    }

    pub const fn is_positive(self) -> bool {
        self.0 > 0
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }
}

impl fmt::Display for Amount {
    /// Formats as a decimal with two fraction digits, the convention for CNY minor units.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

/// An ISO 4217 alphabetic currency code, three ASCII upper-case letters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub const CNY: Currency = Currency(*b"CNY");

    /// Parses a three-letter upper-case code; anything else is `None`.
    pub fn parse(code: &str) -> Option<Currency> {
        let bytes: [u8; 3] = code.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(u8::is_ascii_uppercase)
            .then_some(Currency(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored (see `parse`), so this cannot fail.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies a ledger account. Zero is reserved and never names an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(pub u64);

/// Identifies a transfer; chosen by the client so that retries can be recognised.
/// Zero is reserved and never names a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransferId(pub u128);

/// A point in time as microseconds since the Unix epoch. The ledger never reads a clock:
/// the engine stamps each batch with one of these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// This instant plus whole seconds, saturating at the far future.
    pub fn plus_seconds(self, seconds: u32) -> Timestamp {
        Timestamp(self.0.saturating_add(i64::from(seconds) * 1_000_000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amount_displays_as_yuan_with_two_decimals() {
        assert_eq!(Amount::from_minor(996_200).to_string(), "9962.00");
        assert_eq!(Amount::from_minor(-5).to_string(), "-0.05");
        assert_eq!(Amount::from_minor(0).to_string(), "0.00");
    }

    #[test]
    fn checked_arithmetic_reports_overflow() {
        assert_eq!(Amount::MAX.checked_add(Amount::from_minor(1)), None);
        assert_eq!(
            Amount::from_minor(3).checked_sub(Amount::from_minor(5)),
            Some(Amount::from_minor(-2))
        );
    }

    #[test]
    fn currency_accepts_only_three_upper_case_letters() {
        assert_eq!(Currency::parse("CNY"), Some(Currency::CNY));
        for bad in ["cny", "CN", "CNYY", "C1Y", "", "人民币"] {
            assert_eq!(Currency::parse(bad), None, "{bad:?}");
        }
    }
}
