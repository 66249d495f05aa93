//! A model of a package set that moves weekly, with Nix's semantics: a store path's hash
//! covers the package's own version and the store paths of everything it references, so a
//! new version of a package gives a new store path to it and to every package that depends
//! on it, directly or not. Everything is drawn from the seed.
//!
//! The packages, in three tiers (each package depends only on packages before it):
//!
//! | tier | packages | NAR size (median, spread: σ of ln) | a new version, per week |
//! |---|---:|---|---|
//! | core (glibc first, then gcc's libs, bash, ...) | 24 | 3 MB, 1.2; glibc 30 MB | only in a mass rebuild: one week in 8, 1–3 of them |
//! | libraries | 1,400 | 300 kB, 1.9 | 2 % each |
//! | applications | 500 | 1.5 MB, 1.7 | 20 % each |
//!
//! plus `cacert` and `iana-etc` (0.5 and 2.6 MB, no references; 4 % a week), which every
//! image carries.
//! Every core package but glibc references glibc and a few of the ones before it; a library
//! references glibc, gcc's libs half the time, and 0–10 earlier libraries (the earliest ones
//! most often: zlib is used everywhere, a late library rarely); an application references
//! glibc and 2–46 libraries (most have few; skewed towards the early libraries). A new
//! version changes the NAR size by a few percent (σ 10 % of ln) and, one time in six, adds
//! or drops a library reference. A rebuild because a dependency moved keeps the name and
//! the size and changes the hash.
//!
//! Images are 1–3 applications (half of them one) whose closure has 100–1,000 paths at the
//! first revision, plus cacert and iana-etc.

use crate::common::{SplitMix, fake_store_path};
use crate::history::{ALWAYS, History, Revision, draw_images, fill_closure_sizes};
use nixery::nix::{PathInfo, StorePath};
use std::collections::BTreeMap;

const CORE: usize = 24;
const LIBS: usize = 1400;
const APPS: usize = 500;
const MASS_REBUILD_WEEKLY: f64 = 1.0 / 8.0;
const LIB_WEEKLY: f64 = 0.02;
const APP_WEEKLY: f64 = 0.20;
const DATA_WEEKLY: f64 = 0.04;
const REFERENCE_CHANGE: f64 = 1.0 / 6.0;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tier {
    Data,
    Core,
    Lib,
    App,
}

struct Package {
    attr: String,
    tier: Tier,
    version: u32,
    size: u64,
    /// Indices of the packages it references (all lower).
    deps: Vec<usize>,
}

fn log_normal(rng: &mut SplitMix, median: f64, sigma: f64) -> u64 {
    (median * (sigma * rng.normal()).exp()).max(1.0) as u64
}

/// An index in `0..n` skewed towards 0: `n × u^skew`.
fn early(rng: &mut SplitMix, n: usize, skew: f64) -> usize {
    ((n as f64 * rng.unit().powf(skew)) as usize).min(n - 1)
}

/// The package set at the first revision.
fn packages(rng: &mut SplitMix) -> Vec<Package> {
    let mut out = Vec::new();
    let mut add = |attr: String, tier, size, deps: Vec<usize>| {
        let mut deps = deps;
        deps.sort_unstable();
        deps.dedup();
        out.push(Package { attr, tier, version: 1, size, deps });
    };
    add("cacert".to_owned(), Tier::Data, 480_000, vec![]);
    add("iana-etc".to_owned(), Tier::Data, 2_600_000, vec![]);
    let core0 = 2;
    for i in 0..CORE {
        let size = if i == 0 { 30_000_000 } else { log_normal(rng, 3e6, 1.2) };
        let mut deps = Vec::new();
        if i > 0 {
            deps.push(core0);
            deps.extend((1..i).filter(|_| rng.chance(0.15)).map(|j| core0 + j));
        }
        let attr = match i {
            0 => "glibc".to_owned(),
            1 => "gcc-lib".to_owned(),
            _ => format!("core{i:02}"),
        };
        add(attr, Tier::Core, size, deps);
    }
    let lib0 = core0 + CORE;
    for i in 0..LIBS {
        let mut deps = vec![core0];
        if rng.chance(0.5) {
            deps.push(core0 + 1);
        }
        deps.extend((2..CORE).filter(|_| rng.chance(0.04)).map(|j| core0 + j));
        if i > 0 {
            let k = rng.below(11);
            deps.extend((0..k).map(|_| lib0 + early(rng, i, 2.0)));
        }
        add(format!("lib{i:04}"), Tier::Lib, log_normal(rng, 3e5, 1.9), deps);
    }
    for i in 0..APPS {
        let mut deps = vec![core0];
        let k = 2 + early(rng, 45, 1.3);
        deps.extend((0..k).map(|_| lib0 + early(rng, LIBS, 1.6)));
        add(format!("app{i:03}"), Tier::App, log_normal(rng, 1.5e6, 1.7), deps);
    }
    out
}

/// One week: which packages get a new version.
fn advance(pkgs: &mut [Package], rng: &mut SplitMix) {
    let core: Vec<usize> = (0..pkgs.len()).filter(|&i| pkgs[i].tier == Tier::Core).collect();
    let mut bump = vec![false; pkgs.len()];
    if rng.chance(MASS_REBUILD_WEEKLY) {
        for _ in 0..1 + rng.below(3) {
            bump[core[rng.below(core.len())]] = true;
        }
    }
    for (i, p) in pkgs.iter().enumerate() {
        let weekly = match p.tier {
            Tier::Data => DATA_WEEKLY,
            Tier::Core => 0.0,
            Tier::Lib => LIB_WEEKLY,
            Tier::App => APP_WEEKLY,
        };
        if rng.chance(weekly) {
            bump[i] = true;
        }
    }
    let first_lib = pkgs.iter().position(|p| p.tier == Tier::Lib).expect("libraries");
    for i in (0..pkgs.len()).filter(|&i| bump[i]) {
        let p = &mut pkgs[i];
        p.version += 1;
        p.size = ((p.size as f64) * (0.1 * rng.normal()).exp()).max(1.0) as u64;
        if matches!(p.tier, Tier::Lib | Tier::App) && i > first_lib && rng.chance(REFERENCE_CHANGE) {
            let libs = i.min(first_lib + LIBS) - first_lib;
            if rng.chance(0.5) && p.deps.len() > 1 {
                let at = 1 + rng.below(p.deps.len() - 1);
                p.deps.remove(at);
            } else if libs > 0 {
                p.deps.push(first_lib + early(rng, libs, 1.6));
                p.deps.sort_unstable();
                p.deps.dedup();
            }
        }
    }
}

/// The store paths of the package set as it is now.
fn revision(pkgs: &[Package], seed: u64, label: String) -> Revision {
    let mut hashes: Vec<u64> = Vec::with_capacity(pkgs.len());
    let mut paths: Vec<StorePath> = Vec::with_capacity(pkgs.len());
    for p in pkgs {
        // The hash covers the seed, the name, the version and the references' hashes.
        let mut h = SplitMix(seed ^ crate::common::fnv(&p.attr) ^ (p.version as u64).rotate_left(40));
        let mut hash = h.next();
        for &d in &p.deps {
            hash = SplitMix(hash ^ hashes[d]).next();
        }
        hashes.push(hash);
        paths.push(fake_store_path(&format!("{}-1.{}", p.attr, p.version), hash));
    }
    let mut universe: BTreeMap<StorePath, PathInfo> = pkgs
        .iter()
        .zip(&paths)
        .map(|(p, path)| {
            let mut references: Vec<StorePath> = p.deps.iter().map(|&d| paths[d].clone()).collect();
            references.sort();
            (path.clone(), PathInfo { nar_size: p.size, closure_size: 0, nar_hash: None, references })
        })
        .collect();
    fill_closure_sizes(&mut universe);
    let attrs = pkgs.iter().zip(paths).map(|(p, path)| (p.attr.clone(), path)).collect();
    Revision { label, universe, attrs }
}

/// `revisions` weekly revisions and `images` images, all drawn from `seed`.
pub fn generate(seed: u64, revisions: usize, images: usize) -> History {
    let mut rng = SplitMix(seed);
    let mut pkgs = packages(&mut rng);
    let mut history = Vec::with_capacity(revisions);
    for week in 0..revisions {
        if week > 0 {
            advance(&mut pkgs, &mut rng);
        }
        history.push(revision(&pkgs, seed, format!("week-{week:02}")));
    }
    let apps: Vec<String> = pkgs.iter().filter(|p| p.tier == Tier::App).map(|p| p.attr.clone()).collect();
    let specs = draw_images(&history[0], &apps, images, &mut SplitMix(seed ^ 0x1aa9e5));
    History {
        source: format!(
            "the model (seed {seed}): {} packages ({CORE} core, {LIBS} libraries, {APPS} applications)",
            pkgs.len()
        ),
        revisions: history,
        images: specs,
        always: ALWAYS.iter().map(|a| a.to_string()).collect(),
    }
}
