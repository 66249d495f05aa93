//! Layer archives: a deterministic tar streamed through gzip, hashed on the way.
//!
//! One pass over the files produces everything a manifest needs: the tar stream is hashed
//! before compression (the `diff_id` in the image config) and after (the blob `digest`), and
//! the compressed bytes are counted. Nothing is held in memory beyond fixed-size buffers, so
//! a 10 GB layer costs what a 10 kB one does.
//!
//! Determinism is what lets two servers, or one server after a restart, agree on digests:
//! entries are sorted byte-wise, directories are included, owners are numeric with no user
//! or group names (0:0 but for the nonroot user's home, see [`Forest`]), every mtime is 1 (as in the Nix store), modes and symlinks are kept, hard links
//! are written as plain files (so store optimisation cannot change a layer), and gzip's header
//! carries no timestamp or file name.
//!
//! Contents are [`StorePath`]s, read from the store of this machine. [`write_layer_from`]
//! reads them from below another root, as a chroot store keeps them (`nix --store <root>`
//! puts `/nix/store/…` at `<root>/nix/store/…`): the archive is the same, entries and symlink
//! targets still name `/nix/store/…`, which is also how the tests build layers of store
//! paths without writing into the real store.

mod accounts;
mod forest;
mod stream;
mod tar_writer;

pub use forest::Forest;
pub use stream::ChannelWriter;

use crate::digest::{Digest, HashingWriter};
use crate::image::ImageUser;
use crate::nix::StorePath;
use flate2::{Compression, GzBuilder};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
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
    StorePaths(Vec<StorePath>),
    /// The symlink forest of these top-level store paths (first wins on conflicts), with
    /// the user database of an image run by `user`.
    Forest { packages: Vec<StorePath>, user: ImageUser },
}

/// Writes the gzipped tar of `contents` into `out` and returns `out` with the blob's identity.
pub fn write_layer<W: Write>(contents: &LayerContents, out: W) -> io::Result<(W, LayerBlob)> {
    write_layer_from(Path::new("/"), contents, out)
}

/// [`write_layer`] with the store read from below `root` (see the module docs).
pub fn write_layer_from<W: Write>(root: &Path, contents: &LayerContents, out: W) -> io::Result<(W, LayerBlob)> {
    let compressed = HashingWriter::new(out);
    let gzip = GzBuilder::new().write(compressed, Compression::new(GZIP_LEVEL));
    let mut tar = TarWriter::new(HashingWriter::new(gzip));
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
    let (gzip, diff_id, _) = tar.finish()?.finish();
    let (out, digest, size) = gzip.finish()?.finish();
    Ok((out, LayerBlob { digest, diff_id, size }))
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
