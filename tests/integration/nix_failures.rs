//! What Nix does wrong, as a registry client sees it, against the real server and real Nix on
//! the test package set: evaluation errors named per package (with the fine ones), nixpkgs'
//! own reasons for refusing a package and the operator's nixpkgs configuration, outputs as
//! the user names them, refusal before any build when local builds are off, and the bound on
//! concurrent Nix processes.

use crate::harness::http::{self, Response};
use crate::harness::{Server, nonce, run};
use flate2::read::MultiGzDecoder;
use serde_json::json;
use std::collections::BTreeSet;
use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

const PKGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pkgs/default.nix");

/// The error answer of `GET /v2/<name>/manifests/latest`: response, message, detail.
/// Every failure of the image is 422 `MANIFEST_UNKNOWN`.
fn refusal(server: &Server, name: &str) -> (Response, String, serde_json::Value) {
    let r = server.get(&format!("/v2/{name}/manifests/latest"));
    assert!(r.status >= 400, "{}", server.context(&format!("{name} was served\n{}", r.describe())));
    let error = &r.json()["errors"][0];
    let message = error["message"].as_str().unwrap_or_else(|| panic!("no message\n{}", r.describe())).to_owned();
    let detail = error["detail"].clone();
    assert_eq!((r.status, &error["code"]), (422, &serde_json::json!("MANIFEST_UNKNOWN")), "{}", r.describe());
    // No file of the server: not the package set's directory, not a temporary directory.
    let pkgs_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pkgs");
    for leak in [pkgs_dir, "/tmp/", "/root/"] {
        assert!(!r.text().contains(leak), "the answer shows {leak}:\n{}", r.describe());
    }
    (r, message, detail)
}

fn names(value: &serde_json::Value) -> Vec<String> {
    let list = value.as_array().unwrap_or_else(|| panic!("not a list: {value}"));
    list.iter().map(|v| v["name"].as_str().or(v.as_str()).unwrap().to_owned()).collect()
}

#[test]
fn uncatchable_evaluation_errors_name_each_culprit_and_the_fine_packages() {
    let server = Server::start();
    let name = "hello/failing.aborting/failing.recursive/failing.missingfile/failing.typeerror";
    let (r, message, detail) = refusal(&server, name);
    assert_eq!(r.status, 422, "{}", r.describe());
    for cause in [
        "failing.aborting (evaluation aborted with the following error message: 'this package aborts on purpose')",
        "failing.recursive (infinite recursion encountered)",
        "failing.missingfile (path 'does-not-exist.nix' does not exist)",
        "failing.typeerror (cannot add a string to an integer, at default.nix:",
        "these evaluate fine: cacert, hello, iana-etc",
    ] {
        assert!(message.contains(cause), "{cause:?} is not in: {message}");
    }
    assert_eq!(
        names(&detail["failing"]),
        ["failing.aborting", "failing.missingfile", "failing.recursive", "failing.typeerror"]
    );
    assert_eq!(names(&detail["fine"]), ["cacert", "hello", "iana-etc"]);

    // A refused package next to an aborting one: both causes, each with its own reason.
    let (r, message, detail) = refusal(&server, "failing.aborting/nonfree");
    assert_eq!(r.status, 422, "{}", r.describe());
    assert!(
        message.contains("this package aborts on purpose") && message.contains("has an unfree license"),
        "{message}"
    );
    assert_eq!(names(&detail["unusable"]), ["nonfree"]);
}

#[test]
fn refused_packages_carry_nixpkgs_reasons_without_its_instructions() {
    let server = Server::start();
    let (r, message, detail) = refusal(&server, "hello/nonfree/markedbroken/insecure/oldhello/nosuchpkg");
    // Refusals are failures of the requested image: a 4xx whose message clients print.
    assert!((400..500).contains(&r.status), "{}", r.describe());
    for cause in [
        "nonfree (Refusing to evaluate package 'nonfree-1.0' in default.nix:",
        "because it has an unfree license (‘unfree’)",
        "markedbroken (Refusing to evaluate package 'marked-broken-1.0' in default.nix:",
        "because it is marked as broken",
        "because it is marked as insecure. Known issues: - CVE-2099-0001: remote code execution in the test stub",
        "oldhello ('oldhello' has been removed because it was unmaintained upstream; use 'hello' instead)",
        "packages not found: nosuchpkg",
    ] {
        assert!(message.contains(cause), "{cause:?} is not in: {message}");
    }
    assert!(!message.contains("NIXPKGS_ALLOW"), "nixpkgs' instructions for the user's machine: {message}");
    assert!(!message.contains("hello,") && !message.contains("fine"), "hello is not a problem: {message}");
    assert_eq!(names(&detail["unusable"]), ["insecure", "markedbroken", "nonfree", "oldhello"]);
    assert_eq!(names(&detail["missing"]), ["nosuchpkg"]);
}

#[test]
fn the_operators_nixpkgs_config_allows_what_it_names() {
    let inline = Server::start_with(&[("NIXERY_NIXPKGS_CONFIG", r#"{"allowUnfree": true}"#)]);
    inline.get_ok("/v2/hello/nonfree/manifests/latest", &[]);
    let (_, message, _) = refusal(&inline, "markedbroken");
    assert!(message.contains("is marked as broken"), "allowUnfree does not allow broken: {message}");

    // A .nix file (it could hold functions), read by Nix itself.
    let dir = crate::harness::temp_dir("nixpkgs-config");
    let file = dir.path().join("config.nix");
    std::fs::write(&file, "{ allowBroken = true; permittedInsecurePackages = [ \"insecure-1.0\" ]; }").unwrap();
    let from_file = Server::start_with(&[("NIXERY_NIXPKGS_CONFIG", file.to_str().unwrap())]);
    from_file.get_ok("/v2/markedbroken/insecure/manifests/latest", &[]);
    let (_, message, _) = refusal(&from_file, "nonfree");
    assert!(message.contains("has an unfree license"), "{message}");
}

#[test]
fn a_package_set_that_does_not_evaluate_is_one_error_not_one_per_name() {
    // A git source pinned at a commit it does not have: the set itself fails in Nix (a tag
    // naming no ref never gets there: `git ls-remote` refuses it first, as the second half
    // checks), whatever the names.
    let repo = crate::harness::temp_dir("broken-source");
    let git = |args: &[&str]| {
        run(Command::new("git")
            .arg("-C")
            .arg(repo.path())
            .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"])
            .args(args))
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::copy(PKGS, repo.path().join("default.nix")).unwrap();
    git(&["add", "default.nix"]);
    git(&["commit", "-q", "-m", "v1"]);
    let url = format!("file://{}", repo.path().display());
    let server = Server::start_with(&[("NIXERY_PKGS_REPO", &url), ("NIXERY_PKGS_PATH", "")]);
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let r = server.get(&format!("/v2/hello/curl/manifests/{missing}"));
    assert_eq!(r.status, 422, "{}", server.context(&r.describe()));
    let message = r.json()["errors"][0]["message"].as_str().unwrap().to_owned();
    assert!(message.starts_with("the package set does not evaluate: "), "{message}");
    assert!(message.contains(missing), "Nix's reason is kept: {message}");
    assert!(!r.text().contains(&repo.path().display().to_string()), "the repository's path shows: {}", r.text());
    // A tag naming no ref: 422 naming the tag, not the repository's path.
    let r = server.get("/v2/hello/curl/manifests/no-such-branch");
    assert_eq!(r.status, 422, "{}", server.context(&r.describe()));
    let message = r.json()["errors"][0]["message"].as_str().unwrap().to_owned();
    assert_eq!(message, "the package source has no branch or tag 'no-such-branch'");
    assert!(!r.text().contains(&repo.path().display().to_string()), "the repository's path shows: {}", r.text());
    // The good revision of the same source still serves.
    server.get_ok("/v2/hello/manifests/main", &[]);
}

/// The top-level store path names (without hash) in the layers of image `name`, and every
/// path of its symlink forest outside the store.
fn image_contents(server: &Server, name: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (_, manifest) = server.manifest(name, "latest");
    let (mut store, mut forest) = (BTreeSet::new(), BTreeSet::new());
    for layer in manifest["layers"].as_array().unwrap() {
        let blob = server.get_ok(&format!("/v2/{name}/blobs/{}", layer["digest"].as_str().unwrap()), &[]);
        let mut tar = Vec::new();
        MultiGzDecoder::new(&blob.body[..]).read_to_end(&mut tar).unwrap();
        for entry in tar::Archive::new(&tar[..]).entries().unwrap() {
            let path = entry.unwrap().path().unwrap().to_string_lossy().trim_end_matches('/').to_owned();
            match path.strip_prefix("nix/store/") {
                Some(rest) if !rest.contains('/') => {
                    store.insert(rest[33..].to_owned());
                }
                Some(_) => {}
                None => {
                    forest.insert(path);
                }
            }
        }
    }
    (store, forest)
}

#[test]
fn outputs_are_taken_as_the_user_names_them() {
    let server = Server::start();
    // `curl`: its default output (bin) and what that references (out), not its man pages,
    // although curl's meta.outputsToInstall says [ "bin" "man" ].
    let (store, forest) = image_contents(&server, "curl");
    assert!(store.contains("curl-8.0-bin") && store.contains("curl-8.0"), "{store:?}");
    assert!(!store.contains("curl-8.0-man") && !store.contains("curl-8.0-dev"), "{store:?}");
    assert!(forest.contains("bin/curl"), "{forest:?}");
    // `curl.dev`: exactly the dev output (and out, which it references).
    let (store, forest) = image_contents(&server, "curl.dev");
    assert!(store.contains("curl-8.0-dev") && store.contains("curl-8.0"), "{store:?}");
    assert!(!store.contains("curl-8.0-bin") && !store.contains("curl-8.0-man"), "{store:?}");
    assert!(forest.contains("include/curl/curl.h") && !forest.contains("bin/curl"), "{forest:?}");
}

/// The output path of attribute `attr` of the test set, with `nonce` as NIXERY_TEST_NONCE.
fn out_path(attr: &str, nonce: &str) -> String {
    let out = run(Command::new("nix-instantiate")
        .args(["--eval", "--json", "--expr"])
        .arg(format!("(import {PKGS} {{}}).{attr}.outPath"))
        .env("NIXERY_TEST_NONCE", nonce));
    serde_json::from_str(&out).unwrap()
}

fn is_valid(path: &str) -> bool {
    Command::new("nix-store").args(["--check-validity", path]).status().unwrap().success()
}

#[test]
fn without_local_builds_an_uncached_package_is_refused_before_anything_is_built() {
    let n = nonce();
    // hello is in the store (built here), fresh-<nonce> in no store and no cache.
    let hello = run(Command::new("nix-instantiate").args([PKGS, "-A", "hello"]).env("NIX_CONFIG", "substituters ="));
    run(Command::new("nix-store").args(["--realise", hello.trim()]).env("NIX_CONFIG", "substituters ="));
    let server = Server::start_with(&[
        ("NIXERY_LOCAL_BUILDS", "false"),
        ("NIXERY_TEST_NONCE", &n),
        ("RUST_LOG", "info,nixery::nix::log=debug"),
    ]);
    let started = Instant::now();
    let (r, message, detail) = refusal(&server, "hello/fresh");
    let took = started.elapsed();
    assert_eq!(r.status, 422, "{}", r.describe());
    assert!(took < Duration::from_secs(30), "refused after {took:?}");
    assert!(
        message.starts_with("not in any binary cache, and local builds are off (NIXERY_LOCAL_BUILDS=false): fresh;"),
        "{message}"
    );
    assert!(message.contains(&format!("-fresh-{n}.drv")), "the derivation is named: {message}");
    assert_eq!(names(&detail["packages"]), ["fresh"], "hello is in the store: {detail}");
    // The image's own derivation first, then how many dependencies follow (busybox's, when
    // no earlier test built it).
    let builds = detail["builds"].as_array().unwrap_or_else(|| panic!("no builds: {detail}"));
    assert!(builds[0].as_str().unwrap().ends_with(&format!("-fresh-{n}.drv")), "{detail}");
    assert_eq!(detail["dependencies"]["builds"], builds.len() - 1, "{detail}");
    // The status line (what ctr shows) says the same by name.
    let (status_line, _) = http::status_line(&server.addr(), "GET", "/v2/hello/fresh/manifests/latest")
        .unwrap_or_else(|e| server.fail(&e));
    let deps = match builds.len() - 1 {
        0 => String::new(),
        1 => " and 1 dependency".to_owned(),
        more => format!(" and {more} dependencies"),
    };
    assert!(status_line.ends_with(&format!("; would build fresh-{n}{deps}")), "{status_line}");
    // Nothing was built: no build in Nix's log, and the output is not in the store.
    let log = server.log();
    assert!(log.contains("will be built"), "{}", server.context("the Nix log of the dry run is missing"));
    assert!(!log.contains("building '"), "{}", server.context("a build started"));
    assert!(!is_valid(&out_path("fresh", &n)), "fresh was built");
    // What is in the store is still served.
    server.get_ok("/v2/hello/manifests/latest", &[]);
}

#[test]
fn a_failed_build_names_its_derivation_and_the_package_that_needs_it() {
    let server = Server::start();
    let (r, message, detail) = refusal(&server, "hello/broken");
    assert!(r.status >= 400, "{}", r.describe());
    assert!(detail["derivation"].as_str().unwrap().ends_with("-broken-1.0.drv"), "{detail}");
    assert_eq!(names(&detail["packages"]), ["broken"]);
    assert!(
        message.contains(
            "failed (needed by broken); last log lines: compiling broken... | error: this package is broken on purpose"
        ),
        "{message}"
    );
}

/// The server's child processes whose command is Nix's.
fn nix_children(server_pid: u32) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid ...
        let Some((comm, rest)) = stat.split_once(") ").map(|(a, b)| (a.rsplit('(').next().unwrap_or(""), b)) else {
            continue;
        };
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(server_pid) && comm.starts_with("nix") {
            count += 1;
        }
    }
    count
}

#[test]
fn nix_work_is_bounded_and_the_wait_is_visible() {
    let server = Server::start_with(&[("NIXERY_MAX_NIX_JOBS", "1"), ("NIXERY_TEST_NONCE", &nonce())]);
    assert_eq!(server.metric("nixery_nix_jobs_limit"), 1);
    let images = ["fresh/hello", "fresh/greeting", "fresh/nano", "fresh/coreutils", "fresh/moreutils"];
    let requests: Vec<_> = images
        .iter()
        .map(|name| {
            let url = server.url(&format!("/v2/{name}/manifests/latest"));
            std::thread::spawn(move || http::send("GET", &url, &[], Duration::from_secs(120)))
        })
        .collect();
    let (mut most_processes, mut most_waiting) = (0, 0);
    while requests.iter().any(|t| !t.is_finished()) {
        most_processes = most_processes.max(nix_children(server.pid()));
        let metrics = server.metrics();
        let gauge = |name: &str| {
            metrics.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.parse::<u64>().ok())
        };
        assert!(gauge("nixery_nix_processes").unwrap() <= 1, "{metrics}");
        most_waiting = most_waiting.max(gauge("nixery_nix_waiting").unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    for t in requests {
        let r = t.join().unwrap().unwrap_or_else(|e| server.fail(&e));
        assert_eq!(r.status, 200, "{}", server.context(&r.describe()));
    }
    assert!(most_processes <= 1, "{most_processes} Nix processes at once with NIXERY_MAX_NIX_JOBS=1");
    assert_eq!(most_processes, 1, "never saw the Nix process: the sampling does not work");
    assert!(most_waiting >= 1, "no image ever waited for a slot");
    let waited: f64 = server
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix("nixery_nix_wait_seconds_total ").map(|v| v.parse().unwrap()))
        .unwrap();
    assert!(waited > 0.0, "{}", server.metrics());
    assert_eq!(server.metric("nixery_nix_waiting"), 0);
    assert_eq!(server.metric("nixery_nix_processes"), 0);
}

/// The first server log line at `level` that mentions `what`, waited for (log lines are
/// written by a thread of their own).
fn log_line(server: &Server, level: &str, what: &str) -> Option<String> {
    let find = || server.log().lines().find(|l| l.contains(level) && l.contains(what)).map(str::to_owned);
    crate::harness::process::wait_until(Duration::from_secs(10), || find().is_some());
    find()
}

/// Whether the log has a line at `level` that mentions `what` by now.
fn logged(server: &Server, level: &str, what: &str) -> bool {
    server.log().lines().any(|l| l.contains(level) && l.contains(what))
}

/// A Nix that builds nothing (`max-jobs = 0` in its configuration, as on machines meant to
/// use remote builders only) with local builds on: the image that needs a build is refused
/// naming its own derivation first and what would help, not a 500.
#[test]
fn a_nix_that_builds_nothing_refuses_the_build_by_name() {
    let n = nonce();
    let server = Server::start_with(&[("NIX_CONFIG", "substituters =\nmax-jobs = 0"), ("NIXERY_TEST_NONCE", &n)]);
    let (_, message, detail) = refusal(&server, "fresh");
    assert!(message.starts_with("cannot build /nix/store/"), "{message}");
    assert!(
        detail["derivation"].as_str().unwrap_or_default().ends_with(&format!("-fresh-{n}.drv")),
        "the image's own derivation is named first: {detail}"
    );
    assert!(message.contains("(needed by fresh): this server's Nix builds nothing (max-jobs = 0)"), "{message}");
    assert_eq!(detail["needs"], "local_builds", "{detail}");
}

/// With local builds off, a path a cache lists but does not deliver (its NAR is gone) is
/// refused like a path no cache has, naming the path and the cache's error, not a 500.
#[test]
fn without_local_builds_a_path_the_cache_does_not_deliver_is_refused_by_name() {
    let cache = crate::harness::BinaryCache::start(&["greeting"]);
    let endpoint = cache.endpoint(crate::harness::Trust::CacheKey);
    let greeting = cache.outputs("greeting")[0].clone();
    cache.lose_nar(&greeting);
    let mut env = cache.server_env(&endpoint);
    env.push(("NIXERY_LOCAL_BUILDS", "false".to_owned()));
    let server = Server::start_with_env(&env);
    let (_, message, detail) = refusal(&server, "greeting");
    assert!(
        message.starts_with("not in any binary cache, and local builds are off (NIXERY_LOCAL_BUILDS=false): greeting;"),
        "{message}"
    );
    assert!(message.contains(&format!("a binary cache listed but did not deliver {greeting} (")), "{message}");
    assert_eq!(detail["undelivered"], json!([greeting]), "{detail}");
    assert!(
        detail["cache_error"].as_str().is_some_and(|e| e.contains("does not exist in binary cache")),
        "the cache's error: {detail}"
    );
}

/// A store Nix cannot write fails every image alike: the server's fault, 500 without
/// detail, and an ERROR line that says so, instead of an evaluation error blamed on the
/// requested names. The server runs in a mount namespace of its own whose `/nix` turns
/// read-only once it is up, as a filesystem does after disk errors (`errors=remount-ro`).
/// (A store read-only from the start stops the server at start-up: `nix-store --version`
/// fails.)
#[test]
fn a_read_only_store_is_the_servers_fault_and_the_log_says_so() {
    crate::harness::require_tool(&["unshare", "nsenter", "mount"]);
    let own_nix = "mount --bind /nix /nix && exec \"$@\"";
    let wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", own_nix, "sh"];
    let n = nonce();
    // The server holds a lock file open in its GC roots' directory, which would keep /nix
    // from being remounted read-only: they go elsewhere (as on a store mounted read-only).
    let roots = crate::harness::temp_dir("gc-roots");
    let roots = roots.path().to_str().unwrap();
    let server = Server::launch_with(crate::harness::Launch {
        env: &[("NIXERY_TEST_NONCE", &n), ("NIXERY_GC_ROOTS", roots)],
        wrapper: &wrapper,
        ..Default::default()
    });
    let pid = server.pid().to_string();
    run(Command::new("nsenter").args(["-t", &pid, "-m", "mount", "-o", "remount,ro,bind", "/nix"]));
    let r = server.get("/v2/fresh/manifests/latest");
    assert_eq!(r.status, 500, "{}", server.context(&r.describe()));
    assert_eq!(r.json()["errors"][0]["message"], "internal error, see the server log", "{}", r.describe());
    let error = log_line(&server, "ERROR", "fresh:latest");
    let error = error.unwrap_or_else(|| server.fail("no ERROR line for the image"));
    eprintln!("{error}");
    assert!(error.contains("evaluating the packages failed: the Nix store cannot be written ("), "{error}");
    // The request's own line is the last the answer writes: a WARN would be before it.
    log_line(&server, "INFO", "path=/v2/fresh/manifests/latest status=500")
        .unwrap_or_else(|| server.fail("no request line"));
    assert!(!logged(&server, "WARN", "image failed"), "{}", server.context("blamed on the image"));
}
