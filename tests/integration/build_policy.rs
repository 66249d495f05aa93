//! Who may cause builds, and how many, as clients meet it: `NIXERY_ANONYMOUS=pull` (anonymous
//! clients pull what exists, a build needs a login; manifests by digest only under the names
//! they were built for, also on a replica sharing the storage), the package policy
//! (`NIXERY_PACKAGES_DENY` / `_ALLOW` on resolved attribute paths, nothing realised for a
//! refused image), and `NIXERY_BUILD_RATE` (429 with `Retry-After` for cold builds only,
//! clients told apart by `X-Forwarded-For` only from trusted proxies). `/ui/` pages plan
//! images, so they obey all three.

use crate::harness::client::printed;
use crate::harness::credentials::{basic, htpasswd};
use crate::harness::http::Response;
use crate::harness::{Client, Launch, Server, nonce, temp_dir};

/// The first error message of a registry JSON answer.
fn message(r: &Response) -> String {
    r.json()["errors"][0]["message"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn anonymous_clients_pull_what_exists_and_a_build_needs_a_login() {
    let dir = temp_dir("htpasswd");
    let file = htpasswd(dir.path(), &[("alice", "pw")]);
    let env = [("NIXERY_AUTH_HTPASSWD", file.to_str().unwrap()), ("NIXERY_ANONYMOUS", "pull")];
    let server = Server::start_with(&env);
    let alice = basic("alice", "pw");

    let skopeo = Client::SkopeoUmoci.start();
    let refused = skopeo.pull_output(&server, "hello:latest");
    assert!(!refused.status.success(), "{}", server.context(&printed(&refused)));
    let r = server.get("/v2/hello/manifests/latest");
    assert_eq!(r.status, 401, "{}", server.context(&r.describe()));
    assert!(message(&r).starts_with("authentication required to build 'hello'"), "{}", r.describe());
    assert_eq!(r.expect_header("WWW-Authenticate"), "Basic realm=\"nixery\"");
    let page = server.get("/ui/hello");
    assert_eq!(page.status, 401, "a page that plans is a build: {}", page.describe());
    assert_eq!(page.expect_header("WWW-Authenticate"), "Basic realm=\"nixery\"", "a browser asks for the login");
    assert_eq!(server.metric("nixery_nix_invocations_total"), 0, "nothing ran for anonymous clients");

    // alice builds it; then anonymous clients get it, page included.
    let built = server.get_ok("/v2/hello/manifests/latest", &[("Authorization", &alice)]);
    let digest = built.expect_header("Docker-Content-Digest").to_owned();
    let out = skopeo.pull_and_run(&server, "hello:latest", "hello");
    assert_eq!(out.trim(), "Hello, world!");
    let containerd = Client::Containerd.start();
    let out = containerd.pull_and_run(&server, "hello:latest", "hello");
    assert_eq!(out.trim(), "Hello, world!", "{}", server.context("containerd, anonymously"));
    server.get_ok("/ui/hello", &[]);
    assert_eq!(server.metric("nixery_image_builds_total"), 1);
    assert!(server.metric_labelled("nixery_refusals_total", "reason=\"anonymous\"") >= 3);

    // By digest: under the name it was built for, not under another, here and on a replica
    // sharing the storage (the links live there).
    let replica = Server::launch_with(Launch { env: &env, storage: Some(server.storage()), ..Launch::default() });
    for s in [&server, &replica] {
        let r = s.get(&format!("/v2/hello/manifests/{digest}"));
        assert_eq!(r.status, 200, "{}", s.context(&r.describe()));
        let r = s.request("GET", &format!("/v2/hello-lib/manifests/{digest}"), &[("Authorization", &alice)]);
        assert_eq!((r.status, message(&r)), (404, format!("manifest {digest} is not known to this registry")));
    }
}

#[test]
fn the_package_policy_refuses_what_names_resolve_to() {
    let salt = nonce();
    let server = Server::start_with(&[
        ("NIXERY_PACKAGES_DENY", "bashInteractive,haskellPackages.*,fresh*"),
        ("NIXERY_TEST_NONCE", &salt),
    ]);
    let docker = Client::Docker.start();
    let out = docker.pull_output(&server, "bashinteractive:latest");
    let text = printed(&out);
    eprintln!("docker pull, 403:\n{text}");
    let why = "package refused by this registry's package policy: 'bashinteractive' (attribute bashInteractive) \
               by rule 'bashInteractive' of NIXERY_PACKAGES_DENY";
    assert!(!out.status.success() && text.contains(&format!("denied: {why}")), "{}", server.context(&text));
    let containerd = Client::Containerd.start();
    let text = printed(&containerd.pull_output(&server, "bashinteractive:latest"));
    assert!(text.contains(&format!("403 {why}")), "{}", server.context(&format!("ctr:\n{text}")));

    let refused = [
        ("shell/hello", "'bashInteractive' by rule 'bashInteractive'"),
        ("haskellpackages.pandoc", "(attribute haskellPackages.pandoc) by rule 'haskellPackages.*'"),
        ("fresh", "'fresh' by rule 'fresh*'"),
    ];
    for (name, says) in refused {
        let r = server.get(&format!("/v2/{name}/manifests/latest"));
        assert_eq!((r.status, r.json()["errors"][0]["code"].as_str()), (403, Some("DENIED")), "{}", r.describe());
        assert!(message(&r).contains(says), "{name}: {}", message(&r));
        assert_eq!(r.json()["errors"][0]["detail"]["refused"][0]["setting"], "NIXERY_PACKAGES_DENY");
    }
    // Nothing of a refused image was realised: `fresh` (new to the store, salted by the
    // nonce) has its derivation instantiated, but no output.
    let fresh: Vec<String> = std::fs::read_dir("/nix/store")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(&format!("-fresh-{salt}")))
        .collect();
    assert!(fresh.is_empty(), "{}", server.context(&format!("built for a refused image: {fresh:?}")));
    let page = server.get("/ui/haskellpackages.pandoc");
    assert_eq!(page.status, 403, "{}", page.describe());
    assert!(page.text().contains("haskellPackages.*"));
    server.get_ok("/v2/hello/manifests/latest", &[]);
    assert!(server.metric_labelled("nixery_refusals_total", "reason=\"package_policy\"") >= 5);

    let allowing = Server::start_with(&[("NIXERY_PACKAGES_ALLOW", "hello,curl")]);
    allowing.get_ok("/v2/hello/manifests/latest", &[]);
    allowing.get_ok("/v2/curl.dev/manifests/latest", &[]);
    let r = allowing.get("/v2/hello-lib/manifests/latest");
    assert_eq!(r.status, 403, "{}", r.describe());
    assert!(message(&r).ends_with("'hello-lib' as no rule of NIXERY_PACKAGES_ALLOW allows it"), "{}", message(&r));
}

#[test]
fn the_build_rate_limits_cold_builds_not_pulls() {
    let server = Server::start_with(&[("NIXERY_BUILD_RATE", "1/3600")]);
    let docker = Client::Docker.start();
    let out = docker.pull_and_run(&server, "hello:latest", "hello");
    assert_eq!(out.trim(), "Hello, world!");
    let over = docker.pull_output(&server, "hello-lib:latest");
    let text = printed(&over);
    eprintln!("docker pull, 429:\n{text}");
    assert!(!over.status.success(), "{}", server.context(&text));
    assert!(text.contains("toomanyrequests: too many builds: at most 1 new image per 3600 s"), "{text}");

    for method in ["GET", "HEAD"] {
        let r = server.request(method, "/v2/hello-lib/manifests/latest", &[]);
        assert_eq!(r.status, 429, "{}", r.describe());
        let wait: u64 = r.expect_header("Retry-After").parse().unwrap();
        assert!((3500..=3600).contains(&wait), "Retry-After {wait}");
    }
    // What exists is still pulled, as often as wanted; the page of a new image is a build.
    for _ in 0..3 {
        server.get_ok("/v2/hello/manifests/latest", &[]);
    }
    let fresh = Client::SkopeoUmoci.start().pull_and_run(&server, "hello:latest", "hello");
    assert_eq!(fresh.trim(), "Hello, world!");
    let page = server.get("/ui/nano");
    assert_eq!(page.status, 429, "{}", page.describe());
    assert!(page.header("Retry-After").is_some(), "{}", page.describe());
    // A client naming another address is still this client: 127.0.0.1 is no trusted proxy.
    let r = server.request("GET", "/v2/nano/manifests/latest", &[("X-Forwarded-For", "198.51.100.7")]);
    assert_eq!(r.status, 429, "{}", r.describe());
    assert_eq!(server.metric("nixery_image_builds_total"), 1);
    assert!(server.metric_labelled("nixery_refusals_total", "reason=\"build_rate\"") >= 5);

    // Behind a trusted proxy, each forwarded address has its own window.
    let proxied = Server::start_with(&[("NIXERY_BUILD_RATE", "1/3600"), ("NIXERY_TRUSTED_PROXIES", "127.0.0.1")]);
    let from = |address: &str, name: &str| {
        let r = proxied.request("GET", &format!("/v2/{name}/manifests/latest"), &[("X-Forwarded-For", address)]);
        r.status
    };
    assert_eq!(from("198.51.100.1", "hello"), 200);
    assert_eq!(from("198.51.100.1", "hello-lib"), 429);
    assert_eq!(from("198.51.100.2", "hello-lib"), 200);
    assert_eq!(from("6.6.6.6, 198.51.100.2", "nano"), 429, "the client's own entries are not believed");
}
