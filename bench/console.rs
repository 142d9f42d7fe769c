//! Phase 9, the staff console at a million donations (issue 22): every console page and search
//! answered with a million succeeded donations and ten thousand paid payouts in the database.
//!
//! The data is written straight into the database, set-based (`generate_series`), as two years
//! of a charity's giving would leave it: 1,000,000 succeeded donations to the Kashmir campaign,
//! one every 63 s over the last 730 days (402,000 donors: 2,000 regular ones with about 50 gifts
//! each, the rest about 2.3 each; surnames from very common to rare; emails in any case), 40%
//! covering the fee, 0.2% half refunded; each donation's `gift` and `stripe_fee` ledger rows
//! (and a refund's); 10,000 paid payouts of about 100 gifts each (and their refunds), each with
//! its own `payout` transaction and ledger row, 20 of them holding an adjustment the ledger does
//! not (unmatched), and 25 old gifts in no payout (overdue); a Gift Aid declaration with every
//! gift of 30% of donors, and the claims (paid, the latest submitted) that took every eligible
//! gift made before last month, 1,000 lines each; two applied webhook events per donation
//! (`payment_intent.succeeded`, `charge.succeeded`; payloads stripped after 30 days, as the
//! retention does); the campaign's totals. Then `VACUUM (ANALYZE)` and a checkpoint, so the
//! pages are measured on tables as autovacuum keeps them.
//!
//! A staff admin is made through the library (an account, a session: no passkey), and each page
//! is requested with its cookie, one request at a time: three to warm up, then 100 (fewer for a
//! page that takes longer than 0.3 s, to keep each page within about 30 s; never fewer than 10),
//! p50, p99 and max. Last, the plans of the finance donations list as the API runs it for each
//! kind of search: `EXPLAIN (ANALYZE, BUFFERS)` in a read-only snapshot with custom plans, as
//! `db::reading` runs it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use quickdonate::db::local::LocalPostgres;
use quickdonate::finance::donations::Search;
use quickdonate::operators::access::Role;
use sqlx::{AssertSqlSafe, PgPool};
use uuid::Uuid;

use super::{Measured, Service};

/// How many requests a page gets at most, at least, and the time they should take at most.
const REQUESTS: usize = 100;
const FEWEST: usize = 10;
const BUDGET: Duration = Duration::from_secs(30);
const WARM_UP: usize = 3;
/// What issue 22 asks of every page and search at p99.
const TARGET_MS: f64 = 300.0;

/// The seed, one statement a step, on one connection (the temporary tables are its own).
const SEED: &[(&str, &str)] = &[
    (
        "plan: 1,000,000 donations, their donors and payouts (a temporary table)",
        r#"CREATE TEMP TABLE console_seed AS
           WITH names AS (
               SELECT ARRAY['Oliver', 'George', 'Harry', 'Jack', 'Jacob', 'Noah', 'Charlie',
                            'Muhammad', 'Thomas', 'Oscar', 'William', 'James', 'Leo', 'Alfie',
                            'Henry', 'Joshua', 'Freddie', 'Archie', 'Ethan', 'Isaac', 'Alexander',
                            'Joseph', 'Edward', 'Samuel', 'Max', 'Daniel', 'Arthur', 'Lucas',
                            'Mohammed', 'Imran', 'Olivia', 'Amelia', 'Isla', 'Ava', 'Emily',
                            'Isabella', 'Mia', 'Poppy', 'Ella', 'Lily', 'Sophia', 'Grace', 'Evie',
                            'Sophie', 'Aisha', 'Fatima', 'Zara', 'Chloe', 'Jessica', 'Sarah',
                            'Hannah', 'Ruby', 'Ayesha', 'Maryam', 'Priya', 'Anna', 'Lucy', 'Ellie',
                            'Amira', 'Margaret'] AS firsts,
                      ARRAY['Smith', 'Jones', 'Williams', 'Taylor', 'Brown', 'Davies', 'Evans',
                            'Wilson', 'Thomas', 'Johnson', 'Roberts', 'Robinson', 'Thompson',
                            'Wright', 'Walker', 'White', 'Edwards', 'Hughes', 'Green', 'Hall']
                          AS very_common,
                      ARRAY['Lewis', 'Harris', 'Clarke', 'Patel', 'Jackson', 'Wood', 'Turner',
                            'Martin', 'Cooper', 'Hill', 'Ward', 'Morris', 'Moore', 'Clark', 'Lee',
                            'King', 'Baker', 'Harrison', 'Morgan', 'Allen', 'James', 'Scott',
                            'Phillips', 'Watson', 'Davis', 'Parker', 'Price', 'Bennett', 'Young',
                            'Griffiths', 'Mitchell', 'Kelly', 'Cook', 'Carter', 'Richardson',
                            'Bailey', 'Collins', 'Bell', 'Shaw', 'Murphy', 'Miller', 'Cox',
                            'Richards', 'Khan', 'Marshall', 'Anderson', 'Simpson', 'Ellis',
                            'Adams', 'Singh', 'Begum', 'Wilkinson', 'Foster', 'Chapman', 'Powell',
                            'Webb', 'Rogers', 'Gray', 'Mason', 'Ali', 'Hunt', 'Hussain',
                            'Campbell', 'Matthews', 'Owen', 'Palmer', 'Holmes', 'Mills', 'Barnes',
                            'Knight', 'Lloyd', 'Butler', 'Russell', 'Barker', 'Fisher', 'Stevens',
                            'Jenkins', 'Murray', 'Dixon', 'Harvey'] AS common,
                      ARRAY['ash', 'bel', 'cor', 'dun', 'el', 'fair', 'gil', 'hal', 'ing', 'kel',
                            'lang', 'mor', 'nor', 'pem', 'quin', 'ros', 'stan', 'thorn', 'wex',
                            'yar'] AS syllables,
                      ARRAY['by', 'ford', 'ton', 'well', 'wick', 'more', 'ley', 'den', 'ham',
                            'field'] AS endings,
                      ARRAY['gmail.com', 'hotmail.co.uk', 'yahoo.co.uk', 'outlook.com',
                            'btinternet.com', 'icloud.com', 'sky.com', 'example.org'] AS domains,
                      ARRAY['SW', 'N', 'E', 'M', 'B', 'LS', 'G', 'EH', 'CF', 'BS'] AS areas
           ),
           base AS (
               SELECT g,
                      -- One gift in ten from 2,000 regular donors, the rest from 400,000 others.
                      CASE WHEN g % 10 = 0 THEN (g / 10 * 7919) % 2000
                           ELSE 2000 + (g * 2654435761) % 400000 END AS k,
                      now() - make_interval(secs => (1000000 - g) * 63.072::float8
                                                    + ((g * 7919) % 60)::float8) AS at,
                      CASE WHEN g % 17 = 0 THEN 100 * (3 + g % 97)
                           ELSE (ARRAY[500, 1000, 1500, 2000, 2500, 3000, 5000, 10000, 25000,
                                       2500])[1 + (g * 31) % 10] END::bigint AS amount
               FROM generate_series(1, 1000000::bigint) AS g
           ),
           donor AS (
               SELECT b.*, n.*,
                      n.firsts[1 + (b.k * 7) % array_length(n.firsts, 1)] AS first,
                      CASE WHEN b.k % 3 = 0
                           THEN n.very_common[1 + b.k % array_length(n.very_common, 1)]
                           WHEN b.k % 3 = 1 THEN n.common[1 + b.k % array_length(n.common, 1)]
                           ELSE initcap(n.syllables[1 + b.k % 20] || n.syllables[1 + (b.k / 20) % 20]
                                        || n.endings[1 + (b.k / 400) % 10]) END AS last,
                      CASE WHEN b.g % 5 < 2 THEN b.amount * 15 / 1000 + 20 ELSE 0 END AS cover
               FROM base b CROSS JOIN names n
           )
           SELECT g, k, at, at + make_interval(secs => (5 + g % 25)::float8) AS paid_at,
                  encode(set_byte(overlay(uuid_send(gen_random_uuid())
                                          PLACING substring(int8send((extract(epoch FROM at)
                                                                      * 1000)::bigint) FROM 3)
                                          FROM 1 FOR 6), 6, (112 + g % 16)::int), 'hex')::uuid
                      AS id,
                  amount, cover, amount + cover AS total,
                  (amount + cover) * 12 / 1000 + 20 AS fee,
                  CASE WHEN g % 500 = 123 THEN (amount + cover) / 2 ELSE 0 END AS refund,
                  CASE WHEN k % 50 = 0 THEN lower(first) ELSE first END AS first_name,
                  last AS last_name,
                  CASE WHEN k % 5 = 0 THEN first || '.' || last || k
                       ELSE lower(first || '.' || last || k) END
                      || '@' || domains[1 + k % array_length(domains, 1)] AS email,
                  k % 10 < 3 AS declares,
                  (ARRAY['Mr', 'Mrs', 'Ms', 'Miss', 'Dr', NULL])[1 + k % 6] AS title,
                  (1 + k % 250)::text AS house,
                  areas[1 + k % 10] || (1 + (k / 10) % 20) || ' ' || (k % 10)
                      || substr('ABDEFGHJLNPQRSTUWXYZ', (1 + (k / 7) % 20)::int, 1)
                      || substr('ABDEFGHJLNPQRSTUWXYZ', (1 + (k / 140) % 20)::int, 1) AS postcode,
                  -- About 100 gifts a payout, oldest first; the last 5,000 gifts (3.6 days) not
                  -- paid out yet, and 25 older ones never (overdue).
                  CASE WHEN g <= 995000 AND g % 40000 <> 7 THEN (g - 1) * 10000 / 995000 END
                      AS payout,
                  'pi_3' || substr(md5('pi' || g), 1, 23) AS pi,
                  'ch_3' || substr(md5('ch' || g), 1, 23) AS ch,
                  'txn_3' || substr(md5('txn' || g), 1, 23) AS txn,
                  're_3' || substr(md5('re' || g), 1, 23) AS re,
                  'txn_3' || substr(md5('txr' || g), 1, 23) AS re_txn
           FROM donor"#,
    ),
    (
        "donations",
        r#"INSERT INTO donations (id, campaign, status, frequency, amount, cover_fees_amount,
                                  total_amount, currency, donor_email, donor_first_name,
                                  donor_last_name, payment_intent_id, created_at, updated_at,
                                  payment_status, payment_status_at, charge_id, amount_received,
                                  balance_transaction_id, fee, net, refunded_amount,
                                  counted_amount, received_currency, settlement_currency)
           SELECT id, 'kashmir', 'succeeded', 'one_off', amount, cover, total, 'gbp', email,
                  first_name, last_name, pi, at, paid_at, 'succeeded', paid_at, ch, total, txn,
                  fee, total - fee, refund, least(amount, total - refund), 'gbp', 'gbp'
           FROM console_seed ORDER BY g"#,
    ),
    (
        "ledger: a gift and a Stripe fee row per donation, a refund's row",
        r#"INSERT INTO ledger_entries (kind, amount, currency, balance_transaction_id, source_id,
                                       donation_id, campaign, occurred_at, recorded_at)
           SELECT kind, amount, 'gbp', txn, source, id, 'kashmir', at, at + interval '2 seconds'
           FROM (SELECT 'gift' AS kind, total AS amount, txn, ch AS source, id, paid_at AS at
                 FROM console_seed
                 UNION ALL
                 SELECT 'stripe_fee', -fee, txn, ch, id, paid_at FROM console_seed
                 UNION ALL
                 SELECT 'refund', -refund, re_txn, re, id, paid_at + interval '1 hour'
                 FROM console_seed WHERE refund > 0) rows
           ORDER BY at, kind"#,
    ),
    (
        "refunds",
        r#"INSERT INTO refunds (id, donation_id, amount, currency, status, status_rank, updated_at)
           SELECT re, id, refund, 'gbp', 'succeeded', 2, paid_at + interval '1 hour'
           FROM console_seed WHERE refund > 0 ORDER BY g"#,
    ),
    (
        "receipts: each donation's thank-you, sent",
        r#"INSERT INTO receipts (id, donation_id, kind, status, attempts, next_attempt_at,
                                 message_id, created_at, sent_at)
           SELECT gen_random_uuid(), id, 'thank_you', 'sent', 1, paid_at,
                  '<' || id || '.thank_you@quickdonate>', paid_at, paid_at + interval '1 minute'
           FROM console_seed ORDER BY g"#,
    ),
    (
        "plan: 10,000 payouts (a temporary table)",
        r#"CREATE TEMP TABLE console_payouts AS
           SELECT payout AS n, 'po_1' || substr(md5('po' || payout), 1, 23) AS id,
                  'txn_1' || substr(md5('txp' || payout), 1, 23) AS txn,
                  (sum(total - fee - refund) - CASE WHEN payout % 500 = 0 THEN 250 ELSE 0 END)
                      ::bigint AS amount,
                  max(paid_at) + interval '1 day' AS created,
                  date_trunc('day', max(paid_at)) + interval '2 days' AS arrival
           FROM console_seed WHERE payout IS NOT NULL GROUP BY payout"#,
    ),
    (
        "payouts",
        r#"INSERT INTO payouts (id, amount, currency, status, status_rank, status_at, arrival_date,
                                created, balance_transaction_id, reconciliation_status,
                                listed_at, listed_complete, trace_id, trace_status,
                                statement_descriptor, method, automatic, updated_at)
           SELECT id, amount, 'gbp', 'paid', 3, arrival, arrival, created, txn, 'completed',
                  arrival, true, 'FPS' || upper(substr(md5('trace' || n), 1, 16)), 'supported',
                  'KASHMIR APPEAL', 'standard', true, arrival
           FROM console_payouts ORDER BY n"#,
    ),
    (
        "payout transactions: the gifts, refunds and own transaction of each, 20 unmatched",
        r#"INSERT INTO payout_transactions (payout_id, balance_transaction_id, type,
                                            reporting_category, amount, fee, net, currency,
                                            source_id, created)
           SELECT p.id, t.txn, t.type, t.category, t.amount, t.fee, t.amount - t.fee, 'gbp',
                  t.source, t.created
           FROM (SELECT payout AS n, txn, 'charge' AS type, 'charge' AS category,
                        total AS amount, fee, ch AS source, paid_at AS created
                 FROM console_seed WHERE payout IS NOT NULL
                 UNION ALL
                 SELECT payout, re_txn, 'refund', 'refund', -refund, 0, re,
                        paid_at + interval '1 hour'
                 FROM console_seed WHERE payout IS NOT NULL AND refund > 0
                 UNION ALL
                 SELECT n, txn, 'payout', 'payout', -amount, 0, id, created FROM console_payouts
                 UNION ALL
                 SELECT n, 'txn_1' || substr(md5('adjustment' || n), 1, 23), 'adjustment',
                        'other_adjustment', -250, 0, NULL, created - interval '1 hour'
                 FROM console_payouts WHERE n % 500 = 0) t
           JOIN console_payouts p ON p.n = t.n
           ORDER BY t.n, t.created"#,
    ),
    (
        "ledger: each payout's own row",
        r#"INSERT INTO ledger_entries (kind, amount, currency, balance_transaction_id, source_id,
                                       occurred_at, recorded_at)
           SELECT 'payout', -amount, 'gbp', txn, id, created, arrival
           FROM console_payouts ORDER BY n"#,
    ),
    (
        "Gift Aid declarations: every gift of 30% of donors",
        r#"INSERT INTO gift_aid_declarations (id, donation_id, donor_email, title, first_name,
                                              last_name, house_name_or_number, postcode, country,
                                              declared_at, covers_from, wording_version, wording,
                                              source)
           SELECT encode(set_byte(overlay(uuid_send(gen_random_uuid())
                                          PLACING substring(int8send((extract(epoch FROM at)
                                                                      * 1000)::bigint) FROM 3)
                                          FROM 1 FOR 6), 6, (112 + g % 16)::int), 'hex')::uuid,
                  id, email, title, first_name, last_name, house, postcode, 'United Kingdom',
                  at, at - interval '4 years', $1, $2, 'donation_form'
           FROM console_seed WHERE declares ORDER BY g"#,
    ),
    (
        "plan: the gifts claimed, every eligible one before last month (a temporary table)",
        r#"CREATE TEMP TABLE console_claimed AS
           SELECT s.*,
                  md5(month::text || ((rn - 1) / 1000 + 1))::uuid AS claim,
                  (rn - 1) / 1000 + 1 AS part, (rn - 1) % 1000 + 1 AS line,
                  s.amount - least(s.amount, greatest(0, s.refund - s.cover)) AS claimed
           FROM (SELECT s.*, date_trunc('month', s.paid_at AT TIME ZONE 'UTC') AS month,
                        row_number() OVER (PARTITION BY date_trunc('month', s.paid_at AT TIME ZONE 'UTC')
                                           ORDER BY s.paid_at, s.id) AS rn
                 FROM console_seed s
                 WHERE s.declares AND s.payout IS NOT NULL
                   AND s.paid_at < (date_trunc('month', now() AT TIME ZONE 'UTC')
                                    - interval '1 month') AT TIME ZONE 'UTC') s"#,
    ),
    (
        "Gift Aid claims",
        r#"INSERT INTO gift_aid_claims (id, created_at, created_by, range_from, range_to, part,
                                        status, status_at, hmrc_reference, amount_paid, paid_on,
                                        earliest_donation_date, overclaimed_tax)
           SELECT claim, made, 'staff:bench-admin', month AT TIME ZONE 'UTC',
                  (month + interval '1 month') AT TIME ZONE 'UTC', part,
                  CASE WHEN paid THEN 'paid' ELSE 'submitted' END,
                  CASE WHEN paid THEN made + interval '30 days' ELSE made END,
                  'CH' || upper(substr(claim::text, 1, 8)),
                  CASE WHEN paid THEN total / 4 END,
                  CASE WHEN paid THEN (made + interval '30 days')::date END, earliest, 0
           FROM (SELECT claim, month, part, sum(claimed) AS total,
                        min((paid_at AT TIME ZONE 'Europe/London')::date) AS earliest,
                        (month + interval '1 month 10 days') AT TIME ZONE 'UTC' AS made,
                        (month + interval '1 month 40 days') AT TIME ZONE 'UTC' < now() AS paid
                 FROM console_claimed GROUP BY claim, month, part) c
           ORDER BY c.made, c.part"#,
    ),
    (
        "Gift Aid claim lines",
        r#"INSERT INTO gift_aid_claim_lines (claim_id, line, title, first_name, last_name,
                                             house_name_or_number, postcode, aggregated_donations,
                                             sponsored_event, donation_date, amount)
           SELECT claim, line, coalesce(title, ''), first_name, last_name, house, postcode, '', '',
                  (paid_at AT TIME ZONE 'Europe/London')::date, claimed
           FROM console_claimed ORDER BY month, part, line"#,
    ),
    (
        "Gift Aid claimed donations",
        r#"INSERT INTO gift_aid_claimed_donations (donation_id, claim_id, line, amount)
           SELECT id, claim, line, claimed FROM console_claimed ORDER BY month, part, line"#,
    ),
    (
        "webhook events: two applied per donation",
        r#"INSERT INTO stripe_events (id, type, api_version, livemode, created, object_id,
                                      object_key, payload, source, first_received_at,
                                      last_received_at, delivery_count, state, attempts,
                                      next_attempt_at, applied_at, personal_data_removed_at)
           SELECT 'evt_3' || substr(md5(e.type || s.g), 1, 23), e.type, '2026-09-30.clover',
                  false, s.paid_at, CASE WHEN e.n = 1 THEN s.pi ELSE s.ch END, s.pi,
                  json_build_object(
                      'id', 'evt_3' || substr(md5(e.type || s.g), 1, 23), 'object', 'event',
                      'api_version', '2026-09-30.clover',
                      'created', extract(epoch FROM s.paid_at)::bigint, 'livemode', false,
                      'type', e.type, 'pending_webhooks', 1,
                      'data', json_build_object('object', json_build_object(
                          'id', CASE WHEN e.n = 1 THEN s.pi ELSE s.ch END,
                          'object', CASE WHEN e.n = 1 THEN 'payment_intent' ELSE 'charge' END,
                          'amount', s.total, 'currency', 'gbp', 'status', 'succeeded',
                          'payment_intent', s.pi, 'latest_charge', s.ch,
                          'balance_transaction', s.txn,
                          'metadata', json_build_object('donation_id', s.id,
                                                        'campaign', 'kashmir'))))::text,
                  'webhook', s.paid_at + interval '1 second', s.paid_at + interval '1 second', 1,
                  'applied', 1, s.paid_at + interval '1 second', s.paid_at + interval '2 seconds',
                  CASE WHEN s.paid_at < now() - interval '30 days'
                       THEN s.paid_at + interval '30 days' END
           FROM console_seed s
           CROSS JOIN (VALUES (1, 'payment_intent.succeeded'), (2, 'charge.succeeded')) AS e (n, type)
           ORDER BY s.g, e.n"#,
    ),
    (
        "the campaign's totals",
        r#"UPDATE campaigns
           SET raised_amount = raised_amount + (SELECT sum(total - refund) FROM console_seed),
               donation_count = donation_count + (SELECT count(*) FROM console_seed)
           WHERE slug = 'kashmir'"#,
    ),
];

/// `GET /v1/finance/donations`'s query, as `rows!` in src/finance/donations.rs has it.
const LIST: &str = r#"SELECT d.id, d.created_at, d.campaign, d.status, d.donor_email,
                      d.donor_first_name, d.donor_last_name, d.amount, d.cover_fees_amount,
                      d.total_amount, d.currency, d.fee, d.net, d.settlement_currency,
                      d.refunded_amount, d.dispute_status,
                      EXISTS (SELECT 1 FROM gift_aid_declarations g WHERE g.donation_id = d.id)
                          AS "gift_aid!",
                      d.payment_intent_id, d.charge_id,
                      (SELECT t.payout_id FROM paid_out_transactions t
                       WHERE t.balance_transaction_id = d.balance_transaction_id
                       ORDER BY t.created DESC LIMIT 1) AS payout_id,
                      d.recovered_at IS NOT NULL AS "recovered!"
               FROM donations d
               WHERE ($1::text IS NULL OR d.campaign = $1)
                 AND ($2::text IS NULL OR d.status = $2)
                 AND ($3::timestamptz IS NULL OR d.created_at >= $3)
                 AND ($4::timestamptz IS NULL OR d.created_at < $4)
                 AND ($5::timestamptz IS NULL OR (d.created_at, d.id) > ($5, $6::uuid))
                 AND ($8::uuid IS NULL OR d.id = $8)
                 AND ($9::text IS NULL OR d.payment_intent_id = $9)
                 AND ($10::text IS NULL OR d.charge_id = $10)
                 AND ($11::text IS NULL OR lower(d.donor_email) = $11)
                 AND ($12::text IS NULL OR lower(d.donor_last_name) = $12
                      OR lower(d.donor_first_name || ' ' || d.donor_last_name) = $12)
               ORDER BY d.created_at, d.id
               LIMIT $7"#;

/// What the pages are asked about: one donation of a regular donor (with a declaration, in a
/// payout and a claim), a donor with a rare surname, a payout, a claim, last month.
struct Targets {
    id: Uuid,
    payment_intent: String,
    charge: String,
    email: String,
    surname: String,
    rare_surname: String,
    rare_full_name: String,
    payout: String,
    claim: Uuid,
    month_from: String,
    month_to: String,
}

/// One page measured.
struct Page {
    label: String,
    path: String,
    /// Donations the search matches, for a search.
    matches: Option<i64>,
    requests: usize,
    kib: f64,
    measured: Measured,
}

/// The phase: seed, sign in, measure every page, explain the searches; prints its tables.
pub async fn run(
    pg: &LocalPostgres,
    stripe: &str,
    data_dir: &Path,
    db: &PgPool,
) -> anyhow::Result<()> {
    eprintln!("9/9 staff console: every page and search at a million donations");
    // A service once, for the schema and the campaign catalogue.
    let mut service = Service::start(pg, stripe, data_dir, false, 16)?;
    service.wait_ready().await?;
    service.stop()?;

    let (seeded, targets) = seed(db).await?;
    // To look at the data by hand (psql, EXPLAIN) before the pages are measured.
    if let Some(seconds) = std::env::var("BENCH_HOLD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        eprintln!(
            "  holding {seconds} s: psql -h {} -U quickdonate -d {}",
            pg.socket_dir().display(),
            super::DATABASE
        );
        tokio::time::sleep(Duration::from_secs(seconds)).await;
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(300))
        .build()?;
    let cookie = sign_in(db).await?;
    let mut service = Service::start(pg, stripe, data_dir, false, 16)?;
    let base = service.wait_ready().await?;
    let books = first_books_check(&http, &base).await?;
    let pages = measure(&http, &base, &cookie, db, &targets).await;
    let rss_kib = service.peak_rss_kib()?;
    service.stop()?;
    let pages = pages?;
    let plans = explain(db, &targets).await?;

    println!();
    println!("### The staff console at a million donations");
    println!();
    println!("| seed step | seconds |");
    println!("|---|--:|");
    for (step, took) in &seeded {
        println!("| {step} | {:.1} |", took.as_secs_f64());
    }
    let total: Duration = seeded.iter().map(|(_, took)| *took).sum();
    println!("| all | {:.1} |", total.as_secs_f64());
    println!();
    println!(
        "| page | path | matches | requests | not 200 | KiB | p50 ms | p99 ms | max ms | p99 < {TARGET_MS:.0} ms |"
    );
    println!("|---|---|--:|--:|--:|--:|--:|--:|--:|---|");
    for page in &pages {
        let p99 = page.measured.percentile(99.0);
        println!(
            "| {} | `{}` | {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {} |",
            page.label,
            page.path,
            page.matches.map_or_else(|| "-".into(), |m| m.to_string()),
            page.requests,
            page.measured.failed,
            page.kib,
            page.measured.percentile(50.0),
            p99,
            page.measured.percentile(100.0),
            if p99 < TARGET_MS && page.measured.failed == 0 {
                "yes"
            } else {
                "**no**"
            }
        );
    }
    println!();
    println!(
        "The service's first check of the books (at start, then every ten minutes) ended {:.1} s \
         after it was ready; the pages were measured after it.",
        books.as_secs_f64()
    );
    println!();
    println!(
        "One request at a time, after {WARM_UP} to warm up; up to {REQUESTS} requests a page, \
         fewer ({FEWEST} at least) where a page takes long enough that {REQUESTS} would pass {} s. \
         The service's peak RSS: {:.1} MiB.",
        BUDGET.as_secs(),
        rss_kib as f64 / 1024.0
    );
    println!();
    for (label, plan) in plans {
        println!("#### Plan: {label}");
        println!();
        println!("```");
        for line in plan {
            println!("{line}");
        }
        println!("```");
        println!();
    }
    Ok(())
}

/// Writes the data, each step timed; then vacuums, analyzes and checkpoints.
async fn seed(db: &PgPool) -> anyhow::Result<(Vec<(String, Duration)>, Targets)> {
    let mut conn = db.acquire().await?;
    for setting in [
        "SET work_mem = '256MB'",
        "SET maintenance_work_mem = '512MB'",
        "SET synchronous_commit = off",
    ] {
        sqlx::query(setting).execute(&mut *conn).await?;
    }
    let wording = quickdonate::gift_aid::declaration("Example Charity");
    let mut seeded = Vec::new();
    for (step, sql) in SEED {
        let started = Instant::now();
        let mut query = sqlx::query(*sql);
        if sql.contains("$1") {
            query = query
                .bind(quickdonate::gift_aid::DECLARATION_VERSION)
                .bind(&wording);
        }
        let done = query
            .execute(&mut *conn)
            .await
            .with_context(|| format!("seeding {step}"))?;
        let took = started.elapsed();
        eprintln!(
            "  seeded {step}: {} rows in {:.1} s",
            done.rows_affected(),
            took.as_secs_f64()
        );
        seeded.push((step.to_string(), took));
    }
    let targets = targets(&mut conn).await?;
    sqlx::query("DROP TABLE console_seed, console_payouts, console_claimed")
        .execute(&mut *conn)
        .await?;
    for (step, sql) in [
        ("VACUUM (ANALYZE)", "VACUUM (ANALYZE)"),
        ("CHECKPOINT", "CHECKPOINT"),
    ] {
        let started = Instant::now();
        sqlx::raw_sql(sql).execute(&mut *conn).await?;
        let took = started.elapsed();
        eprintln!("  {step} in {:.1} s", took.as_secs_f64());
        seeded.push((step.to_string(), took));
    }
    Ok((seeded, targets))
}

async fn targets(conn: &mut sqlx::PgConnection) -> anyhow::Result<Targets> {
    // A regular donor (about 50 gifts) with a very common surname, a declaration and a
    // mixed-case email: their first gift ten months ago, claimed, in a payout.
    let (id, payment_intent, charge, email, surname): (Uuid, String, String, String, String) =
        sqlx::query_as(
            "SELECT id, pi, ch, email, last_name FROM console_seed
             WHERE k = 1230 AND g >= 300000 AND payout IS NOT NULL ORDER BY g LIMIT 1",
        )
        .fetch_one(&mut *conn)
        .await?;
    let (rare_surname, rare_full_name): (String, String) = sqlx::query_as(
        "SELECT last_name, first_name || ' ' || last_name FROM console_seed
         WHERE k % 3 = 2 AND g >= 500000 ORDER BY g LIMIT 1",
    )
    .fetch_one(&mut *conn)
    .await?;
    let payout: String = sqlx::query_scalar("SELECT id FROM console_payouts WHERE n = 5000")
        .fetch_one(&mut *conn)
        .await?;
    let claim: Uuid =
        sqlx::query_scalar("SELECT claim FROM console_claimed ORDER BY month DESC, part LIMIT 1")
            .fetch_one(&mut *conn)
            .await?;
    let (month_from, month_to): (String, String) = sqlx::query_as(
        "SELECT to_char(date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month',
                        'YYYY-MM-DD'),
                to_char(date_trunc('month', now() AT TIME ZONE 'UTC'), 'YYYY-MM-DD')",
    )
    .fetch_one(&mut *conn)
    .await?;
    ensure!(
        email.chars().any(|c| c.is_ascii_uppercase()),
        "the target donor's email should be stored in mixed case: {email}"
    );
    Ok(Targets {
        id,
        payment_intent,
        charge,
        email,
        surname,
        rare_surname,
        rare_full_name,
        payout,
        claim,
        month_from,
        month_to,
    })
}

/// An admin account and a session for it, as passkey sign-in would leave them; the cookie.
async fn sign_in(db: &PgPool) -> anyhow::Result<String> {
    let name = "bench-admin";
    quickdonate::staff::accounts::invite(db, name, Some(Role::Admin)).await?;
    let id: Uuid = sqlx::query_scalar("SELECT id FROM staff WHERE name = $1")
        .bind(name)
        .fetch_one(db)
        .await?;
    let secret = quickdonate::staff::sessions::start(db, id).await?;
    Ok(format!("{}={secret}", quickdonate::staff::sessions::COOKIE))
}

fn encoded(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// How many donations `search` matches, as the API's query selects them.
async fn matches(db: &PgPool, search: &str) -> anyhow::Result<i64> {
    let search = Search::parse(search).context("a search")?;
    let (id, pi, charge, email, name) = bound(&search);
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM donations d
         WHERE ($1::uuid IS NULL OR d.id = $1)
           AND ($2::text IS NULL OR d.payment_intent_id = $2)
           AND ($3::text IS NULL OR d.charge_id = $3)
           AND ($4::text IS NULL OR lower(d.donor_email) = $4)
           AND ($5::text IS NULL OR lower(d.donor_last_name) = $5
                OR lower(d.donor_first_name || ' ' || d.donor_last_name) = $5)",
    )
    .bind(id)
    .bind(pi)
    .bind(charge)
    .bind(email)
    .bind(name)
    .fetch_one(db)
    .await?)
}

/// A search's parameters as the API binds them: id, PaymentIntent, charge, email, name.
type Bound = (
    Option<Uuid>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn bound(search: &Search) -> Bound {
    match search {
        Search::Id(id) => (Some(*id), None, None, None, None),
        Search::PaymentIntent(t) => (None, Some(t.clone()), None, None, None),
        Search::Charge(t) => (None, None, Some(t.clone()), None, None),
        Search::Email(t) => (None, None, None, Some(t.clone()), None),
        Search::Name(t) => (None, None, None, None, Some(t.clone())),
    }
}

/// The searches measured: label and what is typed.
fn searches(t: &Targets) -> Vec<(String, String)> {
    // The email as the donor might type it: the domain in capitals.
    let typed = match t.email.split_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_uppercase()),
        None => t.email.clone(),
    };
    vec![
        ("search: email, mixed case".into(), typed),
        (
            "search: surname, very common".into(),
            t.surname.to_lowercase(),
        ),
        ("search: surname, rare".into(), t.rare_surname.clone()),
        (
            "search: first name and surname".into(),
            t.rare_full_name.to_uppercase(),
        ),
        ("search: PaymentIntent".into(), t.payment_intent.clone()),
        ("search: charge".into(), t.charge.clone()),
        ("search: donation id".into(), t.id.to_string()),
    ]
}

async fn measure(
    http: &reqwest::Client,
    base: &str,
    cookie: &str,
    db: &PgPool,
    t: &Targets,
) -> anyhow::Result<Vec<Page>> {
    let first = get(http, base, cookie, "/staff/donations").await?.1;
    let next = next_link(&first).context("the donations list has no next page")?;
    let mut paths: Vec<(String, String, Option<i64>)> = vec![
        ("overview".into(), "/staff".into(), None),
        (
            "donations, first page".into(),
            "/staff/donations".into(),
            None,
        ),
        ("donations, next page".into(), next, None),
    ];
    for (label, typed) in searches(t) {
        let count = matches(db, &typed).await?;
        paths.push((
            label,
            format!("/staff/donations?q={}", encoded(&typed)),
            Some(count),
        ));
    }
    paths.extend([
        (
            "a donation".into(),
            format!("/staff/donations/{}", t.id),
            None,
        ),
        ("payouts".into(), "/staff/payouts".into(), None),
        (
            "payouts, with the overdue donations".into(),
            "/staff/payouts?overdue=1".into(),
            None,
        ),
        (
            "a payout".into(),
            format!("/staff/payouts/{}", t.payout),
            None,
        ),
        (
            "Gift Aid: last month's schedule".into(),
            format!("/staff/gift-aid?from={}&to={}", t.month_from, t.month_to),
            None,
        ),
        (
            "Gift Aid: the claims".into(),
            "/staff/gift-aid".into(),
            None,
        ),
        (
            "a claim".into(),
            format!("/staff/gift-aid/claims/{}", t.claim),
            None,
        ),
        ("exports".into(), "/staff/exports".into(), None),
        ("admin".into(), "/staff/admin".into(), None),
    ]);
    let mut pages = Vec::new();
    for (label, path, matches) in paths {
        let mut warm = Duration::ZERO;
        let mut bytes = 0;
        for _ in 0..WARM_UP {
            let (took, status, body) = fetch(http, base, cookie, &path).await?;
            if status != 200 {
                eprintln!("  {label}: {path} answered {status} while warming up");
            }
            if matches.is_some() {
                ensure!(
                    !body.contains("<caption>0 donation(s)"),
                    "{label}: the search found nothing"
                );
            }
            warm += took;
            bytes = body.len();
        }
        let each = warm / WARM_UP as u32;
        let requests = usize::try_from(BUDGET.as_micros() / each.as_micros().max(1))
            .unwrap_or(REQUESTS)
            .clamp(FEWEST, REQUESTS);
        eprintln!(
            "  {label}: {requests} requests ({:.0} ms each while warming up)",
            each.as_secs_f64() * 1000.0
        );
        let started = Instant::now();
        let mut latencies = Vec::with_capacity(requests);
        let mut failed = 0;
        for _ in 0..requests {
            let (took, status, _) = fetch(http, base, cookie, &path).await?;
            if status != 200 {
                failed += 1;
            }
            latencies.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        }
        latencies.sort_unstable();
        pages.push(Page {
            label,
            path,
            matches,
            requests,
            kib: bytes as f64 / 1024.0,
            measured: Measured {
                ok: requests as u64 - failed,
                failed,
                elapsed: started.elapsed(),
                latencies,
            },
        });
    }
    Ok(pages)
}

/// Waits for the service's first check of the books (upkeep runs it at start, then every ten
/// minutes), so that the pages are measured beside the usual work rather than the check's;
/// how long it took is reported apart.
async fn first_books_check(http: &reqwest::Client, base: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(600) {
        let metrics = http
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        if metrics.contains("quickdonate_books_differences{") {
            // The seed is meant to keep the books square; say where it does not (the pages
            // are measured all the same).
            for line in metrics
                .lines()
                .filter(|l| l.starts_with("quickdonate_books_differences{"))
                .filter(|l| !l.ends_with(" 0"))
            {
                eprintln!("  the seeded books differ: {line}");
            }
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("the books were never checked")
}

/// `GET path` with the session's cookie, read whole: the time, the status and the body.
async fn fetch(
    http: &reqwest::Client,
    base: &str,
    cookie: &str,
    path: &str,
) -> anyhow::Result<(Duration, u16, String)> {
    let started = Instant::now();
    let response = http
        .get(format!("{base}{path}"))
        .header("cookie", cookie)
        .send()
        .await?;
    let status = response.status().as_u16();
    let body = response.text().await?;
    Ok((started.elapsed(), status, body))
}

/// `GET path` with the session's cookie, read whole; 200 or an error. The time and the body.
async fn get(
    http: &reqwest::Client,
    base: &str,
    cookie: &str,
    path: &str,
) -> anyhow::Result<(Duration, String)> {
    let started = Instant::now();
    let response = http
        .get(format!("{base}{path}"))
        .header("cookie", cookie)
        .send()
        .await?;
    let status = response.status();
    let body = response.text().await?;
    let took = started.elapsed();
    ensure!(
        status == 200,
        "{path} answered {status}: {}",
        body.chars().take(300).collect::<String>()
    );
    Ok((took, body))
}

/// The address of a list's next page, as the page links it.
fn next_link(body: &str) -> Option<String> {
    let before = &body[..body.find("rel=\"next\"")?];
    let start = before.rfind("href=\"")? + "href=\"".len();
    let href = before[start..].split('"').next()?;
    Some(href.replace("&amp;", "&").replace("&#38;", "&"))
}

/// Where a list's next page starts: the last row's creation time and id.
type Cursor = (time::OffsetDateTime, Uuid);

/// The plan of the donations list for the first page, the next one, and each search.
async fn explain(db: &PgPool, t: &Targets) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let (at, after): (time::OffsetDateTime, Uuid) = sqlx::query_as(
        "SELECT created_at, id FROM donations ORDER BY created_at, id LIMIT 1 OFFSET 49",
    )
    .fetch_one(db)
    .await?;
    let mut cases: Vec<(String, Option<Cursor>, Bound)> = vec![
        ("donations, first page".into(), None, Default::default()),
        (
            "donations, next page".into(),
            Some((at, after)),
            Default::default(),
        ),
    ];
    for (label, typed) in searches(t) {
        let search = Search::parse(&typed).context("a search")?;
        cases.push((label, None, bound(&search)));
    }
    let sql = format!("EXPLAIN (ANALYZE, BUFFERS) {LIST}");
    let mut plans = Vec::new();
    for (label, cursor, (id, pi, charge, email, name)) in cases {
        let mut tx = db
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?;
        sqlx::query("SELECT set_config('plan_cache_mode', 'force_custom_plan', true)")
            .execute(&mut *tx)
            .await?;
        let plan: Vec<String> = sqlx::query_scalar(AssertSqlSafe(sql.as_str()))
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(None::<time::OffsetDateTime>)
            .bind(None::<time::OffsetDateTime>)
            .bind(cursor.map(|c| c.0))
            .bind(cursor.map(|c| c.1))
            .bind(51i64)
            .bind(id)
            .bind(pi)
            .bind(charge)
            .bind(email)
            .bind(name)
            .fetch_all(&mut *tx)
            .await?;
        tx.rollback().await?;
        plans.push((label, plan));
    }
    Ok(plans)
}
