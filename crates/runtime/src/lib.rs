//! Shared plumbing for the themodel services: a handful of pieces every
//! service uses the same way, and no business rule (those live in
//! `themodel-quality`, `themodel-values` and each service's `domain`).
//!
//! - [`work`]: the unit of work, and the writer that commits concurrent units
//!   of a service together (group commit), idempotent on `request_id`.
//! - [`audit`]: the log of who changed which record, and its gRPC service.
//! - [`auth`]: bearer tokens, roles, and the table of who may call what.
//! - [`jwt`]: callers the company's identity provider vouches for (JWTs
//!   checked against its JWKS).
//! - [`tls`]: TLS for servers and peer clients, and client-certificate
//!   identities.
//! - [`cache`]: the writer's cache of the rows it committed.
//! - [`loader`]: batched point reads on the read pool.
//! - [`db`]: one connection layer for SQLite and PostgreSQL (sqlx `Any`),
//!   migrations, and multi-row statement helpers.
//! - [`events`]: the per-service ordered stream of typed events, and its gRPC
//!   service (pages, or long polls at the head).
//! - [`consistency`]: the stream position every answer carries, which kpi
//!   reads accept to wait for a caller's writes.
//! - [`outbox`]: hand-overs, the relay that delivers them, dead letters and
//!   the outbox admin service.
//! - [`owners`]: a department's roster and its round-robin assignment.
//! - [`idempotency`]: AIP-155 request keys and stored responses.
//! - [`call`]: what is kept of an incoming call (key, deadline, trace).
//! - [`server`], [`service`], [`shed`]: serving with health, reflection,
//!   overload refusal, graceful shutdown.
//! - [`error`] and [`validate`]: the one table from failures to gRPC
//!   statuses, and field violations for bad input.
//! - [`definition`]: the shared quality definition as a service follows it.

pub mod audit;
pub mod auth;
pub mod cache;
pub mod call;
pub mod config;
pub mod consistency;
pub mod db;
pub mod definition;
pub mod error;
pub mod events;
pub mod idempotency;
pub mod jwt;
pub mod loader;
pub mod outbox;
pub mod owners;
pub mod paging;
pub mod server;
pub mod service;
pub mod shed;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod validate;
pub mod wire;
pub mod work;

pub use cache::Cache;
pub use call::Call;
pub use config::{Peers, ServiceConfig};
pub use db::{Db, Tx};
pub use error::{ApiError, ApiResult};
pub use time::Clock;
pub use work::{Ctx, Done, Effects, Need, Rows, Store, Writer};
