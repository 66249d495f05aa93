//! The NAR hash of a directory of plain files: what `nix hash path` prints for it, computed
//! here so that a pure evaluation can import the server's own expressions.
//!
//! Pure evaluation (a flake source) reads no file outside the store except through a locked
//! fetch, so the expressions' directory is imported as `builtins.fetchTree { type = "path";
//! path; narHash; }` ([`super::flake`]), which needs the directory's NAR hash. The directory
//! holds a few regular files the server wrote itself, so the NAR serialisation (Nix's
//! `archive.cc`) needs only its directory and regular-file cases:
//!
//! ```text
//! nar       = str("nix-archive-1") node
//! node      = str("(") str("type") str("directory") entry* str(")")      (entries by name)
//!           | str("(") str("type") str("regular") str("contents") str(bytes) str(")")
//! entry     = str("entry") str("(") str("name") str(name) str("node") node str(")")
//! str(s)    = u64 little-endian length of s, s, zero bytes to a multiple of 8
//! ```
//!
//! The hash is SHA-256 of that, written as SRI (`sha256-<base64>`), the form Nix's fetchers
//! take.

use base64::Engine;
use sha2::{Digest, Sha256};

/// The NAR hash (SRI) of a directory holding exactly `files` (name, contents) as regular,
/// non-executable files.
pub fn directory_hash(files: &[(&str, &[u8])]) -> String {
    let mut sorted: Vec<&(&str, &[u8])> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut nar = Nar(Sha256::new());
    for token in ["nix-archive-1", "(", "type", "directory"] {
        nar.str(token.as_bytes());
    }
    for (name, contents) in sorted {
        for token in ["entry", "(", "name"] {
            nar.str(token.as_bytes());
        }
        nar.str(name.as_bytes());
        for token in ["node", "(", "type", "regular", "contents"] {
            nar.str(token.as_bytes());
        }
        nar.str(contents);
        nar.str(b")");
        nar.str(b")");
    }
    nar.str(b")");
    format!("sha256-{}", base64::engine::general_purpose::STANDARD.encode(nar.0.finalize()))
}

/// A NAR being hashed.
struct Nar(Sha256);

impl Nar {
    fn str(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        let padding = (8 - bytes.len() % 8) % 8;
        self.0.update(&[0u8; 8][..padding]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `nix hash path DIR` (Nix 2.26.3) of a directory with `a.nix` ("a = 1;\n"), `b.nix`
    /// ("{ }\n") and an empty `empty.nix`.
    const KNOWN: &str = "sha256-VWkuX137ZcNHkCNDI99QqYdm/1wiOz7HepqCVm4DEag=";

    #[test]
    fn matches_nix_hash_path_in_any_order() {
        let files: [(&str, &[u8]); 3] = [("b.nix", b"{ }\n"), ("empty.nix", b""), ("a.nix", b"a = 1;\n")];
        assert_eq!(directory_hash(&files), KNOWN);
        let other: [(&str, &[u8]); 3] = [("b.nix", b"{ }\n"), ("empty.nix", b" "), ("a.nix", b"a = 1;\n")];
        assert_ne!(directory_hash(&other), KNOWN);
    }
}
