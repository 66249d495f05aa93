//! Computing popularity data for a package set, the way Nixery's popcount does: for every
//! top-level derivation, count how many derivations reference each store path name.
//!
//! Nixery asks the binary cache for each output's runtime references. This works offline:
//! a derivation whose outputs are in the local store contributes their runtime references
//! (`nix path-info`); one that is not built contributes its input derivations' outputs from
//! its `.drv` file (build-time references, a superset). Each referenced name counts once per
//! derivation, and a derivation never counts itself.
//!
//! The set is walked in batches of attribute names, one small Nix evaluation each, so the
//! whole set is never evaluated into one huge string and progress can be shown.

use crate::nix::derivation::{input_derivations, output_name};
use crate::nix::{Nix, NixError, StorePath};
use crate::pkgsource::SourceRevision;
use std::collections::{BTreeMap, BTreeSet};

/// Why popularity could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum PopcountError {
    #[error(transparent)]
    Nix(#[from] NixError),
    #[error("reading derivation {path}: {source}")]
    ReadDrv { path: StorePath, source: std::io::Error },
    #[error("derivation {path}: {source}")]
    ParseDrv { path: StorePath, source: crate::nix::derivation::DrvParseError },
}

/// How far the count has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub attributes_done: usize,
    pub attributes_total: usize,
    pub derivations: usize,
}

/// Reference counts by store path name (Nixery's popularity format).
pub async fn popcount(
    nix: &Nix,
    source: &SourceRevision,
    batch: usize,
    mut progress: impl FnMut(Progress),
) -> Result<BTreeMap<String, u64>, PopcountError> {
    let names = nix.attribute_names(source).await?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut state = Progress { attributes_done: 0, attributes_total: names.len(), derivations: 0 };
    for chunk in names.chunks(batch.max(1)) {
        let drvs = nix.derivations(source, chunk).await?;
        let outputs: BTreeSet<StorePath> = drvs.iter().flat_map(|d| d.outputs.iter().cloned()).collect();
        let runtime = if outputs.is_empty() { BTreeMap::new() } else { nix.local_references(&outputs).await? };
        for drv in &drvs {
            let own: BTreeSet<&StorePath> = drv.outputs.iter().collect();
            let referenced: BTreeSet<String> = if drv.outputs.iter().all(|o| runtime.contains_key(o)) {
                drv.outputs
                    .iter()
                    .flat_map(|o| &runtime[o])
                    .filter(|r| !own.contains(r))
                    .map(|r| r.name().to_owned())
                    .collect()
            } else {
                build_references(&drv.drv_path).await?
            };
            for name in referenced {
                *counts.entry(name).or_default() += 1;
            }
        }
        state.attributes_done += chunk.len();
        state.derivations += drvs.len();
        progress(state);
    }
    Ok(counts)
}

/// The output names of a derivation's input derivations.
async fn build_references(drv_path: &StorePath) -> Result<BTreeSet<String>, PopcountError> {
    let text = tokio::fs::read_to_string(drv_path)
        .await
        .map_err(|source| PopcountError::ReadDrv { path: drv_path.clone(), source })?;
    let inputs =
        input_derivations(&text).map_err(|source| PopcountError::ParseDrv { path: drv_path.clone(), source })?;
    Ok(inputs.iter().flat_map(|(drv, outs)| outs.iter().map(move |o| output_name(drv, o))).collect())
}
