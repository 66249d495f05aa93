//! Popularity data in use: loaded from a file and over HTTP, refused when missing or
//! malformed, and `nixery layers` plans that follow it. (popcount.rs makes the data.)

use crate::harness::nginx::Nginx;
use crate::harness::{TEST_PKGS as PKGS, nixery_cli, run, temp_dir};
use std::collections::BTreeSet;
use std::process::Command;

fn plan(image: &str, extra: &[&str]) -> serde_json::Value {
    let out = run(nixery_cli().args(["layers", image, "--json", "--pkgs-path", PKGS]).args(extra));
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
    let files = Nginx::serve(dir.path());
    let url = files.url("/pop.json");
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

/// The server's use of good data (popcount's own output) is tested in popcount.rs.
#[test]
fn the_server_refuses_missing_or_malformed_popularity() {
    let dir = temp_dir("popularity-file");
    let storage = dir.path().join("storage");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"greeting-1.0": "many"}"#).unwrap();
    for location in [bad.to_str().unwrap(), "/no/such/file.json"] {
        let out = nixery_cli()
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
}
