//! Software bills of materials: an SPDX 2.3 JSON document (`application/spdx+json`) for
//! every image manifest, and for an index one that holds its platforms'.
//!
//! What a manifest's SBOM says (from its [`Inventory`], so from the build itself):
//! - a package `SPDXRef-Image` for the image (`primaryPackagePurpose: CONTAINER`, the
//!   manifest digest as version and checksum), which the document DESCRIBES;
//! - one package per store path of the image (`SPDXRef-Nix-<hash>-<name>`): name and version
//!   from the store path's name as Nix splits it (`builtins.parseDrvName`: the version starts
//!   at the first `-` followed by a digit; an output's `-dev` suffix is dropped when the
//!   evaluation knows the output), the store path as `packageFileName`, the SHA-256 of its
//!   NAR serialisation as its checksum, `meta.license` as `licenseDeclared` (the licenses'
//!   SPDX ids joined with `AND` when every one has an id, else `NOASSERTION`: nixpkgs'
//!   `unfree` and bare strings have none, and an expression with one unknown part asserts
//!   nothing), `meta.homepage` and `meta.description`;
//! - the requested packages marked as such (a comment with the name the image used and the
//!   attribute it resolved to) and the image DESCRIBES each, CONTAINS every store path, and
//!   each store path DEPENDS_ON what the runtime graph says it references.
//! - creation info: the tool (`nixery-<version>`), this registry's name when
//!   `NIXERY_REGISTRY_NAME` sets one, the package set (no credentials, no local path) and its
//!   resolved revision.
//!
//! The bytes depend only on the image: `created` is the revision's commit time where the
//! fetcher knows it (a git fetch does; a GitHub tarball and a local path do not) and
//! otherwise the epoch, and `documentNamespace` is made from the manifest digest, so every
//! replica and every restart writes the same document for the same manifest.
//!
//! An index's SBOM ([`for_index`]) has a package `SPDXRef-Index` that CONTAINS each
//! platform's image (`SPDXRef-Image-<arch>`), each as its own SBOM says; store paths the
//! platforms share appear once.

mod inventory;
pub mod spdx;

pub use inventory::{Inventory, License, PathFacts, PathMeta, RequestedPackage, SourceInfo};

use crate::digest::Digest;
use crate::image::Arch;
use crate::nix::StorePath;
use spdx::{Checksum, CreationInfo, Document, NOASSERTION, Package, Relationship, idstring};
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

/// The SBOM's media type (IANA's, what OCI artifacts and ORAS use).
pub const MEDIA_TYPE: &str = "application/spdx+json";

/// Who writes the SBOMs: this registry's name, if it has one (`NIXERY_REGISTRY_NAME`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Author {
    pub registry: Option<String>,
}

impl Author {
    fn creators(&self) -> Vec<String> {
        let mut creators = vec![format!("Tool: nixery-{}", env!("CARGO_PKG_VERSION"))];
        creators.extend(self.registry.as_ref().map(|r| format!("Organization: {r}")));
        creators
    }

    /// A URI unique to the document of `digest`.
    fn namespace(&self, digest: &Digest) -> String {
        let host = self.registry.as_deref().map_or("nixery.invalid".to_owned(), idstring_host);
        format!("https://{host}/spdx/sha256-{}", digest.hex())
    }
}

/// A registry name as a URI host: letters, digits, `.`, `-` and `:` (a port) are kept.
fn idstring_host(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || ".-:".contains(c) { c } else { '-' }).collect()
}

/// The SBOM of the image manifest `digest`, made of `inventory`.
pub fn for_manifest(digest: &Digest, inventory: &Inventory, author: &Author) -> Document {
    let image = image_package("SPDXRef-Image", &inventory.name, digest, Some(inventory.arch));
    let mut packages = vec![image];
    let mut relationships = vec![Relationship::new("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Image")];
    for (path, facts) in &inventory.paths {
        let requested = inventory.requested_as(path);
        packages.push(path_package(path, facts, requested));
        let id = path_id(path);
        if requested.is_some() {
            relationships.push(Relationship::new("SPDXRef-Image", "DESCRIBES", &id));
        }
        relationships.push(Relationship::new("SPDXRef-Image", "CONTAINS", &id));
        for reference in &facts.references {
            relationships.push(Relationship::new(&id, "DEPENDS_ON", &path_id(reference)));
        }
    }
    Document {
        spdx_version: "SPDX-2.3".to_owned(),
        data_license: "CC0-1.0".to_owned(),
        spdx_id: "SPDXRef-DOCUMENT".to_owned(),
        name: format!("{} ({}) {digest}", inventory.name, platform(inventory.arch)),
        document_namespace: author.namespace(digest),
        creation_info: CreationInfo {
            created: created(inventory.source.committed),
            creators: author.creators(),
            comment: Some(provenance(&inventory.source, author)),
        },
        packages,
        relationships,
    }
}

/// The SBOM of the index `digest` named `name`, from each platform's manifest digest and
/// SBOM.
pub fn for_index(digest: &Digest, name: &str, platforms: &[(Arch, Digest, Document)], author: &Author) -> Document {
    let mut packages = vec![image_package("SPDXRef-Index", name, digest, None)];
    let mut seen = BTreeSet::from(["SPDXRef-Index".to_owned()]);
    let mut relationships = BTreeSet::new();
    for (arch, _, sbom) in platforms {
        let image_id = format!("SPDXRef-Image-{}", arch.oci_name());
        let rename = |id: &str| if id == "SPDXRef-Image" { image_id.clone() } else { id.to_owned() };
        relationships.insert(Relationship::new("SPDXRef-Index", "CONTAINS", &image_id));
        for package in &sbom.packages {
            let package = Package { spdx_id: rename(&package.spdx_id), ..package.clone() };
            if seen.insert(package.spdx_id.clone()) {
                packages.push(package);
            }
        }
        for r in sbom.relationships.iter().filter(|r| r.spdx_element_id != "SPDXRef-DOCUMENT") {
            relationships.insert(Relationship::new(
                &rename(&r.spdx_element_id),
                &r.relationship_type,
                &rename(&r.related_spdx_element),
            ));
        }
    }
    let mut relationships: Vec<_> = relationships.into_iter().collect();
    relationships.insert(0, Relationship::new("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Index"));
    let first = platforms.first().map(|(_, _, sbom)| sbom.creation_info.clone());
    let creation_info =
        first.unwrap_or_else(|| CreationInfo { created: created(None), creators: author.creators(), comment: None });
    let arches: Vec<&str> = platforms.iter().map(|(arch, _, _)| platform(*arch)).collect();
    Document {
        spdx_version: "SPDX-2.3".to_owned(),
        data_license: "CC0-1.0".to_owned(),
        spdx_id: "SPDXRef-DOCUMENT".to_owned(),
        name: format!("{name} ({}) {digest}", arches.join(", ")),
        document_namespace: author.namespace(digest),
        creation_info,
        packages,
        relationships,
    }
}

/// The JSON of `sbom`.
pub fn render(sbom: &Document) -> Vec<u8> {
    serde_json::to_vec(sbom).expect("an SBOM serialises")
}

fn platform(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "linux/amd64",
        Arch::Arm64 => "linux/arm64",
    }
}

/// The package of an image (or index) `digest`.
fn image_package(id: &str, name: &str, digest: &Digest, arch: Option<Arch>) -> Package {
    let what = match arch {
        Some(arch) => {
            format!("The container image {name} for {} built by this registry from Nix store paths.", platform(arch))
        }
        None => format!("The image index {name}: one image per platform."),
    };
    Package {
        spdx_id: id.to_owned(),
        name: name.to_owned(),
        version_info: Some(digest.to_string()),
        package_file_name: None,
        download_location: NOASSERTION.to_owned(),
        files_analyzed: false,
        checksums: vec![Checksum { algorithm: "SHA256".to_owned(), checksum_value: digest.hex() }],
        homepage: None,
        license_concluded: NOASSERTION.to_owned(),
        license_declared: NOASSERTION.to_owned(),
        copyright_text: NOASSERTION.to_owned(),
        summary: None,
        comment: Some(what),
        primary_package_purpose: Some("CONTAINER".to_owned()),
    }
}

/// The SPDX id of a store path's package.
fn path_id(path: &StorePath) -> String {
    format!("SPDXRef-Nix-{}-{}", path.hash_part(), idstring(path.name()))
}

fn path_package(path: &StorePath, facts: &PathFacts, requested: Option<&RequestedPackage>) -> Package {
    let meta = facts.meta.as_ref();
    let (name, version) = name_and_version(path.name(), meta.and_then(|m| m.output.as_deref()));
    let checksums = facts
        .nar_hash
        .iter()
        .map(|hex| Checksum { algorithm: "SHA256".to_owned(), checksum_value: hex.clone() })
        .collect();
    let output = meta.and_then(|m| m.output.as_deref()).unwrap_or("out");
    let comment = requested.map(|r| {
        format!(
            "Requested package: the image names it '{}', the package set's attribute {} (output {output}).",
            r.name, r.attr
        )
    });
    let purpose = requested.map(|_| "APPLICATION".to_owned());
    Package {
        spdx_id: path_id(path),
        name,
        version_info: version,
        package_file_name: Some(path.as_str().to_owned()),
        download_location: NOASSERTION.to_owned(),
        files_analyzed: false,
        checksums,
        homepage: meta.and_then(|m| m.homepage.as_deref()).filter(|h| is_url(h)).map(str::to_owned),
        license_concluded: NOASSERTION.to_owned(),
        license_declared: meta.map_or_else(|| NOASSERTION.to_owned(), |m| license_expression(&m.licenses)),
        copyright_text: NOASSERTION.to_owned(),
        summary: meta.and_then(|m| m.description.clone()).filter(|d| !d.trim().is_empty()),
        comment,
        primary_package_purpose: purpose,
    }
}

/// `meta.license` as an SPDX license expression: the ids joined with AND when every entry
/// has one, else NOASSERTION.
pub fn license_expression(licenses: &[License]) -> String {
    let ids: Option<Vec<&str>> =
        licenses.iter().map(|l| l.spdx_id.as_deref().filter(|id| valid_license_id(id))).collect();
    match ids {
        Some(mut ids) if !ids.is_empty() => {
            ids.dedup();
            ids.join(" AND ")
        }
        _ => NOASSERTION.to_owned(),
    }
}

/// An SPDX license id: letters, digits, `.`, `-`, and a trailing `+` ("or later"). Not an
/// exception: nixpkgs lists `llvm-exception` beside `asl20` (which SPDX writes `Apache-2.0
/// WITH LLVM-exception`, not AND) and has the deprecated `GPL-2.0-with-classpath-exception`,
/// which SPDX validators refuse; such a list asserts nothing rather than something wrong.
fn valid_license_id(id: &str) -> bool {
    let body = id.strip_suffix('+').unwrap_or(id);
    !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && !body.to_ascii_lowercase().contains("exception")
}

fn is_url(text: &str) -> bool {
    (text.starts_with("https://") || text.starts_with("http://") || text.starts_with("ftp://"))
        && !text.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'"')
}

/// A store path name split as `builtins.parseDrvName` splits it (the version starts at the
/// first `-` followed by a digit), without the output's suffix (`curl-8.0-dev`, output
/// `dev`, is curl 8.0).
fn name_and_version(name: &str, output: Option<&str>) -> (String, Option<String>) {
    let name = match output.filter(|o| *o != "out") {
        Some(output) => name.strip_suffix(&format!("-{output}")).unwrap_or(name),
        None => name,
    };
    let split = name.char_indices().find(|&(i, c)| c == '-' && name[i + 1..].starts_with(|c: char| c.is_ascii_digit()));
    match split {
        Some((i, _)) => (name[..i].to_owned(), Some(name[i + 1..].to_owned())),
        None => (name.to_owned(), None),
    }
}

/// `created`: the commit time if known, else the epoch.
fn created(committed: Option<i64>) -> String {
    let at = committed
        .and_then(|s| u64::try_from(s).ok())
        .map_or(SystemTime::UNIX_EPOCH, |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The creation comment: the registry, the package set and its revision.
fn provenance(source: &SourceInfo, author: &Author) -> String {
    let by = author
        .registry
        .as_deref()
        .map_or_else(|| "a nixery registry".to_owned(), |r| format!("the nixery registry {r}"));
    let revision = match (&source.revision, source.committed) {
        (Some(rev), Some(_)) => format!(" at revision {rev} (created is its commit time)"),
        (Some(rev), None) => format!(" at revision {rev}"),
        (None, _) => String::new(),
    };
    format!("Built by {by} from {}{revision}.", source.description)
}

#[cfg(test)]
mod tests;
