//! Logging. Levels come from `RUST_LOG` (default `info`); the format from `LOG_FORMAT`.
//! What we log names ids and amounts, never secrets, request bodies or donor data.
//!
//! Colour only for a person watching: the log's stream must be a terminal and `NO_COLOR` unset
//! (<https://no-color.org>), so a log piped to a file or a collector has no escape codes.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Postgres's notices (`relation "_sqlx_migrations" already exists, skipping` at every start)
/// are noise at `info`; `RUST_LOG` naming sqlx gets them back.
const QUIET_NOTICES: &str = "sqlx::postgres::notice=warn";

/// Where the log goes: the service logs to stdout, as a log collector expects; a command whose
/// stdout is its answer (`quickdonate events ...`) logs to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Stderr,
}

pub fn init(format: LogFormat, output: Output) {
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref());
    let terminal = match output {
        Output::Stdout => std::io::stdout().is_terminal(),
        Output::Stderr => std::io::stderr().is_terminal(),
    };
    let ansi = colour(terminal, std::env::var_os("NO_COLOR").as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let _ = match (format, output) {
        (LogFormat::Text, Output::Stdout) => builder.try_init(),
        (LogFormat::Json, Output::Stdout) => builder.json().try_init(),
        (LogFormat::Text, Output::Stderr) => builder.with_writer(std::io::stderr).try_init(),
        (LogFormat::Json, Output::Stderr) => builder.json().with_writer(std::io::stderr).try_init(),
    };
}

/// `RUST_LOG` if set and valid, else `info`; Postgres's notices at `warn` unless it names sqlx.
fn filter(rust_log: Option<&str>) -> EnvFilter {
    let mut filter = rust_log
        .filter(|directives| !directives.trim().is_empty())
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    if !rust_log.is_some_and(|directives| directives.contains("sqlx")) {
        filter = filter.add_directive(QUIET_NOTICES.parse().expect("a valid directive"));
    }
    filter
}

/// Colour only on a terminal, and never when `NO_COLOR` is set to anything but empty.
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|value| value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }

    #[test]
    fn notices_are_quiet_unless_sqlx_is_asked_for() {
        assert!(filter(None).to_string().contains(QUIET_NOTICES));
        assert!(filter(Some("info")).to_string().contains(QUIET_NOTICES));
        assert!(
            !filter(Some("info,sqlx=debug"))
                .to_string()
                .contains(QUIET_NOTICES)
        );
    }
}
