//! Prometheus text exposition format 0.0.4, written by hand: a family is HELP, TYPE and its
//! samples; label values and HELP text are escaped as the format requires. Pure Rust.

use std::fmt::Write;

/// The Prometheus metric types pg_perf emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One sample: `name{labels} value`. `suffix` is appended to the family name
/// (`_bucket`, `_sum`, `_count` for histograms; empty otherwise).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub suffix: &'static str,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A metric family: every sample shares the name, the help and the type.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

impl Family {
    pub fn new(name: impl Into<String>, help: impl Into<String>, kind: Kind) -> Self {
        Family {
            name: name.into(),
            help: help.into(),
            kind,
            samples: Vec::new(),
        }
    }

    /// Adds a plain sample with labels given as (name, value) pairs.
    pub fn push(&mut self, labels: &[(&str, &str)], value: f64) {
        self.push_suffixed("", labels, value);
    }

    pub fn push_suffixed(&mut self, suffix: &'static str, labels: &[(&str, &str)], value: f64) {
        self.samples.push(Sample {
            suffix,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        });
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn escape_label(v: &str, out: &mut String) {
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Escapes HELP text: backslash and newline (quotes stay as they are).
fn escape_help(v: &str, out: &mut String) {
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value as the format spells it (`NaN`, `+Inf`, `-Inf`, else Rust's shortest
/// round-trip form, which Go's ParseFloat and Python's float() both read).
fn format_value(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Renders families in order. Families without samples are left out (an empty family
/// says nothing and some parsers warn about it).
pub fn render(families: &[Family]) -> String {
    let mut out = String::with_capacity(families.len() * 256);
    for f in families.iter().filter(|f| !f.samples.is_empty()) {
        out.push_str("# HELP ");
        out.push_str(&f.name);
        out.push(' ');
        escape_help(&f.help, &mut out);
        out.push('\n');
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
        for s in &f.samples {
            out.push_str(&f.name);
            out.push_str(s.suffix);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(k);
                    out.push_str("=\"");
                    escape_label(v, &mut out);
                    out.push('"');
                }
                out.push('}');
            }
            out.push(' ');
            format_value(s.value, &mut out);
            out.push('\n');
        }
    }
    out
}

/// Upper bounds (`le`, in seconds) and cumulative counts of a latency histogram given as
/// per-bucket counts with each bucket's upper edge in seconds; the last bucket must be
/// open-ended (+Inf). Adjacent finite bounds are kept as they are: Prometheus needs them
/// increasing, which log buckets are.
pub fn cumulative(counts: &[u64], upper_seconds: impl Fn(usize) -> f64) -> Vec<(f64, u64)> {
    let mut total = 0u64;
    counts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            total = total.saturating_add(*c);
            (upper_seconds(i), total)
        })
        .collect()
}

/// A `le` label value: `+Inf` for the open bucket, else the number.
pub fn le_label(upper: f64) -> String {
    let mut s = String::new();
    format_value(upper, &mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_help_type_and_labels_in_order() {
        let mut f = Family::new("pg_up", "Whether the server answers.", Kind::Gauge);
        f.push(&[], 1.0);
        let mut c = Family::new(
            "pg_stat_database_xact_commit_total",
            "Commits.",
            Kind::Counter,
        );
        c.push(&[("datid", "5"), ("datname", "postgres")], 42.0);
        let text = render(&[f, c]);
        assert_eq!(
            text,
            "# HELP pg_up Whether the server answers.\n# TYPE pg_up gauge\npg_up 1\n\
             # HELP pg_stat_database_xact_commit_total Commits.\n\
             # TYPE pg_stat_database_xact_commit_total counter\n\
             pg_stat_database_xact_commit_total{datid=\"5\",datname=\"postgres\"} 42\n"
        );
    }

    #[test]
    fn escapes_label_values_and_help() {
        let mut f = Family::new("x", "a \\ b\nc \"q\"", Kind::Gauge);
        f.push(&[("datname", "we\"ird\\db\nname")], 0.5);
        let text = render(&[f]);
        assert!(text.contains("# HELP x a \\\\ b\\nc \"q\"\n"), "{text}");
        assert!(
            text.contains("x{datname=\"we\\\"ird\\\\db\\nname\"} 0.5\n"),
            "{text}"
        );
    }

    #[test]
    fn special_values_and_empty_families() {
        let mut f = Family::new("v", "h", Kind::Gauge);
        f.push(&[("k", "nan")], f64::NAN);
        f.push(&[("k", "inf")], f64::INFINITY);
        f.push(&[("k", "ninf")], f64::NEG_INFINITY);
        let empty = Family::new("nothing", "h", Kind::Counter);
        let text = render(&[f, empty]);
        assert!(text.contains("v{k=\"nan\"} NaN\n"));
        assert!(text.contains("v{k=\"inf\"} +Inf\n"));
        assert!(text.contains("v{k=\"ninf\"} -Inf\n"));
        assert!(!text.contains("nothing"));
    }

    #[test]
    fn cumulative_counts_never_decrease_and_end_at_the_total() {
        let counts = [0, 3, 0, 5, 2];
        let cum = cumulative(&counts, |i| {
            if i == 4 {
                f64::INFINITY
            } else {
                i as f64 + 1.0
            }
        });
        assert_eq!(
            cum,
            vec![(1.0, 0), (2.0, 3), (3.0, 3), (4.0, 8), (f64::INFINITY, 10)]
        );
        assert_eq!(le_label(f64::INFINITY), "+Inf");
        assert_eq!(le_label(0.25), "0.25");
    }
}
