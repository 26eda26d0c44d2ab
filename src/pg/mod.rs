//! The PostgreSQL layer shared by every capability: it installs and chains every hook
//! (`hooks`, `shmem`), owns the transaction callbacks (`xact`), shared-memory segments and
//! named LWLock tranches (`shmem`), backend-local state (`backend_local`), list walking
//! (`list`), text helpers (`text`), and the PG_TRY machinery (`try_catch`, `raw`).
//! Capabilities register with it: see ARCHITECTURE.md.

pub mod backend;
pub mod backend_local;
pub mod hooks;
pub mod list;
pub mod privilege;
pub mod quote;
pub mod raw;
pub mod shmem;
pub mod text;
pub mod try_catch;
pub mod xact;
