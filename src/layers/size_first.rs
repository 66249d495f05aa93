//! nixpkgs' size-first grouping (`dockerTools.streamLayeredImage` since NixOS/nixpkgs#355189,
//! `pkgs/build-support/docker/auto-layer.py`), ported step for step so the reuse benchmark
//! can compare against it and `NIXERY_LAYER_GROUPING=sizefirst` can serve it.
//!
//! Every path is labelled with a set of *primary* paths, and paths with the same label share
//! a layer. At first every label is empty: one layer. Then the paths are taken by NAR size,
//! largest first; each becomes a primary:
//!
//! 1. the new primary `P` is labelled `{P}`;
//! 2. every dependency `d` of `P` (its closure without `P`) loses from its label the
//!    primaries that depend on `P` (they reach `d` through `P` now), and gains `P` unless a
//!    primary still in its label is itself a dependency of `P` (then `d` stays with that
//!    closer primary);
//! 3. when the labels now make more than `budget` distinct layers, this step is undone and
//!    the loop stops: the previous labelling is the result.
//!
//! So the largest paths found the layers; what only one of them uses travels with it; what
//! several use gets a layer per set of users. Layers are ordered by the NAR size of their
//! closure, smallest first (a layer comes after what it depends on).
//!
//! Differences from the Python, none of which changes a layer's contents where the Python's
//! own result is determined: equal NAR sizes are taken by store path, highest first (Python's
//! stable sort keeps `exportReferencesGraph`'s order, whatever that is), and equal closure
//! sizes are ordered by contents. The labels are interned and changed in place (undone on
//! step 3), where the Python copies the whole labelling each round, so a graph of n paths
//! costs O(rounds × closure) instead of O(rounds × n) set copies.

use super::{Closures, Layer};
use crate::nix::RuntimeGraph;
use std::collections::HashMap;

/// nixpkgs' size-first grouping of `graph` into at most `budget` layers, in manifest order
/// (smallest closure first). `merge_rating` is 0 and `popularity` 1: it uses neither.
pub fn group_size_first(graph: &RuntimeGraph, budget: usize) -> Vec<Layer> {
    let budget = budget.max(1);
    let paths: Vec<_> = graph.paths.keys().collect();
    let n = paths.len();
    let index = |p| paths.binary_search(&p).expect("graph is closed");
    let refs: Vec<Vec<usize>> = graph.paths.values().map(|i| i.references.iter().map(index).collect()).collect();
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, r) in refs.iter().enumerate() {
        for &j in r {
            users[j].push(i);
        }
    }

    // Largest first; the last popped among equal sizes is the lowest path.
    let mut by_size: Vec<usize> = (0..n).collect();
    by_size.sort_by_key(|&i| (graph.paths[paths[i]].nar_size, paths[i]));

    let mut labels = Labels::new(n);
    let mut in_deps = vec![false; n];
    let mut in_users = vec![false; n];
    if n <= budget {
        // Every path becomes a primary and no step can go over the budget; each ends up
        // labelled with itself alone (a later, smaller primary never relabels a dependency
        // that is a primary: it is in the dependency's label and among its own
        // dependencies). So: one layer per path, without the O(n × closure) walk.
        for &path in &by_size {
            let own = labels.intern(vec![path as u32]);
            labels.set(path, own);
        }
        by_size.clear();
    }
    while let Some(primary) = by_size.pop() {
        let deps = reach(&refs, primary);
        let above = reach(&users, primary);
        for &d in &deps {
            in_deps[d] = true;
        }
        for &u in &above {
            in_users[u] = true;
        }
        let mut undo = vec![(primary, labels.of[primary])];
        let own = labels.intern(vec![primary as u32]);
        labels.set(primary, own);
        for &d in &deps {
            let mut label: Vec<u32> =
                labels.sets[labels.of[d] as usize].iter().copied().filter(|&m| !in_users[m as usize]).collect();
            if !label.iter().any(|&m| in_deps[m as usize]) {
                let at = label.partition_point(|&m| m < primary as u32);
                label.insert(at, primary as u32);
            }
            undo.push((d, labels.of[d]));
            let id = labels.intern(label);
            labels.set(d, id);
        }
        for &d in &deps {
            in_deps[d] = false;
        }
        for &u in &above {
            in_users[u] = false;
        }
        if labels.distinct > budget {
            for &(path, old) in undo.iter().rev() {
                labels.set(path, old);
            }
            break;
        }
    }

    // One layer per label, ordered by the NAR size of the layer's closure.
    let mut members: HashMap<u32, Vec<usize>> = HashMap::new();
    for i in 0..n {
        members.entry(labels.of[i]).or_default().push(i);
    }
    let closures = Closures::of(graph, &paths);
    let nar: Vec<u64> = graph.paths.values().map(|i| i.nar_size).collect();
    let mut layers: Vec<(u64, Layer)> = members
        .into_values()
        .map(|m| {
            let closure = closures.union_of(m.iter().copied());
            let mut closure_size = 0;
            for (w, &word) in closure.iter().enumerate() {
                let mut bits = word;
                while bits != 0 {
                    closure_size += nar[w * 64 + bits.trailing_zeros() as usize];
                    bits &= bits - 1;
                }
            }
            // Members are in path order, so the contents are sorted.
            let size = m.iter().map(|&i| nar[i]).sum();
            let contents = m.iter().map(|&i| paths[i].clone()).collect();
            (closure_size, Layer { merge_rating: 0, contents, size, popularity: 1 })
        })
        .collect();
    layers.sort_by(|(ca, a), (cb, b)| ca.cmp(cb).then_with(|| a.contents.cmp(&b.contents)));
    layers.into_iter().map(|(_, l)| l).collect()
}

/// Everything reachable from `from` along `edges`, without `from`.
fn reach(edges: &[Vec<usize>], from: usize) -> Vec<usize> {
    let mut seen = vec![false; edges.len()];
    seen[from] = true;
    let mut out = Vec::new();
    let mut stack = vec![from];
    while let Some(x) = stack.pop() {
        for &y in &edges[x] {
            if !seen[y] {
                seen[y] = true;
                out.push(y);
                stack.push(y);
            }
        }
    }
    out
}

/// The labelling: each path's label as an interned sorted set of primaries, with how many
/// paths carry each label, so the number of layers is known at every step.
struct Labels {
    of: Vec<u32>,
    sets: Vec<Vec<u32>>,
    ids: HashMap<Vec<u32>, u32>,
    carriers: Vec<usize>,
    distinct: usize,
}

impl Labels {
    /// Every path labelled with the empty set.
    fn new(n: usize) -> Labels {
        let mut labels =
            Labels { of: vec![0; n], sets: Vec::new(), ids: HashMap::new(), carriers: Vec::new(), distinct: 0 };
        labels.intern(Vec::new());
        labels.carriers[0] = n;
        labels.distinct = usize::from(n > 0);
        labels
    }

    fn intern(&mut self, set: Vec<u32>) -> u32 {
        if let Some(&id) = self.ids.get(&set) {
            return id;
        }
        let id = self.sets.len() as u32;
        self.sets.push(set.clone());
        self.ids.insert(set, id);
        self.carriers.push(0);
        id
    }

    fn set(&mut self, path: usize, id: u32) {
        let old = self.of[path];
        if old == id {
            return;
        }
        self.carriers[old as usize] -= 1;
        if self.carriers[old as usize] == 0 {
            self.distinct -= 1;
        }
        if self.carriers[id as usize] == 0 {
            self.distinct += 1;
        }
        self.carriers[id as usize] += 1;
        self.of[path] = id;
    }
}
