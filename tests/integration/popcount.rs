//! `nixery popcount` against the tests' binary cache ([`BinaryCache`]): counts from narinfo
//! files, checked against Nix's own references of the cached paths (recorded by
//! `nix-store --query --references` before they were deleted); nothing instantiated; outputs
//! the cache lacks (404) reported; attributes whose evaluation fails uncatchably skipped and
//! named; and clear failures for a cache that cannot be used.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::harness::nginx::Nginx;
use crate::harness::process::{COMMAND_TIMEOUT, output_timeout};
use crate::harness::{BinaryCache, Server, TEST_PKGS, Trust, free_port, nixery_cli, run, temp_dir};

/// Top-level packages of the test set that are not in the cache: one fails to build, one
/// takes two minutes, one is 512 MiB of noise, one requires a system feature no Nix has.
const UNCACHED: [&str; 4] = ["big", "broken", "gpuTest", "slow"];

/// The test set with top-level attributes whose evaluation fails uncatchably (abort,
/// infinite recursion, a missing file, a type error, a missing attribute): popcount's input.
const WITH_CULPRITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pkgs/uncatchable.nix");

/// Its culprits, in Nix's order, and the words of Nix's message for each.
const CULPRITS: [(&str, &str); 5] = [
    ("aborting", "evaluation aborted with the following error message: 'this package aborts on purpose'"),
    ("missingFile", "path 'does-not-exist.nix' does not exist"),
    ("recursive", "infinite recursion encountered"),
    ("renamed", "attribute 'nosuch' missing"),
    ("typeError", "cannot add a string to an integer"),
];

/// `nix-instantiate --eval --json` of `expr` (a function of the package set `pkgs`) with
/// `salt`: evaluation only, which writes nothing to the store.
fn eval(salt: &str, expr: &str) -> serde_json::Value {
    let out = run(Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "--expr"])
        .arg(format!("let pkgs = import {TEST_PKGS} {{ }}; in {expr}"))
        .env("NIXERY_TEST_SALT", salt)
        .env("NIX_CONFIG", "substituters ="));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{expr} gave no JSON ({e}): {out}"))
}

/// Nix's view of the set: every top-level attribute name, and the derivations among them
/// whose output paths evaluate (not those the set refuses, as nixpkgs refuses unfree ones).
fn top_level(salt: &str) -> (Vec<String>, Vec<String>) {
    let names: Vec<String> = serde_json::from_value(eval(salt, "builtins.attrNames pkgs")).unwrap();
    let derivations = serde_json::from_value(eval(
        salt,
        "builtins.filter (n: (builtins.tryEval (let v = pkgs.${n}; in (v.type or null) == \"derivation\" \
         && builtins.isString v.outPath && builtins.all (o: builtins.isString v.${o}.outPath) \
         (v.outputs or [ \"out\" ]))).value == true) \
         (builtins.attrNames pkgs)",
    ))
    .unwrap();
    (names, derivations)
}

/// `nixery popcount` of the salted set with culprits against `cache_url`, batches of 4.
fn popcount_command(salt: &str, cache_url: &str, out: &Path) -> Command {
    let mut cmd = nixery_cli();
    cmd.args(["popcount", "--pkgs-path", WITH_CULPRITS, "--batch", "4", "--binary-cache", cache_url, "-o"])
        .arg(out)
        .env("NIXERY_TEST_SALT", salt);
    cmd
}

/// Runs [`popcount_command`] with stdout and stderr captured.
fn popcount(salt: &str, cache_url: &str, out: &Path) -> Output {
    output_timeout(&mut popcount_command(salt, cache_url, out), COMMAND_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `cmd` with a terminal as stdout and stderr (util-linux `script`) and returns what
/// the terminal received. Panics unless it succeeds.
fn on_a_terminal(cmd: Command) -> String {
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
    let line: Vec<String> = std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(quote).collect();
    let mut script = Command::new("script");
    script.args(["--quiet", "--return", "--command", &line.join(" "), "/dev/null"]);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    run(&mut script)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Which of `paths` are valid in the local store.
fn valid(paths: &BTreeSet<String>) -> BTreeSet<String> {
    let invalid = run(Command::new("nix-store").args(["--check-validity", "--print-invalid"]).args(paths));
    let invalid: BTreeSet<&str> = invalid.lines().collect();
    paths.iter().filter(|p| !invalid.contains(p.as_str())).cloned().collect()
}

/// popcount counts exactly what Nix says the cached paths refer to, over a set whose top
/// level also has attributes that fail with errors `tryEval` cannot catch: those are split
/// off their batches, skipped and named with Nix's message, and change no count.
#[test]
fn popcount_counts_runtime_references_from_the_binary_cache() {
    let (names, derivations) = top_level("");
    let cached: Vec<&str> = derivations.iter().map(String::as_str).filter(|a| !UNCACHED.contains(a)).collect();
    let cache = BinaryCache::start(&cached);
    let salt = cache.salt();
    let endpoint = cache.endpoint(Trust::CacheKey);

    // Nix's own answer, from the paths while they were in the store: for each package, the
    // names its outputs refer to, other than its own outputs, counted once.
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for outputs in cache.all_outputs().values() {
        let referenced: BTreeSet<&str> = outputs
            .iter()
            .flat_map(|o| &cache.references()[o])
            .filter(|r| !outputs.contains(r))
            .map(|r| &r["/nix/store/".len() + 33..])
            .collect();
        for name in referenced {
            *expected.entry(name.to_owned()).or_default() += 1;
        }
    }
    // Facts of tests/pkgs/default.nix, as a check on the comparison itself.
    assert!(expected["busybox-1.35.0"] >= 8, "{expected:?}");
    assert_eq!(expected["greeting-1.0"], 1, "only hello-lib uses greeting");
    assert!(!expected.contains_key("hello"), "nothing references hello");

    // Every derivation of the set: none is in the store before (the cache evicted its own)
    // and popcount, which only evaluates, must not write one.
    let drv_paths: BTreeSet<String> =
        serde_json::from_value(eval(salt, &format!("map (n: pkgs.${{n}}.drvPath) {}", nix_list(&derivations))))
            .unwrap();
    assert_eq!(drv_paths.len(), derivations.len());
    assert_eq!(valid(&drv_paths), BTreeSet::new(), "derivations in the store before popcount ran");

    let dir = temp_dir("popcount");
    let file = dir.path().join("popularity.json");
    let out = popcount(salt, &endpoint.url, &file);
    let log = stderr(&out);
    assert!(out.status.success(), "popcount failed:\n{log}");
    let counts: BTreeMap<String, u64> =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).expect("popcount writes a JSON object of counts");
    assert_eq!(counts, expected, "popcount disagrees with nix-store --query --references\n{log}");
    assert_eq!(valid(&drv_paths), BTreeSet::new(), "popcount wrote derivations to the store\n{log}");
    assert_eq!(cache.valid_paths(), BTreeSet::new(), "popcount added cached paths to the store\n{log}");

    // Progress per batch (stderr is not a terminal: lines), and a summary naming what the
    // cache lacks, whose narinfo files the web server answered with 404.
    let n = names.len() + CULPRITS.len();
    assert!(log.contains(&format!("popcount: 4/{n} attributes")), "{log}");
    assert!(log.contains(&format!("popcount: {n}/{n} attributes")), "{log}");
    let cached_outputs: usize = cache.all_outputs().values().map(Vec::len).sum();
    let summary = format!(
        "popcount: {} packages, {cached_outputs} outputs read from {}, 4 not in it: big-64mib, broken-1.0, \
         gpu-test-1.0, slow-0",
        derivations.len(),
        endpoint.url
    );
    assert!(log.contains(&summary), "want {summary:?} in:\n{log}");
    // The culprits: how many, their names, each with Nix's message.
    let culprits: Vec<&str> = CULPRITS.iter().map(|(attr, _)| *attr).collect();
    let skipped = format!(
        "popcount: skipped 5 attributes whose evaluation fails with an error tryEval cannot catch: {}",
        culprits.join(", ")
    );
    assert!(log.lines().any(|l| l == skipped), "want {skipped:?} in:\n{log}");
    for (attr, reason) in CULPRITS {
        let line = format!("popcount:   {attr}: ");
        assert!(log.lines().any(|l| l.starts_with(&line) && l.contains(reason)), "want {line}{reason} in:\n{log}");
    }
    assert!(log.contains(&format!("popcount: {n}/{n} attributes,")) && log.contains(", 5 skipped"), "{log}");
    eprintln!("{log}");
    let requests = cache.requests(&endpoint);
    for attr in UNCACHED {
        let output: String = serde_json::from_value(eval(salt, &format!("pkgs.{attr}.outPath"))).unwrap();
        let hash = &output["/nix/store/".len()..][..32];
        let narinfo = format!("/{hash}.narinfo");
        assert!(
            requests.iter().any(|r| r.path == narinfo && r.status == 404),
            "no 404 for {narinfo} ({attr}):\n{}",
            cache.access_log()
        );
    }

    // On a terminal, progress is one line rewritten in place. The file is written whole:
    // the second run writes the same bytes.
    let again = dir.path().join("again.json");
    let terminal = on_a_terminal(popcount_command(salt, &endpoint.url, &again));
    assert!(terminal.contains(&format!("\rpopcount: 4/{n} attributes")), "{terminal:?}");
    assert!(!terminal.contains(&format!("popcount: 4/{n} attributes\r\n")), "a progress line ended: {terminal:?}");
    assert!(terminal.contains(&format!("\rpopcount: {n}/{n} attributes")), "{terminal:?}");
    assert_eq!(std::fs::read(&file).unwrap(), std::fs::read(&again).unwrap(), "a second run wrote other bytes");

    // It is what the server loads: it starts with it and serves images.
    let server = Server::start_with(&[("NIX_POPULARITY_URL", file.to_str().unwrap())]);
    let r = server.get_ok("/v2/hello-lib/manifests/latest", &[]);
    assert!(r.json()["layers"].as_array().unwrap().len() >= 3, "{}", server.context(&r.describe()));
    assert!(server.log().contains("loaded popularity data"), "{}", server.log_tail(20));
}

/// `[ "a" "b" ]`: attribute names as a Nix list.
fn nix_list(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| serde_json::to_string(n).unwrap()).collect();
    format!("[ {} ]", quoted.join(" "))
}

/// A cache that does not answer, answers 503, or is not a cache at all stops popcount before
/// it evaluates anything, with the URL and the reason; errors worth retrying are retried.
#[test]
fn popcount_fails_clearly_when_the_cache_cannot_be_used() {
    let dir = temp_dir("popcount-bad-cache");
    let file = dir.path().join("popularity.json");
    let web = Nginx::serve_with(dir.path(), "location /down/ { return 503; }");
    let refused = format!("http://127.0.0.1:{}", free_port());
    let (down, empty) = (web.url("/down"), web.url("/empty"));
    for (url, want) in [
        (
            &refused,
            vec![
                format!("binary cache {refused} does not answer: GET {refused}/nix-cache-info (attempt 4 of 4)"),
                "Connection refused".to_owned(),
            ],
        ),
        (
            &down,
            vec![format!(
                "binary cache {down} answered GET {down}/nix-cache-info with 503 Service Unavailable (attempt 4 of 4)"
            )],
        ),
        (&empty, vec![format!("{empty} is not a Nix binary cache: GET {empty}/nix-cache-info answered 404 Not Found")]),
    ] {
        let started = Instant::now();
        let out = popcount("", url, &file);
        let log = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{url}: {log}");
        for want in want {
            assert!(log.contains(&want), "{url}: want {want:?} in:\n{log}");
        }
        assert!(!log.contains("attributes"), "{url}: popcount evaluated before checking the cache:\n{log}");
        assert!(started.elapsed() < Duration::from_secs(30), "{url}: took {:?}", started.elapsed());
    }
    let tries: Vec<_> = web.requests().into_iter().filter(|r| r.path == "/down/nix-cache-info").collect();
    assert_eq!(tries.len(), 4, "a 503 is retried: {tries:?}");
    assert!(!file.exists(), "nothing is written when popcount fails");
}
