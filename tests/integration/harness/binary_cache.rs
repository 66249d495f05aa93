//! A Nix binary cache, the way users get store paths: signed, served over HTTP by a real web
//! server, and absent from the local store until Nix substitutes it.
//!
//! [`BinaryCache::start`] takes attributes of the test package set and
//!
//! 1. picks a salt (`NIXERY_TEST_SALT`, read by tests/pkgs/default.nix at evaluation time),
//!    which changes every derivation of the set, busybox included: the paths are this test's
//!    alone, so it may delete them from the store that every test shares;
//! 2. builds the salted packages (plus `cacert` and `iana-etc`, which every image carries),
//!    and records their closure and each path's references (`nix-store --query
//!    --references`) while they are valid, for tests to compare against;
//! 3. generates a signing key (`nix-store --generate-binary-cache-key`), signs the closure
//!    (`nix store sign -r`) and copies it into a directory (`nix copy --to file://DIR`, zstd:
//!    what current caches serve, and much faster to write here than xz);
//! 4. deletes the closure and the salted `.drv` files from the local store (`nix-store
//!    --delete`), after checking that each one is salted: every `.drv` carries the salt and
//!    every output was built by one of them;
//! 5. serves the directory with [`Nginx`].
//!
//! A server then substitutes from it: [`BinaryCache::endpoint`] gives a URL of its own for
//! each use (a symlink `/<label>` to the cache directory), because Nix remembers narinfo
//! answers per cache URL in ~/.cache/nix, and an earlier test's answers must not hide this
//! test's requests; [`BinaryCache::server_env`] is what a [`super::Server`] needs (the salt,
//! `NIX_CONFIG` with `substituters` and `trusted-public-keys`, and Nix's log in the server
//! log); [`BinaryCache::requests`] is what the web server saw under that URL; and
//! [`BinaryCache::verify_substituted`] checks that paths came from the cache and were not
//! built.
//!
//! ```ignore
//! let cache = BinaryCache::start(&["hello-lib"]);
//! let endpoint = cache.endpoint(Trust::CacheKey);
//! let server = Server::start_with(&env_refs(&cache.server_env(&endpoint)));
//! // ... pull hello-lib with a client ...
//! cache.verify_substituted(&endpoint, &cache.closure_of(&["hello-lib"])).unwrap_or_else(|e| server.fail(&e));
//! ```
//!
//! When dropped, it stops the web server and deletes the salted paths from the store again
//! (best effort), so test runs do not fill the store.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use nixery::image::ALWAYS_INCLUDED;
use tempfile::TempDir;

use super::nginx::{Nginx, Request};
use super::process::{COMMAND_TIMEOUT, output_timeout, require_tool, run, run_checked};
use super::{TEST_PKGS, nonce, temp_dir};

/// Which key the server's Nix trusts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// The key the cache is signed with: its paths are substituted.
    CacheKey,
    /// Another key: Nix fetches the narinfo files, finds no signature it trusts and does not
    /// use them.
    OtherKey,
}

/// One URL of the cache, for one server (see the module docs for why each gets its own).
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `http://127.0.0.1:PORT/<label>`, what `substituters` names.
    pub url: String,
    label: String,
    trusted_key: String,
}

/// A signed binary cache of salted test packages, served over HTTP (see the module docs).
pub struct BinaryCache {
    // Declared first, so it is stopped before its directory is removed.
    web: Nginx,
    dir: TempDir,
    salt: String,
    key_name: String,
    public_key: String,
    other_public_key: String,
    /// Output paths of each attribute the cache was built from.
    outputs: BTreeMap<String, Vec<String>>,
    /// Each path in the cache and its references, as the local store had them.
    references: BTreeMap<String, BTreeSet<String>>,
    /// The salted derivations the paths were built by.
    derivations: BTreeSet<String>,
}

/// A Nix command with the salt and without substituters (nothing may come from elsewhere).
fn nix_command(program: &str, salt: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("NIX_CONFIG", "substituters =").env("NIXERY_TEST_SALT", salt);
    if program == "nix" {
        cmd.args(["--extra-experimental-features", "nix-command"]);
    }
    cmd
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

/// `/nix/store/<hash>-name` → `<hash>`.
fn hash_part(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.split('-').next().unwrap_or(base)
}

/// Generates a signing key named `name` in `dir`: (secret key file, public key).
fn generate_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let (secret, public) = (dir.join(format!("{name}.secret")), dir.join(format!("{name}.public")));
    run(Command::new("nix-store").arg("--generate-binary-cache-key").arg(name).arg(&secret).arg(&public));
    let public = fs::read_to_string(&public).expect("read the public key");
    (secret, public.trim().to_owned())
}

impl BinaryCache {
    /// Builds, signs, caches and evicts salted `attrs` (dotted paths like
    /// `haskellPackages.pandoc` work) and their closure, plus `cacert` and `iana-etc`, and
    /// serves the cache. Panics with the failing command's output.
    pub fn start(attrs: &[&str]) -> BinaryCache {
        require_tool(&["nix", "nix-build", "nix-store", "nix-instantiate", "nginx"]);
        let started = std::time::Instant::now();
        let salt = format!("cache-{}", nonce());
        let dir = temp_dir("binary-cache");
        let mut attrs: Vec<String> = attrs.iter().chain(&ALWAYS_INCLUDED).map(|a| a.to_string()).collect();
        attrs.sort();
        attrs.dedup();

        let evaluated = Self::evaluate_outputs(&salt, &attrs);
        // Every output by name (`-A curl.dev`), whatever nix-build builds for a bare name.
        let mut build = nix_command("nix-build", &salt);
        build.args(["--no-out-link", "--max-jobs", "2"]).arg(TEST_PKGS);
        for (attr, outputs) in &evaluated {
            for name in outputs.keys() {
                build.args(["-A", &format!("{attr}.{name}")]);
            }
        }
        let built: BTreeSet<String> = lines(&run(&mut build)).into_iter().collect();
        let outputs: BTreeMap<String, Vec<String>> =
            evaluated.into_iter().map(|(attr, outputs)| (attr, outputs.into_values().collect())).collect();
        let wanted: BTreeSet<String> = outputs.values().flatten().cloned().collect();
        assert_eq!(built, wanted, "nix-build of {attrs:?} printed other outputs than their outPaths");

        let closure = lines(&run(nix_command("nix-store", &salt).args(["--query", "--requisites"]).args(&wanted)));
        let references = closure
            .iter()
            .map(|p| {
                let refs = run(nix_command("nix-store", &salt).args(["--query", "--references", p]));
                (p.clone(), lines(&refs).into_iter().collect())
            })
            .collect();
        let derivations = Self::salted_derivations(&salt, &closure);

        let key_name = format!("nixery-test-{salt}");
        let (secret, public_key) = generate_key(dir.path(), &key_name);
        let (_, other_public_key) = generate_key(dir.path(), &format!("nixery-test-other-{salt}"));
        run(nix_command("nix", &salt).args(["store", "sign", "--recursive", "--key-file"]).arg(&secret).args(&wanted));
        let files = dir.path().join("files");
        let store_url = format!("file://{}?compression=zstd", files.display());
        run(nix_command("nix", &salt).args(["copy", "--to", &store_url]).args(&wanted));
        fs::create_dir_all(dir.path().join("www")).expect("create the web root");

        let web = Nginx::serve(&dir.path().join("www"));
        let cache =
            BinaryCache { web, dir, salt, key_name, public_key, other_public_key, outputs, references, derivations };
        cache.evict().unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "harness: binary cache of {} paths (salt {}) at {} after {:?}",
            cache.references.len(),
            cache.salt,
            cache.web.url("/"),
            started.elapsed()
        );
        cache
    }

    /// `attr` → output name → output path, evaluated without building or writing anything.
    fn evaluate_outputs(salt: &str, attrs: &[String]) -> BTreeMap<String, BTreeMap<String, String>> {
        const EXPR: &str = r#"{ pkgs, attrs }:
          let
            set = import pkgs { };
            path = attr: builtins.filter builtins.isString (builtins.split "\\." attr);
            get = attr: builtins.foldl' (s: n: s.${n}) set (path attr);
            outputs = drv: builtins.listToAttrs
              (map (o: { name = o; value = drv.${o}.outPath; }) (drv.outputs or [ "out" ]));
          in builtins.listToAttrs (map (a: { name = a; value = outputs (get a); }) (builtins.fromJSON attrs))"#;
        let out = run(nix_command("nix-instantiate", salt)
            .args(["--eval", "--strict", "--json", "--expr", EXPR, "--argstr", "pkgs", TEST_PKGS])
            .args(["--argstr", "attrs", &serde_json::to_string(attrs).expect("strings serialise")]));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("outputs of {attrs:?} are not JSON ({e}): {out}"))
    }

    /// The `.drv` files that built `closure`, each checked to carry `salt` (so deleting them
    /// and their outputs cannot touch a path another test uses).
    fn salted_derivations(salt: &str, closure: &[String]) -> BTreeSet<String> {
        let derivers = lines(&run(nix_command("nix-store", salt).args(["--query", "--deriver"]).args(closure)));
        assert_eq!(derivers.len(), closure.len(), "one deriver per path of {closure:?}: {derivers:?}");
        let requisites = lines(&run(nix_command("nix-store", salt).args(["--query", "--requisites"]).args(&derivers)));
        let drvs: BTreeSet<String> = requisites.into_iter().filter(|p| p.ends_with(".drv")).collect();
        for (path, deriver) in closure.iter().zip(&derivers) {
            assert!(drvs.contains(deriver), "{path} was not built by a derivation of the salted set: {deriver}");
        }
        for drv in &drvs {
            let text = fs::read_to_string(drv).unwrap_or_else(|e| panic!("cannot read {drv}: {e}"));
            assert!(text.contains(salt), "{drv} does not carry the salt {salt}: refusing to delete it");
        }
        drvs
    }

    /// Deletes the cache's paths and their salted derivations from the local store (paths
    /// that are not there are skipped), and checks they are gone.
    pub fn evict(&self) -> Result<(), String> {
        let all: BTreeSet<String> = self.references.keys().chain(&self.derivations).cloned().collect();
        let valid = valid_among(&all)?;
        if valid.is_empty() {
            return Ok(());
        }
        // One call: Nix deletes referrers before what they refer to.
        run_checked(nix_command("nix-store", &self.salt).arg("--delete").args(&valid), COMMAND_TIMEOUT)
            .map_err(|e| format!("cannot evict the binary cache's paths from the local store\n{e}"))?;
        let left = valid_among(&all)?;
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("still in the local store after nix-store --delete: {left:?}"))
        }
    }

    /// Which of the cache's paths are valid in the local store now.
    pub fn valid_paths(&self) -> BTreeSet<String> {
        valid_among(&self.references.keys().cloned().collect()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A URL of its own for one user of the cache, trusting `trust`'s key.
    pub fn endpoint(&self, trust: Trust) -> Endpoint {
        let label = format!("cache-{}", nonce());
        std::os::unix::fs::symlink("../files", self.dir.path().join("www").join(&label))
            .expect("link a new endpoint to the cache");
        let trusted_key = match trust {
            Trust::CacheKey => self.public_key.clone(),
            Trust::OtherKey => self.other_public_key.clone(),
        };
        Endpoint { url: self.web.url(&format!("/{label}")), label, trusted_key }
    }

    /// `NIX_CONFIG` that substitutes from `endpoint` only.
    pub fn nix_config(&self, endpoint: &Endpoint) -> String {
        format!("substituters = {}\ntrusted-public-keys = {}\n", endpoint.url, endpoint.trusted_key)
    }

    /// What a [`super::Server`] needs to substitute from `endpoint`: the salt, the
    /// [`BinaryCache::nix_config`], and `RUST_LOG` with Nix's own log (target
    /// `nixery::nix::log`) at debug level, so the server log shows what Nix copied or built.
    pub fn server_env(&self, endpoint: &Endpoint) -> Vec<(&'static str, String)> {
        vec![
            ("NIXERY_TEST_SALT", self.salt.clone()),
            ("NIX_CONFIG", self.nix_config(endpoint)),
            ("RUST_LOG", "info,nixery::nix::log=debug".to_owned()),
        ]
    }

    /// The salt the packages were built with (`NIXERY_TEST_SALT`).
    pub fn salt(&self) -> &str {
        &self.salt
    }

    /// The attributes the cache was built from and their outputs.
    pub fn all_outputs(&self) -> &BTreeMap<String, Vec<String>> {
        &self.outputs
    }

    /// Every path in the cache and its references (`nix-store --query --references`,
    /// recorded before the paths were deleted).
    pub fn references(&self) -> &BTreeMap<String, BTreeSet<String>> {
        &self.references
    }

    /// The output paths of `attr`, one of the attributes the cache was built from.
    pub fn outputs(&self, attr: &str) -> &[String] {
        self.outputs.get(attr).unwrap_or_else(|| panic!("the cache was not built from {attr}"))
    }

    /// The closure of the outputs of `attrs` (which must be among the cache's attributes);
    /// `cacert` and `iana-etc`, which every image has, are always included.
    pub fn closure_of(&self, attrs: &[&str]) -> BTreeSet<String> {
        let mut todo: Vec<String> =
            attrs.iter().chain(&ALWAYS_INCLUDED).flat_map(|a| self.outputs(a).iter().cloned()).collect();
        let mut closure = BTreeSet::new();
        while let Some(path) = todo.pop() {
            if closure.insert(path.clone()) {
                todo.extend(self.references[&path].iter().cloned());
            }
        }
        closure
    }

    /// The requests the web server answered under `endpoint`, paths relative to its URL
    /// (`/nix-cache-info`, `/<hash>.narinfo`, `/nar/<hash>.nar.zst`).
    pub fn requests(&self, endpoint: &Endpoint) -> Vec<Request> {
        let prefix = format!("/{}/", endpoint.label);
        self.web
            .requests()
            .into_iter()
            .filter_map(|r| {
                let path = format!("/{}", r.path.strip_prefix(&prefix)?);
                Some(Request { path, ..r })
            })
            .collect()
    }

    /// The web server's whole access log, for messages.
    pub fn access_log(&self) -> String {
        self.web.access_log()
    }

    /// The file the cache serves for `path`'s NAR (`nar/<hash>.nar.zst`), from its narinfo.
    pub fn nar_file(&self, path: &str) -> String {
        let narinfo = self.dir.path().join("files").join(format!("{}.narinfo", hash_part(path)));
        let text = fs::read_to_string(&narinfo).unwrap_or_else(|e| panic!("no narinfo for {path} ({e})"));
        text.lines()
            .find_map(|l| l.strip_prefix("URL: "))
            .unwrap_or_else(|| panic!("narinfo of {path} has no URL:\n{text}"))
            .to_owned()
    }

    /// Deletes `path`'s NAR file: the cache still lists the path (its narinfo), but cannot
    /// deliver it, as a cache whose upload was cut short or whose storage lost files.
    pub fn lose_nar(&self, path: &str) {
        let nar = self.dir.path().join("files").join(self.nar_file(path));
        fs::remove_file(&nar).unwrap_or_else(|e| panic!("cannot delete {} ({e})", nar.display()));
    }

    /// Checks that every one of `paths` came from the cache through `endpoint`: the web
    /// server answered its narinfo and its NAR with 200, and the local store has it as a
    /// substituted path (not `ultimate`, i.e. not built here) carrying the cache's signature.
    /// `Err` says what is missing, with the access log and the store's view.
    pub fn verify_substituted(&self, endpoint: &Endpoint, paths: &BTreeSet<String>) -> Result<(), String> {
        let served: BTreeSet<String> = self
            .requests(endpoint)
            .into_iter()
            .filter(|r| r.method == "GET" && r.status == 200)
            .map(|r| r.path)
            .collect();
        let mut problems = Vec::new();
        for path in paths {
            let narinfo = format!("/{}.narinfo", hash_part(path));
            if !served.contains(&narinfo) {
                problems.push(format!("{path}: GET {narinfo} was not answered with 200"));
            }
            let nar = format!("/{}", self.nar_file(path));
            if !served.contains(&nar) {
                problems.push(format!("{path}: its NAR {nar} was not downloaded"));
            }
        }
        let info = path_info(paths)?;
        for path in paths {
            match info.get(path.as_str()) {
                None => problems.push(format!("{path}: not valid in the local store")),
                Some(i) if i["ultimate"] != false => problems.push(format!("{path}: built locally (ultimate): {i}")),
                Some(i) => {
                    let signed = i["signatures"]
                        .as_array()
                        .is_some_and(|s| s.iter().any(|s| s.as_str().is_some_and(|s| s.starts_with(&self.key_name))));
                    if !signed {
                        problems.push(format!("{path}: no signature by {}: {i}", self.key_name));
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "not substituted from the binary cache at {}:\n  {}\n--- web server access log ---\n{}",
                endpoint.url,
                problems.join("\n  "),
                self.access_log()
            ))
        }
    }
}

/// Those of `paths` that are valid in the local store.
fn valid_among(paths: &BTreeSet<String>) -> Result<BTreeSet<String>, String> {
    let mut check = Command::new("nix-store");
    check.args(["--check-validity", "--print-invalid"]).args(paths);
    let invalid = run_checked(&mut check, COMMAND_TIMEOUT)?;
    let invalid: BTreeSet<&str> = invalid.lines().collect();
    Ok(paths.iter().filter(|p| !invalid.contains(p.as_str())).cloned().collect())
}

/// `nix path-info --json` of the valid ones of `paths`, by path, in every format Nix has
/// printed (a list of objects with `path` before 2.19, an object keyed by path after, with
/// `null` for invalid paths).
pub fn path_info(paths: &BTreeSet<String>) -> Result<BTreeMap<String, serde_json::Value>, String> {
    let mut cmd = Command::new("nix");
    cmd.args(["--extra-experimental-features", "nix-command", "path-info", "--json"]).args(paths);
    let out = output_timeout(&mut cmd, COMMAND_TIMEOUT)?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("nix path-info printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)))?;
    Ok(match json {
        serde_json::Value::Object(map) => map.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        serde_json::Value::Array(list) => list
            .into_iter()
            .filter(|v| v["valid"] != false)
            .filter_map(|v| Some((v["path"].as_str()?.to_owned(), v)))
            .collect(),
        other => return Err(format!("nix path-info printed unexpected JSON: {other}")),
    })
}

impl Drop for BinaryCache {
    fn drop(&mut self) {
        // Best effort: a server still running may hold temporary roots on them.
        if let Err(e) = self.evict() {
            eprintln!("harness: leaving salted paths in the store: {e}");
        }
    }
}
