//! Input (a) of the cross-image replay: the test package set (tests/pkgs), from real Nix when
//! `nix-build` works offline, else from the snapshot benches/data/test-pkgs.json.

use crate::across::Scenario;
use crate::common::{Image, SplitMix, image_graph, referrer_counts};
use nixery::nix::{RuntimeGraph, StorePath};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

const TEST_IMAGES: usize = 40;

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

/// The test package set scenario: 40 images of 1–4 of its packages.
pub fn test_set_scenario(seed: u64) -> Scenario {
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

    let mut rng = SplitMix(seed);
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
