//! Layer archives: a deterministic tar streamed through gzip, hashed on the way.
//!
//! One pass over the files produces everything a manifest needs: the tar stream is hashed
//! before compression (the `diff_id` in the image config) and after (the blob `digest`), and
//! the compressed bytes are counted. Nothing is held in memory beyond fixed-size buffers, so
//! a 10 GB layer costs what a 10 kB one does.
//!
//! Determinism is what lets two servers, or one server after a restart, agree on digests:
//! entries are sorted byte-wise, directories are included, owners are 0:0 with no user or
//! group names, every mtime is 1 (as in the Nix store), modes and symlinks are kept, hard links
//! are written as plain files (so store optimisation cannot change a layer), and gzip's header
//! carries no timestamp or file name.

mod forest;
mod stream;
mod tar_writer;

pub use forest::Forest;
pub use stream::ChannelWriter;

use crate::digest::{Digest, HashingWriter};
use flate2::{Compression, GzBuilder};
use std::io::{self, Write};
use std::path::Path;
use tar_writer::TarWriter;

/// gzip level: 6 is zlib's default and the speed/size balance most registries use.
const GZIP_LEVEL: u32 = 6;

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
    StorePaths(Vec<String>),
    /// The symlink forest of these top-level store paths (first wins on conflicts).
    Forest(Vec<String>),
}

/// Writes the gzipped tar of `contents` into `out` and returns `out` with the blob's identity.
pub fn write_layer<W: Write>(contents: &LayerContents, out: W) -> io::Result<(W, LayerBlob)> {
    let compressed = HashingWriter::new(out);
    let gzip = GzBuilder::new().write(compressed, Compression::new(GZIP_LEVEL));
    let mut tar = TarWriter::new(HashingWriter::new(gzip));
    match contents {
        LayerContents::StorePaths(paths) => {
            tar.dir(Path::new("nix"), 0o755)?;
            tar.dir(Path::new("nix/store"), 0o755)?;
            for p in paths {
                tar.tree(Path::new(p))?;
            }
        }
        LayerContents::Forest(packages) => Forest::link(packages)?.write(&mut tar)?,
    }
    let (gzip, diff_id, _) = tar.finish()?.finish();
    let (out, digest, size) = gzip.finish()?.finish();
    Ok((out, LayerBlob { digest, diff_id, size }))
}

#[cfg(test)]
mod tests;
