//! Index advisor. Here so far: the what-if planner (`whatif.rs`: hypothetical indexes through
//! `get_relation_info_hook`, `perf.whatif()`, `perf.whatif_index_size()`) and the pure-Rust
//! selection core (candidate generation, index size estimates, Extend-style workload
//! selection under a storage budget with write cost, DDL rendering), unit-tested with
//! `cargo test`. `perf.suggest_indexes()` (`api.rs`) drives the core with the what-if
//! planner as its cost oracle. `guard.rs` decides what may be evaluated and as whom: no
//! user-defined function is ever executed by the what-if planner or the advisor.
//! `apply.rs`: `perf.apply_index()` builds a suggestion (a one-shot scheduler job, as the
//! caller) and `perf.index_outcomes` (sql/advisor_apply.sql) measures what it did.

pub mod api;
pub mod apply;
pub mod candidates;
mod catalog;
pub mod ddl;
mod guard;
pub mod model;
pub mod normalized;
mod oracle;
mod output;
pub mod selection;
mod shorten;
pub mod size;
pub mod whatif;
mod workload;
