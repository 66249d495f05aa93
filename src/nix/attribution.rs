//! Which of the requested packages a problem concerns, when Nix names only store paths.
//!
//! Nix reports derivations it would build, outputs no cache has, a failing derivation, a
//! refused substitute: store paths, often of dependencies. A user asked for packages, so
//! each requested package whose build closure contains such a derivation (or a derivation
//! producing such an output) is named. The closure is walked through the `.drv` files in
//! the store (their ATerm text, [`super::derivation`]), with no Nix process: this runs only
//! on the failure path, and reads each derivation once however many packages share it.

use super::derivation::{input_derivations, output_paths};
use super::{ResolvedPackage, StorePath};
use crate::image::PackageName;
use std::collections::{BTreeSet, HashMap};

/// Most derivation files read for one question (nixpkgs closures have a few thousand).
const MAX_DERIVATIONS: usize = 100_000;

/// The requested packages that need any of `drvs` or any of `outputs`, in request order.
pub async fn packages_concerned(
    packages: &[ResolvedPackage],
    drvs: &BTreeSet<StorePath>,
    outputs: &BTreeSet<StorePath>,
) -> Vec<PackageName> {
    let roots: Vec<(PackageName, StorePath, Vec<StorePath>)> =
        packages.iter().map(|p| (p.name.clone(), p.drv_path.clone(), p.outputs.clone())).collect();
    let (drvs, outputs) = (drvs.clone(), outputs.clone());
    let read = |drv: &StorePath| std::fs::read_to_string(drv.as_path()).ok();
    tokio::task::spawn_blocking(move || concerned(&roots, &drvs, &outputs, read)).await.unwrap_or_default()
}

/// What one derivation file tells: its inputs, and whether it is one of the problems.
struct Node {
    inputs: Vec<StorePath>,
    hit: bool,
}

fn concerned(
    roots: &[(PackageName, StorePath, Vec<StorePath>)],
    drvs: &BTreeSet<StorePath>,
    outputs: &BTreeSet<StorePath>,
    read: impl Fn(&StorePath) -> Option<String>,
) -> Vec<PackageName> {
    let mut nodes: HashMap<StorePath, Node> = HashMap::new();
    let mut node = |drv: &StorePath| -> Option<(Vec<StorePath>, bool)> {
        if !nodes.contains_key(drv) {
            if nodes.len() >= MAX_DERIVATIONS {
                return None;
            }
            let text = read(drv).unwrap_or_default();
            let inputs = input_derivations(&text).map(|i| i.into_iter().map(|(d, _)| d).collect()).unwrap_or_default();
            let produces_problem = output_paths(&text).unwrap_or_default().iter().any(|o| outputs.contains(o));
            nodes.insert(drv.clone(), Node { inputs, hit: drvs.contains(drv) || produces_problem });
        }
        nodes.get(drv).map(|n| (n.inputs.clone(), n.hit))
    };
    let mut names = Vec::new();
    for (name, drv, own_outputs) in roots {
        if drvs.contains(drv) || own_outputs.iter().any(|o| outputs.contains(o)) {
            names.push(name.clone());
            continue;
        }
        let mut seen = BTreeSet::from([drv.clone()]);
        let mut todo = vec![drv.clone()];
        while let Some(next) = todo.pop() {
            let Some((inputs, hit)) = node(&next) else { break };
            if hit {
                names.push(name.clone());
                break;
            }
            todo.extend(inputs.into_iter().filter(|i| seen.insert(i.clone())));
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(name: &str) -> StorePath {
        // A distinct hash per name, in Nix's base-32 alphabet (no e, o, u, t).
        let hash: String = name
            .chars()
            .filter(char::is_ascii_lowercase)
            .map(|c| match c {
                'e' | 'o' | 'u' | 't' => '0',
                c => c,
            })
            .chain(std::iter::repeat('a'))
            .take(32)
            .collect();
        StorePath::parse(&format!("/nix/store/{hash}-{name}")).unwrap()
    }

    /// The ATerm of a derivation with one output and some input derivations.
    fn drv(out: &StorePath, inputs: &[&StorePath]) -> String {
        let inputs: Vec<String> = inputs.iter().map(|i| format!("(\"{i}\",[\"out\"])")).collect();
        format!("Derive([(\"out\",\"{out}\",\"\",\"\")],[{}],[],\"x86_64-linux\",\"/bin/sh\",[],[])", inputs.join(","))
    }

    /// hello -> libc; tool -> lib -> libc; other (alone).
    fn store() -> HashMap<StorePath, String> {
        let libc = sp("libc.drv");
        let lib = sp("lib.drv");
        HashMap::from([
            (libc.clone(), drv(&sp("libc"), &[])),
            (lib.clone(), drv(&sp("lib"), &[&libc])),
            (sp("hello.drv"), drv(&sp("hello"), &[&libc])),
            (sp("tool.drv"), drv(&sp("tool"), &[&lib])),
            (sp("other.drv"), drv(&sp("other"), &[])),
        ])
    }

    fn roots() -> Vec<(PackageName, StorePath, Vec<StorePath>)> {
        ["hello", "tool", "other"]
            .iter()
            .map(|n| (PackageName::parse(n).unwrap(), sp(&format!("{n}.drv")), vec![sp(n)]))
            .collect()
    }

    fn ask(drvs: &[&str], outputs: &[&str]) -> Vec<String> {
        let store = store();
        let drvs = drvs.iter().map(|d| sp(d)).collect();
        let outputs = outputs.iter().map(|o| sp(o)).collect();
        concerned(&roots(), &drvs, &outputs, |d| store.get(d).cloned()).into_iter().map(String::from).collect()
    }

    #[test]
    fn packages_are_named_for_their_own_paths_and_their_dependencies() {
        assert_eq!(ask(&["other.drv"], &[]), vec!["other"]);
        assert_eq!(ask(&[], &["hello"]), vec!["hello"]);
        assert_eq!(ask(&["lib.drv"], &[]), vec!["tool"], "a dependency of tool only");
        assert_eq!(ask(&[], &["libc"]), vec!["hello", "tool"], "an output both need");
        assert_eq!(ask(&["nothing.drv"], &["nothing"]), Vec::<String>::new());
    }

    #[test]
    fn unreadable_derivations_end_the_walk_quietly() {
        let drvs = BTreeSet::from([sp("lib.drv")]);
        let names = concerned(&roots(), &drvs, &BTreeSet::new(), |_| None);
        assert!(names.is_empty());
    }
}
