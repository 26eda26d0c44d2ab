//! The plan tree the rules walk: EXPLAIN's JSON flattened into nodes in top-down order, with
//! each node's own (exclusive) time and counters, the processes sharing it, CTE attribution and
//! EXPLAIN-style labels. Walked iteratively so a deep document cannot overflow the stack.

use super::*;

pub(super) fn locate_root(explain: &Value) -> Option<(&Map<String, Value>, Option<f64>)> {
    let statement = match explain {
        Value::Array(items) => items.first()?.as_object()?,
        Value::Object(object) => object,
        _ => return None,
    };
    if let Some(plan) = statement.get("Plan") {
        return Some((plan.as_object()?, number(statement, "Execution Time")));
    }
    statement
        .contains_key("Node Type")
        .then_some((statement, None))
}

/// Reads a non-negative finite number; EXPLAIN never emits negative numbers, so anything
/// else is treated as absent. Numeric strings are accepted for tools that stringify values.
pub(super) fn number(fields: &Map<String, Value>, key: &str) -> Option<f64> {
    let value = match fields.get(key)? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (value.is_finite() && value >= 0.0).then_some(value)
}

/// Reads a non-empty string.
pub(super) fn text<'a>(fields: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    fields
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// One plan node with what the rules need precomputed.
pub(super) struct PlanNode<'a> {
    pub(super) fields: &'a Map<String, Value>,
    pub(super) node_type: &'a str,
    pub(super) label: String,
    pub(super) parent: Option<usize>,
    pub(super) children: Vec<usize>,
    /// Nodes whose time and buffer counters are included in this node's own counters: the
    /// children, except CTE InitPlans, plus the CTE that this node is the first scan of
    /// (PostgreSQL charges a CTE's work to whichever CTE Scan pulls its rows first).
    pub(super) included: Vec<usize>,
    /// Number of processes sharing the node's work (leader plus workers under a Gather); its
    /// "Actual Loops" counts every process, but they run concurrently.
    pub(super) processes: f64,
    /// Set under a Limit or on the inner side of a semi/anti join: such nodes legitimately
    /// stop before producing all the rows the planner estimated.
    pub(super) may_stop_early: bool,
}

/// The flattened plan, in EXPLAIN's top-down order, with derived totals.
pub(super) struct PlanTree<'a> {
    pub(super) nodes: Vec<PlanNode<'a>>,
    /// Whether actuals (EXPLAIN ANALYZE) are used: the plan has them and the context allows.
    pub(super) analyzed: bool,
    /// Statement run time that node time shares are relative to.
    pub(super) total_ms: Option<f64>,
    /// Root's estimated total cost, the fallback weight when there are no timings.
    pub(super) total_cost: Option<f64>,
}

impl<'a> PlanTree<'a> {
    /// Flattens the tree under `root`; `use_actuals: false` makes it estimate-only.
    pub(super) fn build(
        root: &'a Map<String, Value>,
        execution_time_ms: Option<f64>,
        use_actuals: bool,
    ) -> Self {
        let mut nodes: Vec<PlanNode<'a>> = Vec::new();
        // (node, parent index, processes sharing it, may stop early)
        let mut pending = vec![(root, None::<usize>, 1.0_f64, false)];
        while let Some((fields, parent, processes, may_stop_early)) = pending.pop() {
            let index = nodes.len();
            if let Some(parent) = parent {
                nodes[parent].children.push(index);
            }
            let node_type = text(fields, "Node Type").unwrap_or("Unknown");
            nodes.push(PlanNode {
                fields,
                node_type,
                label: node_label(fields),
                parent,
                children: Vec::new(),
                included: Vec::new(),
                processes,
                may_stop_early,
            });

            let children: Vec<&'a Map<String, Value>> = fields
                .get("Plans")
                .and_then(Value::as_array)
                .map(|plans| plans.iter().filter_map(Value::as_object).collect())
                .unwrap_or_default();
            let child_processes = if node_type.starts_with("Gather") {
                gather_processes(fields, children.first().copied())
            } else {
                processes
            };
            let semi_or_anti = matches!(text(fields, "Join Type"), Some("Semi" | "Anti"));
            // Pushed in reverse so they are popped, and numbered, in plan order.
            for (position, child) in children.iter().enumerate().rev() {
                let stops_early = may_stop_early
                    || node_type == "Limit"
                    || (semi_or_anti && is_inner_child(child, position));
                pending.push((child, Some(index), child_processes, stops_early));
            }
        }

        attribute_ctes(&mut nodes);
        let analyzed = use_actuals
            && nodes
                .first()
                .is_some_and(|root| root.fields.contains_key("Actual Loops"));
        let root_ms = nodes.first().and_then(|root| node_total_ms(root));
        let total_ms = execution_time_ms
            .filter(|ms| *ms > 0.0)
            .or(root_ms.filter(|ms| *ms > 0.0))
            .filter(|_| analyzed);
        let total_cost = nodes
            .first()
            .and_then(|root| number(root.fields, "Total Cost"))
            .filter(|cost| *cost > 0.0);
        PlanTree {
            nodes,
            analyzed,
            total_ms,
            total_cost,
        }
    }

    /// Time spent in the node itself, excluding the nodes it drives.
    pub(super) fn exclusive_ms(&self, index: usize) -> Option<f64> {
        self.exclusive(index, node_total_ms)
    }

    /// Temp blocks written by the node itself (BUFFERS counters include the children's).
    pub(super) fn exclusive_temp_written(&self, index: usize) -> Option<f64> {
        self.exclusive(index, |node| number(node.fields, "Temp Written Blocks"))
    }

    /// A cumulative counter of the node minus the same counter of the nodes it includes.
    pub(super) fn exclusive(
        &self,
        index: usize,
        counter: impl Fn(&PlanNode) -> Option<f64>,
    ) -> Option<f64> {
        let node = self.nodes.get(index)?;
        let own = counter(node)?;
        let included: f64 = node
            .included
            .iter()
            .filter_map(|&child| self.nodes.get(child).and_then(&counter))
            .sum();
        Some((own - included).max(0.0))
    }

    /// Node's share of statement execution time, when timings are known.
    pub(super) fn time_share(&self, index: usize) -> Option<f64> {
        let total = self.total_ms?;
        Some((self.exclusive_ms(index)? / total).min(1.0))
    }

    /// Ordering weight: time share, or the share of estimated cost when there are no timings.
    pub(super) fn weight(&self, index: usize) -> f64 {
        if let Some(share) = self.time_share(index) {
            return share;
        }
        let Some(total_cost) = self.total_cost else {
            return 0.0;
        };
        self.exclusive(index, |node| number(node.fields, "Total Cost"))
            .map_or(0.0, |cost| (cost / total_cost).min(1.0))
    }

    /// The node's inner child (as EXPLAIN labels it, else the second child).
    pub(super) fn inner_child(&self, index: usize) -> Option<usize> {
        let children = &self.nodes.get(index)?.children;
        children
            .iter()
            .copied()
            .find(|&child| text(self.nodes[child].fields, "Parent Relationship") == Some("Inner"))
            .or_else(|| children.get(1).copied())
    }

    /// The node's outer child (as EXPLAIN labels it, else the first child).
    pub(super) fn outer_child(&self, index: usize) -> Option<usize> {
        let children = &self.nodes.get(index)?.children;
        children
            .iter()
            .copied()
            .find(|&child| text(self.nodes[child].fields, "Parent Relationship") == Some("Outer"))
            .or_else(|| children.first().copied())
    }

    /// Whether the node ran at all (never-executed nodes report zero loops).
    pub(super) fn executed(&self, index: usize) -> bool {
        number(self.nodes[index].fields, "Actual Loops").is_some_and(|loops| loops > 0.0)
    }
}

/// Whether `child` at `position` is the inner side of its join.
pub(super) fn is_inner_child(child: &Map<String, Value>, position: usize) -> bool {
    match text(child, "Parent Relationship") {
        Some(relationship) => relationship == "Inner",
        None => position == 1,
    }
}

/// How many processes run the subtree of a Gather: the loops of its first child per loop of
/// the Gather (this respects `parallel_leader_participation`), else launched or planned
/// workers plus the leader.
pub(super) fn gather_processes(
    gather: &Map<String, Value>,
    first_child: Option<&Map<String, Value>>,
) -> f64 {
    let from_loops = first_child
        .and_then(|child| number(child, "Actual Loops"))
        .zip(number(gather, "Actual Loops").filter(|loops| *loops > 0.0))
        .map(|(child_loops, gather_loops)| (child_loops / gather_loops).round());
    let from_workers = number(gather, "Workers Launched")
        .or_else(|| number(gather, "Workers Planned"))
        .map(|workers| workers + 1.0);
    from_loops
        .filter(|processes| *processes >= 1.0)
        .or(from_workers)
        .unwrap_or(1.0)
        .max(1.0)
}

/// Fills `included` for every node, moving each CTE's counters from the node it is attached
/// to onto the first CTE Scan that reads it.
pub(super) fn attribute_ctes(nodes: &mut [PlanNode]) {
    let mut cte_plans: HashMap<String, usize> = HashMap::new();
    for (index, node) in nodes.iter().enumerate() {
        if text(node.fields, "Parent Relationship") == Some("InitPlan") {
            if let Some(name) =
                text(node.fields, "Subplan Name").and_then(|n| n.strip_prefix("CTE "))
            {
                cte_plans.entry(name.to_string()).or_insert(index);
            }
        }
    }
    let cte_indexes: HashSet<usize> = cte_plans.values().copied().collect();
    // Plan order, so the first CTE Scan of each CTE claims it.
    for node in nodes.iter_mut() {
        node.included = node
            .children
            .iter()
            .copied()
            .filter(|child| !cte_indexes.contains(child))
            .collect();
        if node.node_type == "CTE Scan" {
            if let Some(cte) = text(node.fields, "CTE Name").and_then(|name| cte_plans.remove(name))
            {
                node.included.push(cte);
            }
        }
    }
}

/// Wall-clock time of all executions of a node: per-loop time times loops, divided among
/// the processes that ran it concurrently.
pub(super) fn node_total_ms(node: &PlanNode) -> Option<f64> {
    let per_loop = number(node.fields, "Actual Total Time")?;
    let loops = number(node.fields, "Actual Loops")?;
    Some(per_loop * loops / node.processes)
}

/// Labels a node like EXPLAIN's text format does: `Parallel Seq Scan on orders o`,
/// `Index Scan using orders_pkey on orders`, `HashAggregate`, `CTE Scan on x`.
pub(super) fn node_label(fields: &Map<String, Value>) -> String {
    let node_type = text(fields, "Node Type").unwrap_or("Unknown node");
    let mut label = String::new();
    if fields.get("Parallel Aware").and_then(Value::as_bool) == Some(true) {
        label.push_str("Parallel ");
    }
    match node_type {
        "Aggregate" => {
            match text(fields, "Partial Mode") {
                Some("Partial") => label.push_str("Partial "),
                Some("Finalize") => label.push_str("Finalize "),
                _ => {}
            }
            label.push_str(match text(fields, "Strategy") {
                Some("Hashed") => "HashAggregate",
                Some("Sorted") => "GroupAggregate",
                Some("Mixed") => "MixedAggregate",
                _ => "Aggregate",
            });
        }
        "ModifyTable" => label.push_str(text(fields, "Operation").unwrap_or("ModifyTable")),
        other => label.push_str(other),
    }
    if let Some(index_name) = text(fields, "Index Name") {
        let preposition = if node_type == "Bitmap Index Scan" {
            "on"
        } else {
            "using"
        };
        label.push_str(&format!(" {preposition} {index_name}"));
    }
    let target = relation_name(fields)
        .or_else(|| text(fields, "CTE Name").map(str::to_string))
        .or_else(|| text(fields, "Function Name").map(str::to_string));
    match (target, text(fields, "Alias")) {
        (Some(target), alias) => {
            label.push_str(" on ");
            label.push_str(&target);
            let bare_target = target.rsplit('.').next().unwrap_or(&target);
            if let Some(alias) = alias.filter(|alias| *alias != bare_target) {
                label.push(' ');
                label.push_str(alias);
            }
        }
        (None, Some(alias)) if node_type == "Subquery Scan" => {
            label.push_str(" on ");
            label.push_str(alias);
        }
        _ => {}
    }
    if let Some(subplan) = text(fields, "Subplan Name") {
        label.push_str(&format!(" ({subplan})"));
    }
    label
}

/// The scanned table, schema-qualified when the plan says the schema (EXPLAIN VERBOSE).
pub(super) fn relation_name(fields: &Map<String, Value>) -> Option<String> {
    let relation = text(fields, "Relation Name")?;
    Some(match text(fields, "Schema") {
        Some(schema) => format!("{schema}.{relation}"),
        None => relation.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn subplan_nodes_are_walked() {
        let findings = analyze(SUBPLAN);
        let seq = find(&findings, "seq_scan_selective_filter");
        assert_eq!(seq.node, "Seq Scan on orders o");
        assert!(seq.detail.contains("ran 3 times"), "{}", seq.detail);
        assert!(
            seq.suggestion.contains("orders (customer_id)"),
            "{}",
            seq.suggestion
        );
        // Only 3 heap fetches: below the threshold.
        assert!(findings
            .iter()
            .all(|f| f.finding != "index_only_scan_heap_fetches"));
    }

    #[test]
    fn cte_temp_files_attributed_to_cte_scan() {
        let findings = analyze(CTE_TEMP);
        let temp: Vec<&Finding> = findings
            .iter()
            .filter(|f| f.finding == "temp_blocks_written")
            .collect();
        assert_eq!(temp.len(), 1, "{findings:#?}");
        assert_eq!(temp[0].severity, Severity::Info);
        assert_eq!(temp[0].node, "CTE Scan on x");
        assert!(
            temp[0].detail.contains("805 blocks (6.3 MB)"),
            "{}",
            temp[0].detail
        );

        // The CTE's own scan time is charged to the CTE Scan, not subtracted from the Aggregate.
        let root = parse(CTE_TEMP);
        let (plan_root, execution) = locate_root(&root).expect("plan");
        let tree = PlanTree::build(plan_root, execution, true);
        let cte_scan = tree
            .nodes
            .iter()
            .position(|n| n.node_type == "CTE Scan")
            .expect("CTE Scan");
        let own = tree.exclusive_ms(cte_scan).expect("timed");
        assert!((own - (13.937 - 3.605)).abs() < 1e-6, "{own}");
        let aggregate_own = tree.exclusive_ms(0).expect("timed");
        assert!(
            (aggregate_own - (16.427 - 13.937)).abs() < 1e-6,
            "{aggregate_own}"
        );
    }

    #[test]
    fn parallel_plan_times_are_per_process() {
        let root = parse(PARALLEL);
        let (plan_root, execution) = locate_root(&root).expect("plan");
        let tree = PlanTree::build(plan_root, execution, true);
        let seq = tree
            .nodes
            .iter()
            .position(|n| n.node_type == "Seq Scan")
            .expect("Seq Scan");
        assert_eq!(tree.nodes[seq].processes, 3.0);
        assert_eq!(tree.nodes[seq].label, "Parallel Seq Scan on orders");
        // 1.462 ms per loop × 3 loops shared by 3 processes.
        let own = tree.exclusive_ms(seq).expect("timed");
        assert!((own - 1.462).abs() < 1e-6, "{own}");
        for index in 0..tree.nodes.len() {
            let share = tree.time_share(index).unwrap_or(0.0);
            assert!((0.0..=1.0).contains(&share));
        }
        let findings = analyze(PARALLEL);
        assert!(
            findings.iter().all(|f| f.finding == "slow_node"),
            "{findings:#?}"
        );
    }

    #[test]
    fn fixture_node_labels_match_explain_text() {
        let labels: Vec<String> = ALL_FIXTURES
            .iter()
            .flat_map(|fixture| {
                let root = parse(fixture);
                let (plan_root, execution) = locate_root(&root).expect("plan");
                let tree = PlanTree::build(plan_root, execution, true);
                tree.nodes.into_iter().map(|n| n.label).collect::<Vec<_>>()
            })
            .collect();
        for expected in [
            "Index Scan using orders_pkey on orders",
            "Aggregate (SubPlan 1)",
            "Finalize GroupAggregate",
            "Partial HashAggregate",
            "Gather Merge",
            "Hash Join",
            "Seq Scan on orders o",
        ] {
            assert!(
                labels.iter().any(|l| l == expected),
                "{expected} not in {labels:#?}"
            );
        }
    }

    #[test]
    fn deep_plans_do_not_overflow_the_stack() {
        let mut plan =
            json!({"Node Type": "Seq Scan", "Actual Loops": 1, "Actual Total Time": 1.0});
        for _ in 0..2_000 {
            // Built by hand: `json!` would re-serialize (recursively) the whole subtree.
            let mut parent =
                json!({"Node Type": "Result", "Actual Loops": 1, "Actual Total Time": 1.0});
            if let Some(fields) = parent.as_object_mut() {
                fields.insert("Plans".to_string(), Value::Array(vec![plan]));
            }
            plan = parent;
        }
        let findings = analyze_plan(&plan, &PlanContext::default());
        assert!(findings.len() <= 2_001);
        // serde_json drops nested values recursively; unwind the chain iteratively.
        let mut current = plan;
        while let Some(child) = current
            .get_mut("Plans")
            .and_then(Value::as_array_mut)
            .and_then(Vec::pop)
        {
            current = child;
        }
    }
}
