//! Logging. Levels come from `RUST_LOG` (default `info`); the format from `LOG_FORMAT`.
//! What we log names ids and amounts, never secrets, request bodies or donor data.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Where the log goes: the service logs to stdout, as a log collector expects; a command whose
/// stdout is its answer (`quickdonate events ...`) logs to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Stderr,
}

pub fn init(format: LogFormat, output: Output) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match (format, output) {
        (LogFormat::Text, Output::Stdout) => builder.try_init(),
        (LogFormat::Json, Output::Stdout) => builder.json().try_init(),
        (LogFormat::Text, Output::Stderr) => builder.with_writer(std::io::stderr).try_init(),
        (LogFormat::Json, Output::Stderr) => builder.json().with_writer(std::io::stderr).try_init(),
    };
}
