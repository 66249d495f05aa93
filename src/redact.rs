//! Secrets out of text that is shown: the one redaction every log line and answer that can
//! carry a URL goes through.
//!
//! An operator may give the package source's URL with a token in it
//! (`NIXERY_PKGS_REPO=https://user:token@git.example/pkgs.git`, `ssh://deploy:pass@host/…`,
//! or a token in the query, `…/pkgs.tar.gz?access_token=…`), and git and Nix echo the URL in
//! their messages (`fatal: unable to access '…'`, `fetching Git repository '…'`). The URL as
//! configured goes to git and Nix only ([`crate::pkgsource::RemoteUrl::as_str`]); everything
//! that is displayed — the start-up line, resolution errors, Nix's log lines, error answers —
//! passes through [`credentials`] first.
//!
//! What counts as a secret: the user-info part of any `scheme://user-info@host` (a user name
//! alone too: it is half of a credential and often the token itself, as GitHub's
//! `https://<token>@github.com`), and the value of query parameters whose names say they hold
//! one (`token`, `access_token`, `password`, `secret`, `key`, `sig`, AWS' and GCS' signed-URL
//! parameters). Each becomes `***`; the rest of the URL stays, so a message still says which
//! host and repository failed.

use regex::Regex;
use std::borrow::Cow;
use std::sync::LazyLock;

/// What replaces a secret.
pub const MASK: &str = "***";

/// `text` with the credentials of every URL in it replaced by [`MASK`] (see the module docs).
pub fn credentials(text: &str) -> Cow<'_, str> {
    static USER_INFO: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r#"([A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#@'"`]+@"#).expect("regex"));
    static QUERY_SECRET: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r#"(?i)([?&](?:[a-z0-9_.-]*token|password|passwd|secret|key|api[_-]?key|sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|x-goog-credential)=)[^\s&#'"`]+"#,
        )
        .expect("regex")
    });
    let text = match USER_INFO.replace_all(text, format!("${{1}}{MASK}@")) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        Cow::Owned(owned) => Cow::Owned(owned),
    };
    match QUERY_SECRET.replace_all(&text, format!("${{1}}{MASK}")) {
        Cow::Borrowed(_) => text,
        Cow::Owned(owned) => Cow::Owned(owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_of_any_scheme_goes() {
        for (given, shown) in [
            ("https://user:s3cret@git.example/org/pkgs.git", "https://***@git.example/org/pkgs.git"),
            ("ssh://deploy:pa55@host:22/srv/pkgs.git", "ssh://***@host:22/srv/pkgs.git"),
            ("git+ssh://deploy@host/x", "git+ssh://***@host/x"),
            ("https://ghp_t0ken@github.com/o/r", "https://***@github.com/o/r"),
            (
                "fatal: unable to access 'https://u:s3cret@h/r.git/': Failed to connect; retry 'HTTP://a:b@c'",
                "fatal: unable to access 'https://***@h/r.git/': Failed to connect; retry 'HTTP://***@c'",
            ),
        ] {
            assert_eq!(credentials(given), shown);
        }
    }

    #[test]
    fn query_tokens_go_and_other_parameters_stay() {
        assert_eq!(
            credentials("https://h/p.tar.gz?ref=main&access_token=abc123&X-Amz-Signature=ffee#top"),
            "https://h/p.tar.gz?ref=main&access_token=***&X-Amz-Signature=***#top"
        );
        assert_eq!(credentials("https://h/p?private_token=x y"), "https://h/p?private_token=*** y");
        assert_eq!(credentials("https://h/p?keyword=a&monkey=b"), "https://h/p?keyword=a&monkey=b");
    }

    #[test]
    fn text_without_credentials_is_not_copied() {
        for plain in [
            "https://git.example/a@b",
            "git@github.com:NixOS/nixpkgs",
            "/srv/repo",
            "user@example.org wrote",
            "error: this package is broken on purpose",
        ] {
            assert!(matches!(credentials(plain), Cow::Borrowed(t) if t == plain), "{plain}");
        }
    }
}
