//! What a receipt says: the gift, its campaign and date, the charity's name and registration
//! number, and the Gift Aid statement if one was declared. Never card details.

use lettre::Message;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MessageBuilder};
use time::OffsetDateTime;
use time::macros::format_description;
use uuid::Uuid;

use super::{REFUND_NOTICE, THANK_YOU};
use crate::money;

/// Who sends receipts, and the charity they speak for.
#[derive(Debug, Clone)]
pub struct Charity {
    pub from: Mailbox,
    pub name: String,
    pub number: String,
}

impl Charity {
    /// As configured (`RECEIPT_FROM`, `CHARITY_NAME`, `CHARITY_NUMBER`).
    pub fn new(config: &crate::config::Receipts) -> Self {
        Self {
            from: config.from.clone(),
            name: config.charity_name.clone(),
            number: config.charity_number.clone(),
        }
    }
}

/// A receipt and the donation it is about, as read when it is sent.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub id: Uuid,
    pub kind: String,
    pub message_id: String,
    pub donor_email: String,
    pub donor_first_name: String,
    pub donor_last_name: String,
    pub campaign_title: String,
    /// The gift: what the charity is given, and all Gift Aid is claimed on.
    pub amount: i64,
    /// The card fee the donor chose to cover, on top of the gift (0 if they did not).
    pub cover_fees_amount: i64,
    /// What the card was charged: the gift and the fee cover.
    pub total_amount: i64,
    pub refunded_amount: i64,
    pub currency: String,
    /// When the payment succeeded (else when the donation was made).
    pub paid_at: OffsetDateTime,
    pub gift_aid_declared: bool,
}

/// The email for `receipt`, with a Message-ID of its own (the same at every attempt, so a
/// second delivery after a crash is recognisable as the same message).
pub fn compose(receipt: &Receipt, charity: &Charity) -> anyhow::Result<Message> {
    let to = Mailbox::new(
        Some(
            format!("{} {}", receipt.donor_first_name, receipt.donor_last_name)
                .trim()
                .to_owned(),
        )
        .filter(|name| !name.is_empty()),
        receipt.donor_email.parse()?,
    );
    let domain = charity.from.email.domain();
    let builder: MessageBuilder = Message::builder()
        .from(charity.from.clone())
        .to(to)
        .message_id(Some(format!("<{}@{domain}>", receipt.message_id)))
        .header(ContentType::TEXT_PLAIN);
    let (subject, body) = match receipt.kind.as_str() {
        THANK_YOU => (
            format!("Thank you for your donation to {}", charity.name),
            thank_you(receipt, charity),
        ),
        REFUND_NOTICE => (
            format!("Your donation to {} has been refunded", charity.name),
            refund_notice(receipt, charity),
        ),
        other => anyhow::bail!("a receipt of an unknown kind {other:?}"),
    };
    Ok(builder.subject(subject).body(body)?)
}

fn thank_you(receipt: &Receipt, charity: &Charity) -> String {
    let money = |amount| money::format(amount, &receipt.currency);
    let mut body = if receipt.cover_fees_amount > 0 {
        // Said apart, so that no one reads the fee cover as part of the gift (it is not, for
        // the charity's totals or for Gift Aid).
        format!(
            "Dear {name},\n\nThank you for your donation to {campaign}, received on {date}.\n\n\
             Your gift:             {gift}\n\
             Card fee you covered:  {cover}\n\
             Total charged:         {total}\n",
            name = greeting(receipt),
            campaign = receipt.campaign_title,
            date = day(receipt.paid_at),
            gift = money(receipt.amount),
            cover = money(receipt.cover_fees_amount),
            total = money(receipt.total_amount),
        )
    } else {
        format!(
            "Dear {name},\n\nThank you for your donation of {amount} to {campaign}, received on \
             {date}.\n",
            name = greeting(receipt),
            amount = money(receipt.total_amount),
            campaign = receipt.campaign_title,
            date = day(receipt.paid_at),
        )
    };
    if receipt.gift_aid_declared {
        body.push_str(&format!(
            "\nYou made this Gift Aid declaration:\n\n\"{}\"\n\n{}\n",
            crate::gift_aid::declaration(&charity.name),
            gift_aid_basis(receipt, &money)
        ));
    }
    body.push_str(&footer(receipt, charity));
    body
}

/// What Gift Aid is claimed on, as `gift_aid` claims it: the gift alone, in pounds,
/// never the fee cover.
fn gift_aid_basis(receipt: &Receipt, money: &impl Fn(i64) -> String) -> String {
    if !receipt
        .currency
        .eq_ignore_ascii_case(crate::gift_aid::CURRENCY)
    {
        return "Gift Aid is claimed only on gifts in pounds sterling, so none is claimed on \
                this one."
            .to_owned();
    }
    let gift = money(receipt.amount);
    if receipt.cover_fees_amount > 0 {
        format!(
            "Gift Aid is claimed on your gift of {gift} alone, not on the {} card fee you \
             covered.",
            money(receipt.cover_fees_amount)
        )
    } else {
        format!("Gift Aid is claimed on your gift of {gift}.")
    }
}

fn refund_notice(receipt: &Receipt, charity: &Charity) -> String {
    format!(
        "Dear {name},\n\nYour donation of {amount} to {campaign}, made on {date}, has been \
         refunded in full. The money goes back to the card it came from.\n{footer}",
        name = greeting(receipt),
        amount = money::format(receipt.refunded_amount, &receipt.currency),
        campaign = receipt.campaign_title,
        date = day(receipt.paid_at),
        footer = footer(receipt, charity),
    )
}

fn greeting(receipt: &Receipt) -> &str {
    if receipt.donor_first_name.trim().is_empty() {
        "Supporter"
    } else {
        receipt.donor_first_name.trim()
    }
}

fn footer(receipt: &Receipt, charity: &Charity) -> String {
    format!(
        "\n{name}, registered charity number {number}.\nReceipt reference: {id}\n",
        name = charity.name,
        number = charity.number,
        id = receipt.id,
    )
}

fn day(at: OffsetDateTime) -> String {
    at.format(format_description!(
        "[day padding:none] [month repr:long] [year]"
    ))
    .unwrap_or_else(|_| at.date().to_string())
}
