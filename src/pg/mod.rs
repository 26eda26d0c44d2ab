//! The PostgreSQL layer shared by every capability.

pub mod raw;
pub mod try_catch;
