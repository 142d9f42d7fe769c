//! The `Stripe-Signature` header and body, as anyone can send them: refused, never a panic.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use quickdonate::webhooks::signature::Verifier;
use secrecy::SecretString;

fuzz_target!(|input: (&[u8], &[u8], i64)| {
    let (header, body, now) = input;
    let verifier = Verifier::new(
        vec![SecretString::from("whsec_fuzz")],
        Duration::from_secs(300),
    );
    let _ = verifier.verify(Some(header), body, now);
});
