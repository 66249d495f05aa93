//! The groupings compared, and the checks every result must pass.

use crate::common::Image;
use nixery::layers::{self, Layer};
use nixery::nix::StorePath;
use nixery::popularity::Popularity;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// `layers::group_banded`: the `banded` grouping, the server's default.
    Banded,
    /// `layers::group`: the `stable` grouping.
    Stable,
    /// `layers::group_size_first`: nixpkgs' `streamLayeredImage` (#355189).
    SizeFirst,
    /// `layers::group_nixery`: Nixery's layers.go.
    Nixery,
    /// `layers::group_nixery_pairwise`: this project's earlier port of Nixery.
    NixeryPairwise,
    /// nixpkgs' buildLayeredImage popularity contest.
    Contest,
    /// Every store path a layer of its own (budget ignored): the best any grouping can do.
    PerPath,
    /// The whole closure in one layer.
    Single,
}

/// The groupings that take a budget, in table order.
pub const BUDGETED: [Strategy; 6] = [
    Strategy::Banded,
    Strategy::Stable,
    Strategy::SizeFirst,
    Strategy::Nixery,
    Strategy::NixeryPairwise,
    Strategy::Contest,
];

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Banded => "banded (layers::group_banded, the default)",
            Strategy::Stable => "stable (layers::group)",
            Strategy::SizeFirst => "sizefirst (nixpkgs #355189)",
            Strategy::Nixery => "nixery (Nixery's layers.go)",
            Strategy::NixeryPairwise => "nixery, pairwise merges (the old port)",
            Strategy::Contest => "nixpkgs popularity contest",
            Strategy::PerPath => "one layer per path (ideal)",
            Strategy::Single => "one single layer",
        }
    }

    pub fn budgeted(self) -> bool {
        !matches!(self, Strategy::PerPath | Strategy::Single)
    }

    /// The image's layers in manifest order (bottom first), each as sorted contents.
    pub fn layers(self, image: &Image, popularity: &Popularity, budget: usize) -> Vec<Vec<StorePath>> {
        let contents = |ls: Vec<Layer>| ls.into_iter().map(|l| l.contents).collect();
        let g = &image.graph;
        let very = &image.very_popular;
        match self {
            Strategy::Banded => contents(layers::group_banded(g, popularity, very, budget)),
            Strategy::Stable => contents(layers::group(g, popularity, very, budget)),
            Strategy::SizeFirst => contents(layers::group_size_first(g, budget)),
            Strategy::Nixery => contents(layers::group_nixery(g, popularity, very, budget)),
            Strategy::NixeryPairwise => contents(layers::group_nixery_pairwise(g, popularity, very, budget)),
            Strategy::Contest => contents(layers::group_popularity_contest(g, budget)),
            Strategy::PerPath => {
                // Bottom-most the paths most packages use, so ChainIDs have a chance.
                let mut paths: Vec<&StorePath> = g.paths.keys().collect();
                paths.sort_by_key(|p| (std::cmp::Reverse(popularity.of_name(p.name())), *p));
                paths.into_iter().map(|p| vec![p.clone()]).collect()
            }
            Strategy::Single => vec![g.paths.keys().cloned().collect()],
        }
    }
}

/// Every strategy must stay within the budget and place every path exactly once.
pub fn check(image: &Image, layers: &[Vec<StorePath>], strategy: Strategy, budget: usize) {
    if strategy.budgeted() {
        assert!(layers.len() <= budget.max(1), "{} over budget", strategy.name());
    }
    let mut all: Vec<&StorePath> = layers.iter().flatten().collect();
    all.sort();
    let len = all.len();
    all.dedup();
    assert_eq!(len, all.len(), "{}: a path in two layers", strategy.name());
    assert!(all.iter().copied().eq(image.graph.paths.keys()), "{}: paths missing in {}", strategy.name(), image.label);
}
