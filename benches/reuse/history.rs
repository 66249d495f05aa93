//! A package set over time: its revisions (every store path with its NAR size and references,
//! and the top-level attributes), and the images pulled at every revision. The model
//! (model.rs) generates one; a corpus file gives a real one. Either is scored by updates.rs.
//!
//! # The corpus format
//!
//! A text file, one record per line, fields separated by single spaces; `#` starts a comment
//! line and empty lines are skipped:
//!
//! ```text
//! # nixery reuse corpus 1
//! always <attr>                          # optional: always in every image (default: cacert, iana-etc)
//! image <label> <attr> [<attr> ...]      # optional: the images (default: drawn, see below)
//! revision <label>                       # starts a revision; the records below belong to it
//! attr <attr> <store path>               # a top-level package of this revision
//! path <store path> <nar size> [<reference> ...]
//! ```
//!
//! `always` and `image` come before the first `revision`. Every revision lists its attributes
//! and every store path of their closures (a path's references must be listed in the same
//! revision; a reference to itself is ignored, as Nix's own are). Closure sizes are computed
//! from the listing. Without `image` records, images are drawn with the seed: 1–3 attributes
//! that every revision has, whose closure (with the `always` attributes) has 100–1,000 paths
//! at the first revision. Popularity data for a revision is the count of paths of that
//! revision that reference each store path name (what Nixery's popcount counts), and the
//! `always` attributes are the very popular ones.
//!
//! One revision of a real channel, from a machine that has the closures (`jq` 1.6 or later):
//!
//! ```sh
//! echo "revision $rev"
//! for a in git python3 curl cacert iana-etc; do echo "attr $a $(nix-build '<nixpkgs>' -A $a --no-out-link)"; done
//! nix path-info --json --recursive $(nix-build '<nixpkgs>' -A git -A python3 -A curl -A cacert -A iana-etc --no-out-link) |
//!   jq -r 'to_entries[] | "path \(.key) \(.value.narSize) \(.value.references | join(" "))"'
//! ```
//!
//! (Nix before 2.19 prints a list: `.[] | "path \(.path) \(.narSize) \(.references | join(" "))"`.)

use crate::common::SplitMix;
use nixery::nix::{PathInfo, StorePath};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// One revision of the package set.
pub struct Revision {
    pub label: String,
    /// Every store path of the revision, with closure sizes.
    pub universe: BTreeMap<StorePath, PathInfo>,
    /// Top-level attribute → store path.
    pub attrs: BTreeMap<String, StorePath>,
}

/// An image: a label and the attributes asked for (without the always-included ones).
pub struct ImageSpec {
    pub label: String,
    pub attrs: Vec<String>,
}

pub struct History {
    /// Where it came from, for the report.
    pub source: String,
    pub revisions: Vec<Revision>,
    pub images: Vec<ImageSpec>,
    /// Attributes every image carries (cacert, iana-etc).
    pub always: Vec<String>,
}

/// The attributes every image carries when a corpus does not say.
pub const ALWAYS: [&str; 2] = ["cacert", "iana-etc"];
/// Closure sizes (paths, without the always-included) an image is drawn with.
pub const IMAGE_PATHS: std::ops::RangeInclusive<usize> = 100..=1000;

/// Sets each path's closure size from the NAR sizes of its closure.
pub fn fill_closure_sizes(universe: &mut BTreeMap<StorePath, PathInfo>) {
    let paths: Vec<StorePath> = universe.keys().cloned().collect();
    let index = |p: &StorePath| paths.binary_search(p).expect("references are listed");
    let refs: Vec<Vec<usize>> = universe.values().map(|i| i.references.iter().map(index).collect()).collect();
    let nar: Vec<u64> = universe.values().map(|i| i.nar_size).collect();
    let mut seen = vec![usize::MAX; paths.len()];
    for (stamp, info) in universe.values_mut().enumerate() {
        let mut stack = vec![stamp];
        let mut total = 0;
        while let Some(x) = stack.pop() {
            if seen[x] != stamp {
                seen[x] = stamp;
                total += nar[x];
                stack.extend(&refs[x]);
            }
        }
        info.closure_size = total;
    }
}

/// The number of paths in the closure of `attrs` at `revision`.
pub fn closure_len(revision: &Revision, attrs: &[&str]) -> usize {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&StorePath> = attrs.iter().map(|a| &revision.attrs[*a]).collect();
    while let Some(p) = stack.pop() {
        if seen.insert(p) {
            stack.extend(&revision.universe[p].references);
        }
    }
    seen.len()
}

/// Draws `count` images of 1–3 of `candidates` whose closure at the first revision has
/// [`IMAGE_PATHS`] paths (the always-included attributes left out).
pub fn draw_images(first: &Revision, candidates: &[String], count: usize, rng: &mut SplitMix) -> Vec<ImageSpec> {
    let mut images = Vec::with_capacity(count);
    let mut attempts = 0;
    while images.len() < count && !candidates.is_empty() {
        attempts += 1;
        assert!(attempts < count * 1000, "no images of {IMAGE_PATHS:?} paths can be drawn from this package set");
        let want = match rng.below(10) {
            0..=4 => 1,
            5..=7 => 2,
            _ => 3,
        };
        let mut chosen = BTreeSet::new();
        while chosen.len() < want.min(candidates.len()) {
            chosen.insert(candidates[rng.below(candidates.len())].as_str());
        }
        let chosen: Vec<&str> = chosen.into_iter().collect();
        if IMAGE_PATHS.contains(&closure_len(first, &chosen)) {
            images.push(ImageSpec { label: chosen.join("/"), attrs: chosen.iter().map(|a| a.to_string()).collect() });
        }
    }
    images
}

/// Why a corpus could not be read.
#[derive(Debug)]
pub struct CorpusError {
    line: usize,
    message: String,
}

impl std::fmt::Display for CorpusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Reads a corpus (see the module docs); images are drawn with `rng` when it names none.
pub fn read_corpus(text: &str, source: &str, images: usize, rng: &mut SplitMix) -> Result<History, CorpusError> {
    let mut always: Vec<String> = Vec::new();
    let mut specs: Vec<ImageSpec> = Vec::new();
    let mut revisions: Vec<Revision> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let err = |message: String| CorpusError { line: n + 1, message };
        let mut fields = line.split(' ').filter(|f| !f.is_empty());
        let Some(kind) = fields.next() else { continue };
        let store_path = |s: &str| StorePath::parse(s).map_err(|e| err(format!("{s}: {e}")));
        match kind {
            k if k.starts_with('#') => {}
            "always" | "image" if !revisions.is_empty() => {
                return Err(err(format!("`{kind}` after the first revision")));
            }
            "always" => always.extend(fields.map(str::to_owned)),
            "image" => {
                let label = fields.next().ok_or_else(|| err("an image needs a label".into()))?.to_owned();
                let attrs: Vec<String> = fields.map(str::to_owned).collect();
                if attrs.is_empty() {
                    return Err(err(format!("image {label} has no attributes")));
                }
                specs.push(ImageSpec { label, attrs });
            }
            "revision" => {
                let label = fields.collect::<Vec<_>>().join(" ");
                revisions.push(Revision { label, universe: BTreeMap::new(), attrs: BTreeMap::new() });
            }
            "attr" | "path" => {
                let revision = revisions.last_mut().ok_or_else(|| err(format!("`{kind}` before any revision")))?;
                if kind == "attr" {
                    let (Some(attr), Some(path), None) = (fields.next(), fields.next(), fields.next()) else {
                        return Err(err("expected `attr <attr> <store path>`".into()));
                    };
                    revision.attrs.insert(attr.to_owned(), store_path(path)?);
                } else {
                    let path = store_path(fields.next().ok_or_else(|| err("a path record needs a path".into()))?)?;
                    let size = fields.next().ok_or_else(|| err(format!("{path} has no NAR size")))?;
                    let nar_size = size.parse().map_err(|_| err(format!("{path}: NAR size {size} is not a number")))?;
                    let mut references = fields.map(store_path).collect::<Result<Vec<_>, _>>()?;
                    references.retain(|r| *r != path);
                    references.sort();
                    references.dedup();
                    revision.universe.insert(path, PathInfo { nar_size, closure_size: 0, nar_hash: None, references });
                }
            }
            other => return Err(err(format!("unknown record `{other}`"))),
        }
    }
    let missing = |message: String| CorpusError { line: 0, message };
    if revisions.len() < 2 {
        return Err(missing(format!("{} revisions: updates need at least two", revisions.len())));
    }
    for r in &mut revisions {
        for p in r.attrs.values().chain(r.universe.values().flat_map(|i| i.references.iter())) {
            if !r.universe.contains_key(p) {
                return Err(missing(format!("revision {}: {p} is referenced but not listed", r.label)));
            }
        }
        fill_closure_sizes(&mut r.universe);
    }
    if always.is_empty() {
        always = ALWAYS
            .iter()
            .filter(|a| revisions.iter().all(|r| r.attrs.contains_key(**a)))
            .map(|a| a.to_string())
            .collect();
    }
    let everywhere: Vec<String> = revisions[0]
        .attrs
        .keys()
        .filter(|a| !always.contains(a) && revisions.iter().all(|r| r.attrs.contains_key(*a)))
        .cloned()
        .collect();
    for spec in &specs {
        for a in spec.attrs.iter().chain(&always) {
            if let Some(r) = revisions.iter().find(|r| !r.attrs.contains_key(a)) {
                return Err(missing(format!("revision {} has no attribute {a} (image {})", r.label, spec.label)));
            }
        }
    }
    if specs.is_empty() {
        specs = draw_images(&revisions[0], &everywhere, images, rng);
    }
    Ok(History { source: source.to_owned(), revisions, images: specs, always })
}

/// Writes `history` in the corpus format (read back by [`read_corpus`], it gives the same
/// history).
pub fn write_corpus(history: &History) -> String {
    let mut out = String::from("# nixery reuse corpus 1\n");
    writeln!(out, "# {}", history.source).unwrap();
    writeln!(out, "always {}", history.always.join(" ")).unwrap();
    for spec in &history.images {
        writeln!(out, "image {} {}", spec.label, spec.attrs.join(" ")).unwrap();
    }
    for r in &history.revisions {
        writeln!(out, "revision {}", r.label).unwrap();
        for (attr, path) in &r.attrs {
            writeln!(out, "attr {attr} {path}").unwrap();
        }
        for (path, info) in &r.universe {
            write!(out, "path {path} {}", info.nar_size).unwrap();
            for reference in &info.references {
                write!(out, " {reference}").unwrap();
            }
            out.push('\n');
        }
    }
    out
}
