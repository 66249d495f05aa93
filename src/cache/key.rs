//! The key of a cached manifest: everything that decides its bytes, typed.
//!
//! Two requests with equal keys get byte-identical manifests, so a key can be served from a
//! cache forever. That holds only if the key has every input of the build: the pinned
//! source revision (a commit, never a branch), the architecture and packages
//! ([`ImageSpec`]), the manifest format, and the [`Recipe`]: every configured setting that
//! changes layers (grouping, budget, the archive format) or what a package is (nixpkgs'
//! configuration, NIXERY_NIXPKGS_CONFIG, which decides what is refused and how packages
//! are built; the package policy, NIXERY_PACKAGES_ALLOW/_DENY, which decides what is
//! refused too, part of keys only when it has rules). Popularity data also changes
//! grouping but is loaded once at start-up from a URL whose contents can change; operators
//! who change it start with a fresh cache (README).
//!
//! The same struct is the in-memory map's key (hashed as is, cheap to build on the hot
//! path: the revision is shared behind an [`Arc`]) and, for a commit, the storage key:
//! `manifests/<sha256 of the key's JSON>`, where the JSON carries [`ManifestKey::VERSION`].

use crate::compression::Compression;
use crate::digest::Digest;
use crate::image::{ImageSpec, Platforms};
use crate::layers::{Grouping, LayerPolicy};
use crate::manifest::ManifestFormat;
use crate::nix::NixpkgsConfig;
use crate::package_policy::PackagePolicy;
use crate::pkgsource::SourceRevision;
use crate::storage::ObjectKey;
use serde_json::{Value, json};
use std::sync::Arc;

/// Everything configured that changes an image's layers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Recipe {
    pub layers: LayerPolicy,
    /// The layer archive format (tar layout and compression; [`super::layers::FORMAT_VERSION`]).
    pub archive: &'static str,
    /// The layers' compression (NIXERY_LAYER_COMPRESSION).
    pub compression: Compression,
    /// The digest of nixpkgs' configuration's identity ([`NixpkgsConfig::identity`]).
    pub nixpkgs_config: Digest,
    /// The digest of the package policy's rules, if there are any
    /// ([`PackagePolicy::identity`]): a manifest built under other rules is not served
    /// under these (a new deny rule holds for images built before it, too).
    pub package_policy: Option<Digest>,
}

impl Recipe {
    pub fn new(layers: LayerPolicy, compression: Compression, nixpkgs_config: &NixpkgsConfig) -> Self {
        let nixpkgs_config = Digest::of(nixpkgs_config.identity().to_string().as_bytes());
        Recipe { layers, archive: super::layers::FORMAT_VERSION, compression, nixpkgs_config, package_policy: None }
    }

    /// This recipe under `policy` (an open policy leaves keys as they were without one).
    pub fn with_package_policy(self, policy: &PackagePolicy) -> Self {
        let package_policy = (!policy.is_open()).then(|| Digest::of(policy.identity().as_bytes()));
        Recipe { package_policy, ..self }
    }
}

/// Which document a key names: one platform's manifest, or the index of several
/// platforms' manifests (whose spec's architecture is then the default platform's, so the
/// key has one spelling).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DocumentKind {
    Manifest,
    Index(Platforms),
}

/// What a cached manifest (or index) was built from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ManifestKey {
    pub source: Arc<SourceRevision>,
    pub image: ImageSpec,
    /// The manifest format; an index is in this format's index type.
    pub format: ManifestFormat,
    pub recipe: Recipe,
    pub document: DocumentKind,
}

impl ManifestKey {
    /// Version 5: the image's user (`nonroot`) is part of the spec, images have a user
    /// database and a default command from `meta.mainProgram`, and a key names the document
    /// (a manifest, or an index of platforms). Version 4: nixpkgs' configuration and the
    /// layers' compression are part of the recipe, and packages are exact
    /// outputs (version 3 took `meta.outputsToInstall`); version 3 made the source a resolved
    /// commit with its remote and added the recipe (version 2 held only source,
    /// architecture, packages and format).
    pub const VERSION: u32 = 5;

    /// The media type the document is served with.
    pub fn media_type(&self) -> &'static str {
        match self.document {
            DocumentKind::Manifest => self.format.media_type(),
            DocumentKind::Index(_) => self.format.index_media_type(),
        }
    }

    /// Where storage keeps this manifest; `None` for a revision that is not a commit (a path's
    /// reading means nothing to another process).
    pub fn storage_key(&self) -> Option<ObjectKey> {
        self.source.pinned_identity()?;
        Some(ObjectKey::manifest_cache(&Digest::of(self.identity().to_string().as_bytes())))
    }

    /// Everything that decides the document's bytes, as stable data: what
    /// [`ManifestKey::storage_key`] hashes, and what a recipe keeps so the document can be
    /// made again ([`super::recipes`]). The source is `null` for a path's reading, which means
    /// nothing to another process.
    pub fn identity(&self) -> Value {
        let grouping = match self.recipe.layers.grouping {
            Grouping::Banded => "banded",
            Grouping::Stable => "stable",
            Grouping::Nixery => "nixery-layers.go",
            Grouping::SizeFirst => "sizefirst",
        };
        let mut identity = json!({
            "version": Self::VERSION,
            "source": self.source.pinned_identity(),
            "arch": self.image.arch.oci_name(),
            "packages": self.image.packages,
            "user": self.image.user.key_name(),
            "format": self.format.media_type(),
            "document": match &self.document {
                DocumentKind::Manifest => json!("manifest"),
                DocumentKind::Index(platforms) => json!({ "index": platforms.to_string() }),
            },
            "layers": { "grouping": grouping, "budget": self.recipe.layers.budget },
            "archive": self.recipe.archive,
            "compression": self.recipe.compression.id(),
            "nixpkgs_config": self.recipe.nixpkgs_config,
        });
        if let Some(policy) = &self.recipe.package_policy {
            identity["package_policy"] = json!(policy);
        }
        identity
    }

    /// What one build makes, for the whole fleet: the identity without the format and the
    /// document, since a build renders the image in every format and an index is only a
    /// list of each platform's build. The key of its build lease ([`crate::lease`]); `None`
    /// for a path's reading, which each replica builds itself.
    pub fn build_identity(&self) -> Option<Digest> {
        self.source.pinned_identity()?;
        let Value::Object(mut identity) = self.identity() else { unreachable!("an object") };
        identity.remove("format");
        identity.remove("document");
        identity.insert("build".to_owned(), json!(self.image.arch.oci_name()));
        Some(Digest::of(Value::Object(identity).to_string().as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ImageName, ImageSpec};
    use crate::pkgsource::{CommitHash, RemoteUrl};
    use serde_json::Value;

    fn key(commit: &str, name: &str, format: ManifestFormat, budget: usize) -> ManifestKey {
        let source =
            SourceRevision::Git { url: RemoteUrl::new("https://x"), commit: CommitHash::parse(commit).unwrap() };
        ManifestKey {
            source: Arc::new(source),
            image: ImageSpec::from_name(&ImageName::parse(name).unwrap()),
            format,
            recipe: Recipe::new(
                LayerPolicy { grouping: Grouping::Stable, budget },
                Compression::Gzip,
                &NixpkgsConfig::default(),
            ),
            document: DocumentKind::Manifest,
        }
    }

    #[test]
    fn every_input_changes_the_storage_key() {
        let a = "a".repeat(40);
        let base = key(&a, "shell/hello", ManifestFormat::Docker, 94);
        let stored = base.storage_key().unwrap();
        assert!(stored.as_str().starts_with("manifests/") && !stored.is_content_addressed());
        assert_eq!(key(&a, "hello/shell", ManifestFormat::Docker, 94).storage_key(), Some(stored.clone()));
        for other in [
            key(&"b".repeat(40), "shell/hello", ManifestFormat::Docker, 94),
            key(&a, "shell/hello/git", ManifestFormat::Docker, 94),
            key(&a, "arm64/shell/hello", ManifestFormat::Docker, 94),
            key(&a, "nonroot/shell/hello", ManifestFormat::Docker, 94),
            key(&a, "shell/hello", ManifestFormat::Oci, 94),
            key(&a, "shell/hello", ManifestFormat::Docker, 10),
        ] {
            assert_ne!(other.storage_key().unwrap(), stored, "{other:?}");
            assert_ne!(other, base);
        }
        let mut seen = vec![stored.clone()];
        for grouping in [Grouping::Banded, Grouping::Nixery, Grouping::SizeFirst] {
            let mut other = base.clone();
            other.recipe.layers.grouping = grouping;
            let key = other.storage_key().unwrap();
            assert!(!seen.contains(&key), "{grouping:?} shares a key");
            seen.push(key);
        }
        let Value::Object(unfree) = json!({ "allowUnfree": true }) else { unreachable!() };
        let mut configured = base.clone();
        configured.recipe = Recipe::new(base.recipe.layers, Compression::Gzip, &NixpkgsConfig::Attrs(unfree));
        assert_ne!(configured.storage_key().unwrap(), stored);
        assert_ne!(configured, base);
        let mut zstd = base.clone();
        zstd.recipe.compression = Compression::Zstd;
        assert_ne!(zstd.storage_key().unwrap(), stored);
        // The package policy: no rules leave the key as it was; rules change it.
        let rules = |deny: &str| crate::package_policy::PackagePolicy {
            allow: vec![],
            deny: deny.split(',').map(|r| crate::package_policy::Rule::parse(r).unwrap()).collect(),
        };
        let open = ManifestKey { recipe: base.recipe.clone().with_package_policy(&Default::default()), ..base.clone() };
        assert_eq!(open.storage_key().unwrap(), stored);
        let denying = ManifestKey { recipe: base.recipe.clone().with_package_policy(&rules("git")), ..base.clone() };
        let other = ManifestKey { recipe: base.recipe.clone().with_package_policy(&rules("git,curl")), ..base.clone() };
        assert_ne!(denying.storage_key().unwrap(), stored);
        assert_ne!(denying.storage_key(), other.storage_key());
        assert_ne!(denying, base);
        let index = |platforms: &str| ManifestKey {
            document: DocumentKind::Index(Platforms::parse(platforms).unwrap()),
            ..base.clone()
        };
        let both = index("linux/amd64,linux/arm64");
        assert_ne!(both.storage_key().unwrap(), stored, "an index is not the manifest");
        assert_ne!(both.storage_key(), index("linux/arm64").storage_key(), "the platforms are in the key");
        assert_eq!(both.storage_key(), index("linux/arm64,linux/amd64").storage_key());
        assert_eq!(both.media_type(), "application/vnd.docker.distribution.manifest.list.v2+json");
        let oci = ManifestKey { format: ManifestFormat::Oci, ..both.clone() };
        assert_ne!(oci.storage_key(), both.storage_key());
        assert_eq!(oci.media_type(), "application/vnd.oci.image.index.v1+json");
    }

    #[test]
    fn a_path_reading_is_kept_in_memory_only() {
        let mut k = key(&"a".repeat(40), "hello", ManifestFormat::Docker, 94);
        k.source = Arc::new(SourceRevision::Path { path: "/srv/pkgs".into(), generation: 1 });
        assert_eq!(k.storage_key(), None);
        assert_eq!(k.build_identity(), None);
        assert_eq!(k.identity()["source"], Value::Null);
    }

    /// The storage key hashes exactly the JSON this version always hashed: manifests stored
    /// before recipes existed are still found.
    #[test]
    fn the_storage_key_is_the_hash_of_the_identity() {
        let k = key(&"a".repeat(40), "shell/hello", ManifestFormat::Docker, 94);
        let text = k.identity().to_string();
        let start = format!(
            r#"{{"arch":"amd64","archive":"{}","compression":"gzip","document":"manifest""#,
            crate::cache::layers::FORMAT_VERSION
        );
        assert!(text.starts_with(&start), "{text}");
        assert_eq!(k.storage_key(), Some(ObjectKey::manifest_cache(&Digest::of(text.as_bytes()))));
    }

    #[test]
    fn one_build_makes_every_format_and_index_of_a_platform() {
        let a = "a".repeat(40);
        let docker = key(&a, "shell/hello", ManifestFormat::Docker, 94);
        let oci = key(&a, "shell/hello", ManifestFormat::Oci, 94);
        let index =
            ManifestKey { document: DocumentKind::Index(Platforms::parse("linux/amd64").unwrap()), ..docker.clone() };
        assert_eq!(docker.build_identity(), oci.build_identity());
        assert_eq!(docker.build_identity(), index.build_identity());
        for other in [
            key(&"b".repeat(40), "shell/hello", ManifestFormat::Docker, 94),
            key(&a, "arm64/shell/hello", ManifestFormat::Docker, 94),
            key(&a, "shell/hello", ManifestFormat::Docker, 10),
        ] {
            assert_ne!(other.build_identity(), docker.build_identity(), "{other:?}");
        }
    }
}
