//! The resolution cache: which pinned revision a tag means now.
//!
//! One entry per moving reference ([`Moving`]: a remote's branch, tag or `HEAD`, or the local
//! path), holding the revision it resolved to and until when that answer is used (now +
//! `NIXERY_SOURCE_TTL`). While it is fresh, a request costs one map look-up; once it has
//! expired, the next request resolves again, and concurrent requests for the same reference
//! share that one resolution ([`SingleFlight`]). Only successes are stored: a failed or
//! abandoned resolution leaves the map as it was, so the next request tries again (an
//! unknown branch is not remembered as unknown; a remote that was down is asked again).
//!
//! A full commit is pinned by its tag and never enters the map. A path's resolution asks
//! nothing: it starts a new generation, which gives the path's images new keys, so the
//! next request for each evaluates the files again (and gets the same manifest if no output
//! path changed, since layers and manifests are content-addressed).
//!
//! A flake's every tag is locked ([`Moving::Flake`]): a branch's lock is kept for the TTL like
//! any resolution, a commit's for good (it never changes, and locking it once checks that it
//! exists and reads what its `flake.lock` pins); a path flake's reading for the TTL.
//!
//! The resolvers are functions ([`Resolve`], [`ResolveFlake`]), `git ls-remote` and
//! [`FlakeLocker`] in production ([`SourceCache::new`]), so the expiry and sharing rules are
//! tested without processes.

use super::Outcome;
use crate::flight::SingleFlight;
use crate::image::Tag;
use crate::metrics::Metrics;
use crate::nix::flake::FlakeLocker;
use crate::pkgsource::{
    CommitHash, FlakeTarget, LockedFlake, LsRemote, Moving, PkgSource, RemoteRef, Selection, SourceError,
    SourceRevision,
};
use futures::FutureExt;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// How long one `git ls-remote` may take.
pub const LS_REMOTE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long locking a flake may take: a fetch, which for a new large repository is a clone.
pub const FLAKE_LOCK_TIMEOUT: Duration = Duration::from_secs(300);
/// Most moving references remembered (each is a branch or tag that exists: unknown ones are
/// never stored, so this bounds only a remote with very many refs).
const MAX_ENTRIES: usize = 4096;

/// Resolves a reference of the configured remote to a commit.
pub type Resolve = Arc<dyn Fn(RemoteRef) -> BoxFuture<'static, Result<CommitHash, SourceError>> + Send + Sync>;
/// Locks what a tag selects from the configured flake.
pub type ResolveFlake = Arc<dyn Fn(FlakeTarget) -> BoxFuture<'static, Result<LockedFlake, SourceError>> + Send + Sync>;

/// What a resolution took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// A commit: nothing to resolve.
    Pinned,
    /// A moving reference whose resolution was still fresh.
    Fresh,
    /// A moving reference resolved for this request (or a concurrent one it joined).
    Resolved,
}

impl Freshness {
    /// How a request with this resolution is counted when its manifest is in memory.
    pub fn memory_outcome(self) -> Outcome {
        match self {
            Freshness::Pinned | Freshness::Fresh => Outcome::Warm,
            Freshness::Resolved => Outcome::Stale,
        }
    }
}

#[derive(Clone)]
struct Entry {
    revision: Arc<SourceRevision>,
    /// Until when the resolution is used; `None` for a flake's commit, kept for good.
    until: Option<Instant>,
    /// Wall-clock time of the resolution, for people ([`SourceCache::known`]).
    resolved_at: SystemTime,
}

impl Entry {
    fn expired(&self) -> bool {
        self.until.is_some_and(|until| Instant::now() >= until)
    }
}

/// What a tag means as far as the process knows, without asking anyone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownRevision {
    pub revision: Arc<SourceRevision>,
    /// When it was resolved; `None` when the tag is a commit (pinned, nothing resolved).
    pub resolved_at: Option<SystemTime>,
    /// Whether the resolution's TTL has run out (the next request resolves again).
    pub expired: bool,
}

type Resolution = Result<Arc<SourceRevision>, Arc<SourceError>>;

/// Resolutions of the configured source's moving references.
pub struct SourceCache {
    shared: Arc<Shared>,
    entries: quick_cache::sync::Cache<Moving, Entry>,
    flights: SingleFlight<Moving, Resolution>,
    ttl: Duration,
}

/// What a resolution in flight needs (it outlives the request that started it while others
/// wait for it).
struct Shared {
    source: PkgSource,
    resolve: Resolve,
    resolve_flake: ResolveFlake,
    generation: AtomicU64,
    metrics: Arc<Metrics>,
}

impl SourceCache {
    /// Resolves remote references with `git ls-remote`, and locks flakes with Nix.
    pub fn new(source: PkgSource, ttl: Duration, metrics: Arc<Metrics>) -> Self {
        let ls = LsRemote { timeout: LS_REMOTE_TIMEOUT };
        let url = source.remote().cloned();
        let resolve: Resolve = Arc::new(move |reference| {
            let url = url.clone();
            async move {
                let url = url.expect("only remote sources have remote references");
                ls.resolve(&url, &reference).await
            }
            .boxed()
        });
        let locker = FlakeLocker { timeout: FLAKE_LOCK_TIMEOUT };
        let flake = match &source {
            PkgSource::Flake(flake) => Some(flake.clone()),
            _ => None,
        };
        let resolve_flake: ResolveFlake = Arc::new(move |target| {
            let flake = flake.clone();
            async move {
                let flake = flake.expect("only a flake source has flake targets");
                locker.lock(&flake, &target).await
            }
            .boxed()
        });
        Self::with_resolvers(source, ttl, resolve, resolve_flake, metrics)
    }

    /// Resolves remote references with `resolve` (and has no flake to lock).
    pub fn with_resolver(source: PkgSource, ttl: Duration, resolve: Resolve, metrics: Arc<Metrics>) -> Self {
        let no_flake: ResolveFlake = Arc::new(|_| unreachable!("the source is not a flake"));
        Self::with_resolvers(source, ttl, resolve, no_flake, metrics)
    }

    /// Resolves remote references with `resolve` and locks flakes with `resolve_flake`.
    pub fn with_resolvers(
        source: PkgSource,
        ttl: Duration,
        resolve: Resolve,
        resolve_flake: ResolveFlake,
        metrics: Arc<Metrics>,
    ) -> Self {
        SourceCache {
            shared: Arc::new(Shared { source, resolve, resolve_flake, generation: AtomicU64::new(0), metrics }),
            entries: quick_cache::sync::Cache::new(MAX_ENTRIES),
            flights: SingleFlight::new(),
            ttl,
        }
    }

    pub fn source(&self) -> &PkgSource {
        &self.shared.source
    }

    /// The revision `tag` means as far as this process knows (the last resolution, even an
    /// expired one), without resolving anything; `None` when it was never resolved (or a
    /// TTL of 0 keeps no resolution) or selects nothing.
    pub fn known(&self, tag: &Tag) -> Option<KnownRevision> {
        match self.shared.source.select(tag).ok()? {
            Selection::Pinned(revision) => {
                Some(KnownRevision { revision: Arc::new(revision), resolved_at: None, expired: false })
            }
            Selection::Moving(moving) => self.entries.peek(&moving).map(|e| KnownRevision {
                expired: e.expired(),
                revision: e.revision,
                resolved_at: Some(e.resolved_at),
            }),
        }
    }

    /// The revision `tag` means now, and what finding it took.
    pub async fn resolve(&self, tag: &Tag) -> Result<(Arc<SourceRevision>, Freshness), Arc<SourceError>> {
        let moving = match self.shared.source.select(tag).map_err(Arc::new)? {
            Selection::Pinned(revision) => return Ok((Arc::new(revision), Freshness::Pinned)),
            Selection::Moving(moving) => moving,
        };
        if let Some(entry) = self.entries.get(&moving)
            && !entry.expired()
        {
            let freshness = if entry.until.is_none() { Freshness::Pinned } else { Freshness::Fresh };
            return Ok((entry.revision, freshness));
        }
        let shared = self.shared.clone();
        let key = moving.clone();
        let revision =
            self.flights.run(moving.clone(), move || async move { shared.resolve(key).await }.boxed()).await?;
        let for_good = matches!(&moving, Moving::Flake(target) if target.is_fixed());
        if for_good || !self.ttl.is_zero() {
            let until = (!for_good).then(|| Instant::now() + self.ttl);
            let entry = Entry { revision: revision.clone(), until, resolved_at: SystemTime::now() };
            self.entries.insert(moving, entry);
        }
        Ok((revision, Freshness::Resolved))
    }
}

impl Shared {
    async fn resolve(&self, moving: Moving) -> Resolution {
        self.metrics.source_resolutions.inc();
        let revision = match &moving {
            Moving::LocalPath => {
                let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
                self.source.at_generation(generation)
            }
            Moving::Remote(reference) => match (self.resolve)(reference.clone()).await {
                Ok(commit) => self.source.at_commit(commit),
                Err(e) => return Err(self.failed(&moving, e)),
            },
            Moving::Flake(target) => match (self.resolve_flake)(target.clone()).await {
                Ok(locked) => Some(SourceRevision::Flake(locked)),
                Err(e) => return Err(self.failed(&moving, e)),
            },
        };
        let revision = revision.expect("a source's moving references resolve to revisions of that source");
        match (&revision, revision.commit()) {
            (SourceRevision::Flake(locked), commit) => tracing::info!(
                reference = %moving,
                commit = commit.map(|c| c.as_str()),
                nixpkgs = locked.nixpkgs.as_ref().map(|c| c.as_str()),
                "locked the flake"
            ),
            (_, Some(commit)) => tracing::info!(reference = %moving, %commit, "resolved the package source"),
            (_, None) => tracing::info!("re-reading the local package set"),
        }
        Ok(Arc::new(revision))
    }

    fn failed(&self, moving: &Moving, e: SourceError) -> Arc<SourceError> {
        self.metrics.source_resolution_failures.inc();
        tracing::warn!(reference = %moving, error = %e, "resolving the package source failed");
        Arc::new(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkgsource::{Channel, RemoteUrl};
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    /// A remote whose branches point where the test says, counting `ls-remote` calls.
    #[derive(Clone, Default)]
    struct FakeRemote {
        branches: Arc<Mutex<Vec<(String, String)>>>,
        calls: Arc<AtomicUsize>,
        delay: Duration,
    }

    impl FakeRemote {
        fn set(&self, branch: &str, commit: &str) {
            let mut branches = self.branches.lock().unwrap();
            branches.retain(|(b, _)| b != branch);
            branches.push((branch.into(), commit.into()));
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }

        fn cache(&self, source: PkgSource, ttl: Duration) -> SourceCache {
            let remote = self.clone();
            let resolve: Resolve = Arc::new(move |reference| {
                let remote = remote.clone();
                async move {
                    remote.calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(remote.delay).await;
                    let name = reference.to_string();
                    let branches = remote.branches.lock().unwrap();
                    let found = branches.iter().find(|(b, _)| *b == name).and_then(|(_, c)| CommitHash::parse(c));
                    found.ok_or(SourceError::UnknownRef { remote: "fake".into(), reference })
                }
                .boxed()
            });
            SourceCache::with_resolver(source, ttl, resolve, Arc::new(Metrics::default()))
        }
    }

    fn git() -> PkgSource {
        PkgSource::Git(RemoteUrl::new("https://example.org/pkgs"))
    }

    fn commit_of(revision: &SourceRevision) -> &str {
        revision.commit().expect("a remote revision").as_str()
    }

    #[tokio::test(start_paused = true)]
    async fn a_resolution_is_used_until_its_ttl_expires() {
        let remote = FakeRemote::default();
        remote.set("HEAD", A);
        let cache = remote.cache(git(), Duration::from_secs(60));
        let (rev, how) = cache.resolve(&Tag::latest()).await.unwrap();
        assert_eq!((commit_of(&rev), how, remote.calls()), (A, Freshness::Resolved, 1));

        remote.set("HEAD", B);
        tokio::time::advance(Duration::from_secs(59)).await;
        let (rev, how) = cache.resolve(&Tag::latest()).await.unwrap();
        assert_eq!((commit_of(&rev), how, remote.calls()), (A, Freshness::Fresh, 1), "within the TTL");

        tokio::time::advance(Duration::from_secs(2)).await;
        let (rev, how) = cache.resolve(&Tag::latest()).await.unwrap();
        assert_eq!((commit_of(&rev), how, remote.calls()), (B, Freshness::Resolved, 2), "after the TTL");
        assert_eq!(cache.shared.metrics.source_resolutions.get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_known_revision_is_the_last_resolution_without_resolving() {
        let remote = FakeRemote::default();
        remote.set("HEAD", A);
        let cache = remote.cache(git(), Duration::from_secs(60));
        assert_eq!(cache.known(&Tag::latest()), None, "never resolved");
        cache.resolve(&Tag::latest()).await.unwrap();
        let known = cache.known(&Tag::latest()).unwrap();
        assert_eq!((commit_of(&known.revision), known.expired), (A, false));
        assert!(known.resolved_at.is_some());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(cache.known(&Tag::latest()).unwrap().expired);
        let pinned = cache.known(&Tag::parse(B).unwrap()).unwrap();
        assert_eq!((commit_of(&pinned.revision), pinned.resolved_at), (B, None));
        assert_eq!(remote.calls(), 1, "known() asks no remote");
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_ttl_resolves_every_time_and_commits_never() {
        let remote = FakeRemote::default();
        remote.set("main", A);
        let cache = remote.cache(git(), Duration::ZERO);
        let main = Tag::parse("main").unwrap();
        cache.resolve(&main).await.unwrap();
        cache.resolve(&main).await.unwrap();
        assert_eq!(remote.calls(), 2);
        let (rev, how) = cache.resolve(&Tag::parse(B).unwrap()).await.unwrap();
        assert_eq!((commit_of(&rev), how, remote.calls()), (B, Freshness::Pinned, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_resolutions_share_one_call() {
        let remote = FakeRemote { delay: Duration::from_secs(1), ..FakeRemote::default() };
        remote.set("HEAD", A);
        let cache = Arc::new(remote.cache(git(), Duration::from_secs(60)));
        let all = (0..8).map(|_| {
            let cache = cache.clone();
            async move { cache.resolve(&Tag::latest()).await.map(|(r, _)| r) }
        });
        let revisions = futures::future::join_all(all).await;
        assert!(revisions.iter().all(|r| commit_of(r.as_ref().unwrap()) == A));
        assert_eq!(remote.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_not_remembered() {
        let remote = FakeRemote::default();
        let cache = remote.cache(git(), Duration::from_secs(60));
        let release = Tag::parse("release").unwrap();
        let err = cache.resolve(&release).await.unwrap_err();
        assert!(matches!(err.as_ref(), SourceError::UnknownRef { .. }), "{err}");
        assert_eq!(cache.shared.metrics.source_resolution_failures.get(), 1);
        remote.set("release", A);
        let (rev, _) = cache.resolve(&release).await.unwrap();
        assert_eq!((commit_of(&rev), remote.calls()), (A, 2), "the failure was cached");
    }

    #[tokio::test(start_paused = true)]
    async fn channel_tags_resolve_at_the_channel_repository() {
        let remote = FakeRemote::default();
        remote.set("nixos-unstable", A);
        remote.set("nixos-24.11", B);
        let repo = RemoteUrl::new("file:///srv/nixpkgs");
        let source = PkgSource::Channel { repo: repo.clone(), channel: Channel::parse("nixos-unstable").unwrap() };
        let cache = remote.cache(source, Duration::from_secs(60));
        let (latest, _) = cache.resolve(&Tag::latest()).await.unwrap();
        assert_eq!(*latest, SourceRevision::Channel { repo: repo.clone(), commit: CommitHash::parse(A).unwrap() });
        let (branch, _) = cache.resolve(&Tag::parse("nixos-24.11").unwrap()).await.unwrap();
        assert_eq!(commit_of(&branch), B);
        let err = cache.resolve(&Tag::parse("nixos-99.99").unwrap()).await.unwrap_err();
        assert!(err.to_string().contains("'nixos-99.99'"), "{err}");
    }

    /// A cache of a flake whose every lock is at commit `A` (for branch `main` and `HEAD`)
    /// or at the commit asked for, counting the locks.
    fn flake_cache(ttl: Duration) -> (SourceCache, Arc<AtomicUsize>) {
        use crate::pkgsource::{FlakeLock, FlakeRef};
        let calls = Arc::new(AtomicUsize::new(0));
        let flake = FlakeRef::parse("git+https://example.org/flake", std::path::Path::new("/")).unwrap();
        let counted = calls.clone();
        let locked_flake = flake.clone();
        let resolve_flake: ResolveFlake = Arc::new(move |target| {
            counted.fetch_add(1, Ordering::SeqCst);
            let flake = locked_flake.clone();
            async move {
                let commit = match target {
                    FlakeTarget::Commit(commit) => commit,
                    FlakeTarget::Head => CommitHash::parse(A).unwrap(),
                    other => {
                        return Err(SourceError::UnknownRef {
                            remote: "fake".into(),
                            reference: RemoteRef::Named(other.to_string()),
                        });
                    }
                };
                Ok(LockedFlake {
                    flake,
                    lock: FlakeLock::Commit(commit),
                    nixpkgs: CommitHash::parse(B),
                    last_modified: None,
                })
            }
            .boxed()
        });
        let no_remote: Resolve = Arc::new(|_| unreachable!("a flake has no remote references"));
        let source = PkgSource::Flake(flake);
        (SourceCache::with_resolvers(source, ttl, no_remote, resolve_flake, Arc::new(Metrics::default())), calls)
    }

    #[tokio::test(start_paused = true)]
    async fn a_flakes_commit_is_locked_once_and_kept_for_good_its_branches_for_the_ttl() {
        let (cache, calls) = flake_cache(Duration::from_secs(60));
        let commit = Tag::parse(B).unwrap();
        let (rev, how) = cache.resolve(&commit).await.unwrap();
        assert_eq!((commit_of(&rev), how, calls.load(Ordering::SeqCst)), (B, Freshness::Resolved, 1));
        let SourceRevision::Flake(locked) = rev.as_ref() else { panic!("{rev:?}") };
        assert_eq!(locked.nixpkgs.as_ref().map(CommitHash::as_str), Some(B), "the lock's provenance is kept");
        tokio::time::advance(Duration::from_secs(3600)).await;
        let (again, how) = cache.resolve(&commit).await.unwrap();
        assert_eq!((&again, how, calls.load(Ordering::SeqCst)), (&rev, Freshness::Pinned, 1), "locked again");

        let (latest, _) = cache.resolve(&Tag::latest()).await.unwrap();
        assert_eq!((commit_of(&latest), calls.load(Ordering::SeqCst)), (A, 2));
        cache.resolve(&Tag::latest()).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2, "within the TTL");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(cache.known(&Tag::latest()).unwrap().expired);
        cache.resolve(&Tag::latest()).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3, "after the TTL");
        assert!(cache.resolve(&Tag::parse("nosuch").unwrap()).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_ttl_still_keeps_a_flakes_commits() {
        let (cache, calls) = flake_cache(Duration::ZERO);
        let commit = Tag::parse(A).unwrap();
        cache.resolve(&commit).await.unwrap();
        cache.resolve(&commit).await.unwrap();
        cache.resolve(&Tag::latest()).await.unwrap();
        cache.resolve(&Tag::latest()).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3, "the commit once, latest every time");
    }

    #[tokio::test(start_paused = true)]
    async fn a_path_gets_a_new_generation_per_ttl_and_refuses_other_tags() {
        let remote = FakeRemote::default();
        let cache = remote.cache(PkgSource::Path("/srv/pkgs".into()), Duration::from_secs(10));
        let (first, how) = cache.resolve(&Tag::latest()).await.unwrap();
        assert_eq!(how, Freshness::Resolved);
        let (again, how) = cache.resolve(&Tag::latest()).await.unwrap();
        assert_eq!((&again, how), (&first, Freshness::Fresh));
        tokio::time::advance(Duration::from_secs(11)).await;
        let (next, _) = cache.resolve(&Tag::latest()).await.unwrap();
        assert_ne!(next, first, "a new reading after the TTL");
        assert!(matches!(*next, SourceRevision::Path { generation: 2, .. }), "{next:?}");
        assert!(cache.resolve(&Tag::parse("v1").unwrap()).await.is_err());
        assert_eq!(remote.calls(), 0, "a path asks no remote");
    }
}
