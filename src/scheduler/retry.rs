//! Retry timing for failed job runs: exponential backoff from a base delay, capped, with
//! jitter so that jobs that failed together (a database restart, a lock held by one
//! transaction) do not all retry in the same second.
//!
//! Plain Rust; the caller supplies the random number so tests are deterministic.

use jiff::{SignedDuration, Timestamp};

/// A job's retry settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after a failed run before the job waits for its next scheduled time.
    pub max_retries: u32,
    /// Delay before the first retry; each further retry waits twice as long.
    pub base: SignedDuration,
    /// No retry waits longer than this.
    pub cap: SignedDuration,
    /// Each delay is moved by up to this fraction of itself, either way (0 = none).
    pub jitter: f64,
}

impl RetryPolicy {
    /// When to retry after the `failures`-th consecutive failure (1 = the first) that
    /// ended at `finished`, or None when the retries are used up. `random` is uniform in
    /// [0, 1).
    pub fn next_retry(&self, finished: Timestamp, failures: u32, random: f64) -> Option<Timestamp> {
        if failures == 0 || failures > self.max_retries {
            return None;
        }
        let doublings = (failures - 1).min(62);
        let base = self.base.as_secs_f64().max(0.0);
        let cap = self.cap.as_secs_f64().max(base);
        let delay = (base * 2f64.powi(doublings as i32)).min(cap);
        let jitter = self.jitter.clamp(0.0, 1.0) * delay * (2.0 * random.clamp(0.0, 1.0) - 1.0);
        let delay = (delay + jitter).clamp(0.0, cap);
        finished
            .checked_add(SignedDuration::from_secs_f64(delay))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_retries: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            base: SignedDuration::from_secs(10),
            cap: SignedDuration::from_secs(300),
            jitter: 0.0,
        }
    }

    fn delay(p: &RetryPolicy, failures: u32, random: f64) -> Option<f64> {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        p.next_retry(t0, failures, random)
            .map(|t| t.duration_since(t0).as_secs_f64())
    }

    #[test]
    fn doubles_up_to_the_cap_and_stops_after_the_last_retry() {
        let p = policy(7);
        let delays: Vec<_> = (1..=8).map(|f| delay(&p, f, 0.5)).collect();
        assert_eq!(
            delays,
            [
                Some(10.0),
                Some(20.0),
                Some(40.0),
                Some(80.0),
                Some(160.0),
                Some(300.0),
                Some(300.0),
                None
            ]
        );
        assert_eq!(delay(&policy(0), 1, 0.5), None);
        assert_eq!(delay(&p, 0, 0.5), None);
    }

    #[test]
    fn jitter_spreads_retries_within_bounds() {
        let p = RetryPolicy {
            jitter: 0.2,
            ..policy(3)
        };
        assert_eq!(delay(&p, 2, 0.0), Some(16.0));
        assert_eq!(delay(&p, 2, 0.5), Some(20.0));
        assert!(delay(&p, 2, 0.999).unwrap() < 24.0);
        // Jitter never goes past the cap.
        let capped = RetryPolicy {
            max_retries: 20,
            ..p
        };
        assert!(delay(&capped, 20, 0.999).unwrap() <= 300.0);
    }

    #[test]
    fn huge_failure_counts_do_not_overflow() {
        let p = policy(u32::MAX);
        assert_eq!(delay(&p, u32::MAX, 0.5), Some(300.0));
    }
}
