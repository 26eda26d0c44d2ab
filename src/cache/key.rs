//! Cache keys: a 128-bit xxh3 hash of everything that decides a query's output besides the
//! user and database (kept as exact fields next to it). Pure Rust.

use xxhash_rust::xxh3::Xxh3;

/// Hashes the query text, the parameters (canonical JSON text) and the output-affecting
/// settings. Every part is length-prefixed, so ("ab", "c") and ("a", "bc") differ.
pub fn hash(query: &str, params: &str, settings: &[Option<String>]) -> [u64; 2] {
    let mut h = Xxh3::new();
    let mut part = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part(query.as_bytes());
    part(params.as_bytes());
    for s in settings {
        match s {
            Some(v) => part(v.as_bytes()),
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
        let s = [Some("public".to_string()), Some("UTC".to_string())];
        let base = hash("SELECT $1", "[1]", &s);
        assert_eq!(base, hash("SELECT $1", "[1]", &s));
        assert_ne!(base, hash("SELECT $1", "[2]", &s));
        assert_ne!(base, hash("SELECT  $1", "[1]", &s));
        let other_path = [Some("s2".to_string()), Some("UTC".to_string())];
        assert_ne!(base, hash("SELECT $1", "[1]", &other_path));
        assert_ne!(hash("ab", "c", &[]), hash("a", "bc", &[]));
        assert_ne!(
            hash("q", "", &[None]),
            hash("q", "", &[Some(String::new())])
        );
    }
}
