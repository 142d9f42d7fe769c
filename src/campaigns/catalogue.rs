//! The campaign catalogue, `config/campaigns.toml`, loaded into Postgres at every start.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, bail, ensure};
use serde::Deserialize;
use sqlx::PgPool;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    campaigns: Vec<CampaignSpec>,
}

/// One campaign as the catalogue describes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    pub slug: String,
    pub title: String,
    pub currency: String,
    pub suggested_amounts: Vec<i64>,
    pub min_amount: i64,
    pub max_amount: i64,
    pub goal_amount: Option<i64>,
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

/// Reads and checks the catalogue at `path`.
pub fn read(path: &Path) -> anyhow::Result<Vec<CampaignSpec>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("CAMPAIGNS_FILE: cannot read {}", path.display()))?;
    parse(&text).with_context(|| format!("CAMPAIGNS_FILE: {}", path.display()))
}

fn parse(text: &str) -> anyhow::Result<Vec<CampaignSpec>> {
    let file: CatalogueFile = toml::from_str(text)?;
    let mut seen = HashSet::new();
    for campaign in &file.campaigns {
        campaign
            .check()
            .with_context(|| format!("campaign {:?}", campaign.slug))?;
        ensure!(
            seen.insert(campaign.slug.as_str()),
            "campaign {:?} is listed twice",
            campaign.slug
        );
    }
    Ok(file.campaigns)
}

impl CampaignSpec {
    fn check(&self) -> anyhow::Result<()> {
        let slug_ok = !self.slug.is_empty()
            && self.slug.len() <= 63
            && !self.slug.starts_with('-')
            && self
                .slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        ensure!(
            slug_ok,
            "slug must be lower-case letters, digits and dashes"
        );
        ensure!(!self.title.trim().is_empty(), "title must not be empty");
        ensure!(
            self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_lowercase()),
            "currency must be a lower-case ISO 4217 code such as \"gbp\""
        );
        ensure!(self.min_amount > 0, "min_amount must be more than 0");
        ensure!(
            self.max_amount >= self.min_amount,
            "max_amount must be at least min_amount"
        );
        // Stripe's own ceiling for one charge, in minor units.
        ensure!(
            self.max_amount <= 99_999_999,
            "max_amount must be at most 99999999"
        );
        if let Some(bad) = self
            .suggested_amounts
            .iter()
            .find(|a| !(self.min_amount..=self.max_amount).contains(*a))
        {
            bail!("suggested amount {bad} is outside min_amount..=max_amount");
        }
        if let Some(goal) = self.goal_amount {
            ensure!(goal > 0, "goal_amount must be more than 0");
        }
        Ok(())
    }
}

/// Makes the database's campaigns match the catalogue: inserts and updates by slug; deletes a
/// campaign that left the catalogue, or makes it inactive if it has donations.
pub async fn sync(db: &PgPool, campaigns: &[CampaignSpec]) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    for c in campaigns {
        let changed_currency = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM campaigns c JOIN donations d ON d.campaign = c.slug
                              WHERE c.slug = $1 AND c.currency <> $2) AS "changed!""#,
            c.slug,
            c.currency
        )
        .fetch_one(&mut *tx)
        .await?;
        ensure!(
            !changed_currency,
            "CAMPAIGNS_FILE: campaign {:?} has donations in another currency; its currency cannot change",
            c.slug
        );
        sqlx::query!(
            r#"INSERT INTO campaigns (slug, title, currency, suggested_amounts, min_amount,
                                      max_amount, goal_amount, active)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
               ON CONFLICT (slug) DO UPDATE SET
                   title = EXCLUDED.title, currency = EXCLUDED.currency,
                   suggested_amounts = EXCLUDED.suggested_amounts,
                   min_amount = EXCLUDED.min_amount, max_amount = EXCLUDED.max_amount,
                   goal_amount = EXCLUDED.goal_amount, active = EXCLUDED.active,
                   updated_at = now()"#,
            c.slug,
            c.title,
            c.currency,
            &c.suggested_amounts,
            c.min_amount,
            c.max_amount,
            c.goal_amount,
            c.active
        )
        .execute(&mut *tx)
        .await?;
    }

    let listed: Vec<String> = campaigns.iter().map(|c| c.slug.clone()).collect();
    let deleted = sqlx::query_scalar!(
        r#"DELETE FROM campaigns c
           WHERE NOT (c.slug = ANY($1))
             AND NOT EXISTS (SELECT 1 FROM donations d WHERE d.campaign = c.slug)
           RETURNING slug"#,
        &listed
    )
    .fetch_all(&mut *tx)
    .await?;
    let retired = sqlx::query_scalar!(
        r#"UPDATE campaigns SET active = false, updated_at = now()
           WHERE NOT (slug = ANY($1)) AND active
           RETURNING slug"#,
        &listed
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;

    tracing::info!(
        loaded = campaigns.len(),
        ?deleted,
        made_inactive = ?retired,
        "campaign catalogue loaded"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalogue_has_the_kashmir_campaign() {
        let campaigns = read(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/campaigns.toml"
        )))
        .unwrap();
        let kashmir = campaigns.iter().find(|c| c.slug == "kashmir").unwrap();
        assert_eq!(kashmir.title, "Kashmir Campaign");
        assert_eq!(kashmir.currency, "gbp");
        assert_eq!(kashmir.suggested_amounts, [1000, 2500, 5000, 10000]);
        assert_eq!((kashmir.min_amount, kashmir.max_amount), (200, 1_000_000));
        assert!(kashmir.active);
    }

    #[test]
    fn a_bad_campaign_is_refused_with_its_slug() {
        let base = r#"
            [[campaigns]]
            slug = "x"
            title = "X"
            currency = "gbp"
            suggested_amounts = [500]
            min_amount = 200
            max_amount = 1000
        "#;
        assert!(parse(base).is_ok());
        for (from, to, slug, rule) in [
            (
                "slug = \"x\"",
                "slug = \"Bad Slug\"",
                "Bad Slug",
                "slug must be lower-case letters, digits and dashes",
            ),
            (
                "currency = \"gbp\"",
                "currency = \"GBP\"",
                "x",
                "currency must be a lower-case ISO 4217 code such as \"gbp\"",
            ),
            (
                "min_amount = 200",
                "min_amount = 0",
                "x",
                "min_amount must be more than 0",
            ),
            (
                "max_amount = 1000",
                "max_amount = 100",
                "x",
                "max_amount must be at least min_amount",
            ),
            (
                "max_amount = 1000",
                "max_amount = 100000000",
                "x",
                "max_amount must be at most 99999999",
            ),
            (
                "[500]",
                "[5000]",
                "x",
                "suggested amount 5000 is outside min_amount..=max_amount",
            ),
            (
                "title = \"X\"",
                "title = \" \"",
                "x",
                "title must not be empty",
            ),
            (
                "max_amount = 1000",
                "max_amount = 1000\ngoal_amount = 0",
                "x",
                "goal_amount must be more than 0",
            ),
        ] {
            let error = format!("{:#}", parse(&base.replace(from, to)).expect_err(to));
            assert_eq!(error, format!("campaign {slug:?}: {rule}"), "{to}");
        }
        // An unknown key fails in the TOML reader, before any campaign has a slug: it names the
        // key and its line instead.
        let unknown = format!("{base}colour = \"red\"\n");
        let error = format!("{:#}", parse(&unknown).unwrap_err());
        assert!(error.contains("unknown field `colour`"), "{error}");
        assert!(error.contains("line 9"), "{error}");
        let twice = format!("{base}{base}");
        assert_eq!(
            format!("{:#}", parse(&twice).unwrap_err()),
            "campaign \"x\" is listed twice"
        );
    }
}
