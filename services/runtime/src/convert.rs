//! Conversions at the gRPC edge shared by every service.

use chrono::{DateTime, Utc};
use payouts_proto::common::v1 as common_pb;

use crate::error::ServiceError;
use crate::money::{Currency, Money};

/// A money field that must be present, in `currency`, and between 0 and
/// [`Money::MAX_CENTS`]. Every problem is INVALID_ARGUMENT naming the field.
pub fn required_money(
    value: Option<common_pb::Money>,
    field: &str,
    currency: &Currency,
) -> Result<Money, ServiceError> {
    let value =
        value.ok_or_else(|| ServiceError::invalid_argument(format!("{field} is required")))?;
    let money = Money::new(
        value.cents,
        Currency::parse(&value.currency).map_err(|_| {
            ServiceError::invalid_argument(format!(
                "{field}.currency must be a three-letter ISO 4217 code, got {:?}",
                value.currency
            ))
        })?,
    );
    if &money.currency != currency {
        return Err(ServiceError::invalid_argument(format!(
            "{field} must be in {currency}, got {}",
            money.currency
        )));
    }
    if !(0..=Money::MAX_CENTS).contains(&money.cents) {
        return Err(ServiceError::invalid_argument(format!(
            "{field}.cents must be between 0 and {}, got {}",
            Money::MAX_CENTS,
            money.cents
        )));
    }
    Ok(money)
}

/// Like [`required_money`], and strictly positive (a payout, an allocation).
pub fn positive_money(
    value: Option<common_pb::Money>,
    field: &str,
    currency: &Currency,
) -> Result<Money, ServiceError> {
    let money = required_money(value, field, currency)?;
    if money.cents == 0 {
        return Err(ServiceError::invalid_argument(format!(
            "{field}.cents must be a positive number of cents, got 0"
        )));
    }
    Ok(money)
}

/// An optional money field (unset is `None`), checked like [`required_money`].
pub fn optional_money(
    value: Option<common_pb::Money>,
    field: &str,
    currency: &Currency,
) -> Result<Option<Money>, ServiceError> {
    value
        .map(|value| required_money(Some(value), field, currency))
        .transpose()
}

/// US dollar cents as the contract's money.
pub fn usd(cents: i64) -> common_pb::Money {
    Money::usd(cents).into()
}

/// The cents of a money field, 0 when unset (for figures a service produced itself).
pub fn cents(value: Option<&common_pb::Money>) -> i64 {
    value.map_or(0, |money| money.cents)
}

/// A protobuf timestamp of a point in time.
pub fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// An optional protobuf timestamp.
pub fn optional_timestamp(time: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    time.map(timestamp)
}

/// A required protobuf timestamp field as a point in time.
pub fn required_time(
    value: Option<prost_types::Timestamp>,
    field: &str,
) -> Result<DateTime<Utc>, ServiceError> {
    let value =
        value.ok_or_else(|| ServiceError::invalid_argument(format!("{field} is required")))?;
    u32::try_from(value.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(value.seconds, nanos))
        .ok_or_else(|| ServiceError::invalid_argument(format!("{field} is not a valid time")))
}

/// A required, non-blank identifier field, trimmed; at most 255 characters.
pub fn required_id(value: &str, field: &str) -> Result<String, ServiceError> {
    if value.chars().count() > 255 {
        return Err(ServiceError::invalid_argument(format!(
            "{field} is longer than 255 characters"
        )));
    }
    let value = value.trim();
    if value.is_empty() {
        return Err(ServiceError::invalid_argument(format!(
            "{field} is required"
        )));
    }
    Ok(value.to_owned())
}

/// The most characters an admin's notes (or a reason) may hold.
pub const MAX_NOTES_CHARS: usize = 2_000;

/// Free-text notes: `None` when blank, trimmed otherwise; more than [`MAX_NOTES_CHARS`]
/// characters (counted as sent, as the OpenAPI document's `maxLength` counts) is refused.
pub fn optional_notes(value: &str, field: &str) -> Result<Option<String>, ServiceError> {
    if value.chars().count() > MAX_NOTES_CHARS {
        return Err(ServiceError::invalid_argument(format!(
            "{field} is longer than {MAX_NOTES_CHARS} characters"
        )));
    }
    Ok(Some(value.trim())
        .filter(|notes| !notes.is_empty())
        .map(str::to_owned))
}

/// A batch of identifiers (1..=`max`, each like [`required_id`]), duplicates removed,
/// in the request's order.
pub fn required_ids(
    values: &[String],
    field: &str,
    max: usize,
) -> Result<Vec<String>, ServiceError> {
    if values.is_empty() || values.len() > max {
        return Err(ServiceError::invalid_argument(format!(
            "{field} must hold between 1 and {max} ids, got {}",
            values.len()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut ids = Vec::with_capacity(values.len());
    for (index, value) in values.iter().enumerate() {
        let id = required_id(value, &format!("{field}[{index}]"))?;
        if seen.insert(id.clone()) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// An opaque page token naming the last item of a page by (time, id).
pub fn page_token(at: DateTime<Utc>, id: &str) -> String {
    format!("{}:{id}", at.timestamp_millis())
}

/// The (time, id) a page token names; `None` for the first page. Exactly the tokens
/// [`page_token`] makes: 1 to 15 digits of epoch milliseconds, `:`, an id of at most 255
/// characters without control characters (the OpenAPI document's pattern says the same).
pub fn parse_page_token(token: &str) -> Result<Option<(DateTime<Utc>, String)>, ServiceError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || ServiceError::invalid_argument("page_token is not one this service issued");
    let (millis, id) = token.split_once(':').ok_or_else(invalid)?;
    if millis.is_empty()
        || millis.len() > 15
        || !millis.bytes().all(|b| b.is_ascii_digit())
        || id.chars().count() > 255
        || id.chars().any(char::is_control)
    {
        return Err(invalid());
    }
    let at = millis
        .parse()
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .ok_or_else(invalid)?;
    Ok(Some((at, id.to_owned())))
}

/// A page size in `1..=max`, with `default` for 0.
pub fn page_size(requested: i32, default: usize, max: usize) -> Result<usize, ServiceError> {
    match requested {
        0 => Ok(default),
        size if size < 0 => Err(ServiceError::invalid_argument(format!(
            "page_size must be between 1 and {max}, got {size}"
        ))),
        size => {
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if size > max {
                Err(ServiceError::invalid_argument(format!(
                    "page_size must be between 1 and {max}, got {size}"
                )))
            } else {
                Ok(size)
            }
        }
    }
}

/// One page of a list read with one item more than asked for: the page, and the token of
/// the next page when there is one (named by `key` of the page's last item).
pub fn paginate<T>(
    mut items: Vec<T>,
    size: usize,
    key: impl Fn(&T) -> (DateTime<Utc>, String),
) -> (Vec<T>, String) {
    if items.len() > size {
        items.truncate(size);
        let token = items
            .last()
            .map(|last| {
                let (at, id) = key(last);
                page_token(at, &id)
            })
            .unwrap_or_default();
        (items, token)
    } else {
        (items, String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_of_ids_is_bounded_named_and_deduplicated() {
        let ids = |values: &[&str]| values.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            required_ids(&ids(&["a", " b ", "a"]), "user_ids", 3).unwrap(),
            ["a", "b"]
        );
        let message = |values: &[&str], max| {
            required_ids(&ids(values), "user_ids", max)
                .unwrap_err()
                .to_string()
        };
        assert!(message(&[], 3).contains("between 1 and 3 ids, got 0"));
        assert!(message(&["a", "b"], 1).contains("got 2"));
        assert!(message(&["a", " "], 3).contains("user_ids[1] is required"));
    }

    #[test]
    fn timestamps_round_trip() {
        let now = Utc::now();
        assert_eq!(required_time(Some(timestamp(now)), "at"), Ok(now));
    }

    #[test]
    fn missing_or_invalid_fields_name_the_field() {
        assert_eq!(
            required_time(None, "account_created_at")
                .unwrap_err()
                .message(),
            "account_created_at is required"
        );
        let bad = prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert!(required_time(Some(bad), "at").is_err());
        assert_eq!(
            required_id("  ", "user_id").unwrap_err().message(),
            "user_id is required"
        );
        assert!(required_id(&"x".repeat(256), "user_id").is_err());
        assert_eq!(required_id(" u1 ", "user_id"), Ok("u1".to_owned()));
    }

    #[test]
    fn page_tokens_round_trip_and_foreign_ones_are_refused() {
        let at = DateTime::from_timestamp_millis(1_800_000_000_123).unwrap();
        assert_eq!(
            parse_page_token(&page_token(at, "payout_1:x")),
            Ok(Some((at, "payout_1:x".to_owned())))
        );
        assert_eq!(parse_page_token(""), Ok(None));
        assert!(parse_page_token("garbage").is_err());
        assert!(parse_page_token("abc:id").is_err());
        for forged in [
            "-5:id",
            "+5:id",
            ":id",
            "1234567890123456:id",
            "5:line\nbreak",
            "5:tab\there",
        ] {
            assert!(parse_page_token(forged).is_err(), "{forged:?} accepted");
        }
        let longest = format!("5:{}", "é".repeat(255));
        assert!(parse_page_token(&longest).unwrap().is_some());
        assert!(parse_page_token(&format!("{longest}é")).is_err());
    }

    #[test]
    fn money_fields_name_the_field_and_refuse_other_currencies() {
        let usd_currency = Currency::usd();
        assert_eq!(
            required_money(Some(usd(500)), "amount", &usd_currency),
            Ok(Money::usd(500))
        );
        let error = required_money(None, "amount", &usd_currency).unwrap_err();
        assert_eq!(error.message(), "amount is required");
        let euros = common_pb::Money {
            cents: 500,
            currency: "EUR".to_owned(),
        };
        let error = required_money(Some(euros), "amount", &usd_currency).unwrap_err();
        assert_eq!(error.message(), "amount must be in usd, got eur");
        let bad = common_pb::Money {
            cents: 5,
            currency: "dollars".to_owned(),
        };
        assert!(required_money(Some(bad), "amount", &usd_currency).is_err());
        assert!(required_money(Some(usd(-1)), "amount", &usd_currency).is_err());
        assert!(required_money(Some(usd(Money::MAX_CENTS + 1)), "amount", &usd_currency).is_err());
        assert!(positive_money(Some(usd(0)), "amount", &usd_currency).is_err());
        assert_eq!(optional_money(None, "amount", &usd_currency), Ok(None));
    }

    #[test]
    fn a_page_read_with_one_item_more_names_the_next_page() {
        let at = |minute: i64| DateTime::from_timestamp(1_800_000_000 + minute * 60, 0).unwrap();
        let key = |item: &(i64, &str)| (at(item.0), item.1.to_owned());
        let items = vec![(3, "c"), (2, "b"), (1, "a")];
        let (page, token) = paginate(items.clone(), 2, key);
        assert_eq!(page, vec![(3, "c"), (2, "b")]);
        assert_eq!(parse_page_token(&token), Ok(Some((at(2), "b".to_owned()))));
        let (last, token) = paginate(items[2..].to_vec(), 2, key);
        assert_eq!(
            (last, token),
            (vec![(1, "a")], String::new()),
            "the last page has no token"
        );
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(page_size(0, 50, 500), Ok(50));
        assert_eq!(page_size(500, 50, 500), Ok(500));
        assert!(page_size(501, 50, 500).is_err());
        assert!(page_size(-1, 50, 500).is_err());
    }
}
