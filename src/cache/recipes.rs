//! Recipes: how a manifest, index or blob this registry served is made again after garbage
//! collection removed it ([`crate::gc`]).
//!
//! What this registry serves is a deterministic function of what it was built from: the same
//! pinned revision, packages, platform, format and layer settings give the same layers and
//! the same digests, byte for byte. So storage can be a cache: for every digest it serves,
//! the registry keeps a small record, `recipes/sha256:<hex>`, that outlives the object, and a
//! pull by digest of a collected manifest makes it again from there and serves it under the
//! same digest. A record is one of:
//!
//! - a **document** (manifest or index): the [`ManifestKey::identity`] it was built from
//!   (pinned source, architecture, packages, user, format, document kind, layer settings);
//! - a **layer**: its contents (the store paths, or the packages of the symlink forest and
//!   who runs the image), compression and archive format, and the content key of its
//!   layer record (`builds/<key>`), which garbage collection removes with the blob;
//! - a **config**: the manifest whose image it configures (made again with it).
//!
//! ```json
//! {"version":1,"kind":"document","key":{"version":5,"source":["git","https://…","<commit>"],"arch":"amd64",…}}
//! {"version":1,"kind":"layer","layer":{"content_key":"<hex>","kind":"store-paths","paths":["/nix/store/…"],…}}
//! {"version":1,"kind":"config","manifest":"sha256:<hex>"}
//! ```
//!
//! A recipe may no longer work, and then the registry says why ([`Unmakeable`]): a local
//! path source has no revision to go back to, a server configured with another source or
//! other layer settings would make other bytes, a package set may no longer build the same
//! packages (the digest differs), store paths may be gone from the server's Nix store.

use super::key::{DocumentKind, ManifestKey, Recipe};
use super::layers::FORMAT_VERSION;
use crate::archive::LayerContents;
use crate::compression::Compression;
use crate::digest::Digest;
use crate::image::{Arch, ImageSpec, ImageUser, PackageName, Platforms};
use crate::manifest::ManifestFormat;
use crate::nix::StorePath;
use crate::pkgsource::{CommitHash, PkgSource, SourceRevision};
use crate::storage::{ObjectKey, Storage, StorageError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The record format; a reader refuses other versions.
pub const VERSION: u32 = 1;

/// How one digest is made again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RecipeRecord {
    /// A manifest or index: the identity of its key.
    Document { key: Value },
    /// A layer blob.
    Layer { layer: LayerRecipe },
    /// A config blob: part of the image of this manifest.
    Config { manifest: Digest },
}

/// What a layer holds and how it was written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecipe {
    /// The content key of its layer record (hex).
    pub content_key: String,
    /// `store-paths` or `symlink-forest`.
    pub kind: String,
    /// The store paths, or the forest's packages.
    pub paths: Vec<StorePath>,
    /// Who runs the image (the forest's user database).
    pub user: String,
    /// The compression's id.
    pub compression: String,
    /// [`FORMAT_VERSION`] when it was written.
    pub archive: String,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    #[serde(flatten)]
    record: RecipeRecord,
}

/// Why something collected cannot be made again.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Unmakeable {
    #[error("it was built from a local package set (NIXERY_PKGS_PATH), whose files may have changed since")]
    PathSource,
    #[error("it was built from another package source than the one this server is configured with")]
    OtherSource,
    #[error("the server's {0} changed since it was built")]
    Settings(&'static str),
    #[error("it was built by an earlier version of the server, which made other layers")]
    Version,
    #[error("its recipe is unreadable: {0}")]
    Unreadable(String),
    #[error("its store paths are no longer in the server's Nix store")]
    PathsGone,
    #[error("made again from its recipe it came out as {0}: the package set no longer gives the same packages")]
    Differs(Digest),
}

impl LayerRecipe {
    /// The recipe of a layer with `contents`, archived with `compression`, whose record has
    /// content key `content_key`.
    pub fn new(contents: &LayerContents, compression: Compression, content_key: &Digest) -> Self {
        let (kind, paths, user) = match contents {
            LayerContents::StorePaths(paths) => ("store-paths", paths, ImageUser::Root),
            LayerContents::Forest { packages, user } => ("symlink-forest", packages, *user),
        };
        LayerRecipe {
            content_key: content_key.hex(),
            kind: kind.to_owned(),
            paths: paths.clone(),
            user: user.key_name().to_owned(),
            compression: compression.id().to_owned(),
            archive: FORMAT_VERSION.to_owned(),
        }
    }

    /// The layer's contents, if this server (archiving with `compression`) makes the same
    /// blob from them.
    pub fn contents(&self, compression: Compression) -> Result<LayerContents, Unmakeable> {
        if self.archive != FORMAT_VERSION {
            return Err(Unmakeable::Version);
        }
        if self.compression != compression.id() {
            return Err(Unmakeable::Settings("layer compression (NIXERY_LAYER_COMPRESSION)"));
        }
        let user = match self.user.as_str() {
            "root" => ImageUser::Root,
            "nonroot" => ImageUser::NonRoot,
            other => return Err(Unmakeable::Unreadable(format!("user {other:?}"))),
        };
        match self.kind.as_str() {
            "store-paths" => Ok(LayerContents::StorePaths(self.paths.clone())),
            "symlink-forest" => Ok(LayerContents::Forest { packages: self.paths.clone(), user }),
            other => Err(Unmakeable::Unreadable(format!("layer kind {other:?}"))),
        }
    }

    /// The key of its layer record.
    pub fn record_key(&self) -> Option<ObjectKey> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&self.content_key, &mut bytes).ok()?;
        Some(ObjectKey::build(&Digest::from_bytes(bytes)))
    }
}

/// Keeps the recipe of `digest`, unless it has one already (a digest is made the same way
/// whoever made it first).
pub async fn keep(storage: &Storage, digest: &Digest, record: &RecipeRecord) -> Result<(), StorageError> {
    let key = ObjectKey::recipe(digest);
    if storage.size(&key).await?.is_some() {
        return Ok(());
    }
    let json = serde_json::to_vec(&Stored { version: VERSION, record: record.clone() }).expect("recipes serialise");
    storage.put(&key, json.into()).await
}

/// The recipe of `digest`: `None` if there is none, an error inside if it is unreadable.
pub async fn find(
    storage: &Storage,
    digest: &Digest,
) -> Result<Option<Result<RecipeRecord, Unmakeable>>, StorageError> {
    let Some(bytes) = storage.get(&ObjectKey::recipe(digest)).await? else { return Ok(None) };
    let parsed = match serde_json::from_slice::<Stored>(&bytes) {
        Ok(Stored { version: VERSION, record }) => Ok(record),
        Ok(Stored { version, .. }) => Err(Unmakeable::Unreadable(format!("version {version}"))),
        Err(e) => Err(Unmakeable::Unreadable(e.to_string())),
    };
    Ok(Some(parsed))
}

/// The key a document with `identity` would have on this server (configured with `source`
/// and layer settings `recipe`), if building it here gives the same bytes.
pub fn key_of(identity: &Value, source: &PkgSource, recipe: &Recipe) -> Result<ManifestKey, Unmakeable> {
    let unreadable = |what: &str| Unmakeable::Unreadable(what.to_owned());
    if identity["version"].as_u64() != Some(u64::from(ManifestKey::VERSION)) {
        return Err(Unmakeable::Version);
    }
    let source_identity = &identity["source"];
    if source_identity.is_null() {
        return Err(Unmakeable::PathSource);
    }
    let revision = revision_for(source, source_identity).ok_or(Unmakeable::OtherSource)?;
    let arch = match identity["arch"].as_str() {
        Some("amd64") => Arch::Amd64,
        Some("arm64") => Arch::Arm64,
        _ => return Err(unreadable("arch")),
    };
    let packages = identity["packages"].as_array().ok_or_else(|| unreadable("packages"))?;
    let packages: BTreeSet<PackageName> = packages
        .iter()
        .map(|p| p.as_str().and_then(|p| PackageName::parse(p).ok()).ok_or_else(|| unreadable("packages")))
        .collect::<Result<_, _>>()?;
    let user = match identity["user"].as_str() {
        Some("root") => ImageUser::Root,
        Some("nonroot") => ImageUser::NonRoot,
        _ => return Err(unreadable("user")),
    };
    let format = [ManifestFormat::Docker, ManifestFormat::Oci]
        .into_iter()
        .find(|f| identity["format"].as_str() == Some(f.media_type()))
        .ok_or_else(|| unreadable("format"))?;
    let document = match &identity["document"] {
        Value::String(s) if s == "manifest" => DocumentKind::Manifest,
        Value::Object(o) => {
            let platforms = o.get("index").and_then(Value::as_str).ok_or_else(|| unreadable("document"))?;
            DocumentKind::Index(Platforms::parse(platforms).map_err(|_| unreadable("platforms"))?)
        }
        _ => return Err(unreadable("document")),
    };
    let key = ManifestKey {
        source: Arc::new(revision),
        image: ImageSpec { arch, packages, user },
        format,
        recipe: recipe.clone(),
        document,
    };
    let here = key.identity();
    for (field, setting) in [
        ("layers", "layer grouping or budget (NIXERY_LAYER_GROUPING, NIXERY_LAYER_BUDGET)"),
        ("archive", "layer archive format"),
        ("compression", "layer compression (NIXERY_LAYER_COMPRESSION)"),
        ("nixpkgs_config", "nixpkgs configuration (NIXERY_NIXPKGS_CONFIG)"),
    ] {
        if here[field] != identity[field] {
            return Err(Unmakeable::Settings(setting));
        }
    }
    if here != *identity {
        return Err(unreadable("fields this version does not know"));
    }
    Ok(key)
}

/// The revision of the configured `source` whose pinned identity is `identity`: a commit of
/// the same remote. (A new kind of pinned source makes [`PkgSource::at_commit`] give its
/// revisions, or is added here.)
fn revision_for(source: &PkgSource, identity: &Value) -> Option<SourceRevision> {
    let commit = identity.as_array()?.last()?.as_str().and_then(CommitHash::parse)?;
    let revision = source.at_commit(commit)?;
    (revision.pinned_identity().as_ref() == Some(identity)).then_some(revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageName;
    use crate::layers::{Grouping, LayerPolicy};
    use crate::nix::NixpkgsConfig;
    use crate::pkgsource::RemoteUrl;
    use crate::storage::Memory;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    fn recipe(budget: usize, compression: Compression) -> Recipe {
        Recipe::new(LayerPolicy { grouping: Grouping::Stable, budget }, compression, &NixpkgsConfig::default())
    }

    fn git() -> PkgSource {
        PkgSource::Git(RemoteUrl::new("https://user:token@example.org/pkgs.git"))
    }

    fn key(source: &PkgSource, name: &str, document: DocumentKind) -> ManifestKey {
        ManifestKey {
            source: Arc::new(source.at_commit(CommitHash::parse(COMMIT).unwrap()).unwrap()),
            image: ImageSpec::from_name(&ImageName::parse(name).unwrap()),
            format: ManifestFormat::Oci,
            recipe: recipe(94, Compression::Gzip),
            document,
        }
    }

    #[test]
    fn a_document_comes_back_as_the_key_it_was_built_from() {
        let index = DocumentKind::Index(Platforms::parse("linux/amd64,linux/arm64").unwrap());
        for (name, document) in [("shell/hello", DocumentKind::Manifest), ("nonroot/hello", index)] {
            let built = key(&git(), name, document);
            let back = key_of(&built.identity(), &git(), &built.recipe).unwrap();
            assert_eq!(back, built);
            assert_eq!(back.storage_key(), built.storage_key());
        }
        // Rotated credentials name the same repository.
        let rotated = PkgSource::Git(RemoteUrl::new("https://user:new@example.org/pkgs.git"));
        assert!(
            key_of(&key(&git(), "hello", DocumentKind::Manifest).identity(), &rotated, &recipe(94, Compression::Gzip))
                .is_ok()
        );
    }

    #[test]
    fn what_cannot_be_made_again_says_why() {
        let built = key(&git(), "hello", DocumentKind::Manifest);
        let identity = built.identity();
        let other = PkgSource::Git(RemoteUrl::new("https://example.org/other.git"));
        assert_eq!(key_of(&identity, &other, &built.recipe), Err(Unmakeable::OtherSource));
        let channel = PkgSource::Channel {
            repo: RemoteUrl::new("https://example.org/pkgs.git"),
            channel: crate::pkgsource::Channel::parse("main").unwrap(),
        };
        assert_eq!(key_of(&identity, &channel, &built.recipe), Err(Unmakeable::OtherSource), "same URL, other kind");
        let budget = key_of(&identity, &git(), &recipe(10, Compression::Gzip)).unwrap_err();
        assert!(matches!(budget, Unmakeable::Settings(s) if s.contains("NIXERY_LAYER_BUDGET")), "{budget}");
        let zstd = key_of(&identity, &git(), &recipe(94, Compression::Zstd)).unwrap_err();
        assert!(matches!(zstd, Unmakeable::Settings(s) if s.contains("COMPRESSION")), "{zstd}");
        let mut path = built.clone();
        path.source = Arc::new(SourceRevision::Path { path: "/srv/pkgs".into(), generation: 3 });
        assert_eq!(key_of(&path.identity(), &git(), &built.recipe), Err(Unmakeable::PathSource));
        let mut old = identity.clone();
        old["version"] = 4.into();
        assert_eq!(key_of(&old, &git(), &built.recipe), Err(Unmakeable::Version));
        let mut odd = identity.clone();
        odd["arch"] = "riscv64".into();
        assert!(matches!(key_of(&odd, &git(), &built.recipe), Err(Unmakeable::Unreadable(_))));
    }

    #[test]
    fn a_layer_recipe_gives_its_contents_back_only_for_the_same_archives() {
        let path = StorePath::parse(&format!("/nix/store/{}-hello", "a".repeat(32))).unwrap();
        let forest = LayerContents::Forest { packages: vec![path.clone()], user: ImageUser::NonRoot };
        let key = super::super::layers::content_key(&forest, Compression::Gzip);
        let layer = LayerRecipe::new(&forest, Compression::Gzip, &key);
        let back = layer.contents(Compression::Gzip).unwrap();
        assert_eq!(super::super::layers::content_key(&back, Compression::Gzip), key);
        assert_eq!(layer.record_key(), Some(ObjectKey::build(&key)));
        assert!(matches!(layer.contents(Compression::Zstd), Err(Unmakeable::Settings(_))));
        let paths = LayerContents::StorePaths(vec![path]);
        let layer = LayerRecipe::new(&paths, Compression::Zstd, &Digest::of(b"k"));
        assert!(matches!(layer.contents(Compression::Zstd), Ok(LayerContents::StorePaths(p)) if p.len() == 1));
    }

    #[tokio::test]
    async fn recipes_are_kept_once_and_read_back() {
        let storage = Storage::Memory(Memory::new());
        let digest = Digest::of(b"manifest");
        assert_eq!(find(&storage, &digest).await.unwrap(), None);
        let first = RecipeRecord::Config { manifest: Digest::of(b"m1") };
        keep(&storage, &digest, &first).await.unwrap();
        keep(&storage, &digest, &RecipeRecord::Config { manifest: Digest::of(b"m2") }).await.unwrap();
        assert_eq!(find(&storage, &digest).await.unwrap(), Some(Ok(first)), "the first recipe stays");
        let text =
            String::from_utf8(storage.get(&ObjectKey::recipe(&digest)).await.unwrap().unwrap().to_vec()).unwrap();
        assert!(text.starts_with(r#"{"version":1,"kind":"config","manifest":"sha256:"#), "{text}");
        storage.put(&ObjectKey::recipe(&digest), "{\"version\":9}".into()).await.unwrap();
        assert!(matches!(find(&storage, &digest).await.unwrap(), Some(Err(Unmakeable::Unreadable(_)))));
    }
}
