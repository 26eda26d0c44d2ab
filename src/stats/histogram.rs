//! Per-statement latency histogram with percentile estimates.
//!
//! Each statement entry in shared memory carries a fixed `[u64; BUCKETS]` array of
//! counts, so memory use is constant (512 bytes) however many executions are recorded,
//! and recording is O(1). Buckets are logarithmic with ratio √2, so a percentile estimate
//! is off by at most one bucket, a factor of √2, over the whole range from 1 µs to about
//! 36 minutes:
//!
//! * bucket 0: `[0, 1)` µs (also where NaN and negative durations go),
//! * bucket `i` for `1 <= i < BUCKETS - 1`: `[2^((i-1)/2), 2^(i/2))` µs,
//! * bucket `BUCKETS - 1`: `[2^31, ∞)` µs, i.e. 2147.5 s (about 35.8 minutes) and more.
//!
//! Finding the bucket takes no logarithm: the octave `[2^k, 2^(k+1))` comes from the
//! position of the highest set bit (or from the exponent of an `f64`), and one
//! comparison against the octave's √2 midpoint picks its lower or upper half.
//!
//! The functions here do no locking; callers update the shared array under the entry's
//! lock. Counters saturate instead of wrapping.

use std::f64::consts::SQRT_2;

/// Number of buckets in a histogram.
pub const BUCKETS: usize = 64;

/// Index of the last, open-ended bucket.
const LAST_BUCKET: usize = BUCKETS - 1;

/// Lower edge of the last bucket in microseconds: 2^((BUCKETS - 2) / 2) = 2^31.
const LAST_BUCKET_LOWER_MICROS: u64 = 1 << ((BUCKETS - 2) / 2);

/// Mask of an `f64`'s 52 fraction bits.
const F64_FRACTION_MASK: u64 = (1 << 52) - 1;

/// Exponent bias of `f64`.
const F64_EXPONENT_BIAS: u64 = 1023;

/// Bucket holding a duration of `us` whole microseconds.
#[inline]
pub fn bucket_for_micros(us: u64) -> usize {
    if us == 0 {
        return 0;
    }
    if us >= LAST_BUCKET_LOWER_MICROS {
        return LAST_BUCKET;
    }
    // `us` lies in the octave [2^octave, 2^(octave+1)), octave = floor(log2(us)) <= 30
    // (us != 0, so leading_zeros() <= 63). It is in the upper half, [2^octave·√2,
    // 2^(octave+1)), exactly when us² >= 2^(2·octave+1); us < 2^31 keeps the square below
    // 2^62, so this is exact integer arithmetic.
    let octave = u64::BITS - 1 - us.leading_zeros();
    let upper_half = us * us >= 1u64 << (2 * octave + 1);
    1 + 2 * octave as usize + usize::from(upper_half)
}

/// Bucket holding a duration of `us` microseconds given as a float (fractions of a
/// microsecond count). NaN and values below 1 µs, negative ones included, go to bucket 0;
/// +∞ goes to the last bucket. Agrees with [`bucket_for_micros`] on whole numbers and with
/// [`bucket_bounds_micros`] exactly: `lower <= us < upper`.
#[inline]
pub fn bucket_for_micros_f64(us: f64) -> usize {
    if us.is_nan() || us < 1.0 {
        return 0;
    }
    if us >= LAST_BUCKET_LOWER_MICROS as f64 {
        return LAST_BUCKET;
    }
    // 1 <= us < 2^31: a normal float whose unbiased exponent is the octave (0..=30), and whose
    // fraction bits compare like the value within the octave. The √2 boundary is the very
    // float `bucket_bounds_micros` returns, so both agree to the last bit.
    let bits = us.to_bits();
    let octave = ((bits >> 52) & 0x7ff).saturating_sub(F64_EXPONENT_BIAS) as usize;
    let upper_half = bits & F64_FRACTION_MASK >= SQRT_2.to_bits() & F64_FRACTION_MASK;
    (1 + 2 * octave + usize::from(upper_half)).min(LAST_BUCKET)
}

/// Bounds `[lower, upper)` of bucket `i`, in microseconds. The last bucket's upper bound
/// is `f64::INFINITY`; indices beyond the last bucket get the last bucket's bounds.
pub fn bucket_bounds_micros(i: usize) -> (f64, f64) {
    match i {
        0 => (0.0, 1.0),
        i if i < LAST_BUCKET => (bucket_edge_micros(i - 1), bucket_edge_micros(i)),
        _ => (bucket_edge_micros(LAST_BUCKET - 1), f64::INFINITY),
    }
}

/// `2^(k/2)` µs, the upper edge of bucket `k` and lower edge of bucket `k + 1` (k < 63).
/// Odd powers of √2 are computed as a power of two times `SQRT_2`, which is exact, so edges
/// are the same floats `bucket_for_micros_f64` compares against.
fn bucket_edge_micros(k: usize) -> f64 {
    let half = i32::try_from(k / 2).unwrap_or(i32::MAX);
    let power_of_two = 2f64.powi(half);
    if k % 2 == 1 {
        power_of_two * SQRT_2
    } else {
        power_of_two
    }
}

/// Counts one execution that took `elapsed_ms` milliseconds. NaN and negative durations
/// (a clock stepping backwards) are counted in bucket 0 so the total still matches the
/// number of executions; huge and infinite ones in the last bucket.
#[inline]
pub fn record(counts: &mut [u64; BUCKETS], elapsed_ms: f64) {
    let bucket = bucket_for_micros_f64(elapsed_ms * 1000.0);
    if let Some(count) = counts.get_mut(bucket) {
        *count = count.saturating_add(1);
    }
}

/// Estimated `p`-th percentile in milliseconds, `p` in `[0, 1]` (values outside are clamped),
/// or `None` when the histogram is empty or `p` is NaN.
///
/// Uses the nearest-rank definition: the `ceil(p·n)`-th smallest of `n` samples (the first
/// for `p = 0`). The estimate lies in the bucket holding that sample: samples are assumed
/// spread evenly on a log scale within it, so the `j`-th of `c` samples in a bucket
/// `[lower, upper)` is placed at `lower·(upper/lower)^((j - ½)/c)`. In bucket 0 the spread is
/// linear (its lower edge is 0), and the open-ended last bucket answers its lower edge
/// (the true value is at least that).
pub fn percentile_ms(counts: &[u64; BUCKETS], p: f64) -> Option<f64> {
    if p.is_nan() {
        return None;
    }
    let total: u128 = counts.iter().map(|&count| u128::from(count)).sum();
    if total == 0 {
        return None;
    }
    let p = p.clamp(0.0, 1.0);
    // Float-to-int `as` saturates; the clamp keeps the rank a valid 1-based position.
    let rank = ((p * total as f64).ceil() as u128).clamp(1, total);
    let mut below: u128 = 0;
    for (bucket, &count) in counts.iter().enumerate() {
        let count = u128::from(count);
        if count == 0 {
            continue;
        }
        if below + count >= rank {
            let position = ((rank - below) as f64 - 0.5) / count as f64;
            let (lower, upper) = bucket_bounds_micros(bucket);
            let micros = if bucket == 0 {
                upper * position
            } else if bucket == LAST_BUCKET {
                lower
            } else {
                // Ratio upper/lower is √2, so (√2)^position = 2^(position/2).
                lower * (position * 0.5).exp2()
            };
            return Some(micros / 1000.0);
        }
        below += count;
    }
    // Not reached: the ranks add up to `total`.
    None
}

/// Adds the counts of `from` into `into` (saturating).
pub fn merge(into: &mut [u64; BUCKETS], from: &[u64; BUCKETS]) {
    for (total, &add) in into.iter_mut().zip(from) {
        *total = total.saturating_add(add);
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    /// splitmix64: tiny deterministic generator for test distributions.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// Uniform in [0, 1).
        fn unit(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }

        /// Approximately standard normal (Irwin–Hall with 12 terms).
        fn normalish(&mut self) -> f64 {
            (0..12).map(|_| self.unit()).sum::<f64>() - 6.0
        }
    }

    fn histogram_of(samples_ms: &[f64]) -> [u64; BUCKETS] {
        let mut counts = [0; BUCKETS];
        for &sample in samples_ms {
            record(&mut counts, sample);
        }
        counts
    }

    /// Nearest-rank percentile of the samples, same definition as `percentile_ms`.
    fn exact_percentile_ms(samples_ms: &[f64], p: f64) -> f64 {
        let mut sorted = samples_ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
        sorted[rank - 1]
    }

    fn bucket_of_ms(ms: f64) -> usize {
        bucket_for_micros_f64(ms * 1000.0)
    }

    fn assert_percentiles_within_one_bucket(name: &str, samples_ms: &[f64]) {
        let counts = histogram_of(samples_ms);
        for p in [0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let exact = exact_percentile_ms(samples_ms, p);
            let estimate = percentile_ms(&counts, p).unwrap();
            let (exact_bucket, estimate_bucket) = (bucket_of_ms(exact), bucket_of_ms(estimate));
            assert!(
                exact_bucket.abs_diff(estimate_bucket) <= 1,
                "{name} p{p}: exact {exact} ms (bucket {exact_bucket}), \
                 estimate {estimate} ms (bucket {estimate_bucket})"
            );
        }
    }

    #[test]
    fn bucket_indices_are_monotonic_and_match_bounds() {
        let mut previous = 0;
        let mut values: Vec<u64> = (0..200_000).collect();
        for shift in 0..64 {
            let power = 1u64 << shift;
            values.extend([power - 1, power, power + 1, power.saturating_mul(3) / 2]);
        }
        values.push(u64::MAX);
        values.sort_unstable();
        for us in values {
            let bucket = bucket_for_micros(us);
            assert!(bucket < BUCKETS);
            assert!(bucket >= previous, "bucket decreased at {us}");
            previous = bucket;
            let (lower, upper) = bucket_bounds_micros(bucket);
            let value = us as f64;
            assert!(
                lower <= value && value < upper,
                "{us} µs not in bucket {bucket} [{lower}, {upper})"
            );
            assert_eq!(
                bucket,
                bucket_for_micros_f64(value),
                "int/float disagree at {us}"
            );
        }
        assert_eq!(previous, LAST_BUCKET);
    }

    #[test]
    fn known_buckets() {
        assert_eq!(bucket_for_micros(0), 0);
        assert_eq!(bucket_for_micros(1), 1); // [1, 1.41)
        assert_eq!(bucket_for_micros(2), 3); // [2, 2.83)
        assert_eq!(bucket_for_micros(3), 4); // [2.83, 4)
        assert_eq!(bucket_for_micros(1000), 20); // [724, 1024): 1 ms
        assert_eq!(bucket_for_micros((1 << 31) - 1), LAST_BUCKET - 1);
        assert_eq!(bucket_for_micros(1 << 31), LAST_BUCKET);
        assert_eq!(bucket_for_micros(u64::MAX), LAST_BUCKET);
        assert_eq!(bucket_for_micros_f64(0.5), 0);
        assert_eq!(bucket_for_micros_f64(1.2), 1);
        assert_eq!(bucket_for_micros_f64(1.5), 2);
    }

    #[test]
    fn bounds_are_contiguous_and_grow_by_sqrt2() {
        assert_eq!(bucket_bounds_micros(0), (0.0, 1.0));
        for i in 1..BUCKETS {
            let (lower, upper) = bucket_bounds_micros(i);
            assert_eq!(
                bucket_bounds_micros(i - 1).1,
                lower,
                "gap before bucket {i}"
            );
            if i < LAST_BUCKET {
                assert!((upper / lower - SQRT_2).abs() < 1e-12);
            }
        }
        assert_eq!(
            bucket_bounds_micros(LAST_BUCKET),
            (2f64.powi(31), f64::INFINITY)
        );
        assert_eq!(
            bucket_bounds_micros(BUCKETS),
            bucket_bounds_micros(LAST_BUCKET)
        );
        assert_eq!(
            bucket_bounds_micros(usize::MAX),
            bucket_bounds_micros(LAST_BUCKET)
        );
    }

    #[test]
    fn float_buckets_agree_with_bounds_at_every_edge() {
        for i in 1..BUCKETS {
            let (lower, _) = bucket_bounds_micros(i);
            assert_eq!(bucket_for_micros_f64(lower), i, "edge of bucket {i}");
            assert_eq!(
                bucket_for_micros_f64(lower.next_down()),
                i - 1,
                "below bucket {i}"
            );
        }
    }

    #[test]
    fn integer_buckets_agree_with_exact_sqrt2_thresholds() {
        // The smallest integer in the upper half of octave k is isqrt(2^(2k+1)) + 1
        // (2^(2k+1) is never a perfect square).
        for octave in 0..31u32 {
            let threshold = (1u64 << (2 * octave + 1)).isqrt() + 1;
            let upper = 2 + 2 * octave as usize;
            for us in [threshold - 1, threshold, threshold + 1] {
                let expected = if us >= threshold { upper } else { upper - 1 };
                if us >= 1 << octave && us < 1 << (octave + 1) {
                    assert_eq!(bucket_for_micros(us), expected, "{us} µs");
                    assert_eq!(bucket_for_micros_f64(us as f64), expected, "{us} µs (f64)");
                }
            }
        }
    }

    #[test]
    fn strange_durations_do_not_panic() {
        let mut counts = [0; BUCKETS];
        for ms in [
            f64::NAN,
            -f64::NAN,
            -1.0,
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            1e-300,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::MAX,
            f64::MIN,
            1e30,
            2_147_483.648, // exactly 2^31 µs
        ] {
            record(&mut counts, ms);
        }
        assert_eq!(counts[0], 9);
        assert_eq!(counts[LAST_BUCKET], 4);
        assert_eq!(counts.iter().sum::<u64>(), 13);
        let mut full = [u64::MAX; BUCKETS];
        record(&mut full, 1.0);
        assert_eq!(full[bucket_of_ms(1.0)], u64::MAX);
    }

    #[test]
    fn empty_and_single_sample() {
        let counts = [0; BUCKETS];
        assert_eq!(percentile_ms(&counts, 0.5), None);
        assert_eq!(percentile_ms(&counts, 0.0), None);

        let single = histogram_of(&[12.5]);
        for p in [
            0.0,
            0.5,
            0.99,
            1.0,
            -3.0,
            7.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            let estimate = percentile_ms(&single, p).unwrap();
            assert_eq!(bucket_of_ms(estimate), bucket_of_ms(12.5), "p {p}");
        }
        assert_eq!(percentile_ms(&single, f64::NAN), None);
    }

    #[test]
    fn estimates_in_edge_buckets() {
        // Sub-microsecond: linear inside [0, 1) µs.
        let tiny = histogram_of(&[0.0001, 0.0002, 0.0003, 0.0004]);
        let p50 = percentile_ms(&tiny, 0.5).unwrap();
        assert!((0.0..0.001).contains(&p50));
        // Open-ended last bucket answers its lower edge.
        let huge = histogram_of(&[1e9, 5e9]);
        assert_eq!(percentile_ms(&huge, 0.99), Some(2f64.powi(31) / 1000.0));
        // Estimates stay strictly inside the bucket holding the sample.
        let counts = histogram_of(&[1.0; 1000]);
        for p in [0.0, 0.001, 0.5, 1.0] {
            assert_eq!(
                bucket_of_ms(percentile_ms(&counts, p).unwrap()),
                bucket_of_ms(1.0)
            );
        }
    }

    #[test]
    fn percentiles_are_monotonic_in_p() {
        let mut rng = Rng(7);
        let samples: Vec<f64> = (0..5000).map(|_| (rng.normalish() * 2.0).exp()).collect();
        let counts = histogram_of(&samples);
        let mut previous = 0.0;
        for step in 0..=1000 {
            let estimate = percentile_ms(&counts, f64::from(step) / 1000.0).unwrap();
            assert!(estimate >= previous);
            previous = estimate;
        }
    }

    #[test]
    fn uniform_distribution() {
        let mut rng = Rng(1);
        let samples: Vec<f64> = (0..20_000).map(|_| 0.05 + rng.unit() * 500.0).collect();
        assert_percentiles_within_one_bucket("uniform", &samples);
    }

    #[test]
    fn log_normal_distribution() {
        let mut rng = Rng(2);
        // Median ~3 ms, spanning several decades.
        let samples: Vec<f64> = (0..20_000)
            .map(|_| (1.1 + 1.5 * rng.normalish()).exp())
            .collect();
        assert_percentiles_within_one_bucket("log-normal", &samples);
    }

    #[test]
    fn bimodal_distribution() {
        let mut rng = Rng(3);
        // 90% fast cache hits near 0.2 ms, 10% slow disk reads near 150 ms.
        let samples: Vec<f64> = (0..20_000)
            .map(|_| {
                if rng.unit() < 0.9 {
                    0.2 * (0.3 * rng.normalish()).exp()
                } else {
                    150.0 * (0.5 * rng.normalish()).exp()
                }
            })
            .collect();
        assert_percentiles_within_one_bucket("bimodal", &samples);
    }

    #[test]
    fn small_and_very_wide_samples() {
        assert_percentiles_within_one_bucket("three", &[0.5, 7.0, 300.0]);
        let mut rng = Rng(4);
        // From sub-microsecond to beyond the last bucket edge.
        let samples: Vec<f64> = (0..5000)
            .map(|_| 10f64.powf(rng.unit() * 14.0 - 5.0))
            .collect();
        assert_percentiles_within_one_bucket("wide", &samples);
    }

    #[test]
    fn merge_adds_and_saturates() {
        let a_samples = [0.1, 1.0, 10.0];
        let b_samples = [1.0, 100.0];
        let mut merged = histogram_of(&a_samples);
        merge(&mut merged, &histogram_of(&b_samples));
        let all: Vec<f64> = a_samples.iter().chain(&b_samples).copied().collect();
        assert_eq!(merged, histogram_of(&all));

        let mut full = [u64::MAX - 1; BUCKETS];
        merge(&mut full, &[5; BUCKETS]);
        assert_eq!(full, [u64::MAX; BUCKETS]);
        // Percentiles work on saturated counts (the sum does not overflow).
        assert!(percentile_ms(&full, 0.5).is_some());
    }
}
