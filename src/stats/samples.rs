//! Sample values per statement (pure Rust, no pgrx): the constants of a simple-protocol
//! run (its literals as written, cut out of the query text at the locations core's jumble
//! records) or the bind parameters of an extended-protocol run (each printed by its type's
//! built-in output function as `'text'::type`), kept in shared memory so that the index
//! advisor can plan a captured statement with real values (custom plans) instead of
//! generically.
//!
//! One sample is the list of `($n, SQL literal)` pairs of one run, encoded as
//! `[u16 n][u16 len][len bytes]...` into at most [`SAMPLE_BYTES`] bytes; a run whose values
//! do not fit is not kept. Each statement keeps [`SAMPLE_SLOTS`] distinct samples with a
//! count each (how many captures saw that sample): see `shmem::SampleSlots` for the
//! capture schedule.

/// Distinct samples kept per statement.
pub const SAMPLE_SLOTS: usize = 4;
/// Bytes of encoded values per sample.
pub const SAMPLE_BYTES: usize = 256;

/// Encodes `values` (`$n` number, SQL literal bytes), sorted by number. `None` when they
/// do not fit into [`SAMPLE_BYTES`] (or a number or length does not fit a u16).
pub fn encode<'a>(values: impl IntoIterator<Item = (u32, &'a [u8])>) -> Option<Vec<u8>> {
    let mut v: Vec<(u32, &[u8])> = values.into_iter().collect();
    v.sort_by_key(|(n, _)| *n);
    v.dedup_by_key(|(n, _)| *n);
    let mut out = Vec::with_capacity(SAMPLE_BYTES);
    for (n, bytes) in v {
        let n = u16::try_from(n).ok()?;
        let len = u16::try_from(bytes.len()).ok()?;
        if out.len() + 4 + bytes.len() > SAMPLE_BYTES {
            return None;
        }
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(bytes);
    }
    Some(out)
}

/// Decodes what [`encode`] wrote (stops at the first malformed item).
pub fn decode(mut b: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let n = u16::from_le_bytes([b[0], b[1]]) as u32;
        let len = u16::from_le_bytes([b[2], b[3]]) as usize;
        if b.len() < 4 + len {
            break;
        }
        out.push((n, b[4..4 + len].to_vec()));
        b = &b[4 + len..];
    }
    out
}

/// Merges two encoded samples of one run (constants from parse analysis, parameters from
/// the executor): the union, `a` winning on equal numbers.
pub fn merge(a: &[u8], b: &[u8]) -> Option<Vec<u8>> {
    let (da, db) = (decode(a), decode(b));
    encode(da.iter().chain(db.iter()).map(|(n, v)| (*n, v.as_slice())))
}

/// A bind parameter's text as an SQL literal of its type: `'It''s'::text`.
pub fn param_literal(value: Option<&str>, type_name: &str) -> String {
    match value {
        None => format!("NULL::{type_name}"),
        Some(v) => format!("'{}'::{type_name}", v.replace('\'', "''")),
    }
}

/// How many executions to let pass before the next capture, from the statement's calls so
/// far and a random number: on average `calls / 8` (at least 1), so a statement run n times
/// is sampled about 8·ln(n) times in all, spread over its whole history (like a
/// reservoir's decreasing acceptance probability), and a hot statement's hook pays a
/// decrement almost every time.
pub fn next_gap(calls: i64, random: u64) -> u32 {
    let mean = (calls.max(0) as u64 / 8).max(1);
    let span = mean.saturating_mul(2).min(u32::MAX as u64 / 2);
    (1 + random % span) as u32
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn round_trip_sorted_and_bounded() {
        let e = encode([(3, &b"'x'"[..]), (1, &b"42"[..])]).unwrap();
        assert_eq!(decode(&e), vec![(1, b"42".to_vec()), (3, b"'x'".to_vec())]);
        let long = vec![b'a'; SAMPLE_BYTES];
        assert!(encode([(1, long.as_slice())]).is_none());
        assert_eq!(encode(std::iter::empty()), Some(Vec::new()));
        assert!(decode(&[1, 0, 9, 0, b'x']).is_empty());
    }

    #[test]
    fn merge_keeps_both() {
        let a = encode([(2, &b"'c'"[..])]).unwrap();
        let b = encode([(1, &b"'p'::text"[..])]).unwrap();
        assert_eq!(
            decode(&merge(&a, &b).unwrap()),
            vec![(1, b"'p'::text".to_vec()), (2, b"'c'".to_vec())]
        );
    }

    #[test]
    fn literals_and_gaps() {
        assert_eq!(param_literal(Some("It's"), "text"), "'It''s'::text");
        assert_eq!(param_literal(None, "integer"), "NULL::integer");
        assert!((1..=2).contains(&next_gap(0, 12345)));
        for r in 0..100 {
            let g = next_gap(8000, r * 7919);
            assert!((1..=2000).contains(&g));
        }
    }
}
