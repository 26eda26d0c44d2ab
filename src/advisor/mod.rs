//! Index advisor. So far only its pure-Rust core is here (candidate generation, index size
//! estimates, Extend-style workload selection under a storage budget with write cost, DDL
//! rendering), unit-tested with `cargo test`. The what-if planner (`get_relation_info_hook`)
//! and `perf.suggest_indexes()` that drive it are not written yet; see README-lead.md.

pub mod candidates;
pub mod ddl;
pub mod model;
pub mod selection;
pub mod size;
