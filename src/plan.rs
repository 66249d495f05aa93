//! Planning an image: image spec + pinned source → Nix (resolve, realise, runtime graph) →
//! layer plan.
//!
//! The one place the pipeline up to the layer grouping is written: the builder archives
//! what [`Planner::plan`] returns, `nixery layers` prints it. The plan is what decides an
//! image's bytes apart from the archive format: store-path layers in manifest order (the
//! configured grouping and budget, with the outputs of the packages every image carries
//! counted as the most popular, [`crate::image::is_always_included`]), the packages of the
//! symlink forest, and whether the image runs bash.

use crate::archive::LayerContents;
use crate::image::{self, ImageSpec};
use crate::layers::{Layer, LayerPolicy};
use crate::nix::{Nix, NixError, StorePath};
use crate::pkgsource::SourceRevision;
use crate::popularity::Popularity;
use std::collections::{BTreeMap, BTreeSet};

/// What an image will consist of.
#[derive(Clone, Debug)]
pub struct ImagePlan {
    /// Store-path layers, in manifest order.
    pub layers: Vec<Layer>,
    /// The top-level packages linked into the symlink forest, the last layer.
    pub forest: Vec<StorePath>,
    /// Whether the image has an interactive shell, which becomes its command.
    pub runs_bash: bool,
    /// Each store path's NAR size (what the web pages show per path).
    pub sizes: BTreeMap<StorePath, u64>,
}

impl ImagePlan {
    /// Every layer's contents, in manifest order (the symlink forest last).
    pub fn contents(&self) -> Vec<LayerContents> {
        let paths = self.layers.iter().map(|l| LayerContents::StorePaths(l.contents.clone()));
        paths.chain(std::iter::once(LayerContents::Forest(self.forest.clone()))).collect()
    }
}

/// Plans images: Nix, popularity data and the layer policy.
pub struct Planner {
    nix: Nix,
    popularity: Popularity,
    layers: LayerPolicy,
}

impl Planner {
    pub fn new(nix: Nix, popularity: Popularity, layers: LayerPolicy) -> Self {
        Planner { nix, popularity, layers }
    }

    /// The layer plan of `spec` built from `source` (runs Nix: the packages are realised).
    pub async fn plan(&self, source: &SourceRevision, spec: &ImageSpec) -> Result<ImagePlan, NixError> {
        let realised = self.nix.realise(source, spec.arch, &spec.packages).await?;
        let very_popular: BTreeSet<StorePath> = realised
            .packages
            .iter()
            .filter(|p| image::is_always_included(&p.name))
            .flat_map(|p| p.outputs.iter().cloned())
            .collect();
        let layers = self.layers.group(&realised.graph, &self.popularity, &very_popular);
        let runs_bash = realised.packages.iter().any(|p| p.attr == image::INTERACTIVE_SHELL);
        let sizes = realised.graph.paths.iter().map(|(path, info)| (path.clone(), info.nar_size)).collect();
        Ok(ImagePlan { layers, forest: realised.graph.roots, runs_bash, sizes })
    }
}
