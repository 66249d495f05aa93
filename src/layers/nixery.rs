//! Nixery's grouping (tazjin/nixery `layers/layers.go`, be8a400), for anyone who wants
//! Nixery's layers (`NIXERY_LAYER_GROUPING=nixery`) and for the reuse benchmark. The steps:
//!
//! 1. Build a graph: a synthetic root with an edge to every requested package, and from each
//!    store path an edge to each path it references.
//! 2. Paths that are popular (popularity ≥ [`POPULAR`]) or whose closure exceeds
//!    [`BIG_CLOSURE`] get an extra edge from the root: they are to be shared.
//! 3. Compute the dominator tree (petgraph's Cooper–Harvey–Kennedy `simple_fast`). Every
//!    child of the root with its dominated subtree is one layer: a path dominated by a
//!    package is needed only through that package, so it travels with it; a path reachable
//!    along two routes (or flagged in step 2) is dominated by the root and stands alone.
//! 4. A layer's merge rating is the popularity of its subtree's root times the sum of the
//!    *closure* sizes of the subtree's paths (Nixery's `closure.Size` is
//!    `exportReferencesGraph`'s `closureSize`, so shared paths count many times).
//! 5. The layers are sorted by merge rating, lowest first, **once**; while there are more
//!    than the budget, the first is merged into the second and dropped (`layers[1] =
//!    layers[0].merge(layers[1]); layers = layers[1:]`). That folds the lowest
//!    `len - budget + 1` layers into a single one and leaves the other `budget - 1` as they
//!    were; the folded layer's rating is the sum of theirs.
//! 6. Manifest order: merge rating, highest first.
//!
//! [`group_nixery`] does exactly that. Differences, none of which changes a layer where
//! Nixery's own result is determined: its sorts are not stable (`sort.Slice`), here every
//! tie is broken by contents, so the same graph always gives the same layers; the packages
//! every image carries are the `very_popular` set rather than names starting with
//! `nss-cacert` or `iana-etc`, with popularity [`super::VERY_POPULAR`] or more than the most
//! popular path in the data.
//!
//! [`group_nixery_pairwise`] is what this project shipped as Nixery's grouping before: NAR
//! sizes of the layer's own paths, and the two lowest-rated layers merged again and again
//! (re-sorted after each merge), which spreads the surplus over several merged layers
//! instead of one. Kept for the reuse benchmark only (docs/reuse.md): it is not Nixery's.

use super::{BIG_CLOSURE, Layer, POPULAR, manifest_order, path_popularity};
use crate::nix::{PathInfo, RuntimeGraph, StorePath};
use crate::popularity::Popularity;
use petgraph::algo::dominators;
use petgraph::graph::{DiGraph, NodeIndex};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

/// The children of the image root in Nixery's dominator tree, each with its subtree: the
/// layers before any merge, as (root path index, member indices).
fn dominated_subtrees(
    graph: &RuntimeGraph,
    paths: &[&StorePath],
    pop_of: &dyn Fn(&StorePath) -> u64,
) -> Vec<(usize, Vec<usize>)> {
    // Node 0 is the root; node i+1 is paths[i] (sorted, so indices are deterministic).
    let mut g: DiGraph<(), ()> = DiGraph::with_capacity(paths.len() + 1, paths.len() * 2);
    let root = g.add_node(());
    for _ in paths {
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
    children[0]
        .iter()
        .map(|&top| {
            let mut members = Vec::new();
            let mut stack = vec![top];
            while let Some(n) = stack.pop() {
                members.push(n - 1);
                stack.extend(&children[n]);
            }
            members.sort_unstable();
            (top - 1, members)
        })
        .collect()
}

/// Nixery's layers before any merge, each rated by the popularity of its subtree's root
/// times the sum of `rated_size` over its paths.
fn rated_subtrees(
    graph: &RuntimeGraph,
    popularity: &Popularity,
    very_popular: &BTreeSet<StorePath>,
    rated_size: impl Fn(&PathInfo) -> u64,
) -> Vec<Layer> {
    let paths: Vec<&StorePath> = graph.paths.keys().collect();
    let pop_of = |path: &StorePath| path_popularity(path, popularity, very_popular);
    dominated_subtrees(graph, &paths, &pop_of)
        .into_iter()
        .map(|(top, members)| {
            let popularity = pop_of(paths[top]);
            let rated: u64 = members.iter().map(|&i| rated_size(&graph.paths[paths[i]])).sum();
            Layer {
                merge_rating: popularity as u128 * rated as u128,
                contents: members.iter().map(|&i| paths[i].clone()).collect(),
                size: members.iter().map(|&i| graph.paths[paths[i]].nar_size).sum(),
                popularity,
            }
        })
        .collect()
}

/// Nixery's grouping of `graph` into at most `budget` layers, as layers.go does it (see the
/// module docs), in manifest order (highest merge rating first).
pub fn group_nixery(
    graph: &RuntimeGraph,
    popularity: &Popularity,
    very_popular: &BTreeSet<StorePath>,
    budget: usize,
) -> Vec<Layer> {
    let budget = budget.max(1);
    let mut layers = rated_subtrees(graph, popularity, very_popular, |info| info.closure_size);
    // Sorted once, lowest rating first; the lowest `len - budget + 1` fold into one.
    layers.sort_by(|a, b| a.merge_rating.cmp(&b.merge_rating).then_with(|| a.contents.cmp(&b.contents)));
    if layers.len() > budget {
        tracing::debug!(layers = layers.len(), budget, "folding layers to fit the budget");
        let kept = layers.split_off(layers.len() - budget + 1);
        let folded = layers.into_iter().reduce(Layer::merge).expect("at least two layers fold");
        layers = std::iter::once(folded).chain(kept).collect();
    }
    manifest_order(&mut layers);
    layers
}

/// This project's earlier port of Nixery's grouping (see the module docs): NAR sizes, the two
/// lowest-rated layers merged until the budget holds. For the reuse benchmark.
pub fn group_nixery_pairwise(
    graph: &RuntimeGraph,
    popularity: &Popularity,
    very_popular: &BTreeSet<StorePath>,
    budget: usize,
) -> Vec<Layer> {
    let budget = budget.max(1);
    let mut layers = rated_subtrees(graph, popularity, very_popular, |info| info.nar_size);
    if layers.len() > budget {
        // Min-heap on (rating, contents): a total order, as contents never repeat.
        let mut heap: BinaryHeap<Reverse<Layer>> = layers.into_iter().map(Reverse).collect();
        while heap.len() > budget {
            let Reverse(a) = heap.pop().expect("len > budget >= 1");
            let Reverse(b) = heap.pop().expect("len > budget >= 1");
            heap.push(Reverse(a.merge(b)));
        }
        layers = heap.into_iter().map(|Reverse(l)| l).collect();
    }
    manifest_order(&mut layers);
    layers
}
