//! Failures a user can read in their client: for each kind of failure of the requested image
//! (a flake source's too: a name it lacks, a flake that fails to evaluate, one without the
//! legacyPackages images are made with),
//! skopeo, containerd (`ctr`), podman and docker pull it from the real server and what they
//! print must contain the cause — the package, the derivation, nixpkgs' reason, the last log
//! line, the system or feature a build needs and what would give it — not just a status. Each kind shares one server (and binary cache) across the four
//! clients, and its answer is checked on the wire too: 422 `MANIFEST_UNKNOWN` on GET and
//! HEAD, the same reason phrase on both (one line of visible ASCII, at most 200 bytes), and no
//! file path of the server in the body or on the status line.
//!
//! Then what the server does with a failure: one WARN line per failed build however many
//! clients waited for it, and a token in the package source's URL in no log line and no
//! answer.

use std::time::Duration;

use rstest::rstest;

use crate::harness::binary_cache::Endpoint;
use crate::harness::client::printed;
use crate::harness::flake_repo::Outputs;
use crate::harness::http::{self, Response};
use crate::harness::process::wait_until;
use crate::harness::{
    BinaryCache, Client, INDEX_ACCEPT, NIX_WITHOUT_AARCH64, Server, TEST_PKGS, TeamFlake, Trust, nonce,
};

/// The package set's directory: a server path no answer may show.
const PKGS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pkgs");

/// A kind of failure of the requested image.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// A name the package set does not have.
    Missing,
    /// Names nixpkgs' meta checks refuse, each with its reason.
    Unusable,
    /// An evaluation error `tryEval` cannot catch, next to a fine package.
    Evaluation,
    /// A build that fails.
    Build,
    /// A package no binary cache has, with local builds off.
    NotCached,
    /// A cache signed by a key the server's Nix does not trust, with local builds off.
    Untrusted,
    /// A build that outlasts NIX_TIMEOUT.
    Timeout,
    /// A flake source: a name it does not have, a branch where it fails to evaluate, and a
    /// branch without legacyPackages (what the registry adds to every image).
    Flake,
    /// An index whose arm64 image needs a build for aarch64-linux, which this server's Nix
    /// cannot run (no remote builder, no `extra-platforms`, no cache): issue 17's case.
    Platform,
    /// A package whose build requires a system feature this server's Nix lacks.
    Features,
}

/// An image that fails and the words of its cause every client must show.
struct Case {
    /// The name, and its tag if not `latest` (`our-tool:broken`).
    image: &'static str,
    causes: &'static [&'static str],
    /// The request headers that make it fail as the clients' do (an index's `Accept`).
    accept: &'static [(&'static str, &'static str)],
}

/// A case with no particular headers.
const fn case(image: &'static str, causes: &'static [&'static str]) -> Case {
    Case { image, causes, accept: &[] }
}

impl Case {
    /// `name:tag`.
    fn reference(&self) -> String {
        if self.image.contains(':') { self.image.to_owned() } else { format!("{}:latest", self.image) }
    }

    /// `/v2/<name>/manifests/<tag>`.
    fn manifest_path(&self) -> String {
        let reference = self.reference();
        let (name, tag) = reference.rsplit_once(':').expect("a tag");
        format!("/v2/{name}/manifests/{tag}")
    }
}

/// A server on which `cases` fail. Fields drop in order: the server stops before the cache
/// and the flake.
struct Failing {
    server: Server,
    cases: Vec<Case>,
    _cache: Option<(BinaryCache, Endpoint)>,
    _flake: Option<TeamFlake>,
}

impl Kind {
    fn start(self) -> Failing {
        let local = |cases: Vec<Case>| Failing { server: Server::start(), cases, _cache: None, _flake: None };
        match self {
            Kind::Missing => local(vec![case("hello/nosuchpkg", &["packages not found: nosuchpkg"])]),
            Kind::Unusable => local(vec![
                case("nonfree", &["nonfree-1.0", "has an unfree license"]),
                case("markedbroken", &["marked-broken-1.0", "is marked as broken"]),
                case("oldhello", &["'oldhello' has been removed because it was unmaintained upstream"]),
            ]),
            Kind::Evaluation => local(vec![case(
                "hello/failing.aborting/failing.missingfile",
                &["failing.aborting", "this package aborts on purpose"],
            )]),
            Kind::Build => {
                local(vec![case("hello/broken", &["broken-1.0", "failed", "this package is broken on purpose"])])
            }
            Kind::NotCached | Kind::Untrusted => {
                let cache = BinaryCache::start(&["greeting"]);
                let (trust, case) = match self {
                    // hello-lib needs greeting (cached) and is not cached itself.
                    Kind::NotCached => (Trust::CacheKey, case("hello-lib", &["not in any binary cache", "hello-lib"])),
                    _ => (Trust::OtherKey, case("greeting", &["not signed by a trusted key", "greeting"])),
                };
                let endpoint = cache.endpoint(trust);
                let mut env = cache.server_env(&endpoint);
                env.push(("NIXERY_LOCAL_BUILDS", "false".to_owned()));
                Failing {
                    server: Server::start_with_env(&env),
                    cases: vec![case],
                    _cache: Some((cache, endpoint)),
                    _flake: None,
                }
            }
            Kind::Platform => Failing {
                server: Server::start_with(&[
                    ("NIXERY_PLATFORMS", "linux/amd64,linux/arm64"),
                    ("NIX_CONFIG", NIX_WITHOUT_AARCH64),
                ]),
                cases: vec![Case {
                    image: "native",
                    causes: &["linux/arm64", "native-1.0", "aarch64-linux", "needed by native", "remote builder"],
                    accept: &INDEX_ACCEPT,
                }],
                _cache: None,
                _flake: None,
            },
            Kind::Features => {
                local(vec![case("gputest", &["gpu-test-1.0", "cuda", "needed by gputest", "remote builder"])])
            }
            Kind::Timeout => Failing {
                server: Server::start_with(&[("NIX_TIMEOUT", "2"), ("NIXERY_TEST_NONCE", &nonce())]),
                cases: vec![case("slow", &["timed out after 2 s (NIX_TIMEOUT)"])],
                _cache: None,
                _flake: None,
            },
            Kind::Flake => {
                let flake = TeamFlake::new();
                flake.commit("broken", "v1", Outputs::Failing);
                flake.commit("no-legacy", "v1", Outputs::NoLegacyPackages);
                let server = Server::start_with(&[("NIXERY_PKGS_FLAKE", &flake.url()), ("NIXERY_PKGS_PATH", "")]);
                let cases = vec![
                    case(
                        "our-tool/nosuchpkg",
                        &["packages not found: nosuchpkg", "packages.x86_64-linux, then legacyPackages.x86_64-linux"],
                    ),
                    case("our-tool:broken", &["does not evaluate", "this flake fails to evaluate on purpose"]),
                    case(
                        "our-tool:no-legacy",
                        &[
                            "packages not found: cacert, iana-etc",
                            "legacyPackages.x86_64-linux, which it does not have",
                        ],
                    ),
                ];
                Failing { server, cases, _cache: None, _flake: Some(flake) }
            }
        }
    }
}

/// What a client printed.
/// The reason phrase of a status line `HTTP/1.1 422 <phrase>`.
fn reason_phrase(status_line: &str) -> &str {
    status_line.splitn(3, ' ').nth(2).unwrap_or("")
}

/// GET and HEAD of the image's manifest: 422 `MANIFEST_UNKNOWN` with the causes in the
/// message and on the status line of both, and no server path anywhere. Returns the reason
/// phrase.
fn check_answer(server: &Server, case: &Case) -> String {
    let path = case.manifest_path();
    let status_line =
        |method| http::status_line_with(&server.addr(), method, &path, case.accept).unwrap_or_else(|e| server.fail(&e));
    let (get_line, get) = status_line("GET");
    let (head_line, head) = status_line("HEAD");
    let shown = |r: &Response, line: &str| format!("{line}\n{}", r.describe());
    assert_eq!(get.status, 422, "{}", server.context(&shown(&get, &get_line)));
    assert_eq!(head.status, 422, "{}", server.context(&shown(&head, &head_line)));
    let phrase = reason_phrase(&get_line).to_owned();
    // The phrase says why (and so is the same on HEAD, whose body no one reads).
    assert_eq!(reason_phrase(&head_line), phrase, "HEAD and GET differ");
    assert!(
        !phrase.is_empty() && phrase.len() <= 200 && phrase.bytes().all(|b| (0x20..=0x7e).contains(&b)),
        "not one line of visible ASCII: {phrase:?}"
    );
    let body = server.request("GET", &path, case.accept);
    let error = &body.json()["errors"][0];
    assert_eq!(error["code"], "MANIFEST_UNKNOWN", "{}", body.describe());
    let message = error["message"].as_str().unwrap_or_default();
    for cause in case.causes {
        assert!(message.contains(cause), "{cause:?} is not in the message: {message}");
        assert!(phrase.contains(cause), "{cause:?} is not in the reason phrase: {phrase}");
    }
    for leak in [PKGS_DIR, "/tmp/", "/root/", "/work/"] {
        for (what, text) in [("body", body.text()), ("status line", get_line.clone()), ("HEAD", head_line.clone())] {
            assert!(!text.contains(leak), "the {what} shows the server path {leak}: {text}");
        }
    }
    phrase
}

/// Every failure kind, pulled by every client: each client's output names the cause.
#[rstest]
#[case::missing_package(Kind::Missing)]
#[case::unusable_packages(Kind::Unusable)]
#[case::evaluation_error(Kind::Evaluation)]
#[case::failed_build(Kind::Build)]
#[case::not_in_any_cache(Kind::NotCached)]
#[case::untrusted_signature(Kind::Untrusted)]
#[case::timeout(Kind::Timeout)]
#[case::flake(Kind::Flake)]
#[case::platform_nix_cannot_build_for(Kind::Platform)]
#[case::missing_system_feature(Kind::Features)]
fn every_client_shows_why_an_image_failed(#[case] kind: Kind) {
    let failing = kind.start();
    let server = &failing.server;
    for case in &failing.cases {
        let phrase = check_answer(server, case);
        eprintln!("{kind:?} {}: HTTP/1.1 422 {phrase}", case.image);
    }
    let mut missed = Vec::new();
    for client in [Client::SkopeoUmoci, Client::Containerd, Client::Podman, Client::Docker] {
        let session = client.start();
        for case in &failing.cases {
            let out = session.pull_output(server, &case.reference());
            let text = printed(&out);
            // What a user reads, for README's table.
            let line = text.lines().rev().find(|l| l.contains(case.causes[0])).unwrap_or_default();
            eprintln!("{kind:?} {client} {}: {line}", case.image);
            let absent: Vec<_> = case.causes.iter().filter(|c| !text.contains(**c)).collect();
            if out.status.success() || !absent.is_empty() {
                missed.push(format!("{client} pulling {} ({}): lacks {absent:?}\n{text}", case.image, out.status));
            }
        }
    }
    assert!(missed.is_empty(), "{}", server.context(&missed.join("\n---\n")));
}

/// Lines of the server log at WARN that mention `what`.
fn warnings_about(server: &Server, what: &str) -> Vec<String> {
    server.log().lines().filter(|l| l.contains("WARN") && l.contains(what)).map(str::to_owned).collect()
}

/// Ten clients waiting for one build that fails: ten answers with the cause, one WARN line
/// with the image's name and the cause (the failure is logged inside the build they share).
#[test]
fn a_failure_shared_by_ten_clients_is_logged_once() {
    let server = Server::start_with(&[("NIX_TIMEOUT", "3"), ("NIXERY_TEST_NONCE", &nonce())]);
    let url = server.url("/v2/slow/manifests/latest");
    let clients: Vec<_> = (0..10)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || http::send("GET", &url, &[], Duration::from_secs(60)))
        })
        .collect();
    for client in clients {
        let r = client.join().unwrap().unwrap_or_else(|e| server.fail(&e));
        assert_eq!(r.status, 422, "{}", server.context(&r.describe()));
        assert!(r.text().contains("timed out"), "{}", r.describe());
    }
    assert_eq!(server.metric("nixery_image_builds_total"), 1, "the ten did not share one build");
    // Log lines are written by a thread of their own: wait until the ten answers' lines,
    // which come after the failure's, are in the log.
    let answered = |n: usize| server.log().matches("path=/v2/slow/manifests/latest status=422").count() >= n;
    assert!(wait_until(Duration::from_secs(10), || answered(10)), "{}", server.context("request lines missing"));
    let warnings = warnings_about(&server, "slow:latest");
    assert_eq!(warnings.len(), 1, "{}", server.context(&format!("one WARN line expected: {warnings:#?}")));
    assert!(warnings[0].contains("timed out after 3 s"), "the cause is not logged: {}", warnings[0]);

    // A second failure is a second line.
    let r = server.get("/v2/slow/manifests/latest");
    assert_eq!(r.status, 422, "{}", r.describe());
    assert!(wait_until(Duration::from_secs(10), || answered(11)), "{}", server.context("request line missing"));
    assert_eq!(
        warnings_about(&server, "slow:latest").len(),
        2,
        "{}",
        server.context("the next failure was not logged")
    );
}

/// A token in `NIXERY_PKGS_REPO` shows nowhere: not in the start-up line, not in git's error
/// (the remote is unreachable), not in Nix's (a pinned commit is fetched by Nix itself), not in
/// any answer's headers, body or status line, at any log level.
#[test]
fn credentials_in_the_source_url_never_show() {
    const SECRET: &str = "SECRETtoken42";
    let repo = format!("https://user:{SECRET}@127.0.0.1:1/pkgs.git");
    let server = Server::start_with(&[("NIXERY_PKGS_REPO", &repo), ("NIXERY_PKGS_PATH", ""), ("RUST_LOG", "debug")]);
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let mut answers = Vec::new();
    for path in ["/v2/hello/manifests/latest".to_owned(), format!("/v2/hello/manifests/{commit}")] {
        for method in ["GET", "HEAD"] {
            let (line, r) = http::status_line(&server.addr(), method, &path).unwrap_or_else(|e| server.fail(&e));
            assert!(r.status >= 400, "{}", server.context(&r.describe()));
            answers.push(format!("{line}\n{}", r.describe()));
        }
    }
    let answers = answers.join("\n\n");
    // The failures happened, and were reported: git's and Nix's.
    assert!(answers.contains("502") && answers.contains("422"), "{answers}");
    let log = server.log();
    assert!(log.contains("127.0.0.1:1/pkgs.git"), "{}", server.context("the URL is never mentioned"));
    assert!(log.contains("***@127.0.0.1:1"), "{}", server.context("the redacted URL is not shown"));
    assert!(!answers.contains(SECRET), "an answer shows the token:\n{answers}");
    let leaks: Vec<&str> = log.lines().filter(|l| l.contains(SECRET)).collect();
    assert!(leaks.is_empty(), "log lines show the token:\n{}", leaks.join("\n"));
    assert!(!answers.contains(TEST_PKGS), "{answers}");
}
