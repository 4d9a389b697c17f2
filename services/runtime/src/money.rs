//! Money is an integer number of minor units (cents) with a currency: never a float.

use std::fmt;

use crate::error::ServiceError;

/// A lower-case ISO 4217 code as Stripe writes it ("usd").
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    pub fn usd() -> Self {
        Self("usd".to_owned())
    }

    /// Accepts three ASCII letters in any case; stores them lower case.
    pub fn parse(code: &str) -> Result<Self, ServiceError> {
        if code.len() == 3 && code.bytes().all(|b| b.is_ascii_alphabetic()) {
            Ok(Self(code.to_ascii_lowercase()))
        } else {
            Err(ServiceError::invalid_argument(format!(
                "currency must be a three-letter ISO 4217 code, got {code:?}"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = ServiceError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An amount of money in minor units with its currency.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Money {
    pub cents: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(cents: i64, currency: Currency) -> Self {
        Self { cents, currency }
    }

    pub fn usd(cents: i64) -> Self {
        Self::new(cents, Currency::usd())
    }

    pub fn zero(currency: Currency) -> Self {
        Self::new(0, currency)
    }

    /// The largest single amount any request may name: one billion dollars. Anything larger
    /// is a mistake (or an attempt to overflow sums), refused before any arithmetic.
    pub const MAX_CENTS: i64 = 1_000_000_000_00;

    /// Parses an amount that must be strictly positive (a payout, an allocation) and at most
    /// [`Money::MAX_CENTS`].
    pub fn positive(cents: i64, currency: &str, field: &str) -> Result<Self, ServiceError> {
        if cents <= 0 {
            return Err(ServiceError::invalid_argument(format!(
                "{field} must be a positive number of cents, got {cents}"
            )));
        }
        if cents > Self::MAX_CENTS {
            return Err(ServiceError::invalid_argument(format!(
                "{field} must be at most {} cents, got {cents}",
                Self::MAX_CENTS
            )));
        }
        Ok(Self::new(cents, Currency::parse(currency)?))
    }

    /// Adds two amounts of the same currency; refuses mixed currencies and overflow.
    pub fn checked_add(&self, other: &Money) -> Result<Money, ServiceError> {
        self.same_currency(other)?;
        self.cents
            .checked_add(other.cents)
            .map(|cents| Money::new(cents, self.currency.clone()))
            .ok_or_else(|| ServiceError::invalid_argument("amount overflows 64-bit cents"))
    }

    /// Subtracts an amount of the same currency; refuses mixed currencies and overflow.
    pub fn checked_sub(&self, other: &Money) -> Result<Money, ServiceError> {
        self.same_currency(other)?;
        self.cents
            .checked_sub(other.cents)
            .map(|cents| Money::new(cents, self.currency.clone()))
            .ok_or_else(|| ServiceError::invalid_argument("amount overflows 64-bit cents"))
    }

    fn same_currency(&self, other: &Money) -> Result<(), ServiceError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(ServiceError::invalid_argument(format!(
                "currencies differ: {} and {}",
                self.currency, other.currency
            )))
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.cents < 0 { "-" } else { "" };
        let abs = self.cents.unsigned_abs();
        write!(
            f,
            "{sign}{}.{:02} {}",
            abs / 100,
            abs % 100,
            self.currency.as_str().to_ascii_uppercase()
        )
    }
}

/// Cents as dollars for people: `100000000` -> "$1,000,000.00".
pub fn dollars(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    let whole = (abs / 100).to_string();
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("{sign}${grouped}.{:02}", abs % 100)
}

impl From<Money> for payouts_proto::common::v1::Money {
    fn from(value: Money) -> Self {
        Self {
            cents: value.cents,
            currency: value.currency.0,
        }
    }
}

impl TryFrom<payouts_proto::common::v1::Money> for Money {
    type Error = ServiceError;

    fn try_from(value: payouts_proto::common::v1::Money) -> Result<Self, Self::Error> {
        Ok(Money::new(value.cents, Currency::parse(&value.currency)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn currency_is_normalised_to_lower_case() {
        assert_eq!(Currency::parse("USD").map(|c| c.0), Ok("usd".to_owned()));
    }

    #[test]
    fn currency_rejects_anything_but_three_letters() {
        for bad in ["", "us", "usdd", "u$d", "12a"] {
            let error = Currency::parse(bad).err().map(|e| e.kind());
            assert_eq!(error, Some(ErrorKind::InvalidArgument), "{bad:?}");
        }
    }

    #[test]
    fn positive_refuses_zero_and_negative_amounts() {
        assert!(Money::positive(0, "usd", "amount").is_err());
        assert!(Money::positive(-1, "usd", "amount").is_err());
        assert_eq!(Money::positive(1, "usd", "amount"), Ok(Money::usd(1)));
        assert!(Money::positive(Money::MAX_CENTS, "usd", "amount").is_ok());
        assert!(Money::positive(Money::MAX_CENTS + 1, "usd", "amount").is_err());
        assert!(Money::positive(i64::MAX, "usd", "amount").is_err());
    }

    #[test]
    fn arithmetic_refuses_overflow_and_mixed_currencies() {
        let max = Money::usd(i64::MAX);
        assert!(max.checked_add(&Money::usd(1)).is_err());
        assert!(Money::usd(i64::MIN).checked_sub(&Money::usd(1)).is_err());
        let eur = Money::new(1, Currency::parse("eur").unwrap());
        assert!(Money::usd(1).checked_add(&eur).is_err());
        assert_eq!(
            Money::usd(150).checked_sub(&Money::usd(200)),
            Ok(Money::usd(-50))
        );
    }

    #[test]
    fn dollars_group_thousands() {
        assert_eq!(dollars(1_000_000_00), "$1,000,000.00");
        assert_eq!(dollars(7_500_00), "$7,500.00");
        assert_eq!(dollars(5), "$0.05");
        assert_eq!(dollars(-1_234_56), "-$1,234.56");
    }

    #[test]
    fn display_shows_dollars_and_cents() {
        assert_eq!(Money::usd(1_000_050).to_string(), "10000.50 USD");
        assert_eq!(Money::usd(-5).to_string(), "-0.05 USD");
    }
}
