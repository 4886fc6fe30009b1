//! The Marathon-style service scheduler. Its pure core (`core`) holds the vocabulary the REST API
//! and the scheduler share: app ids, app definitions as Marathon accepts and returns them, and
//! the rules that validate them.

pub mod core;
