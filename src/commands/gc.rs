//! `nixery gc [--dry-run]`: one garbage collection of the server's storage ([`crate::gc`]),
//! with the server's storage settings, `NIXERY_RETENTION` and `NIXERY_GC_GRACE`, while
//! servers keep serving from it. What it deletes (or, with `--dry-run`, would delete) is
//! listed on stdout, one object per line (key and size in bytes), and the totals on stderr.

use crate::config::StorageConfig;
use crate::gc::{Candidate, Collector, GcError, GcPolicy, Report};
use std::io::Write;
use std::sync::Arc;

/// Why a collection could not run.
#[derive(Debug, thiserror::Error)]
pub enum GcCommandError {
    #[error(transparent)]
    Storage(#[from] crate::commands::serve::ServeError),
    #[error(transparent)]
    Collect(#[from] GcError),
}

pub async fn run(storage: &StorageConfig, policy: GcPolicy, dry_run: bool) -> Result<Report, GcCommandError> {
    let storage = Arc::new(crate::commands::serve::open_storage(storage).await?);
    let collector = Collector::new(storage, policy);
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let mut print = |c: Candidate<'_>| {
        let _ = writeln!(out, "{c}");
    };
    let report = collector.run(dry_run, &mut print).await?;
    let _ = out.flush();
    eprintln!("nixery gc: {report}");
    Ok(report)
}
