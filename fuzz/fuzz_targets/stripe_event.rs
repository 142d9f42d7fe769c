//! A signed event's body: its envelope, then every reader of the object it carries, as the
//! worker reads them. Read or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quickdonate::payments::objects;
use quickdonate::webhooks::log::Event;

fuzz_target!(|body: &[u8]| {
    let _ = Event::parse(body);
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        let object = &value["data"]["object"];
        let _ = objects::payment_intent(object);
        let _ = objects::charge(object);
        let _ = objects::balance_transaction(object);
        let _ = objects::refund(object);
        let _ = objects::dispute(object);
        let _ = objects::payout(object);
    }
});
