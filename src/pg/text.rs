//! Small text helpers shared by the capabilities (no PostgreSQL calls).

/// `s` cut to at most `max_bytes` bytes, ending on a UTF-8 character boundary (so a
/// multi-byte character that does not fit entirely is dropped).
pub fn truncate_utf8(s: &str, max_bytes: usize) -> &str {
    if s.len() <= max_bytes {
        return s;
    }
    let mut end = max_bytes;
    // Terminates: index 0 is always a boundary. At most three steps for valid UTF-8.
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

#[cfg(test)]
mod unit_tests {
    use super::truncate_utf8;

    #[test]
    fn cuts_on_character_boundaries() {
        assert_eq!(truncate_utf8("abc", 5), "abc");
        assert_eq!(truncate_utf8("abc", 2), "ab");
        assert_eq!(truncate_utf8("aé", 2), "a");
        assert_eq!(truncate_utf8("日本", 4), "日");
        assert_eq!(truncate_utf8("日本", 0), "");
    }
}
