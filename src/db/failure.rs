//! What a database error means: the one reading of SQLSTATEs and connection failures that every
//! caller acts on. The callers decide what to do, each in a line or two:
//!
//! | failure | the HTTP layer | webhook ingest | the event worker | the receipts sender |
//! |---|---|---|---|---|
//! | [`Failure::Retry`] | 500 | stores the group once more | tries the batch again at once | polls again |
//! | [`Failure::Unavailable`] | 503, `Retry-After` | 503: Stripe delivers again | backs off; no event's fault | backs off |
//! | [`Failure::Refused`] | 500 | stores the events one by one | the payment's events are at fault | polls again |
//! | [`Failure::Statement`] | 500 | 503: Stripe delivers again | the payment's events are at fault | polls again |
//! | [`Failure::Internal`] | 500 | 503: Stripe delivers again | backs off; no event's fault | polls again |
//!
//! SQLSTATE classes are PostgreSQL's (Appendix A, "PostgreSQL Error Codes").

/// What went wrong, as far as the caller's next move is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Two transactions met: a serialization failure (`40001`), a deadlock (`40P01`) or a lock
    /// not available (`55P03`). Trying again at once is the cure; nothing is at fault.
    Retry,
    /// The database cannot serve now: the connection, TLS or the pool failed, the server is
    /// shutting down or starting (class `57P`), the connection broke (class `08`) or the server
    /// lacks resources (class `53`: disk, memory, connections). Nobody's fault; try later.
    Unavailable,
    /// The statement was refused for the values it carried: a data exception (class `22`), an
    /// integrity constraint (`23`) or a limit (`54`). The fault of whatever supplied them: the
    /// request, or the event being stored or applied.
    Refused,
    /// Any other refusal of a statement (an undefined column, a trigger's exception, ...): the
    /// statement is wrong, for this data at least, whatever the server's state.
    Statement,
    /// Not the database refusing anything: an answer we could not read, a row that had to be
    /// there and was not. A fault of ours.
    Internal,
}

impl Failure {
    /// What `error` means.
    pub fn of(error: &sqlx::Error) -> Self {
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Self::Unavailable,
            sqlx::Error::Database(database) => match database.code() {
                Some(code) => Self::of_sqlstate(&code),
                None => Self::Statement,
            },
            _ => Self::Internal,
        }
    }

    /// What a statement refused with SQLSTATE `code` means.
    pub fn of_sqlstate(code: &str) -> Self {
        match code {
            "40001" | "40P01" | "55P03" => Self::Retry,
            _ if code.starts_with("57P") => Self::Unavailable,
            _ => match code.get(..2) {
                Some("08" | "53") => Self::Unavailable,
                Some("22" | "23" | "54") => Self::Refused,
                _ => Self::Statement,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    /// A database's refusal with a SQLSTATE, as the driver reports one.
    #[derive(Debug)]
    struct Refusal(&'static str);

    impl std::fmt::Display for Refusal {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "refused with {}", self.0)
        }
    }

    impl std::error::Error for Refusal {}

    impl sqlx::error::DatabaseError for Refusal {
        fn message(&self) -> &str {
            "refused"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    #[test]
    fn each_sqlstate_means_one_thing() {
        for (code, meaning, example) in [
            ("40001", Failure::Retry, "serialization failure"),
            ("40P01", Failure::Retry, "deadlock detected"),
            ("55P03", Failure::Retry, "lock not available"),
            ("57P01", Failure::Unavailable, "admin shutdown (a restart)"),
            ("57P02", Failure::Unavailable, "crash shutdown"),
            (
                "57P03",
                Failure::Unavailable,
                "cannot connect now (starting)",
            ),
            ("08006", Failure::Unavailable, "connection failure"),
            ("08003", Failure::Unavailable, "connection does not exist"),
            ("53100", Failure::Unavailable, "disk full"),
            ("53200", Failure::Unavailable, "out of memory"),
            ("53300", Failure::Unavailable, "too many connections"),
            ("22001", Failure::Refused, "string too long for its column"),
            ("22P02", Failure::Refused, "invalid text representation"),
            (
                "22021",
                Failure::Refused,
                "a character not in the encoding (a NUL)",
            ),
            ("23505", Failure::Refused, "unique violation"),
            ("23503", Failure::Refused, "foreign key violation"),
            ("23514", Failure::Refused, "check violation"),
            (
                "54000",
                Failure::Refused,
                "program limit exceeded (a value too large)",
            ),
            ("42703", Failure::Statement, "undefined column"),
            ("42601", Failure::Statement, "syntax error"),
            (
                "P0001",
                Failure::Statement,
                "raised by a trigger (the ledger's)",
            ),
            ("25006", Failure::Statement, "read-only transaction"),
            (
                "57014",
                Failure::Statement,
                "query canceled (statement_timeout)",
            ),
            ("XX000", Failure::Statement, "internal error"),
        ] {
            let error = sqlx::Error::Database(Box::new(Refusal(code)));
            assert_eq!(Failure::of(&error), meaning, "{code} ({example})");
        }
    }

    #[test]
    fn errors_that_are_not_a_refusal() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        for (error, meaning) in [
            (sqlx::Error::Io(io), Failure::Unavailable),
            (sqlx::Error::PoolTimedOut, Failure::Unavailable),
            (sqlx::Error::PoolClosed, Failure::Unavailable),
            (sqlx::Error::WorkerCrashed, Failure::Unavailable),
            (sqlx::Error::Tls("handshake".into()), Failure::Unavailable),
            (sqlx::Error::RowNotFound, Failure::Internal),
            (sqlx::Error::ColumnNotFound("x".into()), Failure::Internal),
            (
                sqlx::Error::Protocol("unexpected".into()),
                Failure::Internal,
            ),
            (sqlx::Error::Decode("bad".into()), Failure::Internal),
        ] {
            let shown = error.to_string();
            assert_eq!(Failure::of(&error), meaning, "{shown}");
        }
    }
}
