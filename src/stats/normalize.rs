//! Normalized statement text: the query with its constants replaced by `$1`, `$2`, ….
//!
//! pg_perf keeps one text per statement fingerprint (the core `queryId`), and that text
//! must look the way pg_stat_statements shows it so DBAs can compare the two views.
//! PostgreSQL's jumbler tells us where each constant *starts* (`JumbleState.clocations`)
//! but not where it ends, so the length is found by lexing. The lexer here is a small
//! re-implementation of the parts of PostgreSQL 15's `scan.l` that decide token
//! boundaries: numbers, every flavour of string literal (including the "continued
//! across a newline" form), dollar quotes, quoted identifiers and comments. It does not
//! build tokens' values and never fails: on malformed input (unterminated strings or
//! comments, stray bytes) it keeps going with the most conservative reading, because
//! this code runs inside database backends where a panic is an outage.
//!
//! Every offset in this module is a byte offset, like PostgreSQL's locations. All token
//! boundaries fall on ASCII bytes (or the ends of the text), so slicing at them never
//! splits a multi-byte UTF-8 character; offsets that point inside a character are
//! simply treated as "not the start of a token". The same holds in every server
//! encoding (ASCII bytes are ASCII characters, bytes of multi-byte characters are all
//! at least 0x80): the `*_bytes` functions take a text in the database encoding as it is,
//! since PostgreSQL's locations are offsets into those bytes (see `super::encoding`).
//!
//! Behaviour that knowingly differs from pg_stat_statements (PG15):
//! * Placeholders are numbered consecutively. pg_stat_statements numbers by position in
//!   its sorted location array, so duplicate locations there leave gaps in the numbering.
//! * The first placeholder number comes after the highest `$k` found in the text (outside
//!   strings, comments and identifiers); pg_stat_statements uses the highest parameter
//!   the parse tree refers to. They differ only when a parameter appears in the tree but
//!   not in this statement's text.
//! * A location that does not start a token, or starts a token that cannot be a constant
//!   (an operator, punctuation, a `$n` parameter), is left alone. pg_stat_statements
//!   would replace from that location up to the end of the next token.
//! * A location at `-` is widened over the sign only when a numeric literal follows
//!   (`-5`, `- 5`). pg_stat_statements widens over whatever token follows, which mangles
//!   rare forms like `-(5)`; those are left untouched here.
//! * Strings are lexed as with `standard_conforming_strings = on` (the default since
//!   PostgreSQL 9.1): backslashes are only escapes inside `E'…'`.
//! * [`statement_text`] also drops trailing semicolons, which pg_stat_statements keeps
//!   when the statement's location is unknown.

use std::io::Write as _;
use std::ops::Range;

/// Replaces the constants that start at `locations` (byte offsets into `query`, in any
/// order, duplicates allowed, `-1` or other out-of-range values ignored) with `$n`.
///
/// Numbering starts after the highest `$k` already present in `query`, so a statement
/// with parameters keeps them and its constants get the following numbers. A location
/// at a `-` followed by a numeric literal replaces the sign together with the number,
/// as PostgreSQL records negative constants at their sign. A location that does not
/// start a token which can hold a constant (a number, a string, or a word such as
/// `TRUE`, `NULL`, `ALL` or an `EXTRACT` field, which PostgreSQL also records as
/// constants) leaves the text there unchanged.
pub fn normalize_with_locations(query: &str, locations: &[i32]) -> String {
    let starts = locations
        .iter()
        .filter_map(|&location| usize::try_from(location).ok())
        .filter(|&start| start < query.len())
        .collect();
    utf8(replace_constants_at(query.as_bytes(), starts))
}

/// Text assembled from pieces of valid UTF-8 cut at ASCII bytes (so still valid).
fn utf8(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Like [`normalize_with_locations`] for one statement of a multi-statement source
/// string: `stmt_location`/`stmt_len` select the statement as in [`statement_text`], and
/// `locations` are byte offsets into the whole `source` (as PostgreSQL reports them).
/// Returns the statement's trimmed text with its constants replaced.
pub fn normalize_statement(
    source: &str,
    stmt_location: i32,
    stmt_len: i32,
    locations: &[i32],
) -> String {
    let range = statement_range(source, stmt_location, stmt_len);
    utf8(normalize_range(source.as_bytes(), range, locations))
}

/// [`normalize_statement`] on the bytes of a text in any server encoding (PostgreSQL's
/// locations are byte offsets in the database encoding; every server encoding keeps
/// ASCII bytes for ASCII and only bytes >= 0x80 inside multi-byte characters, so token
/// boundaries are found on the bytes as they are). The result is in the same encoding.
pub fn normalize_statement_bytes(
    source: &[u8],
    stmt_location: i32,
    stmt_len: i32,
    locations: &[i32],
) -> Vec<u8> {
    let range = statement_byte_range(source, stmt_location, stmt_len);
    normalize_range(source, range, locations)
}

fn normalize_range(source: &[u8], range: Range<usize>, locations: &[i32]) -> Vec<u8> {
    let text = source.get(range.clone()).unwrap_or(&[]);
    let starts = locations
        .iter()
        .filter_map(|&location| usize::try_from(location).ok())
        .filter(|start| range.contains(start))
        .map(|start| start - range.start)
        .collect();
    replace_constants_at(text, starts)
}

/// Replaces every numeric and string literal in `query` with `$n`, for statements whose
/// constant locations are unknown.
///
/// Without the parse tree a sign cannot be told apart from a subtraction, so `-5` becomes
/// `-$1`; words such as `TRUE` or `NULL` are kept because they are not always constants
/// (`IS NULL`). `N'…'` becomes `N$1` (PostgreSQL reads `N` as a separate keyword), and
/// the escape character string after `U&'…' UESCAPE` is kept, as pg_stat_statements
/// keeps it.
pub fn normalize_all_literals(query: &str) -> String {
    utf8(normalize_all_literals_bytes(query.as_bytes()))
}

/// [`normalize_all_literals`] on the bytes of a text in any server encoding.
pub fn normalize_all_literals_bytes(query: &[u8]) -> Vec<u8> {
    let mut lexer = Lexer::new(query);
    let mut spans = Vec::new();
    let mut highest_param = 0;
    let mut uescape = UescapeState::None;
    while let Some(token) = lexer.next_token() {
        let is_escape_char_string = uescape == UescapeState::AfterKeyword;
        uescape = match token.kind {
            TokenKind::UnicodeString | TokenKind::UnicodeQuotedIdent => {
                UescapeState::AfterUnicodeToken
            }
            TokenKind::Word
                if uescape == UescapeState::AfterUnicodeToken
                    && lexer.text(&token).eq_ignore_ascii_case(b"uescape") =>
            {
                UescapeState::AfterKeyword
            }
            _ => UescapeState::None,
        };
        match token.kind {
            TokenKind::Param(number) => highest_param = highest_param.max(number),
            TokenKind::Number | TokenKind::UnicodeString => spans.push(token.start..token.end),
            TokenKind::String if !is_escape_char_string => spans.push(token.start..token.end),
            _ => {}
        }
    }
    assemble(query, &spans, highest_param)
}

/// The statement's own text inside a possibly multi-statement `source` string.
///
/// `stmt_location`/`stmt_len` are as in `PlannedStmt`/`RawStmt`: a location of `-1` means
/// "the whole string" (and the length is then ignored, as PostgreSQL does), a length of
/// `0` (or any non-positive value) means "to the end of the string". The result is
/// trimmed of surrounding whitespace and of trailing semicolons (with the whitespace
/// around them). Locations beyond the string or inside a UTF-8 character are treated as
/// unknown; a length reaching beyond the string is cut at its end.
pub fn statement_text(source: &str, stmt_location: i32, stmt_len: i32) -> &str {
    source
        .get(statement_range(source, stmt_location, stmt_len))
        .unwrap_or("")
}

/// [`statement_text`] on the bytes of a text in any server encoding.
pub fn statement_bytes(source: &[u8], stmt_location: i32, stmt_len: i32) -> &[u8] {
    source
        .get(statement_byte_range(source, stmt_location, stmt_len))
        .unwrap_or(&[])
}

/// [`statement_range`] for bytes in any server encoding, where PostgreSQL's locations
/// are trusted to fall on character boundaries.
fn statement_byte_range(source: &[u8], stmt_location: i32, stmt_len: i32) -> Range<usize> {
    let (start, end) = match usize::try_from(stmt_location) {
        Ok(location) if location <= source.len() => {
            let end = match usize::try_from(stmt_len) {
                Ok(len) if len > 0 => location.saturating_add(len).min(source.len()),
                _ => source.len(),
            };
            (location, end)
        }
        _ => (0, source.len()),
    };
    trimmed_range(source, start, end)
}

/// Byte range of [`statement_text`] inside `source`; always on UTF-8 character boundaries.
pub fn statement_range(source: &str, stmt_location: i32, stmt_len: i32) -> Range<usize> {
    let bytes = source.as_bytes();
    let (start, end) = match usize::try_from(stmt_location) {
        // `is_char_boundary` is false beyond the end, so this also rejects such offsets.
        Ok(location) if source.is_char_boundary(location) => {
            let end = match usize::try_from(stmt_len) {
                Ok(len) if len > 0 => ceil_char_boundary(source, location.saturating_add(len)),
                _ => source.len(),
            };
            (location, end)
        }
        _ => (0, source.len()),
    };
    // Trimmed bytes are ASCII, so the bounds stay on character boundaries.
    trimmed_range(bytes, start, end)
}

/// `start..end` of `bytes` without surrounding whitespace and trailing semicolons (with
/// the whitespace around them).
fn trimmed_range(bytes: &[u8], mut start: usize, mut end: usize) -> Range<usize> {
    end = end.min(bytes.len());
    while start < end && is_space(bytes[start]) {
        start += 1;
    }
    while end > start && (is_space(bytes[end - 1]) || bytes[end - 1] == b';') {
        end -= 1;
    }
    start..end
}

/// `stmt` without surrounding whitespace and trailing semicolons (as [`statement_range`]
/// trims), on bytes.
pub fn trim_statement(stmt: &[u8]) -> &[u8] {
    &stmt[trimmed_range(stmt, 0, stmt.len())]
}

/// `s` cut to at most `max_bytes` bytes on a character boundary (the pg layer's helper,
/// shared with the cache).
pub use crate::pg::text::truncate_utf8;

/// Smallest character boundary of `s` at or after `index`, capped at `s.len()`.
fn ceil_char_boundary(s: &str, index: usize) -> usize {
    if index >= s.len() {
        return s.len();
    }
    let mut boundary = index;
    while !s.is_char_boundary(boundary) {
        boundary += 1;
    }
    boundary
}

/// Where `normalize_all_literals` is in a `U&'…' UESCAPE '…'` sequence, whose last string
/// is an escape character rather than a constant.
#[derive(Clone, Copy, PartialEq, Eq)]
enum UescapeState {
    None,
    AfterUnicodeToken,
    AfterKeyword,
}

/// Core of the location-driven normalization. `starts` are byte offsets known to be
/// inside `query`, in any order.
fn replace_constants_at(query: &[u8], starts: Vec<usize>) -> Vec<u8> {
    if starts.is_empty() {
        return query.to_vec();
    }
    let (spans, highest_param) = constant_spans(query, starts);
    assemble(query, &spans, highest_param)
}

/// The statement's text (as [`normalize_statement_bytes`] cuts it out of `source`) and its
/// constants as `$n` number and byte range in that text: the values [`normalize_statement_bytes`]
/// replaces, numbered as it numbers them.
pub fn statement_constants<'a>(
    source: &'a [u8],
    stmt_location: i32,
    stmt_len: i32,
    locations: &[i32],
) -> (&'a [u8], Vec<(u32, Range<usize>)>) {
    let range = statement_byte_range(source, stmt_location, stmt_len);
    let text = source.get(range.clone()).unwrap_or(&[]);
    let starts: Vec<usize> = locations
        .iter()
        .filter_map(|&location| usize::try_from(location).ok())
        .filter(|start| range.contains(start))
        .map(|start| start - range.start)
        .collect();
    if starts.is_empty() {
        return (text, Vec::new());
    }
    let (spans, highest_param) = constant_spans(text, starts);
    let first = highest_param.saturating_add(1);
    let numbered = spans
        .into_iter()
        .enumerate()
        .map(|(i, span)| {
            (
                first.saturating_add(i as u64).min(u32::MAX as u64) as u32,
                span,
            )
        })
        .collect();
    (text, numbered)
}

/// The spans of the constants starting at `starts` (sorted, non-overlapping) and the
/// highest `$k` in `query`.
fn constant_spans(query: &[u8], mut starts: Vec<usize>) -> (Vec<Range<usize>>, u64) {
    starts.sort_unstable();
    starts.dedup();

    // Finding the highest `$k` needs the whole text lexed, but only if a `$` occurs at all;
    // otherwise lexing can stop after the last constant.
    let must_lex_to_end = query.contains(&b'$');
    let mut lexer = Lexer::new(query);
    let mut pending = starts.iter().copied().peekable();
    let mut spans = Vec::with_capacity(starts.len());
    let mut highest_param = 0;
    while let Some(token) = lexer.next_token() {
        if let TokenKind::Param(number) = token.kind {
            highest_param = highest_param.max(number);
        }
        // Locations before this token pointed into whitespace, a comment or the middle of
        // an earlier token: bad input, nothing to replace there.
        while pending.next_if(|&start| start < token.start).is_some() {}
        if pending.next_if_eq(&token.start).is_some() {
            if let Some(end) = constant_end(&mut lexer, &token) {
                spans.push(token.start..end);
            }
        }
        if pending.peek().is_none() && !must_lex_to_end {
            break;
        }
    }
    (spans, highest_param)
}

/// End of the constant that starts with `token`, or `None` when no constant can start
/// there. For a `-` followed by a number the constant covers both, and `lexer` is moved
/// past the number.
fn constant_end(lexer: &mut Lexer<'_>, token: &Token) -> Option<usize> {
    match token.kind {
        TokenKind::Number
        | TokenKind::String
        | TokenKind::UnicodeString
        | TokenKind::Word
        | TokenKind::QuotedIdent
        | TokenKind::UnicodeQuotedIdent => Some(token.end),
        TokenKind::Minus => {
            let mut ahead = lexer.clone();
            match ahead.next_token() {
                Some(number) if number.kind == TokenKind::Number => {
                    *lexer = ahead;
                    Some(number.end)
                }
                _ => None,
            }
        }
        TokenKind::Param(_) | TokenKind::Other => None,
    }
}

/// Builds the output: `query` with each span (sorted, non-overlapping) replaced by the
/// next placeholder, numbered from `highest_param + 1`.
fn assemble(query: &[u8], spans: &[Range<usize>], highest_param: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(query.len() + 4 * spans.len());
    let mut copied_up_to = 0;
    let mut number = highest_param.saturating_add(1);
    for span in spans {
        push_segment(&mut out, query, copied_up_to..span.start);
        // Writing to a Vec cannot fail.
        let _ = write!(out, "${number}");
        number = number.saturating_add(1);
        copied_up_to = span.end;
    }
    push_segment(&mut out, query, copied_up_to..query.len());
    out
}

/// Appends `query[range]` (nothing for an empty or out-of-range range).
fn push_segment(out: &mut Vec<u8>, query: &[u8], range: Range<usize>) {
    if let Some(bytes) = query.get(range) {
        out.extend_from_slice(bytes);
    }
}

/// What a token is, as far as normalization cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TokenKind {
    /// Integer, decimal or real literal (with any trailing identifier characters, which
    /// PostgreSQL 15 rejects as "trailing junk", folded in so they are never split off).
    Number,
    /// `'…'`, `E'…'`, `B'…'`, `X'…'` or a dollar-quoted string, including continuation
    /// segments (`'a'` newline `'b'` is one literal).
    String,
    /// `U&'…'`: may be followed by `UESCAPE '…'`.
    UnicodeString,
    /// Unquoted identifier or keyword.
    Word,
    /// `"…"`.
    QuotedIdent,
    /// `U&"…"`: may be followed by `UESCAPE '…'`.
    UnicodeQuotedIdent,
    /// Positional parameter `$n` (the number saturates).
    Param(u64),
    /// A single `-` (possibly the sign of a negative constant).
    Minus,
    /// Any other operator or punctuation character, or a stray byte.
    Other,
}

/// One token: its kind and byte range `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Token {
    kind: TokenKind,
    start: usize,
    end: usize,
}

/// Splits SQL text into tokens the way PostgreSQL's scanner draws token boundaries,
/// skipping whitespace and comments. Operators are returned one character at a time:
/// normalization only needs to know where a `-` sign can start.
#[derive(Clone)]
struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a [u8]) -> Self {
        Lexer { src, pos: 0 }
    }

    /// The bytes of `token`.
    fn text(&self, token: &Token) -> &'a [u8] {
        self.src.get(token.start..token.end).unwrap_or(&[])
    }

    fn byte(&self, index: usize) -> Option<u8> {
        self.src.get(index).copied()
    }

    /// The next token, or `None` at the end of the text. Every token is non-empty, so
    /// repeated calls always make progress.
    fn next_token(&mut self) -> Option<Token> {
        self.pos = skip_whitespace_and_comments(self.src, self.pos);
        let start = self.pos;
        let first = self.byte(start)?;
        let second = self.byte(start + 1);
        let third = self.byte(start + 2);
        let (kind, end) = match first {
            b'\'' => (
                TokenKind::String,
                quoted_string_end(self.src, start + 1, Escapes::Standard),
            ),
            b'e' | b'E' if second == Some(b'\'') => (
                TokenKind::String,
                quoted_string_end(self.src, start + 2, Escapes::Backslash),
            ),
            b'b' | b'B' | b'x' | b'X' if second == Some(b'\'') => (
                TokenKind::String,
                quoted_string_end(self.src, start + 2, Escapes::Standard),
            ),
            b'u' | b'U' if second == Some(b'&') && third == Some(b'\'') => (
                TokenKind::UnicodeString,
                quoted_string_end(self.src, start + 3, Escapes::Standard),
            ),
            b'u' | b'U' if second == Some(b'&') && third == Some(b'"') => (
                TokenKind::UnicodeQuotedIdent,
                quoted_ident_end(self.src, start + 3),
            ),
            b'"' => (
                TokenKind::QuotedIdent,
                quoted_ident_end(self.src, start + 1),
            ),
            b'$' => dollar_token(self.src, start),
            b'0'..=b'9' => (TokenKind::Number, number_end(self.src, start)),
            // `..` is one token in PostgreSQL, so `1..10` never yields a `.10` number.
            b'.' if second == Some(b'.') => (TokenKind::Other, start + 2),
            b'.' if second.is_some_and(|b| b.is_ascii_digit()) => {
                (TokenKind::Number, number_end(self.src, start))
            }
            b if is_ident_start(b) => (TokenKind::Word, ident_end(self.src, start)),
            b'-' => (TokenKind::Minus, start + 1),
            // Every byte >= 0x80 starts an identifier, so `first` is ASCII here and
            // `start + 1` is a character boundary.
            _ => (TokenKind::Other, start + 1),
        };
        self.pos = end;
        Some(Token { kind, start, end })
    }
}

/// How backslashes behave inside a single-quoted string.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Escapes {
    /// Standard-conforming strings: only `''` escapes a quote.
    Standard,
    /// `E'…'`: a backslash escapes the next byte, too.
    Backslash,
}

/// End (exclusive) of a single-quoted string whose body starts at `body_start`, following
/// PostgreSQL's continuation rule: a closing quote followed by whitespace that contains a
/// newline (and possibly `--` comments) and then another quote continues the same
/// literal. Unterminated strings run to the end of the text.
pub(super) fn quoted_string_end(src: &[u8], body_start: usize, escapes: Escapes) -> usize {
    let mut i = body_start;
    loop {
        match src.get(i) {
            None => return src.len(),
            Some(b'\\') if escapes == Escapes::Backslash => i += 2,
            Some(b'\'') => {
                if src.get(i + 1) == Some(&b'\'') {
                    i += 2;
                    continue;
                }
                let after_quote = i + 1;
                match continuation_quote(src, after_quote) {
                    Some(next_quote) => i = next_quote + 1,
                    None => return after_quote,
                }
            }
            Some(_) => i += 1,
        }
    }
}

/// If the text at `from` is whitespace with at least one newline (`--` comments allowed,
/// `/* */` not) followed by a quote, the position of that quote.
fn continuation_quote(src: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    let mut saw_newline = false;
    loop {
        match src.get(i) {
            Some(&b) if is_space(b) => {
                saw_newline |= b == b'\n' || b == b'\r';
                i += 1;
            }
            Some(b'-') if src.get(i + 1) == Some(&b'-') => i = line_comment_end(src, i),
            Some(b'\'') if saw_newline => return Some(i),
            _ => return None,
        }
    }
}

/// End (exclusive) of a double-quoted identifier whose body starts at `body_start` (`""`
/// is an escaped quote). Unterminated identifiers run to the end of the text.
pub(super) fn quoted_ident_end(src: &[u8], body_start: usize) -> usize {
    let mut i = body_start;
    loop {
        match src.get(i) {
            None => return src.len(),
            Some(b'"') if src.get(i + 1) == Some(&b'"') => i += 2,
            Some(b'"') => return i + 1,
            Some(_) => i += 1,
        }
    }
}

/// Token starting with `$` at `start`: a parameter `$n`, a dollar-quoted string
/// (`$$…$$` or `$tag$…$tag$`; unterminated ones run to the end), or a lone `$`.
pub(super) fn dollar_token(src: &[u8], start: usize) -> (TokenKind, usize) {
    let after_dollar = start + 1;
    if src.get(after_dollar).is_some_and(|b| b.is_ascii_digit()) {
        let mut number: u64 = 0;
        let mut i = after_dollar;
        while let Some(&digit) = src.get(i).filter(|b| b.is_ascii_digit()) {
            number = number
                .saturating_mul(10)
                .saturating_add(u64::from(digit - b'0'));
            i += 1;
        }
        // `$1abc` is an error in PostgreSQL; keep the junk in the token, not as a word.
        if src.get(i).is_some_and(|&b| is_ident_start(b)) {
            i = ident_end(src, i);
        }
        return (TokenKind::Param(number), i);
    }
    let mut tag_end = after_dollar;
    if src.get(tag_end).is_some_and(|&b| is_ident_start(b)) {
        while src.get(tag_end).is_some_and(|&b| is_dollar_tag_cont(b)) {
            tag_end += 1;
        }
    }
    if src.get(tag_end) != Some(&b'$') {
        return (TokenKind::Other, after_dollar);
    }
    let body_start = tag_end + 1;
    let (Some(delimiter), Some(body)) = (src.get(start..body_start), src.get(body_start..)) else {
        return (TokenKind::Other, after_dollar);
    };
    let end = body
        .windows(delimiter.len())
        .position(|window| window == delimiter)
        .map_or(src.len(), |offset| body_start + offset + delimiter.len());
    (TokenKind::String, end)
}

/// End (exclusive) of a numeric literal starting at `start` (a digit, or `.` before a
/// digit): `1`, `1.5`, `.5`, `1.`, `1e10`, `1.5E-3`.
pub(super) fn number_end(src: &[u8], start: usize) -> usize {
    let mut i = digits_end(src, start);
    if src.get(i) == Some(&b'.') {
        // `1..10` (PL/pgSQL ranges) is the integer 1 followed by `..`.
        if src.get(i + 1) == Some(&b'.') {
            return i;
        }
        i = digits_end(src, i + 1);
    }
    if matches!(src.get(i), Some(b'e' | b'E')) {
        let mut exponent = i + 1;
        if matches!(src.get(exponent), Some(b'+' | b'-')) {
            exponent += 1;
        }
        if src.get(exponent).is_some_and(|b| b.is_ascii_digit()) {
            i = digits_end(src, exponent);
        }
    }
    // PostgreSQL 15 rejects identifier characters glued to a number (`0x1F`, `1abc`);
    // keeping them in the token means such text is replaced whole, never half.
    if src.get(i).is_some_and(|&b| is_ident_start(b)) {
        i = ident_end(src, i);
    }
    i
}

fn digits_end(src: &[u8], from: usize) -> usize {
    let mut i = from;
    while src.get(i).is_some_and(|b| b.is_ascii_digit()) {
        i += 1;
    }
    i
}

fn ident_end(src: &[u8], from: usize) -> usize {
    let mut i = from;
    while src.get(i).is_some_and(|&b| is_ident_cont(b)) {
        i += 1;
    }
    i
}

/// Position after any whitespace and comments starting at `from`.
pub(super) fn skip_whitespace_and_comments(src: &[u8], from: usize) -> usize {
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

/// End of a `--` comment starting at `start`: the next newline (not included) or the end.
fn line_comment_end(src: &[u8], start: usize) -> usize {
    src.get(start..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\n' || b == b'\r'))
        .map_or(src.len(), |offset| start + offset)
}

/// End (exclusive) of a `/* … */` comment starting at `start`; these nest in SQL.
/// Unterminated comments run to the end of the text.
fn block_comment_end(src: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    loop {
        match (src.get(i), src.get(i + 1)) {
            (None, _) => return src.len(),
            (Some(b'/'), Some(b'*')) => {
                depth += 1;
                i += 2;
            }
            (Some(b'*'), Some(b'/')) => {
                depth = depth.saturating_sub(1);
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
}

/// Whitespace as PostgreSQL 15's scanner sees it (`scanner_isspace`).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c)
}

/// First byte of an identifier: ASCII letter, underscore, or any byte of a multi-byte
/// UTF-8 character.
fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// Later bytes of an identifier: also digits and `$`.
fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// Later bytes of a dollar-quote tag: like identifiers but without `$`.
fn is_dollar_tag_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit()
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    /// Byte offset of the `nth` (0-based) occurrence of `needle` in `query`.
    fn at(query: &str, needle: &str, nth: usize) -> i32 {
        let (offset, _) = query
            .match_indices(needle)
            .nth(nth)
            .unwrap_or_else(|| panic!("{needle:?} #{nth} not in {query:?}"));
        i32::try_from(offset).unwrap()
    }

    /// Normalizes `query` with one location at the first occurrence of each needle.
    fn norm(query: &str, needles: &[&str]) -> String {
        let locations: Vec<i32> = needles.iter().map(|n| at(query, n, 0)).collect();
        normalize_with_locations(query, &locations)
    }

    fn kinds(query: &str) -> Vec<(TokenKind, &str)> {
        let mut lexer = Lexer::new(query.as_bytes());
        let mut out = Vec::new();
        while let Some(token) = lexer.next_token() {
            out.push((token.kind, &query[token.start..token.end]));
        }
        out
    }

    #[test]
    fn statement_constants_match_the_numbering() {
        let q = "SELECT 1; SELECT * FROM t WHERE a = $1 AND s = 'x''y' AND d > date '2024-01-31' AND n = -5";
        let start = at(q, "SELECT *", 0);
        let locs = [at(q, "'x", 0), at(q, "'2024", 0), at(q, "-5", 0)];
        let (text, values) = statement_constants(q.as_bytes(), start, 0, &locs);
        let got: Vec<(u32, &str)> = values
            .iter()
            .map(|(n, r)| (*n, std::str::from_utf8(&text[r.clone()]).unwrap()))
            .collect();
        assert_eq!(got, vec![(2, "'x''y'"), (3, "'2024-01-31'"), (4, "-5")]);
        let norm = normalize_statement_bytes(q.as_bytes(), start, 0, &locs);
        assert_eq!(
            std::str::from_utf8(&norm).unwrap(),
            "SELECT * FROM t WHERE a = $1 AND s = $2 AND d > date $3 AND n = $4"
        );
    }

    // ---- lexer ----

    #[test]
    fn lexer_numbers() {
        for number in [
            "1", "42", "1.5", ".5", "1.", "1e10", "1.5E-3", "1e+5", "3.e2",
        ] {
            let query = format!("SELECT {number}, x");
            assert_eq!(
                kinds(&query)[1],
                (TokenKind::Number, number),
                "lexing {query:?}"
            );
        }
        assert_eq!(
            kinds("1..10"),
            vec![
                (TokenKind::Number, "1"),
                (TokenKind::Other, ".."),
                (TokenKind::Number, "10"),
            ]
        );
        // Exponent markers without digits and glued identifiers stay inside the token.
        assert_eq!(kinds("1e")[0], (TokenKind::Number, "1e"));
        assert_eq!(kinds("0x1F+1")[0], (TokenKind::Number, "0x1F"));
        assert_eq!(
            kinds("1.5.3"),
            vec![(TokenKind::Number, "1.5"), (TokenKind::Number, ".3")]
        );
    }

    #[test]
    fn lexer_words_params_and_operators() {
        assert_eq!(
            kinds("a$1 t1 _x é $12 $ -1 a::int"),
            vec![
                (TokenKind::Word, "a$1"),
                (TokenKind::Word, "t1"),
                (TokenKind::Word, "_x"),
                (TokenKind::Word, "é"),
                (TokenKind::Param(12), "$12"),
                (TokenKind::Other, "$"),
                (TokenKind::Minus, "-"),
                (TokenKind::Number, "1"),
                (TokenKind::Word, "a"),
                (TokenKind::Other, ":"),
                (TokenKind::Other, ":"),
                (TokenKind::Word, "int"),
            ]
        );
        assert_eq!(
            kinds("$99999999999999999999999")[0].0,
            TokenKind::Param(u64::MAX)
        );
        assert_eq!(kinds("$1abc")[0], (TokenKind::Param(1), "$1abc"));
    }

    #[test]
    fn lexer_strings() {
        let cases = [
            ("'it''s' x", "'it''s'"),
            (r"E'a\'b' x", r"E'a\'b'"),
            (r"e'\\' x", r"e'\\'"),
            ("B'101' x", "B'101'"),
            ("x'1F' x", "x'1F'"),
            ("U&'d\\0061t' x", "U&'d\\0061t'"),
            ("$$a'b$$ x", "$$a'b$$"),
            ("$tag$ a $$ b $tag$ x", "$tag$ a $$ b $tag$"),
            ("$a$ x$b$a$ x", "$a$ x$b$a$"),
            ("'a'\n'b' x", "'a'\n'b'"),
            ("'a'  \r\n  'b' x", "'a'  \r\n  'b'"),
            ("'a' -- note\n'b' x", "'a' -- note\n'b'"),
            ("'a'\n-- note\n  'b' x", "'a'\n-- note\n  'b'"),
            ("E'a\\\\'\n'\\'' x", "E'a\\\\'\n'\\''"),
        ];
        for (query, literal) in cases {
            let tokens = kinds(query);
            assert_eq!(tokens[0].1, literal, "lexing {query:?}");
            assert_eq!(tokens[1], (TokenKind::Word, "x"), "lexing {query:?}");
        }
        // No newline, or a block comment: two separate literals.
        assert_eq!(kinds("'a' 'b'").len(), 2);
        assert_eq!(kinds("'a' /* c */\n'b'").len(), 2);
        // N'..' is the keyword N followed by an ordinary string, as in PostgreSQL.
        assert_eq!(
            kinds("N'x'"),
            vec![(TokenKind::Word, "N"), (TokenKind::String, "'x'")]
        );
        assert_eq!(kinds("U&'x'")[0].0, TokenKind::UnicodeString);
        assert_eq!(kinds("U&\"x\"")[0].0, TokenKind::UnicodeQuotedIdent);
        // A prefix letter only counts at the start of a token.
        assert_eq!(
            kinds("some'x'"),
            vec![(TokenKind::Word, "some"), (TokenKind::String, "'x'")]
        );
    }

    #[test]
    fn lexer_skips_comments_and_quoted_identifiers() {
        assert_eq!(
            kinds("/* 1 /* '2' */ 3 */ \"a\"\"b 4\" -- 5\n6"),
            vec![
                (TokenKind::QuotedIdent, "\"a\"\"b 4\""),
                (TokenKind::Number, "6")
            ]
        );
        assert_eq!(kinds("/**/1"), vec![(TokenKind::Number, "1")]);
    }

    // ---- normalize_with_locations ----

    #[test]
    fn replaces_simple_constants() {
        let q = "SELECT * FROM t WHERE a = 1 AND b = 'x'";
        assert_eq!(
            norm(q, &["1", "'x'"]),
            "SELECT * FROM t WHERE a = $1 AND b = $2"
        );
    }

    #[test]
    fn unsorted_and_duplicate_locations_replace_each_constant_once() {
        let q = "SELECT 10, 20, 30";
        let locations = [
            at(q, "30", 0),
            at(q, "10", 0),
            at(q, "30", 0),
            at(q, "20", 0),
        ];
        assert_eq!(normalize_with_locations(q, &locations), "SELECT $1, $2, $3");
    }

    #[test]
    fn numbering_continues_after_existing_params() {
        assert_eq!(
            norm("SELECT * FROM t WHERE a = $1 AND b = 5", &["5"]),
            "SELECT * FROM t WHERE a = $1 AND b = $2"
        );
        // The highest parameter counts even when it comes after the constant.
        assert_eq!(norm("SELECT 5, $3, $1", &["5"]), "SELECT $4, $3, $1");
        // `$n` inside strings, comments, identifiers and dollar quotes is not a parameter.
        let q = "SELECT '$7', \"$8\", a$9, $$ $6 $$, 5 /* $5 */ -- $4";
        assert_eq!(
            normalize_with_locations(q, &[at(q, "5", 0)]),
            "SELECT '$7', \"$8\", a$9, $$ $6 $$, $1 /* $5 */ -- $4"
        );
    }

    #[test]
    fn huge_existing_param_numbers_saturate() {
        let q = "SELECT $99999999999999999999, 1";
        let out = normalize_with_locations(q, &[at(q, " 1", 0) + 1]);
        assert_eq!(out, format!("SELECT $99999999999999999999, ${}", u64::MAX));
    }

    #[test]
    fn negative_constants_include_the_sign() {
        assert_eq!(norm("SELECT -5", &["-"]), "SELECT $1");
        assert_eq!(norm("SELECT - 5 FROM t", &["-"]), "SELECT $1 FROM t");
        assert_eq!(norm("SELECT -1.5e3::float8", &["-"]), "SELECT $1::float8");
        assert_eq!(norm("WHERE a=-5", &["-"]), "WHERE a=$1");
        assert_eq!(norm("WHERE j->-1", &["-1"]), "WHERE j->$1");
        assert_eq!(norm("SELECT -/* c */5", &["-"]), "SELECT $1");
        // Binary minus: PostgreSQL reports the constant at the number.
        assert_eq!(norm("SELECT a - 5", &["5"]), "SELECT a - $1");
        // Both the sign and the number reported: still one placeholder.
        let q = "SELECT -5, 6";
        let locations = [at(q, "-", 0), at(q, "5", 0), at(q, "6", 0)];
        assert_eq!(normalize_with_locations(q, &locations), "SELECT $1, $2");
    }

    #[test]
    fn minus_not_followed_by_a_number_is_left_alone() {
        assert_eq!(norm("SELECT -(5)", &["-"]), "SELECT -(5)");
        assert_eq!(norm("SELECT - -5", &["-"]), "SELECT - -5");
        assert_eq!(norm("SELECT -x", &["-"]), "SELECT -x");
        assert_eq!(norm("SELECT 1 -", &["-"]), "SELECT 1 -");
        assert_eq!(norm("SELECT 'a' - 'b'", &["-"]), "SELECT 'a' - 'b'");
    }

    #[test]
    fn numeric_literal_forms() {
        for number in ["1", "1.5", ".5", "1.", "1e10", "1.5E-3", "12e+3"] {
            let q = format!("SELECT {number} FROM t");
            assert_eq!(
                normalize_with_locations(&q, &[7]),
                "SELECT $1 FROM t",
                "normalizing {q:?}"
            );
        }
    }

    #[test]
    fn string_literal_forms() {
        let literals = [
            "'it''s'",
            r"E'don\'t'",
            r"e'\\'",
            "U&'d\\0061t'",
            "B'1010'",
            "X'1f'",
            "$$it's$$",
            "$fn$ SELECT 'x' $$ $fn$",
            "'a'\n'b'",
            "'a'\n  -- comment\n  'b'",
            "''",
        ];
        for literal in literals {
            let q = format!("SELECT {literal} AS v");
            assert_eq!(
                normalize_with_locations(&q, &[7]),
                "SELECT $1 AS v",
                "normalizing {q:?}"
            );
        }
    }

    #[test]
    fn national_and_unicode_escape_strings_match_pg_stat_statements() {
        // PostgreSQL records N'…' at the quote, after the NCHAR keyword.
        assert_eq!(norm("SELECT N'abc'", &["'abc'"]), "SELECT N$1");
        assert_eq!(
            norm("SELECT U&'d!0061t' UESCAPE '!'", &["U&"]),
            "SELECT $1 UESCAPE '!'"
        );
    }

    #[test]
    fn keywords_and_casts_are_kept() {
        assert_eq!(
            norm("SELECT now() - interval '1 day'", &["'1 day'"]),
            "SELECT now() - interval $1"
        );
        assert_eq!(
            norm("SELECT '2020-01-01'::date", &["'2020"]),
            "SELECT $1::date"
        );
        assert_eq!(
            norm("SELECT date '2020-01-01'", &["'2020"]),
            "SELECT date $1"
        );
        assert_eq!(
            norm("SELECT CAST('5' AS int)", &["'5'"]),
            "SELECT CAST($1 AS int)"
        );
    }

    #[test]
    fn word_constants_recorded_by_postgres_are_replaced() {
        assert_eq!(
            norm("SELECT * FROM t WHERE f = true LIMIT ALL", &["true", "ALL"]),
            "SELECT * FROM t WHERE f = $1 LIMIT $2"
        );
        assert_eq!(
            norm("SELECT extract(epoch FROM now())", &["epoch"]),
            "SELECT extract($1 FROM now())"
        );
        assert_eq!(
            norm("INSERT INTO t VALUES (NULL)", &["NULL"]),
            "INSERT INTO t VALUES ($1)"
        );
    }

    #[test]
    fn locations_not_starting_a_constant_leave_the_text_alone() {
        let q = "SELECT a, 'str', 123 /* 7 */ FROM t WHERE x = $1 -- 9";
        let bad = [
            at(q, "tr", 0), // inside a string
            at(q, "23", 0), // inside a number
            at(q, " ", 0),  // whitespace
            at(q, "7", 0),  // inside a comment
            at(q, "9", 0),  // inside a line comment
            at(q, ",", 0),  // punctuation
            at(q, "=", 0),  // operator
            at(q, "$1", 0), // parameter
            at(q, "/*", 0), // comment start
            -1,
            -100,
            i32::MIN,
            i32::MAX,
            i32::try_from(q.len()).unwrap(),
            i32::try_from(q.len()).unwrap() + 5,
        ];
        assert_eq!(normalize_with_locations(q, &bad), q);
        // Good locations mixed with bad ones still work.
        let mut mixed = bad.to_vec();
        mixed.push(at(q, "123", 0));
        assert_eq!(
            normalize_with_locations(q, &mixed),
            "SELECT a, 'str', $2 /* 7 */ FROM t WHERE x = $1 -- 9"
        );
    }

    #[test]
    fn no_locations_returns_the_text_unchanged() {
        let q = "SELECT 1, 'a' -- x";
        assert_eq!(normalize_with_locations(q, &[]), q);
        assert_eq!(normalize_with_locations("", &[0, 1, -1]), "");
    }

    #[test]
    fn multi_byte_text_around_constants() {
        let q = "SELECT 'héllo', 'ü' || 'ñ', 42 FROM \"tæble\" WHERE naïve = '日本語' AND ë=7";
        let locations = [
            at(q, "'héllo'", 0),
            at(q, "'ü'", 0),
            at(q, "'ñ'", 0),
            at(q, "42", 0),
            at(q, "'日本語'", 0),
            at(q, "7", 0),
        ];
        assert_eq!(
            normalize_with_locations(q, &locations),
            "SELECT $1, $2 || $3, $4 FROM \"tæble\" WHERE naïve = $5 AND ë=$6"
        );
        // Offsets inside a multi-byte character are not token starts.
        let inside: Vec<i32> = (0..q.len())
            .filter(|&i| !q.is_char_boundary(i))
            .map(|i| i32::try_from(i).unwrap())
            .collect();
        assert!(!inside.is_empty());
        assert_eq!(normalize_with_locations(q, &inside), q);
    }

    #[test]
    fn multi_byte_identifiers_and_dollar_tags() {
        let q = "SELECT $ü$ x $ü$, café1, 5";
        assert_eq!(
            normalize_with_locations(q, &[7, at(q, "5", 0)]),
            "SELECT $1, café1, $2"
        );
    }

    #[test]
    fn unterminated_tokens_run_to_the_end() {
        let cases = [
            ("SELECT 'abc", "SELECT $1"),
            ("SELECT E'abc\\", "SELECT $1"),
            ("SELECT $$abc", "SELECT $1"),
            ("SELECT $a$abc$b$", "SELECT $1"),
            ("SELECT 'a'\n'b", "SELECT $1"),
            ("SELECT B'", "SELECT $1"),
        ];
        for (q, expected) in cases {
            assert_eq!(normalize_with_locations(q, &[7]), expected, "{q:?}");
        }
        // Constants inside an unterminated comment or identifier are never found.
        let q = "SELECT /* 1 /* 2 */ 3";
        assert_eq!(normalize_with_locations(q, &[at(q, "3", 0)]), q);
        let q = "SELECT \"a 1";
        assert_eq!(normalize_with_locations(q, &[at(q, "1", 0)]), q);
    }

    // ---- normalize_statement / statement_text ----

    #[test]
    fn statement_text_selects_and_trims() {
        let source = "SELECT 1;  SELECT 2 ;\n  SELECT 3";
        assert_eq!(statement_text(source, 0, 8), "SELECT 1");
        assert_eq!(statement_text(source, 9, 11), "SELECT 2");
        assert_eq!(statement_text(source, 21, 0), "SELECT 3");
        assert_eq!(statement_text(source, -1, 3), source.trim_end_matches(';'));
        assert_eq!(statement_text(" SELECT 1 ; ; \n", -1, 0), "SELECT 1");
        assert_eq!(statement_text("SELECT 1", 0, -7), "SELECT 1");
        assert_eq!(statement_text("SELECT 1", 0, i32::MAX), "SELECT 1");
        assert_eq!(statement_text("", -1, 0), "");
        assert_eq!(statement_text("  ;  ", 0, 0), "");
        // Unknown (out of range) locations mean the whole string.
        assert_eq!(statement_text(" SELECT 1 ", 99, 1), "SELECT 1");
        assert_eq!(statement_text(" SELECT 1 ", i32::MIN, 1), "SELECT 1");
    }

    #[test]
    fn statement_text_respects_utf8_boundaries() {
        let source = "SELECT 'é'; SELECT 'ü'";
        let second = i32::try_from(source.find("SELECT 'ü'").unwrap()).unwrap();
        assert_eq!(statement_text(source, second, 0), "SELECT 'ü'");
        // A length ending inside 'ü' is rounded up to keep the whole character.
        assert_eq!(statement_text(source, second, 9), "SELECT 'ü");
        // A location inside 'é' is treated as unknown.
        let inside = i32::try_from(source.find('é').unwrap() + 1).unwrap();
        assert_eq!(statement_text(source, inside, 3), source);
    }

    #[test]
    fn normalize_statement_shifts_locations() {
        let source = "SELECT 1; \n SELECT 'a', 2 ; SELECT 3";
        let locations = [
            at(source, "1", 0),
            at(source, "'a'", 0),
            at(source, "2", 0),
            at(source, "3", 0),
        ];
        let second = at(source, "SELECT", 1) - 3; // include leading whitespace
        let len = at(source, ";", 1) - second;
        assert_eq!(
            normalize_statement(source, second, len, &locations),
            "SELECT $1, $2"
        );
        assert_eq!(normalize_statement(source, 0, 8, &locations), "SELECT $1");
        assert_eq!(
            normalize_statement(source, -1, 0, &locations),
            "SELECT $1; \n SELECT $2, $3 ; SELECT $4"
        );
    }

    // ---- normalize_all_literals ----

    #[test]
    fn all_literals_replaces_numbers_and_strings_only() {
        assert_eq!(
            normalize_all_literals(
                "SELECT a, t1.b, 1.5, 'x', E'\\n' FROM t1 WHERE c IS NULL AND d = true LIMIT 10"
            ),
            "SELECT a, t1.b, $1, $2, $3 FROM t1 WHERE c IS NULL AND d = true LIMIT $4"
        );
        assert_eq!(
            normalize_all_literals("SELECT -5, a-1, x::varchar(20)"),
            "SELECT -$1, a-$2, x::varchar($3)"
        );
        assert_eq!(
            normalize_all_literals("UPDATE t SET a = $1 WHERE b = 'x' AND c IN (1, 2)"),
            "UPDATE t SET a = $1 WHERE b = $2 AND c IN ($3, $4)"
        );
    }

    #[test]
    fn all_literals_skips_comments_and_identifiers() {
        assert_eq!(
            normalize_all_literals(
                "SELECT \"col 1\", \"a\"\"'b'\" /* 2 /* '3' */ 4 */ FROM t -- 5 'x'\nWHERE a$1 = 6"
            ),
            "SELECT \"col 1\", \"a\"\"'b'\" /* 2 /* '3' */ 4 */ FROM t -- 5 'x'\nWHERE a$1 = $1"
        );
    }

    #[test]
    fn all_literals_string_forms() {
        assert_eq!(
            normalize_all_literals(
                "SELECT N'n', B'1', X'f', $$d$$, $q$ 'e' $q$, 'a'\n'b', interval '1 day', 'x'::date"
            ),
            "SELECT N$1, $2, $3, $4, $5, $6, interval $7, $8::date"
        );
        assert_eq!(
            normalize_all_literals("SELECT U&'d!0061t' UESCAPE '!', U&\"c!0061\" uescape '!', '!'"),
            "SELECT $1 UESCAPE '!', U&\"c!0061\" uescape '!', $2"
        );
        // UESCAPE only protects the string right after it.
        assert_eq!(
            normalize_all_literals("SELECT 'a' UESCAPE '!'"),
            "SELECT $1 UESCAPE $2"
        );
    }

    #[test]
    fn all_literals_numbering_and_utf8() {
        assert_eq!(
            normalize_all_literals("SELECT $2, 'é', 7, ü FROM \"ß\" WHERE x = '日本'"),
            "SELECT $2, $3, $4, ü FROM \"ß\" WHERE x = $5"
        );
        assert_eq!(normalize_all_literals(""), "");
        assert_eq!(normalize_all_literals("SELECT x FROM t"), "SELECT x FROM t");
        assert_eq!(normalize_all_literals("FOR i IN 1..10"), "FOR i IN $1..$2");
        // `..` is one token, so `...5` is `..` then `.5`.
        assert_eq!(normalize_all_literals("x...5"), "x..$1");
    }

    #[test]
    fn all_literals_agrees_with_locations_of_every_literal() {
        let queries = [
            "SELECT 1, 'a', $$b$$, E'c', B'1', X'2', 3.5e2 FROM t WHERE x = $1",
            "INSERT INTO t VALUES ('é', 2, 'a'\n'b') -- 4",
            "SELECT /* '1' */ \"2\", 3",
        ];
        for q in queries {
            let mut lexer = Lexer::new(q.as_bytes());
            let mut locations = Vec::new();
            while let Some(token) = lexer.next_token() {
                if matches!(
                    token.kind,
                    TokenKind::Number | TokenKind::String | TokenKind::UnicodeString
                ) {
                    locations.push(i32::try_from(token.start).unwrap());
                }
            }
            assert_eq!(
                normalize_with_locations(q, &locations),
                normalize_all_literals(q),
                "{q:?}"
            );
        }
    }

    // ---- truncate_utf8 ----

    #[test]
    fn truncate_on_char_boundaries() {
        assert_eq!(truncate_utf8("hello", 10), "hello");
        assert_eq!(truncate_utf8("hello", 5), "hello");
        assert_eq!(truncate_utf8("hello", 3), "hel");
        assert_eq!(truncate_utf8("hello", 0), "");
        assert_eq!(truncate_utf8("", 0), "");
        // 'é' is 2 bytes, '日' 3, '😀' 4.
        assert_eq!(truncate_utf8("aé", 2), "a");
        assert_eq!(truncate_utf8("aé", 3), "aé");
        assert_eq!(truncate_utf8("日本", 5), "日");
        assert_eq!(truncate_utf8("😀x", 3), "");
        assert_eq!(truncate_utf8("😀x", 4), "😀");
        let text = "a日😀éb";
        for max in 0..=text.len() + 2 {
            let cut = truncate_utf8(text, max);
            assert!(cut.len() <= max);
            assert!(text.starts_with(cut));
            assert!(cut.len() + 4 > max.min(text.len()));
        }
    }

    // ---- robustness ----

    /// xorshift64*: tiny deterministic generator for the fuzz tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap()
        }
    }

    #[test]
    fn random_input_never_panics() {
        let pieces = [
            "'", "''", "\"", "$", "$$", "$a$", "-", "--", "/*", "*/", "*", "/", "\n", " ", "\r",
            "E'", "e", "U&", "&", "B", "x", "N", "1", "2.5", ".", "..", "e+", "\\", ";", "é",
            "日本", "😀", "SELECT", "uescape", "(", ")", ":", "\t", "\u{0c}", "\0", "$1",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let mut query = String::new();
            for _ in 0..rng.below(40) {
                query.push_str(pieces[rng.below(pieces.len())]);
            }
            let mut locations: Vec<i32> = (0..rng.below(12))
                .map(|_| {
                    let offset = rng.below(query.len() + 4);
                    i32::try_from(offset).unwrap() - 2
                })
                .collect();
            locations.push(i32::MAX);
            locations.push(i32::MIN);
            let normalized = normalize_with_locations(&query, &locations);
            // Text before the first location is never touched.
            let first = locations
                .iter()
                .filter_map(|&l| usize::try_from(l).ok())
                .min()
                .unwrap_or(usize::MAX)
                .min(query.len());
            let untouched = truncate_utf8(&query, first);
            assert!(
                normalized.starts_with(untouched),
                "{query:?} -> {normalized:?}"
            );
            if normalized != query {
                assert!(normalized.contains('$'));
            }
            assert_eq!(normalize_with_locations(&query, &[]), query);
            let all = normalize_all_literals(&query);
            if !query
                .bytes()
                .any(|b| b.is_ascii_digit() || b == b'\'' || b == b'$')
            {
                assert_eq!(all, query);
            }
            let len = i32::try_from(query.len()).unwrap();
            for (location, stmt_len) in [(-1, 0), (0, 0), (1, 3), (len, 0), (len / 2, len)] {
                let text = statement_text(&query, location, stmt_len);
                assert!(query.contains(text));
                let _ = normalize_statement(&query, location, stmt_len, &locations);
            }
            for max in [0, 1, 2, 3, 5, 8] {
                assert!(truncate_utf8(&query, max).len() <= max);
            }
        }
    }

    #[test]
    fn long_inputs_are_linear_enough() {
        // Pathological shapes: many unterminated dollar tags, deep comment nesting,
        // thousands of constants. Just make sure they complete and stay correct.
        let unterminated = format!("SELECT $tag${}", "$ta".repeat(20_000));
        assert_eq!(normalize_all_literals(&unterminated), "SELECT $1");
        let quotes = format!("SELECT '{}", "''".repeat(20_000));
        assert_eq!(normalize_with_locations(&quotes, &[7]), "SELECT $1");
        let nested = "/*".repeat(20_000) + &"*/".repeat(20_000) + " 1";
        assert!(normalize_all_literals(&nested).ends_with(" $1"));
        let list: Vec<String> = (0..5_000).map(|i| i.to_string()).collect();
        let q = format!("SELECT * FROM t WHERE id IN ({})", list.join(", "));
        let out = normalize_all_literals(&q);
        assert!(out.ends_with("$4999, $5000)"));
        let mut lexer = Lexer::new(q.as_bytes());
        let mut locations = Vec::new();
        while let Some(token) = lexer.next_token() {
            if token.kind == TokenKind::Number {
                locations.push(i32::try_from(token.start).unwrap());
            }
        }
        locations.reverse();
        assert_eq!(normalize_with_locations(&q, &locations), out);
    }

    /// Byte offset of the `nth` occurrence of `needle` in `hay`.
    fn at_bytes(hay: &[u8], needle: &[u8], nth: usize) -> i32 {
        let mut from = 0;
        for _ in 0..=nth {
            let i = hay[from..]
                .windows(needle.len())
                .position(|w| w == needle)
                .expect("needle present");
            from += i + 1;
        }
        (from - 1) as i32
    }

    #[test]
    fn non_utf8_bytes_keep_their_offsets() {
        // LATIN1: 'é' is the single byte 0xE9, 'ü' 0xFC (not valid UTF-8 on their own).
        let q: &[u8] = b"SELECT '\xe9' /* \xfc */, 'topsecret'";
        let locs = [at_bytes(q, b"'", 0), at_bytes(q, b"'topsecret'", 0)];
        let out = normalize_statement_bytes(q, -1, 0, &locs);
        assert_eq!(out, b"SELECT $1 /* \xfc */, $2".to_vec());
        // EUC_JP: every byte of a multi-byte character is >= 0x80, also in identifiers.
        let q: &[u8] = b"SELECT '\xc6\xfc\xcb\xdc' AS \"\xce\xf3\", 'topsecret' /* \xa4\xa2 */";
        let locs = [at_bytes(q, b"'", 0), at_bytes(q, b"'topsecret'", 0)];
        assert_eq!(
            normalize_statement_bytes(q, -1, 0, &locs),
            b"SELECT $1 AS \"\xce\xf3\", $2 /* \xa4\xa2 */".to_vec()
        );
        assert_eq!(
            normalize_all_literals_bytes(q),
            b"SELECT $1 AS \"\xce\xf3\", $2 /* \xa4\xa2 */".to_vec()
        );
        // One statement of several, by byte location and length.
        let src: &[u8] = b"SELECT '\xe9'; SELECT 'x\xe9', 5 ;";
        let start = at_bytes(src, b"SELECT", 1);
        let locs = [at_bytes(src, b"'x", 0), at_bytes(src, b"5", 0)];
        assert_eq!(
            normalize_statement_bytes(src, start, src.len() as i32 - start, &locs),
            b"SELECT $1, $2".to_vec()
        );
        assert_eq!(statement_bytes(src, start, 0), b"SELECT 'x\xe9', 5");
    }
}
