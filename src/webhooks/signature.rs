//! Stripe's webhook signatures, checked on the raw body before anything parses it.
//!
//! `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...][,v0=<hex>]`. The signed payload is
//! `"{t}.{body}"`, signed with HMAC-SHA256 keyed by the endpoint secret (`whsec_...`, used as
//! the bytes given). A request is genuine if any `v1` matches any of our secrets (Stripe sends
//! one `v1` per live secret while a secret is rolled). Every other scheme is ignored: `v0` is a
//! test scheme, and honouring it would be a downgrade. The timestamp must be within the
//! tolerance of now, in either direction, so a captured request cannot be replayed later.

use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Checks signatures against the endpoint's secrets.
#[derive(Clone)]
pub struct Verifier {
    secrets: Vec<SecretString>,
    tolerance: Duration,
}

/// Why a signature was refused. The messages are safe to send back: they say what was wrong
/// with the header, never what the right signature would be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header is malformed")]
    Malformed,
    #[error("the Stripe-Signature header has no v1 signature")]
    NoV1,
    #[error("the Stripe-Signature header's v1 signature is not 64 hex digits")]
    MalformedV1,
    #[error("the signature's timestamp is outside the tolerance")]
    OutOfTolerance,
    #[error("no v1 signature matches")]
    NoMatch,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("secrets", &self.secrets.len())
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl Verifier {
    /// `tolerance` must be more than zero: a zero tolerance would disable the replay check in
    /// some libraries' conventions, and refuse everything in ours.
    pub fn new(secrets: Vec<SecretString>, tolerance: Duration) -> Self {
        assert!(
            !tolerance.is_zero(),
            "a webhook tolerance of 0 is never right"
        );
        Self { secrets, tolerance }
    }

    /// Verifies `header` over `body` at `now` (unix seconds).
    pub fn verify(
        &self,
        header: Option<&[u8]>,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let header = std::str::from_utf8(header).map_err(|_| SignatureError::Malformed)?;
        let parsed = ParsedHeader::parse(header)?;

        let age = now.abs_diff(parsed.timestamp);
        if age > self.tolerance.as_secs() {
            return Err(SignatureError::OutOfTolerance);
        }

        let timestamp = parsed.timestamp.to_string();
        for secret in &self.secrets {
            let mut mac = HmacSha256::new_from_slice(secret.expose_secret().as_bytes())
                .expect("HMAC takes a key of any length");
            mac.update(timestamp.as_bytes());
            mac.update(b".");
            mac.update(body);
            for candidate in &parsed.v1 {
                // `verify_slice` compares in constant time.
                if mac.clone().verify_slice(candidate).is_ok() {
                    return Ok(());
                }
            }
        }
        Err(SignatureError::NoMatch)
    }
}

struct ParsedHeader {
    timestamp: i64,
    v1: Vec<Vec<u8>>,
}

impl ParsedHeader {
    fn parse(header: &str) -> Result<Self, SignatureError> {
        let mut timestamp = None;
        let mut v1 = Vec::new();
        let mut any_v1 = false;
        for item in header.split(',') {
            let (key, value) = item
                .trim()
                .split_once('=')
                .ok_or(SignatureError::Malformed)?;
            match key {
                "t" => {
                    if timestamp.is_some() {
                        return Err(SignatureError::Malformed);
                    }
                    let t = value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed)?;
                    timestamp = Some(t);
                }
                // A v1 that is not 32 bytes of hex can never match; keep looking at the rest.
                "v1" => {
                    any_v1 = true;
                    if let Ok(bytes) = hex::decode(value)
                        && bytes.len() == 32
                    {
                        v1.push(bytes);
                    }
                }
                _ => {} // v0 and schemes yet to come: never trusted.
            }
        }
        let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
        match (v1.is_empty(), any_v1) {
            (true, false) => return Err(SignatureError::NoV1),
            (true, true) => return Err(SignatureError::MalformedV1),
            (false, _) => {}
        }
        Ok(Self { timestamp, v1 })
    }
}

/// Signs `body` the way Stripe does: for the simulator, and for tests.
pub fn sign(secret: &SecretString, body: &[u8], timestamp: i64) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1","object":"event"}"#;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s)
    }

    fn verifier(secrets: &[&str]) -> Verifier {
        Verifier::new(
            secrets.iter().map(|s| secret(s)).collect(),
            Duration::from_secs(300),
        )
    }

    fn check(v: &Verifier, header: &str) -> Result<(), SignatureError> {
        v.verify(Some(header.as_bytes()), BODY, NOW)
    }

    #[test]
    fn a_stripe_signed_body_is_accepted() {
        let header = sign(&secret("whsec_a"), BODY, NOW);
        assert_eq!(check(&verifier(&["whsec_a"]), &header), Ok(()));
    }

    #[test]
    fn a_changed_body_or_another_secret_is_refused() {
        let v = verifier(&["whsec_a"]);
        let header = sign(&secret("whsec_a"), BODY, NOW);
        assert_eq!(
            v.verify(Some(header.as_bytes()), b"{\"id\":\"evt_2\"}", NOW),
            Err(SignatureError::NoMatch)
        );
        let other = sign(&secret("whsec_b"), BODY, NOW);
        assert_eq!(check(&v, &other), Err(SignatureError::NoMatch));
    }

    #[test]
    fn any_v1_matching_any_secret_is_enough_during_rotation() {
        let old = sign(&secret("whsec_old"), BODY, NOW);
        let new = sign(&secret("whsec_new"), BODY, NOW);
        let new_sig = new.split_once(",v1=").unwrap().1;
        let both = format!("{old},v1={new_sig}");
        assert_eq!(check(&verifier(&["whsec_new"]), &both), Ok(()));
        assert_eq!(check(&verifier(&["whsec_old"]), &both), Ok(()));
        assert_eq!(check(&verifier(&["whsec_x", "whsec_new"]), &new), Ok(()));
        assert_eq!(
            check(&verifier(&["whsec_x"]), &both),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn a_v0_signature_is_never_trusted() {
        let good = sign(&secret("whsec_a"), BODY, NOW);
        let sig = good.split_once(",v1=").unwrap().1;
        assert_eq!(
            check(&verifier(&["whsec_a"]), &format!("t={NOW},v0={sig}")),
            Err(SignatureError::NoV1)
        );
        // v0 beside a bad v1 does not help either.
        let zeros = "0".repeat(64);
        assert_eq!(
            check(
                &verifier(&["whsec_a"]),
                &format!("t={NOW},v1={zeros},v0={sig}")
            ),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let v = verifier(&["whsec_a"]);
        for t in [NOW - 301, NOW + 301, 0, i64::MAX, i64::MIN] {
            let header = sign(&secret("whsec_a"), BODY, t);
            assert_eq!(
                check(&v, &header),
                Err(SignatureError::OutOfTolerance),
                "t={t}"
            );
        }
        for t in [NOW - 300, NOW + 300] {
            let header = sign(&secret("whsec_a"), BODY, t);
            assert_eq!(check(&v, &header), Ok(()), "t={t}");
        }
    }

    #[test]
    fn malformed_headers_are_refused() {
        let v = verifier(&["whsec_a"]);
        assert_eq!(v.verify(None, BODY, NOW), Err(SignatureError::Missing));
        for header in [
            "",
            "garbage",
            "v1=abc",
            "t=abc,v1=00",
            &format!("t={NOW},t={NOW},v1=00"),
        ] {
            assert_eq!(
                check(&v, header),
                Err(SignatureError::Malformed),
                "{header:?}"
            );
        }
        assert_eq!(check(&v, &format!("t={NOW}")), Err(SignatureError::NoV1));
        // A v1 that cannot be a signature is said to be one, not missing.
        for bad in ["zz", "abc", "00"] {
            assert_eq!(
                check(&v, &format!("t={NOW},v1={bad}")),
                Err(SignatureError::MalformedV1),
                "{bad}"
            );
        }
        assert_eq!(
            v.verify(Some(&[0xff, 0xfe]), BODY, NOW),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    #[should_panic(expected = "tolerance of 0")]
    fn a_zero_tolerance_is_refused() {
        Verifier::new(vec![secret("whsec_a")], Duration::ZERO);
    }

    /// Headers no one expected: any bytes, and near misses of Stripe's own.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// One item of a header: Stripe's, a near miss, or junk without a comma.
        fn item(real: String) -> impl Strategy<Value = String> {
            prop_oneof![
                Just(format!("t={NOW}")),
                (NOW - 5..NOW + 5).prop_map(|t| format!("t={t}")),
                Just(format!("v1={real}")),
                Just(format!("v0={real}")),
                "[0-9a-fA-F]{0,70}".prop_map(|h| format!("v1={h}")),
                " {0,2}[tv01x]{0,3} {0,2}={0,2}[0-9a-f]{0,8} {0,2}",
                "[^,]{0,12}",
            ]
        }

        /// The `v1` Stripe would send for `BODY` at `NOW`.
        fn real_v1() -> String {
            let header = sign(&secret("whsec_a"), BODY, NOW);
            header.split_once(",v1=").unwrap().1.to_owned()
        }

        /// What the header means, read the way Stripe documents it: comma-separated
        /// `key=value` items, exactly one `t`, and the signature in some `v1`.
        fn accepted(header: &str, real: &str) -> bool {
            let items: Vec<_> = header
                .split(',')
                .map(|i| i.trim().split_once('='))
                .collect();
            let Some(items) = items.into_iter().collect::<Option<Vec<_>>>() else {
                return false;
            };
            let times: Vec<_> = items.iter().filter(|(k, _)| *k == "t").collect();
            times.len() == 1
                && times[0].1.parse::<i64>() == Ok(NOW)
                && items
                    .iter()
                    .any(|(k, v)| *k == "v1" && v.eq_ignore_ascii_case(real))
        }

        proptest! {
        #![proptest_config(crate::arbitrary::config())]
                    #[test]
                    fn any_header_and_body_bytes_are_refused_without_a_panic(
                        header in proptest::collection::vec(any::<u8>(), 0..200),
                        body in proptest::collection::vec(any::<u8>(), 0..200),
                    ) {
                        prop_assert!(verifier(&["whsec_a"]).verify(Some(&header), &body, NOW).is_err());
                    }

                    #[test]
                    fn a_header_passes_only_with_one_timestamp_and_the_real_signature(
                        items in proptest::collection::vec(item(real_v1()), 1..6),
                    ) {
                        let header = items.join(",");
                        prop_assert_eq!(
                            check(&verifier(&["whsec_a"]), &header).is_ok(),
                            accepted(&header, &real_v1()),
                            "{}", header
                        );
                    }
                }
    }
}
