//! Input (b) of the cross-image replay: Debian's package graph from the local apt cache
//! (`apt-cache dumpavail`), each package a store path, Depends and Pre-Depends its
//! references, Installed-Size its size.

use crate::across::Scenario;
use crate::common::{Image, SplitMix, fake_store_path, fnv, image_graph};
use nixery::nix::{PathInfo, StorePath};
use nixery::popularity::Popularity;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;

const DEBIAN_IMAGES: usize = 200;
/// A Debian package qualifies as an image's requested package when it has at least this
/// many (resolved) dependencies.
const DEBIAN_MIN_DEPS: usize = 2;

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

/// The Debian scenario; `None` when the apt cache lists nothing.
pub fn debian_scenario(seed: u64) -> Option<Scenario> {
    let out = Command::new("apt-cache").arg("dumpavail").output().ok()?;
    if !out.status.success() || out.stdout.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let deb = parse_dumpavail(&text);
    let n = deb.names.len();

    let eligible: Vec<usize> = (0..n).filter(|&i| deb.deps[i].len() >= DEBIAN_MIN_DEPS).collect();
    eprintln!("debian: {} packages with at least {DEBIAN_MIN_DEPS} dependencies to draw from", eligible.len());
    let mut rng = SplitMix(seed ^ 0xdeb1a9);
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
    let path_of: HashMap<usize, StorePath> =
        needed.iter().map(|&i| (i, fake_store_path(&deb.names[i], fnv(&deb.names[i])))).collect();
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
