//! The runtime graph of an image: every store path in the closure of the requested
//! packages, with its size, NAR hash and references, as `nix path-info --json --recursive
//! --closure-size` reports it.
//!
//! The NAR hash (the SBOM's checksum of a store path) is printed as an SRI hash by Nix 2.19
//! and later (`"narHash": "sha256-qnpXKcklN/mXfFRyh9Mfcg/uDlHB7CjAxpd3V/tMu8Y="`) and in
//! Nix's own base-32 before (`"sha256:1imv9kxmfxwpqv02iv61a47fw3vj3z9qfwjlgjbzjdr5r4lmfyma"`);
//! both are kept as hex ([`nar_hash_hex`]).

use super::StorePath;
use serde::Deserialize;
use std::collections::BTreeMap;

/// One store path of the closure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathInfo {
    /// Size of the path's NAR serialisation (what its layer contents weigh).
    pub nar_size: u64,
    /// Size of the path and everything it references.
    pub closure_size: u64,
    /// SHA-256 of the path's NAR serialisation, hex (absent if Nix printed another form).
    pub nar_hash: Option<String>,
    /// Store paths this one references at run time (never itself).
    pub references: Vec<StorePath>,
}

/// The closure of an image's top-level packages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeGraph {
    /// Store paths of the requested packages, sorted.
    pub roots: Vec<StorePath>,
    /// Every path of the closure, keyed (and so sorted) by store path.
    pub paths: BTreeMap<StorePath, PathInfo>,
}

/// One entry of `nix path-info --json`, without the path (where it is kept depends on the
/// Nix version).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPathInfo {
    nar_size: u64,
    #[serde(default)]
    closure_size: Option<u64>,
    #[serde(default)]
    nar_hash: Option<String>,
    #[serde(default)]
    references: Vec<StorePath>,
}

/// A list entry of Nix before 2.19: the path is a field.
#[derive(Deserialize)]
struct ListedPathInfo {
    path: StorePath,
    #[serde(flatten)]
    info: RawPathInfo,
}

/// `nix path-info --json` in either format: Nix < 2.19 prints a list of objects with a `path`
/// field; Nix >= 2.19 prints an object keyed by store path, with `null` for a path that is
/// not valid.
#[derive(Deserialize)]
#[serde(untagged)]
enum PathInfoOutput {
    Listed(Vec<ListedPathInfo>),
    Keyed(BTreeMap<StorePath, Option<RawPathInfo>>),
}

/// Why Nix's answer could not be read as a runtime graph.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("nix path-info output is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("store path {0} is referenced but missing from the closure")]
    Dangling(StorePath),
    #[error("store path {0} is not valid in the store")]
    Invalid(StorePath),
}

impl RuntimeGraph {
    /// Reads `nix path-info --json -r -S` output for the given top-level paths; the result
    /// must be a closed graph.
    pub fn from_path_info(json: &[u8], roots: impl IntoIterator<Item = StorePath>) -> Result<Self, GraphError> {
        let paths = parse_path_info(json)?;
        let mut roots: Vec<StorePath> = roots.into_iter().collect();
        roots.sort();
        roots.dedup();
        for r in roots.iter().chain(paths.values().flat_map(|p| p.references.iter())) {
            if !paths.contains_key(r) {
                return Err(GraphError::Dangling(r.clone()));
            }
        }
        Ok(RuntimeGraph { roots, paths })
    }
}

/// Reads `nix path-info --json` output (recursive or not): each path's sizes and references.
fn parse_path_info(json: &[u8]) -> Result<BTreeMap<StorePath, PathInfo>, GraphError> {
    let entries: Vec<(StorePath, RawPathInfo)> = match serde_json::from_slice(json)? {
        PathInfoOutput::Listed(list) => list.into_iter().map(|l| (l.path, l.info)).collect(),
        PathInfoOutput::Keyed(map) => map
            .into_iter()
            .map(|(path, info)| info.map(|info| (path.clone(), info)).ok_or(GraphError::Invalid(path)))
            .collect::<Result<_, _>>()?,
    };
    let mut paths = BTreeMap::new();
    for (path, p) in entries {
        let mut references: Vec<StorePath> = p.references.into_iter().filter(|r| *r != path).collect();
        references.sort();
        references.dedup();
        let closure_size = p.closure_size.unwrap_or(p.nar_size);
        let nar_hash = p.nar_hash.as_deref().and_then(nar_hash_hex);
        paths.insert(path, PathInfo { nar_size: p.nar_size, closure_size, nar_hash, references });
    }
    Ok(paths)
}

/// Nix's base-32 alphabet (digits and letters without e, o, u, t).
const NIX32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// A SHA-256 hash as Nix prints it (`sha256-<base64>`, `sha256:<nix32>` or `sha256:<hex>`),
/// in hex.
pub fn nar_hash_hex(text: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = if let Some(b64) = text.strip_prefix("sha256-") {
        base64::engine::general_purpose::STANDARD.decode(b64).ok()?
    } else {
        let digits = text.strip_prefix("sha256:")?;
        match digits.len() {
            64 => hex::decode(digits).ok()?,
            52 => nix32_decode(digits)?,
            _ => return None,
        }
    };
    (bytes.len() == 32).then(|| hex::encode(bytes))
}

/// Nix's base 32 (`printHash32`): the last character holds the lowest five bits.
fn nix32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = vec![0u8; 32];
    let n = text.len();
    for (k, c) in text.bytes().enumerate() {
        let digit = NIX32.iter().position(|&a| a == c)? as u16;
        let bit = (n - 1 - k) * 5;
        let (byte, shift) = (bit / 8, bit % 8);
        let wide = digit << shift;
        out[byte] |= wide as u8;
        match out.get_mut(byte + 1) {
            Some(next) => *next |= (wide >> 8) as u8,
            None if wide >> 8 != 0 => return None,
            None => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a-1.0";
    const B: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b";

    fn sp(s: &str) -> StorePath {
        StorePath::parse(s).unwrap()
    }

    #[test]
    fn reads_path_info_and_drops_self_references() {
        let json = format!(
            r#"[{{"path":"{A}","narSize":10,"closureSize":30,"references":["{A}","{B}"]}},
                {{"path":"{B}","narSize":20,"closureSize":20,"references":[]}}]"#
        );
        let g = RuntimeGraph::from_path_info(json.as_bytes(), [sp(A)]).unwrap();
        assert_eq!(g.roots, vec![sp(A)]);
        assert_eq!(g.paths[A].references, vec![sp(B)]);
        assert_eq!(g.paths[A].closure_size, 30);
        assert_eq!(g.paths[B].nar_size, 20);
    }

    #[test]
    fn reads_the_keyed_format_of_nix_2_19_and_later() {
        let json = format!(
            r#"{{"{A}":{{"ca":null,"narSize":10,"closureSize":30,"references":["{A}","{B}"],"signatures":[]}},
                "{B}":{{"narSize":20,"closureSize":20,"references":[]}}}}"#
        );
        let g = RuntimeGraph::from_path_info(json.as_bytes(), [sp(A)]).unwrap();
        assert_eq!(g.paths[A].references, vec![sp(B)]);
        assert_eq!(g.paths[A].closure_size, 30);
        assert_eq!(g.paths[B].nar_size, 20);
        let invalid = format!(r#"{{"{A}":null}}"#);
        assert!(matches!(parse_path_info(invalid.as_bytes()), Err(GraphError::Invalid(p)) if p == sp(A)));
    }

    #[test]
    fn nar_hashes_in_every_form_nix_prints_become_hex() {
        // One hash as Nix 2.26 prints it in each form (`nix hash convert`).
        let hex = "aa7a5729c92537f9977c547287d31f720fee0e51c1ec28c0c6977757fb4cbbc6";
        assert_eq!(nar_hash_hex("sha256-qnpXKcklN/mXfFRyh9Mfcg/uDlHB7CjAxpd3V/tMu8Y=").as_deref(), Some(hex));
        assert_eq!(nar_hash_hex("sha256:1imv9kxmfxwpqv02iv61a47fw3vj3z9qfwjlgjbzjdr5r4lmfyma").as_deref(), Some(hex));
        assert_eq!(nar_hash_hex(&format!("sha256:{hex}")).as_deref(), Some(hex));
        for bad in
            ["md5-abc", "sha256:xyz", "sha256-AAAA", "sha256:1imv9kxmfxwpqv02iv61a47fw3vj3z9qfwjlgjbzjdr5r4lmfyme"]
        {
            assert_eq!(nar_hash_hex(bad), None, "{bad}");
        }
        let json = format!(
            r#"{{"{B}":{{"narHash":"sha256-qnpXKcklN/mXfFRyh9Mfcg/uDlHB7CjAxpd3V/tMu8Y=","narSize":20,"references":[]}}}}"#
        );
        assert_eq!(parse_path_info(json.as_bytes()).unwrap()[B].nar_hash.as_deref(), Some(hex));
    }

    #[test]
    fn rejects_a_closure_with_holes() {
        let json = format!(r#"[{{"path":"{A}","narSize":10,"references":["{B}"]}}]"#);
        assert!(matches!(
            RuntimeGraph::from_path_info(json.as_bytes(), [sp(A)]),
            Err(GraphError::Dangling(p)) if p == sp(B)
        ));
    }

    #[test]
    fn rejects_paths_that_are_not_store_paths() {
        for json in [
            r#"[{"path":"/nix/store/short-x","narSize":10,"references":[]}]"#.to_owned(),
            format!(r#"[{{"path":"{A}","narSize":10,"references":["/etc/passwd"]}}]"#),
            format!(r#"{{"{A}/bin/sh":{{"narSize":10,"references":[]}}}}"#),
        ] {
            assert!(matches!(parse_path_info(json.as_bytes()), Err(GraphError::Json(_))), "{json}");
        }
    }

    #[test]
    fn names_drop_the_hash() {
        assert_eq!(sp(A).name(), "a-1.0");
        // A path without a full hash is not a store path, so it has no name to get wrong.
        assert!(StorePath::parse("/nix/store/short-x").is_err());
    }
}
