//! Inputs no one expected, for property tests: JSON of any shape, made mostly of the names and
//! values our parsers look for, so that the cases reach deep into them instead of stopping at
//! the first missing field.

// Compiled into the library's unit tests and into the API tests; each uses some of it.
#![allow(dead_code)]

use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Field names our parsers read (and a few they never do).
const KEYS: &[&str] = &[
    "id",
    "object",
    "type",
    "created",
    "livemode",
    "api_version",
    "data",
    "amount",
    "currency",
    "status",
    "metadata",
    "donation_id",
    "latest_charge",
    "balance_transaction",
    "fee",
    "net",
    "refunds",
    "charge",
    "payment_intent",
    "last_payment_error",
    "amount_received",
    "amount_refunded",
    "failure_balance_transaction",
    "balance_transactions",
    "reason",
    "automatic",
    "reconciliation_status",
    "arrival_date",
    "exchange_rate",
    "source",
    "reporting_category",
    "donor",
    "email",
    "first_name",
    "last_name",
    "gift_aid",
    "declared",
    "title",
    "house_name_or_number",
    "postcode",
    "country",
    "frequency",
    "cover_fees",
    "anonymous",
    "evidence",
    "\u{0}",
    "",
];

/// Strings our parsers compare against, and strings they should never meet.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "evt_1",
            "pi_1",
            "ch_1",
            "txn_1",
            "re_1",
            "dp_1",
            "po_1",
            "event",
            "payment_intent",
            "charge",
            "refund",
            "dispute",
            "payout",
            "balance_transaction",
            "succeeded",
            "requires_payment_method",
            "canceled",
            "processing",
            "failed",
            "pending",
            "paid",
            "lost",
            "won",
            "needs_response",
            "gbp",
            "GBP",
            "usd",
            "one_off",
            "monthly",
            "a@b.example",
            "S19 2BD",
            "GB",
            "019ac3f2-0000-7000-8000-000000000000",
            "kashmir",
        ])
        .prop_map(str::to_owned),
        any::<String>(),
        "[a-z_@. 0-9]{0,12}",
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        // Where limits are: ours, JSON's and the integers'.
        prop::sample::select(vec![
            json!(-1),
            json!(0),
            json!(1),
            json!(199),
            json!(200),
            json!(1_000_000),
            json!(1_000_001),
            json!(9_007_199_254_740_993_i64),
            json!(i64::MAX),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(2500.5),
            json!(1e300),
            json!(-0.0),
        ]),
        any::<i64>().prop_map(Value::from),
        (-3i64..3_000_000).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN and infinities become null
    ]
}

/// Any JSON value, up to a few levels deep.
pub fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..8)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A field name, mostly one we read.
pub fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// A JSON object that has many of the fields we read, each with any value.
pub fn object() -> impl Strategy<Value = Value> {
    prop::collection::vec((key(), json()), 0..16)
        .prop_map(|fields| Value::Object(fields.into_iter().collect()))
}

/// What a field is replaced with: mostly a value of another type or beyond a limit.
fn replacement() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => number(),
        2 => text().prop_map(Value::String),
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        2 => json(),
    ]
}

/// Enough cases for a variant to hit a given field with a given kind of value several times;
/// each case takes microseconds.
pub fn config() -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases: 2048,
        failure_persistence: None,
        ..Default::default()
    }
}

/// `base` with some of its fields, at any depth, dropped or replaced by anything, and a few
/// added: inputs that get past the first checks and reach the rest.
pub fn variant_of(base: Value) -> BoxedStrategy<Value> {
    match base {
        Value::Object(fields) => {
            let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = fields
                .into_iter()
                .map(|(name, value)| {
                    let same = name.clone();
                    let other = name.clone();
                    prop_oneof![
                        16 => variant_of(value).prop_map(move |v| Some((same.clone(), v))),
                        1 => Just(None),
                        1 => replacement().prop_map(move |v| Some((other.clone(), v))),
                    ]
                    .boxed()
                })
                .collect();
            let extra = prop_oneof![
                4 => Just(Vec::new()),
                1 => prop::collection::vec((key(), json()), 1..3),
            ];
            (fields, extra)
                .prop_map(|(fields, extra)| {
                    let mut object: Map<String, Value> = fields.into_iter().flatten().collect();
                    for (name, value) in extra {
                        object.entry(name).or_insert(value);
                    }
                    Value::Object(object)
                })
                .boxed()
        }
        Value::Array(items) => items
            .into_iter()
            .map(variant_of)
            .collect::<Vec<_>>()
            .prop_map(Value::Array)
            .boxed(),
        leaf => prop_oneof![12 => Just(leaf), 1 => replacement()].boxed(),
    }
}
