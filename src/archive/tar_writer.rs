//! A tar writer that only emits deterministic headers (see the module above for the rules).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tar::{Builder, EntryType, Header};

/// The mtime of every entry: 1, as Nix sets it in the store.
const MTIME: u64 = 1;

pub struct TarWriter<W: Write> {
    builder: Builder<W>,
}

impl<W: Write> TarWriter<W> {
    pub fn new(inner: W) -> Self {
        TarWriter { builder: Builder::new(inner) }
    }

    /// A header owned by root (uid and gid 0), as every store path is in an image.
    fn header(kind: EntryType, mode: u32, size: u64) -> Header {
        Self::owned_header(kind, mode, size, 0)
    }

    /// A header owned by uid and gid `owner`, numerically (no user or group names: the
    /// image's own `/etc/passwd` gives the names).
    fn owned_header(kind: EntryType, mode: u32, size: u64, owner: u32) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode & 0o7777);
        h.set_size(size);
        h.set_uid(owner.into());
        h.set_gid(owner.into());
        h.set_mtime(MTIME);
        h
    }

    /// A directory entry; `path` is relative (no leading `/`).
    pub fn dir(&mut self, path: &Path, mode: u32) -> io::Result<()> {
        self.dir_owned(path, mode, 0)
    }

    /// A directory entry owned by uid and gid `owner` (a home directory).
    pub fn dir_owned(&mut self, path: &Path, mode: u32, owner: u32) -> io::Result<()> {
        let mut h = Self::owned_header(EntryType::Directory, mode, 0, owner);
        self.builder.append_data(&mut h, path, io::empty())
    }

    /// A symlink entry.
    pub fn symlink(&mut self, path: &Path, target: &Path) -> io::Result<()> {
        let mut h = Self::header(EntryType::Symlink, 0o777, 0);
        self.builder.append_link(&mut h, path, target)
    }

    /// A regular file whose bytes are streamed from `data`.
    pub fn file(&mut self, path: &Path, mode: u32, size: u64, data: impl io::Read) -> io::Result<()> {
        let mut h = Self::header(EntryType::Regular, mode, size);
        self.builder.append_data(&mut h, path, data)
    }

    /// The file tree at `disk` and everything below it, stored as `rel` (relative, no
    /// leading `/`), children in byte order.
    pub fn tree(&mut self, disk: &Path, rel: &Path) -> io::Result<()> {
        let meta = fs::symlink_metadata(disk)?;
        let mode = meta.permissions().mode();
        let kind = meta.file_type();
        if kind.is_symlink() {
            self.symlink(rel, &fs::read_link(disk)?)
        } else if kind.is_dir() {
            self.dir(rel, mode)?;
            let mut children: Vec<_> =
                fs::read_dir(disk)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
            children.sort();
            for name in children {
                self.tree(&disk.join(&name), &rel.join(&name))?;
            }
            Ok(())
        } else if kind.is_file() {
            let file = fs::File::open(disk)?;
            // Read exactly the size recorded in the header, even if the file changes.
            let size = meta.len();
            self.file(rel, mode, size, io::Read::take(file, size))
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a file, directory or symlink", disk.display()),
            ))
        }
    }

    /// Writes the end-of-archive marker and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }
}
