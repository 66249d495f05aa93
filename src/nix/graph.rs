//! The runtime graph of an image: every store path in the closure of the requested
//! packages, with its size and references, as `nix path-info --json --recursive
//! --closure-size` reports it.

use serde::Deserialize;
use std::collections::BTreeMap;

/// One store path of the closure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathInfo {
    /// Size of the path's NAR serialisation (what its layer contents weigh).
    pub nar_size: u64,
    /// Size of the path and everything it references.
    pub closure_size: u64,
    /// Store paths this one references at run time (never itself).
    pub references: Vec<String>,
}

/// The closure of an image's top-level packages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeGraph {
    /// Store paths of the requested packages, sorted.
    pub roots: Vec<String>,
    /// Every path of the closure, keyed (and so sorted) by store path.
    pub paths: BTreeMap<String, PathInfo>,
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
    references: Vec<String>,
}

/// A list entry of Nix before 2.19: the path is a field.
#[derive(Deserialize)]
struct ListedPathInfo {
    path: String,
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
    Keyed(BTreeMap<String, Option<RawPathInfo>>),
}

/// Why Nix's answer could not be read as a runtime graph.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("nix path-info output is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("store path {0} is referenced but missing from the closure")]
    Dangling(String),
    #[error("store path {0} is not valid in the store")]
    Invalid(String),
}

impl RuntimeGraph {
    /// Reads `nix path-info --json -r -S` output for the given top-level paths; the result
    /// must be a closed graph.
    pub fn from_path_info(json: &[u8], roots: impl IntoIterator<Item = String>) -> Result<Self, GraphError> {
        let paths = parse_path_info(json)?;
        let mut roots: Vec<String> = roots.into_iter().collect();
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
pub fn parse_path_info(json: &[u8]) -> Result<BTreeMap<String, PathInfo>, GraphError> {
    let entries: Vec<(String, RawPathInfo)> = match serde_json::from_slice(json)? {
        PathInfoOutput::Listed(list) => list.into_iter().map(|l| (l.path, l.info)).collect(),
        PathInfoOutput::Keyed(map) => map
            .into_iter()
            .map(|(path, info)| info.map(|info| (path.clone(), info)).ok_or(GraphError::Invalid(path)))
            .collect::<Result<_, _>>()?,
    };
    let mut paths = BTreeMap::new();
    for (path, p) in entries {
        let mut references: Vec<String> = p.references.into_iter().filter(|r| *r != path).collect();
        references.sort();
        references.dedup();
        let closure_size = p.closure_size.unwrap_or(p.nar_size);
        paths.insert(path, PathInfo { nar_size: p.nar_size, closure_size, references });
    }
    Ok(paths)
}

/// The name of a store path without its hash: `/nix/store/<hash>-bash-5.2` → `bash-5.2`,
/// the key of popularity data.
pub fn store_path_name(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    match base.split_once('-') {
        Some((hash, name)) if hash.len() == 32 => name,
        _ => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a-1.0";
    const B: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b";

    #[test]
    fn reads_path_info_and_drops_self_references() {
        let json = format!(
            r#"[{{"path":"{A}","narSize":10,"closureSize":30,"references":["{A}","{B}"]}},
                {{"path":"{B}","narSize":20,"closureSize":20,"references":[]}}]"#
        );
        let g = RuntimeGraph::from_path_info(json.as_bytes(), [A.to_string()]).unwrap();
        assert_eq!(g.roots, vec![A.to_string()]);
        assert_eq!(g.paths[A].references, vec![B.to_string()]);
        assert_eq!(g.paths[A].closure_size, 30);
        assert_eq!(g.paths[B].nar_size, 20);
    }

    #[test]
    fn reads_the_keyed_format_of_nix_2_19_and_later() {
        let json = format!(
            r#"{{"{A}":{{"ca":null,"narSize":10,"closureSize":30,"references":["{A}","{B}"],"signatures":[]}},
                "{B}":{{"narSize":20,"closureSize":20,"references":[]}}}}"#
        );
        let g = RuntimeGraph::from_path_info(json.as_bytes(), [A.to_string()]).unwrap();
        assert_eq!(g.paths[A].references, vec![B.to_string()]);
        assert_eq!(g.paths[A].closure_size, 30);
        assert_eq!(g.paths[B].nar_size, 20);
        let invalid = format!(r#"{{"{A}":null}}"#);
        assert!(matches!(parse_path_info(invalid.as_bytes()), Err(GraphError::Invalid(p)) if p == A));
    }

    #[test]
    fn rejects_a_closure_with_holes() {
        let json = format!(r#"[{{"path":"{A}","narSize":10,"references":["{B}"]}}]"#);
        assert!(matches!(
            RuntimeGraph::from_path_info(json.as_bytes(), [A.to_string()]),
            Err(GraphError::Dangling(p)) if p == B
        ));
    }

    #[test]
    fn names_drop_the_hash() {
        assert_eq!(store_path_name(A), "a-1.0");
        assert_eq!(store_path_name("/nix/store/short-x"), "short-x");
    }
}
