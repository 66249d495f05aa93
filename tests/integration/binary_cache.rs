//! Images whose store paths come from a binary cache, the way users get them: each test has a
//! signed cache of salted test packages served by nginx ([`BinaryCache`]), none of whose
//! paths is in the local store, and a server whose Nix substitutes from it and from nothing
//! else. A real client pulls the image and runs a program from it.
//!
//! The proof that the layers came from the cache, for every store path of the image: the web
//! server answered its narinfo and its NAR, the local store has it as a substituted path
//! signed by the cache's key, the server log (Nix's own log) says it was copied from the
//! cache's URL, and Nix built nothing.
//!
//! Each test (each client's case too) builds its own cache (a salt of its own: the paths it
//! deletes are its alone) with only what its image needs: `hello-lib` (hello-lib -> greeting
//! -> busybox) plus cacert and iana-etc, five small derivations.

use std::collections::BTreeSet;

use rstest::rstest;

use crate::harness::binary_cache::{Endpoint, path_info};
use crate::harness::{BinaryCache, Client, Server, Trust};

/// The package of every image here: its program prints a file of another store path.
const PACKAGE: &str = "hello-lib";
/// What it prints.
const GREETING: &str = "greetings from the nix store";

/// A server substituting from a fresh cache of one package. Fields drop in order: the server
/// stops before the cache evicts its paths again.
struct Substituting {
    server: Server,
    endpoint: Endpoint,
    cache: BinaryCache,
    package: &'static str,
}

impl Substituting {
    fn start(package: &'static str, trust: Trust) -> Substituting {
        let cache = BinaryCache::start(&[package]);
        let valid = cache.valid_paths();
        assert!(valid.is_empty(), "the cache's paths must not be in the local store before the pull: {valid:?}");
        let endpoint = cache.endpoint(trust);
        let server = Server::start_with_env(&cache.server_env(&endpoint));
        Substituting { server, endpoint, cache, package }
    }

    /// Every store path of the image.
    fn image_paths(&self) -> BTreeSet<String> {
        self.cache.closure_of(&[self.package])
    }

    /// Everything the image holds came from the cache, and Nix built nothing.
    fn assert_substituted(&self) {
        let paths = self.image_paths();
        self.cache.verify_substituted(&self.endpoint, &paths).unwrap_or_else(|e| self.server.fail(&e));
        let log = self.server.log();
        if let Some(line) = log.lines().find(|l| l.contains("building '/nix/store/")) {
            self.server.fail(&format!("the server's Nix built something instead of substituting: {line}"));
        }
        for path in &paths {
            let copied = format!("copying path '{path}' from '{}'", self.endpoint.url);
            assert!(log.contains(&copied), "{}", self.server.context(&format!("the server log lacks {copied:?}")));
        }
    }
}

/// Each client pulls the image and runs its program: skopeo + umoci (chroot into the
/// unpacked rootfs), containerd (the kubelet's path), podman, and docker against a private
/// Docker engine.
#[rstest]
#[case::skopeo(Client::SkopeoUmoci)]
#[case::containerd(Client::Containerd)]
#[case::podman(Client::Podman)]
#[case::docker(Client::Docker)]
fn pulls_an_image_substituted_from_the_cache(#[case] client: Client) {
    let s = Substituting::start(PACKAGE, Trust::CacheKey);
    let session = client.start();
    let out = session.pull_and_run(&s.server, &format!("{PACKAGE}:latest"), PACKAGE);
    assert_eq!(
        out.trim(),
        GREETING,
        "{}",
        s.server.context(&format!("the program run by {client} printed something else"))
    );
    s.assert_substituted();
}

/// A cache signed by a key the server's Nix does not trust is not used: Nix reads its
/// narinfo files, warns that they are not signed by a trusted key and downloads no NAR.
/// With local builds allowed (the default, as in Nix and Nixery) it then builds the paths
/// itself, so the image is still served. (`greeting`, the smallest closure: every path is
/// built twice here, by the cache's builder and by the server.)
#[test]
fn a_cache_signed_by_an_untrusted_key_is_not_used() {
    let s = Substituting::start("greeting", Trust::OtherKey);
    let r = s.server.get_ok(&format!("/v2/{}/manifests/latest", s.package), &[]);
    assert!(!r.json()["layers"].as_array().is_some_and(|l| l.is_empty()), "{}", s.server.context(&r.describe()));

    let requests = s.cache.requests(&s.endpoint);
    let context = |msg: &str| s.server.context(&format!("{msg}\n--- access log ---\n{}", s.cache.access_log()));
    for path in s.image_paths() {
        let narinfo = format!("/{}.narinfo", path.trim_start_matches("/nix/store/").split('-').next().unwrap());
        assert!(
            requests.iter().any(|r| r.path == narinfo && r.status == 200),
            "{}",
            context(&format!("Nix did not look up {path} in the cache"))
        );
    }
    let nars: Vec<_> = requests.iter().filter(|r| r.path.starts_with("/nar/")).collect();
    assert!(nars.is_empty(), "{}", context(&format!("NARs were downloaded from an untrusted cache: {nars:?}")));

    let log = s.server.log();
    for warning in ["ignoring substitute for '/nix/store/", "not signed by any of the keys in 'trusted-public-keys'"] {
        assert!(log.contains(warning), "{}", s.server.context(&format!("the server log lacks Nix's {warning:?}")));
    }
    // Built here instead: valid, `ultimate`, and without the cache's signature.
    let info = path_info(&s.image_paths()).unwrap_or_else(|e| s.server.fail(&e));
    for path in s.image_paths() {
        let i = info.get(&path).unwrap_or_else(|| s.server.fail(&format!("{path} is not in the store")));
        assert_eq!(i["ultimate"], true, "{}", s.server.context(&format!("{path} was not built locally: {i}")));
    }
}

/// With `NIXERY_LOCAL_BUILDS=false`, an image whose paths only an untrusted cache has is
/// refused before anything is built or downloaded, with an error that says why.
#[test]
fn without_local_builds_an_untrusted_cache_is_refused_with_a_clear_error() {
    let cache = BinaryCache::start(&[PACKAGE]);
    let endpoint = cache.endpoint(Trust::OtherKey);
    let mut env = cache.server_env(&endpoint);
    env.push(("NIXERY_LOCAL_BUILDS", "false".to_owned()));
    let server = Server::start_with_env(&env);
    let r = server.get(&format!("/v2/{PACKAGE}/manifests/latest"));
    assert_eq!(r.status, 422, "{}", server.context(&r.describe()));
    let body = r.json();
    assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN", "{}", server.context(&r.describe()));
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains(PACKAGE) && message.contains("signed"), "{}", server.context(&r.describe()));
    let nars: Vec<_> = cache.requests(&endpoint).into_iter().filter(|r| r.path.starts_with("/nar/")).collect();
    assert!(nars.is_empty(), "{}", server.context(&format!("NARs were downloaded: {nars:?}")));
    assert!(!server.log().contains("building '/nix/store/"), "{}", server.context("Nix built something"));
    assert!(cache.valid_paths().is_empty(), "{}", server.context("paths were added to the store"));
}
