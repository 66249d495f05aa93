//! The default grouping, `banded` ([`group_banded`]): [`super::group`]'s units, the heaviest
//! a layer each, and the rest in a few layers by depth instead of one. Measured in
//! docs/reuse.md ("Updates"): it keeps an image up to date for the fewest bytes of any
//! grouping measured, while reuse across images stays within a few percent of `stable`'s.
//!
//! # The grouping
//!
//! 1. **Units** as in [`super::group`]: every store path, except paths the popularity data
//!    shows are private to one package, which join it.
//! 2. With at most `budget` units, each is a layer: what one layer per store path
//!    downloads, the least any grouping can.
//! 3. Otherwise `bands = max(1, budget / 10)` layers go to the rest: the `budget - bands`
//!    heaviest units (always-included ones first) keep a layer each, and the others are
//!    sorted by **depth**, the number of store paths in their closure (a unit's: the largest
//!    of its paths'), fewest first (ties by contents), and cut into `bands` runs of equal
//!    count, each a layer. The first band holds the libraries at the bottom of the graph,
//!    the last the image's top-level packages.
//! 4. Manifest order: the kept units by merge rating (popularity × size), highest first,
//!    then the bands, bottom band first (merge rating 0): what changes least sits lowest,
//!    where Docker's ChainIDs can still match.
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
//! the model of a weekly moving package set (benches/reuse/model.rs) that is 1.18× the bytes
//! of one layer per path at budget 94. Cutting that rest by depth puts paths of similar
//! closures together: the band of top-level packages still changes every week, but it
//! changed anyway; the deep bands change only when one of their own paths does, and they
//! are no longer dragged along by the top. Ten percent of the budget in bands brings
//! updates to 1.13–1.15× (docs/reuse.md); more bands help updates a little more but take
//! layers from the heaviest units, which are what other images reuse.
//!
//! nixpkgs' size-first grouping ([`super::group_size_first`]) also starts from the largest
//! paths, but gives each its dependencies that no other large path uses: its layer's
//! contents then depend on which other packages the image holds (fewer layers recur across
//! images: 46 % over one layer per path on Debian's graph at budget 94, `stable` 13 %), and
//! the large path's layer is downloaded again with every change of a small dependency it
//! carries (1.31× on updates). Keeping the heaviest units alone, as `stable` does, avoids
//! both; the bands are the improvement over `stable`.
//!
//! Depth is a function of the path's closure, which is the same in every image, so a path's
//! band position does not depend on anything but the store paths of this image, and the
//! grouping stays a pure function of the graph, the sizes and the popularity data. Every
//! sort has a total order (ties by contents).

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
    let depth: Vec<usize> =
        (0..paths.len()).map(|x| closures.of_path(x).iter().map(|w| w.count_ones() as usize).sum()).collect();
    let unit_depth =
        |l: &Layer| l.contents.iter().map(|p| depth[paths.binary_search(&p).expect("a path of the graph")]).max();
    let mut rest: Vec<(Option<usize>, Layer)> = rest.into_iter().map(|l| (unit_depth(&l), l)).collect();
    rest.sort_by(|(da, a), (db, b)| da.cmp(db).then_with(|| a.contents.cmp(&b.contents)));
    let n = rest.len();
    let mut rest = rest.into_iter().map(|(_, l)| l);
    for band in 0..bands {
        let take = n * (band + 1) / bands - n * band / bands;
        let members: Vec<Layer> = rest.by_ref().take(take).collect();
        if let Some(mut layer) = members.into_iter().reduce(Layer::merge) {
            layer.merge_rating = 0;
            units.push(layer);
        }
    }
    units
}
