//! Layer archives: a deterministic tar streamed through the configured compression, hashed on
//! the way.
//!
//! One pass over the files produces everything a manifest needs: the tar stream is hashed
//! before compression (the `diff_id` in the image config) and after (the blob `digest`), and
//! the compressed bytes are counted. Nothing is held in memory beyond a fixed number of
//! blocks, so a 10 GB layer costs what a 10 MB one does.
//!
//! # The pipeline
//!
//! ```text
//! files ─▶ tar ─▶ SHA-256 (diff_id) ─▶ encoder ─▶ SHA-256 (digest) ─▶ out
//!          └──────── the caller's thread ────┘ └ workers ┘ └── the caller's thread ──┘
//! ```
//!
//! The caller's thread (in the server a blocking task; `out` is the channel to storage)
//! reads the files, writes the tar, hashes it and hands it to the [`Encoder`]; the encoder
//! compresses on the [`Workers`] (gzip: 1 MiB blocks, any free core) or on libzstd's own
//! threads (zstd: 2 MiB jobs), and hands compressed bytes back, in order, on the same
//! thread, which hashes them and writes them out. So reading, compressing and hashing
//! overlap, and the compression of one layer uses every core. What is in memory per layer,
//! whatever its size:
//!
//! - gzip: the block being filled and at most 2 × workers blocks submitted and not yet
//!   written, each with its output (a buffer of the block's size plus a little, of which
//!   only what the member takes is touched): (2 × workers + 1) MiB of input and at most
//!   2 × workers MiB of output, 5–9 MiB with 2 workers;
//! - zstd: libzstd's job buffers, input and output of a few 2 MiB jobs per worker (20–32 MB
//!   with 2 workers, measured in benches/compression.rs);
//! - in the server, downstream of `out`: one 256 KiB chunk being filled, 4 in the channel and
//!   one being uploaded (see [`ChannelWriter`] and `builder/layer.rs`).
//!
//! # The format
//!
//! Determinism is what lets two servers, or one server after a restart, agree on digests:
//! entries are sorted byte-wise, directories are included, owners are numeric with no user
//! or group names (0:0 but for the nonroot user's home, see [`Forest`]), every mtime is 1 (as in the Nix store), modes and symlinks are kept, hard links
//! are written as plain files (so store optimisation cannot change a layer). The compressed
//! bytes depend only on the tar and the [`Compression`], never on the number of workers or on
//! timing ([`crate::compression`]):
//!
//! - gzip: a gzip member per 1 MiB of tar, without timestamp or file name, deflated by
//!   libdeflate at level 5, and blocks whose bytes are as evenly spread as noise (already
//!   compressed files: PNGs, jars, gzipped data) stored instead of deflated
//!   ([`GzipParams::LAYERS`]);
//! - zstd: one zstd frame, level 3, 2 MiB jobs, with a content checksum.
//!
//! Whatever changes these bytes changes the layer format version
//! ([`crate::cache::layers::FORMAT_VERSION`]), which is part of every layer record's key and
//! every manifest key, so records and manifests of the old bytes are not reused.
//!
//! Contents are [`StorePath`]s, read from the store of this machine.
//! [`Archiver::write_layer_from`] reads them from below another root, as a chroot store keeps
//! them (`nix --store <root>` puts `/nix/store/…` at `<root>/nix/store/…`): the archive is the
//! same, entries and symlink targets still name `/nix/store/…`, which is also how the tests
//! build layers of store paths without writing into the real store.

mod accounts;
mod forest;
mod phases;
mod stream;
mod tar_writer;

pub use forest::Forest;
pub use phases::Phases;
pub use stream::ChannelWriter;

use crate::compression::{Compression, Workers};
use crate::digest::{Digest, HashingWriter};
use crate::image::ImageUser;
use crate::nix::StorePath;
use phases::Clocked;
use std::fmt;
use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tar_writer::TarWriter;

#[cfg(doc)]
use crate::compression::{Encoder, GzipParams};

/// The identity of a finished layer archive.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerBlob {
    /// SHA-256 of the compressed bytes: the blob's name.
    pub digest: Digest,
    /// SHA-256 of the uncompressed tar: the image config's rootfs entry.
    pub diff_id: Digest,
    /// Length of the compressed bytes.
    pub size: u64,
}

/// What one layer holds.
#[derive(Clone, Debug)]
pub enum LayerContents {
    /// Whole store paths (sorted), under `nix/store/`.
    StorePaths(Vec<StorePath>),
    /// The symlink forest of these top-level store paths (first wins on conflicts), with
    /// the user database of an image run by `user`.
    Forest { packages: Vec<StorePath>, user: ImageUser },
}

/// How layer archives are compressed, in the domain's terms (the configuration maps
/// `NIXERY_LAYER_COMPRESSION` into this at start-up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArchivePolicy {
    pub compression: Compression,
    /// How many compression threads: `None` (servers) for one per core, shared by the whole
    /// process. A count is for tests and benchmarks, which show that it changes no byte.
    pub workers: Option<NonZeroUsize>,
}

/// Writes layer archives in the configured compression, on the compression workers. Cheap to
/// clone: clones share the workers.
#[derive(Clone)]
pub struct Archiver {
    compression: Compression,
    workers: Arc<Workers>,
}

impl fmt::Debug for Archiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Archiver")
            .field("compression", &self.compression)
            .field("workers", &self.workers.count())
            .finish()
    }
}

impl Archiver {
    /// An archiver for `policy`, starting its workers (or taking the process's).
    pub fn new(policy: ArchivePolicy) -> io::Result<Self> {
        let workers = match policy.workers {
            Some(count) => Workers::new(count)?,
            None => Workers::shared()?,
        };
        Ok(Archiver { compression: policy.compression, workers })
    }

    /// The compression of every archive this writes.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Writes the compressed tar of `contents` into `out` and returns `out` with the blob's
    /// identity.
    pub fn write_layer<W: Write>(&self, contents: &LayerContents, out: W) -> io::Result<(W, LayerBlob)> {
        self.write_layer_from(Path::new("/"), contents, out)
    }

    /// [`write_layer`](Self::write_layer) with the store read from below `root` (see the
    /// module docs).
    pub fn write_layer_from<W: Write>(
        &self,
        root: &Path,
        contents: &LayerContents,
        out: W,
    ) -> io::Result<(W, LayerBlob)> {
        let start = Instant::now();
        let output = HashingWriter::new(Clocked::new(out));
        let encoder = self.compression.encoder(Clocked::new(output), Arc::clone(&self.workers))?;
        let mut tar = TarWriter::new(Clocked::new(HashingWriter::new(Clocked::new(encoder))));
        match contents {
            LayerContents::StorePaths(paths) => {
                tar.dir(Path::new("nix"), 0o755)?;
                tar.dir(Path::new("nix/store"), 0o755)?;
                for p in paths {
                    tar.tree(&on_disk(root, p), relative(p))?;
                }
            }
            LayerContents::Forest { packages, user } => Forest::link(root, packages, *user)?.write(&mut tar)?,
        }
        let (tar_hash, in_tar_hash) = tar.finish()?.into_parts();
        let (encoder, diff_id, tar_bytes) = tar_hash.finish();
        let (encoder, in_encoder) = encoder.into_parts();
        let finishing = Instant::now();
        let (blob_hash, compress_cpu) = encoder.finish_timed()?;
        let in_encoder = in_encoder + finishing.elapsed();
        let (blob_hash, in_blob_hash) = blob_hash.into_parts();
        let (output, digest, size) = blob_hash.finish();
        let (out, in_output) = output.into_parts();
        let total = start.elapsed();
        let phases = Phases::from_nested(total, [in_tar_hash, in_encoder, in_blob_hash, in_output], compress_cpu);
        log_phases(&digest, tar_bytes, size, total, &phases);
        Ok((out, LayerBlob { digest, diff_id, size }))
    }
}

/// The debug line of one archive: its sizes and where its time went ([`Phases`]).
fn log_phases(digest: &Digest, tar_bytes: u64, size: u64, total: Duration, phases: &Phases) {
    let secs = |d: Duration| d.as_secs_f64();
    tracing::debug!(
        %digest,
        tar_bytes,
        size,
        seconds = secs(total),
        read_seconds = secs(phases.read),
        hash_tar_seconds = secs(phases.hash_tar),
        compress_wait_seconds = secs(phases.compress_wait),
        compress_cpu_seconds = phases.compress_cpu.map(secs),
        hash_blob_seconds = secs(phases.hash_blob),
        write_seconds = secs(phases.write),
        "archived layer"
    );
}

/// Where `path` is on disk when the store is below `root`.
fn on_disk(root: &Path, path: &StorePath) -> PathBuf {
    root.join(relative(path))
}

/// `path` without its leading `/`, as tar entries name it.
fn relative(path: &StorePath) -> &Path {
    path.as_path().strip_prefix("/").expect("store paths are absolute")
}

#[cfg(test)]
mod tests;
