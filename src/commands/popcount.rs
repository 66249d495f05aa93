//! `nixery popcount`: write popularity JSON for a package set, showing progress.

use crate::image::Tag;
use crate::metrics::Metrics;
use crate::nix::{Nix, NixPolicy};
use crate::pkgsource::PkgSource;
use crate::popcount::{PopcountError, Progress, popcount};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PopcountCommandError {
    #[error(transparent)]
    Count(#[from] PopcountError),
    #[error("cannot write the Nix expressions to a temporary directory: {0}")]
    Expressions(std::io::Error),
    #[error("writing {}: {source}", .path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    NixVersion(#[from] crate::nix::version::VersionError),
}

pub async fn run(
    source: &PkgSource,
    output: &Path,
    batch: usize,
    timeout: Duration,
) -> Result<(), PopcountCommandError> {
    crate::nix::version::require_supported().await?;
    let nix = Nix::new(NixPolicy::with_timeout(timeout), Arc::new(Metrics::default()))
        .map_err(PopcountCommandError::Expressions)?;
    let terminal = std::io::stderr().is_terminal();
    let report = |p: Progress| {
        let line =
            format!("popcount: {}/{} attributes, {} derivations", p.attributes_done, p.attributes_total, p.derivations);
        if terminal {
            eprint!("\r{line}");
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("{line}");
        }
    };
    let counts = popcount(&nix, &source.revision(&Tag::latest()), batch, report).await?;
    if terminal {
        eprintln!();
    }
    let json = serde_json::to_vec(&counts).expect("counts serialise");
    let write = |source| PopcountCommandError::Write { path: output.to_owned(), source };
    let staging = output.with_extension("json.partial");
    tokio::fs::write(&staging, json).await.map_err(write)?;
    tokio::fs::rename(&staging, output).await.map_err(write)?;
    eprintln!("popcount: wrote {} names to {}", counts.len(), output.display());
    Ok(())
}
