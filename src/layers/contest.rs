//! nixpkgs' `buildLayeredImage` grouping, the "popularity contest" of
//! `referencesByPopularity`, reimplemented from its published description so the reuse
//! benchmark (`benches/reuse/`) can compare against it. The server does not use it.
//!
//! The description: unroll the image's closure into a tree (a path reachable along several
//! routes appears once per route), then fold it from the leaves up: a leaf is a counter
//! `{leaf: 1}`; a node merges its children's counters by summing them, adds 1 to every
//! count, and counts itself 1. The root's counter is each path's popularity; paths are
//! listed by popularity, highest first, equal ones by name. The first `budget - 1` paths
//! get a layer each and the rest share the last layer.
//!
//! The fold has a closed form, which is what is computed here (no tree is unrolled, so it
//! stays polynomial on graphs whose unrolled tree is astronomically large): with `N(x)` the
//! number of routes from the root to `x`,
//!
//! ```text
//! popularity(v) = N(v) + Σ N(x) over every proper ancestor x of v (the root included)
//! ```
//!
//! (each route to `v` contributes its own 1, and each route to an ancestor `x` adds the 1
//! that `x`'s fold adds to everything below it). Counts saturate at `u128::MAX`; ties are
//! then broken by name like any other tie.

use super::Layer;
use crate::nix::{RuntimeGraph, StorePath};
use std::collections::BTreeMap;

/// The image's paths in popularity-contest order: most popular first, equal popularity by
/// name (the store path name without hash, then the full path), with each popularity.
pub fn popularity_contest_order(graph: &RuntimeGraph) -> Vec<(StorePath, u128)> {
    let paths: Vec<&StorePath> = graph.paths.keys().collect();
    let n = paths.len();
    let index: BTreeMap<&str, usize> = paths.iter().enumerate().map(|(i, p)| (p.as_str(), i)).collect();
    // Node n is the synthetic root referencing the requested packages.
    let root = n;
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n + 1];
    let mut indegree = vec![0usize; n + 1];
    for (i, info) in graph.paths.values().enumerate() {
        for r in &info.references {
            children[i].push(index[r.as_str()]);
        }
    }
    for r in &graph.roots {
        children[root].push(index[r.as_str()]);
    }
    for c in children.iter_mut() {
        c.sort_unstable();
        c.dedup();
    }
    // A path nothing references should be a requested package; if it is not (a closure that
    // is not well-formed), the root references it all the same so every path is ranked.
    let mut referenced = vec![false; n + 1];
    for c in &children {
        for &x in c {
            referenced[x] = true;
        }
    }
    children[root].extend((0..n).filter(|&i| !referenced[i]));
    children[root].sort_unstable();
    for c in &children {
        for &x in c {
            indegree[x] += 1;
        }
    }

    // Kahn's topological order from the root.
    let mut order = Vec::with_capacity(n + 1);
    let mut ready: Vec<usize> = vec![root];
    while let Some(x) = ready.pop() {
        order.push(x);
        for &c in &children[x] {
            indegree[c] -= 1;
            if indegree[c] == 0 {
                ready.push(c);
            }
        }
    }
    assert_eq!(order.len(), n + 1, "the runtime graph has a cycle");

    // Routes from the root and proper ancestor sets (bitsets), in topological order.
    let words = (n + 1).div_ceil(64);
    let mut routes = vec![0u128; n + 1];
    let mut ancestors = vec![0u64; (n + 1) * words];
    routes[root] = 1;
    for &x in &order {
        let kids = &children[x];
        for &c in kids {
            routes[c] = routes[c].saturating_add(routes[x]);
            for w in 0..words {
                let bits = ancestors[x * words + w];
                ancestors[c * words + w] |= bits;
            }
            ancestors[c * words + x / 64] |= 1 << (x % 64);
        }
    }

    let mut scored: Vec<(StorePath, u128)> = (0..n)
        .map(|v| {
            let mut score = routes[v];
            for w in 0..words {
                let mut bits = ancestors[v * words + w];
                while bits != 0 {
                    let x = w * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    score = score.saturating_add(routes[x]);
                }
            }
            (paths[v].clone(), score)
        })
        .collect();
    scored.sort_by(|(a, sa), (b, sb)| sb.cmp(sa).then_with(|| a.name().cmp(b.name())).then_with(|| a.cmp(b)));
    scored
}

/// nixpkgs' grouping: the `budget - 1` most popular paths a layer each, the rest in one last
/// layer; in that order (most popular at the bottom of the image).
pub fn group_popularity_contest(graph: &RuntimeGraph, budget: usize) -> Vec<Layer> {
    let budget = budget.max(1);
    let order = popularity_contest_order(graph);
    let singles = if order.len() <= budget { order.len() } else { budget - 1 };
    let layer = |items: &[(StorePath, u128)]| {
        let mut contents: Vec<StorePath> = items.iter().map(|(p, _)| p.clone()).collect();
        contents.sort();
        let size = contents.iter().map(|p| graph.paths[p].nar_size).sum();
        let score = items.iter().map(|(_, s)| *s).max().unwrap_or(0);
        Layer { merge_rating: score, contents, size, popularity: u64::try_from(score).unwrap_or(u64::MAX) }
    };
    let mut layers: Vec<Layer> = order[..singles].iter().map(|item| layer(std::slice::from_ref(item))).collect();
    if singles < order.len() {
        layers.push(layer(&order[singles..]));
    }
    layers
}
