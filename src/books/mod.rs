//! Books that check themselves: `quickdonate verify`, `GET /v1/finance/verify` and the
//! `quickdonate_books_differences` metric run the same checks ([`verify`]), read-only, on one
//! snapshot, and name every difference with its ids.

pub mod routes;
pub mod verify;

pub use routes::router;
