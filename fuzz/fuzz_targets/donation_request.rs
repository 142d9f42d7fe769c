//! A donation request's body, as anyone can send it: taken within the campaign's rules, or
//! refused; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quickdonate::campaigns::Campaign;
use quickdonate::donations::request::DonationRequest;

fuzz_target!(|body: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let campaign = Campaign {
        slug: "kashmir".into(),
        title: "Kashmir Campaign".into(),
        currency: "gbp".into(),
        suggested_amounts: vec![1000, 2500, 5000, 10000],
        min_amount: 200,
        max_amount: 1_000_000,
        goal_amount: None,
        raised_amount: 0,
        donation_count: 0,
        active: true,
    };
    if let Ok(request) = DonationRequest::parse(&body, &campaign) {
        assert!((200..=1_000_000).contains(&request.amount));
        assert!(request.donor.email.contains('@'));
    }
});
