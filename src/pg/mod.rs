//! The PostgreSQL layer shared by every capability.

pub mod quote;
pub mod raw;
pub mod try_catch;
