//! Rules 5, 6 and 9: work that spilled to temporary files.

use super::*;

/// `sort_spilled_to_disk`, `hash_spilled_to_disk` and `hash_aggregate_spilled_to_disk`
/// (all warnings). Returns the nodes reported, so the temp-file rule does not repeat them.
pub(super) fn spilled_sorts_and_hashes(
    plan: &PlanTree,
    out: &mut Vec<RankedFinding>,
) -> HashSet<usize> {
    let mut reported = HashSet::new();
    if !plan.analyzed {
        return reported;
    }
    for (index, node) in plan.nodes.iter().enumerate() {
        let fields = node.fields;
        match node.node_type {
            "Sort" | "Incremental Sort" => {
                let Some(disk_kb) = sort_disk_kb(fields) else {
                    continue;
                };
                let method = text(fields, "Sort Method").unwrap_or("external sort");
                let detail = format!(
                    "Sort ({method}) did not fit in work_mem and wrote {} to disk",
                    kilobytes(disk_kb)
                );
                report(
                    out,
                    plan,
                    index,
                    "sort_spilled_to_disk",
                    Severity::Warning,
                    detail,
                    sort_advice(fields, disk_kb),
                );
                reported.insert(index);
            }
            "Hash" => {
                let batches = number(fields, "Hash Batches").unwrap_or(1.0);
                let planned = number(fields, "Original Hash Batches").unwrap_or(1.0);
                if batches <= 1.0 && planned <= 1.0 {
                    continue;
                }
                let peak_kb = number(fields, "Peak Memory Usage").unwrap_or(0.0);
                let detail = format!(
                    "The hash table was split into {} batches (planned {}), so both join inputs \
                     were partly written to temporary files; peak memory per batch {}",
                    count(batches),
                    count(planned),
                    kilobytes(peak_kb)
                );
                let needed_kb = peak_kb * batches.max(planned);
                let suggestion = format!(
                    "Give the hash more memory so it fits in one batch: work_mem × \
                     hash_mem_multiplier of at least ~{} (e.g. SET LOCAL work_mem for this \
                     query), or join fewer rows by filtering the inner side first.",
                    memory_setting(needed_kb * 1.5)
                );
                report(
                    out,
                    plan,
                    index,
                    "hash_spilled_to_disk",
                    Severity::Warning,
                    detail,
                    suggestion,
                );
                reported.insert(index);
                // The join above a batched hash writes the outer side's batches itself.
                if let Some(parent) = node.parent {
                    reported.insert(parent);
                }
            }
            "Aggregate" => {
                let Some((batches, disk_kb)) = hash_aggregate_spill(fields) else {
                    continue;
                };
                let detail = format!(
                    "The hash aggregate exceeded its memory limit and spilled: {} batches, {} \
                     written to disk",
                    count(batches),
                    kilobytes(disk_kb)
                );
                let suggestion = format!(
                    "Raise work_mem (or hash_mem_multiplier) for this query to roughly {} so the \
                     groups fit in memory, or aggregate fewer rows.",
                    memory_setting(disk_kb.max(1.0) * 2.0)
                );
                report(
                    out,
                    plan,
                    index,
                    "hash_aggregate_spilled_to_disk",
                    Severity::Warning,
                    detail,
                    suggestion,
                );
                reported.insert(index);
            }
            _ => {}
        }
    }
    reported
}

/// Disk space used by a sort that spilled, in kB, looking at the node itself, at each
/// parallel worker, and at incremental sort group statistics.
pub(super) fn sort_disk_kb(fields: &Map<String, Value>) -> Option<f64> {
    let spilled = |entry: &Map<String, Value>| {
        text(entry, "Sort Space Type") == Some("Disk")
            || text(entry, "Sort Method").is_some_and(|method| method.starts_with("external"))
    };
    let mut disk_kb: Option<f64> = None;
    let mut record = |kb: f64| disk_kb = Some(disk_kb.map_or(kb, |seen| seen.max(kb)));
    let workers = fields
        .get("Workers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object);
    for entry in std::iter::once(fields).chain(workers) {
        if spilled(entry) {
            record(number(entry, "Sort Space Used").unwrap_or(0.0));
        }
        for groups in ["Full-sort Groups", "Pre-sorted Groups"] {
            let disk = entry
                .get(groups)
                .and_then(Value::as_object)
                .and_then(|group| group.get("Sort Space Disk"))
                .and_then(Value::as_object);
            if let Some(disk) = disk {
                record(number(disk, "Peak Sort Space Used").unwrap_or(0.0));
            }
        }
    }
    disk_kb
}

/// Memory advice for a spilled sort, plus an index on the sort key when the key is simple.
pub(super) fn sort_advice(fields: &Map<String, Value>, disk_kb: f64) -> String {
    // An in-memory sort needs noticeably more room than the compact on-disk runs.
    let memory = format!(
        "Raise work_mem for this query to at least ~{} (e.g. SET LOCAL work_mem = '{}')",
        memory_setting(disk_kb * 2.0),
        memory_setting(disk_kb * 2.0)
    );
    let keys: Vec<&str> = fields
        .get("Sort Key")
        .and_then(Value::as_array)
        .map(|keys| keys.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if keys.is_empty() {
        format!("{memory}, or sort fewer rows.")
    } else {
        format!(
            "{memory}, or create an index on ({}) so rows can be read already in that order.",
            keys.join(", ")
        )
    }
}

/// Batches and disk usage (kB) of a hash aggregate that spilled, including parallel workers.
pub(super) fn hash_aggregate_spill(fields: &Map<String, Value>) -> Option<(f64, f64)> {
    let workers = fields
        .get("Workers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object);
    let (mut batches, mut disk_kb) = (0.0_f64, 0.0_f64);
    for entry in std::iter::once(fields).chain(workers) {
        batches = batches.max(number(entry, "HashAgg Batches").unwrap_or(0.0));
        disk_kb = disk_kb.max(number(entry, "Disk Usage").unwrap_or(0.0));
    }
    (batches > 1.0 || disk_kb > 0.0).then_some((batches, disk_kb))
}

/// `temp_blocks_written` (info): a node wrote temporary files itself (BUFFERS) and no more
/// specific spill finding already covers it, e.g. a CTE, Materialize or WindowAgg tuplestore.
pub(super) fn temp_blocks_written(
    plan: &PlanTree,
    ctx: &PlanContext,
    already_reported: &HashSet<usize>,
    out: &mut Vec<RankedFinding>,
) {
    if !plan.analyzed {
        return;
    }
    for index in 0..plan.nodes.len() {
        if already_reported.contains(&index) {
            continue;
        }
        let Some(blocks) = plan.exclusive_temp_written(index).filter(|b| *b > 0.0) else {
            continue;
        };
        let block_size = if ctx.block_size_bytes.is_finite() && ctx.block_size_bytes > 0.0 {
            ctx.block_size_bytes
        } else {
            8192.0
        };
        let kb = blocks * block_size / 1024.0;
        let detail = format!(
            "Wrote {} blocks ({}) to temporary files because its working data did not fit in \
             work_mem",
            count(blocks),
            kilobytes(kb)
        );
        let suggestion = format!(
            "Temporary files are much slower than memory: raise work_mem for this query to \
             ~{} or reduce the rows this node has to hold.",
            memory_setting(kb * 2.0)
        );
        report(
            out,
            plan,
            index,
            "temp_blocks_written",
            Severity::Info,
            detail,
            suggestion,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn sort_spill_reports_memory_and_sort_key() {
        let findings = analyze(SORT_SPILL);
        assert_sorted(&findings);
        let sort = find(&findings, "sort_spilled_to_disk");
        assert_eq!(sort.severity, Severity::Warning);
        assert_eq!(sort.node, "Sort");
        assert!(sort.detail.contains("3.5 MB"), "{}", sort.detail);
        assert!(
            sort.suggestion.contains("work_mem = '7MB'"),
            "{}",
            sort.suggestion
        );
        assert!(sort.suggestion.contains("index on (email)"));
        // The Sort takes ~76% of the time on its own.
        let slow = find(&findings, "slow_node");
        assert_eq!(
            (slow.severity, slow.node.as_str()),
            (Severity::Warning, "Sort")
        );
        // Its temp files are covered by the sort finding, not repeated.
        assert!(findings.iter().all(|f| f.finding != "temp_blocks_written"));
    }

    #[test]
    fn hash_batches_reported_on_hash_node_only() {
        let findings = analyze(HASH_BATCHES);
        let hash = find(&findings, "hash_spilled_to_disk");
        assert_eq!(
            (hash.severity, hash.node.as_str()),
            (Severity::Warning, "Hash")
        );
        assert!(hash.detail.contains("4 batches"));
        assert!(hash.suggestion.contains("work_mem"));
        // The Hash Join's own temp writes belong to the same spill.
        assert!(findings.iter().all(|f| f.finding != "temp_blocks_written"));
        let slow = find(&findings, "slow_node");
        assert_eq!(slow.node, "Hash Join");
    }

    #[test]
    fn hash_aggregate_spill() {
        let findings = analyze(HASH_AGGREGATE_SPILL);
        let aggregate = find(&findings, "hash_aggregate_spilled_to_disk");
        assert_eq!(aggregate.severity, Severity::Warning);
        assert_eq!(aggregate.node, "HashAggregate");
        assert!(
            aggregate.detail.contains("341 batches"),
            "{}",
            aggregate.detail
        );
        assert!(findings.iter().all(|f| f.finding != "temp_blocks_written"));
    }

    #[test]
    fn spills_from_hand_written_nodes() {
        let original_batches = json!({"Node Type": "Hash", "Actual Loops": 1, "Hash Batches": 1,
                                      "Original Hash Batches": 8, "Peak Memory Usage": 4096});
        assert_eq!(
            codes(&analyze_plan(&original_batches, &PlanContext::default())),
            vec![("hash_spilled_to_disk", Severity::Warning)]
        );
        let in_memory = json!({"Node Type": "Hash", "Actual Loops": 1, "Hash Batches": 1,
                               "Original Hash Batches": 1});
        assert!(analyze_plan(&in_memory, &PlanContext::default()).is_empty());

        let external_sort = json!({"Node Type": "Sort", "Actual Loops": 1,
                                   "Sort Method": "external sort", "Sort Space Used": 2048});
        let findings = analyze_plan(&external_sort, &PlanContext::default());
        assert_eq!(
            codes(&findings),
            vec![("sort_spilled_to_disk", Severity::Warning)]
        );
        assert!(findings[0].suggestion.contains("or sort fewer rows"));

        let worker_sort = json!({"Node Type": "Sort", "Actual Loops": 1, "Sort Method": "quicksort",
            "Sort Space Type": "Memory", "Sort Space Used": 25, "Sort Key": ["a"],
            "Workers": [{"Worker Number": 0, "Sort Method": "external merge",
                         "Sort Space Used": 10240, "Sort Space Type": "Disk"}]});
        let findings = analyze_plan(&worker_sort, &PlanContext::default());
        assert_eq!(
            codes(&findings),
            vec![("sort_spilled_to_disk", Severity::Warning)]
        );
        assert!(
            findings[0].detail.contains("10.0 MB"),
            "{}",
            findings[0].detail
        );

        let incremental = json!({"Node Type": "Incremental Sort", "Actual Loops": 1,
            "Full-sort Groups": {"Group Count": 3, "Sort Methods Used": ["external merge"],
                                 "Sort Space Disk": {"Average Sort Space Used": 100,
                                                     "Peak Sort Space Used": 300}}});
        assert_eq!(
            codes(&analyze_plan(&incremental, &PlanContext::default())),
            vec![("sort_spilled_to_disk", Severity::Warning)]
        );
        let memory_sort = json!({"Node Type": "Sort", "Actual Loops": 1, "Sort Method": "quicksort",
                                 "Sort Space Used": 25, "Sort Space Type": "Memory"});
        assert!(analyze_plan(&memory_sort, &PlanContext::default()).is_empty());
    }

    #[test]
    fn temp_blocks_written_on_materialize() {
        let scan = json!({"Node Type": "Seq Scan", "Relation Name": "t", "Temp Written Blocks": 0});
        let materialize = json!({"Node Type": "Materialize", "Actual Loops": 1,
                                 "Temp Written Blocks": 128, "Plans": [scan]});
        let findings = analyze_plan(&materialize, &PlanContext::default());
        assert_eq!(
            codes(&findings),
            vec![("temp_blocks_written", Severity::Info)]
        );
        assert!(
            findings[0].detail.contains("128 blocks (1.0 MB)"),
            "{}",
            findings[0].detail
        );
        // A zero or nonsensical block size falls back to 8 kB.
        let ctx = PlanContext {
            block_size_bytes: 0.0,
            ..PlanContext::default()
        };
        assert_eq!(
            analyze_plan(&materialize, &ctx)[0].detail,
            findings[0].detail
        );
    }
}
