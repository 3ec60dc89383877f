//! In which order a drained section pauses and resumes the jobs it touches.
//!
//! QEMU pauses a job when a node it is attached to (its copy-before-write filter, its target)
//! becomes quiesced, and resumes it when the last such node is quiesced no more. A drained node
//! notifies its parents in the order of its parent list, newest attached edge first (an edge
//! moved to another node by a graph change counts as newly attached there); a parent node
//! passes it on to its own parents, a job edge pauses or resumes the job. Jobs enter at once, so
//! their `paused` and `running` events come out in that order:
//!
//! * a node's drained section walks up from the node, depth first (both versions);
//! * draining everything visits every node in creation order. QEMU 10.0 quiesces each node
//!   once, passing it on to every parent (a node is resumed when it and all its children are);
//!   7.2 told only the non-node parents (jobs) of each node, so a job pauses at its oldest node
//!   and resumes at its newest ([`GraphDrains::all_through_nodes`](super::GraphDrains)).
//!
//! Confirmed on QEMU 7.2.22 and 10.0.2 with one, two and three backups of one source, and
//! backups of different sources (`conformance/scenarios/jobs/drain_order_*`).

use super::Job;
use crate::graph::Graph;
use std::collections::{HashMap, HashSet};

/// A parent of a node, as its drained section reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Parent {
    /// A job edge of the job at this index.
    Job(usize),
    /// A node with a child edge to the drained node.
    Node(String),
}

/// When each edge was last attached (a strictly growing stamp): child edges of nodes keyed by
/// (parent node, child role), a job's edges by (`job:` + id, `main`/`target`).
#[derive(Debug, Default)]
pub(crate) struct EdgeStamps {
    edges: HashMap<(String, String), (String, u64)>,
    next: u64,
}

impl EdgeStamps {
    /// Records that the edge `(parent, role)` now leads to `child`, attached now.
    pub(crate) fn attach(&mut self, parent: &str, role: &str, child: &str) {
        self.next += 1;
        self.edges.insert(
            (parent.to_string(), role.to_string()),
            (child.to_string(), self.next),
        );
    }

    fn stamp(&self, parent: &str, role: &str, child: &str) -> Option<u64> {
        match self.edges.get(&(parent.to_string(), role.to_string())) {
            Some((c, s)) if c == child => Some(*s),
            _ => None,
        }
    }

    /// The key of a job's edges (`main`: its filter, `target`).
    pub(crate) fn job_key(job: &Job) -> String {
        format!("job:{}", job.id)
    }
}

impl Graph {
    /// Stamps the edges made or moved outside the job layer since the last look (opening
    /// nodes, snapshots), oldest node first, so they count as newer than everything before.
    pub(crate) fn observe_edges(&mut self) {
        let mut fresh = Vec::new();
        for n in &self.nodes {
            for c in &n.children {
                if self.jobs.stamps.stamp(&n.name, &c.role, &c.node).is_none() {
                    fresh.push((n.name.clone(), c.role.clone(), c.node.clone()));
                }
            }
        }
        for (parent, role, child) in fresh {
            self.jobs.stamps.attach(&parent, &role, &child);
        }
    }

    /// The parents of `node` that a drained section reaches, newest attached edge first.
    fn drain_parents(&self, node: &str) -> Vec<Parent> {
        let mut stamped: Vec<(u64, usize, Parent)> = Vec::new();
        for (k, n) in self.nodes.iter().enumerate() {
            for c in n.children.iter().filter(|c| c.node == node) {
                let s = self.jobs.stamps.stamp(&n.name, &c.role, node).unwrap_or(0);
                stamped.push((s, k, Parent::Node(n.name.clone())));
            }
        }
        let base = self.nodes.len();
        for (i, j) in self.jobs.jobs.iter().enumerate() {
            let key = EdgeStamps::job_key(j);
            let edges = [
                ("main", j.backup.filter.as_deref()),
                ("target", Some(j.backup.target.as_str())),
            ];
            for (role, to) in edges {
                if to == Some(node) {
                    let s = self.jobs.stamps.stamp(&key, role, node).unwrap_or(0);
                    stamped.push((s, base + i, Parent::Job(i)));
                }
            }
        }
        stamped.sort_by_key(|p| std::cmp::Reverse((p.0, p.1)));
        stamped.into_iter().map(|(_, _, p)| p).collect()
    }

    /// Depth first up from `node`: every job edge reached, in order (a node passed once).
    fn walk_up(&self, node: &str, seen: &mut HashSet<String>, out: &mut Vec<usize>) {
        if !seen.insert(node.to_string()) {
            return;
        }
        for p in self.drain_parents(node) {
            match p {
                Parent::Job(i) => out.push(i),
                Parent::Node(n) => self.walk_up(&n, seen, out),
            }
        }
    }

    /// Job edges reached by quiescing everything, in creation order of the nodes (10.0).
    fn quiesce_all(&self, counters: &mut HashMap<String, u32>, out: &mut Vec<usize>) {
        fn quiesce(g: &Graph, n: &str, c: &mut HashMap<String, u32>, out: &mut Vec<usize>) {
            let k = c.entry(n.to_string()).or_insert(0);
            *k += 1;
            if *k > 1 {
                return;
            }
            for p in g.drain_parents(n) {
                match p {
                    Parent::Job(i) => out.push(i),
                    Parent::Node(m) => quiesce(g, &m, c, out),
                }
            }
        }
        for n in &self.nodes {
            quiesce(self, &n.name, counters, out);
        }
    }

    /// Job edges reached when everything stops being quiesced (10.0), in order.
    fn unquiesce_all(&self, out: &mut Vec<usize>) {
        fn unquiesce(g: &Graph, n: &str, c: &mut HashMap<String, u32>, out: &mut Vec<usize>) {
            let Some(k) = c.get_mut(n) else { return };
            *k = k.saturating_sub(1);
            if *k > 0 {
                return;
            }
            for p in g.drain_parents(n) {
                match p {
                    Parent::Job(i) => out.push(i),
                    Parent::Node(m) => unquiesce(g, &m, c, out),
                }
            }
        }
        let mut counters = HashMap::new();
        self.quiesce_all(&mut counters, &mut Vec::new());
        for n in &self.nodes {
            unquiesce(self, &n.name, &mut counters, out);
        }
    }

    /// The job edges a drained section of `node` (None: everything) reaches, in QEMU's order;
    /// `begin` for its start, else for its end.
    fn drain_reach(&self, node: Option<&str>, begin: bool) -> Vec<usize> {
        let mut out = Vec::new();
        match node {
            Some(n) => self.walk_up(n, &mut HashSet::new(), &mut out),
            None if self.jobs.graph_drains.all_through_nodes => {
                if begin {
                    self.quiesce_all(&mut HashMap::new(), &mut out);
                } else {
                    self.unquiesce_all(&mut out);
                }
            }
            None => {
                for n in &self.nodes {
                    for p in self.drain_parents(&n.name) {
                        if let Parent::Job(i) = p {
                            out.push(i);
                        }
                    }
                }
            }
        }
        out
    }

    /// The jobs `ids` in the order a drained section pauses them (`begin`: where it first
    /// reaches them) or resumes them (where it last reaches them); jobs it does not reach
    /// keep their order, after the others.
    pub(crate) fn drain_order(
        &self,
        node: Option<&str>,
        begin: bool,
        ids: &[String],
    ) -> Vec<String> {
        let mut reach = self.drain_reach(node, begin);
        if !begin {
            // The last edge reached is the one that resumes the job.
            reach.reverse();
        }
        let mut order: Vec<usize> = Vec::new();
        for i in reach {
            if !order.contains(&i) {
                order.push(i);
            }
        }
        if !begin {
            order.reverse();
        }
        let mut out: Vec<String> = order
            .into_iter()
            .map(|i| self.jobs.jobs[i].id.clone())
            .filter(|id| ids.contains(id))
            .collect();
        for id in ids {
            if !out.contains(id) {
                out.push(id.clone());
            }
        }
        out
    }
}
