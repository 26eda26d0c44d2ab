//! The PostgreSQL layer shared by every capability: it installs and chains every hook
//! (`hooks`, `shmem`), owns the transaction callbacks (`xact`), shared-memory segments and
//! named LWLock tranches (`shmem`), backend-local state (`backend_local`), list walking
//! (`list`), text helpers (`text`), the PG_TRY machinery (`try_catch`, `raw`),
//! subtransactions (`subxact`), acting as another role (`role`), identifier quoting
//! (`quote`) and catalog/relcache invalidation callbacks (`inval`).
//! Capabilities register with it: see ARCHITECTURE.md.

pub mod backend;
pub mod backend_local;
pub mod hooks;
pub mod inval;
pub mod list;
pub mod privilege;
pub mod quote;
pub mod raw;
pub mod role;
pub mod shmem;
pub mod subxact;
pub mod text;
pub mod try_catch;
pub mod xact;
