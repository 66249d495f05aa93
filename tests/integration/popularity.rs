//! Popularity end to end: `nixery popcount` on the test package set (checked against Nix's
//! own view of the derivations), loading the result from a file and over HTTP, and
//! `nixery layers` plans that follow it.

use crate::harness::process::{Daemon, read_log};
use crate::harness::{Server, free_port, http, run, temp_dir};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const PKGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pkgs/default.nix");

fn nixery() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nixery"));
    c.env("NIX_CONFIG", "substituters =").env("RUST_LOG", "warn");
    for var in ["NIXERY_CHANNEL", "NIXERY_PKGS_REPO", "NIXERY_PKGS_PATH", "NIX_POPULARITY_URL", "NIXERY_LAYER_BUDGET"] {
        c.env_remove(var);
    }
    c
}

fn popcount(out: &Path) -> BTreeMap<String, u64> {
    run(nixery().args(["popcount", "--pkgs-path", PKGS, "--batch", "4", "-o"]).arg(out));
    serde_json::from_slice(&std::fs::read(out).unwrap()).expect("popcount writes a JSON object of counts")
}

/// Nix's own answer: for every top-level derivation that instantiates (not those the package
/// set refuses, as nixpkgs refuses unfree ones), the names of the derivations it references
/// directly (`nix-store --query --references` of its .drv), counted.
fn expected_counts() -> BTreeMap<String, u64> {
    let attrs = run(Command::new("nix-instantiate").args(["--eval", "--json", "--expr"]).arg(format!(
        "builtins.filter (n: let v = (import {PKGS} {{}}).${{n}}; in (builtins.tryEval (v.type or null == \"derivation\" && builtins.isString v.drvPath)).value == true) (builtins.attrNames (import {PKGS} {{}}))"
    )));
    let attrs: Vec<String> = serde_json::from_str(&attrs).unwrap();
    let mut counts = BTreeMap::new();
    for attr in attrs {
        let drv =
            run(Command::new("nix-instantiate").arg(PKGS).args(["-A", &attr]).env("NIX_CONFIG", "substituters ="));
        // A package whose default output is not `out` is printed as `<drv>!<output>`.
        let drv = drv.trim().split('!').next().unwrap_or_default();
        let refs = run(Command::new("nix-store").args(["--query", "--references", drv]));
        let names: BTreeSet<String> = refs
            .lines()
            .filter(|r| r.ends_with(".drv"))
            .map(|r| r.rsplit('/').next().unwrap()[33..].trim_end_matches(".drv").to_owned())
            .collect();
        for n in names {
            *counts.entry(n).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn popcount_counts_references_of_the_test_set() {
    let dir = temp_dir("popcount");
    let counts = popcount(&dir.path().join("popularity.json"));
    let expected = expected_counts();
    assert_eq!(counts, expected, "popcount disagrees with nix-store --query --references");
    // Facts of tests/pkgs/default.nix, as a sanity check on the comparison itself.
    assert!(counts["busybox-1.35.0"] >= 8, "{counts:?}");
    assert_eq!(counts["greeting-1.0"], 1, "only hello-lib uses greeting");
    assert!(!counts.contains_key("hello"), "nothing references hello");
    // The file is written whole: a second run gives the same bytes.
    let again = dir.path().join("again.json");
    popcount(&again);
    assert_eq!(std::fs::read(dir.path().join("popularity.json")).unwrap(), std::fs::read(&again).unwrap());
}

/// A plain HTTP file server (Python's) serving `dir` on a free port, stopped on drop.
/// Its log is `dir/http.log`.
struct FileServer {
    _daemon: Daemon,
    port: u16,
}

impl FileServer {
    fn start(dir: &Path) -> FileServer {
        let port = free_port();
        let log = dir.join("http.log");
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()]).current_dir(dir);
        let mut daemon = Daemon::spawn(&mut cmd, &log).unwrap_or_else(|e| panic!("{e}"));
        let url = format!("http://127.0.0.1:{port}/");
        let answers = || http::send("GET", &url, &[], Duration::from_secs(1)).map(drop);
        if let Err(e) = daemon.wait_ready(Duration::from_secs(10), answers) {
            panic!("the HTTP file server {e}:\n{}", read_log(&log));
        }
        FileServer { _daemon: daemon, port }
    }
}

fn plan(image: &str, extra: &[&str]) -> serde_json::Value {
    let out = run(nixery().args(["layers", image, "--json", "--pkgs-path", PKGS]).args(extra));
    serde_json::from_str(&out).expect("layers --json prints JSON")
}

fn layer_of<'a>(plan: &'a serde_json::Value, name: &str) -> (usize, &'a serde_json::Value) {
    plan["layers"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .find(|(_, l)| l["store_paths"].as_array().unwrap().iter().any(|p| p.as_str().unwrap().ends_with(name)))
        .unwrap_or_else(|| panic!("{name} is in no layer: {plan}"))
}

#[test]
fn layer_plans_cover_the_closure_follow_popularity_and_fit_the_budget() {
    let image = "shell/hello-lib";
    let base = plan(image, &[]);
    assert_eq!(base, plan(image, &[]), "plans must be deterministic");

    // Every path of the closure is in exactly one layer.
    let roots: Vec<String> =
        base["symlink_forest"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect();
    let closure: BTreeSet<String> = run(Command::new("nix-store").args(["--query", "--requisites"]).args(&roots))
        .lines()
        .map(str::to_owned)
        .collect();
    let planned: Vec<String> = base["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["store_paths"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(planned.len(), closure.len(), "a path is in two layers or missing");
    assert_eq!(planned.into_iter().collect::<BTreeSet<_>>(), closure);
    let ratings: Vec<u128> = base["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["merge_rating"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ratings.windows(2).all(|w| w[0] >= w[1]), "not in manifest order: {ratings:?}");

    // Without data nothing is known to be private: every path is a layer of its own (the
    // default grouping), while Nixery's grouping keeps greeting, only reachable through
    // hello-lib in this image, in hello-lib's layer.
    let (_, alone) = layer_of(&base, "-greeting-1.0");
    assert_eq!(alone["store_paths"].as_array().unwrap().len(), 1, "{base}");
    let nixery = plan(image, &["--layer-grouping", "nixery"]);
    let (_, with_lib) = layer_of(&nixery, "-greeting-1.0");
    assert_eq!(with_lib["store_paths"].as_array().unwrap().len(), 2, "{nixery}");

    // Popularity data served over HTTP: greeting used by one package only (count 1) now
    // travels with hello-lib; a popular busybox is alone and ahead of unpopular coreutils.
    let dir = temp_dir("popularity-http");
    std::fs::write(dir.path().join("pop.json"), r#"{"greeting-1.0": 1, "busybox-1.35.0": 250000}"#).unwrap();
    let files = FileServer::start(dir.path());
    let url = format!("http://127.0.0.1:{}/pop.json", files.port);
    let with_data = plan(image, &["--popularity-url", &url]);
    let (_, private) = layer_of(&with_data, "-greeting-1.0");
    let private: Vec<&str> = private["store_paths"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(private.len(), 2, "{with_data}");
    assert!(private.iter().any(|p| p.ends_with("-hello-lib")), "{with_data}");
    let (busybox, popular) = layer_of(&with_data, "-busybox-1.35.0");
    assert_eq!(popular["store_paths"].as_array().unwrap().len(), 1, "{with_data}");
    assert_eq!(popular["popularity"], 250000);
    let (coreutils, _) = layer_of(&with_data, "-coreutils-9.1");
    assert!(busybox < coreutils, "a popular layer should come before unpopular ones: {with_data}");

    // A budget of 3 store-path layers is kept.
    let tight = plan(image, &["--layer-budget", "3"]);
    assert_eq!(tight["layers"].as_array().unwrap().len(), 3, "{tight}");
}

#[test]
fn the_server_refuses_missing_or_malformed_popularity_and_uses_good_data() {
    let dir = temp_dir("popularity-file");
    let storage = dir.path().join("storage");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"greeting-1.0": "many"}"#).unwrap();
    for location in [bad.to_str().unwrap(), "/no/such/file.json"] {
        let out = nixery()
            .env("NIXERY_PKGS_PATH", PKGS)
            .env("NIX_POPULARITY_URL", location)
            .env("PORT", "0")
            .env("STORAGE_PATH", &storage)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("NIX_POPULARITY_URL") && stderr.contains(location), "{stderr}");
    }

    // Good data from popcount itself: the server starts with it and serves images.
    let file = dir.path().join("popularity.json");
    popcount(&file);
    let server = Server::start_with(&[("NIX_POPULARITY_URL", file.to_str().unwrap())]);
    let r = server.get_ok("/v2/hello-lib/manifests/latest", &[]);
    assert!(r.json()["layers"].as_array().unwrap().len() >= 3);
    assert!(server.log().contains("loaded popularity data"), "{}", server.log_tail(20));
}
