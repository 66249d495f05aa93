//! Layer reuse benchmark: replays a sequence of image pulls through a simulated client cache
//! and reports the bytes each layer grouping makes the client download.
//!
//! `cargo bench --bench reuse` (docs/reuse.md has the results and the reasoning). Inputs:
//!
//! - the test package set (tests/pkgs): its runtime graph from real Nix when `nix-build`
//!   works offline, else from the snapshot benches/data/test-pkgs.json
//!   (`NIXERY_REUSE_RECORD=1` rewrites the snapshot from Nix, `NIXERY_REUSE_SNAPSHOT=1`
//!   uses it even when Nix works);
//! - Debian's package graph from the local apt cache (`apt-cache dumpavail`), each package a
//!   store path, Depends and Pre-Depends its references, Installed-Size its size.
//!
//! The client downloads a layer unless a layer with the same contents (the sorted store
//! paths: the same paths give the same tar bytes) was downloaded before; bytes are the
//! uncompressed sizes of the layer's paths. The "ChainID" column reuses a layer only if all
//! layers below it in the manifest are the same too (Docker's layer store). The per-image
//! symlink layer is left out: it is the same for every strategy and never shared.
//!
//! Sequences are drawn with a fixed-seed splitmix64, so every run replays the same pulls.

use nixery::layers::{self, Layer};
use nixery::nix::{PathInfo, RuntimeGraph, StorePath};
use nixery::popularity::Popularity;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const BUDGETS: [usize; 3] = [10, 40, 94];
const SEED: u64 = 0x6e69_7865_7279_2d72; // "nixery-r"
const DEBIAN_IMAGES: usize = 200;
const TEST_IMAGES: usize = 40;
/// A Debian package qualifies as an image's requested package when it has at least this
/// many (resolved) dependencies.
const DEBIAN_MIN_DEPS: usize = 2;

/// splitmix64: tiny, well-mixed, and the same everywhere.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the modulo bias is irrelevant at these sizes).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One pull: the image's runtime graph and its always-included paths.
struct Image {
    label: String,
    graph: RuntimeGraph,
    very_popular: BTreeSet<StorePath>,
}

struct Scenario {
    name: String,
    source: String,
    images: Vec<Image>,
    popularity: Popularity,
}

/// The closure of `roots` in `universe` as an image graph.
fn image_graph(universe: &BTreeMap<StorePath, PathInfo>, roots: &[StorePath]) -> RuntimeGraph {
    let mut paths = BTreeMap::new();
    let mut stack: Vec<&StorePath> = roots.iter().collect();
    while let Some(p) = stack.pop() {
        if paths.contains_key(p) {
            continue;
        }
        let info = &universe[p];
        paths.insert(p.clone(), info.clone());
        stack.extend(&info.references);
    }
    let mut roots = roots.to_vec();
    roots.sort();
    roots.dedup();
    RuntimeGraph { roots, paths }
}

/// Direct referrer counts by store path name: Nixery's popularity data, for this universe.
fn referrer_counts(universe: &BTreeMap<StorePath, PathInfo>) -> Popularity {
    let mut counts: HashMap<String, u64> = HashMap::new();
    for info in universe.values() {
        for r in &info.references {
            *counts.entry(r.name().to_owned()).or_default() += 1;
        }
    }
    Popularity::from_counts(counts)
}

// ---------------------------------------------------------------------------------------
// The test package set.

const TEST_PACKAGES: [&str; 9] = [
    "hello",
    "hello-lib",
    "fooBar",
    "haskellPackages.pandoc",
    "_1password",
    "bashInteractive",
    "coreutils",
    "moreutils",
    "nano",
];
const ALWAYS: [&str; 2] = ["cacert", "iana-etc"];

fn snapshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/data/test-pkgs.json")
}

/// Attribute → out path, and `nix path-info` JSON of their closure, from real Nix.
fn test_set_from_nix() -> Result<(BTreeMap<String, StorePath>, Vec<u8>), String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let attrs: Vec<&str> = TEST_PACKAGES.iter().chain(ALWAYS.iter()).copied().collect();
    let mut build = Command::new("nix-build");
    build.current_dir(root).env("NIX_CONFIG", "substituters =").args(["--no-out-link", "tests/pkgs"]);
    for a in &attrs {
        build.args(["-A", a]);
    }
    let out = build.output().map_err(|e| format!("nix-build: {e}"))?;
    if !out.status.success() {
        return Err(format!("nix-build failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let outs: Vec<StorePath> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(StorePath::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("nix-build: {e}"))?;
    if outs.len() != attrs.len() {
        return Err(format!("nix-build printed {} paths", outs.len()));
    }
    let info = Command::new("nix")
        .env("NIX_CONFIG", "substituters =")
        .args(["--extra-experimental-features", "nix-command", "path-info", "--json", "--recursive", "--closure-size"])
        .args(&outs)
        .output()
        .map_err(|e| format!("nix path-info: {e}"))?;
    if !info.status.success() {
        return Err(format!("nix path-info failed: {}", String::from_utf8_lossy(&info.stderr)));
    }
    let attrs = attrs.iter().map(|a| a.to_string()).zip(outs).collect();
    Ok((attrs, info.stdout))
}

fn test_set_scenario() -> Scenario {
    let forced = std::env::var_os("NIXERY_REUSE_SNAPSHOT").is_some();
    let live = if forced { Err("NIXERY_REUSE_SNAPSHOT is set".to_owned()) } else { test_set_from_nix() };
    let (attrs, universe, source) = match live {
        Ok((attrs, json)) => {
            let graph = RuntimeGraph::from_path_info(&json, attrs.values().cloned()).expect("nix path-info output");
            if std::env::var_os("NIXERY_REUSE_RECORD").is_some() {
                let raw: Vec<serde_json::Value> = graph
                    .paths
                    .iter()
                    .map(|(p, i)| {
                        serde_json::json!({"path": p, "narSize": i.nar_size,
                            "closureSize": i.closure_size, "references": i.references})
                    })
                    .collect();
                let doc = serde_json::json!({"attrs": attrs, "pathInfo": raw});
                let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
                std::fs::write(snapshot_path(), text).expect("write snapshot");
            }
            (attrs, graph.paths, "real Nix (nix-build tests/pkgs)".to_owned())
        }
        Err(why) => {
            let text = std::fs::read(snapshot_path()).expect("benches/data/test-pkgs.json");
            let doc: serde_json::Value = serde_json::from_slice(&text).expect("snapshot JSON");
            let attrs: BTreeMap<String, StorePath> =
                serde_json::from_value(doc["attrs"].clone()).expect("snapshot attrs");
            let raw = serde_json::to_vec(&doc["pathInfo"]).unwrap();
            let graph = RuntimeGraph::from_path_info(&raw, attrs.values().cloned()).expect("snapshot pathInfo");
            (attrs, graph.paths, format!("snapshot benches/data/test-pkgs.json ({why})"))
        }
    };
    let popularity = referrer_counts(&universe);
    let very_popular: BTreeSet<StorePath> = ALWAYS.iter().map(|a| attrs[*a].clone()).collect();

    let mut rng = SplitMix(SEED);
    let images = (0..TEST_IMAGES)
        .map(|_| {
            let want = 1 + rng.below(4);
            let mut chosen = BTreeSet::new();
            while chosen.len() < want {
                chosen.insert(TEST_PACKAGES[rng.below(TEST_PACKAGES.len())]);
            }
            let label = chosen.iter().copied().collect::<Vec<_>>().join("/");
            let roots: Vec<StorePath> = chosen.iter().chain(ALWAYS.iter()).map(|a| attrs[*a].clone()).collect();
            Image { label, graph: image_graph(&universe, &roots), very_popular: very_popular.clone() }
        })
        .collect();
    Scenario { name: "test package set (tests/pkgs)".to_owned(), source, images, popularity }
}

// ---------------------------------------------------------------------------------------
// Debian's package graph.

struct Debian {
    names: Vec<String>,
    size: Vec<u64>,
    /// Resolved Depends + Pre-Depends, sorted, cycles broken.
    deps: Vec<Vec<u32>>,
    /// Direct reverse dependencies (before breaking cycles).
    rdeps: Vec<u64>,
}

fn parse_dumpavail(text: &str) -> Debian {
    // Package → (size in bytes, raw dependency fields).
    let mut raw: BTreeMap<String, (u64, Vec<String>)> = BTreeMap::new();
    let mut current: Option<(String, u64, Vec<String>)> = None;
    let mut flush = |cur: &mut Option<(String, u64, Vec<String>)>| {
        if let Some((name, size, deps)) = cur.take() {
            // dumpavail prints one stanza per package here; should there be more, the
            // first wins.
            raw.entry(name).or_insert((size, deps));
        }
    };
    for line in text.lines() {
        if line.is_empty() {
            flush(&mut current);
        } else if let Some(v) = line.strip_prefix("Package: ") {
            flush(&mut current);
            current = Some((v.trim().to_owned(), 0, Vec::new()));
        } else if let Some(cur) = current.as_mut() {
            if let Some(v) = line.strip_prefix("Installed-Size: ") {
                cur.1 = v.trim().parse::<u64>().unwrap_or(0) * 1024;
            } else if let Some(v) = line.strip_prefix("Depends: ").or_else(|| line.strip_prefix("Pre-Depends: ")) {
                cur.2.push(v.to_owned());
            }
        }
    }
    flush(&mut current);

    let names: Vec<String> = raw.keys().cloned().collect();
    let index: HashMap<&str, u32> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i as u32)).collect();
    let mut size = Vec::with_capacity(names.len());
    let mut deps: Vec<Vec<u32>> = Vec::with_capacity(names.len());
    for (i, (_, (bytes, fields))) in raw.iter().enumerate() {
        size.push(*bytes);
        let mut d = Vec::new();
        for field in fields {
            for group in field.split(',') {
                // `a (>= 1) | b:any`: the first alternative that is a real package.
                let pick = group.split('|').find_map(|alt| {
                    let name = alt.trim().split([' ', '(', ':']).next().unwrap_or_default();
                    index.get(name).copied()
                });
                if let Some(j) = pick
                    && j as usize != i
                {
                    d.push(j);
                }
            }
        }
        d.sort_unstable();
        d.dedup();
        deps.push(d);
    }
    let mut rdeps = vec![0u64; names.len()];
    for d in &deps {
        for &j in d {
            rdeps[j as usize] += 1;
        }
    }

    // Nix's graphs are acyclic, Debian's are not (libc6 <-> libgcc-s1, perl <->
    // perl-modules): drop the edges that close a cycle, found by a depth-first search in name
    // order, so every strategy sees the same DAG.
    let n = names.len();
    let mut state = vec![0u8; n]; // 0 new, 1 on the stack, 2 done
    let mut dropped = 0usize;
    for start in 0..n {
        if state[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if *next < deps[node].len() {
                let child = deps[node][*next] as usize;
                match state[child] {
                    0 => {
                        *next += 1;
                        state[child] = 1;
                        stack.push((child, 0));
                    }
                    1 => {
                        deps[node].remove(*next);
                        dropped += 1;
                    }
                    _ => *next += 1,
                }
            } else {
                state[node] = 2;
                stack.pop();
            }
        }
    }
    eprintln!("debian: {n} packages, {dropped} dependency edges dropped to break cycles");
    Debian { names, size, deps, rdeps }
}

/// `/nix/store/<32 chars>-<name>` with a hash that depends only on the name.
fn fake_store_path(name: &str) -> StorePath {
    const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let mut rng = SplitMix(h);
    let mut hash = String::with_capacity(32);
    while hash.len() < 32 {
        let mut word = rng.next();
        for _ in 0..12 {
            if hash.len() == 32 {
                break;
            }
            hash.push(ALPHABET[(word & 31) as usize] as char);
            word >>= 5;
        }
    }
    StorePath::parse(&format!("/nix/store/{hash}-{name}")).expect("Debian package names are store path names")
}

fn debian_scenario() -> Option<Scenario> {
    let out = Command::new("apt-cache").arg("dumpavail").output().ok()?;
    if !out.status.success() || out.stdout.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let deb = parse_dumpavail(&text);
    let n = deb.names.len();

    let eligible: Vec<usize> = (0..n).filter(|&i| deb.deps[i].len() >= DEBIAN_MIN_DEPS).collect();
    eprintln!("debian: {} packages with at least {DEBIAN_MIN_DEPS} dependencies to draw from", eligible.len());
    let mut rng = SplitMix(SEED ^ 0xdeb1a9);
    let picks: Vec<Vec<usize>> = (0..DEBIAN_IMAGES)
        .map(|_| {
            let want = 1 + rng.below(4);
            let mut chosen = BTreeSet::new();
            while chosen.len() < want {
                chosen.insert(eligible[rng.below(eligible.len())]);
            }
            chosen.into_iter().collect()
        })
        .collect();

    // The universe: every package in some image's closure, with its closure size.
    let mut needed = BTreeSet::new();
    let mut stack: Vec<usize> = picks.iter().flatten().copied().collect();
    while let Some(i) = stack.pop() {
        if needed.insert(i) {
            stack.extend(deb.deps[i].iter().map(|&j| j as usize));
        }
    }
    let path_of: HashMap<usize, StorePath> = needed.iter().map(|&i| (i, fake_store_path(&deb.names[i]))).collect();
    let mut universe = BTreeMap::new();
    let mut seen = vec![u32::MAX; n];
    for (stamp, &i) in needed.iter().enumerate() {
        let mut closure_size = 0;
        let mut stack = vec![i];
        while let Some(j) = stack.pop() {
            if seen[j] != stamp as u32 {
                seen[j] = stamp as u32;
                closure_size += deb.size[j];
                stack.extend(deb.deps[j].iter().map(|&k| k as usize));
            }
        }
        let mut references: Vec<StorePath> = deb.deps[i].iter().map(|&j| path_of[&(j as usize)].clone()).collect();
        references.sort();
        universe
            .insert(path_of[&i].clone(), PathInfo { nar_size: deb.size[i], closure_size, nar_hash: None, references });
    }
    let popularity = Popularity::from_counts(
        (0..n).filter(|&i| deb.rdeps[i] > 0).map(|i| (deb.names[i].clone(), deb.rdeps[i])).collect(),
    );
    let images = picks
        .iter()
        .map(|pick| {
            let roots: Vec<StorePath> = pick.iter().map(|i| path_of[i].clone()).collect();
            Image {
                label: pick.iter().map(|&i| deb.names[i].as_str()).collect::<Vec<_>>().join("/"),
                graph: image_graph(&universe, &roots),
                very_popular: BTreeSet::new(),
            }
        })
        .collect();
    Some(Scenario {
        name: "Debian (apt-cache dumpavail)".to_owned(),
        source: format!("{n} packages in the local apt cache"),
        images,
        popularity,
    })
}

// ---------------------------------------------------------------------------------------
// Strategies and the client.

#[derive(Clone, Copy)]
enum Strategy {
    /// `nixery::layers::group`: what the server uses.
    Group,
    /// `nixery::layers::group_nixery`: Nixery's algorithm.
    Nixery,
    /// nixpkgs' buildLayeredImage popularity contest.
    Contest,
    /// Every store path a layer of its own (budget ignored): the best any grouping can do.
    PerPath,
    /// The whole closure in one layer.
    Single,
}

impl Strategy {
    fn name(self) -> &'static str {
        match self {
            Strategy::Group => "layers::group (this project)",
            Strategy::Nixery => "layers::group_nixery (Nixery)",
            Strategy::Contest => "nixpkgs popularity contest",
            Strategy::PerPath => "one layer per path (ideal)",
            Strategy::Single => "one single layer",
        }
    }

    /// The image's layers in manifest order (bottom first), each as sorted contents.
    fn layers(self, image: &Image, popularity: &Popularity, budget: usize) -> Vec<Vec<StorePath>> {
        let contents = |ls: Vec<Layer>| ls.into_iter().map(|l| l.contents).collect();
        let g = &image.graph;
        match self {
            Strategy::Group => contents(layers::group(g, popularity, &image.very_popular, budget)),
            Strategy::Nixery => contents(layers::group_nixery(g, popularity, &image.very_popular, budget)),
            Strategy::Contest => contents(layers::group_popularity_contest(g, budget)),
            Strategy::PerPath => {
                // Bottom-most the paths most packages use, so ChainIDs have a chance.
                let mut paths: Vec<&StorePath> = g.paths.keys().collect();
                paths.sort_by_key(|p| (std::cmp::Reverse(popularity.of_name(p.name())), *p));
                paths.into_iter().map(|p| vec![p.clone()]).collect()
            }
            Strategy::Single => vec![g.paths.keys().cloned().collect()],
        }
    }
}

struct Outcome {
    bytes: u64,
    chain_bytes: u64,
    layers: usize,
    time: Duration,
}

fn replay(scenario: &Scenario, strategy: Strategy, budget: usize) -> Outcome {
    let mut ids: HashMap<Vec<StorePath>, u32> = HashMap::new();
    let mut chains: HashSet<[u8; 32]> = HashSet::new();
    let mut out = Outcome { bytes: 0, chain_bytes: 0, layers: 0, time: Duration::ZERO };
    for image in &scenario.images {
        let started = Instant::now();
        let layers = strategy.layers(image, &scenario.popularity, budget);
        out.time += started.elapsed();
        check(image, &layers, strategy, budget);
        out.layers += layers.len();
        let mut chain = [0u8; 32];
        for contents in layers {
            let size: u64 = contents.iter().map(|p| image.graph.paths[p].nar_size).sum();
            let next = ids.len() as u32;
            let id = match ids.get(&contents) {
                Some(&id) => id,
                None => {
                    out.bytes += size;
                    ids.insert(contents, next);
                    next
                }
            };
            let mut h = Sha256::new();
            h.update(chain);
            h.update(id.to_le_bytes());
            chain = h.finalize().into();
            if chains.insert(chain) {
                out.chain_bytes += size;
            }
        }
    }
    out
}

/// Every strategy must stay within the budget and place every path exactly once.
fn check(image: &Image, layers: &[Vec<StorePath>], strategy: Strategy, budget: usize) {
    if !matches!(strategy, Strategy::PerPath) {
        assert!(layers.len() <= budget, "{} over budget", strategy.name());
    }
    let mut all: Vec<&StorePath> = layers.iter().flatten().collect();
    all.sort();
    let len = all.len();
    all.dedup();
    assert_eq!(len, all.len(), "{}: a path in two layers", strategy.name());
    assert!(all.iter().copied().eq(image.graph.paths.keys()), "{}: paths missing in {}", strategy.name(), image.label);
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

fn report(scenario: &Scenario) {
    let images = scenario.images.len();
    let pulled: u64 = scenario.images.iter().map(|i| i.graph.paths.values().map(|p| p.nar_size).sum::<u64>()).sum();
    let distinct: BTreeSet<&StorePath> = scenario.images.iter().flat_map(|i| i.graph.paths.keys()).collect();
    let paths: usize = scenario.images.iter().map(|i| i.graph.paths.len()).sum();
    println!("\n## {}\n", scenario.name);
    println!(
        "{images} images from {}; {} store paths per image on average ({} largest), {} distinct; \
         {} MiB pulled in all, without any cache.\n",
        scenario.source,
        paths / images.max(1),
        scenario.images.iter().map(|i| i.graph.paths.len()).max().unwrap_or(0),
        distinct.len(),
        mib(pulled),
    );
    let ideal = replay(scenario, Strategy::PerPath, 0);
    println!(
        "| strategy | budget | total bytes downloaded | MiB | vs ideal | layers per image (avg) \
         | ChainID: MiB | ChainID: vs ideal | grouping time (all images) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let row = |strategy: Strategy, budget: Option<usize>| {
        let o = replay(scenario, strategy, budget.unwrap_or(usize::MAX));
        let vs = |b: u64| format!("{:+.1}%", (b as f64 / ideal.bytes as f64 - 1.0) * 100.0);
        println!(
            "| {} | {} | {} | {} | {} | {:.1} | {} | {} | {:.0} ms |",
            strategy.name(),
            budget.map_or("–".to_owned(), |b| b.to_string()),
            o.bytes,
            mib(o.bytes),
            vs(o.bytes),
            o.layers as f64 / images as f64,
            mib(o.chain_bytes),
            vs(o.chain_bytes),
            o.time.as_secs_f64() * 1000.0,
        );
    };
    for budget in BUDGETS {
        row(Strategy::Group, Some(budget));
        row(Strategy::Nixery, Some(budget));
        row(Strategy::Contest, Some(budget));
    }
    row(Strategy::PerPath, None);
    row(Strategy::Single, None);
}

/// One image holding every path of the scenario: how the groupings scale.
fn scaling(scenario: &Scenario) {
    let mut paths = BTreeMap::new();
    let mut roots = BTreeSet::new();
    for image in &scenario.images {
        roots.extend(image.graph.roots.iter().cloned());
        paths.extend(image.graph.paths.iter().map(|(p, i)| (p.clone(), i.clone())));
    }
    let image = Image {
        label: "everything".to_owned(),
        graph: RuntimeGraph { roots: roots.into_iter().collect(), paths },
        very_popular: BTreeSet::new(),
    };
    println!(
        "\n## Scaling: one image of all {} paths of {} ({} requested packages)\n",
        image.graph.paths.len(),
        scenario.name,
        image.graph.roots.len()
    );
    println!("| strategy | budget | layers | grouping time |");
    println!("|---|---:|---:|---:|");
    for budget in [10, 94] {
        for strategy in [Strategy::Group, Strategy::Nixery, Strategy::Contest] {
            let started = Instant::now();
            let layers = strategy.layers(&image, &scenario.popularity, budget);
            let time = started.elapsed();
            check(&image, &layers, strategy, budget);
            println!("| {} | {budget} | {} | {:.0} ms |", strategy.name(), layers.len(), time.as_secs_f64() * 1000.0);
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let started = Instant::now();
    let mut test_set = test_set_scenario();
    report(&test_set);
    test_set.name = "test package set, without popularity data (the server's default)".to_owned();
    test_set.popularity = Popularity::default();
    report(&test_set);
    match debian_scenario() {
        Some(mut debian) => {
            report(&debian);
            scaling(&debian);
            debian.name = "Debian, without popularity data".to_owned();
            debian.popularity = Popularity::default();
            report(&debian);
        }
        None => println!("\n## Debian\n\nskipped: `apt-cache dumpavail` printed nothing (run `apt-get update`)"),
    }
    println!(
        "\nbenchmark ran in {:.1} s on {} cores",
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
}
