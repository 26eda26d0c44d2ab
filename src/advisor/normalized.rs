//! Normalized statement texts made plannable again (pure Rust, no pgrx).
//!
//! Statement capture replaces each constant with `$n`. A typed literal such as
//! `timestamptz '2023-06-01'`, `date '2024-01-31'` or `interval '2 hours'` then becomes
//! `timestamptz $2`, `date $1`, `interval $3`, which is not valid SQL (the `type 'string'`
//! syntax takes a string constant only), so the what-if planner could not plan it.
//! [`plannable_text`] rewrites each `typename $n` into `$n::typename` (same type, same
//! meaning: a typed literal is a cast of an unknown-typed string), including multi-word
//! types (`timestamp with time zone`, `double precision`, `character varying(20)`),
//! qualified names (`pg_catalog.date`) and interval fields (`interval $1 day to second`).
//!
//! In valid SQL a word can stand right before `$n` only when it is a keyword that takes an
//! expression (`WHERE $1`, `LIMIT $1`, `AND $2`, `AT TIME ZONE $1`, ...): those are left
//! alone. Every other word before `$n` is a type name of a normalized typed literal.

/// Keywords after which an expression (hence `$n`) may follow in valid SQL.
const BEFORE_EXPRESSION: &[&str] = &[
    "all",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "at",
    "between",
    "both",
    "by",
    "case",
    "cast",
    "check",
    "collate",
    "default",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "escape",
    "except",
    "exists",
    "fetch",
    "filter",
    "first",
    "following",
    "for",
    "from",
    "group",
    "groups",
    "having",
    "ilike",
    "in",
    "intersect",
    "into",
    "is",
    "isnull",
    "last",
    "leading",
    "like",
    "limit",
    "next",
    "not",
    "notnull",
    "null",
    "nulls",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "over",
    "overlaps",
    "placing",
    "preceding",
    "range",
    "return",
    "returning",
    "row",
    "rows",
    "select",
    "set",
    "similar",
    "some",
    "symmetric",
    "then",
    "to",
    "trailing",
    "uescape",
    "union",
    "using",
    "values",
    "when",
    "where",
    "window",
    "with",
    "within",
    "zone",
];

/// Interval field words that may follow `interval $n`.
const INTERVAL_FIELDS: &[&str] = &["year", "month", "day", "hour", "minute", "second", "to"];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// An unquoted word, lowercased.
    Word(String),
    /// A double-quoted identifier (as written).
    Quoted,
    /// `$n`.
    Param,
    /// A number.
    Number,
    /// Any other single character (operators, punctuation) or a string literal.
    Other(char),
}

/// A token and its byte span in the text.
#[derive(Debug, Clone)]
struct Span {
    tok: Tok,
    start: usize,
    end: usize,
}

fn tokenize(text: &str) -> Vec<Span> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                i += 1;
            }
            i = (i + 2).min(b.len());
            continue;
        }
        if c == b'\'' || c == b'"' {
            // A string literal or quoted identifier; a doubled quote is an escaped quote.
            i += 1;
            loop {
                if i >= b.len() {
                    break;
                }
                if b[i] == c {
                    if b.get(i + 1) == Some(&c) {
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                i += 1;
            }
            let tok = if c == b'"' {
                Tok::Quoted
            } else {
                Tok::Other('\'')
            };
            out.push(Span { tok, start, end: i });
            continue;
        }
        if c == b'$' && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            out.push(Span {
                tok: Tok::Param,
                start,
                end: i,
            });
            continue;
        }
        if c == b'$' {
            // A dollar-quoted string: $tag$ ... $tag$.
            let mut j = i + 1;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            if b.get(j) == Some(&b'$') {
                let tag = &text[i..=j];
                let body = j + 1;
                let close = text[body..]
                    .find(tag)
                    .map_or(b.len(), |p| body + p + tag.len());
                out.push(Span {
                    tok: Tok::Other('\''),
                    start,
                    end: close,
                });
                i = close;
                continue;
            }
        }
        if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
            out.push(Span {
                tok: Tok::Number,
                start,
                end: i,
            });
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80)
            {
                i += 1;
            }
            out.push(Span {
                tok: Tok::Word(text[start..i].to_ascii_lowercase()),
                start,
                end: i,
            });
            continue;
        }
        // Any other character; step over a whole UTF-8 sequence.
        let ch = text[i..].chars().next().unwrap_or(' ');
        i += ch.len_utf8();
        out.push(Span {
            tok: Tok::Other(ch),
            start,
            end: i,
        });
    }
    out
}

fn word(t: &Span) -> Option<&str> {
    match &t.tok {
        Tok::Word(w) => Some(w.as_str()),
        _ => None,
    }
}

/// Where the type name before the token at `p` (a `$n`) starts, as a token index, when
/// the `$n` is a normalized typed literal.
fn type_start(toks: &[Span], p: usize) -> Option<usize> {
    let mut k = p.checked_sub(1)?;
    // A type modifier: `varchar(20) $1`, `numeric(10, 2) $1`, `timestamp(3) $1`.
    if toks[k].tok == Tok::Other(')') {
        let mut j = k.checked_sub(1)?;
        while matches!(toks[j].tok, Tok::Number | Tok::Other(',')) {
            j = j.checked_sub(1)?;
        }
        if toks[j].tok != Tok::Other('(') {
            return None;
        }
        k = j.checked_sub(1)?;
        word(&toks[k])?;
    }
    let w = word(&toks[k])?;
    // Multi-word types end in a word that is otherwise a keyword (`zone`).
    if w == "zone" {
        let time = k
            .checked_sub(1)
            .filter(|&j| word(&toks[j]) == Some("time"))?;
        let with = time
            .checked_sub(1)
            .filter(|&j| matches!(word(&toks[j]), Some("with" | "without")))?;
        let mut s = with.checked_sub(1)?;
        if toks[s].tok == Tok::Other(')') {
            while toks[s].tok != Tok::Other('(') {
                s = s.checked_sub(1)?;
            }
            s = s.checked_sub(1)?;
        }
        return matches!(word(&toks[s]), Some("timestamp" | "time")).then_some(s);
    }
    if BEFORE_EXPRESSION.contains(&w) {
        return None;
    }
    let mut s = k;
    let before = |i: usize| i.checked_sub(1).and_then(|j| word(&toks[j]));
    if w == "precision" && before(s) == Some("double") {
        s -= 1;
    }
    if w == "varying" && matches!(before(s), Some("character" | "char" | "bit")) {
        s -= 1;
        if before(s) == Some("national") {
            s -= 1;
        }
    }
    // A qualified name: schema.type (the schema may be quoted).
    while s >= 2
        && toks[s - 1].tok == Tok::Other('.')
        && matches!(toks[s - 2].tok, Tok::Word(_) | Tok::Quoted)
    {
        s -= 2;
    }
    Some(s)
}

/// The text with every `typename $n` (a normalized typed literal) rewritten as
/// `$n::typename`, or None when there is none (the text is left as it is).
pub fn plannable_text(text: &str) -> Option<String> {
    let toks = tokenize(text);
    let mut out = String::with_capacity(text.len() + 16);
    let mut copied = 0;
    let mut p = 0;
    let mut changed = false;
    while p < toks.len() {
        if toks[p].tok != Tok::Param {
            p += 1;
            continue;
        }
        let Some(s) = type_start(&toks, p) else {
            p += 1;
            continue;
        };
        if toks[s].start < copied {
            p += 1;
            continue;
        }
        let type_text = &text[toks[s].start..toks[p - 1].end];
        let param = &text[toks[p].start..toks[p].end];
        // Interval fields after the parameter belong to the type.
        let mut end = p;
        let is_interval = word(&toks[p - 1]) == Some("interval");
        if is_interval {
            while end + 1 < toks.len()
                && word(&toks[end + 1]).is_some_and(|w| INTERVAL_FIELDS.contains(&w))
            {
                end += 1;
                if word(&toks[end]) == Some("second")
                    && toks.get(end + 1).is_some_and(|t| t.tok == Tok::Other('('))
                    && toks.get(end + 2).is_some_and(|t| t.tok == Tok::Number)
                    && toks.get(end + 3).is_some_and(|t| t.tok == Tok::Other(')'))
                {
                    end += 3;
                }
            }
        }
        out.push_str(&text[copied..toks[s].start]);
        out.push_str(param);
        out.push_str("::");
        out.push_str(type_text);
        if end > p {
            out.push(' ');
            out.push_str(&text[toks[p + 1].start..toks[end].end]);
        }
        copied = toks[end].end;
        changed = true;
        p = end + 1;
    }
    if !changed {
        return None;
    }
    out.push_str(&text[copied..]);
    Some(out)
}

/// A second try for a text whose `$n` types the planner cannot infer (`date $1 + $2` from
/// `date '2024-01-12' + 1`: "operator is not unique: date + unknown"): every bare `$n`
/// next to an arithmetic operator becomes `$n::integer`, the type of the integer literals
/// such parameters stand for. None when there is no such parameter.
pub fn arithmetic_params_as_integer(text: &str) -> Option<String> {
    let toks = tokenize(text);
    let arith = |t: Option<&Span>| {
        t.is_some_and(|t| matches!(t.tok, Tok::Other('+' | '-' | '*' | '/' | '%')))
    };
    let mut out = String::with_capacity(text.len() + 16);
    let mut copied = 0;
    for (i, t) in toks.iter().enumerate() {
        if t.tok != Tok::Param {
            continue;
        }
        let next = toks.get(i + 1);
        let cast_follows = next.is_some_and(|n| n.tok == Tok::Other(':'));
        let prev = i.checked_sub(1).and_then(|p| toks.get(p));
        if cast_follows || !(arith(prev) || arith(next)) {
            continue;
        }
        out.push_str(&text[copied..t.end]);
        out.push_str("::integer");
        copied = t.end;
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&text[copied..]);
    Some(out)
}

/// The bind parameters of a captured run, as PostgreSQL logs them (`BuildParamLogString`:
/// `$1 = 'open', $2 = NULL, $3 = '10'`), written into `text` in place of each `$n`: the run
/// with its values, for a custom plan. None when the list does not parse, a value may have
/// been cut short (`...'` at the length limit), or a `$n` of the text has no value.
pub fn with_bind_values(text: &str, params: &str) -> Option<String> {
    /// Values longer than this are cut by the capture (`BuildParamLogString` limit 256).
    const CUT_AT: usize = 256;
    let mut values: Vec<Option<String>> = Vec::new();
    let b = params.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !values.is_empty() {
            if !params[i..].starts_with(", ") {
                return None;
            }
            i += 2;
        }
        if b.get(i) != Some(&b'$') {
            return None;
        }
        let digits = params[i + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        let n: usize = params[i + 1..i + 1 + digits].parse().ok()?;
        i += 1 + digits;
        if n != values.len() + 1 || !params[i..].starts_with(" = ") {
            return None;
        }
        i += 3;
        if params[i..].starts_with("NULL") {
            values.push(None);
            i += 4;
            continue;
        }
        if b.get(i) != Some(&b'\'') {
            return None;
        }
        let start = i;
        i += 1;
        loop {
            match b.get(i) {
                None => return None,
                Some(b'\'') if b.get(i + 1) == Some(&b'\'') => i += 2,
                Some(b'\'') => {
                    i += 1;
                    break;
                }
                Some(_) => i += 1,
            }
        }
        let literal = &params[start..i];
        if literal.len() >= CUT_AT && literal.ends_with("...'") {
            return None;
        }
        values.push(Some(literal.to_string()));
    }
    if values.is_empty() {
        return None;
    }
    let toks = tokenize(text);
    let mut out = String::with_capacity(text.len() + params.len());
    let mut copied = 0;
    for t in toks.iter().filter(|t| t.tok == Tok::Param) {
        let n: usize = text[t.start + 1..t.end].parse().ok()?;
        let value = values.get(n.checked_sub(1)?)?;
        out.push_str(&text[copied..t.start]);
        out.push_str(value.as_deref().unwrap_or("NULL"));
        copied = t.end;
    }
    out.push_str(&text[copied..]);
    Some(out)
}

/// `text` with each `$n` that `values` has a value for replaced by that value (an SQL
/// literal: a constant as it was written, or a bind parameter as `'text'::type`); other
/// `$n` are left as they are. A typed literal's `timestamptz $2` thus becomes
/// `timestamptz '2023-06-01'` again.
pub fn with_sample_values(text: &str, values: &[(u32, String)]) -> String {
    let mut out = String::with_capacity(text.len() + 16 * values.len());
    let mut copied = 0;
    for t in tokenize(text).iter().filter(|t| t.tok == Tok::Param) {
        let Ok(n) = text[t.start + 1..t.end].parse::<u32>() else {
            continue;
        };
        let Some((_, value)) = values.iter().find(|(k, _)| *k == n) else {
            continue;
        };
        out.push_str(&text[copied..t.start]);
        out.push_str(value);
        copied = t.end;
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod unit_tests {
    use super::{
        arithmetic_params_as_integer, plannable_text, with_bind_values, with_sample_values,
    };

    #[test]
    fn sample_values_are_written_in() {
        let v = vec![
            (1, "'open'::text".to_string()),
            (3, "'2023-06-01'".to_string()),
        ];
        assert_eq!(
            with_sample_values(
                "SELECT * FROM t WHERE s = $1 AND a > $2 AND c >= timestamptz $3 AND x = '$1'",
                &v
            ),
            "SELECT * FROM t WHERE s = 'open'::text AND a > $2 AND c >= timestamptz '2023-06-01' AND x = '$1'"
        );
        assert_eq!(with_sample_values("SELECT 1", &v), "SELECT 1");
    }

    #[test]
    fn bind_values_are_written_in() {
        assert_eq!(
            with_bind_values(
                "SELECT * FROM t WHERE status = $1 AND a = lower($2) LIMIT $3",
                "$1 = 'open', $2 = 'It''s', $3 = '10'"
            ),
            Some("SELECT * FROM t WHERE status = 'open' AND a = lower('It''s') LIMIT '10'".into())
        );
        assert_eq!(
            with_bind_values("SELECT $1, '$2'", "$1 = NULL"),
            Some("SELECT NULL, '$2'".into())
        );
        // a $n without a value, a cut value, malformed lists: no substitution
        assert_eq!(with_bind_values("SELECT $2", "$1 = 'a'"), None);
        let long = format!("$1 = '{}...'", "x".repeat(300));
        assert_eq!(with_bind_values("SELECT $1", &long), None);
        for bad in [
            "",
            "$1 = 'a",
            "$2 = 'a'",
            "$1 = 'a' $2 = 'b'",
            "$1 'a'",
            "$x = 'a'",
            "$1 = é",
        ] {
            assert_eq!(with_bind_values("SELECT $1", bad), None, "{bad}");
        }
    }

    #[test]
    fn arithmetic_params_get_integer_type() {
        assert_eq!(
            arithmetic_params_as_integer("SELECT 1 FROM t WHERE d < $2::date + $3 AND x = $4"),
            Some("SELECT 1 FROM t WHERE d < $2::date + $3::integer AND x = $4".into())
        );
        assert_eq!(
            arithmetic_params_as_integer("SELECT $1 * $2::numeric"),
            Some("SELECT $1::integer * $2::numeric".into())
        );
        assert_eq!(
            arithmetic_params_as_integer("SELECT 1 FROM t WHERE a = $1"),
            None
        );
    }

    fn r(t: &str) -> String {
        plannable_text(t).unwrap_or_else(|| t.to_string())
    }

    #[test]
    fn typed_literals_become_casts() {
        assert_eq!(
            r("SELECT * FROM t WHERE created_at >= timestamptz $2 AND id = $1"),
            "SELECT * FROM t WHERE created_at >= $2::timestamptz AND id = $1"
        );
        assert_eq!(
            r("select count(*) from t where d = date $1"),
            "select count(*) from t where d = $1::date"
        );
        assert_eq!(
            r("SELECT 1 FROM t WHERE c > timestamptz $1 - interval $2"),
            "SELECT 1 FROM t WHERE c > $1::timestamptz - $2::interval"
        );
        assert_eq!(
            r("SELECT 1 FROM t WHERE c > TIMESTAMP WITH TIME ZONE $1"),
            "SELECT 1 FROM t WHERE c > $1::TIMESTAMP WITH TIME ZONE"
        );
        assert_eq!(
            r("SELECT 1 FROM t WHERE c > timestamp(3) without time zone $1"),
            "SELECT 1 FROM t WHERE c > $1::timestamp(3) without time zone"
        );
        assert_eq!(
            r("SELECT double precision $1"),
            "SELECT $1::double precision"
        );
        assert_eq!(
            r("SELECT character varying(20) $1"),
            "SELECT $1::character varying(20)"
        );
        assert_eq!(r("SELECT numeric(10, 2) $1"), "SELECT $1::numeric(10, 2)");
        assert_eq!(r("SELECT pg_catalog.date $1"), "SELECT $1::pg_catalog.date");
        assert_eq!(
            r("SELECT now() - interval $1 day to second(3) AS x"),
            "SELECT now() - $1::interval day to second(3) AS x"
        );
        assert_eq!(
            r("SELECT interval $1 hour, 2"),
            "SELECT $1::interval hour, 2"
        );
    }

    #[test]
    fn valid_sql_is_left_alone() {
        for t in [
            "SELECT * FROM t WHERE a = $1 AND b IN ($2, $3) LIMIT $4 OFFSET $5",
            "SELECT $1",
            "SELECT CASE WHEN a THEN $1 ELSE $2 END FROM t",
            "SELECT ts AT TIME ZONE $1 FROM t",
            "SELECT * FROM t WHERE a BETWEEN $1 AND $2 OR b LIKE $3 ESCAPE $4",
            "SELECT * FROM t WHERE a IS DISTINCT FROM $1",
            "SELECT * FROM t FETCH FIRST $1 ROWS ONLY",
            "UPDATE t SET a = $1 WHERE id = $2 RETURNING $3",
            "INSERT INTO t VALUES ($1, $2::date)",
            "SELECT 'date $1', \"x y\" FROM t -- timestamptz $1\n WHERE a = $1",
            "SELECT substring(a from $1 for $2) FROM t",
            "SELECT a OPERATOR(pg_catalog.=) $1",
            "SELECT $tag$ date $1 $tag$",
        ] {
            assert_eq!(plannable_text(t), None, "{t}");
        }
    }

    #[test]
    fn never_panics_on_odd_input() {
        for t in [
            "",
            "$",
            "$1",
            ") $1",
            "( ) $1",
            "zone $1",
            "time zone $1",
            "'unterminated $1",
            "\"q",
            "/* x",
            "é $1",
            "$$",
            "$a$ x",
        ] {
            let _ = plannable_text(t);
        }
    }
}
