//! Popularity data for a package set, as Nixery's popcount computes it: how many top-level
//! packages refer, at run time, to each store path name, read from a binary cache.
//!
//! 1. The set's top-level attribute names are listed, then evaluated in batches (one small
//!    `nix-instantiate --eval` each, never the whole set in one string) for the output paths
//!    of those that are derivations. The evaluation computes store paths without writing
//!    anything to the store: no `.drv` file is instantiated and nothing is built.
//!    Attributes that throw are skipped inside the evaluation (`tryEval`), but an error
//!    `tryEval` cannot catch (`abort`, infinite recursion, a missing file or attribute, a
//!    type error: nixpkgs forks, overlays and older channels have them) fails the whole
//!    batch. Then the batch is split in halves, and the halves that fail again, until the
//!    culprits stand alone: they are skipped and reported with Nix's message, the rest is
//!    counted. That costs about two evaluations per culprit and halving, and nothing for a
//!    set without culprits. A batch in which nothing evaluates at all, down to
//!    [`SYSTEMIC`] attributes alone, is not a batch of culprits but a broken set or Nix: that
//!    stops popcount, with the error. Other failures (a timeout, no Nix) stop it at once.
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
use crate::nix::{Nix, NixError, ProcessError, Step, StorePath, TopLevelPackage};
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
    /// Attributes skipped because their evaluation fails uncatchably.
    pub attributes_skipped: usize,
}

/// A top-level attribute whose evaluation fails with an error `tryEval` cannot catch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub attr: String,
    /// Nix's message.
    pub reason: String,
}

/// How many attributes of one batch may fail alone, with nothing of the batch evaluating,
/// before the failure is taken for the set's or Nix's rather than the attributes'.
pub const SYSTEMIC: usize = 8;

/// The result: counts by store path name (Nixery's popularity format) and what was missing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Popcount {
    pub counts: BTreeMap<String, u64>,
    /// Outputs of counted packages that the cache does not have, sorted.
    pub missing: Vec<StorePath>,
    /// Attributes skipped, in the set's order.
    pub skipped: Vec<Skipped>,
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
    let mut current = (first.len(), evaluate(nix, source, first).await?);
    loop {
        // Fetch this batch's narinfo files while Nix evaluates the next batch.
        let next_chunk = chunks.next();
        let evaluate_next = async {
            match next_chunk {
                Some(chunk) => Some(evaluate(nix, source, chunk).await.map(|p| (chunk.len(), p))),
                None => None,
            }
        };
        let (packages, skipped) = current.1;
        tally.skip(skipped);
        let packages = tally.new_packages(packages);
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

/// The derivations among `attrs` and their outputs, and the attributes skipped because
/// their evaluation fails uncatchably (see the module docs: the failing batch is halved
/// until the culprits stand alone).
async fn evaluate(
    nix: &Nix,
    source: &SourceRevision,
    attrs: &[String],
) -> Result<(Vec<TopLevelPackage>, Vec<Skipped>), NixError> {
    bisect(attrs, |part| nix.top_level_outputs(source, part)).await
}

/// [`evaluate`] with `outputs` as the evaluation of a part of `attrs`.
async fn bisect<'a, F, Fut>(
    attrs: &'a [String],
    mut outputs: F,
) -> Result<(Vec<TopLevelPackage>, Vec<Skipped>), NixError>
where
    F: FnMut(&'a [String]) -> Fut,
    Fut: Future<Output = Result<Vec<TopLevelPackage>, NixError>>,
{
    let (mut packages, mut skipped) = (Vec::new(), Vec::new());
    let mut evaluated_any = false;
    // The rightmost part, when it was evaluated out of turn (below).
    let mut last = Vec::new();
    // Left halves first, so packages keep the set's order.
    let mut todo = vec![attrs];
    while let Some(part) = todo.pop() {
        let error = match outputs(part).await {
            Ok(found) => {
                packages.extend(found);
                evaluated_any = true;
                continue;
            }
            Err(error) => error,
        };
        let Some(reason) = uncatchable(&error) else { return Err(error) };
        let [attr] = part else {
            let (left, right) = part.split_at(part.len() / 2);
            todo.extend([right, left]);
            continue;
        };
        skipped.push(Skipped { attr: attr.clone(), reason: reason.to_owned() });
        if evaluated_any || skipped.len() < SYSTEMIC {
            continue;
        }
        // Nothing evaluated yet: culprits side by side, or nothing can evaluate? The
        // rightmost part not yet tried (the largest) tells.
        if todo.is_empty() {
            return Err(systemic(error, &skipped));
        }
        match outputs(todo.remove(0)).await {
            Ok(found) => {
                last = found;
                evaluated_any = true;
            }
            Err(other) if uncatchable(&other).is_some() => return Err(systemic(error, &skipped)),
            Err(other) => return Err(other),
        }
    }
    packages.extend(last);
    Ok((packages, skipped))
}

/// Nix's message, when `error` is an evaluation of attributes that Nix ran and that failed
/// (not a timeout, not Nix missing).
fn uncatchable(error: &NixError) -> Option<&str> {
    match error {
        NixError::Command { step: Step::EvaluateOutputs, summary, source: ProcessError::Failed { .. }, .. } => {
            Some(summary)
        }
        _ => None,
    }
}

/// `error`, saying that every attribute tried failed alone.
fn systemic(error: NixError, skipped: &[Skipped]) -> NixError {
    let NixError::Command { step, summary, log_tail, source } = error else { return error };
    let attrs: Vec<&str> = skipped.iter().map(|s| s.attr.as_str()).collect();
    let summary = format!(
        "{summary} (each of {} failed alone too, and no attribute of the batch evaluated: the package set or \
         Nix is broken, not these attributes)",
        attrs.join(", ")
    );
    NixError::Command { step, summary, log_tail, source }
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
    fn skip(&mut self, skipped: Vec<Skipped>) {
        self.result.progress.attributes_skipped += skipped.len();
        self.result.skipped.extend(skipped);
    }

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

    /// A Nix evaluation of `part` that fails as a whole when it holds any of `bad`, as an
    /// uncatchable error does, and counts its calls.
    fn evaluator<'a>(
        bad: &'a [&'a str],
        calls: &'a std::cell::Cell<usize>,
    ) -> impl FnMut(&[String]) -> std::future::Ready<Result<Vec<TopLevelPackage>, NixError>> + 'a {
        use std::os::unix::process::ExitStatusExt;
        move |part: &[String]| {
            calls.set(calls.get() + 1);
            std::future::ready(match part.iter().find(|a| bad.contains(&a.as_str())) {
                Some(culprit) => Err(NixError::Command {
                    step: Step::EvaluateOutputs,
                    summary: format!("{culprit} is broken"),
                    log_tail: vec![],
                    source: ProcessError::Failed {
                        program: "nix-instantiate".into(),
                        status: std::process::ExitStatus::from_raw(256),
                        stderr: Default::default(),
                    },
                }),
                None => Ok(part.iter().map(|a| package(a, &[&path('0', a)])).collect()),
            })
        }
    }

    fn attrs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("a{i:02}")).collect()
    }

    #[tokio::test]
    async fn culprits_are_split_off_and_the_rest_is_kept_in_order() {
        let attrs = attrs(16);
        let calls = std::cell::Cell::new(0);
        let (packages, skipped) = bisect(&attrs, evaluator(&["a03", "a04", "a15"], &calls)).await.unwrap();
        let names: Vec<&str> = packages.iter().map(|p| p.attr.as_str()).collect();
        let mut want: Vec<&str> = attrs.iter().map(String::as_str).collect();
        want.retain(|a| !["a03", "a04", "a15"].contains(a));
        assert_eq!(names, want);
        let skipped: Vec<(&str, &str)> = skipped.iter().map(|s| (s.attr.as_str(), s.reason.as_str())).collect();
        assert_eq!(skipped, [("a03", "a03 is broken"), ("a04", "a04 is broken"), ("a15", "a15 is broken")]);
        // 1 + 2 per halving on each culprit's path (16 → 8 → 4 → 2 → 1), shared at the top.
        assert!(calls.get() <= 1 + 2 * 4 * 3, "{} evaluations", calls.get());

        calls.set(0);
        let (packages, skipped) = bisect(&attrs, evaluator(&[], &calls)).await.unwrap();
        assert_eq!((packages.len(), skipped.len(), calls.get()), (16, 0, 1), "a clean batch is one evaluation");
    }

    #[tokio::test]
    async fn a_batch_where_nothing_evaluates_is_an_error_not_a_list_of_culprits() {
        let attrs = attrs(32);
        let all: Vec<&str> = attrs.iter().map(String::as_str).collect();
        let calls = std::cell::Cell::new(0);
        let error = bisect(&attrs, evaluator(&all, &calls)).await.unwrap_err();
        assert!(
            error.to_string().contains("each of a00, a01, a02, a03, a04, a05, a06, a07 failed alone too"),
            "{error}"
        );
        assert!(calls.get() < 32, "{} evaluations", calls.get());
        // Nine culprits side by side, then fine attributes: nine culprits, the rest counted.
        let calls = std::cell::Cell::new(0);
        let (packages, skipped) = bisect(&attrs, evaluator(&all[..9], &calls)).await.unwrap();
        assert_eq!(skipped.iter().map(|s| s.attr.as_str()).collect::<Vec<_>>(), &all[..9]);
        assert_eq!(packages.iter().map(|p| p.attr.as_str()).collect::<Vec<_>>(), &all[9..], "in order");
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
