//! Reading simple conditions out of EXPLAIN's Filter / Index Cond text.

/// A column or expression that a condition tests, usable as an index key.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct IndexColumn {
    /// Column name (`status`) or expression (`lower(email)`), as EXPLAIN prints it.
    pub(super) expression: String,
    /// Tested with `=` (or `IS NULL`, `= ANY`) rather than a range operator.
    pub(super) equality: bool,
}

impl IndexColumn {
    /// Whether this is a plain column rather than an expression.
    pub(super) fn is_plain_column(&self) -> bool {
        !self.expression.contains('(')
    }

    /// How the column is written inside `CREATE INDEX ... (...)`: expressions need
    /// their own parentheses.
    pub(super) fn index_key(&self) -> String {
        if self.is_plain_column() {
            self.expression.clone()
        } else {
            format!("({})", self.expression)
        }
    }
}

/// The columns or expressions a filter compares with `=`, `<`, `<=`, `>`, `>=` or tests with
/// `IS NULL`, equality ones first (the order a B-tree index wants them in). Returns nothing
/// for conditions that are not a plain AND of such comparisons at the top level, such as ORs.
pub(super) fn index_columns(filter: &str) -> Vec<IndexColumn> {
    let condition = strip_outer_parens(filter);
    if !top_level_positions(condition, " OR ").is_empty() {
        return Vec::new();
    }
    let mut columns: Vec<IndexColumn> = Vec::new();
    for conjunct in split_top_level(condition, " AND ") {
        let Some(column) = comparison_column(conjunct) else {
            continue;
        };
        if let Some(existing) = columns
            .iter_mut()
            .find(|existing| existing.expression == column.expression)
        {
            existing.equality |= column.equality;
        } else {
            columns.push(column);
        }
    }
    // Stable: keeps the filter's order within equality and within range columns.
    columns.sort_by_key(|column| !column.equality);
    columns
}

/// The indexable side of one comparison like `(status = 'x'::text)`.
pub(super) fn comparison_column(conjunct: &str) -> Option<IndexColumn> {
    let comparison = strip_outer_parens(conjunct);
    if let Some(tested) = comparison.strip_suffix(" IS NULL") {
        let expression = column_expression(tested)?;
        return Some(IndexColumn {
            expression: expression.text,
            equality: true,
        });
    }
    let (left, operator, right) = split_binary_operator(comparison)?;
    let equality = match operator {
        "=" => true,
        "<" | "<=" | ">" | ">=" => false,
        _ => return None,
    };
    let chosen = match (column_expression(left), column_expression(right)) {
        // Both sides are columns (a correlated or join condition): the unqualified one
        // belongs to the scanned table.
        (Some(left), Some(right)) if left.qualified && !right.qualified => right,
        (Some(left), _) => left,
        (None, Some(right)) => right,
        (None, None) => return None,
    };
    Some(IndexColumn {
        expression: chosen.text,
        equality,
    })
}

/// A column or expression operand, as opposed to a constant or parameter.
pub(super) struct Operand {
    pub(super) text: String,
    pub(super) qualified: bool,
}

/// Words that look like identifiers but are constants.
pub(super) const CONSTANT_WORDS: &[&str] = &[
    "null",
    "true",
    "false",
    "current_date",
    "current_time",
    "current_timestamp",
    "localtime",
    "localtimestamp",
    "current_user",
    "current_role",
    "session_user",
    "user",
];

/// Interprets one side of a comparison as a column (`status`, `o.status`, `(status)::text`)
/// or an expression over columns (`lower(email)`); constants, parameters and compound
/// expressions yield `None`.
pub(super) fn column_expression(operand: &str) -> Option<Operand> {
    let mut expression = strip_outer_parens(operand);
    // A cast on the column (`(status)::text`) does not change which column is tested.
    if let Some(&cast) = top_level_positions(expression, "::").first() {
        expression = strip_outer_parens(&expression[..cast]);
    }
    let first = expression.chars().next()?;
    if !(first.is_alphabetic() || first == '_' || first == '"') {
        return None;
    }
    if !top_level_positions(expression, " ").is_empty() {
        return None;
    }
    if CONSTANT_WORDS.contains(&expression.to_ascii_lowercase().as_str()) {
        return None;
    }
    if let Some(open) = expression.find('(') {
        // A function of no arguments (`now()`) is a constant for the query.
        let arguments = expression[open + 1..].trim_end_matches(')').trim();
        if arguments.is_empty() {
            return None;
        }
        return Some(Operand {
            text: expression.to_string(),
            qualified: false,
        });
    }
    match top_level_positions(expression, ".").last() {
        Some(&dot) => Some(Operand {
            text: expression[dot + 1..].to_string(),
            qualified: true,
        }),
        None => Some(Operand {
            text: expression.to_string(),
            qualified: false,
        }),
    }
}

/// Splits `left OP right` at the first top-level operator surrounded by single spaces, the
/// way PostgreSQL prints binary operators.
pub(super) fn split_binary_operator(expression: &str) -> Option<(&str, &str, &str)> {
    const OPERATOR_CHARS: &str = "+-*/<>=~!@#%^&|`?";
    for space in top_level_positions(expression, " ") {
        let rest = &expression[space + 1..];
        let operator_len = rest
            .find(|c: char| !OPERATOR_CHARS.contains(c))
            .unwrap_or(rest.len());
        if operator_len == 0 || !rest[operator_len..].starts_with(' ') {
            continue;
        }
        let operator = &rest[..operator_len];
        let right = &rest[operator_len + 1..];
        return Some((&expression[..space], operator, right));
    }
    None
}

/// Byte offsets where `needle` starts outside parentheses, brackets and quotes.
pub(super) fn top_level_positions(haystack: &str, needle: &str) -> Vec<usize> {
    let mut positions = Vec::new();
    let mut depth: usize = 0;
    let (mut in_string, mut in_identifier) = (false, false);
    for (offset, c) in haystack.char_indices() {
        // Tested before `c` updates the nesting state, so `c` itself counts as outside.
        if depth == 0 && !in_string && !in_identifier && haystack[offset..].starts_with(needle) {
            positions.push(offset);
        }
        match c {
            '\'' if !in_identifier => in_string = !in_string,
            '"' if !in_string => in_identifier = !in_identifier,
            _ if in_string || in_identifier => {}
            '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    positions
}

/// Splits at every top-level occurrence of `separator`.
pub(super) fn split_top_level<'a>(haystack: &'a str, separator: &str) -> Vec<&'a str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for position in top_level_positions(haystack, separator) {
        if position >= start {
            parts.push(&haystack[start..position]);
            start = position + separator.len();
        }
    }
    parts.push(&haystack[start..]);
    parts
}

/// Removes whitespace and parentheses that enclose the whole expression: `((a = 1))` → `a = 1`,
/// but `(a = 1) AND (b = 2)` stays as it is.
pub(super) fn strip_outer_parens(expression: &str) -> &str {
    let mut current = expression.trim();
    while current.starts_with('(') && current.ends_with(')') && closes_at_end(current) {
        current = current[1..current.len() - 1].trim();
    }
    current
}

/// Whether the parenthesis opening `expression` is closed by its last character.
pub(super) fn closes_at_end(expression: &str) -> bool {
    let mut depth: usize = 0;
    let (mut in_string, mut in_identifier) = (false, false);
    for (offset, c) in expression.char_indices() {
        match c {
            '\'' if !in_identifier => in_string = !in_string,
            '"' if !in_string => in_identifier = !in_identifier,
            _ if in_string || in_identifier => {}
            '(' => depth += 1,
            ')' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return offset == expression.len() - 1;
                }
            }
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_columns_from_filters() {
        let columns = |filter: &str| -> Vec<(String, bool)> {
            index_columns(filter)
                .into_iter()
                .map(|c| (c.expression, c.equality))
                .collect()
        };
        let column = |name: &str, equality: bool| (name.to_string(), equality);
        assert_eq!(
            columns("(status = 'x'::text)"),
            vec![column("status", true)]
        );
        assert_eq!(
            columns("((lower(email)) = 'a@b.c'::text)"),
            vec![column("lower(email)", true)]
        );
        assert_eq!(
            columns("((a = 1) AND (b > 2))"),
            vec![column("a", true), column("b", false)]
        );
        assert_eq!(
            columns("((b > 2) AND (a = 1) AND (b < 9))"),
            vec![column("a", true), column("b", false)]
        );
        assert_eq!(
            columns("((status)::text = 'x'::text)"),
            vec![column("status", true)]
        );
        assert_eq!(
            columns("('x'::text = status)"),
            vec![column("status", true)]
        );
        assert_eq!(
            columns("(customer_id = c.id)"),
            vec![column("customer_id", true)]
        );
        assert_eq!(
            columns("(o.status = 'x'::text)"),
            vec![column("status", true)]
        );
        assert_eq!(
            columns("(id = ANY ('{1,2,3}'::integer[]))"),
            vec![column("id", true)]
        );
        assert_eq!(
            columns("(deleted_at IS NULL)"),
            vec![column("deleted_at", true)]
        );
        assert_eq!(
            columns("(created_at >= (now() - '1 day'::interval))"),
            vec![column("created_at", false)]
        );
        assert_eq!(
            columns("(created_at < now())"),
            vec![column("created_at", false)]
        );
        assert_eq!(
            columns("((\"Order Status\" = 'a AND b'::text) AND (x = 1))"),
            vec![column("\"Order Status\"", true), column("x", true)]
        );
        // Partly simple: name what can be indexed.
        assert_eq!(
            columns("((email ~~ '%x%'::text) AND (region = 'eu'::text))"),
            vec![column("region", true)]
        );
        // Not simple: ORs, pattern matches, inequality, constants only, garbage.
        assert!(columns("((a = 1) OR (b = 2))").is_empty());
        assert!(columns("(email ~~ 'x%'::text)").is_empty());
        assert!(columns("(a <> 1)").is_empty());
        assert!(columns("(1 = 1)").is_empty());
        assert!(columns("(NULL = x)").len() == 1);
        assert!(columns("").is_empty());
        assert!(columns("(((").is_empty());
        assert!(columns(")))").is_empty());
        assert!(columns("(a = 'unterminated)").is_empty());
        assert!(columns("(é = 1)") == vec![column("é", true)]);
    }
}
