//! The Nix the server runs with: 2.18 or later, checked at start-up.
//!
//! nixpkgs refuses to evaluate with a Nix older than 2.18 (its lib/minver.nix), and the
//! server reads Nix's output in the formats of 2.18 and later (`nix path-info --json` became
//! an object keyed by store path in 2.19; both are read, and 2.8's still where it costs
//! nothing). With an older Nix every image would fail, each with an error far from its cause,
//! so the server and its subcommands refuse to start instead, naming the version they found.
//!
//! The version comes from `nix-store --version`, the command that realises images. Its last
//! word is the version Nix reports to expressions (`builtins.nixVersion`, which minver.nix
//! checks): `nix-store (Nix) 2.26.3`, `nix-store (Lix, like Nix) 2.91.1` (Lix is a Nix
//! implementation that claims 2.18 compatibility), `nix (Determinate Nix 3.6.2) 2.29.0`,
//! pre-releases such as `2.26.0pre20241210_abc`.

use std::fmt;
use tokio::process::Command;

/// A Nix version, as far as compatibility goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NixVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

/// The oldest Nix the server runs with (what nixpkgs requires).
pub const MINIMUM: NixVersion = NixVersion { major: 2, minor: 18, patch: 0 };

impl NixVersion {
    /// The version in the output of `nix-store --version` (the last word of its first line).
    pub fn parse(output: &str) -> Option<Self> {
        let word = output.lines().next()?.split_whitespace().next_back()?;
        let mut numbers = word.split('.').map(|part| {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        });
        let major = numbers.next()??;
        let minor = numbers.next()??;
        let patch = numbers.next().flatten().unwrap_or(0);
        Some(NixVersion { major, minor, patch })
    }
}

impl fmt::Display for NixVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Why the installed Nix cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error("cannot run `{program} --version` ({source}): install Nix {MINIMUM} or later")]
    NotRunnable { program: String, source: std::io::Error },
    #[error("`{program} --version` failed ({status}): {stderr}")]
    Failed { program: String, status: std::process::ExitStatus, stderr: String },
    #[error("`{program} --version` printed {output:?}, which names no Nix version")]
    Unreadable { program: String, output: String },
    #[error(
        "Nix {found} is too old (`{program} --version`: {output:?}): nixpkgs requires Nix {MINIMUM} or later \
         (its lib/minver.nix), and so does this server; install a current Nix (for example Debian trixie's \
         nix-bin, or from nixos.org)"
    )]
    TooOld { program: String, found: NixVersion, output: String },
}

/// The version of the Nix on `PATH`, if it is recent enough.
pub async fn require_supported() -> Result<NixVersion, VersionError> {
    require_supported_by("nix-store").await
}

async fn require_supported_by(program: &str) -> Result<NixVersion, VersionError> {
    let out = Command::new(program)
        .arg("--version")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| VersionError::NotRunnable { program: program.to_owned(), source })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(VersionError::Failed { program: program.to_owned(), status: out.status, stderr });
    }
    let output = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let found = NixVersion::parse(&output)
        .ok_or_else(|| VersionError::Unreadable { program: program.to_owned(), output: output.clone() })?;
    if found < MINIMUM {
        return Err(VersionError::TooOld { program: program.to_owned(), found, output });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn v(major: u32, minor: u32, patch: u32) -> NixVersion {
        NixVersion { major, minor, patch }
    }

    #[test]
    fn reads_what_nix_and_its_relatives_print() {
        for (output, expected) in [
            ("nix-store (Nix) 2.26.3", v(2, 26, 3)),
            ("nix-store (Nix) 2.8.0\n", v(2, 8, 0)),
            ("nix-store (Nix) 2.18.1", v(2, 18, 1)),
            ("nix-store (Nix) 2.3.16", v(2, 3, 16)),
            ("nix-store (Lix, like Nix) 2.91.1", v(2, 91, 1)),
            ("nix (Determinate Nix 3.6.2) 2.29.0", v(2, 29, 0)),
            ("nix-store (Nix) 2.26.0pre20241210_abcdef", v(2, 26, 0)),
            ("nix-store (Nix) 2.24", v(2, 24, 0)),
        ] {
            assert_eq!(NixVersion::parse(output), Some(expected), "{output}");
        }
        for garbage in ["", "nix-store", "command not found", "nix-store (Nix) two.eighteen"] {
            assert_eq!(NixVersion::parse(garbage), None, "{garbage}");
        }
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(v(2, 8, 0) < MINIMUM);
        assert!(v(2, 17, 9) < MINIMUM);
        assert!(v(2, 18, 0) >= MINIMUM);
        assert!(v(2, 100, 0) > v(2, 26, 3));
        assert!(v(3, 0, 0) > MINIMUM);
        assert_eq!(MINIMUM.to_string(), "2.18.0");
    }

    /// A stand-in `nix-store` printing `output`, to see the check refuse what the machine
    /// does not have installed.
    fn fake_nix_store(dir: &std::path::Path, output: &str) -> String {
        let path = dir.join("nix-store");
        std::fs::write(&path, format!("#!/bin/sh\necho '{output}'\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }

    #[tokio::test]
    async fn an_old_nix_is_refused_naming_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let old = fake_nix_store(dir.path(), "nix-store (Nix) 2.8.0");
        let err = require_supported_by(&old).await.unwrap_err();
        assert!(matches!(err, VersionError::TooOld { found, .. } if found == v(2, 8, 0)), "{err:?}");
        let message = err.to_string();
        assert!(message.starts_with("Nix 2.8.0 is too old"), "{message}");
        assert!(message.contains("requires Nix 2.18.0 or later"), "{message}");
        let odd = fake_nix_store(dir.path(), "hello");
        assert!(matches!(require_supported_by(&odd).await, Err(VersionError::Unreadable { .. })));
        let missing = dir.path().join("no-nix-here").display().to_string();
        assert!(matches!(require_supported_by(&missing).await, Err(VersionError::NotRunnable { .. })));
    }

    #[tokio::test]
    async fn the_installed_nix_is_current() {
        let found = require_supported().await.expect("the test machines run Nix 2.18 or later");
        assert!(found >= MINIMUM);
    }
}
