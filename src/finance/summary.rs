//! A campaign's money over a period, from the ledger: gross, fees, refunds, disputes and net,
//! in each settlement currency, in total and per day (UK calendar days).

use serde::Serialize;
use sqlx::PgPool;
use time::{Date, OffsetDateTime};

use crate::http::problem::Problem;

/// The figures of a period, in one settlement currency. Every amount is positive (money in or
/// money out, as named) except `net`, the sum of every ledger row: what the balance gained.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = SummaryFigures)]
pub struct Figures {
    pub currency: String,
    /// Succeeded gifts received, gross (with fee cover).
    pub count: i64,
    pub gross: i64,
    /// The part of `gross` donors added to cover the fee: each gift's share of what Stripe
    /// received, in the settlement currency like every other figure (exactly the cover when
    /// Stripe settles in the gift's currency).
    pub fee_cover: i64,
    pub fees: i64,
    /// Refunded, less refunds that failed and came back.
    pub refunds: i64,
    /// Withdrawn by disputes the charity lost.
    pub dispute_losses: i64,
    /// Withdrawn by disputes not yet decided.
    pub disputes_open: i64,
    pub dispute_fees: i64,
    pub net: i64,
}

impl Figures {
    fn add(&mut self, other: &Figures) {
        self.count += other.count;
        self.gross += other.gross;
        self.fee_cover += other.fee_cover;
        self.fees += other.fees;
        self.refunds += other.refunds;
        self.dispute_losses += other.dispute_losses;
        self.disputes_open += other.disputes_open;
        self.dispute_fees += other.dispute_fees;
        self.net += other.net;
    }
}

/// One UK calendar day's figures.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = SummaryDay)]
pub struct Day {
    /// `YYYY-MM-DD`.
    #[schema(format = Date)]
    pub date: String,
    #[serde(flatten)]
    pub figures: Figures,
}

/// A campaign's money over a period, from the ledger.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = CampaignSummary)]
pub struct Summary {
    pub campaign: String,
    /// One entry per settlement currency.
    pub totals: Vec<Figures>,
    pub days: Vec<Day>,
}

/// The summary of `campaign`'s ledger rows that occurred in [`from`, `to`).
pub async fn summarize(
    db: &PgPool,
    campaign: &str,
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
) -> sqlx::Result<Summary> {
    let rows = sqlx::query!(
        r#"SELECT (l.occurred_at AT TIME ZONE 'Europe/London')::date AS "day!", l.currency,
                  count(*) FILTER (WHERE l.kind = 'gift') AS "count!",
                  coalesce(sum(l.amount) FILTER (WHERE l.kind = 'gift'), 0)::bigint AS "gross!",
                  coalesce(sum(round(l.amount::numeric * d.cover_fees_amount
                                     / nullif(d.total_amount, 0)))
                           FILTER (WHERE l.kind = 'gift'), 0)::bigint AS "fee_cover!",
                  coalesce(-sum(l.amount) FILTER (WHERE l.kind = 'stripe_fee'), 0)::bigint
                      AS "fees!",
                  coalesce(-sum(l.amount) FILTER (WHERE l.kind IN ('refund', 'refund_failure')),
                           0)::bigint AS "refunds!",
                  coalesce(-sum(l.amount) FILTER (
                      WHERE l.kind IN ('dispute_withdrawal', 'dispute_reinstatement')
                        AND x.status = 'lost'), 0)::bigint AS "dispute_losses!",
                  coalesce(-sum(l.amount) FILTER (
                      WHERE l.kind IN ('dispute_withdrawal', 'dispute_reinstatement')
                        AND x.status IS DISTINCT FROM 'lost'), 0)::bigint AS "disputes_open!",
                  coalesce(-sum(l.amount) FILTER (WHERE l.kind = 'dispute_fee'), 0)::bigint
                      AS "dispute_fees!",
                  sum(l.amount)::bigint AS "net!"
           FROM ledger_entries l
           LEFT JOIN donations d ON d.id = l.donation_id
           LEFT JOIN disputes x ON x.id = l.source_id
           WHERE l.campaign = $1
             AND ($2::timestamptz IS NULL OR l.occurred_at >= $2)
             AND ($3::timestamptz IS NULL OR l.occurred_at < $3)
           GROUP BY 1, 2 ORDER BY 1, 2"#,
        campaign,
        from,
        to
    )
    .fetch_all(db)
    .await?;
    let mut totals: Vec<Figures> = Vec::new();
    let mut days = Vec::new();
    for r in rows {
        let figures = Figures {
            currency: r.currency,
            count: r.count,
            gross: r.gross,
            fee_cover: r.fee_cover,
            fees: r.fees,
            refunds: r.refunds,
            dispute_losses: r.dispute_losses,
            disputes_open: r.disputes_open,
            dispute_fees: r.dispute_fees,
            net: r.net,
        };
        match totals.iter_mut().find(|t| t.currency == figures.currency) {
            Some(total) => total.add(&figures),
            None => totals.push(figures.clone()),
        }
        days.push(Day {
            date: iso_date(r.day),
            figures,
        });
    }
    totals.sort_by(|a, b| a.currency.cmp(&b.currency));
    Ok(Summary {
        campaign: campaign.to_owned(),
        totals,
        days,
    })
}

fn iso_date(date: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// `GET /v1/finance/campaigns/{slug}/summary?from=&to=`: JSON, or the days as CSV.
#[utoipa::path(
    get,
    path = "/v1/finance/campaigns/{slug}/summary",
    operation_id = "showCampaignSummary",
    tag = "finance",
    summary = "A campaign's money over a period",
    description = "Gross, fee cover, fees, refunds, disputes and net from the ledger, in each \
                   settlement currency, in total and per UK calendar day; as CSV \
                   (`Accept: text/csv`), the days. Any finance token; audited.",
    security(("bearerAuth" = [])),
    params(
        ("slug" = String, Path, description = "The campaign's slug."),
        crate::http::query::RangeParams,
    ),
    responses(
        (status = 200, description = "The summary, or its days as CSV.", content(
            (Summary = "application/json"),
            (String = "text/csv"),
        )),
        (status = 404, description = "`/problems/not-found`: no such campaign.",
         body = crate::http::problem::Problem, content_type = "application/problem+json"),
        crate::operators::access::Refusals,
        crate::http::export::NotAcceptable,
        crate::http::query::BadParameter,
    ),
)]
pub async fn show(
    axum::extract::State(state): axum::extract::State<super::FinanceState>,
    caller: crate::operators::access::Caller,
    axum::extract::Path(slug): axum::extract::Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: axum::http::HeaderMap,
) -> crate::http::problem::ApiResult<axum::response::Response> {
    use crate::http::export::{self, Cell, CsvChunks, Format};
    use axum::response::IntoResponse;

    let params = crate::http::query::Params::parse(query.as_deref(), &["from", "to"])?;
    let format = export::negotiate(&headers, &[Format::Json, Format::Csv])?;
    let (from, to) = params.range()?;
    if crate::campaigns::find(&state.db, &slug).await?.is_none() {
        return Err(Problem::unknown("campaign", "campaign", &slug).into());
    }
    let summary = summarize(&state.reads.pool, &slug, from, to).await?;
    let mut filters = params.filters();
    filters["campaign"] = serde_json::json!(slug);
    crate::operators::audit::record(
        &state.db,
        &caller,
        "GET /v1/finance/campaigns/{slug}/summary",
        &filters,
        summary.days.len() as i64,
    )
    .await?;
    if format == Format::Json {
        return Ok(axum::Json(summary).into_response());
    }
    let mut csv = CsvChunks::new();
    let write = |csv: &mut CsvChunks| -> std::io::Result<()> {
        csv.header(&[
            "date",
            "currency",
            "count",
            "gross",
            "fee_cover",
            "fees",
            "refunds",
            "dispute_losses",
            "disputes_open",
            "dispute_fees",
            "net",
        ])?;
        for day in &summary.days {
            let f = &day.figures;
            csv.row(&[
                Cell::Text(&day.date),
                Cell::Text(&f.currency),
                Cell::Int(f.count),
                Cell::Int(f.gross),
                Cell::Int(f.fee_cover),
                Cell::Int(f.fees),
                Cell::Int(f.refunds),
                Cell::Int(f.dispute_losses),
                Cell::Int(f.disputes_open),
                Cell::Int(f.dispute_fees),
                Cell::Int(f.net),
            ])?;
        }
        Ok(())
    };
    write(&mut csv).map_err(anyhow::Error::from)?;
    let bytes = csv.take().map_err(anyhow::Error::from)?;
    Ok(export::csv_response(
        &format!("summary-{slug}"),
        axum::body::Body::from(bytes),
    ))
}
