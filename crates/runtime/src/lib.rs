//! Shared plumbing for the themodel services, and nothing else: a handful of
//! functions every service calls the same way.
//!
//! - [`db`]: one connection layer for SQLite and PostgreSQL (sqlx `Any`), with
//!   migrations and the SQLite settings a server needs.
//! - [`idempotency`]: AIP-155 `request_id` handling inside the caller's transaction.
//! - [`events`]: the per-service ordered event stream, and its gRPC service.
//! - [`outbox`]: the transactional outbox and the relay that delivers hand-overs.
//! - [`server`]: serving a service with health, reflection (v1 and v1alpha),
//!   trace-context extraction and graceful shutdown.
//! - [`error`] and [`validate`]: the one table from failures to gRPC statuses,
//!   with field violations for bad input.
//! - [`definition`]: the shared quality definition as a service sees it.
//!
//! It holds no business rule: those live in `themodel-quality` and in each
//! service's `domain` module.

pub mod config;
pub mod db;
pub mod definition;
pub mod error;
pub mod events;
pub mod idempotency;
pub mod ids;
pub mod outbox;
pub mod paging;
pub mod server;
pub mod service;
pub mod telemetry;
pub mod time;
pub mod validate;
pub mod values;

pub use config::{Peers, ServiceConfig};
pub use db::{Db, Tx};
pub use error::ApiError;
pub use time::Clock;
