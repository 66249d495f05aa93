//! `nixery layers <image>`: the layer plan of an image, without building archives. The tag is
//! resolved and the image planned exactly as the server does ([`crate::cache::sources`],
//! [`crate::plan`]).

use crate::cache::SourceCache;
use crate::config::BuildSettings;
use crate::image::{ImageName, ImageSpec, NameError, Tag};
use crate::layers::Layer;
use crate::metrics::Metrics;
use crate::nix::{Nix, NixError, StorePath};
use crate::pkgsource::SourceError;
use crate::plan::Planner;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LayersCommandError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Source(Arc<SourceError>),
    #[error(transparent)]
    Nix(#[from] NixError),
    #[error("NIX_POPULARITY_URL: {0}")]
    Popularity(#[from] crate::popularity::PopularityError),
    #[error("cannot write the Nix expressions to a temporary directory: {0}")]
    Expressions(std::io::Error),
    #[error(transparent)]
    NixVersion(#[from] crate::nix::version::VersionError),
}

/// The plan: store-path layers in manifest order, then the symlink forest's packages.
#[derive(Debug, serde::Serialize)]
pub struct Plan {
    pub layers: Vec<PlannedLayer>,
    pub symlink_forest: Vec<StorePath>,
}

#[derive(Debug, serde::Serialize)]
pub struct PlannedLayer {
    pub store_paths: Vec<StorePath>,
    pub size: u64,
    pub popularity: u64,
    pub merge_rating: String,
}

pub async fn plan(image: &str, tag: &str, settings: &BuildSettings) -> Result<Plan, LayersCommandError> {
    let name = ImageName::parse(image)?;
    let tag = Tag::parse(tag)?;
    let spec = ImageSpec::from_name(&name);
    crate::nix::version::require_supported().await?;
    let popularity = crate::commands::serve::load_popularity(settings.popularity_url.as_deref()).await?;
    let policy = &settings.policy;
    let metrics = Arc::new(Metrics::default());
    let sources = SourceCache::new(policy.source.clone(), Duration::ZERO, metrics.clone());
    let (revision, _) = sources.resolve(&tag).await.map_err(LayersCommandError::Source)?;
    // Nothing is archived, so nothing needs GC roots.
    let nix_policy = crate::nix::NixPolicy { gc_roots: None, ..policy.nix.clone() };
    let nix = Nix::new(nix_policy, metrics).map_err(LayersCommandError::Expressions)?;
    let plan = Planner::new(nix, popularity, policy.layers).plan(&revision, &spec).await?;
    Ok(Plan {
        layers: plan
            .layers
            .into_iter()
            .map(|Layer { contents, size, popularity, merge_rating }| PlannedLayer {
                store_paths: contents,
                size,
                popularity,
                merge_rating: merge_rating.to_string(),
            })
            .collect(),
        symlink_forest: plan.forest,
    })
}

/// The plan as a table for people.
pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    for (i, l) in plan.layers.iter().enumerate() {
        out.push_str(&format!(
            "layer {:>2}  size {:>12}  popularity {:>8}  merge rating {:>16}\n",
            i + 1,
            l.size,
            l.popularity,
            l.merge_rating
        ));
        for p in &l.store_paths {
            out.push_str(&format!("          {p}\n"));
        }
    }
    out.push_str(&format!("layer {:>2}  symlink forest of:\n", plan.layers.len() + 1));
    for p in &plan.symlink_forest {
        out.push_str(&format!("          {p}\n"));
    }
    out
}
