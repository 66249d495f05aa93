//! Grouping store paths into layers so that clients download as little as possible,
//! deterministically.
//!
//! A client downloads a layer unless it already holds a layer with the same digest, and a
//! layer's digest is a function of its contents (the archives are deterministic), so a layer
//! is reused exactly when another image, or the same image after its channel moved, asks for
//! the *same set of store paths*. A grouping is good when the sets it makes recur across
//! images and across revisions, and when what cannot recur is small. `benches/reuse/`
//! measures both (docs/reuse.md has the numbers). The groupings (`NIXERY_LAYER_GROUPING`):
//!
//! - [`group_banded`] (`banded`, the default): [`group`]'s units and heaviest layers, the
//!   rest merged by expected update cost into a tenth of the budget (banded.rs says why);
//! - [`group`] (`stable`, the default before): described below;
//! - [`group_nixery`] (`nixery`): Nixery's layers.go, for drop-in compatibility;
//! - [`group_size_first`] (`sizefirst`): nixpkgs' `streamLayeredImage` (#355189).
//!
//! [`group_popularity_contest`] (nixpkgs' `buildLayeredImage`) and [`group_nixery_pairwise`]
//! (this project's earlier port of Nixery) are kept for the benchmark only.
//!
//! # The grouping ([`group`])
//!
//! 1. **Units that recur whole.** Every store path starts as a unit of its own. A path that
//!    the popularity data says exactly one package references (popularity ≤ 1), and that is
//!    referenced by exactly one path of this image, joins its referrer's unit (transitively,
//!    with a union–find over the paths in sorted order). Such a path is that package's
//!    private dependency: every image that has the package has the path, and reaches it only
//!    through the package, so the unit is the same set in every image. Every other path is
//!    shared by several packages and stands alone, so its layer is the same whichever of them
//!    brought it in. When the data carries no information (no count above 1, which is also
//!    what no data at all looks like) nothing can be known to be private and every path is a
//!    unit.
//! 2. **Keep the heaviest units out of the rest.** With at most `budget` units, each is a
//!    layer. Otherwise the `budget - 1` units that weigh the most (NAR size) get a layer each,
//!    units holding an always-included path (`cacert`, `iana-etc`) first, and all the others
//!    share one last layer.
//! 3. **Manifest order** is Nixery's merge rating, popularity of the unit × its size,
//!    highest first (ties by contents), so the popular shared layers sit at the bottom; the
//!    shared last layer comes last and rates 0.
//!
//! # Why, and how it differs from Nixery
//!
//! (Measured across images at one revision; over revisions the one shared last layer is what
//! [`group_banded`] improves on.) Nixery ([`group_nixery`]) puts a path into the layer of the package that dominates it
//! *in this image's graph*. Dominance depends on which other packages the
//! image holds: a library only `hello` uses here is dominated by `hello`, so it travels in
//! `hello`'s layer, but in `hello/nano`, where `nano` uses it too, it stands alone — two
//! different `hello` layers, and the library's bytes downloaded twice. On the test package
//! set this made Nixery download 7.9× what one layer per path would: busybox, which most of
//! its packages use, travels in the layer of whichever package is the only user in an image.
//! Step 1 asks the popularity data, which is about the whole package set, instead of the
//! image: a unit only holds paths that no other package can reach, so it is the same set in
//! every image.
//!
//! Once the image has more units than the budget, some must share a layer, and a layer of
//! several shared units recurs only when an image holds exactly those units — in practice
//! never. This project's earlier port of Nixery merged the two lowest-rated layers again and
//! again, which makes several such one-off layers (Nixery itself folds everything past the
//! budget into one layer, but rates by closure sizes, so what stays out of it are the
//! popular paths and those with big closures, not the heavy ones); step 2 makes one, the
//! last, and spends every other layer of the
//! budget on a unit of its own. Every unit in the one-off layer is downloaded again with
//! each image that holds it, so the units kept out of it should be the ones that would cost
//! most to download again: the heaviest. On Debian's package graph, choosing them by
//! Nixery's popularity × size instead (small popular libraries first) downloads 17–38 %
//! more, and giving popular paths (≥ [`POPULAR`]) precedence 37–107 % more (docs/reuse.md);
//! the always-included packages are the exception, as they are in every image for certain.
//! The popularity weight stays in the manifest order (Nixery's): the layers most images
//! share sit at the bottom, where Docker's ChainIDs (a layer is reused only if every layer
//! below it matches too) can match. On Debian, ordering by size alone matches ChainIDs
//! slightly more often; the popularity order is kept because popular layers first is what
//! the manifest order promises and what nixpkgs' data (glibc in nearly every image) suits.
//!
//! Nixery's closure-size rule (paths with a closure over [`BIG_CLOSURE`] stand alone) is not
//! needed: a path that is not private stands alone anyway, and a private one is always with
//! its package, big or not.
//!
//! Every sort has a total order (ties broken by contents), the union–find runs in path
//! order and units are identified by their sorted contents, so the same graph gives the
//! same layers whatever order it was built in.

mod banded;
mod contest;
mod nixery;
mod size_first;
mod update_cost;

pub use banded::{BUDGET_PER_BAND, group_banded};
pub use contest::{group_popularity_contest, popularity_contest_order};
pub use nixery::{group_nixery, group_nixery_pairwise};
pub use size_first::group_size_first;

use crate::nix::{RuntimeGraph, StorePath};
use crate::popularity::Popularity;
use std::collections::{BTreeMap, BTreeSet};

/// Popularity at or above which Nixery's grouping gives a path a layer of its own.
pub const POPULAR: u64 = 100;
/// Closure size above which Nixery's grouping gives a path a layer of its own.
pub const BIG_CLOSURE: u64 = 100 * 1000 * 1000;
/// Popularity of the packages every image carries: Nixery's value (glibc has ~300k
/// references in nixpkgs; these need more), or more than the most popular path in the data.
pub const VERY_POPULAR: u64 = 500_000;

/// The popularity given to the always-included packages.
fn very_popular_value(popularity: &Popularity) -> u64 {
    VERY_POPULAR.max(popularity.max() + 1)
}

/// A store path's popularity: from the data by name, or [`very_popular_value`] for the
/// always-included paths.
fn path_popularity(path: &StorePath, popularity: &Popularity, very_popular: &BTreeSet<StorePath>) -> u64 {
    if very_popular.contains(path) { very_popular_value(popularity) } else { popularity.of_name(path.name()) }
}

/// Which grouping the server uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Grouping {
    /// [`group_banded`]: `stable`'s units, the heaviest kept apart, the rest merged by update cost
    /// (the default; docs/reuse.md).
    #[default]
    Banded,
    /// [`group`]: units that recur whole, heaviest kept apart, the rest in one layer.
    Stable,
    /// [`group_nixery`]: Nixery's dominator-tree grouping, for drop-in compatibility.
    Nixery,
    /// [`group_size_first`]: nixpkgs' `streamLayeredImage` grouping (NixOS/nixpkgs#355189).
    SizeFirst,
}

/// How an image's store paths become layers: the grouping, and at most how many store-path
/// layers an image gets (the symlink forest comes on top).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LayerPolicy {
    pub grouping: Grouping,
    pub budget: usize,
}

impl LayerPolicy {
    /// Groups `graph` by this policy, in manifest order; `very_popular` as for [`group`].
    pub fn group(
        &self,
        graph: &RuntimeGraph,
        popularity: &Popularity,
        very_popular: &BTreeSet<StorePath>,
    ) -> Vec<Layer> {
        match self.grouping {
            Grouping::Banded => group_banded(graph, popularity, very_popular, self.budget),
            Grouping::Stable => group(graph, popularity, very_popular, self.budget),
            Grouping::Nixery => group_nixery(graph, popularity, very_popular, self.budget),
            Grouping::SizeFirst => group_size_first(graph, self.budget),
        }
    }
}

/// A group of store paths that is archived as one image layer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Layer {
    /// Popularity × size (0 for [`group`]'s shared last layer); manifest order is highest
    /// first.
    pub merge_rating: u128,
    /// Sorted store paths.
    pub contents: Vec<StorePath>,
    /// Sum of the paths' NAR sizes.
    pub size: u64,
    /// Popularity of the layer's most popular unit (the highest of merged layers).
    pub popularity: u64,
}

impl Layer {
    /// The union of two layers with disjoint contents.
    fn merge(self, other: Layer) -> Layer {
        // Both are sorted: a linear merge gives what sorting the concatenation would.
        let mut contents = Vec::with_capacity(self.contents.len() + other.contents.len());
        let mut a = self.contents.into_iter().peekable();
        let mut b = other.contents.into_iter().peekable();
        loop {
            let take_a = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => x <= y,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            contents.extend(if take_a { a.next() } else { b.next() });
        }
        Layer {
            merge_rating: self.merge_rating + other.merge_rating,
            contents,
            size: self.size + other.size,
            popularity: self.popularity.max(other.popularity),
        }
    }
}

/// Step 1 of [`group`]: the units, each with popularity × size as its rating, in no
/// particular order.
fn units(graph: &RuntimeGraph, popularity: &Popularity, very_popular: &BTreeSet<StorePath>) -> Vec<Layer> {
    let paths: Vec<&StorePath> = graph.paths.keys().collect();
    let n = paths.len();
    let pop: Vec<u64> = paths.iter().map(|p| path_popularity(p, popularity, very_popular)).collect();

    // 1. Units: private paths join their only referrer (union–find, in path order).
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    if popularity.max() > 1 {
        let index = |path: &StorePath| paths.binary_search(&path).expect("graph is closed");
        // Referrers within the image: how many, and one of them.
        let mut referrers: Vec<(usize, usize)> = vec![(0, 0); n];
        for (i, info) in graph.paths.values().enumerate() {
            for r in &info.references {
                let j = index(r);
                referrers[j] = (referrers[j].0 + 1, i);
            }
        }
        for y in 0..n {
            let (count, referrer) = referrers[y];
            if pop[y] <= 1 && count == 1 {
                let (ry, rz) = (find(&mut parent, y), find(&mut parent, referrer));
                if ry != rz {
                    parent[ry] = rz;
                }
            }
        }
    }
    let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        members.entry(find(&mut parent, i)).or_default().push(i);
    }
    members
        .into_values()
        .map(|m| {
            // Members are in path order, so the contents are sorted.
            let size = m.iter().map(|&i| graph.paths[paths[i]].nar_size).sum::<u64>();
            let popularity = m.iter().map(|&i| pop[i]).max().unwrap_or(1);
            Layer {
                merge_rating: popularity as u128 * size as u128,
                contents: m.iter().map(|&i| paths[i].clone()).collect(),
                size,
                popularity,
            }
        })
        .collect()
}

/// Groups `graph` into at most `budget` layers (see the module docs), in manifest order.
/// `very_popular` are the always-included paths, treated as more popular than anything in
/// `popularity`.
pub fn group(
    graph: &RuntimeGraph,
    popularity: &Popularity,
    very_popular: &BTreeSet<StorePath>,
    budget: usize,
) -> Vec<Layer> {
    let budget = budget.max(1);
    let mut units = units(graph, popularity, very_popular);

    // 2. The budget: the heaviest units (always-included first) keep a layer each.
    let mut rest = None;
    if units.len() > budget {
        heaviest_first(&mut units, popularity);
        let shared = units.split_off(budget - 1);
        let size = shared.iter().map(|l| l.size).sum();
        let popularity = shared.iter().map(|l| l.popularity).max().unwrap_or(1);
        let mut contents: Vec<StorePath> = shared.into_iter().flat_map(|l| l.contents).collect();
        contents.sort();
        rest = Some(Layer { merge_rating: 0, contents, size, popularity });
    }

    // 3. Manifest order: highest merge rating first, the shared rest last.
    manifest_order(&mut units);
    units.extend(rest);
    units
}

/// The order in which units keep a layer of their own: always-included ones first, then by
/// size, heaviest first (ties by contents).
fn heaviest_first(units: &mut [Layer], popularity: &Popularity) {
    let top = very_popular_value(popularity);
    units.sort_by(|a, b| {
        (b.popularity >= top)
            .cmp(&(a.popularity >= top))
            .then_with(|| b.size.cmp(&a.size))
            .then_with(|| a.contents.cmp(&b.contents))
    });
}

/// Every path's closure as a bitset over the graph's paths (in their sorted order), built
/// references first: O(paths × references × paths / 64).
struct Closures {
    words: usize,
    bits: Vec<u64>,
}

impl Closures {
    fn of(graph: &RuntimeGraph, paths: &[&StorePath]) -> Closures {
        let n = paths.len();
        let index = |p: &StorePath| paths.binary_search(&p).expect("graph is closed");
        let refs: Vec<Vec<usize>> = graph.paths.values().map(|i| i.references.iter().map(index).collect()).collect();
        // Postorder of a depth-first walk: every path after its references.
        let mut order = Vec::with_capacity(n);
        let mut seen = vec![false; n];
        for start in 0..n {
            if seen[start] {
                continue;
            }
            seen[start] = true;
            let mut stack = vec![(start, 0usize)];
            while let Some(&mut (x, ref mut next)) = stack.last_mut() {
                if let Some(&y) = refs[x].get(*next) {
                    *next += 1;
                    if !seen[y] {
                        seen[y] = true;
                        stack.push((y, 0));
                    }
                } else {
                    order.push(x);
                    stack.pop();
                }
            }
        }
        let words = n.div_ceil(64);
        let mut bits = vec![0u64; n * words];
        for &x in &order {
            bits[x * words + x / 64] |= 1 << (x % 64);
            for &y in &refs[x] {
                for w in 0..words {
                    let v = bits[y * words + w];
                    bits[x * words + w] |= v;
                }
            }
        }
        Closures { words, bits }
    }

    /// The union of the closures of the paths `members` (positions in the graph's order).
    fn union_of(&self, members: impl IntoIterator<Item = usize>) -> Vec<u64> {
        let mut union = vec![0u64; self.words];
        for x in members {
            for (w, v) in union.iter_mut().zip(self.of_path(x)) {
                *w |= v;
            }
        }
        union
    }

    /// Path `x`'s closure, itself included.
    fn of_path(&self, x: usize) -> &[u64] {
        &self.bits[x * self.words..(x + 1) * self.words]
    }
}

/// Manifest order: highest merge rating first, ties broken by contents.
fn manifest_order(layers: &mut [Layer]) {
    layers.sort_by(|a, b| b.merge_rating.cmp(&a.merge_rating).then_with(|| a.contents.cmp(&b.contents)));
}

#[cfg(test)]
mod tests;
