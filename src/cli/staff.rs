//! `quickdonate staff invite|list|revoke`: the console's accounts, looked after from the
//! command line (the first admin has no one to invite them otherwise).

use clap::Subcommand;
use sqlx::PgPool;

use super::table;
use crate::config::Config;
use crate::operators::access::Role;
use crate::staff::accounts::{self, ENROLMENT_VALID, Revoked};

#[derive(Debug, Subcommand)]
pub enum StaffCommand {
    /// Make an account (or, for a name that has one, a link for a further passkey) and print
    /// its one-time enrolment link, valid for 24 hours.
    Invite {
        /// The person's name in the console (letters, digits, '.', '_', '-'); never reused.
        #[arg(long)]
        name: String,
        /// finance: read and export, prepare nothing; admin: that, Gift Aid claims, the audit
        /// log, staff accounts and failed events. Needed for a new account.
        #[arg(long, value_enum)]
        role: Option<Role>,
    },
    /// Every account: name, role, passkeys, live sessions, last sign-in, when made and revoked.
    List,
    /// Revoke the account NAME: its sessions end at once, its passkeys and links stop working.
    Revoke { name: String },
}

pub async fn run(
    config: &Config,
    db: &PgPool,
    command: StaffCommand,
    by: &str,
) -> anyhow::Result<()> {
    match command {
        StaffCommand::Invite { name, role } => {
            let invitation = accounts::invite(db, &name, role).await?;
            let hours = ENROLMENT_VALID.as_secs() / 3600;
            eprintln!(
                "{} {name:?} ({}). Send them this link; it registers a passkey once, within \
                 {hours} hours (until {}), and is shown only now:",
                if invitation.existing {
                    "A further passkey for"
                } else {
                    "Account made:"
                },
                invitation.role,
                table::time(invitation.expires_at)
            );
            println!("{}/staff/enrol/{}", config.staff.origin, invitation.secret);
        }
        StaffCommand::List => println!("{}", table::staff(&accounts::list(db).await?)),
        StaffCommand::Revoke { name } => match accounts::revoke(db, &name, by).await? {
            Revoked::Now { sessions } => println!(
                "{name} is revoked: {sessions} session(s) ended, its passkeys and links no \
                 longer work"
            ),
            Revoked::Already(at) => println!("{name} was already revoked at {}", table::time(at)),
        },
    }
    Ok(())
}
