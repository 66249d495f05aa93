//! Keeping up with a moving package set: every image is pulled again at every revision, and
//! what that downloads is scored two ways:
//!
//! - **per image**: a client that holds the layers of this image at the previous revision
//!   downloads every layer it does not hold (summed over images and revisions);
//! - **node**: a node that holds the layers of every image at the previous revision
//!   downloads every layer of this revision's images it does not hold, each once.
//!
//! A layer is identified by its sorted store paths (the archives are deterministic) and
//! weighs the NAR sizes of its paths. Grouping sees each revision alone (the popularity data
//! of that revision, or none), never an earlier one, as the server does.

use crate::common::{Image, image_graph, mib, referrer_counts};
use crate::history::History;
use crate::strategy::{Strategy, check};
use nixery::nix::StorePath;
use nixery::popularity::Popularity;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

/// One row: a strategy at a budget (`None`: it takes none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    pub strategy: Strategy,
    pub budget: Option<usize>,
}

#[derive(Default, Clone)]
pub struct Score {
    pub image_bytes: u64,
    pub node_bytes: u64,
    /// Layers summed over images and revisions.
    pub layers: usize,
    pub time: Duration,
}

/// A layer's identity: 128 bits of hash over its sorted contents.
fn layer_id(contents: &[StorePath]) -> u128 {
    let mut a = DefaultHasher::new();
    contents.hash(&mut a);
    let mut b = DefaultHasher::new();
    0x5eed_u32.hash(&mut b);
    contents.hash(&mut b);
    (a.finish() as u128) << 64 | b.finish() as u128
}

/// The images of one revision.
fn images_at(history: &History, r: usize) -> Vec<Image> {
    let revision = &history.revisions[r];
    let always: Vec<StorePath> = history.always.iter().map(|a| revision.attrs[a].clone()).collect();
    history
        .images
        .iter()
        .map(|spec| {
            let mut roots: Vec<StorePath> = spec.attrs.iter().map(|a| revision.attrs[a].clone()).collect();
            roots.extend(always.iter().cloned());
            Image {
                label: spec.label.clone(),
                graph: image_graph(&revision.universe, &roots),
                very_popular: always.iter().cloned().collect(),
            }
        })
        .collect()
}

/// What the history's images look like, for the report: paths per image at the first
/// revision (min, median, max) and the average bytes of an image.
pub fn shape(history: &History) -> (usize, usize, usize, u64) {
    let images = images_at(history, 0);
    let mut lens: Vec<usize> = images.iter().map(|i| i.graph.paths.len()).collect();
    lens.sort_unstable();
    let bytes: u64 = images.iter().map(|i| i.graph.paths.values().map(|p| p.nar_size).sum::<u64>()).sum();
    (lens[0], lens[lens.len() / 2], lens[lens.len() - 1], bytes / images.len().max(1) as u64)
}

/// Scores every row over the whole history; `popularity` says whether grouping gets each
/// revision's popularity data.
pub fn score(history: &History, rows: &[Row], popularity: bool) -> Vec<Score> {
    let n = history.images.len();
    let mut scores = vec![Score::default(); rows.len()];
    // Per row: each image's layer ids at the previous revision, and their union.
    let mut held: Vec<Vec<HashSet<u128>>> = vec![vec![HashSet::new(); n]; rows.len()];
    let mut node: Vec<HashSet<u128>> = vec![HashSet::new(); rows.len()];
    for r in 0..history.revisions.len() {
        let images = images_at(history, r);
        let data = if popularity { referrer_counts(&history.revisions[r].universe) } else { Popularity::default() };
        for (k, row) in rows.iter().enumerate() {
            let score = &mut scores[k];
            let mut now: HashMap<u128, u64> = HashMap::new();
            for (i, image) in images.iter().enumerate() {
                let started = Instant::now();
                let layers = row.strategy.layers(image, &data, row.budget.unwrap_or(usize::MAX));
                score.time += started.elapsed();
                check(image, &layers, row.strategy, row.budget.unwrap_or(usize::MAX));
                let mut ids = HashSet::with_capacity(layers.len());
                for contents in &layers {
                    let id = layer_id(contents);
                    let size: u64 = contents.iter().map(|p| image.graph.paths[p].nar_size).sum();
                    if r > 0 && !held[k][i].contains(&id) {
                        score.image_bytes += size;
                    }
                    now.insert(id, size);
                    ids.insert(id);
                }
                if r > 0 {
                    score.layers += layers.len();
                }
                held[k][i] = ids;
            }
            if r > 0 {
                score.node_bytes += now.iter().filter(|(id, _)| !node[k].contains(*id)).map(|(_, s)| s).sum::<u64>();
            }
            node[k] = now.into_keys().collect();
        }
    }
    scores
}

/// Prints one history's table; returns the scores for the summary.
pub fn report(history: &History, rows: &[Row], popularity: bool) -> Vec<Score> {
    let started = Instant::now();
    let scores = score(history, rows, popularity);
    let (min, median, max, bytes) = shape(history);
    let updates = (history.revisions.len() - 1) * history.images.len();
    println!(
        "\n## Updates: {}, {} popularity data\n\n{} revisions ({} to {}), {} images of {min}–{max} store paths \
         (median {median}), {} MiB each on average; {updates} image updates. Scored in {:.1} s.\n",
        history.source,
        if popularity { "with" } else { "without" },
        history.revisions.len(),
        history.revisions[0].label,
        history.revisions.last().map_or("", |r| r.label.as_str()),
        history.images.len(),
        mib(bytes),
        started.elapsed().as_secs_f64(),
    );
    let find = |s: Strategy| rows.iter().position(|r| r.strategy == s).map(|k| &scores[k]);
    let (ideal, single) = (find(Strategy::PerPath), find(Strategy::Single));
    println!(
        "| strategy | budget | per image: MiB | × ideal | of single layer | node: MiB | × ideal | of single layer \
         | layers per image | grouping time |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let ratio = |a: u64, b: Option<u64>| b.map_or("–".to_owned(), |b| format!("{:.2}", a as f64 / b.max(1) as f64));
    let share =
        |a: u64, b: Option<u64>| b.map_or("–".to_owned(), |b| format!("{:.0} %", 100.0 * a as f64 / b.max(1) as f64));
    for (row, s) in rows.iter().zip(&scores) {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.0} ms |",
            row.strategy.name(),
            budget_label(row.budget),
            mib(s.image_bytes),
            ratio(s.image_bytes, ideal.map(|i| i.image_bytes)),
            share(s.image_bytes, single.map(|i| i.image_bytes)),
            mib(s.node_bytes),
            ratio(s.node_bytes, ideal.map(|i| i.node_bytes)),
            share(s.node_bytes, single.map(|i| i.node_bytes)),
            s.layers as f64 / updates.max(1) as f64,
            s.time.as_secs_f64() * 1000.0,
        );
    }
    scores
}

/// Grouping time on one image of at least 1,000 paths (the images' packages together, at the
/// first revision), the fastest of three runs.
pub fn timing(history: &History, rows: &[Row]) {
    let revision = &history.revisions[0];
    let mut attrs: Vec<&str> = history.always.iter().map(String::as_str).collect();
    for spec in &history.images {
        if crate::history::closure_len(revision, &attrs) >= 1000 {
            break;
        }
        attrs.extend(spec.attrs.iter().map(String::as_str));
    }
    let roots: Vec<StorePath> = attrs.iter().map(|a| revision.attrs[*a].clone()).collect();
    let graph = image_graph(&revision.universe, &roots);
    let very_popular = history.always.iter().map(|a| revision.attrs[a].clone()).collect();
    let image = Image { label: "timing".to_owned(), graph, very_popular };
    let data = referrer_counts(&revision.universe);
    println!(
        "\nGrouping time of one image of {} paths ({} packages), fastest of 3:\n",
        image.graph.paths.len(),
        attrs.len()
    );
    println!("| strategy | budget | layers | time |");
    println!("|---|---:|---:|---:|");
    for row in rows.iter().filter(|r| r.strategy.budgeted()) {
        let budget = row.budget.unwrap_or(ALL);
        let mut best = Duration::MAX;
        let mut layers = 0;
        for _ in 0..3 {
            let started = Instant::now();
            layers = row.strategy.layers(&image, &data, budget).len();
            best = best.min(started.elapsed());
        }
        println!(
            "| {} | {} | {layers} | {:.2} ms |",
            row.strategy.name(),
            budget_label(row.budget),
            best.as_secs_f64() * 1000.0
        );
    }
}

pub fn budget_label(budget: Option<usize>) -> String {
    match budget {
        None => "–".to_owned(),
        Some(b) if b >= ALL => "all".to_owned(),
        Some(b) => b.to_string(),
    }
}

/// The budget that holds every path of any image ("all" in the settings).
pub const ALL: usize = 1 << 20;

/// The summary over seeds: × ideal per image and for the node, one column pair per run.
pub fn summary(runs: &[(String, Vec<Score>)], rows: &[Row]) {
    if runs.len() < 2 {
        return;
    }
    println!("\n## Updates, all runs: × the per-path ideal (per image / node)\n");
    print!("| strategy | budget |");
    for (label, _) in runs {
        print!(" {label} |");
    }
    println!();
    println!("|---|---:|{}", "---:|".repeat(runs.len()));
    let ideal = rows.iter().position(|r| r.strategy == Strategy::PerPath);
    for (k, row) in rows.iter().enumerate() {
        print!("| {} | {} |", row.strategy.name(), budget_label(row.budget));
        for (_, scores) in runs {
            match ideal {
                Some(i) => print!(
                    " {:.2} / {:.2} |",
                    scores[k].image_bytes as f64 / scores[i].image_bytes.max(1) as f64,
                    scores[k].node_bytes as f64 / scores[i].node_bytes.max(1) as f64
                ),
                None => print!(" – |"),
            }
        }
        println!();
    }
}
