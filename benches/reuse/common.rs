//! What every part of the benchmark shares: the random numbers, images and their graphs.

use nixery::nix::{PathInfo, RuntimeGraph, StorePath};
use nixery::popularity::Popularity;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// splitmix64: tiny, well-mixed, and the same everywhere.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the modulo bias is irrelevant at these sizes).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(f64::MIN_POSITIVE);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// One pull: the image's runtime graph and its always-included paths.
pub struct Image {
    pub label: String,
    pub graph: RuntimeGraph,
    pub very_popular: BTreeSet<StorePath>,
}

/// The closure of `roots` in `universe` as an image graph.
pub fn image_graph(universe: &BTreeMap<StorePath, PathInfo>, roots: &[StorePath]) -> RuntimeGraph {
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
pub fn referrer_counts(universe: &BTreeMap<StorePath, PathInfo>) -> Popularity {
    let mut counts: HashMap<String, u64> = HashMap::new();
    for info in universe.values() {
        for r in &info.references {
            *counts.entry(r.name().to_owned()).or_default() += 1;
        }
    }
    Popularity::from_counts(counts)
}

/// `/nix/store/<32 chars>-<name>` with a hash that depends only on `seed`.
pub fn fake_store_path(name: &str, seed: u64) -> StorePath {
    const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let mut rng = SplitMix(seed);
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
    StorePath::parse(&format!("/nix/store/{hash}-{name}")).expect("a valid store path name")
}

/// FNV-1a of `text`: a seed for [`fake_store_path`] that depends only on the text.
pub fn fnv(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}
