//! The cross-image replay: a sequence of image pulls at one revision through a simulated
//! client cache, and the bytes each grouping makes the client download.
//!
//! The client downloads a layer unless a layer with the same contents (the sorted store
//! paths: the same paths give the same tar bytes) was downloaded before; bytes are the
//! uncompressed sizes of the layer's paths. The "ChainID" column reuses a layer only if all
//! layers below it in the manifest are the same too (Docker's layer store). The per-image
//! symlink layer is left out: it is the same for every strategy and never shared.

use crate::common::{Image, mib};
use crate::strategy::{BUDGETED, Strategy, check};
use nixery::nix::{RuntimeGraph, StorePath};
use nixery::popularity::Popularity;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

pub struct Scenario {
    pub name: String,
    pub source: String,
    pub images: Vec<Image>,
    pub popularity: Popularity,
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

/// Prints the scenario's table at each budget.
pub fn report(scenario: &Scenario, budgets: &[usize]) {
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
    for &budget in budgets {
        for strategy in BUDGETED {
            row(strategy, Some(budget));
        }
    }
    row(Strategy::PerPath, None);
    row(Strategy::Single, None);
}

/// One image holding every path of the scenario: how the groupings scale.
pub fn scaling(scenario: &Scenario) {
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
        for strategy in BUDGETED {
            let started = Instant::now();
            let layers = strategy.layers(&image, &scenario.popularity, budget);
            let time = started.elapsed();
            check(&image, &layers, strategy, budget);
            println!("| {} | {budget} | {} | {:.0} ms |", strategy.name(), layers.len(), time.as_secs_f64() * 1000.0);
        }
    }
}
