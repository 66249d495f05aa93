//! The symlink forest: the last layer of every image, which makes the packages usable at
//! `/` (`/bin/git`, `/etc/ssl/certs/ca-bundle.crt`, …), like nixpkgs' `symlinkJoin`, built
//! here in Rust so it works with any package set.
//!
//! The top-level packages' trees are merged: directories become real directories, everything
//! else becomes an absolute symlink into the store. When two packages provide the same path,
//! the first package (in sorted store-path order) wins, deterministically. Each package's
//! `nix-support/` is Nix metadata and is left out. Then `/tmp` (mode 1777) is added, and
//! `/usr/bin/env` when the image has a `/bin/env` to point at (scripts' `#!/usr/bin/env`).

use super::tar_writer::TarWriter;
use crate::nix::StorePath;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const DIR_MODE: u32 = 0o755;
const TMP_MODE: u32 = 0o1777;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Dir(u32),
    Link(PathBuf),
}

/// The merged tree, keyed by path components so iteration is depth-first in byte order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Forest {
    nodes: BTreeMap<Vec<OsString>, Node>,
}

impl Forest {
    /// Merges the trees of `packages` (in the order given), read from the store below `root`
    /// (`/` but in tests); links point into `/nix/store` all the same.
    pub fn link(root: &Path, packages: &[StorePath]) -> io::Result<Forest> {
        let mut forest = Forest::default();
        for p in packages {
            let disk = super::on_disk(root, p);
            if fs::symlink_metadata(&disk)?.is_dir() {
                forest.merge(&disk, p.as_path(), &[])?;
            }
        }
        forest.nodes.insert(vec!["tmp".into()], Node::Dir(TMP_MODE));
        let env = vec![OsString::from("bin"), OsString::from("env")];
        let usr = OsString::from("usr");
        let usr_bin = vec![usr.clone(), "bin".into()];
        let usr_env = vec![usr.clone(), "bin".into(), "env".into()];
        if let Some(Node::Link(target)) = forest.nodes.get(&env).cloned() {
            let usr_ok = !matches!(forest.nodes.get(&vec![usr.clone()]), Some(Node::Link(_)))
                && !matches!(forest.nodes.get(&usr_bin), Some(Node::Link(_)));
            if usr_ok && !forest.nodes.contains_key(&usr_env) {
                forest.nodes.entry(vec![usr]).or_insert(Node::Dir(DIR_MODE));
                forest.nodes.entry(usr_bin).or_insert(Node::Dir(DIR_MODE));
                forest.nodes.insert(usr_env, Node::Link(target));
            }
        }
        Ok(forest)
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
                    self.nodes.insert(key.clone(), Node::Dir(DIR_MODE));
                    self.merge(&src, &link, &key)?;
                }
                (Some(Node::Dir(_)), true) => self.merge(&src, &link, &key)?,
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
        let key: Vec<OsString> = path.split('/').map(OsString::from).collect();
        match self.nodes.get(&key) {
            Some(Node::Link(t)) => Some(t),
            _ => None,
        }
    }

    pub(super) fn write<W: Write>(&self, tar: &mut TarWriter<W>) -> io::Result<()> {
        for (key, node) in &self.nodes {
            let path: PathBuf = key.iter().collect();
            match node {
                Node::Dir(mode) => tar.dir(&path, *mode)?,
                Node::Link(target) => tar.symlink(&path, target)?,
            }
        }
        Ok(())
    }
}
