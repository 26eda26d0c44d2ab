//! Cache keys: a 128-bit xxh3 hash of everything that decides a query's output besides the
//! user and database (kept as exact fields next to it). Pure Rust.

use xxhash_rust::xxh3::Xxh3;

/// Hashes the query text, the parameters (their jsonb image: equal values have equal
/// images) and the output-affecting settings. Every part is length-prefixed, so
/// ("ab", "c") and ("a", "bc") differ; a missing setting hashes differently from "".
pub fn hash(query: &[u8], params: &[u8], settings: &[Option<&[u8]>]) -> [u64; 2] {
    let mut h = Xxh3::new();
    let mut part = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part(query);
    part(params);
    for s in settings {
        match s {
            Some(v) => part(v),
            None => part(&[0xff]),
        }
    }
    let v = h.digest128();
    [v as u64, (v >> 64) as u64]
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn every_part_matters_and_boundaries_are_unambiguous() {
        let s: [Option<&[u8]>; 2] = [Some(b"public"), Some(b"UTC")];
        let base = hash(b"SELECT $1", b"[1]", &s);
        assert_eq!(base, hash(b"SELECT $1", b"[1]", &s));
        assert_ne!(base, hash(b"SELECT $1", b"[2]", &s));
        assert_ne!(base, hash(b"SELECT  $1", b"[1]", &s));
        let other_path: [Option<&[u8]>; 2] = [Some(b"s2"), Some(b"UTC")];
        assert_ne!(base, hash(b"SELECT $1", b"[1]", &other_path));
        assert_ne!(hash(b"ab", b"c", &[]), hash(b"a", b"bc", &[]));
        assert_ne!(hash(b"q", b"", &[None]), hash(b"q", b"", &[Some(b"")]));
    }
}
