//! `nixery popcount`: write popularity JSON for a package set, from a binary cache's narinfo
//! files (see [`crate::popcount`]), showing progress on stderr: one line rewritten in place
//! (`\r`) on a terminal, a line per batch otherwise (logs, CI).

use crate::binary_cache::{BinaryCache, BinaryCacheError};
use crate::cache::SourceCache;
use crate::config::PopcountSettings;
use crate::image::Tag;
use crate::metrics::Metrics;
use crate::nix::{Nix, NixPolicy, StorePath};
use crate::popcount::{PopcountError, Progress, Skipped, popcount};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How many missing outputs (and skipped attributes) the summary names.
const MISSING_NAMED: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum PopcountCommandError {
    #[error(transparent)]
    Count(#[from] PopcountError),
    #[error(transparent)]
    Source(Arc<crate::pkgsource::SourceError>),
    #[error(transparent)]
    Cache(#[from] BinaryCacheError),
    #[error("cannot write the Nix expressions to a temporary directory: {0}")]
    Expressions(std::io::Error),
    #[error("writing {}: {source}", .path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    NixVersion(#[from] crate::nix::version::VersionError),
}

pub async fn run(settings: &PopcountSettings) -> Result<(), PopcountCommandError> {
    crate::nix::version::require_supported().await?;
    let nix = Nix::new(NixPolicy::with_timeout(settings.nix_timeout), Arc::new(Metrics::default()))
        .map_err(PopcountCommandError::Expressions)?;
    let cache = BinaryCache::new(&settings.binary_cache)?;
    let terminal = std::io::stderr().is_terminal();
    let report = |p: Progress| {
        let mut line = format!(
            "popcount: {}/{} attributes, {} packages, {} outputs in the cache, {} not",
            p.attributes_done, p.attributes_total, p.packages, p.outputs_cached, p.outputs_missing
        );
        if p.attributes_skipped > 0 {
            line.push_str(&format!(", {} skipped", p.attributes_skipped));
        }
        if terminal {
            eprint!("\r{line}");
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("{line}");
        }
    };
    let sources = SourceCache::new(settings.source.clone(), Duration::ZERO, Arc::new(Metrics::default()));
    let (source, _) = sources.resolve(&Tag::latest()).await.map_err(PopcountCommandError::Source)?;
    let result = popcount(&nix, &source, &cache, settings.batch, settings.connections, report).await?;
    if terminal {
        eprintln!();
    }
    let p = result.progress;
    eprintln!(
        "popcount: {} packages, {} outputs read from {}, {} not in it{}",
        p.packages,
        p.outputs_cached,
        cache.url(),
        p.outputs_missing,
        named(&result.missing)
    );
    report_skipped(&result.skipped);
    let output = &settings.output;
    let json = serde_json::to_vec(&result.counts).expect("counts serialise");
    let write = |source| PopcountCommandError::Write { path: output.to_owned(), source };
    let staging = output.with_extension("json.partial");
    tokio::fs::write(&staging, json).await.map_err(write)?;
    tokio::fs::rename(&staging, output).await.map_err(write)?;
    eprintln!("popcount: wrote {} names to {}", result.counts.len(), output.display());
    Ok(())
}

/// The attributes skipped: how many, the first few by name, and each of those with Nix's
/// message (`Skipped::reason` is one line).
fn report_skipped(skipped: &[Skipped]) {
    if skipped.is_empty() {
        return;
    }
    let shown: Vec<&str> = skipped.iter().take(MISSING_NAMED).map(|s| s.attr.as_str()).collect();
    let more = skipped.len().saturating_sub(MISSING_NAMED);
    let more = if more > 0 { format!(" and {more} more") } else { String::new() };
    eprintln!(
        "popcount: skipped {} attributes whose evaluation fails with an error tryEval cannot catch: {}{more}",
        skipped.len(),
        shown.join(", ")
    );
    for s in skipped.iter().take(MISSING_NAMED) {
        eprintln!("popcount:   {}: {}", s.attr, s.reason);
    }
}

/// `: a, b, c` (the first few names in order), or nothing.
fn named(missing: &[StorePath]) -> String {
    if missing.is_empty() {
        return String::new();
    }
    let mut names: Vec<&str> = missing.iter().map(StorePath::name).collect();
    names.sort_unstable();
    names.truncate(MISSING_NAMED);
    let more = missing.len().saturating_sub(MISSING_NAMED);
    let more = if more > 0 { format!(" and {more} more") } else { String::new() };
    format!(": {}{more}", names.join(", "))
}
