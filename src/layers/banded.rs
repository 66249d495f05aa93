//! The default grouping, `banded` ([`group_banded`]): [`super::group`]'s units, the heaviest
//! a layer each, and the rest in a few layers merged by expected update cost instead of
//! one. Measured in docs/reuse.md ("Updates"): at budget 94 it keeps an image up to date for
//! the fewest bytes of any grouping measured (1.10–1.13× one layer per path), at 24 it is
//! level with size-first, and reuse across images stays within a few points of `stable`'s.
//!
//! # The grouping
//!
//! 1. **Units** as in [`super::group`]: every store path, except paths the popularity data
//!    shows are private to one package, which join it.
//! 2. With at most `budget` units, each is a layer: what one layer per store path
//!    downloads, the least any grouping can.
//! 3. Otherwise `bands = max(1, budget / 10)` layers go to the rest: the `budget - bands`
//!    heaviest units (always-included ones first) keep a layer each, and the others are
//!    merged into `bands` layers, the two whose merge adds least to the expected bytes of
//!    an update first ([`super::update_cost`]: a layer changes when anything in its paths'
//!    closures does, so its cost is its size × the chance that one of its closures' paths
//!    changes). Libraries at the bottom of the graph end up together, apart from the
//!    image's top-level packages.
//! 4. Manifest order: the kept units by merge rating (popularity × size), highest first,
//!    then the bands by the paths their closures hold, fewest first (merge rating 0): what
//!    changes least sits lowest, where Docker's ChainIDs can still match.
//!
//! # Why
//!
//! When a channel moves, a store path changes whenever anything in its closure changes (its
//! hash covers its references), and a layer is downloaded again whenever any of its paths
//! changed. So a layer is as stable as the union of its paths' closures: a layer holding a
//! library deep in the graph and an application at the top changes with the application,
//! every week, and takes the library's bytes along. `stable` puts every unit past the
//! `budget - 1` heaviest into one last layer, which holds the image's top-level packages as
//! well as its small deep libraries, so it is downloaded whole with almost every update; in
//! the model of a weekly moving package set (benches/reuse/model.rs) that is 1.14–1.18×
//! the bytes of one layer per path at budget 94. Spreading that rest over a few layers by how their
//! closures overlap keeps the top-level packages' layer changing every week, as it would
//! anyway, while the deep layers change only when one of their own paths does. The first
//! version cut the rest by closure length into runs of equal count; merging by expected
//! cost downloads less at every budget measured (docs/reuse.md) and gives the same layers
//! to the heaviest units, so reuse across images is the same. Ten percent of the budget in
//! bands is where updates meet the target at 94; more bands help updates a little more but
//! take layers from the heaviest units, which are what other images reuse.
//!
//! nixpkgs' size-first grouping ([`super::group_size_first`]) also starts from the largest
//! paths, but gives each its dependencies that no other large path uses: its layer's
//! contents then depend on which other packages the image holds (fewer layers recur across
//! images: 46 % over one layer per path on Debian's graph at budget 94, `stable` 13 %), and
//! the large path's layer is downloaded again with every change of a small dependency it
//! carries (1.24–1.29× on updates at 94). Keeping the heaviest units alone, as `stable` does, avoids
//! both; the bands are the improvement over `stable`.
//!
//! Closures are a function of the store paths, the same in every image, and the merges use
//! integer arithmetic with ties broken by contents, so the grouping stays a pure function of
//! the graph, the sizes and the popularity data: the same on every replica and after
//! restarts, whatever the architecture.

use super::update_cost::{Group, merge_cheapest};
use super::{Closures, Layer, heaviest_first, manifest_order, units};
use crate::nix::{RuntimeGraph, StorePath};
use crate::popularity::Popularity;
use std::collections::BTreeSet;

/// One band per this many layers of the budget (at least one band).
pub const BUDGET_PER_BAND: usize = 10;

/// The default grouping of `graph` into at most `budget` layers (see the module docs), in
/// manifest order.
pub fn group_banded(
    graph: &RuntimeGraph,
    popularity: &Popularity,
    very_popular: &BTreeSet<StorePath>,
    budget: usize,
) -> Vec<Layer> {
    let budget = budget.max(1);
    let mut units = units(graph, popularity, very_popular);
    if units.len() <= budget {
        manifest_order(&mut units);
        return units;
    }
    let bands = (budget / BUDGET_PER_BAND).max(1);
    heaviest_first(&mut units, popularity);
    let rest = units.split_off(budget - bands);
    manifest_order(&mut units);

    let paths: Vec<&StorePath> = graph.paths.keys().collect();
    let closures = Closures::of(graph, &paths);
    let position = |p: &StorePath| paths.binary_search(&p).expect("a path of the graph");
    let in_order = |a: &Group, b: &Group| a.reach.cmp(&b.reach).then_with(|| a.layer.contents.cmp(&b.layer.contents));
    let mut rest: Vec<Group> =
        rest.into_iter().map(|l| Group::new(closures.union_of(l.contents.iter().map(position)), l)).collect();
    rest.sort_by(in_order);
    let mut bands = merge_cheapest(rest, bands, paths.len());
    bands.sort_by(in_order);
    units.extend(bands.into_iter().map(|band| Layer { merge_rating: 0, ..band.layer }));
    units
}
