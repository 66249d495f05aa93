//! The platforms images are built for (`NIXERY_PLATFORMS`), and which one is the default.
//!
//! With more than one, a manifest request by tag from a client that accepts an image index
//! gets an index with one manifest per platform ([`crate::builder`]), so one name serves every
//! architecture of a cluster; the client picks its own. A client that accepts no index, and
//! a name that selects an architecture itself (`arm64`), get one platform's manifest: the
//! default's, or the named one's.
//!
//! The default is the host's platform when it is listed (what the server has always built,
//! and what a non-index client is most likely to run on, as it usually runs next to the
//! registry's users), else the first listed. Only Linux is built: nixpkgs' Darwin packages
//! do not run in containers.

use super::Arch;
use std::fmt;

/// The configured platforms: sorted, without duplicates, never empty.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platforms {
    all: Vec<Arch>,
    default: Arch,
}

/// Why a `NIXERY_PLATFORMS` value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlatformError {
    #[error("no platform given (e.g. linux/amd64,linux/arm64)")]
    Empty,
    #[error("unknown platform '{0}': images are built for linux/amd64 and linux/arm64")]
    Unknown(String),
}

impl Arch {
    /// `linux/<arch>`, as clients and `NIXERY_PLATFORMS` write platforms.
    pub fn platform(self) -> &'static str {
        match self {
            Arch::Amd64 => "linux/amd64",
            Arch::Arm64 => "linux/arm64",
        }
    }
}

impl Platforms {
    /// The host's platform only (amd64 on a host images cannot be built for natively).
    pub fn host() -> Self {
        let host = Arch::host().unwrap_or(Arch::Amd64);
        Platforms { all: vec![host], default: host }
    }

    /// A comma-separated list: `linux/amd64,linux/arm64` (spaces and case are ignored,
    /// `linux/arm64/v8` is `linux/arm64`).
    pub fn parse(value: &str) -> Result<Self, PlatformError> {
        let mut all = Vec::new();
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let arch = match item.to_ascii_lowercase().as_str() {
                "linux/amd64" | "linux/x86_64" => Arch::Amd64,
                "linux/arm64" | "linux/arm64/v8" | "linux/aarch64" => Arch::Arm64,
                _ => return Err(PlatformError::Unknown(item.to_owned())),
            };
            all.push(arch);
        }
        all.sort();
        all.dedup();
        let default = match Arch::host() {
            Some(host) if all.contains(&host) => host,
            _ => *all.first().ok_or(PlatformError::Empty)?,
        };
        Ok(Platforms { all, default })
    }

    pub fn all(&self) -> &[Arch] {
        &self.all
    }

    /// The platform of a client that accepts no index, and of names that select none.
    pub fn default_arch(&self) -> Arch {
        self.default
    }

    /// Whether there is more than one platform: only then is an index served.
    pub fn several(&self) -> bool {
        self.all.len() > 1
    }
}

impl Default for Platforms {
    fn default() -> Self {
        Self::host()
    }
}

impl fmt::Display for Platforms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.all.iter().map(|a| a.platform()).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_sorted_deduplicated_and_checked() {
        let p = Platforms::parse(" linux/arm64, linux/amd64,LINUX/ARM64/v8 ").unwrap();
        assert_eq!(p.all(), [Arch::Amd64, Arch::Arm64]);
        assert_eq!(p.to_string(), "linux/amd64,linux/arm64");
        assert!(p.several());
        assert_eq!(p, Platforms::parse("linux/amd64,linux/arm64").unwrap());
        assert_eq!(Platforms::parse(""), Err(PlatformError::Empty));
        assert_eq!(Platforms::parse(" , "), Err(PlatformError::Empty));
        assert_eq!(Platforms::parse("linux/amd64,windows/amd64"), Err(PlatformError::Unknown("windows/amd64".into())));
        assert!(Platforms::parse("linux/riscv64").is_err());
    }

    #[test]
    fn the_default_is_the_host_if_listed_else_the_first() {
        let host = Arch::host().unwrap_or(Arch::Amd64);
        assert_eq!(Platforms::host().all(), [host]);
        assert!(!Platforms::host().several());
        assert_eq!(Platforms::parse("linux/amd64,linux/arm64").unwrap().default_arch(), host);
        let other = if host == Arch::Amd64 { Arch::Arm64 } else { Arch::Amd64 };
        assert_eq!(Platforms::parse(other.platform()).unwrap().default_arch(), other);
    }
}
