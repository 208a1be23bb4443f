//! Newtypes and rules: names, ids, sizes and capacity arithmetic. Bare strings stop at the edge;
//! a value of these types has already been checked.

pub mod capacity;
pub mod host;
pub mod ids;
pub mod image;
pub mod names;
pub mod operation;
pub mod outcome;
pub mod pool;
pub mod role;
pub mod secret;
pub mod sizes;
pub mod ssh;
pub mod vm_state;

/// A value a user sent that breaks a rule; the message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The request field at fault.
    pub field: &'static str,
    /// What is wrong and what would be accepted.
    pub message: String,
}

impl Invalid {
    /// A rule broken by `field`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }

    /// The same rule, blamed on another field.
    pub fn for_field(self, field: &'static str) -> Self {
        Self { field, ..self }
    }
}
