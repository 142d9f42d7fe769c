//! `GET /staff`: the overview. Today, this week (from Monday) and this month per campaign, from
//! each campaign's summary over the last 90 UK days (`GET /v1/finance/campaigns/{slug}/summary`);
//! a chart of the daily totals, drawn on the server as SVG shapes with their figures as text
//! (readable without colour, and without the chart at all: the same figures are a table); and
//! what needs attention: payouts with a difference (`GET /v1/finance/payouts`), donations
//! overdue for a payout (`.../payouts/overdue-donations`) and Gift Aid about to pass the 4-year
//! limit (`.../gift-aid/expiring`).

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use time::{Date, Duration, OffsetDateTime};

use super::{Shell, failed_page, html, money};
use crate::staff::StaffState;
use crate::staff::api::{Api, Failed, path_with};
use crate::staff::sessions::Signed;

/// How many days the chart shows.
const DAYS: i64 = 90;

#[derive(Deserialize)]
struct Campaigns {
    campaigns: Vec<CampaignView>,
}

#[derive(Deserialize)]
struct CampaignView {
    slug: String,
    title: String,
}

#[derive(Deserialize)]
struct Summary {
    days: Vec<DayView>,
}

#[derive(Deserialize, Clone)]
struct DayView {
    date: String,
    currency: String,
    count: i64,
    gross: i64,
    fees: i64,
    net: i64,
    refunds: i64,
    disputes_open: i64,
}

/// One period's figures in one currency.
#[derive(Default, Clone)]
pub struct Figures {
    pub currency: String,
    pub count: i64,
    pub gross: String,
    pub fees: String,
    pub net: String,
    pub refunds: String,
    pub disputes_open: String,
}

pub struct Period {
    pub name: &'static str,
    pub figures: Vec<Figures>,
}

pub struct CampaignFigures {
    pub slug: String,
    pub title: String,
    pub periods: Vec<Period>,
    pub chart: Chart,
}

/// The daily totals as bars: heights from the largest day, each bar labelled.
pub struct Chart {
    /// Whether any day had a gift.
    pub any: bool,
    pub currency: String,
    pub max: String,
    pub bars: Vec<Bar>,
    pub width: i64,
}

pub struct Bar {
    pub x: i64,
    pub y: i64,
    pub height: i64,
    pub label: String,
}

/// Chart height in SVG units.
const HEIGHT: i64 = 120;
const BAR: i64 = 6;

/// The sums of `days` from `since` on, per currency.
fn sum_since(days: &[DayView], since: Date) -> Vec<Figures> {
    let mut sums: Vec<(String, [i64; 6])> = Vec::new();
    for day in days
        .iter()
        .filter(|day| day.date.as_str() >= since.to_string().as_str())
    {
        let at = match sums.iter().position(|(c, _)| *c == day.currency) {
            Some(at) => at,
            None => {
                sums.push((day.currency.clone(), [0; 6]));
                sums.len() - 1
            }
        };
        let s = &mut sums[at].1;
        s[0] += day.count;
        s[1] += day.gross;
        s[2] += day.fees;
        s[3] += day.net;
        s[4] += day.refunds;
        s[5] += day.disputes_open;
    }
    sums.into_iter()
        .map(|(currency, s)| Figures {
            count: s[0],
            gross: money(s[1], &currency),
            fees: money(s[2], &currency),
            net: money(s[3], &currency),
            refunds: money(s[4], &currency),
            disputes_open: money(s[5], &currency),
            currency,
        })
        .collect()
}

/// The chart of the gross of each of the last [`DAYS`] days to `today`, in the currency most
/// days have.
fn chart(days: &[DayView], today: Date) -> Chart {
    let currency = days
        .first()
        .map_or_else(|| "gbp".to_owned(), |day| day.currency.clone());
    let gross_on = |date: Date| {
        let date = date.to_string();
        days.iter()
            .filter(|day| day.date == date && day.currency == currency)
            .map(|day| day.gross)
            .sum::<i64>()
    };
    let dates: Vec<Date> = (0..DAYS)
        .rev()
        .map(|back| today - Duration::days(back))
        .collect();
    let values: Vec<i64> = dates.iter().map(|&date| gross_on(date)).collect();
    let largest = values.iter().copied().max().unwrap_or(0);
    let max = largest.max(1);
    let bars = dates
        .iter()
        .zip(&values)
        .enumerate()
        .map(|(i, (date, &value))| {
            let height = if value > 0 {
                (value * HEIGHT / max).max(1)
            } else {
                0
            };
            Bar {
                x: i as i64 * BAR,
                y: HEIGHT - height,
                height,
                label: format!("{date}: {}", money(value, &currency)),
            }
        })
        .collect();
    Chart {
        any: largest > 0,
        max: money(max, &currency),
        currency,
        bars,
        width: DAYS * BAR,
    }
}

#[derive(Deserialize)]
struct PayoutPage {
    data: Vec<PayoutView>,
}

#[derive(Deserialize)]
struct PayoutView {
    id: String,
    amount: i64,
    currency: String,
    difference: Option<i64>,
}

#[derive(Deserialize)]
struct Overdue {
    data: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Expiring {
    expiring: Vec<serde_json::Value>,
    expired: Vec<serde_json::Value>,
}

/// A line of "needs attention".
pub struct Attention {
    pub text: String,
    pub link: String,
}

async fn attention(api: &Api, signed: &Signed) -> Result<Vec<Attention>, Failed> {
    let mut items = Vec::new();
    let payouts: PayoutPage = api.get(signed, "/v1/finance/payouts?limit=100").await?;
    for payout in payouts.data {
        if let Some(difference) = payout.difference.filter(|d| *d != 0) {
            items.push(Attention {
                text: format!(
                    "Payout {} ({}) differs from the ledger by {}",
                    payout.id,
                    money(payout.amount, &payout.currency),
                    money(difference, &payout.currency)
                ),
                link: format!("/staff/payouts/{}", payout.id),
            });
        }
    }
    let overdue: Overdue = api
        .get(signed, "/v1/finance/payouts/overdue-donations?limit=100")
        .await?;
    if !overdue.data.is_empty() {
        items.push(Attention {
            text: format!(
                "{}{} donation(s) overdue for a payout",
                overdue.data.len(),
                if overdue.data.len() == 100 { "+" } else { "" }
            ),
            link: "/staff/payouts?overdue=1".into(),
        });
    }
    let expiring: Expiring = api
        .get(signed, "/v1/finance/gift-aid/expiring?within=90d")
        .await?;
    if !expiring.expiring.is_empty() {
        items.push(Attention {
            text: format!(
                "{} gift(s) with Gift Aid to claim within 90 days, or never",
                expiring.expiring.len()
            ),
            link: "/staff/gift-aid".into(),
        });
    }
    if !expiring.expired.is_empty() {
        items.push(Attention {
            text: format!(
                "{} gift(s) past HMRC's 4-year limit in the last two years, never claimed",
                expiring.expired.len()
            ),
            link: "/staff/gift-aid".into(),
        });
    }
    Ok(items)
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    shell: Shell,
    today: String,
    campaigns: Vec<CampaignFigures>,
    attention: Vec<Attention>,
}

/// `GET /staff`: the overview.
#[utoipa::path(
    get,
    path = "/staff",
    operation_id = "staffOverview",
    tag = "staff console",
    summary = "The console's overview",
    description = "Today, this week and this month per campaign, the last 90 days as a chart, \
                   and what needs attention. Signed out: a redirect to `/staff/login`.",
    responses(
        (status = 200, description = "The page.", body = String, content_type = "text/html"),
        (status = 303, description = "Not signed in: to the sign-in page."),
    ),
)]
pub async fn page(
    State(state): State<StaffState>,
    axum::Extension(api): axum::Extension<Api>,
    signed: Signed,
) -> Response {
    match overview(&state, &api, &signed).await {
        Ok(page) => html(StatusCode::OK, page),
        Err(failed) => failed_page(failed),
    }
}

async fn overview(state: &StaffState, api: &Api, signed: &Signed) -> Result<OverviewPage, Failed> {
    let today = crate::timestamps::uk_date(OffsetDateTime::now_utc());
    let first = today - Duration::days(DAYS - 1);
    let month = today.replace_day(1).expect("every month has a first day");
    let week = today - Duration::days(i64::from(today.weekday().number_days_from_monday()));
    // From midnight UTC of the chart's first UK day less a day: the summary's days are UK days,
    // and a day outside the chart is left out of every sum below.
    let from = crate::timestamps::rfc3339((first - Duration::days(1)).midnight().assume_utc());
    let listed: Campaigns = api.get(signed, "/v1/campaigns").await?;
    let mut campaigns = Vec::new();
    for campaign in listed.campaigns {
        let path = path_with(
            &format!("/v1/finance/campaigns/{}/summary", campaign.slug),
            &[("from", &from)],
        );
        let summary: Summary = api.get(signed, &path).await?;
        let days: Vec<DayView> = summary
            .days
            .into_iter()
            .filter(|day| day.date.as_str() >= first.to_string().as_str())
            .collect();
        campaigns.push(CampaignFigures {
            periods: vec![
                Period {
                    name: "Today",
                    figures: sum_since(&days, today),
                },
                Period {
                    name: "This week",
                    figures: sum_since(&days, week),
                },
                Period {
                    name: "This month",
                    figures: sum_since(&days, month),
                },
            ],
            chart: chart(&days, today),
            slug: campaign.slug,
            title: campaign.title,
        });
    }
    Ok(OverviewPage {
        shell: Shell::signed_in(state, signed, "Overview", "overview"),
        today: today.to_string(),
        campaigns,
        attention: attention(api, signed).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn day(date: &str, gross: i64) -> DayView {
        DayView {
            date: date.into(),
            currency: "gbp".into(),
            count: 1,
            gross,
            fees: 10,
            net: gross - 10,
            refunds: 0,
            disputes_open: 0,
        }
    }

    #[test]
    fn periods_sum_the_days_from_their_first() {
        let days = [
            day("2026-12-01", 1000),
            day("2026-12-06", 2000),
            day("2026-12-07", 500),
        ];
        let today = sum_since(&days, date!(2026 - 12 - 07));
        assert_eq!((today[0].count, today[0].gross.as_str()), (1, "£5.00"));
        let week = sum_since(&days, date!(2026 - 12 - 07));
        assert_eq!(week[0].count, 1);
        let month = sum_since(&days, date!(2026 - 12 - 01));
        assert_eq!((month[0].count, month[0].gross.as_str()), (3, "£35.00"));
        assert_eq!(month[0].net, "£34.70");
    }

    #[test]
    fn the_chart_has_a_bar_per_day_scaled_to_the_largest() {
        let days = [day("2026-12-06", 2000), day("2026-12-07", 500)];
        let chart = chart(&days, date!(2026 - 12 - 07));
        assert_eq!(chart.bars.len(), DAYS as usize);
        let last = chart.bars.last().unwrap();
        assert_eq!(
            (last.height, last.label.as_str()),
            (HEIGHT / 4, "2026-12-07: £5.00")
        );
        let before = &chart.bars[DAYS as usize - 2];
        assert_eq!((before.height, before.y), (HEIGHT, 0));
        assert_eq!(chart.bars[0].height, 0);
        assert_eq!(chart.max, "£20.00");
    }
}
