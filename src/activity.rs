//! What the server did recently: the last builds and the last failures, and the layer plans
//! the web pages draw ([`crate::web`]).
//!
//! A bounded record in memory, [`KEEP`] entries of each kind (Nixery's page shows its last 15
//! errors), newest first. It is filled by the builder where an image build finishes or fails
//! ([`crate::builder`]): builds are single-flight, so one build waited for by a hundred clients
//! is one entry, not a hundred. Nothing is persisted: it is a view of this process, not an
//! audit log, and a replica shows its own.
//!
//! Each build keeps its [`PlannedImage`] (layer plan, content keys), so `/ui/<image>` of a
//! recently built image costs no Nix at all, and a layer can be marked as shared with the
//! other recent images that hold it: by content key, which is what makes two layers the same
//! blob (the store paths name their contents), so it also works for images only planned.
//!
//! An image nobody built is planned on request ([`Activity::plan`]): single-flight per image
//! (a hundred views of one page run Nix once), through the planner's Nix job slots (so a flood
//! of page views queues behind the same `NIXERY_MAX_NIX_JOBS` as a flood of pulls, and costs
//! less: nothing is archived), and the plan is kept, [`KEEP`] of those too. The failures of
//! planning are answered to the viewer, not recorded: they are not builds.

use crate::archive::LayerBlob;
use crate::builder::BuildError;
use crate::cache::layers::content_key;
use crate::compression::Compression;
use crate::digest::Digest;
use crate::flight::SingleFlight;
use crate::image::{ImageSpec, Tag};
use crate::pkgsource::SourceRevision;
use crate::plan::ImagePlan;
use futures::FutureExt;
use futures::future::BoxFuture;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Entries kept of each kind (builds, failures, plans of images not built).
pub const KEEP: usize = 15;

/// An image: a pinned package set and a spec.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageId {
    pub source: Arc<SourceRevision>,
    pub spec: ImageSpec,
}

/// An image's layer plan, with each layer's content key (the symlink forest's last).
#[derive(Debug)]
pub struct PlannedImage {
    pub id: ImageId,
    pub plan: ImagePlan,
    /// Content keys in manifest order, one per layer of [`ImagePlan::contents`]. They tell
    /// which layers two images share; a server has one compression, so the keys are taken
    /// for the default one whatever it is.
    pub keys: Vec<Digest>,
}

impl PlannedImage {
    pub fn new(id: ImageId, plan: ImagePlan) -> Self {
        let keys = plan.contents().iter().map(|c| content_key(c, Compression::default())).collect();
        PlannedImage { id, plan, keys }
    }
}

/// A finished build.
#[derive(Debug)]
pub struct BuildRecord {
    pub image: Arc<PlannedImage>,
    /// The tag of the request that started the build.
    pub tag: Tag,
    pub finished: SystemTime,
    pub took: Duration,
    /// The archived layers, in manifest order (the symlink forest last).
    pub blobs: Vec<LayerBlob>,
}

impl BuildRecord {
    /// Bytes a client downloads for the image's layers.
    pub fn size(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }
}

/// A failed build.
#[derive(Debug)]
pub struct FailureRecord {
    pub id: ImageId,
    pub tag: Tag,
    pub failed: SystemTime,
    pub took: Duration,
    pub error: Arc<BuildError>,
}

/// One other recent image that holds a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sharer {
    pub id: ImageId,
    /// The tag it was built or planned under.
    pub tag: Option<Tag>,
}

#[derive(Default)]
struct Recent {
    builds: VecDeque<Arc<BuildRecord>>,
    failures: VecDeque<Arc<FailureRecord>>,
    /// Plans of images planned for a page, not built.
    planned: VecDeque<Arc<PlannedImage>>,
}

type PlanResult = Result<Arc<PlannedImage>, Arc<BuildError>>;

/// The record (see the module docs).
#[derive(Default)]
pub struct Activity {
    recent: Mutex<Recent>,
    plans: SingleFlight<ImageId, PlanResult>,
}

/// Adds `entry` at the front of `list`, keeping at most [`KEEP`].
fn push<T>(list: &mut VecDeque<T>, entry: T) {
    list.push_front(entry);
    list.truncate(KEEP);
}

impl Activity {
    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().expect("activity record poisoned")
    }

    /// Records a finished build (called once per build).
    pub fn built(&self, record: BuildRecord) {
        let mut recent = self.recent();
        let id = &record.image.id;
        recent.planned.retain(|p| p.id != *id);
        recent.builds.retain(|b| b.image.id != *id);
        push(&mut recent.builds, Arc::new(record));
    }

    /// Records a failed build (called once per build).
    pub fn failed(&self, record: FailureRecord) {
        push(&mut self.recent().failures, Arc::new(record));
    }

    /// The last builds, newest first.
    pub fn builds(&self) -> Vec<Arc<BuildRecord>> {
        self.recent().builds.iter().cloned().collect()
    }

    /// The last failures, newest first.
    pub fn failures(&self) -> Vec<Arc<FailureRecord>> {
        self.recent().failures.iter().cloned().collect()
    }

    /// The most recent recorded failure of `id`, if it is among the recent ones.
    pub fn failure_of(&self, id: &ImageId) -> Option<Arc<FailureRecord>> {
        self.recent().failures.iter().find(|f| f.id == *id).cloned()
    }

    /// The recorded build of `id`, if it is among the recent ones.
    pub fn build_of(&self, id: &ImageId) -> Option<Arc<BuildRecord>> {
        self.recent().builds.iter().find(|b| b.image.id == *id).cloned()
    }

    /// The plan of `id`: recorded (built or planned recently), or made by `plan` now,
    /// once however many ask at the same time, and kept.
    pub async fn plan<F>(&self, id: ImageId, plan: F) -> PlanResult
    where
        F: FnOnce(ImageId) -> BoxFuture<'static, Result<ImagePlan, BuildError>>,
    {
        if let Some(known) = self.recorded_plan(&id) {
            return Ok(known);
        }
        let key = id.clone();
        let planned = self
            .plans
            .run(id.clone(), move || {
                let planning = plan(key.clone());
                async move { planning.await.map(|p| Arc::new(PlannedImage::new(key, p))).map_err(Arc::new) }.boxed()
            })
            .await?;
        let mut recent = self.recent();
        if !recent.builds.iter().any(|b| b.image.id == id) && !recent.planned.iter().any(|p| p.id == id) {
            push(&mut recent.planned, planned.clone());
        }
        Ok(planned)
    }

    /// The plan of `id` if a recent build or page view recorded it.
    pub fn recorded_plan(&self, id: &ImageId) -> Option<Arc<PlannedImage>> {
        let recent = self.recent();
        let built = recent.builds.iter().map(|b| &b.image);
        built.chain(recent.planned.iter()).find(|p| p.id == *id).cloned()
    }

    /// For each layer of `image` (by [`PlannedImage::keys`]), the other recent images (built
    /// or planned) that hold the same layer, newest first.
    pub fn sharers(&self, image: &PlannedImage) -> Vec<Vec<Sharer>> {
        let recent = self.recent();
        let built = recent.builds.iter().map(|b| (&b.image, Some(&b.tag)));
        let others: Vec<(&Arc<PlannedImage>, Option<&Tag>)> =
            built.chain(recent.planned.iter().map(|p| (p, None))).filter(|(p, _)| p.id != image.id).collect();
        image
            .keys
            .iter()
            .map(|key| {
                let mut sharers: Vec<Sharer> = Vec::new();
                for (other, tag) in &others {
                    let sharer = Sharer { id: other.id.clone(), tag: tag.cloned() };
                    if other.keys.contains(key) && !sharers.iter().any(|s| s.id.spec == sharer.id.spec) {
                        sharers.push(sharer);
                    }
                }
                sharers
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageName;
    use crate::layers::Layer;
    use crate::nix::StorePath;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn path(name: &str) -> StorePath {
        StorePath::parse(&format!("/nix/store/{}-{name}", "a".repeat(32))).unwrap()
    }

    fn id(name: &str) -> ImageId {
        let source = Arc::new(SourceRevision::Path { path: "/srv/pkgs".into(), generation: 1 });
        ImageId { source, spec: ImageSpec::from_name(&ImageName::parse(name).unwrap()) }
    }

    fn plan(layers: &[&[&str]]) -> ImagePlan {
        let layers = layers
            .iter()
            .map(|paths| Layer {
                merge_rating: 1,
                contents: paths.iter().map(|p| path(p)).collect(),
                size: 10,
                popularity: 1,
            })
            .collect();
        ImagePlan {
            layers,
            forest: vec![path("top")],
            user: Default::default(),
            command: None,
            sizes: Default::default(),
            inventory: Arc::new(crate::sbom::Inventory {
                arch: crate::image::Arch::Amd64,
                name: "test".into(),
                source: Default::default(),
                requested: vec![],
                paths: Default::default(),
            }),
        }
    }

    fn built(name: &str, layers: &[&[&str]]) -> BuildRecord {
        let image = Arc::new(PlannedImage::new(id(name), plan(layers)));
        let blobs = image.keys.iter().map(|k| LayerBlob { digest: k.clone(), diff_id: k.clone(), size: 5 }).collect();
        BuildRecord { image, tag: Tag::latest(), finished: SystemTime::now(), took: Duration::ZERO, blobs }
    }

    fn failure(name: &str) -> FailureRecord {
        let error = Arc::new(BuildError::Archive(std::io::Error::other("no")));
        FailureRecord { id: id(name), tag: Tag::latest(), failed: SystemTime::now(), took: Duration::ZERO, error }
    }

    #[test]
    fn the_record_keeps_the_newest_entries_of_each_kind() {
        let activity = Activity::default();
        for i in 0..KEEP + 5 {
            activity.built(built(&format!("p{i}"), &[&["x"]]));
            activity.failed(failure(&format!("f{i}")));
        }
        let builds = activity.builds();
        assert_eq!(builds.len(), KEEP);
        assert_eq!(builds[0].image.id, id(&format!("p{}", KEEP + 4)), "newest first");
        assert_eq!(builds[KEEP - 1].image.id, id("p5"));
        let failures = activity.failures();
        assert_eq!((failures.len(), &failures[0].id), (KEEP, &id(&format!("f{}", KEEP + 4))));
        assert_eq!(builds[0].size(), 10, "two layers of 5 bytes");
    }

    #[test]
    fn a_rebuild_replaces_its_older_entry() {
        let activity = Activity::default();
        activity.built(built("a", &[&["x"]]));
        activity.built(built("b", &[&["x"]]));
        activity.built(built("a", &[&["x"]]));
        let names: Vec<_> = activity.builds().iter().map(|b| b.image.id.clone()).collect();
        assert_eq!(names, [id("a"), id("b")]);
    }

    #[test]
    fn layers_are_shared_by_content_with_other_images_only() {
        let activity = Activity::default();
        activity.built(built("a", &[&["glibc"], &["a-only"]]));
        activity.built(built("b", &[&["glibc"], &["b-only"]]));
        let a = activity.build_of(&id("a")).unwrap();
        let sharers = activity.sharers(&a.image);
        assert_eq!(sharers.len(), 3, "two store-path layers and the forest");
        assert_eq!(sharers[0], [Sharer { id: id("b"), tag: Some(Tag::latest()) }]);
        assert!(sharers[1].is_empty(), "{sharers:?}");
        assert_eq!(sharers[2].len(), 1, "the same forest (one top-level path) is the same layer");
    }

    #[tokio::test]
    async fn plans_are_made_once_then_kept_and_a_build_supersedes_them() {
        let activity = Activity::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let planner = |calls: Arc<AtomicUsize>| {
            move |_: ImageId| {
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(plan(&[&["x"]]))
                }
                .boxed()
            }
        };
        let views = (0..5).map(|_| activity.plan(id("c"), planner(calls.clone())));
        let plans = futures::future::try_join_all(views).await.unwrap();
        assert!(plans.iter().all(|p| Arc::ptr_eq(p, &plans[0])));
        activity.plan(id("c"), planner(calls.clone())).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "planned once, then from the record");

        activity.built(built("c", &[&["y"]]));
        let after = activity.plan(id("c"), planner(calls.clone())).await.unwrap();
        assert_eq!(after.plan.layers[0].contents, [path("y")], "the build's plan is the one shown");
        assert!(activity.recent().planned.is_empty());
    }

    #[tokio::test]
    async fn a_failed_plan_is_not_kept() {
        let activity = Activity::default();
        let failing = |_: ImageId| {
            async { Err(crate::nix::NixError::Busy(crate::nix::Busy { waited: Duration::ZERO, limit: 1 }).into()) }
                .boxed()
        };
        assert!(activity.plan(id("d"), failing).await.is_err());
        assert!(activity.recent().planned.is_empty());
    }
}
