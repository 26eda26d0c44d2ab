//! Number formatting for details and suggestions.

/// `0.764` → `76%`, `0.998` → `99.8%`, `0.99998` → `99.99%`: near 100% digits are cut
/// rather than rounded, so a filter that kept some rows never reads as `100%`.
pub(super) fn percent(fraction: f64) -> String {
    let value = fraction * 100.0;
    // The epsilon keeps binary representation noise (99.8 stored as 99.7999...) from
    // truncating a digit away.
    let truncated = |decimals: i32| {
        let scale = 10_f64.powi(decimals);
        (value * scale + 1e-6).floor() / scale
    };
    if (99.0..100.0).contains(&value) {
        if truncated(1) < 99.9 {
            format!("{:.1}%", truncated(1))
        } else {
            format!("{:.2}%", truncated(2))
        }
    } else if value < 10.0 {
        format!("{value:.1}%")
    } else {
        format!("{value:.0}%")
    }
}

/// `42.137` → `42.1 ms`, `1234.5` → `1.23 s`.
pub(super) fn milliseconds(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

/// Rounds and groups thousands: `99800.0` → `99,800`.
pub(super) fn count(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (position, digit) in digits.chars().enumerate() {
        if position > 0 && (digits.len() - position) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// `3568` kB → `3.5 MB`, `77` kB → `77 kB`.
pub(super) fn kilobytes(kb: f64) -> String {
    if kb >= 1024.0 * 1024.0 {
        format!("{:.1} GB", kb / (1024.0 * 1024.0))
    } else if kb >= 1024.0 {
        format!("{:.1} MB", kb / 1024.0)
    } else {
        format!("{kb:.0} kB")
    }
}

/// A work_mem value covering `kb`, rounded up to whole MB (`7MB`), as PostgreSQL accepts it.
pub(super) fn memory_setting(kb: f64) -> String {
    let megabytes = (kb / 1024.0).ceil().max(1.0);
    if megabytes >= 1024.0 {
        format!("{}GB", (megabytes / 1024.0).ceil())
    } else {
        format!("{megabytes}MB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formatting() {
        assert_eq!(count(0.0), "0");
        assert_eq!(count(999.0), "999");
        assert_eq!(count(1_000.0), "1,000");
        assert_eq!(count(1_234_567.4), "1,234,567");
        assert_eq!(percent(0.764), "76%");
        assert_eq!(percent(0.998), "99.8%");
        assert_eq!(percent(0.9998), "99.98%");
        assert_eq!(percent(0.999_999), "99.99%");
        assert_eq!(percent(1.0), "100%");
        assert_eq!(percent(0.99), "99.0%");
        assert_eq!(percent(0.05), "5.0%");
        assert_eq!(kilobytes(77.0), "77 kB");
        assert_eq!(kilobytes(3568.0), "3.5 MB");
        assert_eq!(memory_setting(7136.0), "7MB");
        assert_eq!(memory_setting(1.0), "1MB");
        assert_eq!(memory_setting(3.0 * 1024.0 * 1024.0), "3GB");
        assert_eq!(milliseconds(42.137), "42.1 ms");
        assert_eq!(milliseconds(1234.5), "1.23 s");
    }
}
