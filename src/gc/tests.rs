//! Collections of an in-memory store whose objects are aged by hand: what is kept, what is
//! collected, in what order, and that a dry run changes nothing.

use super::*;
use crate::archive::LayerContents;
use crate::cache::recipes::LayerRecipe;
use crate::compression::Compression;
use crate::nix::StorePath;
use crate::storage::Memory;

const HOUR: Duration = Duration::from_secs(3600);
const POLICY: GcPolicy = GcPolicy { retention: Duration::from_secs(24 * 3600), grace: HOUR };

struct Store {
    memory: Memory,
    storage: Arc<Storage>,
}

impl Store {
    fn new() -> Self {
        let memory = Memory::new();
        Store { storage: Arc::new(Storage::Memory(memory.clone())), memory }
    }

    async fn put(&self, key: &ObjectKey, bytes: impl Into<Bytes>, age: Duration) {
        self.storage.put(key, bytes.into()).await.unwrap();
        self.memory.age(key.as_str(), age);
    }

    /// A blob `name`, written `age` ago; a layer blob with a recipe and a layer record.
    async fn blob(&self, name: &str, age: Duration) -> Digest {
        let digest = Digest::of(name.as_bytes());
        self.put(&ObjectKey::blob(&digest), name.to_owned(), age).await;
        let path = StorePath::parse(&format!("/nix/store/{}-{name}", "a".repeat(32))).unwrap();
        let contents = LayerContents::StorePaths(vec![path]);
        let content_key = Digest::of(format!("content of {name}").as_bytes());
        let layer = LayerRecipe::new(&contents, Compression::Gzip, &content_key);
        recipes::keep(&self.storage, &digest, &RecipeRecord::Layer { layer }).await.unwrap();
        let record = LayerBlob { digest: digest.clone(), diff_id: digest.clone(), size: name.len() as u64 };
        self.put(&ObjectKey::build(&content_key), serde_json::to_vec(&record).unwrap(), age).await;
        digest
    }

    /// A document with `json`, written `age` ago and served `served` ago (if ever).
    async fn document(&self, json: String, age: Duration, served: Option<Duration>) -> Digest {
        let digest = Digest::of(json.as_bytes());
        self.put(&ObjectKey::manifest(&digest), json, age).await;
        if let Some(ago) = served {
            self.put(&ObjectKey::served(&digest), "{}", ago).await;
        }
        digest
    }

    async fn manifest(&self, blobs: &[&Digest], age: Duration, served: Option<Duration>) -> Digest {
        let layers: Vec<String> = blobs.iter().map(|d| format!(r#"{{"digest":"{d}"}}"#)).collect();
        let json = format!(r#"{{"schemaVersion":2,"layers":[{}]}}"#, layers.join(","));
        self.document(json, age, served).await
    }

    fn has(&self, key: &ObjectKey) -> bool {
        self.memory.keys("").contains(&key.to_string())
    }

    async fn collect(&self, policy: GcPolicy, dry_run: bool) -> (Report, Vec<String>) {
        let mut named = Vec::new();
        let mut note = |c: Candidate<'_>| named.push(c.to_string());
        let report = Collector::new(self.storage.clone(), policy).run(dry_run, &mut note).await.unwrap();
        (report, named)
    }
}

use bytes::Bytes;

#[tokio::test]
async fn served_manifests_keep_their_blobs_and_the_rest_is_collected() {
    let s = Store::new();
    let (shared, kept_only, gone_only) =
        (s.blob("shared", 48 * HOUR).await, s.blob("kept", 48 * HOUR).await, s.blob("gone", 48 * HOUR).await);
    let kept = s.manifest(&[&shared, &kept_only], 48 * HOUR, Some(HOUR)).await;
    let gone = s.manifest(&[&shared, &gone_only], 48 * HOUR, Some(30 * HOUR)).await;
    let never_served = s.manifest(&[&shared], 48 * HOUR, None).await;
    let before = s.memory.keys("");

    let (dry, listed) = s.collect(POLICY, true).await;
    assert_eq!(s.memory.keys(""), before, "a dry run deleted something");
    let (report, deleted) = s.collect(POLICY, false).await;
    assert_eq!(listed, deleted, "the dry run named other objects");
    assert_eq!(dry.total(), report.total());

    for present in [ObjectKey::manifest(&kept), ObjectKey::blob(&shared), ObjectKey::blob(&kept_only)] {
        assert!(s.has(&present), "{present} was collected");
    }
    for collected in [
        ObjectKey::manifest(&gone),
        ObjectKey::manifest(&never_served),
        ObjectKey::served(&gone),
        ObjectKey::blob(&gone_only),
        ObjectKey::build(&Digest::of(b"content of gone")),
    ] {
        assert!(!s.has(&collected), "{collected} was kept");
    }
    assert!(s.has(&ObjectKey::build(&Digest::of(b"content of kept"))), "a kept blob lost its record");
    assert!(s.has(&ObjectKey::recipe(&gone_only)), "recipes outlive what they make");
    assert_eq!(report.deleted["manifests"].objects, 2);
    assert_eq!(report.deleted["layers"], Tally { objects: 1, bytes: 4 });
    assert_eq!(report.deleted["builds"].objects, 1);
    assert_eq!((report.documents, report.documents_kept), (3, 1));

    let (again, _) = s.collect(POLICY, false).await;
    assert_eq!(again.total(), Tally::default(), "a second collection found more: {again}");
}

#[tokio::test]
async fn nothing_younger_than_the_grace_is_collected() {
    let s = Store::new();
    let fresh = s.blob("fresh", Duration::from_secs(60)).await;
    let building = s.manifest(&[&fresh], Duration::from_secs(60), None).await;
    // An old blob a running build just picked up: its record was written again.
    let reused = s.blob("reused", 48 * HOUR).await;
    s.memory.age(ObjectKey::build(&Digest::of(b"content of reused")).as_str(), Duration::from_secs(5));
    s.put(&ObjectKey::stored(format!("staging/{:012x}-{}", 0, "0".repeat(32))), "old upload", 48 * HOUR).await;
    let young_upload = ObjectKey::stored(crate::storage::staging_name());
    s.put(&young_upload, "in progress", Duration::ZERO).await;
    let (report, _) = s.collect(POLICY, false).await;
    for present in [ObjectKey::manifest(&building), ObjectKey::blob(&fresh), ObjectKey::blob(&reused), young_upload] {
        assert!(s.has(&present), "{present} was collected");
    }
    assert_eq!(report.deleted["staging"].objects, 1, "{report}");
}

#[tokio::test]
async fn indexes_keep_their_manifests_and_manifests_their_artifacts() {
    let s = Store::new();
    let (a, b, sig) = (s.blob("a", 48 * HOUR).await, s.blob("b", 48 * HOUR).await, s.blob("sig", 48 * HOUR).await);
    let amd64 = s.manifest(&[&a], 48 * HOUR, None).await;
    let arm64 = s.manifest(&[&b], 48 * HOUR, None).await;
    let index = format!(r#"{{"manifests":[{{"digest":"{amd64}"}},{{"digest":"{arm64}"}}]}}"#);
    let index = s.document(index, 48 * HOUR, Some(HOUR)).await;
    let signature = format!(r#"{{"layers":[{{"digest":"{sig}"}}],"subject":{{"digest":"{amd64}"}}}}"#);
    let signature = s.document(signature, 48 * HOUR, None).await;
    let (report, _) = s.collect(POLICY, false).await;
    for present in [index, amd64, arm64, signature] {
        assert!(s.has(&ObjectKey::manifest(&present)), "{present} was collected");
    }
    for blob in [a, b, sig] {
        assert!(s.has(&ObjectKey::blob(&blob)), "{blob} was collected");
    }
    assert_eq!(report.total(), Tally::default());
}

#[tokio::test]
async fn manifests_cached_by_key_go_with_their_document() {
    let s = Store::new();
    let (layer, other) = (s.blob("l", 48 * HOUR).await, s.blob("o", 48 * HOUR).await);
    let kept = s.manifest(&[&layer], 48 * HOUR, Some(HOUR)).await;
    let gone = s.manifest(&[&layer, &other], 48 * HOUR, Some(48 * HOUR)).await;
    let bytes = |d: &Digest| s.memory.keys("").contains(&ObjectKey::manifest(d).to_string());
    assert!(bytes(&kept) && bytes(&gone));
    let kept_text = s.storage.get(&ObjectKey::manifest(&kept)).await.unwrap().unwrap();
    let gone_text = s.storage.get(&ObjectKey::manifest(&gone)).await.unwrap().unwrap();
    let (kept_key, gone_key) =
        (ObjectKey::manifest_cache(&Digest::of(b"k1")), ObjectKey::manifest_cache(&Digest::of(b"k2")));
    s.put(&kept_key, kept_text, 48 * HOUR).await;
    s.put(&gone_key, gone_text, 48 * HOUR).await;
    s.collect(POLICY, false).await;
    assert!(s.has(&kept_key));
    assert!(!s.has(&gone_key), "a cached manifest points at a collected document");
}

#[tokio::test]
async fn zero_retention_keeps_every_document_and_collects_only_what_none_references() {
    let s = Store::new();
    let referenced = s.blob("referenced", 48 * HOUR).await;
    let orphan = s.blob("orphan", 48 * HOUR).await;
    let never_served = s.manifest(&[&referenced], 48 * HOUR, None).await;
    let policy = GcPolicy { retention: Duration::ZERO, ..POLICY };
    let (report, _) = s.collect(policy, false).await;
    assert!(s.has(&ObjectKey::manifest(&never_served)));
    assert!(s.has(&ObjectKey::blob(&referenced)));
    assert!(!s.has(&ObjectKey::blob(&orphan)));
    assert_eq!(report.deleted["layers"].objects, 1);
}

#[tokio::test]
async fn expired_leases_go_but_the_collection_s_own_stays() {
    let s = Store::new();
    let build = ObjectKey::lease(&Digest::of(b"an image"));
    s.put(&build, "{}", 48 * HOUR).await;
    s.put(&periodic::lease_key(), "{}", 48 * HOUR).await;
    let renewed = ObjectKey::lease(&Digest::of(b"a build in progress"));
    s.put(&renewed, "{}", Duration::from_secs(5)).await;
    s.collect(POLICY, false).await;
    assert!(!s.has(&build));
    assert!(s.has(&periodic::lease_key()));
    assert!(s.has(&renewed));
}

#[tokio::test]
async fn sbom_pointers_go_with_their_subject_and_records_and_links_stay() {
    let s = Store::new();
    let (a, b, c) = (s.blob("a", 48 * HOUR).await, s.blob("b", 48 * HOUR).await, s.blob("c", 48 * HOUR).await);
    let kept = s.manifest(&[&a], 48 * HOUR, Some(HOUR)).await;
    let gone = s.manifest(&[&b], 48 * HOUR, Some(30 * HOUR)).await;
    for subject in [&kept, &gone] {
        let sbom = format!(r#"{{"schemaVersion":2,"layers":[],"subject":{{"digest":"{subject}"}}}}"#);
        s.put(&ObjectKey::sbom(subject), sbom, 48 * HOUR).await;
        s.put(&ObjectKey::subject(subject), "{}", 48 * HOUR).await;
        s.put(&ObjectKey::link(&Digest::of(b"hello"), subject), "hello", 48 * HOUR).await;
    }
    let young = s.manifest(&[&c], Duration::ZERO, None).await;
    s.put(&ObjectKey::sbom(&young), "{}", 48 * HOUR).await;

    let (report, _) = s.collect(POLICY, false).await;
    assert!(!s.has(&ObjectKey::manifest(&gone)), "{report}");
    assert!(!s.has(&ObjectKey::sbom(&gone)), "the pointer to a collected document's SBOM stayed");
    assert!(s.has(&ObjectKey::sbom(&kept)), "the SBOM pointer of a kept document went");
    assert!(s.has(&ObjectKey::sbom(&young)), "the SBOM pointer of a young document went");
    for subject in [&kept, &gone] {
        assert!(s.has(&ObjectKey::subject(subject)), "a subject record went");
        assert!(s.has(&ObjectKey::link(&Digest::of(b"hello"), subject)), "a link went");
    }
    assert_eq!(report.deleted.get("sboms").map(|t| t.objects), Some(1), "{report}");
}
