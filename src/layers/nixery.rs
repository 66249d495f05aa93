//! Nixery's grouping, kept so the reuse benchmark can compare against it and for anyone who
//! wants Nixery's layers exactly. The steps:
//!
//! 1. Build a graph: a synthetic root with an edge to every requested package, and from each
//!    store path an edge to each path it references.
//! 2. Paths that are popular (popularity ≥ [`POPULAR`]) or whose closure exceeds
//!    [`BIG_CLOSURE`] get an extra edge from the root: they are to be shared.
//! 3. Compute the dominator tree (petgraph's Cooper–Harvey–Kennedy `simple_fast`). Every
//!    child of the root with its dominated subtree is one layer: a path dominated by a
//!    package is needed only through that package, so it travels with it; a path reachable
//!    along two routes (or flagged in step 2) is dominated by the root and stands alone.
//! 4. A layer's merge rating is the popularity of its subtree's root times the layer size.
//!    While there are more layers than the budget, the two lowest-rated layers are merged.
//!
//! Differences from Nixery, each a fix: sizes are NAR sizes of the layer's own paths (Nixery
//! summed closure sizes, counting shared paths many times); every sort has a total order
//! (rating, then contents), so the same graph always gives the same layers; the packages
//! every image carries (`cacert`, `iana-etc`) count as the most popular, so every image
//! starts with the same layers.

use super::{BIG_CLOSURE, Layer, POPULAR, path_popularity};
use crate::nix::{RuntimeGraph, StorePath};
use crate::popularity::Popularity;
use petgraph::algo::dominators;
use petgraph::graph::{DiGraph, NodeIndex};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

/// Nixery's grouping of `graph` into at most `budget` layers, in manifest order (highest
/// merge rating first).
pub fn group_nixery(
    graph: &RuntimeGraph,
    popularity: &Popularity,
    very_popular: &BTreeSet<StorePath>,
    budget: usize,
) -> Vec<Layer> {
    let budget = budget.max(1);
    let paths: Vec<&StorePath> = graph.paths.keys().collect();
    let pop_of = |path: &StorePath| path_popularity(path, popularity, very_popular);

    // Node 0 is the root; node i+1 is paths[i] (sorted, so indices are deterministic).
    let mut g: DiGraph<(), ()> = DiGraph::with_capacity(paths.len() + 1, paths.len() * 2);
    let root = g.add_node(());
    for _ in &paths {
        g.add_node(());
    }
    let index =
        |path: &StorePath| -> NodeIndex { NodeIndex::new(paths.binary_search(&path).expect("graph is closed") + 1) };
    for r in &graph.roots {
        g.update_edge(root, index(r), ());
    }
    for (i, (path, info)) in graph.paths.iter().enumerate() {
        let node = NodeIndex::new(i + 1);
        if pop_of(path) >= POPULAR || info.closure_size > BIG_CLOSURE {
            g.update_edge(root, node, ());
        }
        for r in &info.references {
            g.update_edge(node, index(r), ());
        }
    }

    let dom = dominators::simple_fast(&g, root);
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); paths.len() + 1];
    for i in 1..=paths.len() {
        if let Some(idom) = dom.immediate_dominator(NodeIndex::new(i)) {
            children[idom.index()].push(i);
        }
    }

    let mut layers: Vec<Layer> = children[0]
        .iter()
        .map(|&top| {
            let mut contents = Vec::new();
            let mut size = 0;
            let mut stack = vec![top];
            while let Some(n) = stack.pop() {
                let path = paths[n - 1];
                contents.push(path.clone());
                size += graph.paths[path].nar_size;
                stack.extend(&children[n]);
            }
            contents.sort();
            let popularity = pop_of(paths[top - 1]);
            Layer { merge_rating: popularity as u128 * size as u128, contents, size, popularity }
        })
        .collect();

    if layers.len() > budget {
        tracing::debug!(layers = layers.len(), budget, "merging layers to fit the budget");
        // Min-heap on (rating, contents): a total order, as contents never repeat.
        let mut heap: BinaryHeap<Reverse<Layer>> = layers.into_iter().map(Reverse).collect();
        while heap.len() > budget {
            let Reverse(a) = heap.pop().expect("len > budget >= 1");
            let Reverse(b) = heap.pop().expect("len > budget >= 1");
            heap.push(Reverse(a.merge(b)));
        }
        layers = heap.into_iter().map(|Reverse(l)| l).collect();
    }
    // Manifest order: highest rating first, ties broken by contents.
    layers.sort_by(|a, b| b.merge_rating.cmp(&a.merge_rating).then_with(|| a.contents.cmp(&b.contents)));
    layers
}
