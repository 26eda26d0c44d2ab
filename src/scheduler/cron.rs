//! Cron expressions: parsing and "when is the next run" in a time zone.
//!
//! Plain Rust, no PostgreSQL types, so every rule below is tested with `cargo test`.
//!
//! Syntax: five fields (minute hour day-of-month month day-of-week) or six with seconds
//! first; each field is `*`, a value, a range `a-b`, a step `*/n`, `a-b/n` or `a/n`, or a
//! comma list of those. Months and weekdays take names (`jan`, `mon-fri`), weekday 7 is
//! Sunday like 0, and `$` in the day-of-month field is the last day of the month. The
//! macros `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`
//! stand for their usual five fields. As in Vixie cron, when both day fields are
//! restricted (neither starts with `*`) a day matches if either matches.
//!
//! Time zones: a schedule names civil (wall-clock) times in the job's time zone. Around
//! daylight-saving transitions:
//! - a civil time the clocks skip (02:30 on a spring-forward night) runs once, at the
//!   instant the clocks jump (so a daily 02:30 job still runs that day);
//! - a civil time the clocks repeat (01:30 on a fall-back night) runs at its first
//!   occurrence, and again at the second only when the schedule runs every hour (its hour
//!   field matches all 24 hours): an hourly or sub-hourly job keeps its pace in real
//!   time, a daily job does not run twice.

use std::fmt;

use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, Offset, TimeZone};
use jiff::{SignedDuration, Timestamp};

/// A parse error: what is wrong, and a hint that tells how to write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError {
    pub message: String,
    pub hint: String,
}

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)
    }
}

const CRON_HINT: &str = "Write a cron expression of 5 fields (minute hour day-of-month month \
     day-of-week, e.g. '*/5 * * * *' or '30 2 * * mon-fri') or 6 with seconds first \
     ('*/10 * * * * *'), or an interval such as '30 seconds'.";

fn err(message: impl Into<String>) -> CronError {
    CronError {
        message: message.into(),
        hint: CRON_HINT.into(),
    }
}

/// The set of values one field matches, as a bit mask (bit i = value i).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Field {
    bits: u64,
    /// The field was written starting with `*` (Vixie's rule for the two day fields).
    star: bool,
}

impl Field {
    fn has(&self, v: u32) -> bool {
        v < 64 && self.bits & (1u64 << v) != 0
    }

    /// The smallest matching value >= `from`, if any.
    fn next_at_or_after(&self, from: u32) -> Option<u32> {
        if from >= 64 {
            return None;
        }
        let rest = self.bits >> from;
        (rest != 0).then(|| from + rest.trailing_zeros())
    }
}

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const SECOND: FieldSpec = FieldSpec {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

/// Bit used in the day-of-month mask for `$` (last day of the month).
const LAST_DAY_BIT: u32 = 32;

fn parse_value(spec: &FieldSpec, text: &str) -> Result<u32, CronError> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = spec.names.iter().position(|n| *n == lower) {
        // Month names count from 1, weekday names from 0.
        return Ok(i as u32 + if spec.min == 1 { 1 } else { 0 });
    }
    let v: u32 = text.parse().map_err(|_| {
        err(format!(
            "invalid {} \"{text}\" in cron expression",
            spec.name
        ))
    })?;
    if v < spec.min || v > spec.max {
        return Err(err(format!(
            "{} {v} is out of range ({}-{}) in cron expression",
            spec.name, spec.min, spec.max
        )));
    }
    Ok(v)
}

fn parse_field(spec: &FieldSpec, text: &str) -> Result<Field, CronError> {
    if text.is_empty() {
        return Err(err(format!("empty {} field in cron expression", spec.name)));
    }
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| err(format!("invalid step \"{s}\" in the {} field", spec.name)))?;
                if step == 0 || step > spec.max.max(1) {
                    return Err(err(format!(
                        "step {step} is out of range (1-{}) in the {} field",
                        spec.max, spec.name
                    )));
                }
                (r, step)
            }
            None => (part, 1),
        };
        if range == "$" && std::ptr::eq(spec, &DAY_OF_MONTH) && step == 1 {
            bits |= 1u64 << LAST_DAY_BIT;
            continue;
        }
        let (lo, hi) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (parse_value(spec, a)?, parse_value(spec, b)?);
            if a > b {
                return Err(err(format!(
                    "range {range} in the {} field goes backwards",
                    spec.name
                )));
            }
            (a, b)
        } else {
            let a = parse_value(spec, range)?;
            // `a/n` means from a to the end of the range in steps of n.
            (a, if part.contains('/') { spec.max } else { a })
        };
        let mut v = lo;
        while v <= hi {
            bits |= 1u64 << v;
            v += step;
        }
    }
    Ok(Field {
        bits,
        star: text.starts_with('*'),
    })
}

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    seconds: Field,
    minutes: Field,
    hours: Field,
    days: Field,
    months: Field,
    weekdays: Field,
}

/// How far ahead a schedule is searched before it is declared never to fire: long enough
/// for the rarest valid schedule (Feb 29 on a given weekday recurs within 28 years).
const SEARCH_YEARS: i16 = 30;
/// The largest shift of a time zone's offset at one transition that the search allows for.
const MAX_TRANSITION: SignedDuration = SignedDuration::from_hours(3);

impl Cron {
    /// Parses a cron expression (5 or 6 fields, or an @macro).
    pub fn parse(text: &str) -> Result<Cron, CronError> {
        let text = text.trim();
        let expanded = match text.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            t if t.starts_with('@') => {
                return Err(err(format!("unknown cron macro \"{text}\"")));
            }
            _ => text,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (sec, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(err(format!(
                    "a cron expression has 5 or 6 fields, \"{text}\" has {n}"
                )))
            }
        };
        let mut weekdays = parse_field(&DAY_OF_WEEK, rest[4])?;
        if weekdays.has(7) {
            weekdays.bits = (weekdays.bits & !(1 << 7)) | 1; // 7 is Sunday, like 0
        }
        let cron = Cron {
            seconds: parse_field(&SECOND, sec)?,
            minutes: parse_field(&MINUTE, rest[0])?,
            hours: parse_field(&HOUR, rest[1])?,
            days: parse_field(&DAY_OF_MONTH, rest[2])?,
            months: parse_field(&MONTH, rest[3])?,
            weekdays,
        };
        if !cron.can_fire() {
            return Err(err(format!(
                "cron expression \"{text}\" names a day that does not exist in its months"
            )));
        }
        Ok(cron)
    }

    /// Whether some day of some year matches (e.g. not `0 0 30 2 *`).
    fn can_fire(&self) -> bool {
        if !self.weekdays.star && !self.days.star {
            return true; // either day field may match, and every weekday occurs
        }
        if !self.weekdays.star {
            return true;
        }
        (1..=12).any(|m| {
            if !self.months.has(m) {
                return false;
            }
            if self.days.has(LAST_DAY_BIT) {
                return true;
            }
            let longest = match m {
                2 => 29,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            (1..=longest).any(|d| self.days.has(d))
        })
    }

    /// Whether the schedule runs in every hour of the day (it then also runs in the
    /// repeated hour of a fall-back night).
    fn every_hour(&self) -> bool {
        self.hours.bits & 0xFF_FFFF == 0xFF_FFFF
    }

    fn day_matches(&self, date: Date) -> bool {
        let d = date.day() as u32;
        let dom =
            self.days.has(d) || (self.days.has(LAST_DAY_BIT) && date.day() == date.days_in_month());
        let dow = self
            .weekdays
            .has(date.weekday().to_sunday_zero_offset() as u32);
        match (self.days.star, self.weekdays.star) {
            (false, false) => dom || dow,
            (false, true) => dom,
            (true, false) => dow,
            (true, true) => dom && dow,
        }
    }

    /// The first civil time at or after `from` (whole seconds) that the expression names,
    /// searching until the end of `last_year`.
    fn next_civil(&self, from: DateTime, last_year: i16) -> Option<DateTime> {
        let mut date = from.date();
        let (mut h, mut m, mut s) = (
            from.hour() as u32,
            from.minute() as u32,
            from.second() as u32,
        );
        loop {
            if date.year() > last_year {
                return None;
            }
            if !self.months.has(date.month() as u32) {
                date = first_of_next_month(date)?;
                (h, m, s) = (0, 0, 0);
                continue;
            }
            if !self.day_matches(date) {
                date = date.tomorrow().ok()?;
                (h, m, s) = (0, 0, 0);
                continue;
            }
            let Some(hour) = self.hours.next_at_or_after(h) else {
                date = date.tomorrow().ok()?;
                (h, m, s) = (0, 0, 0);
                continue;
            };
            if hour != h {
                (h, m, s) = (hour, 0, 0);
            }
            let Some(minute) = self.minutes.next_at_or_after(m) else {
                (h, m, s) = (h + 1, 0, 0);
                if h > 23 {
                    date = date.tomorrow().ok()?;
                    h = 0;
                }
                continue;
            };
            if minute != m {
                (m, s) = (minute, 0);
            }
            let Some(second) = self.seconds.next_at_or_after(s) else {
                (m, s) = (m + 1, 0);
                if m > 59 {
                    (h, m) = (h + 1, 0);
                    if h > 23 {
                        date = date.tomorrow().ok()?;
                        h = 0;
                    }
                }
                continue;
            };
            return Some(date.at(h as i8, m as i8, second as i8, 0));
        }
    }

    /// The instants a civil time names in `tz` (none, one or two; see the module doc).
    fn instants(&self, civil: DateTime, tz: &TimeZone) -> Vec<Timestamp> {
        let at = |offset: Offset| offset.to_timestamp(civil).ok();
        match tz.to_ambiguous_timestamp(civil).offset() {
            AmbiguousOffset::Unambiguous { offset } => at(offset).into_iter().collect(),
            AmbiguousOffset::Gap { after, .. } => {
                // The clocks jump over this time: run when they jump.
                let before_gap =
                    at(after).and_then(|t| t.checked_sub(SignedDuration::from_secs(1)).ok());
                before_gap
                    .and_then(|t| tz.following(t).next())
                    .map(|tr| tr.timestamp())
                    .into_iter()
                    .collect()
            }
            AmbiguousOffset::Fold { before, after } => {
                let mut v: Vec<Timestamp> = at(before).into_iter().collect();
                if self.every_hour() {
                    v.extend(at(after));
                }
                v
            }
        }
    }

    /// The first instant strictly after `after` at which the schedule fires in `tz`, or
    /// None when it never fires again within the search horizon.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = tz.to_datetime(after);
        let last_year = start.year().saturating_add(SEARCH_YEARS);
        // Fast path: with no offset change near the answer, civil time maps one to one.
        let offset = tz.to_offset(after);
        let next_second = start.checked_add(SignedDuration::from_secs(1)).ok()?;
        let civil = self.next_civil(truncate(next_second), last_year)?;
        let candidate = offset.to_timestamp(civil).ok()?;
        let window_start = after.checked_sub(MAX_TRANSITION).ok()?;
        let transition = tz.following(window_start).next().map(|t| t.timestamp());
        match transition {
            Some(t) if t <= candidate.checked_add(MAX_TRANSITION).ok()? => {
                let before = tz.to_offset(t.checked_sub(SignedDuration::from_secs(1)).ok()?);
                let shift = (tz.to_offset(t).duration_since(before)).abs();
                let shift = shift.clamp(SignedDuration::from_secs(1), MAX_TRANSITION);
                self.next_after_near_transition(after, tz, last_year, shift)
            }
            _ => Some(candidate),
        }
    }

    /// The general search, used when an offset change lies between `after` and the answer:
    /// civil times are scanned from a little before `after`'s, every instant they name is
    /// considered, and the earliest one after `after` wins. Civil and real time can only
    /// run in opposite order within one transition's `shift`, which bounds the scan.
    fn next_after_near_transition(
        &self,
        after: Timestamp,
        tz: &TimeZone,
        last_year: i16,
        shift: SignedDuration,
    ) -> Option<Timestamp> {
        let mut civil = truncate(tz.to_datetime(after).checked_sub(shift).ok()?);
        let mut best: Option<(Timestamp, DateTime)> = None;
        loop {
            let next = self.next_civil(civil, last_year)?;
            if let Some((_, best_civil)) = best {
                if next > best_civil.checked_add(shift).ok()? {
                    break;
                }
            }
            for t in self.instants(next, tz) {
                if t > after && best.is_none_or(|(b, _)| t < b) {
                    best = Some((t, next));
                }
            }
            civil = next.checked_add(SignedDuration::from_secs(1)).ok()?;
        }
        best.map(|(t, _)| t)
    }
}

fn truncate(dt: DateTime) -> DateTime {
    dt.with().subsec_nanosecond(0).build().unwrap_or(dt)
}

fn first_of_next_month(date: Date) -> Option<Date> {
    let (y, m) = if date.month() == 12 {
        (date.year().checked_add(1)?, 1)
    } else {
        (date.year(), date.month() + 1)
    };
    Date::new(y, m, 1).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(expr: &str, after: &str, tz: &str) -> String {
        let tz = TimeZone::get(tz).unwrap();
        let t = Cron::parse(expr)
            .unwrap()
            .next_after(utc(after), &tz)
            .unwrap();
        t.to_zoned_datetime(tz)
            .strftime("%Y-%m-%d %H:%M:%S%:z %a")
            .to_string()
    }

    /// The next `n` runs, in the zone's civil time with offsets.
    fn runs(expr: &str, after: &str, tz: &str, n: usize) -> Vec<String> {
        let zone = TimeZone::get(tz).unwrap();
        let cron = Cron::parse(expr).unwrap();
        let mut t = utc(after);
        (0..n)
            .map(|_| {
                t = cron.next_after(t, &zone).unwrap();
                t.to_zoned_datetime(zone.clone())
                    .strftime("%m-%d %H:%M:%S%:z")
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn five_fields_every_minute_and_steps() {
        assert_eq!(
            next("* * * * *", "2026-01-01T00:00:00Z", "UTC"),
            "2026-01-01 00:01:00+00:00 Thu"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-01-01T00:14:59Z", "UTC"),
            "2026-01-01 00:15:00+00:00 Thu"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-01-01T00:15:00Z", "UTC"),
            "2026-01-01 00:30:00+00:00 Thu"
        );
        assert_eq!(
            next("5-10/2 3 * * *", "2026-01-01T03:06:00Z", "UTC"),
            "2026-01-01 03:07:00+00:00 Thu"
        );
        assert_eq!(
            next("50/5 * * * *", "2026-01-01T00:56:00Z", "UTC"),
            "2026-01-01 01:50:00+00:00 Thu"
        );
    }

    #[test]
    fn six_fields_have_seconds_first() {
        assert_eq!(
            runs("*/20 * * * * *", "2026-01-01T00:00:00Z", "UTC", 4),
            [
                "01-01 00:00:20+00:00",
                "01-01 00:00:40+00:00",
                "01-01 00:01:00+00:00",
                "01-01 00:01:20+00:00"
            ]
        );
        // A fractional start is not a reason to skip the next whole second.
        assert_eq!(
            next("* * * * * *", "2026-01-01T00:00:00.999Z", "UTC"),
            "2026-01-01 00:00:01+00:00 Thu"
        );
    }

    #[test]
    fn names_lists_and_sunday_as_seven() {
        assert_eq!(
            next("0 9 * * mon-fri", "2026-01-02T10:00:00Z", "UTC"),
            "2026-01-05 09:00:00+00:00 Mon"
        );
        assert_eq!(
            next("0 0 * * 7", "2026-01-01T00:00:00Z", "UTC"),
            "2026-01-04 00:00:00+00:00 Sun"
        );
        assert_eq!(
            next("0 0 1 jan,JUL *", "2026-02-01T00:00:00Z", "UTC"),
            "2026-07-01 00:00:00+00:00 Wed"
        );
        assert_eq!(
            next("0 12 1,15 * *", "2026-01-02T00:00:00Z", "UTC"),
            "2026-01-15 12:00:00+00:00 Thu"
        );
    }

    #[test]
    fn last_day_of_month() {
        assert_eq!(
            runs("0 23 $ * *", "2026-01-01T00:00:00Z", "UTC", 3),
            [
                "01-31 23:00:00+00:00",
                "02-28 23:00:00+00:00",
                "03-31 23:00:00+00:00"
            ]
        );
        assert_eq!(
            next("0 0 $ 2 *", "2028-01-01T00:00:00Z", "UTC"),
            "2028-02-29 00:00:00+00:00 Tue"
        );
        assert_eq!(
            next("0 0 15,$ * *", "2026-04-16T00:00:00Z", "UTC"),
            "2026-04-30 00:00:00+00:00 Thu"
        );
    }

    #[test]
    fn both_day_fields_restricted_match_either() {
        // Vixie cron: the 13th, or any Friday.
        assert_eq!(
            runs("0 0 13 * fri", "2026-02-01T00:00:00Z", "UTC", 3),
            [
                "02-06 00:00:00+00:00",
                "02-13 00:00:00+00:00",
                "02-20 00:00:00+00:00"
            ]
        );
        // A step over weekdays counts as `*`: only the day of the month decides.
        assert_eq!(
            next("0 0 13 * */1", "2026-02-01T00:00:00Z", "UTC"),
            "2026-02-13 00:00:00+00:00 Fri"
        );
    }

    #[test]
    fn macros() {
        assert_eq!(
            next("@hourly", "2026-01-01T00:00:00Z", "UTC"),
            "2026-01-01 01:00:00+00:00 Thu"
        );
        assert_eq!(
            next("@weekly", "2026-01-01T00:00:00Z", "UTC"),
            "2026-01-04 00:00:00+00:00 Sun"
        );
        assert_eq!(
            next("@yearly", "2026-01-01T00:00:00Z", "UTC"),
            "2027-01-01 00:00:00+00:00 Fri"
        );
        assert_eq!(Cron::parse("@daily"), Cron::parse("0 0 * * *"));
    }

    #[test]
    fn leap_day_is_found_years_ahead() {
        assert_eq!(
            next("0 0 29 2 *", "2026-03-01T00:00:00Z", "UTC"),
            "2028-02-29 00:00:00+00:00 Tue"
        );
    }

    #[test]
    fn time_zone_shifts_the_civil_time() {
        assert_eq!(
            next("0 9 * * *", "2026-06-01T00:00:00Z", "Europe/Berlin"),
            "2026-06-01 09:00:00+02:00 Mon"
        );
        assert_eq!(
            next("0 9 * * *", "2026-01-15T12:00:00Z", "Asia/Kolkata"),
            "2026-01-16 09:00:00+05:30 Fri"
        );
    }

    #[test]
    fn spring_forward_runs_a_skipped_time_when_the_clocks_jump() {
        // New York, 2026-03-08: 02:00 EST becomes 03:00 EDT.
        assert_eq!(
            runs("30 2 * * *", "2026-03-07T12:00:00Z", "America/New_York", 3),
            [
                "03-08 03:00:00-04:00",
                "03-09 02:30:00-04:00",
                "03-10 02:30:00-04:00"
            ]
        );
        // Every 20 minutes: the three skipped ones collapse into one run at 03:00.
        assert_eq!(
            runs(
                "*/20 * * * *",
                "2026-03-08T06:30:00Z",
                "America/New_York",
                5
            ),
            [
                "03-08 01:40:00-05:00",
                "03-08 03:00:00-04:00",
                "03-08 03:20:00-04:00",
                "03-08 03:40:00-04:00",
                "03-08 04:00:00-04:00"
            ]
        );
    }

    #[test]
    fn fall_back_runs_a_daily_job_once_and_an_hourly_job_on_pace() {
        // New York, 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:xx happens twice.
        assert_eq!(
            runs("30 1 * * *", "2026-10-31T12:00:00Z", "America/New_York", 2),
            ["11-01 01:30:00-04:00", "11-02 01:30:00-05:00"]
        );
        assert_eq!(
            runs("30 * * * *", "2026-11-01T04:00:00Z", "America/New_York", 4),
            [
                "11-01 00:30:00-04:00",
                "11-01 01:30:00-04:00",
                "11-01 01:30:00-05:00",
                "11-01 02:30:00-05:00"
            ]
        );
        // Every 30 minutes, real time keeps 30-minute steps through the repeated hour.
        let r = runs(
            "0,30 * * * *",
            "2026-11-01T05:10:00Z",
            "America/New_York",
            4,
        );
        assert_eq!(
            r,
            [
                "11-01 01:30:00-04:00",
                "11-01 01:00:00-05:00",
                "11-01 01:30:00-05:00",
                "11-01 02:00:00-05:00"
            ]
        );
    }

    #[test]
    fn berlin_transitions() {
        // 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET.
        assert_eq!(
            runs("15 2 * * *", "2026-03-28T12:00:00Z", "Europe/Berlin", 2),
            ["03-29 03:00:00+02:00", "03-30 02:15:00+02:00"]
        );
        assert_eq!(
            runs("15 2 * * *", "2026-10-24T12:00:00Z", "Europe/Berlin", 2),
            ["10-25 02:15:00+02:00", "10-26 02:15:00+01:00"]
        );
    }

    #[test]
    fn every_second_through_a_transition_is_strictly_increasing() {
        let tz = TimeZone::get("America/New_York").unwrap();
        let cron = Cron::parse("*/7 * * * * *").unwrap();
        let mut t = utc("2026-11-01T05:50:00Z");
        for _ in 0..2000 {
            let n = cron.next_after(t, &tz).unwrap();
            assert!(n > t);
            assert!(
                n.duration_since(t) <= SignedDuration::from_secs(7),
                "{t} -> {n}"
            );
            t = n;
        }
    }

    #[test]
    fn errors_are_clear() {
        let e = |s: &str| Cron::parse(s).unwrap_err().message;
        assert_eq!(
            e("* * * *"),
            "a cron expression has 5 or 6 fields, \"* * * *\" has 4"
        );
        assert_eq!(
            e("60 * * * *"),
            "minute 60 is out of range (0-59) in cron expression"
        );
        assert_eq!(
            e("* 24 * * *"),
            "hour 24 is out of range (0-23) in cron expression"
        );
        assert_eq!(
            e("* * 0 * *"),
            "day-of-month 0 is out of range (1-31) in cron expression"
        );
        assert_eq!(
            e("* * * 13 *"),
            "month 13 is out of range (1-12) in cron expression"
        );
        assert_eq!(
            e("* * * * 8"),
            "day-of-week 8 is out of range (0-7) in cron expression"
        );
        assert_eq!(
            e("*/0 * * * *"),
            "step 0 is out of range (1-59) in the minute field"
        );
        assert_eq!(
            e("5-1 * * * *"),
            "range 5-1 in the minute field goes backwards"
        );
        assert_eq!(e("x * * * *"), "invalid minute \"x\" in cron expression");
        assert_eq!(e("* * * foo *"), "invalid month \"foo\" in cron expression");
        assert_eq!(e("@sometimes"), "unknown cron macro \"@sometimes\"");
        assert_eq!(e("1,,2 * * * *"), "invalid minute \"\" in cron expression");
        assert!(e("0 0 30 2 *").contains("does not exist"));
        assert!(e("0 0 31 4,6 *").contains("does not exist"));
        assert!(Cron::parse("0 0 31 4,6 mon").is_ok());
        assert!(!Cron::parse("x * * * *").unwrap_err().hint.is_empty());
    }
}
