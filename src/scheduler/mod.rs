//! The job scheduler (in progress): schedules and their next run times.
//!
//! What exists so far is the pure part, tested with `cargo test` and no server:
//! cron expressions with time zones (`cron`), intervals that do not drift (`interval`),
//! and `Schedule`, which is either. The worker and the SQL API come next.

pub mod cron;
pub mod interval;
pub mod policy;
pub mod retry;

use jiff::tz::TimeZone;
use jiff::Timestamp;

pub use cron::{Cron, CronError};
pub use interval::Interval;

/// When a job runs: civil times in a time zone, or fixed steps of elapsed time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Cron(Cron),
    Every(Interval),
}

impl Schedule {
    /// Parses a cron expression or an interval ('*/5 * * * *', '@daily', '30 seconds').
    pub fn parse(text: &str) -> Result<Schedule, CronError> {
        if Interval::looks_like(text) {
            Interval::parse(text).map(Schedule::Every)
        } else {
            Cron::parse(text).map(Schedule::Cron)
        }
    }

    /// The next run strictly after `after`. Intervals count from `anchor` (when the job
    /// was scheduled); cron expressions read civil time in `tz`.
    pub fn next_after(
        &self,
        after: Timestamp,
        anchor: Timestamp,
        tz: &TimeZone,
    ) -> Option<Timestamp> {
        match self {
            Schedule::Cron(c) => c.next_after(after, tz),
            Schedule::Every(i) => i.next_after(anchor, after),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_picks_the_kind() {
        assert!(matches!(
            Schedule::parse("30 seconds"),
            Ok(Schedule::Every(_))
        ));
        assert!(matches!(
            Schedule::parse("*/5 * * * *"),
            Ok(Schedule::Cron(_))
        ));
        assert!(matches!(Schedule::parse("@daily"), Ok(Schedule::Cron(_))));
        assert!(Schedule::parse("").is_err());
        assert!(Schedule::parse("5 fortnights").is_err());
    }
}
