//! Interval schedules ('30 seconds', '5 minutes', '1 day 2 hours'): runs at fixed steps of
//! elapsed time from an anchor, so they never drift however long each run takes, and a
//! worker that fell behind skips the missed steps instead of running them back to back.
//!
//! Plain Rust, tested with `cargo test`.

use jiff::{SignedDuration, Timestamp};

use super::cron::CronError;

const INTERVAL_HINT: &str = "Write an interval as a number and a unit, e.g. '30 seconds', \
     '5 minutes', '1 hour', '1 day' (units: seconds, minutes, hours, days, weeks; they can \
     be combined: '1 hour 30 minutes'), or use a cron expression.";

/// The longest interval accepted: a job that runs less often wants a cron expression.
const MAX_SECONDS: i64 = 366 * 86_400;

/// A fixed step of elapsed time, in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    seconds: i64,
}

fn err(message: impl Into<String>) -> CronError {
    CronError {
        message: message.into(),
        hint: INTERVAL_HINT.into(),
    }
}

fn unit_seconds(unit: &str) -> Option<i64> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 604_800,
        _ => return None,
    })
}

impl Interval {
    /// Whether `text` is written as an interval (a number followed by a unit) rather than
    /// as a cron expression.
    pub fn looks_like(text: &str) -> bool {
        let lower = text.trim().to_ascii_lowercase();
        if lower.starts_with("every") {
            return true;
        }
        let mut words = lower.split_whitespace();
        let first = words.next().unwrap_or("");
        let unit = first.trim_start_matches(|c: char| c.is_ascii_digit());
        if unit.len() == first.len() {
            return false; // does not start with a number
        }
        if unit.is_empty() {
            words.next().is_some_and(|w| unit_seconds(w).is_some())
        } else {
            unit_seconds(unit).is_some()
        }
    }

    /// Parses "N unit [N unit ...]" (an optional leading "every"; "30s" works too).
    pub fn parse(text: &str) -> Result<Interval, CronError> {
        let mut tokens: Vec<String> = Vec::new();
        for word in text.split_whitespace() {
            // Split "30s" / "5min" into number and unit.
            let split = word.find(|c: char| !c.is_ascii_digit()).filter(|&i| i > 0);
            match split {
                Some(i) => {
                    tokens.push(word[..i].to_string());
                    tokens.push(word[i..].to_string());
                }
                None => tokens.push(word.to_string()),
            }
        }
        if tokens
            .first()
            .is_some_and(|t| t.eq_ignore_ascii_case("every"))
        {
            tokens.remove(0);
        }
        if tokens.is_empty() || !tokens.len().is_multiple_of(2) {
            return Err(err(format!("invalid interval \"{text}\"")));
        }
        let mut seconds: i64 = 0;
        for pair in tokens.chunks(2) {
            let n: i64 = pair[0].parse().map_err(|_| {
                err(format!(
                    "invalid number \"{}\" in interval \"{text}\"",
                    pair[0]
                ))
            })?;
            let unit = unit_seconds(&pair[1]).ok_or_else(|| {
                err(format!(
                    "unknown unit \"{}\" in interval \"{text}\"",
                    pair[1]
                ))
            })?;
            seconds = n
                .checked_mul(unit)
                .and_then(|s| seconds.checked_add(s))
                .filter(|&s| s <= MAX_SECONDS)
                .ok_or_else(|| err(format!("interval \"{text}\" is longer than a year")))?;
        }
        if seconds < 1 {
            return Err(err(format!(
                "interval \"{text}\" is shorter than one second"
            )));
        }
        Ok(Interval { seconds })
    }

    pub fn seconds(&self) -> i64 {
        self.seconds
    }

    /// The first step `anchor + k * interval` (k >= 1) strictly after `after`: steps are
    /// counted from the anchor, not from when a run ended, so runs do not drift.
    pub fn next_after(&self, anchor: Timestamp, after: Timestamp) -> Option<Timestamp> {
        let step = SignedDuration::from_secs(self.seconds);
        if after < anchor {
            return anchor.checked_add(step).ok();
        }
        let elapsed = after.duration_since(anchor);
        let elapsed_steps = elapsed.as_nanos() / step.as_nanos();
        let k = i64::try_from(elapsed_steps).ok()?.checked_add(1)?;
        let offset = SignedDuration::from_secs(self.seconds.checked_mul(k)?);
        anchor.checked_add(offset).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn parses_units_combinations_and_compact_forms() {
        let secs = |s: &str| Interval::parse(s).unwrap().seconds();
        assert_eq!(secs("30 seconds"), 30);
        assert_eq!(secs("1 second"), 1);
        assert_eq!(secs("5 minutes"), 300);
        assert_eq!(secs("1 day"), 86_400);
        assert_eq!(secs("1 hour 30 minutes"), 5_400);
        assert_eq!(secs("every 10 sec"), 10);
        assert_eq!(secs("30s"), 30);
        assert_eq!(secs("2 Weeks"), 1_209_600);
    }

    #[test]
    fn refuses_bad_intervals() {
        let e = |s: &str| Interval::parse(s).unwrap_err().message;
        assert_eq!(
            e("0 seconds"),
            "interval \"0 seconds\" is shorter than one second"
        );
        assert_eq!(
            e("5 fortnights"),
            "unknown unit \"fortnights\" in interval \"5 fortnights\""
        );
        assert_eq!(e("seconds"), "invalid interval \"seconds\"");
        assert_eq!(e("400 days"), "interval \"400 days\" is longer than a year");
        assert_eq!(
            e("99999999999999999999 seconds"),
            "invalid number \"99999999999999999999\" in interval \"99999999999999999999 seconds\""
        );
        assert!(!Interval::parse("x").unwrap_err().hint.is_empty());
    }

    #[test]
    fn tells_intervals_from_cron() {
        assert!(Interval::looks_like("30 seconds"));
        assert!(Interval::looks_like("30s"));
        assert!(Interval::looks_like("every 5 minutes"));
        assert!(!Interval::looks_like("*/5 * * * *"));
        assert!(!Interval::looks_like("0 9 * * mon"));
        assert!(!Interval::looks_like("@daily"));
    }

    #[test]
    fn steps_are_anchored_and_do_not_drift() {
        let i = Interval::parse("1 second").unwrap();
        let anchor = ts("2026-01-01T00:00:00Z");
        // However late the previous run ended, the next one is on the anchor's grid.
        assert_eq!(
            i.next_after(anchor, ts("2026-01-01T00:00:05.2Z")),
            Some(ts("2026-01-01T00:00:06Z"))
        );
        assert_eq!(
            i.next_after(anchor, ts("2026-01-01T00:00:06Z")),
            Some(ts("2026-01-01T00:00:07Z"))
        );
        // Fallen behind by minutes: the missed steps are skipped, not run back to back.
        let five = Interval::parse("5 minutes").unwrap();
        assert_eq!(
            five.next_after(anchor, ts("2026-01-01T01:02:03Z")),
            Some(ts("2026-01-01T01:05:00Z"))
        );
        // Before the anchor: the first step after it.
        assert_eq!(
            five.next_after(anchor, ts("2025-12-31T00:00:00Z")),
            Some(ts("2026-01-01T00:05:00Z"))
        );
        // Ten thousand steps later the grid has not moved.
        let mut t = anchor;
        for _ in 0..10_000 {
            t = i.next_after(anchor, t).unwrap();
        }
        assert_eq!(t, ts("2026-01-01T02:46:40Z"));
    }
}
