//! Stripe webhook signatures, as Stripe specifies them: header
//! `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`; `v1` is
//! hex(HMAC-SHA256(endpoint secret, "<t>.<raw body>")); any `v1` under any of the endpoint's
//! secrets passes (rotation); other schemes (`v0`) are ignored; the timestamp must be within
//! the tolerance of now, in the past or the future. Verified over the raw bytes, in constant
//! time, before anything is parsed or written.

use hmac::{Hmac, KeyInit, Mac};
use payouts_runtime::Secret;
use sha2::Sha256;

/// Why a delivery's signature was refused. The messages are safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing Stripe-Signature header")]
    Missing,
    #[error("malformed Stripe-Signature header: {0}")]
    Malformed(&'static str),
    #[error("signature timestamp is outside the tolerance of {tolerance_seconds} seconds")]
    OutsideTolerance { tolerance_seconds: i64 },
    #[error("no signature matches the payload under this endpoint's signing secret")]
    NoMatch,
}

impl SignatureError {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            SignatureError::Missing => "missing",
            SignatureError::Malformed(_) => "malformed",
            SignatureError::OutsideTolerance { .. } => "timestamp",
            SignatureError::NoMatch => "mismatch",
        }
    }
}

/// Checks `header` against `payload` under any of `secrets`.
pub fn verify(
    header: Option<&str>,
    payload: &[u8],
    secrets: &[Secret],
    tolerance_seconds: i64,
    now_unix: i64,
) -> Result<(), SignatureError> {
    let header = header
        .map(str::trim)
        .filter(|header| !header.is_empty())
        .ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let (key, value) = item
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed("expected key=value pairs"))?;
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(SignatureError::Malformed("more than one timestamp"));
                }
                let parsed: i64 = value
                    .parse()
                    .map_err(|_| SignatureError::Malformed("timestamp is not a number"))?;
                timestamp = Some(parsed);
            }
            // A v1 that is not hex can never match; it is skipped like another scheme.
            "v1" => {
                if let Ok(bytes) = hex::decode(value) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed("no timestamp"))?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed("no v1 signature"));
    }
    if now_unix.abs_diff(timestamp) > tolerance_seconds.unsigned_abs() {
        return Err(SignatureError::OutsideTolerance { tolerance_seconds });
    }
    let signed_prefix = format!("{timestamp}.");
    for secret in secrets {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
            continue;
        };
        mac.update(signed_prefix.as_bytes());
        mac.update(payload);
        for signature in &signatures {
            // `verify_slice` compares in constant time.
            if mac.clone().verify_slice(signature).is_ok() {
                return Ok(());
            }
        }
    }
    Err(SignatureError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const PAYLOAD: &[u8] = br#"{"id":"evt_1","type":"transfer.created"}"#;
    const NOW: i64 = 1_700_000_000;
    /// hex(HMAC-SHA256("whsec_test_secret", "1700000000.<PAYLOAD>")), computed independently
    /// with Python's hmac module.
    const KNOWN_SIGNATURE: &str =
        "3d6f9526e485962a610a3e321f6d7b89de908c56487ce54796ce04166312d058";

    fn secrets(values: &[&str]) -> Vec<Secret> {
        values.iter().map(|value| Secret::new(*value)).collect()
    }

    fn check(header: &str) -> Result<(), SignatureError> {
        verify(Some(header), PAYLOAD, &secrets(&[SECRET]), 300, NOW)
    }

    #[test]
    fn a_valid_signature_passes() {
        assert_eq!(check(&format!("t={NOW},v1={KNOWN_SIGNATURE}")), Ok(()));
    }

    #[test]
    fn a_tampered_byte_fails() {
        let mut tampered = PAYLOAD.to_vec();
        tampered[8] ^= 1;
        let header = format!("t={NOW},v1={KNOWN_SIGNATURE}");
        let result = verify(Some(&header), &tampered, &secrets(&[SECRET]), 300, NOW);
        assert_eq!(result, Err(SignatureError::NoMatch));
    }

    #[test]
    fn a_wrong_secret_fails() {
        let header = format!("t={NOW},v1={KNOWN_SIGNATURE}");
        let result = verify(Some(&header), PAYLOAD, &secrets(&["whsec_other"]), 300, NOW);
        assert_eq!(result, Err(SignatureError::NoMatch));
    }

    #[test]
    fn any_secret_of_the_endpoint_passes_for_rotation() {
        let header = format!("t={NOW},v1={KNOWN_SIGNATURE}");
        let result = verify(
            Some(&header),
            PAYLOAD,
            &secrets(&["whsec_new", SECRET]),
            300,
            NOW,
        );
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn stale_and_future_timestamps_fail_and_the_edge_passes() {
        let signed_at = |t: i64| {
            let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
            mac.update(format!("{t}.").as_bytes());
            mac.update(PAYLOAD);
            format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
        };
        let outside = Err(SignatureError::OutsideTolerance {
            tolerance_seconds: 300,
        });
        assert_eq!(check(&signed_at(NOW - 301)), outside);
        assert_eq!(check(&signed_at(NOW + 301)), outside);
        assert_eq!(check(&signed_at(NOW - 300)), Ok(()));
        assert_eq!(check(&signed_at(NOW + 300)), Ok(()));
    }

    #[test]
    fn missing_and_malformed_headers_fail() {
        assert_eq!(
            verify(None, PAYLOAD, &secrets(&[SECRET]), 300, NOW),
            Err(SignatureError::Missing)
        );
        assert_eq!(check("  "), Err(SignatureError::Missing));
        for malformed in [
            "garbage",
            &format!("v1={KNOWN_SIGNATURE}"),
            &format!("t=yesterday,v1={KNOWN_SIGNATURE}"),
            &format!("t={NOW}"),
            &format!("t={NOW},v0={KNOWN_SIGNATURE}"),
            &format!("t={NOW},t={NOW},v1={KNOWN_SIGNATURE}"),
        ] {
            assert!(
                matches!(check(malformed), Err(SignatureError::Malformed(_))),
                "{malformed}"
            );
        }
    }

    #[test]
    fn two_v1_with_one_valid_pass_and_other_schemes_are_ignored() {
        let wrong = "0".repeat(64);
        assert_eq!(
            check(&format!("t={NOW},v1={wrong},v1={KNOWN_SIGNATURE}")),
            Ok(())
        );
        assert_eq!(
            check(&format!("t={NOW},v1={KNOWN_SIGNATURE},v1={wrong}")),
            Ok(())
        );
        assert_eq!(
            check(&format!("t={NOW},v0=abc,v1={KNOWN_SIGNATURE},scheme=x")),
            Ok(())
        );
        assert_eq!(
            check(&format!("t={NOW},v1={wrong}")),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            check(&format!("t={NOW},v1=not-hex")),
            Err(SignatureError::Malformed("no v1 signature"))
        );
    }

    #[test]
    fn no_secret_configured_matches_nothing() {
        let header = format!("t={NOW},v1={KNOWN_SIGNATURE}");
        assert_eq!(
            verify(Some(&header), PAYLOAD, &[], 300, NOW),
            Err(SignatureError::NoMatch)
        );
    }
}
