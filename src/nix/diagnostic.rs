//! What Nix says went wrong, made fit for a registry client: the cause out of Nix's error
//! report, without the server's own file paths.
//!
//! Nix reports a failed evaluation as a trace of `… while evaluating …` frames and then the
//! cause as its last `error: …` paragraph (Nix 2.13 and later; 2.8 to 2.12 print the cause
//! first, as the only `error:` line, followed by the trace). The cause is what a user needs:
//! `evaluation aborted with the following error message: '…'`, `infinite recursion
//! encountered`, or nixpkgs' refusal (`Refusing to evaluate package 'foo-1.0' in
//! /nix/store/…-source/pkgs/…:12 because it has an unfree license (‘unfree’)`, older nixpkgs:
//! `Package ‘foo-1.0’ in … has an unfree license (‘unfree’), refusing to evaluate.`). nixpkgs
//! follows its reasons with instructions for the user's own machine (`a) To temporarily allow
//! unfree packages, …`), which are no help against a registry (the operator decides, with
//! NIXERY_NIXPKGS_CONFIG): [`final_error`] stops before them, and keeps what precedes them
//! (an insecure package's `Known issues:` list).
//!
//! [`Scrubber`] then rewrites paths: `/nix/store/<hash>-source/pkgs/…` (a fetched package set)
//! becomes `pkgs/…`, the path inside the package set; a local NIXERY_PKGS_PATH prefix is
//! removed the same way; every other absolute path outside the store is replaced by
//! `<path>` (the server's temporary directory of expressions, an operator's config file), as
//! is the path of a `file://` URL; credentials in URLs (`https://user:token@host`) become
//! `***`. Store paths stay: they are public, they are what an image is made of.

use crate::pkgsource::SourceRevision;
use regex::Regex;
use std::path::Path;
use std::sync::LazyLock;

/// The cause of a failed evaluation in Nix's stderr: the last `error:` paragraph, joined into
/// one line, without nixpkgs' remediation instructions; with its source position if Nix gave
/// one (`cannot add a string to an integer, at default.nix:12:9`). `None` if Nix printed no
/// error.
pub fn final_error(stderr: &str) -> Option<String> {
    static POSITION: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^at (.+:\d+:\d+):$").expect("regex"));
    let lines: Vec<&str> = stderr.lines().collect();
    let start = lines.iter().rposition(|l| {
        let l = l.trim_start();
        l.strip_prefix("error:").is_some_and(|rest| rest.starts_with(' ') && !rest.trim().is_empty())
    })?;
    let first = lines[start].trim_start().trim_start_matches("error:").trim();
    let mut paragraphs: Vec<Vec<&str>> = vec![vec![first]];
    let mut position = None;
    for line in &lines[start + 1..] {
        let line = line.trim();
        if line.starts_with('…') || line.starts_with("(stack trace truncated") || is_remediation(line) {
            break;
        }
        if let Some(at) = POSITION.captures(line) {
            position = Some(at[1].to_owned());
            break;
        }
        match (line.is_empty(), paragraphs.last_mut()) {
            (true, Some(last)) if last.is_empty() => {}
            (true, _) => paragraphs.push(Vec::new()),
            (false, Some(last)) => last.push(line),
            (false, None) => unreachable!("paragraphs starts non-empty"),
        }
    }
    let mut text = String::new();
    for paragraph in paragraphs.iter().filter(|p| !p.is_empty()) {
        if !text.is_empty() {
            if !text.ends_with(['.', ':', '!', '?']) {
                text.push('.');
            }
            text.push(' ');
        }
        text.push_str(&paragraph.join(" "));
    }
    let mut text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(position) = position {
        text.push_str(&format!(", at {position}"));
    }
    Some(text)
}

/// Where nixpkgs' instructions for the user's own machine begin.
fn is_remediation(line: &str) -> bool {
    ["a) ", "You can install it anyway", "Alternatively you can configure"].iter().any(|p| line.starts_with(p))
}

/// Rewrites the server's paths out of Nix's messages (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct Scrubber {
    /// The local package set's directory, with a trailing slash.
    local_prefix: Option<String>,
}

impl Scrubber {
    /// For messages about `source`: a local path source's directory is removed.
    pub fn for_source(source: &SourceRevision) -> Self {
        let local_prefix = match source {
            SourceRevision::Path { path, .. } => {
                let dir = if path.is_dir() { path.as_path() } else { path.parent().unwrap_or(Path::new("/")) };
                Some(format!("{}/", dir.display().to_string().trim_end_matches('/')))
            }
            // A flake is evaluated from the store (its `-source` paths are made relative).
            SourceRevision::Channel { .. } | SourceRevision::Git { .. } | SourceRevision::Flake(_) => None,
        };
        Scrubber { local_prefix }
    }

    /// A message of Nix's, with package-set paths made relative and other paths replaced.
    pub fn message(&self, text: &str) -> String {
        static OTHER_PATH: LazyLock<Regex> = LazyLock::new(|| {
            // An absolute path that starts a word (not the path part of a URL).
            Regex::new(r#"(^|[\s'"‘`(=])(/[^\s'"’`),;]*)"#).expect("regex")
        });
        static FILE_URL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r#"file://[^\s'"’`),;]*"#).expect("regex"));
        let text = self.log_line(text);
        let text = FILE_URL.replace_all(&text, "file://<path>");
        OTHER_PATH
            .replace_all(&text, |c: &regex::Captures| {
                let path = &c[2];
                let kept = path.starts_with("/nix/store/") || path == "/nix/store" || path == "/";
                format!("{}{}", &c[1], if kept { path } else { "<path>" })
            })
            .into_owned()
    }

    /// A line of a build log: package-set paths made relative and URL credentials removed,
    /// other paths kept (a log's `/build/source/main.c:3` is the package's, not the server's).
    pub fn log_line(&self, text: &str) -> String {
        static SOURCE: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"/nix/store/[0-9a-df-np-sv-z]{32}-source/").expect("regex"));
        let text = crate::redact::credentials(text);
        let text = SOURCE.replace_all(&text, "");
        match &self.local_prefix {
            Some(prefix) => text.replace(prefix.as_str(), ""),
            None => text.into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nixpkgs' current wording, as Nix 2.26 prints it (trace abridged).
    const UNFREE_CURRENT: &str = "error:
       … while evaluating the attribute 'drvPath'
         at /tmp/nixery-nix-Ab12/lookup.nix:80:9:
           79|
           80|         drvPath = drv.drvPath;
             |         ^

       (stack trace truncated; use '--show-trace' to show the full, detailed trace)

       error: Refusing to evaluate package 'steam-1.0.85' in /nix/store/0c3k6f1vfa4slm8pl3gqchx3vd1x5ahb-source/pkgs/by-name/st/steam/package.nix:42 because it has an unfree license (‘unfreeRedistributable’)
       a) To temporarily allow unfree packages, you can use an environment variable
          for a single invocation of the nix tools.

            $ export NIXPKGS_ALLOW_UNFREE=1
";

    /// The wording measured against an older nixpkgs tree (issue 9).
    const UNFREE_CLASSIC: &str = "error:
       … while calling the 'throw' builtin

       error: Package ‘foo-1.0’ in /nix/store/0c3k6f1vfa4slm8pl3gqchx3vd1x5ahb-source/pkgs/misc/foo/default.nix:12 has an unfree license (‘unfree’), refusing to evaluate.

       a) To temporarily allow unfree packages, you can use an environment variable
          for a single invocation of the nix tools.

            $ export NIXPKGS_ALLOW_UNFREE=1
";

    const INSECURE: &str = "error:
       error: Refusing to evaluate package 'openssl-1.1.1w' in /nix/store/0c3k6f1vfa4slm8pl3gqchx3vd1x5ahb-source/pkgs/development/libraries/openssl/default.nix:298 because it is marked as insecure

       Known issues:
        - OpenSSL 1.1 is reaching its end of life on 2023/09/11.
        - CVE-2024-0727

       You can install it anyway by allowing this package, using the
       following methods:

       a) To temporarily allow all insecure packages, you can use an environment
";

    #[test]
    fn the_cause_without_nixpkgs_instructions() {
        let scrub = Scrubber::default();
        let current = scrub.message(&final_error(UNFREE_CURRENT).unwrap());
        assert_eq!(
            current,
            "Refusing to evaluate package 'steam-1.0.85' in pkgs/by-name/st/steam/package.nix:42 \
             because it has an unfree license (‘unfreeRedistributable’)"
        );
        let classic = scrub.message(&final_error(UNFREE_CLASSIC).unwrap());
        assert_eq!(
            classic,
            "Package ‘foo-1.0’ in pkgs/misc/foo/default.nix:12 has an unfree license (‘unfree’), refusing to evaluate."
        );
        let insecure = scrub.message(&final_error(INSECURE).unwrap());
        assert_eq!(
            insecure,
            "Refusing to evaluate package 'openssl-1.1.1w' in pkgs/development/libraries/openssl/default.nix:298 \
             because it is marked as insecure. Known issues: - OpenSSL 1.1 is reaching its end of life on 2023/09/11. \
             - CVE-2024-0727"
        );
    }

    #[test]
    fn uncatchable_errors_of_nix_2_26() {
        let abort = "error:
       … while evaluating the attribute 'aborting'
         at /srv/pkgs/default.nix:250:7:
          250|       aborting = abort \"this package aborts on purpose\";
             |       ^

       error: evaluation aborted with the following error message: 'this package aborts on purpose'
";
        assert_eq!(
            final_error(abort).unwrap(),
            "evaluation aborted with the following error message: 'this package aborts on purpose'"
        );
        let recursion = "error:\n       … while calling the 'derivationStrict' builtin\n\n       error: infinite recursion encountered\n";
        assert_eq!(final_error(recursion).unwrap(), "infinite recursion encountered");
        let type_error = "error:
       … while evaluating attribute 'version' of derivation 'type-error-1.0'

       (stack trace truncated; use '--show-trace' to show the full, detailed trace)

       error: cannot add a string to an integer
       at /srv/pkgs/default.nix:257:23:
          256|         builder = bb;
          257|         version = 1 + \"0\";
             |                       ^
";
        let scrub = Scrubber { local_prefix: Some("/srv/pkgs/".into()) };
        assert_eq!(
            scrub.message(&final_error(type_error).unwrap()),
            "cannot add a string to an integer, at default.nix:257:23"
        );
        let missing = "error:\n       … while calling the 'import' builtin\n\n       error: path '/srv/pkgs/does-not-exist.nix' does not exist\n";
        assert_eq!(scrub.message(&final_error(missing).unwrap()), "path 'does-not-exist.nix' does not exist");
    }

    #[test]
    fn the_cause_first_as_nix_2_8_prints_it() {
        let old = "error: evaluation aborted with the following error message: 'no'

       … while evaluating the attribute 'drvPath'
       at /tmp/x/lookup.nix:55:9:
";
        assert_eq!(final_error(old).unwrap(), "evaluation aborted with the following error message: 'no'");
    }

    #[test]
    fn traces_and_builder_lines_are_not_the_cause() {
        let text = "trace: nixery-lookup: forcing without tryEval
error:
       error: 'oldhello' has been removed because it was unmaintained upstream; use 'hello' instead
";
        assert_eq!(
            final_error(text).unwrap(),
            "'oldhello' has been removed because it was unmaintained upstream; use 'hello' instead"
        );
        assert_eq!(final_error("warning: something\n       > error: in a build log\n"), None);
        assert_eq!(final_error(""), None);
    }

    #[test]
    fn server_paths_are_replaced_and_store_paths_kept() {
        let scrub = Scrubber { local_prefix: Some("/srv/pkgs/".into()) };
        assert_eq!(
            scrub.message("file '/tmp/nixery-nix-x1/lookup.nix' and /etc/nixery/config.nix:3 failed"),
            "file '<path>' and <path> failed"
        );
        assert_eq!(
            scrub.message("in /srv/pkgs/default.nix:12 and (/nix/store/0c3k6f1vfa4slm8pl3gqchx3vd1x5ahb-foo/bin/sh)"),
            "in default.nix:12 and (/nix/store/0c3k6f1vfa4slm8pl3gqchx3vd1x5ahb-foo/bin/sh)"
        );
        assert_eq!(
            scrub.message("remounting /nix/store writable: Invalid argument"),
            "remounting /nix/store writable: Invalid argument",
            "the store itself is no server file"
        );
        assert_eq!(
            scrub.message("unable to download 'https://github.com/NixOS/nixpkgs/archive/x.tar.gz': HTTP error 404"),
            "unable to download 'https://github.com/NixOS/nixpkgs/archive/x.tar.gz': HTTP error 404",
            "URLs are not paths"
        );
        assert_eq!(
            scrub.log_line("/build/source/main.c:3: error at /srv/pkgs/patches/a.patch"),
            "/build/source/main.c:3: error at patches/a.patch"
        );
    }

    #[test]
    fn urls_lose_credentials_and_local_paths() {
        let scrub = Scrubber::default();
        assert_eq!(
            scrub.message("fetching 'https://user:s3cret@git.example/pkgs.git' and 'file:///srv/pkgs/.git' failed"),
            "fetching 'https://***@git.example/pkgs.git' and 'file://<path>' failed"
        );
        assert_eq!(scrub.log_line("git+ssh://deploy@host/x"), "git+ssh://***@host/x");
    }

    #[test]
    fn a_local_source_is_relative_to_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("default.nix");
        std::fs::write(&file, "{}").unwrap();
        for source in [
            SourceRevision::Path { path: file.clone(), generation: 1 },
            SourceRevision::Path { path: dir.path().to_owned(), generation: 1 },
        ] {
            let scrub = Scrubber::for_source(&source);
            assert_eq!(scrub.message(&format!("error in {}:3", file.display())), "error in default.nix:3");
        }
    }
}
