//! The capacity calendar: every reservation that holds capacity on a node for
//! a window, indexed so that `place` can ask "what overlaps this window on
//! this node" in a handful of comparisons.

use crate::ids::IdMap;
use crate::model::{Millis, NodeId, Owner, Reservation, Window};

/// One node's reservations, sorted by start. `spans` mirrors `rows` with
/// just the windows, so the overlap scan touches a few cache lines instead
/// of whole rows. `longest_ms` bounds how far before a window a still-running
/// reservation can have started, which turns the query into a binary search
/// plus a short scan.
#[derive(Debug, Clone, Default)]
struct NodeBook {
    spans: Vec<(Millis, Millis)>,
    rows: Vec<Reservation>,
    longest_ms: i64,
}

impl NodeBook {
    fn insert(&mut self, r: Reservation) {
        self.longest_ms = self.longest_ms.max(r.window.len_ms());
        let at = self.spans.partition_point(|&(s, _)| s <= r.window.start);
        self.spans.insert(at, (r.window.start, r.window.end));
        self.rows.insert(at, r);
    }

    fn sort(&mut self) {
        self.rows.sort_by_key(|r| r.window.start);
        self.spans = self
            .rows
            .iter()
            .map(|r| (r.window.start, r.window.end))
            .collect();
    }

    fn retain(&mut self, keep: impl Fn(&Reservation) -> bool) {
        self.rows.retain(keep);
        self.spans = self
            .rows
            .iter()
            .map(|r| (r.window.start, r.window.end))
            .collect();
    }

    fn overlapping(&self, window: Window) -> impl Iterator<Item = &Reservation> {
        let earliest = window.start.saturating_sub(self.longest_ms);
        let from = self.spans.partition_point(|&(s, _)| s < earliest);
        self.spans[from..]
            .iter()
            .take_while(move |&&(s, _)| s < window.end)
            .enumerate()
            .filter(move |&(_, &(s, e))| s < window.end && window.start < e)
            .map(move |(i, _)| &self.rows[from + i])
    }
}

/// Index of [`Reservation`]s by node and by owner.
#[derive(Debug, Clone, Default)]
pub struct Calendar {
    by_node: IdMap<NodeId, NodeBook>,
    // An owner's rows usually sit on one node (a lesson spans a few), so a
    // short list of nodes is enough to find them again on cancel.
    by_owner: IdMap<Owner, Vec<NodeId>>,
    len: usize,
}

impl Calendar {
    pub fn new(reservations: Vec<Reservation>) -> Self {
        let mut cal = Calendar::default();
        // Bulk load: append, then sort each book once instead of inserting in order.
        for r in reservations {
            cal.note_owner(&r);
            let book = cal.by_node.entry(r.node_id).or_default();
            book.longest_ms = book.longest_ms.max(r.window.len_ms());
            book.rows.push(r);
            cal.len += 1;
        }
        for book in cal.by_node.values_mut() {
            book.sort();
        }
        cal
    }

    pub fn insert(&mut self, r: Reservation) {
        self.note_owner(&r);
        self.by_node.entry(r.node_id).or_default().insert(r);
        self.len += 1;
    }

    /// Drops every reservation of `owner`: a cancelled lesson or an ended job
    /// frees its capacity for the very next `place`.
    pub fn remove_owner(&mut self, owner: Owner) {
        let Some(nodes) = self.by_owner.remove(&owner) else {
            return;
        };
        for node in nodes {
            if let Some(book) = self.by_node.get_mut(&node) {
                let before = book.rows.len();
                book.retain(|r| r.owner != owner);
                self.len -= before - book.rows.len();
                if book.rows.is_empty() {
                    self.by_node.remove(&node);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reservations on `node` whose window overlaps `window`.
    pub fn overlapping(&self, node: NodeId, window: Window) -> impl Iterator<Item = &Reservation> {
        self.by_node
            .get(&node)
            .into_iter()
            .flat_map(move |b| b.overlapping(window))
    }

    /// Every reservation of `owner`.
    pub fn of_owner(&self, owner: Owner) -> impl Iterator<Item = &Reservation> {
        self.by_owner
            .get(&owner)
            .into_iter()
            .flatten()
            .filter_map(|n| self.by_node.get(n))
            .flat_map(|b| b.rows.iter())
            .filter(move |r| r.owner == owner)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Reservation> {
        self.by_node.values().flat_map(|b| b.rows.iter())
    }

    fn note_owner(&mut self, r: &Reservation) {
        let nodes = self.by_owner.entry(r.owner).or_default();
        if !nodes.contains(&r.node_id) {
            nodes.push(r.node_id);
        }
    }
}
