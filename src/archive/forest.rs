//! The symlink forest: the last layer of every image, which makes the packages usable at
//! `/` (`/bin/git`, `/etc/ssl/certs/ca-bundle.crt`, …), like nixpkgs' `symlinkJoin`, built
//! here in Rust so it works with any package set.
//!
//! The top-level packages' trees are merged: directories become real directories, everything
//! else becomes an absolute symlink into the store. When two packages provide the same path,
//! the first package (in sorted store-path order) wins, deterministically. Each package's
//! `nix-support/` is Nix metadata and is left out. Then `/tmp` (mode 1777) is added, and
//! `/usr/bin/env` when the image has a `/bin/env` to point at (scripts' `#!/usr/bin/env`).
//!
//! Then what makes the image behave like a normal system: the user database
//! ([`super::accounts`], real files, replacing a package's), `/root` (mode 0700, as Debian
//! and Fedora have it: root's files are root's; root reads it whatever its mode, and a
//! nonroot user has no business there) and, for a `nonroot` image, `/home` (0755, root's)
//! and `/home/nonroot` (0755, owned 1000:1000, so `$HOME` is writable by the user the image
//! runs as; 0755 and not 0700 so that a process run with another uid, e.g. by a CI runner's
//! `--user`, can still read what the image put there). They are in this layer rather than in
//! one of their own because the forest is already particular to each image, while a separate
//! layer would add a blob per image and buy no reuse (the files depend on the user and the
//! shell, both of which vary with the packages). A package whose `etc` (or `home`) is a
//! symlink rather than a directory loses it to a real directory here: the user database has
//! to be in the image, and a symlinked `/etc` would put it in the package's store path.

use super::accounts::{NONROOT_HOME, user_database};
use super::tar_writer::TarWriter;
use crate::image::ImageUser;
use crate::nix::StorePath;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const DIR_MODE: u32 = 0o755;
const TMP_MODE: u32 = 0o1777;
const ROOT_HOME_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o644;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    /// A directory: mode, and owner (uid = gid).
    Dir(u32, u32),
    Link(PathBuf),
    /// A file the registry writes (mode 0644, root's).
    File(Vec<u8>),
}

fn key(path: &str) -> Vec<OsString> {
    path.split('/').map(OsString::from).collect()
}

/// The merged tree, keyed by path components so iteration is depth-first in byte order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Forest {
    nodes: BTreeMap<Vec<OsString>, Node>,
}

impl Forest {
    /// Merges the trees of `packages` (in the order given), read from the store below `root`
    /// (`/` but in tests); links point into `/nix/store` all the same. Adds `/tmp`,
    /// `/usr/bin/env`, and the users of an image run by `user` (see the module docs).
    pub fn link(root: &Path, packages: &[StorePath], user: ImageUser) -> io::Result<Forest> {
        let mut forest = Forest::default();
        for p in packages {
            let disk = super::on_disk(root, p);
            if fs::symlink_metadata(&disk)?.is_dir() {
                forest.merge(&disk, p.as_path(), &[])?;
            }
        }
        forest.nodes.insert(vec!["tmp".into()], Node::Dir(TMP_MODE, 0));
        let env = vec![OsString::from("bin"), OsString::from("env")];
        let usr = OsString::from("usr");
        let usr_bin = vec![usr.clone(), "bin".into()];
        let usr_env = vec![usr.clone(), "bin".into(), "env".into()];
        if let Some(Node::Link(target)) = forest.nodes.get(&env).cloned() {
            let usr_ok = !matches!(forest.nodes.get(&vec![usr.clone()]), Some(Node::Link(_)))
                && !matches!(forest.nodes.get(&usr_bin), Some(Node::Link(_)));
            if usr_ok && !forest.nodes.contains_key(&usr_env) {
                forest.nodes.entry(vec![usr]).or_insert(Node::Dir(DIR_MODE, 0));
                forest.nodes.entry(usr_bin).or_insert(Node::Dir(DIR_MODE, 0));
                forest.nodes.insert(usr_env, Node::Link(target));
            }
        }
        forest.add_users(user);
        Ok(forest)
    }

    /// The user database, `/root` and the nonroot user's home; these replace whatever a
    /// package put at their paths.
    fn add_users(&mut self, user: ImageUser) {
        let shell = if self.nodes.contains_key(&key("bin/bash")) { "/bin/bash" } else { "/bin/sh" };
        self.replace(key("etc"), Node::Dir(DIR_MODE, 0), false);
        for (path, text) in user_database(user, shell) {
            self.replace(key(path), Node::File(text.into_bytes()), true);
        }
        self.replace(key("root"), Node::Dir(ROOT_HOME_MODE, 0), true);
        if user == ImageUser::NonRoot {
            self.replace(key("home"), Node::Dir(DIR_MODE, 0), false);
            self.replace(key(NONROOT_HOME), Node::Dir(DIR_MODE, ImageUser::NONROOT_ID), true);
        }
    }

    /// Puts `node` at `key`. An existing directory is kept as it is unless `force` (its
    /// contents stay either way, unless replaced by a non-directory); anything else there,
    /// and everything below it, is replaced.
    fn replace(&mut self, key: Vec<OsString>, node: Node, force: bool) {
        match self.nodes.get(&key) {
            Some(Node::Dir(..)) if !force && matches!(node, Node::Dir(..)) => return,
            Some(Node::Dir(..)) if matches!(node, Node::Dir(..)) => {}
            Some(old) => {
                tracing::debug!(path = ?key, replaced = ?old, "symlink forest: the registry's entry wins");
                let below = |k: &Vec<OsString>| k.len() > key.len() && k.starts_with(&key);
                self.nodes.retain(|k, _| !below(k));
            }
            None => {}
        }
        self.nodes.insert(key, node);
    }

    /// Merges the directory at `dir` on disk, which is `target` in the store, at `rel`.
    fn merge(&mut self, dir: &Path, target: &Path, rel: &[OsString]) -> io::Result<()> {
        let mut names: Vec<OsString> =
            fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
        names.sort();
        for name in names {
            if rel.is_empty() && name == "nix-support" {
                continue;
            }
            let (src, link) = (dir.join(&name), target.join(&name));
            let mut key = rel.to_vec();
            key.push(name);
            let is_dir = fs::symlink_metadata(&src)?.is_dir();
            match (self.nodes.get(&key), is_dir) {
                (None, true) => {
                    self.nodes.insert(key.clone(), Node::Dir(DIR_MODE, 0));
                    self.merge(&src, &link, &key)?;
                }
                (Some(Node::Dir(..)), true) => self.merge(&src, &link, &key)?,
                (None, false) => {
                    self.nodes.insert(key, Node::Link(link));
                }
                (Some(_), _) => {
                    tracing::debug!(path = %link.display(), "symlink forest: path already provided by another package");
                }
            }
        }
        Ok(())
    }

    /// Where `path` (relative, e.g. `bin/hello`) points, if it is a link of the forest.
    pub fn target(&self, path: &str) -> Option<&Path> {
        match self.nodes.get(&key(path)) {
            Some(Node::Link(t)) => Some(t),
            _ => None,
        }
    }

    pub(super) fn write<W: Write>(&self, tar: &mut TarWriter<W>) -> io::Result<()> {
        for (key, node) in &self.nodes {
            let path: PathBuf = key.iter().collect();
            match node {
                Node::Dir(mode, owner) => tar.dir_owned(&path, *mode, *owner)?,
                Node::Link(target) => tar.symlink(&path, target)?,
                Node::File(bytes) => tar.file(&path, FILE_MODE, bytes.len() as u64, &bytes[..])?,
            }
        }
        Ok(())
    }
}
