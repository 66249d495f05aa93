//! What an SBOM is made from: the facts the build already has about an image's store paths.
//!
//! Everything here comes from the one evaluation and the one `nix path-info` every build runs
//! (nothing extra is asked of Nix): the runtime graph gives each store path's NAR hash, size
//! and references; nix/lookup.nix gives the requested packages' attribute names and the meta
//! of every derivation it can reach from them (theirs and their inputs', keyed by output
//! path: name, version, `meta.license`, `meta.homepage`), and the commit time of the
//! package set's revision where the fetcher knows it.

use crate::image::{Arch, PackageName};
use crate::nix::StorePath;
use serde::Deserialize;
use std::collections::BTreeMap;

/// One image's facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inventory {
    pub arch: Arch,
    /// The image as a name that gives it back (`shell/git`).
    pub name: String,
    pub source: SourceInfo,
    /// The requested packages, as the image names them.
    pub requested: Vec<RequestedPackage>,
    /// Every store path of the image.
    pub paths: BTreeMap<StorePath, PathFacts>,
}

/// The package set an image was built from, as it may be shown: no credentials, no server
/// path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceInfo {
    /// `nixpkgs channel nixos-24.11 of https://github.com/NixOS/nixpkgs`, `the package set
    /// repository https://***@git.example/pkgs`, `a local package set`.
    pub description: String,
    /// The resolved revision (a commit), if the source has one.
    pub revision: Option<String>,
    /// The revision's commit time (seconds since the epoch), if the fetcher told it.
    pub committed: Option<i64>,
}

/// A package the image's name asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestedPackage {
    pub name: PackageName,
    /// The attribute path it resolved to (`bashInteractive`, `curl.dev`).
    pub attr: String,
    pub outputs: Vec<StorePath>,
}

/// One store path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathFacts {
    /// The SHA-256 of its NAR serialisation, hex.
    pub nar_hash: Option<String>,
    pub nar_size: u64,
    pub references: Vec<StorePath>,
    /// What the package set says of the derivation that made it, if the evaluation reached it.
    pub meta: Option<PathMeta>,
}

/// A derivation's meta, for one of its outputs, as nix/lookup.nix reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathMeta {
    #[serde(default)]
    pub pname: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    /// The output this path is (`out`, `bin`, `dev`, ...).
    #[serde(default)]
    pub output: Option<String>,
    /// `meta.license` entries; empty when there is none.
    #[serde(default)]
    pub licenses: Vec<License>,
    #[serde(default)]
    pub homepage: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// One entry of `meta.license`: nixpkgs' `lib.licenses.*` attribute set (with an `spdxId`
/// where SPDX has the license, without for `unfree` and other non-SPDX licenses) or, in
/// older or hand-written packages, a bare string.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct License {
    #[serde(default)]
    pub spdx_id: Option<String>,
    /// The short or full name, or the string itself.
    #[serde(default)]
    pub name: Option<String>,
}

impl Inventory {
    /// The requested package a path is an output of, if any.
    pub fn requested_as(&self, path: &StorePath) -> Option<&RequestedPackage> {
        self.requested.iter().find(|r| r.outputs.contains(path))
    }
}
