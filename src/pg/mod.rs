//! The PostgreSQL layer shared by every capability.

pub mod try_catch;
