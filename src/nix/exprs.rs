//! The Nix expressions of nix/, shipped inside the binary and written to a private
//! directory at start-up, so the server runs from anywhere and the expressions can import
//! each other (`./source.nix`).

use std::path::PathBuf;

const FILES: [(&str, &str); 3] = [
    ("source.nix", include_str!("../../nix/source.nix")),
    ("lookup.nix", include_str!("../../nix/lookup.nix")),
    ("popcount.nix", include_str!("../../nix/popcount.nix")),
];

/// The expressions on disk, removed when dropped.
pub struct Expressions {
    dir: tempfile::TempDir,
}

impl Expressions {
    pub fn write() -> std::io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("nixery-nix-").tempdir()?;
        for (name, text) in FILES {
            std::fs::write(dir.path().join(name), text)?;
        }
        Ok(Expressions { dir })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        debug_assert!(FILES.iter().any(|(n, _)| *n == name), "unknown expression {name}");
        self.dir.path().join(name)
    }
}
