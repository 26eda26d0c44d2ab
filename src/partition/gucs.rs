//! The partition capability's `perf.partition_*` settings, registered from
//! [`super::init`] (in `_PG_init`, after `crate::gucs::init` reserved the prefix).

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

/// `perf.partition_now`: the time maintenance treats as "now" (empty = the real clock).
/// Tests and dry runs set it to pretend time passed; read from SQL with `current_setting`.
pub static NOW: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// `perf.partition_lock_timeout`: milliseconds one attempt waits for a lock.
pub static LOCK_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(200);
/// `perf.partition_lock_retries`: attempts before a set's maintenance gives up.
pub static LOCK_RETRIES: GucSetting<i32> = GucSetting::<i32>::new(15);
/// `perf.partition_batch_rows`: rows moved per statement when converting a table.
pub static BATCH_ROWS: GucSetting<i32> = GucSetting::<i32>::new(50_000);
/// `perf.partition_notice_interval`: milliseconds between progress NOTICEs (0 = none).
pub static NOTICE_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(5_000);

/// Registers the settings above. Called once from `_PG_init`.
pub fn init() {
    GucRegistry::define_string_guc(
        c"perf.partition_now",
        c"Time that partition maintenance treats as now (empty: the real clock).",
        c"A timestamptz literal. For tests and rehearsals: premaking and retention are \
          computed from it instead of now().",
        &NOW,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"perf.partition_lock_timeout",
        c"How long one partition maintenance attempt waits for a lock.",
        c"On timeout the attempt is rolled back (releasing its locks, so queued readers \
          proceed) and retried after a short randomized back-off.",
        &LOCK_TIMEOUT_MS,
        10,
        600_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"perf.partition_lock_retries",
        c"Lock attempts before partition maintenance gives up on a set.",
        c"",
        &LOCK_RETRIES,
        1,
        10_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"perf.partition_batch_rows",
        c"Rows moved per statement when converting a table into a partitioned one.",
        c"",
        &BATCH_ROWS,
        100,
        100_000_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"perf.partition_notice_interval",
        c"Interval between progress NOTICEs of long partition work (0 disables them).",
        c"",
        &NOTICE_INTERVAL_MS,
        0,
        3_600_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
}
