//! The value types the services share, each parsed once at the edge so the
//! domain never sees an unchecked string or number: ids, e-mail addresses,
//! codes, money, and business time.
//!
//! Pure: no I/O, no gRPC or SQL types. A parse failure is a short,
//! caller-facing sentence ([`Invalid`]); the API layer attaches the field name.

mod code;
mod department;
mod email;
mod ids;
mod money;
mod term;
pub mod time;

pub use code::{Code, is_code};
pub use department::Department;
pub use email::Email;
pub use ids::{AccountId, HandoverId, LeadId, OpportunityId, OwnerId, VisitorId, is_valid_id, new_id};
pub use money::{Currency, Money, MoneyError};
pub use term::Term;
pub use time::Micros;

/// Why a value was refused: a sentence that completes "<field> …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    pub fn new(message: impl Into<String>) -> Self {
        Invalid(message.into())
    }
}
