//! Popularity data for a package set, as Nixery's popcount computes it: how many top-level
//! packages refer, at run time, to each store path name, read from a binary cache.
//!
//! 1. The set's top-level attribute names are listed, then evaluated in batches (one small
//!    `nix-instantiate --eval` each, never the whole set in one string) for the output paths
//!    of those that are derivations. The evaluation computes store paths without writing
//!    anything to the store: no `.drv` file is instantiated and nothing is built.
//! 2. Each output's narinfo (`<cache>/<hash>.narinfo`) is fetched, at most `connections` at a
//!    time, while the next batch is evaluated; its `References:` are the output's runtime
//!    references, as the cache's builder found them.
//! 3. For every package, the names (store paths without their hash) its outputs refer to are
//!    counted once. A package does not count itself: references among its own outputs,
//!    including an output referring to itself (a script whose shebang is in its own output),
//!    are not counted, so self-reference is not mistaken for popularity. Counts of 1 are kept:
//!    a name exactly one package refers to is what the layer grouping reads as private to
//!    that package (see [`crate::layers`]), and a reader treats an absent name as 1 anyway.
//!    Packages with the same outputs (aliases) count once.
//!
//! Nixery's popcount reads the output list of a Hydra evaluation (`store-paths.xz`) instead of
//! evaluating, counts a path's reference to itself, and drops the counts of 1 it thereby
//! mistakes for self-references; it stops at the first narinfo it cannot parse. Here an
//! output the cache does not have (404 or 403: never built, or failed to build) is counted as
//! missing and reported, and a cache that does not answer fails with its URL and the reason.

use crate::binary_cache::{BinaryCache, BinaryCacheError, NarInfo};
use crate::nix::{Nix, NixError, StorePath, TopLevelPackage};
use crate::pkgsource::SourceRevision;
use futures::{StreamExt, TryStreamExt};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Why popularity could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum PopcountError {
    #[error(transparent)]
    Nix(#[from] NixError),
    #[error(transparent)]
    Cache(#[from] BinaryCacheError),
}

/// How far the count has come.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub attributes_done: usize,
    pub attributes_total: usize,
    /// Top-level derivations counted (aliases once).
    pub packages: usize,
    /// Their outputs whose narinfo the cache has.
    pub outputs_cached: usize,
    /// Their outputs the cache does not have.
    pub outputs_missing: usize,
}

/// The result: counts by store path name (Nixery's popularity format) and what was missing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Popcount {
    pub counts: BTreeMap<String, u64>,
    /// Outputs of counted packages that the cache does not have, sorted.
    pub missing: Vec<StorePath>,
    pub progress: Progress,
}

/// Counts the references of `source`'s top-level packages in `cache`; see the module docs.
/// `batch` attributes are evaluated per Nix invocation, `connections` narinfo requests are in
/// flight at once. `progress` is called after each batch.
pub async fn popcount(
    nix: &Nix,
    source: &SourceRevision,
    cache: &BinaryCache,
    batch: usize,
    connections: usize,
    mut progress: impl FnMut(Progress),
) -> Result<Popcount, PopcountError> {
    cache.check().await?;
    let names = nix.attribute_names(source).await?;
    let mut tally = Tally::default();
    tally.result.progress.attributes_total = names.len();
    let mut chunks = names.chunks(batch.max(1));
    let Some(first) = chunks.next() else { return Ok(tally.finish()) };
    let mut current = (first.len(), nix.top_level_outputs(source, first).await?);
    loop {
        // Fetch this batch's narinfo files while Nix evaluates the next batch.
        let next_chunk = chunks.next();
        let evaluate_next = async {
            match next_chunk {
                Some(chunk) => Some(nix.top_level_outputs(source, chunk).await.map(|p| (chunk.len(), p))),
                None => None,
            }
        };
        let packages = tally.new_packages(current.1);
        let (fetched, next) = tokio::join!(fetch(cache, &packages, connections), evaluate_next);
        tally.count(&packages, &fetched?);
        tally.result.progress.attributes_done += current.0;
        progress(tally.result.progress);
        match next {
            Some(evaluated) => current = evaluated?,
            None => return Ok(tally.finish()),
        }
    }
}

/// The narinfo of every output of `packages` (`None`: not in the cache).
async fn fetch(
    cache: &BinaryCache,
    packages: &[TopLevelPackage],
    connections: usize,
) -> Result<BTreeMap<StorePath, Option<NarInfo>>, BinaryCacheError> {
    let outputs: BTreeSet<&StorePath> = packages.iter().flat_map(|p| &p.outputs).collect();
    futures::stream::iter(outputs)
        .map(|path| async move { cache.narinfo(path).await.map(|info| (path.clone(), info)) })
        .buffer_unordered(connections.max(1))
        .try_collect()
        .await
}

/// The counts so far, and the packages already counted (by their first output).
#[derive(Default)]
struct Tally {
    result: Popcount,
    seen: HashSet<StorePath>,
}

impl Tally {
    /// `packages` without those counted before (aliases of an earlier attribute).
    fn new_packages(&mut self, packages: Vec<TopLevelPackage>) -> Vec<TopLevelPackage> {
        packages.into_iter().filter(|p| p.outputs.first().is_none_or(|first| self.seen.insert(first.clone()))).collect()
    }

    fn count(&mut self, packages: &[TopLevelPackage], narinfos: &BTreeMap<StorePath, Option<NarInfo>>) {
        let progress = &mut self.result.progress;
        for package in packages {
            let own: BTreeSet<&StorePath> = package.outputs.iter().collect();
            let mut names = BTreeSet::new();
            for output in &package.outputs {
                match narinfos.get(output).and_then(Option::as_ref) {
                    Some(info) => {
                        progress.outputs_cached += 1;
                        names.extend(info.references.iter().filter(|r| !own.contains(r)).map(|r| r.name().to_owned()));
                    }
                    None => {
                        progress.outputs_missing += 1;
                        self.result.missing.push(output.clone());
                    }
                }
            }
            for name in names {
                *self.result.counts.entry(name).or_default() += 1;
            }
            progress.packages += 1;
        }
    }

    fn finish(mut self) -> Popcount {
        self.result.missing.sort();
        self.result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(hash: char, name: &str) -> StorePath {
        StorePath::from_base_name(&format!("{}-{name}", hash.to_string().repeat(32))).unwrap()
    }

    fn package(attr: &str, outputs: &[&StorePath]) -> TopLevelPackage {
        TopLevelPackage { attr: attr.to_owned(), outputs: outputs.iter().map(|&p| p.clone()).collect() }
    }

    fn narinfo(path: &StorePath, references: &[&StorePath]) -> (StorePath, Option<NarInfo>) {
        let info = NarInfo { store_path: path.clone(), references: references.iter().map(|&r| r.clone()).collect() };
        (path.clone(), Some(info))
    }

    #[test]
    fn counts_each_name_once_per_package_and_never_the_package_itself() {
        let (glibc, bash, curl, curl_dev, hello) = (
            path('0', "glibc-2.40"),
            path('1', "bash-5.2"),
            path('2', "curl-8"),
            path('3', "curl-8-dev"),
            path('4', "hello"),
        );
        let packages = vec![
            package("glibc", &[&glibc]),
            package("bash", &[&bash]),
            package("curl", &[&curl, &curl_dev]),
            package("hello", &[&hello]),
        ];
        let narinfos: BTreeMap<_, _> = [
            narinfo(&glibc, &[&glibc]),
            narinfo(&bash, &[&bash, &glibc]),
            // dev refers to out and both to glibc: curl counts glibc once and itself never.
            narinfo(&curl, &[&curl, &glibc]),
            narinfo(&curl_dev, &[&curl, &curl_dev, &glibc, &bash]),
            (hello.clone(), None),
        ]
        .into_iter()
        .collect();
        let mut tally = Tally::default();
        let packages = tally.new_packages(packages);
        tally.count(&packages, &narinfos);
        let counts: Vec<(&str, u64)> = tally.result.counts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(counts, [("bash-5.2", 1), ("glibc-2.40", 2)]);
        assert_eq!(tally.result.missing, [hello]);
        let p = tally.result.progress;
        assert_eq!((p.packages, p.outputs_cached, p.outputs_missing), (4, 4, 1));
    }

    #[test]
    fn aliases_count_once() {
        let (glibc, bash) = (path('0', "glibc-2.40"), path('1', "bash-5.2"));
        let narinfos: BTreeMap<_, _> = [narinfo(&bash, &[&glibc])].into_iter().collect();
        let mut tally = Tally::default();
        for batch in [vec![package("bash", &[&bash]), package("bash5", &[&bash])], vec![package("bashAlias", &[&bash])]]
        {
            let packages = tally.new_packages(batch);
            tally.count(&packages, &narinfos);
        }
        assert_eq!(tally.result.counts["glibc-2.40"], 1);
        assert_eq!(tally.result.progress.packages, 1);
    }
}
