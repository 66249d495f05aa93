//! The sweep: deleting (or, in a dry run, naming) what the mark phase did not keep, in
//! batches, and counting it.

use super::{Candidate, Report};
use crate::storage::{ObjectInfo, Prefix, Storage, StorageError, Upload};

/// Keys per delete call (the backend splits further: S3 takes 1,000 per request, GCS 100).
pub const BATCH: usize = 1000;

/// Deletes and counts.
pub struct Sweep<'a> {
    storage: &'a Storage,
    dry_run: bool,
    report: Report,
    on_candidate: &'a mut (dyn FnMut(Candidate<'_>) + Send),
}

impl<'a> Sweep<'a> {
    pub fn new(storage: &'a Storage, dry_run: bool, on_candidate: &'a mut (dyn FnMut(Candidate<'_>) + Send)) -> Self {
        Sweep { storage, dry_run, report: Report { dry_run, ..Report::default() }, on_candidate }
    }

    pub fn report(&mut self) -> &mut Report {
        &mut self.report
    }

    pub fn finish(self) -> Report {
        self.report
    }

    /// Deletes `objects` (all under `prefix`), or only names them in a dry run.
    pub async fn delete(&mut self, prefix: Prefix, objects: &[ObjectInfo]) -> Result<(), StorageError> {
        for batch in objects.chunks(BATCH) {
            for object in batch {
                (self.on_candidate)(Candidate::Object(object));
                let tally = self.report.deleted.entry(prefix.dir()).or_default();
                tally.objects += 1;
                tally.bytes += object.size;
            }
            if !self.dry_run {
                let keys: Vec<_> = batch.iter().map(|o| o.key.clone()).collect();
                self.storage.delete(&keys).await?;
            }
        }
        Ok(())
    }
}

impl Sweep<'_> {
    /// Aborts unfinished uploads, or only names them in a dry run.
    pub async fn abort(&mut self, uploads: &[Upload]) -> Result<(), StorageError> {
        for upload in uploads {
            (self.on_candidate)(Candidate::Upload(upload));
            self.report.uploads_aborted += 1;
            if !self.dry_run {
                self.storage.abort_upload(upload).await?;
            }
        }
        Ok(())
    }
}
