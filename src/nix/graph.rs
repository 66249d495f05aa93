//! The runtime graph of an image: every store path in the closure of the requested
//! packages, with its size and references, as `nix path-info --json --recursive
//! --closure-size` reports it.

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
        paths.insert(path, PathInfo { nar_size: p.nar_size, closure_size, references });
    }
    Ok(paths)
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
