//! Text fingerprints that stand in for core's query jumble on repeated statements.
//!
//! Core's `queryId` hashes the analysed parse tree with the *values* of constants left
//! out. Computing it (`JumbleQuery`) walks the whole tree on every parse, which costs more
//! per statement than everything else pg_perf does. Most statements a server sees are the
//! same few texts with other constants, so a backend remembers, per statement text with its
//! literals blanked out, the `queryId` core computed for it the first time
//! ([`super::query_id_memo`]); this module computes that blanked-out fingerprint.
//!
//! The one property that matters: **two statements with equal fingerprints (under the
//! same catalog, user, `search_path` and parser settings) have equal `queryId`s.** A
//! fingerprint may be finer than the jumble (then a statement just misses the memo and is
//! jumbled), never coarser. So only what provably ends up as a `Const` whose *value* the
//! jumble ignores is blanked, and what decides the constant's type stays:
//!
//! * Numbers become their class: `int4`, `int8` or `numeric`, by magnitude, exactly where
//!   PostgreSQL 15's grammar switches (the two magnitudes where the sign decides, 2^31 and
//!   2^63, are kept verbatim). Anything with a `.` or an exponent is `numeric`.
//! * Strings become their flavour (`'…'`, `E'…'`, `B'…'`, `X'…'`, `U&'…'`, dollar-quoted):
//!   an untyped literal's type comes from its context, which is kept.
//! * Numbers are kept verbatim where their value is structure, not data: anywhere after
//!   `ORDER BY`, `GROUP BY` (ordinals such as `ORDER BY 2` pick a target-list entry) up to
//!   the end of that clause, inside `DISTINCT ON (…)`, and as `float(p)`'s precision (which
//!   picks `real` or `double precision`). The string after `UESCAPE` is kept too (it
//!   decides how a `U&"…"` identifier decodes).
//! * Everything else is kept byte for byte, except that each run of whitespace and
//!   comments becomes one space: PostgreSQL's scanner treats any such run alike (the one
//!   place where a newline matters, a string continued on the next line, is inside a
//!   literal here), so whitespace counts as "some or none" and comments not at all.
//! * A `$n` parameter makes the text insufficient: its type comes from the client.
//!
//! Token boundaries follow PostgreSQL 15's scanner (the same rules as
//! [`super::normalize`]'s lexer). The caller adds what the text cannot show: the user,
//! `search_path`, and settings that change how a text parses; it only uses the memo where
//! strings read as here (`standard_conforming_strings = on`) and no column-reference hooks
//! (PL/pgSQL variables) take part in analysis.

use super::normalize::{
    block_comment_end, dollar_token, ident_end, is_ident_start, is_space, line_comment_end,
    number_end, quoted_ident_end, quoted_string_end, Escapes, TokenKind,
};

/// Clause nesting beyond which every number is kept verbatim (safe, just never shared).
const MAX_CLAUSES: usize = 16;

/// Marks a blanked literal in the stream; followed by its class byte. A 0x01 byte of the
/// text itself (outside quotes) is written as `TAG, 0`.
const TAG: u8 = 0x01;

/// Where numbers must be kept verbatim: one entry per open `ORDER BY` / `GROUP BY` list or
/// `DISTINCT ON (` list.
#[derive(Clone, Copy)]
enum Clause {
    /// `ORDER BY`/`GROUP BY` at this parenthesis depth: open while the depth is at least
    /// this and no clause-ending keyword appears at this depth.
    ByList(u32),
    /// `DISTINCT ON (`: open while inside the parenthesis opened at this depth.
    Parens(u32),
}

/// The text of one statement as a byte stream that is equal for two statements exactly when
/// they differ only in blanked literal values, the amount of whitespace and comments
/// (`out` is cleared first). Hash the result.
///
/// The stream is the text itself with each run of whitespace and comments written as one
/// space, and each blanked literal as [`TAG`] and its class: one pass, copying the text in
/// as few pieces as possible (a statement usually has a handful of literals).
///
/// Returns false when the text alone cannot stand for the parse tree: it refers to a
/// parameter `$n`, whose type comes from outside the text.
pub fn fingerprint_stream(src: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    out.reserve(src.len() + 16);
    let mut tracker = ClauseTracker::default();
    // src[copied..i] is pending verbatim text.
    let mut copied = 0;
    let mut i = 0;
    while let Some(&b) = src.get(i) {
        let class = CHAR_CLASS[b as usize];
        // Fast paths for the bulk of a statement: words (not a literal prefix such as E'),
        // and single spaces between tokens.
        if class & WORD_START != 0 && !literal_prefix(src, i) {
            let start = i;
            let rest = &src[i + 1..];
            i += 1 + rest
                .iter()
                .position(|&c| CHAR_CLASS[c as usize] & WORD_CONT == 0)
                .unwrap_or(rest.len());
            tracker.after_word(&src[start..i]);
            continue;
        }
        if b == b' '
            && i > 0
            && src
                .get(i + 1)
                .is_some_and(|&c| CHAR_CLASS[c as usize] & BLANK_START == 0)
        {
            i += 1;
            continue;
        }
        if class & BLANK_START != 0
            && (is_space(b)
                || (b == b'-' && src.get(i + 1) == Some(&b'-'))
                || (b == b'/' && src.get(i + 1) == Some(&b'*')))
        {
            let end = skip_blank(src, i);
            // A single space is already in canonical form: leave it in the pending run.
            // Blanks before the first and after the last token separate nothing.
            if !(end == i + 1 && b == b' ') || i == 0 || end == src.len() {
                out.extend_from_slice(&src[copied..i]);
                if i > 0 && end < src.len() {
                    out.push(b' ');
                }
                copied = end;
            }
            i = end;
            continue;
        }
        let second = src.get(i + 1).copied();
        let (end, token) = match b {
            b'\'' => (
                quoted_string_end(src, i + 1, Escapes::Standard),
                Lexeme::String,
            ),
            b'e' | b'E' if second == Some(b'\'') => (
                quoted_string_end(src, i + 2, Escapes::Backslash),
                Lexeme::String,
            ),
            b'b' | b'B' | b'x' | b'X' if second == Some(b'\'') => (
                quoted_string_end(src, i + 2, Escapes::Standard),
                Lexeme::String,
            ),
            b'u' | b'U' if second == Some(b'&') && src.get(i + 2) == Some(&b'\'') => (
                quoted_string_end(src, i + 3, Escapes::Standard),
                Lexeme::String,
            ),
            b'u' | b'U' if second == Some(b'&') && src.get(i + 2) == Some(&b'"') => {
                (quoted_ident_end(src, i + 3), Lexeme::Verbatim)
            }
            b'"' => (quoted_ident_end(src, i + 1), Lexeme::Verbatim),
            b'$' => match dollar_token(src, i) {
                (TokenKind::Param(_), _) => return false,
                (TokenKind::String, end) => (end, Lexeme::String),
                (_, end) => (end, Lexeme::Verbatim),
            },
            b'0'..=b'9' => (number_end(src, i), Lexeme::Number),
            b'.' if second == Some(b'.') => (i + 2, Lexeme::Verbatim),
            b'.' if second.is_some_and(|c| c.is_ascii_digit()) => {
                (number_end(src, i), Lexeme::Number)
            }
            // A literal prefix letter not followed by its quote after all (cannot happen:
            // literal_prefix checked it), or any other word start: a word.
            _ if is_ident_start(b) => (ident_end(src, i), Lexeme::Word),
            b'(' => (i + 1, Lexeme::Open),
            b')' => (i + 1, Lexeme::Close),
            b';' => (i + 1, Lexeme::Semicolon),
            TAG => (i + 1, Lexeme::Tag),
            _ => (i + 1, Lexeme::Verbatim),
        };
        let end = end.max(i + 1).min(src.len());
        let text = &src[i..end];
        let class = match token {
            Lexeme::String if tracker.prev1 != Kw::Uescape => Some(text[0].to_ascii_lowercase()),
            Lexeme::Number if !tracker.keeps_numbers() => number_class(text),
            Lexeme::Tag => Some(0),
            _ => None,
        };
        if let Some(class) = class {
            out.extend_from_slice(&src[copied..i]);
            out.push(TAG);
            out.push(class);
            copied = end;
        }
        tracker.after(token, text);
        i = end;
    }
    out.extend_from_slice(&src[copied..]);
    true
}

const WORD_START: u8 = 1;
const WORD_CONT: u8 = 2;
/// Whitespace, or the first byte of a comment (`-`, `/`): may start a blank run.
const BLANK_START: u8 = 4;

/// Byte classes, as PostgreSQL 15's scanner draws them (see `normalize::is_ident_start`,
/// `is_ident_cont`, `is_space`).
static CHAR_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            t[b] |= WORD_START | WORD_CONT;
        }
        if c.is_ascii_digit() || c == b'$' {
            t[b] |= WORD_CONT;
        }
        if matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0c | b'-' | b'/') {
            t[b] |= BLANK_START;
        }
        b += 1;
    }
    t
};

/// Whether the word start at `i` is the prefix of a literal or quoted identifier
/// (`E'`, `B'`, `X'`, `U&'`, `U&"`), which the scanner reads as one token.
#[inline]
fn literal_prefix(src: &[u8], i: usize) -> bool {
    match (src[i] | 0x20, src.get(i + 1)) {
        (b'e' | b'b' | b'x', Some(b'\'')) => true,
        (b'u', Some(b'&')) => matches!(src.get(i + 2), Some(b'\'' | b'"')),
        _ => false,
    }
}

/// End of the run of whitespace and comments starting at `from`.
fn skip_blank(src: &[u8], from: usize) -> usize {
    let mut i = from;
    loop {
        match (src.get(i), src.get(i + 1)) {
            (Some(&b), _) if is_space(b) => i += 1,
            (Some(b'-'), Some(b'-')) => i = line_comment_end(src, i),
            (Some(b'/'), Some(b'*')) => i = block_comment_end(src, i),
            _ => return i,
        }
    }
}

/// What a token is, as far as the fingerprint cares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lexeme {
    String,
    Number,
    Word,
    Open,
    Close,
    Semicolon,
    /// A 0x01 byte in the text.
    Tag,
    Verbatim,
}

/// Follows `ORDER BY`, `GROUP BY`, `DISTINCT ON (` and `float(` to know where numbers are
/// structure.
struct ClauseTracker {
    depth: u32,
    clauses: [Clause; MAX_CLAUSES],
    open: usize,
    overflow: bool,
    /// The two previous tokens, as keyword codes.
    prev1: Kw,
    prev2: Kw,
}

impl Default for ClauseTracker {
    fn default() -> Self {
        ClauseTracker {
            depth: 0,
            clauses: [Clause::ByList(0); MAX_CLAUSES],
            open: 0,
            overflow: false,
            prev1: Kw::None,
            prev2: Kw::None,
        }
    }
}

impl ClauseTracker {
    fn keeps_numbers(&self) -> bool {
        self.overflow || self.open > 0 || (self.prev1 == Kw::OpenParen && self.prev2 == Kw::Float)
    }

    fn push(&mut self, clause: Clause) {
        if self.open < MAX_CLAUSES {
            self.clauses[self.open] = clause;
            self.open += 1;
        } else {
            self.overflow = true;
        }
    }

    /// Closes by-lists at this depth (a clause-ending keyword or `;`).
    fn end_by_lists_here(&mut self) {
        while self.open > 0 {
            match self.clauses[self.open - 1] {
                Clause::ByList(d) if d == self.depth => self.open -= 1,
                _ => break,
            }
        }
    }

    /// [`Self::after`] for a word: only keywords change anything but the history.
    #[inline]
    fn after_word(&mut self, word: &[u8]) {
        // Most words are no keyword of interest: rule them out by length inline.
        let kw = if (1u16 << word.len().min(15)) & KEYWORD_LENGTHS == 0 {
            Kw::None
        } else {
            keyword(word)
        };
        if kw == Kw::None {
            self.prev2 = self.prev1;
            self.prev1 = Kw::None;
        } else {
            self.after(Lexeme::Word, word);
        }
    }

    fn after(&mut self, token: Lexeme, text: &[u8]) {
        let this = match token {
            Lexeme::Word => keyword(text),
            Lexeme::Open => Kw::OpenParen,
            _ => Kw::None,
        };
        if this.ends_clause() || token == Lexeme::Semicolon {
            self.end_by_lists_here();
        }
        match token {
            Lexeme::Open => {
                if self.prev1 == Kw::On && self.prev2 == Kw::Distinct {
                    self.push(Clause::Parens(self.depth));
                }
                self.depth = self.depth.saturating_add(1);
            }
            Lexeme::Close => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
        if this == Kw::By && matches!(self.prev1, Kw::Order | Kw::Group) {
            self.push(Clause::ByList(self.depth));
        }
        while self.open > 0 {
            let closed = match self.clauses[self.open - 1] {
                Clause::ByList(d) => self.depth < d,
                Clause::Parens(d) => self.depth <= d,
            };
            if !closed {
                break;
            }
            self.open -= 1;
        }
        self.prev2 = self.prev1;
        self.prev1 = this;
    }
}

/// Number classes in the stream.
const CLASS_INT4: u8 = b'i';
const CLASS_INT8: u8 = b'l';
const CLASS_NUMERIC: u8 = b'n';

/// The type PostgreSQL 15 gives a numeric literal whatever its sign, or `None` for the two
/// magnitudes whose type depends on a preceding minus sign (2^31: `int4` when negated,
/// else `int8`; 2^63: `int8` or `numeric`), which the stream then keeps verbatim.
fn number_class(bytes: &[u8]) -> Option<u8> {
    use std::cmp::Ordering::Greater;
    if bytes.iter().any(|b| !b.is_ascii_digit()) {
        // A decimal point or an exponent (or trailing junk, which PostgreSQL rejects):
        // a literal that does not read as an integer is numeric.
        return Some(CLASS_NUMERIC);
    }
    let Some(first) = bytes.iter().position(|&b| b != b'0') else {
        return Some(CLASS_INT4);
    };
    let digits = &bytes[first..];
    if compare_magnitude(digits, b"2147483647") != Greater {
        Some(CLASS_INT4)
    } else if digits == b"2147483648" || digits == b"9223372036854775808" {
        None
    } else if compare_magnitude(digits, b"9223372036854775807") != Greater {
        Some(CLASS_INT8)
    } else {
        Some(CLASS_NUMERIC)
    }
}

/// Compares two digit strings without leading zeros as numbers.
fn compare_magnitude(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Keywords the clause tracking looks at.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kw {
    None,
    OpenParen,
    Order,
    Group,
    By,
    Distinct,
    On,
    Float,
    Uescape,
    Limit,
    Offset,
    Fetch,
    For,
    Having,
    Window,
    Union,
    Intersect,
    Except,
    Returning,
}

impl Kw {
    /// Keywords that end an `ORDER BY` / `GROUP BY` list at their own depth.
    fn ends_clause(self) -> bool {
        matches!(
            self,
            Kw::Limit
                | Kw::Offset
                | Kw::Fetch
                | Kw::For
                | Kw::Having
                | Kw::Window
                | Kw::Union
                | Kw::Intersect
                | Kw::Except
                | Kw::Returning
        )
    }
}

/// Bit `n` set: some keyword of interest has `n` letters (see [`keyword`]).
const KEYWORD_LENGTHS: u16 =
    (1 << 2) | (1 << 3) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 9);

/// The keyword code of an identifier (case-insensitive); `Kw::None` for any other word.
fn keyword(word: &[u8]) -> Kw {
    let candidate: (&[u8], Kw) = match (word.len(), word[0] | 0x20) {
        (2, b'b') => (b"by", Kw::By),
        (2, b'o') => (b"on", Kw::On),
        (3, b'f') => (b"for", Kw::For),
        (5, b'o') => (b"order", Kw::Order),
        (5, b'g') => (b"group", Kw::Group),
        (5, b'f') if (word[1] | 0x20) == b'l' => (b"float", Kw::Float),
        (5, b'f') => (b"fetch", Kw::Fetch),
        (5, b'l') => (b"limit", Kw::Limit),
        (5, b'u') => (b"union", Kw::Union),
        (6, b'o') => (b"offset", Kw::Offset),
        (6, b'h') => (b"having", Kw::Having),
        (6, b'w') => (b"window", Kw::Window),
        (6, b'e') => (b"except", Kw::Except),
        (7, b'u') => (b"uescape", Kw::Uescape),
        (8, b'd') => (b"distinct", Kw::Distinct),
        (9, b'i') => (b"intersect", Kw::Intersect),
        (9, b'r') => (b"returning", Kw::Returning),
        _ => return Kw::None,
    };
    if candidate.0.eq_ignore_ascii_case(word) {
        candidate.1
    } else {
        Kw::None
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    fn fp(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        assert!(
            fingerprint_stream(s.as_bytes(), &mut out),
            "{s:?} has no parameters"
        );
        out
    }

    fn same(a: &str, b: &str) {
        assert_eq!(fp(a), fp(b), "{a:?} and {b:?} should share a fingerprint");
    }

    fn differ(a: &str, b: &str) {
        assert_ne!(fp(a), fp(b), "{a:?} and {b:?} must not share a fingerprint");
    }

    #[test]
    fn constants_of_one_type_share() {
        same(
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 98765",
        );
        same(
            "SELECT * FROM t WHERE s = 'a'",
            "SELECT * FROM t WHERE s = 'longer text'",
        );
        same(
            "SELECT * FROM t WHERE x = 1.5",
            "SELECT * FROM t WHERE x = 2e10",
        );
        same(
            "SELECT * FROM t WHERE x = -5",
            "SELECT * FROM t WHERE x = -2147483647",
        );
        same(
            "SELECT * FROM t WHERE id IN (1, 2, 3)",
            "SELECT * FROM t WHERE id IN (4, 5, 6)",
        );
        same("SELECT 'a'\n'b'", "SELECT 'c'\n'd'");
        same("SELECT $$x$$", "SELECT $q$y$q$");
        same("SELECT 007", "SELECT 7");
    }

    #[test]
    fn comments_and_amount_of_whitespace_do_not_count() {
        same(
            "SELECT /* app=a */ x FROM t  WHERE  y = 1",
            "SELECT /* app=b /* nested */ */ x FROM t WHERE y = 2 -- trailing",
        );
        same("SELECT x\n\tFROM t", "SELECT x FROM t");
    }

    #[test]
    fn types_of_constants_stay_apart() {
        differ("SELECT f(1)", "SELECT f(1.0)");
        differ("SELECT f(1)", "SELECT f(3000000000)");
        differ("SELECT f(3000000000)", "SELECT f(10000000000000000000)");
        differ("SELECT f(1)", "SELECT f('1')");
        differ("SELECT f('1')", "SELECT f(E'1')");
        differ("SELECT f(B'1')", "SELECT f(X'1')");
        differ("SELECT f('1')", "SELECT f($$1$$::int)");
        // The sign decides the type at 2^31 and 2^63: kept apart from every neighbour.
        differ("SELECT -2147483648", "SELECT -2147483647");
        differ("SELECT 2147483648", "SELECT 2147483649");
        differ("SELECT -9223372036854775808", "SELECT -9223372036854775807");
        differ("SELECT 9223372036854775808", "SELECT 9223372036854775809");
        differ("SELECT 5", "SELECT -5");
        differ("SELECT 2147483648", "SELECT 9223372036854775808");
    }

    #[test]
    fn ordinals_and_structural_numbers_are_kept() {
        differ(
            "SELECT a, b FROM t ORDER BY 1",
            "SELECT a, b FROM t ORDER BY 2",
        );
        differ(
            "SELECT a, b FROM t order by a, 1",
            "SELECT a, b FROM t order by a, 2",
        );
        differ(
            "SELECT a, count(*) FROM t GROUP BY 1",
            "SELECT a, count(*) FROM t GROUP BY 2",
        );
        differ(
            "SELECT a FROM t GROUP BY ROLLUP (1, 2)",
            "SELECT a FROM t GROUP BY ROLLUP (2, 1)",
        );
        differ(
            "SELECT DISTINCT ON (1) a, b FROM t",
            "SELECT DISTINCT ON (2) a, b FROM t",
        );
        differ(
            "SELECT * FROM (SELECT a, b FROM t ORDER BY 2) s WHERE a = 1",
            "SELECT * FROM (SELECT a, b FROM t ORDER BY 1) s WHERE a = 1",
        );
        differ(
            "SELECT a FROM t WHERE a IN (SELECT a FROM u GROUP BY 1)",
            "SELECT a FROM t WHERE a IN (SELECT a FROM u GROUP BY 2)",
        );
        differ("SELECT x::float(24)", "SELECT x::float(25)");
        differ(
            "SELECT U&\"d!0061t\" UESCAPE '!' FROM t",
            "SELECT U&\"d!0061t\" UESCAPE '#' FROM t",
        );
    }

    #[test]
    fn clauses_after_a_by_list_blank_numbers_again() {
        same(
            "SELECT a FROM t ORDER BY a LIMIT 10",
            "SELECT a FROM t ORDER BY a LIMIT 20",
        );
        same(
            "SELECT a FROM t GROUP BY a HAVING count(*) > 1",
            "SELECT a FROM t GROUP BY a HAVING count(*) > 7",
        );
        same(
            "SELECT (SELECT max(b) FROM u ORDER BY 1) FROM t WHERE a = 1",
            "SELECT (SELECT max(b) FROM u ORDER BY 1) FROM t WHERE a = 2",
        );
        // Numbers inside a by-list stay verbatim even in expressions (safe side).
        differ(
            "SELECT a FROM t ORDER BY a + 1",
            "SELECT a FROM t ORDER BY a + 2",
        );
    }

    #[test]
    fn parameters_make_the_text_insufficient() {
        let mut out = Vec::new();
        assert!(!fingerprint_stream(b"SELECT $1 + 1", &mut out));
        assert!(!fingerprint_stream(
            b"SELECT * FROM t WHERE a = $12",
            &mut out
        ));
        // Not parameters: inside strings, dollar quotes and identifiers.
        assert!(fingerprint_stream(
            b"SELECT '$1', $$ $2 $$, a$1 FROM t",
            &mut out
        ));
    }

    #[test]
    fn token_boundaries_count() {
        differ("SELECT a b FROM t", "SELECT ab FROM t");
        differ("SELECT a::int", "SELECT a: :int");
        differ("SELECT E'x'", "SELECT E 'x'");
        differ("SELECT N'x'", "SELECT N 'x'");
        differ("SELECT x FROM t1", "SELECT x FROM t2");
        differ("SELECT \"A\" FROM t", "SELECT \"a\" FROM t");
        differ("SELECT 1 -- x\n, 2", "SELECT 1");
    }
}
