//! Checks across integrations: duplicate ids, two integrations fighting over
//! the same rows, and cycles in the graph that `emit` steps make.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::route::{Integration, StepKind};
use crate::diagnostics::{Code, Diagnostic, Position};

/// Runs every cross-integration check.
pub fn check(integrations: &[Integration]) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    duplicate_ids(integrations, &mut diagnostics);
    conflicting_writes(integrations, &mut diagnostics);
    emit_cycles(integrations, &mut diagnostics);
    diagnostics
}

fn duplicate_ids(integrations: &[Integration], out: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<&str, &Integration> = HashMap::new();
    for integration in integrations {
        if let Some(first) = seen.get(integration.id.as_str()) {
            out.push(
                Diagnostic::error(
                    &integration.file,
                    integration.id_position,
                    Code::DuplicateId,
                    format!(
                        "integration id `{}` is already used by {}",
                        integration.id,
                        first.file.display()
                    ),
                )
                .with_help("ids default to the file name; set a distinct `id:`")
                .with_related(&first.file, first.id_position, "first used here"),
            );
        } else {
            seen.insert(&integration.id, integration);
        }
    }
}

/// Two different integrations upserting the same table on the same key for
/// the same event would overwrite each other's row on every event.
fn conflicting_writes(integrations: &[Integration], out: &mut Vec<Diagnostic>) {
    type WriteKey = (String, String, String, Vec<String>);
    let mut seen: HashMap<WriteKey, (&Integration, Position)> = HashMap::new();
    for integration in integrations {
        let mut own = HashSet::new();
        for route in &integration.routes {
            for step in &route.steps {
                let StepKind::Upsert { table, key, .. } = &step.kind else {
                    continue;
                };
                let mut key: Vec<String> = key.iter().map(|k| k.as_str().to_owned()).collect();
                key.sort();
                let write = (
                    integration.source.clone(),
                    route.on.clone(),
                    table.to_string(),
                    key,
                );
                if !own.insert(write.clone()) {
                    continue;
                }
                match seen.get(&write) {
                    Some((first, first_step)) if first.id != integration.id => out.push(
                        Diagnostic::error(
                            &integration.file,
                            step.position,
                            Code::ConflictingWrite,
                            format!(
                                "integration `{}` ({}) already upserts {} on ({}) for {}/{}: the two would overwrite each other's row",
                                first.id,
                                first.file.display(),
                                write.2,
                                write.3.join(", "),
                                write.0,
                                write.1
                            ),
                        )
                        .with_help("keep one writer per row, or chain them with `emit`")
                        .with_related(&first.file, *first_step, "the other upsert"),
                    ),
                    Some(_) => {}
                    None => {
                        seen.insert(write, (integration, step.position));
                    }
                }
            }
        }
    }
}

/// A node of the emit graph: an event of a product.
type Node = (String, String);

/// An edge: integration `integration`'s route for `from` emits `to`.
struct Edge<'a> {
    to: usize,
    integration: &'a Integration,
    step_position: Position,
}

/// Finds the strongly connected components of the emit graph (Tarjan) and
/// reports, for each one that loops, its shortest cycle through its first
/// node, at the emit step that closes it. Linear in the graph's size, so a
/// directory of thousands of integrations checks fast.
fn emit_cycles(integrations: &[Integration], out: &mut Vec<Diagnostic>) {
    let mut index: BTreeMap<Node, usize> = BTreeMap::new();
    let mut nodes: Vec<Node> = Vec::new();
    let mut node_id = |node: Node, nodes: &mut Vec<Node>| -> usize {
        *index.entry(node.clone()).or_insert_with(|| {
            nodes.push(node);
            nodes.len() - 1
        })
    };
    let mut edges: Vec<Vec<Edge<'_>>> = Vec::new();
    for integration in integrations {
        for route in &integration.routes {
            for step in &route.steps {
                let StepKind::Emit { event, .. } = &step.kind else {
                    continue;
                };
                let from = node_id((integration.source.clone(), route.on.clone()), &mut nodes);
                let to = node_id((integration.target.clone(), event.clone()), &mut nodes);
                edges.resize_with(nodes.len(), Vec::new);
                edges[from].push(Edge {
                    to,
                    integration,
                    step_position: step.position,
                });
            }
        }
    }
    edges.resize_with(nodes.len(), Vec::new);
    for component in strongly_connected(&edges) {
        let start = *component.iter().min().expect("components are not empty");
        let looping = component.len() > 1 || edges[start].iter().any(|e| e.to == start);
        if !looping {
            continue;
        }
        let members: HashSet<usize> = component.iter().copied().collect();
        let cycle = shortest_cycle(&edges, start, &members);
        let mut description = format!("{}/{}", nodes[start].0, nodes[start].1);
        for edge in &cycle {
            let to = &nodes[edge.to];
            description.push_str(&format!(" -({})-> {}/{}", edge.integration.id, to.0, to.1));
        }
        let closing = cycle.last().expect("a cycle has at least one edge");
        let mut diagnostic = Diagnostic::error(
            &closing.integration.file,
            closing.step_position,
            Code::EmitCycle,
            format!("this emit closes a cycle: {description}"),
        )
        .with_help("each event would trigger itself again, forever; break the loop");
        for edge in &cycle[..cycle.len() - 1] {
            let to = &nodes[edge.to];
            diagnostic = diagnostic.with_related(
                &edge.integration.file,
                edge.step_position,
                format!("emits {}/{} ({})", to.0, to.1, edge.integration.id),
            );
        }
        out.push(diagnostic);
    }
}

/// Tarjan's algorithm, iteratively (deep chains must not overflow the stack).
fn strongly_connected(edges: &[Vec<Edge<'_>>]) -> Vec<Vec<usize>> {
    let n = edges.len();
    let mut order = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut components = Vec::new();
    let mut counter = 0;
    for root in 0..n {
        if order[root] != usize::MAX {
            continue;
        }
        // (node, next edge to look at)
        let mut work = vec![(root, 0)];
        order[root] = counter;
        low[root] = counter;
        counter += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some((node, next)) = work.last_mut() {
            let node = *node;
            if let Some(edge) = edges[node].get(*next) {
                *next += 1;
                let to = edge.to;
                if order[to] == usize::MAX {
                    order[to] = counter;
                    low[to] = counter;
                    counter += 1;
                    stack.push(to);
                    on_stack[to] = true;
                    work.push((to, 0));
                } else if on_stack[to] {
                    low[node] = low[node].min(order[to]);
                }
                continue;
            }
            work.pop();
            if let Some((parent, _)) = work.last() {
                low[*parent] = low[*parent].min(low[node]);
            }
            if low[node] == order[node] {
                let mut component = Vec::new();
                while let Some(member) = stack.pop() {
                    on_stack[member] = false;
                    component.push(member);
                    if member == node {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

/// Breadth-first search inside one component for the shortest way from
/// `start` back to itself.
fn shortest_cycle<'e, 'a>(
    edges: &'e [Vec<Edge<'a>>],
    start: usize,
    members: &HashSet<usize>,
) -> Vec<&'e Edge<'a>> {
    let mut reached_by: HashMap<usize, (usize, &'e Edge<'a>)> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for edge in &edges[node] {
            if !members.contains(&edge.to) {
                continue;
            }
            if edge.to == start {
                let mut cycle = vec![edge];
                let mut at = node;
                while at != start {
                    let (from, via) = reached_by[&at];
                    cycle.push(via);
                    at = from;
                }
                cycle.reverse();
                return cycle;
            }
            if let std::collections::hash_map::Entry::Vacant(slot) = reached_by.entry(edge.to) {
                slot.insert((node, edge));
                queue.push_back(edge.to);
            }
        }
    }
    unreachable!("every node of a looping component lies on a cycle")
}
