//! Store paths, checked at construction: `/nix/store/<hash>-<name>`.
//!
//! Everything the registry learns from Nix is keyed by store path: the runtime graph, the
//! layers' contents, the archives' file trees, popularity (by the name part). A
//! [`StorePath`] is only made from text that Nix itself would accept as a store path (the
//! rules of Nix's `StorePath` and `checkName`), so a malformed answer from Nix, a hand-edited
//! snapshot or a path outside the store is refused where it enters, and everything after
//! that can rely on [`StorePath::name`] being the popularity key and on the path being one
//! directory entry directly under the store.
//!
//! The ordering is that of the text, so sorted store paths (layer contents, the graph's
//! keys, the tie-breaks of the groupings) sort exactly as the strings did.

use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// Where store paths live.
pub const STORE_DIR: &str = "/nix/store";
/// Nix's base-32 alphabet: digits and lower-case letters without `e`, `o`, `u` and `t`.
const NIX_BASE32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";
/// Length of the hash part (160 bits in base 32).
const HASH_LEN: usize = 32;
/// Longest name Nix accepts.
const MAX_NAME_LEN: usize = 211;

/// Why text is not a store path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorePathError {
    #[error("'{0}' is not a path directly under {STORE_DIR}")]
    NotInStore(String),
    #[error("store path '{0}' does not start with a {HASH_LEN}-character base-32 hash and a dash")]
    BadHash(String),
    #[error("store path '{0}' has an invalid name (1 to {MAX_NAME_LEN} of A-Z a-z 0-9 + - . _ ? =, not . or ..)")]
    BadName(String),
}

/// A store path such as `/nix/store/8bm2…-bash-5.2`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StorePath(String);

impl StorePath {
    pub fn parse(s: &str) -> Result<Self, StorePathError> {
        let base = s
            .strip_prefix(STORE_DIR)
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|base| !base.contains('/'))
            .ok_or_else(|| StorePathError::NotInStore(s.to_owned()))?;
        let hash_ok = base.len() > HASH_LEN
            && base.as_bytes()[..HASH_LEN].iter().all(|b| NIX_BASE32.contains(b))
            && base.as_bytes()[HASH_LEN] == b'-';
        if !hash_ok {
            return Err(StorePathError::BadHash(s.to_owned()));
        }
        if !valid_name(&base[HASH_LEN + 1..]) {
            return Err(StorePathError::BadName(s.to_owned()));
        }
        Ok(StorePath(s.to_owned()))
    }

    /// The store path whose directory entry is `base` (`<hash>-<name>`), as a binary cache's
    /// narinfo files list references.
    pub fn from_base_name(base: &str) -> Result<Self, StorePathError> {
        Self::parse(&format!("{STORE_DIR}/{base}"))
    }

    /// Whether `dir` is the store directory these paths live in (what a binary cache's
    /// `nix-cache-info` must name as its `StoreDir`).
    pub fn is_store_dir(dir: &str) -> bool {
        dir == STORE_DIR
    }

    /// The name without the hash: `/nix/store/<hash>-bash-5.2` → `bash-5.2`, the key of
    /// popularity data.
    pub fn name(&self) -> &str {
        &self.0[STORE_DIR.len() + 1 + HASH_LEN + 1..]
    }

    /// The hash part: `/nix/store/<hash>-bash-5.2` → `<hash>`, which names the path's
    /// narinfo in a binary cache (`<hash>.narinfo`).
    pub fn hash_part(&self) -> &str {
        &self.0[STORE_DIR.len() + 1..STORE_DIR.len() + 1 + HASH_LEN]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }
}

/// Nix's name rules (`checkName`): not empty, at most 211 characters of `[A-Za-z0-9+-._?=]`,
/// and not `.` or `..` (alone or as the first dash-separated component).
fn valid_name(name: &str) -> bool {
    let first_component = name.split('-').next().unwrap_or(name);
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && first_component != "."
        && first_component != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b))
}

impl FromStr for StorePath {
    type Err = StorePathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StorePath::parse(s)
    }
}

impl TryFrom<String> for StorePath {
    type Error = StorePathError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        StorePath::parse(&s)
    }
}

impl From<StorePath> for String {
    fn from(p: StorePath) -> String {
        p.0
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lets maps and sets keyed by store path be searched with text (`Ord` and `Hash` agree with
/// those of `str`).
impl Borrow<str> for StorePath {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<Path> for StorePath {
    fn as_ref(&self) -> &Path {
        self.as_path()
    }
}

impl AsRef<std::ffi::OsStr> for StorePath {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASH: &str = "/nix/store/8bm2w7qxlbvx0f1xs8b3r4ymvrx46hjp-bash-5.2p37";

    #[test]
    fn accepts_store_paths_and_names_them_without_the_hash() {
        let p = StorePath::parse(BASH).unwrap();
        assert_eq!(p.name(), "bash-5.2p37");
        assert_eq!(p.as_str(), BASH);
        assert_eq!(p.as_path(), Path::new(BASH));
        let drv = StorePath::parse("/nix/store/fjaipyaqjdk09bqfskr9ahbm70n6m082-greeting-1.0.drv").unwrap();
        assert_eq!(drv.name(), "greeting-1.0.drv");
        for ok in ["a", "A+b-c._?=", ".hidden", "..x", "-a", &"n".repeat(211)] {
            let path = format!("/nix/store/{}-{ok}", "0".repeat(32));
            assert_eq!(StorePath::parse(&path).map(|p| p.name().to_owned()), Ok(ok.to_owned()), "{path}");
        }
    }

    #[test]
    fn binary_caches_name_paths_by_base_name_and_hash() {
        let p = StorePath::from_base_name("8bm2w7qxlbvx0f1xs8b3r4ymvrx46hjp-bash-5.2p37").unwrap();
        assert_eq!(p.as_str(), BASH);
        assert_eq!(p.hash_part(), "8bm2w7qxlbvx0f1xs8b3r4ymvrx46hjp");
        assert!(StorePath::from_base_name("8bm2w7qxlbvx0f1xs8b3r4ymvrx46hjp-bash/bin").is_err());
        assert!(StorePath::from_base_name("").is_err());
        assert!(StorePath::is_store_dir("/nix/store"));
        assert!(!StorePath::is_store_dir("/gnu/store"));
    }

    #[test]
    fn refuses_what_nix_would_refuse() {
        let hash = "0".repeat(32);
        for (bad, why) in [
            ("/nix/store/short-x".to_owned(), "short hash"),
            (format!("/nix/store/{}-x", "e".repeat(32)), "e is not base 32"),
            (format!("/nix/store/{}-x", "A".repeat(32)), "upper case is not base 32"),
            (format!("/nix/store/{hash}x"), "no dash"),
            (format!("/nix/store/{hash}-"), "empty name"),
            (format!("/nix/store/{hash}-."), "."),
            (format!("/nix/store/{hash}-..-x"), ".. component"),
            (format!("/nix/store/{hash}-a b"), "space"),
            (format!("/nix/store/{hash}-a\"b"), "quote"),
            (format!("/nix/store/{hash}-{}", "n".repeat(212)), "too long"),
            (format!("/nix/store/{hash}-a/bin/sh"), "below a store path"),
            (format!("/tmp/{hash}-a"), "outside the store"),
            (format!("nix/store/{hash}-a"), "relative"),
            (format!("/nix/store//{hash}-a"), "double slash"),
            (String::new(), "empty"),
        ] {
            assert!(StorePath::parse(&bad).is_err(), "{why}: {bad:?}");
        }
    }

    #[test]
    fn serde_checks_and_keeps_the_text() {
        let p: StorePath = serde_json::from_str(&format!("\"{BASH}\"")).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{BASH}\""));
        let err = serde_json::from_str::<StorePath>("\"/nix/store/short-x\"").unwrap_err();
        assert!(err.to_string().contains("/nix/store/short-x"), "{err}");
        let map: std::collections::BTreeMap<StorePath, u8> =
            serde_json::from_str(&format!("{{\"{BASH}\": 1}}")).unwrap();
        assert_eq!(map.get(BASH), Some(&1));
    }

    #[test]
    fn sorts_like_the_text() {
        let a = StorePath::parse(&format!("/nix/store/{}-z", "0".repeat(32))).unwrap();
        let b = StorePath::parse(&format!("/nix/store/{}-a", "1".repeat(32))).unwrap();
        assert!(a < b);
        assert_eq!(a.as_str() < b.as_str(), a < b);
    }
}
