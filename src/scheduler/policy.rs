//! The maintenance policy: which tables to VACUUM, VACUUM (FREEZE) or ANALYZE and which
//! btree indexes to REINDEX, from the statistics autovacuum itself reads, with its own
//! formulas (PostgreSQL 15 autovacuum.c, relation_needs_vacanalyze) but thresholds of our
//! own, so maintenance can run ahead of autovacuum inside a quiet window.
//!
//! Plain Rust: the SQL layer gathers `TableFacts`/`IndexFacts` (pg_stat_user_tables,
//! pg_class, reloptions merged into `Thresholds`) and runs what this decides.

/// What maintenance does to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// VACUUM (FREEZE): transaction ids are getting old.
    VacuumFreeze,
    Vacuum,
    Analyze,
    /// REINDEX INDEX CONCURRENTLY of a bloated btree.
    Reindex,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::VacuumFreeze => "vacuum_freeze",
            Action::Vacuum => "vacuum",
            Action::Analyze => "analyze",
            Action::Reindex => "reindex",
        }
    }
}

/// A decision and why, with the numbers that led to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub action: Action,
    pub reason: String,
    /// The measured value and the limit it passed.
    pub observed: f64,
    pub limit: f64,
}

/// One table's statistics, as autovacuum reads them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TableFacts {
    /// pg_class.reltuples (-1: never vacuumed or analyzed).
    pub reltuples: f64,
    pub dead_tuples: f64,
    pub inserted_since_vacuum: f64,
    pub modified_since_analyze: f64,
    /// age(relfrozenxid) and mxid_age(relminmxid).
    pub xid_age: f64,
    pub mxid_age: f64,
    /// A partitioned table: it holds no rows itself and autovacuum never analyzes it, so
    /// `modified_since_analyze` is the sum over its partitions since it was last analyzed.
    pub partitioned: bool,
    /// The table (or partitioned parent) has statistics from an earlier ANALYZE.
    pub analyzed_before: bool,
}

/// Thresholds: autovacuum's settings, or pg_perf's more eager ones, per table after its
/// reloptions are applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub vacuum_threshold: f64,
    pub vacuum_scale: f64,
    /// Negative disables insert-driven vacuums (autovacuum_vacuum_insert_threshold = -1).
    pub insert_threshold: f64,
    pub insert_scale: f64,
    pub analyze_threshold: f64,
    pub analyze_scale: f64,
    pub freeze_max_age: f64,
    pub multixact_freeze_max_age: f64,
    /// Freeze once the age passes this fraction of the max age (autovacuum forces an
    /// anti-wraparound vacuum at 1.0; doing it earlier, in a window, avoids that).
    pub freeze_fraction: f64,
}

impl Default for Thresholds {
    /// PostgreSQL 15's autovacuum defaults, freezing at 80% of the max age.
    fn default() -> Self {
        Thresholds {
            vacuum_threshold: 50.0,
            vacuum_scale: 0.2,
            insert_threshold: 1000.0,
            insert_scale: 0.2,
            analyze_threshold: 50.0,
            analyze_scale: 0.1,
            freeze_max_age: 200_000_000.0,
            multixact_freeze_max_age: 400_000_000.0,
            freeze_fraction: 0.8,
        }
    }
}

fn fmt_count(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// What a table needs now (empty: nothing). At most one vacuum (freeze wins over plain)
/// and one analyze.
pub fn decide_table(f: &TableFacts, t: &Thresholds) -> Vec<Decision> {
    let mut out = Vec::new();
    // Autovacuum takes a never-counted table as empty.
    let reltuples = f.reltuples.max(0.0);
    if f.partitioned {
        let limit = t.analyze_threshold + t.analyze_scale * reltuples;
        if !f.analyzed_before {
            out.push(Decision {
                action: Action::Analyze,
                reason: "partitioned table has never been analyzed (autovacuum never analyzes \
                         partitioned tables)"
                    .into(),
                observed: f.modified_since_analyze,
                limit,
            });
        } else if f.modified_since_analyze > limit {
            out.push(Decision {
                action: Action::Analyze,
                reason: format!(
                    "{} rows of its partitions changed since the last ANALYZE of the partitioned \
                     table (limit {}; autovacuum never analyzes partitioned tables)",
                    fmt_count(f.modified_since_analyze),
                    fmt_count(limit)
                ),
                observed: f.modified_since_analyze,
                limit,
            });
        }
        return out;
    }
    let freeze_limit = t.freeze_fraction * t.freeze_max_age;
    let mxid_limit = t.freeze_fraction * t.multixact_freeze_max_age;
    let vacuum_limit = t.vacuum_threshold + t.vacuum_scale * reltuples;
    let insert_limit = t.insert_threshold + t.insert_scale * reltuples;
    if f.xid_age > freeze_limit {
        out.push(Decision {
            action: Action::VacuumFreeze,
            reason: format!(
                "transaction id age {} is past {:.0}% of autovacuum_freeze_max_age ({})",
                fmt_count(f.xid_age),
                t.freeze_fraction * 100.0,
                fmt_count(t.freeze_max_age)
            ),
            observed: f.xid_age,
            limit: freeze_limit,
        });
    } else if f.mxid_age > mxid_limit {
        out.push(Decision {
            action: Action::VacuumFreeze,
            reason: format!(
                "multixact id age {} is past {:.0}% of autovacuum_multixact_freeze_max_age ({})",
                fmt_count(f.mxid_age),
                t.freeze_fraction * 100.0,
                fmt_count(t.multixact_freeze_max_age)
            ),
            observed: f.mxid_age,
            limit: mxid_limit,
        });
    } else if f.dead_tuples > vacuum_limit {
        out.push(Decision {
            action: Action::Vacuum,
            reason: format!(
                "{} dead rows > {} (threshold {} + scale {} x {} rows)",
                fmt_count(f.dead_tuples),
                fmt_count(vacuum_limit),
                fmt_count(t.vacuum_threshold),
                t.vacuum_scale,
                fmt_count(reltuples)
            ),
            observed: f.dead_tuples,
            limit: vacuum_limit,
        });
    } else if t.insert_threshold >= 0.0 && f.inserted_since_vacuum > insert_limit {
        out.push(Decision {
            action: Action::Vacuum,
            reason: format!(
                "{} rows inserted since the last vacuum > {} (insert threshold {} + scale {} x {} \
                 rows): vacuum sets pages all-visible for index-only scans",
                fmt_count(f.inserted_since_vacuum),
                fmt_count(insert_limit),
                fmt_count(t.insert_threshold),
                t.insert_scale,
                fmt_count(reltuples)
            ),
            observed: f.inserted_since_vacuum,
            limit: insert_limit,
        });
    }
    let analyze_limit = t.analyze_threshold + t.analyze_scale * reltuples;
    if f.modified_since_analyze > analyze_limit {
        out.push(Decision {
            action: Action::Analyze,
            reason: format!(
                "{} rows changed since the last analyze > {} (threshold {} + scale {} x {} rows)",
                fmt_count(f.modified_since_analyze),
                fmt_count(analyze_limit),
                fmt_count(t.analyze_threshold),
                t.analyze_scale,
                fmt_count(reltuples)
            ),
            observed: f.modified_since_analyze,
            limit: analyze_limit,
        });
    }
    out
}

/// One btree index's size and the statistics its ideal size is estimated from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexFacts {
    /// pg_class.relpages and reltuples of the index.
    pub pages: f64,
    pub tuples: f64,
    /// Average bytes of the key columns' data (pg_stats.avg_width, summed).
    pub key_data_width: f64,
    /// Some key column can be NULL (index tuples then carry a null bitmap).
    pub has_nulls: bool,
    pub fillfactor: f64,
    pub block_size: f64,
}

/// Pages a freshly built btree would have (the estimate behind the widely used
/// "btree bloat" query: tuple header, alignment, page header and btree special space,
/// line pointers, fillfactor, plus the metapage).
pub fn btree_ideal_pages(i: &IndexFacts) -> f64 {
    const MAXALIGN: f64 = 8.0;
    const INDEX_TUPLE_HEADER: f64 = 8.0;
    const NULL_BITMAP: f64 = 4.0; // IndexAttributeBitMapData, before alignment
    const PAGE_HEADER: f64 = 24.0;
    const BTREE_SPECIAL: f64 = 16.0;
    const LINE_POINTER: f64 = 4.0;
    let align = |v: f64| (v / MAXALIGN).ceil() * MAXALIGN;
    let header = INDEX_TUPLE_HEADER + if i.has_nulls { NULL_BITMAP } else { 0.0 };
    let tuple = align(align(header) + i.key_data_width.max(0.0));
    let usable =
        (i.block_size - PAGE_HEADER - BTREE_SPECIAL) * (i.fillfactor / 100.0).clamp(0.1, 1.0);
    let leaf = (i.tuples.max(0.0) * (tuple + LINE_POINTER) / usable).ceil();
    leaf + 1.0
}

/// A REINDEX decision for a bloated btree: its estimated bloat (share of its pages a
/// rebuild would free) is above `max_bloat_pct`, and it is at least `min_pages` large
/// (rebuilding small indexes gains nothing).
pub fn decide_index(i: &IndexFacts, max_bloat_pct: f64, min_pages: f64) -> Option<Decision> {
    if i.pages < min_pages.max(2.0) || i.tuples <= 0.0 {
        return None;
    }
    let ideal = btree_ideal_pages(i);
    let bloat_pct = 100.0 * (i.pages - ideal).max(0.0) / i.pages;
    (bloat_pct > max_bloat_pct).then(|| Decision {
        action: Action::Reindex,
        reason: format!(
            "estimated bloat {bloat_pct:.0}% > {max_bloat_pct:.0}%: {} pages where a rebuild \
             would need about {}",
            fmt_count(i.pages),
            fmt_count(ideal)
        ),
        observed: bloat_pct,
        limit: max_bloat_pct,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> TableFacts {
        TableFacts {
            reltuples: 100_000.0,
            analyzed_before: true,
            ..Default::default()
        }
    }

    fn actions(f: &TableFacts) -> Vec<Action> {
        decide_table(f, &Thresholds::default())
            .into_iter()
            .map(|d| d.action)
            .collect()
    }

    #[test]
    fn vacuum_exactly_past_autovacuums_formula() {
        // 50 + 0.2 x 100,000 = 20,050 dead rows.
        let at = TableFacts {
            dead_tuples: 20_050.0,
            ..table()
        };
        assert!(actions(&at).is_empty(), "at the limit: nothing");
        let past = TableFacts {
            dead_tuples: 20_051.0,
            ..table()
        };
        let d = decide_table(&past, &Thresholds::default());
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].action, Action::Vacuum);
        assert_eq!(d[0].limit, 20_050.0);
        assert_eq!(
            d[0].reason,
            "20,051 dead rows > 20,050 (threshold 50 + scale 0.2 x 100,000 rows)"
        );
    }

    #[test]
    fn eager_thresholds_act_sooner() {
        let f = TableFacts {
            dead_tuples: 6_000.0,
            ..table()
        };
        assert!(actions(&f).is_empty());
        let eager = Thresholds {
            vacuum_scale: 0.05,
            ..Thresholds::default()
        };
        assert_eq!(decide_table(&f, &eager)[0].action, Action::Vacuum);
    }

    #[test]
    fn insert_driven_vacuum_and_its_off_switch() {
        let f = TableFacts {
            inserted_since_vacuum: 25_000.0,
            ..table()
        };
        assert_eq!(actions(&f), [Action::Vacuum]);
        let off = Thresholds {
            insert_threshold: -1.0,
            ..Thresholds::default()
        };
        assert!(decide_table(&f, &off).is_empty());
    }

    #[test]
    fn freeze_wins_over_plain_vacuum_and_analyze_comes_too() {
        let f = TableFacts {
            dead_tuples: 1e6,
            xid_age: 170_000_000.0,
            modified_since_analyze: 20_000.0,
            ..table()
        };
        assert_eq!(actions(&f), [Action::VacuumFreeze, Action::Analyze]);
        let mx = TableFacts {
            mxid_age: 330_000_000.0,
            ..table()
        };
        assert_eq!(actions(&mx), [Action::VacuumFreeze]);
    }

    #[test]
    fn never_counted_table_is_taken_as_empty() {
        let f = TableFacts {
            reltuples: -1.0,
            dead_tuples: 51.0,
            modified_since_analyze: 51.0,
            ..Default::default()
        };
        assert_eq!(actions(&f), [Action::Vacuum, Action::Analyze]);
    }

    #[test]
    fn partitioned_parents_are_analyzed_never_vacuumed() {
        let never = TableFacts {
            partitioned: true,
            reltuples: 0.0,
            dead_tuples: 1e9,
            ..Default::default()
        };
        assert_eq!(actions(&never), [Action::Analyze]);
        let changed = TableFacts {
            partitioned: true,
            analyzed_before: true,
            modified_since_analyze: 20_000.0,
            ..table()
        };
        assert_eq!(actions(&changed), [Action::Analyze]);
        let quiet = TableFacts {
            modified_since_analyze: 100.0,
            ..changed
        };
        assert!(actions(&quiet).is_empty());
    }

    fn index(pages: f64) -> IndexFacts {
        IndexFacts {
            pages,
            tuples: 1_000_000.0,
            key_data_width: 4.0,
            has_nulls: false,
            fillfactor: 90.0,
            block_size: 8192.0,
        }
    }

    #[test]
    fn ideal_btree_size_matches_a_fresh_int4_index() {
        // A fresh btree on an int4 column of 1M rows has 2,745 pages (22 MB) in
        // PostgreSQL 15 (fillfactor 90, deduplication off for unique values).
        let ideal = btree_ideal_pages(&index(0.0));
        assert!((2_700.0..=2_800.0).contains(&ideal), "{ideal}");
    }

    #[test]
    fn reindex_only_bloated_and_large_indexes() {
        assert!(decide_index(&index(2_745.0), 30.0, 128.0).is_none());
        let d = decide_index(&index(6_000.0), 30.0, 128.0).unwrap();
        assert_eq!(d.action, Action::Reindex);
        assert!(d.observed > 50.0 && d.observed < 60.0, "{}", d.observed);
        let small = IndexFacts {
            tuples: 100.0,
            ..index(100.0)
        };
        assert!(decide_index(&small, 30.0, 128.0).is_none());
        assert!(decide_index(
            &IndexFacts {
                tuples: 0.0,
                ..index(6_000.0)
            },
            30.0,
            128.0
        )
        .is_none());
    }
}
