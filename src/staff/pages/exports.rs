//! `GET /staff/exports`: every download finance needs, and `GET /staff/exports/{file}`, which
//! answers each straight from the finance API's own export (CSV, or HMRC's workbook), streamed
//! from the database: the download starts with the first row, whatever the size.

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::{Shell, failed_page, html, read_pairs, refusal_page};
use crate::staff::StaffState;
use crate::staff::api::{Api, encoded, path_with};
use crate::staff::sessions::Signed;

const CSV: &str = "text/csv";
const ODS: &str = "application/vnd.oasis.opendocument.spreadsheet";

/// A download: the API's path, the query parameters it passes on, its format.
struct Download {
    path: String,
    passed: &'static [&'static str],
    accept: &'static str,
}

/// What `file` downloads; `id` and `campaign` name the one thing some of them are of.
fn download(file: &str, id: &str, campaign: &str) -> Option<Download> {
    let (path, passed, accept): (String, &'static [&'static str], _) = match file {
        "donations.csv" => (
            "/v1/finance/donations".into(),
            &["q", "campaign", "status", "from", "to"],
            CSV,
        ),
        "payouts.csv" => (
            "/v1/finance/payouts".into(),
            &["status", "from", "to", "arrival_from", "arrival_to"],
            CSV,
        ),
        "payout.csv" if !id.is_empty() => {
            (format!("/v1/finance/payouts/{}", encoded(id)), &[], CSV)
        }
        "overdue-donations.csv" => (
            "/v1/finance/payouts/overdue-donations".into(),
            &["days"],
            CSV,
        ),
        "summary.csv" if !campaign.is_empty() => (
            format!("/v1/finance/campaigns/{}/summary", encoded(campaign)),
            &["from", "to"],
            CSV,
        ),
        "gift-aid-schedule.ods" | "gift-aid-schedule.csv" => (
            "/v1/finance/gift-aid/schedule".into(),
            &["from", "to", "part"],
            if file.ends_with(".ods") { ODS } else { CSV },
        ),
        "gift-aid-claim.ods" | "gift-aid-claim.csv" if !id.is_empty() => (
            format!("/v1/finance/gift-aid/claims/{}", encoded(id)),
            &[],
            if file.ends_with(".ods") { ODS } else { CSV },
        ),
        "audit.csv" => ("/v1/finance/audit".into(), &["from", "to"], CSV),
        _ => return None,
    };
    Some(Download {
        path,
        passed,
        accept,
    })
}

#[derive(Deserialize)]
struct Campaigns {
    campaigns: Vec<CampaignView>,
}

#[derive(Deserialize)]
struct CampaignView {
    slug: String,
    title: String,
}

#[derive(Template)]
#[template(path = "exports.html")]
struct ExportsPage {
    shell: Shell,
    campaigns: Vec<(String, String)>,
    admin: bool,
}

/// `GET /staff/exports`: the downloads.
#[utoipa::path(
    get,
    path = "/staff/exports",
    operation_id = "staffExports",
    tag = "staff console",
    summary = "The console's exports",
    description = "Every download: donations, payouts, overdue donations, each campaign's \
                   summary, Gift Aid, the audit log (admins).",
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
    let campaigns: Campaigns = match api.get(&signed, "/v1/campaigns").await {
        Ok(campaigns) => campaigns,
        Err(failed) => return failed_page(failed),
    };
    html(
        StatusCode::OK,
        ExportsPage {
            shell: Shell::signed_in(&state, &signed, "Exports", "exports"),
            campaigns: campaigns
                .campaigns
                .into_iter()
                .map(|c| (c.slug, c.title))
                .collect(),
            admin: signed.is_admin(),
        },
    )
}

/// `GET /staff/exports/{file}`: one download, as the finance API exports it.
#[utoipa::path(
    get,
    path = "/staff/exports/{file}",
    operation_id = "staffExport",
    tag = "staff console",
    summary = "A download from the console",
    description = "`donations.csv`, `payouts.csv`, `payout.csv?id=`, `overdue-donations.csv`, \
                   `summary.csv?campaign=`, `gift-aid-schedule.ods|csv?from=&to=&part=`, \
                   `gift-aid-claim.ods|csv?id=` or `audit.csv` (admins), with the filters of \
                   the finance API's export; streamed as the API streams it, and audited as \
                   its reads are.",
    params(("file" = String, Path, description = "What to download.")),
    responses(
        (status = 200, description = "The file.", body = String, content_type = "text/csv"),
        (status = 303, description = "Not signed in: to the sign-in page."),
        (status = 404, description = "No such download.", body = String,
         content_type = "text/html"),
    ),
)]
pub async fn file(
    axum::Extension(api): axum::Extension<Api>,
    signed: Signed,
    Path(file): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    #[derive(Deserialize, Default)]
    struct Which {
        #[serde(default)]
        id: String,
        #[serde(default)]
        campaign: String,
    }
    let query = query.unwrap_or_default();
    let which: Which = read_pairs(query.as_bytes()).unwrap_or_default();
    let Some(download) = download(&file, &which.id, &which.campaign) else {
        return refusal_page(
            StatusCode::NOT_FOUND,
            "No such download",
            "The exports page lists every download there is.",
        );
    };
    let given: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| download.passed.contains(&key.as_ref()))
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    let pairs: Vec<(&str, &str)> = given
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    match api
        .download(&signed, &path_with(&download.path, &pairs), download.accept)
        .await
    {
        Ok(response) => response,
        Err(failed) => failed_page(failed),
    }
}
