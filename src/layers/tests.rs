//! The grouping on Nixery's documented example and on properties any grouping must keep.

use super::*;
use crate::nix::PathInfo;
use std::collections::{BTreeMap, HashMap};

fn p(name: &str) -> String {
    format!(
        "/nix/store/{}-{name}",
        name.repeat(32).chars().take(32).collect::<String>()
    )
}

/// Builds a graph from (name, nar size, references); `closure_size` is computed.
fn graph(roots: &[&str], nodes: &[(&str, u64, &[&str])]) -> RuntimeGraph {
    let mut paths = BTreeMap::new();
    for (name, size, refs) in nodes {
        let references = refs.iter().map(|r| p(r)).collect();
        paths.insert(
            p(name),
            PathInfo {
                nar_size: *size,
                closure_size: 0,
                references,
            },
        );
    }
    let keys: Vec<String> = paths.keys().cloned().collect();
    for k in keys {
        let mut seen = BTreeSet::new();
        let mut stack = vec![k.clone()];
        while let Some(n) = stack.pop() {
            if seen.insert(n.clone()) {
                stack.extend(paths[&n].references.iter().cloned());
            }
        }
        let closure: u64 = seen.iter().map(|n| paths[n].nar_size).sum();
        paths.get_mut(&k).unwrap().closure_size = closure;
    }
    RuntimeGraph {
        roots: roots.iter().map(|r| p(r)).collect(),
        paths,
    }
}

fn names(layers: &[Layer]) -> Vec<Vec<String>> {
    layers
        .iter()
        .map(|l| {
            let mut n: Vec<String> = l
                .contents
                .iter()
                .map(|c| store_path_name(c).to_owned())
                .collect();
            n.sort();
            n
        })
        .collect()
}

fn set(v: &[&[&str]]) -> BTreeSet<Vec<String>> {
    v.iter()
        .map(|l| l.iter().map(|s| s.to_string()).collect())
        .collect()
}

/// Nixery's documentation: root -> A, B, C, D; A, B, C -> E; C -> D; D -> F -> G.
/// E and G are popular. (Nixery's text makes G big instead, but a big G makes the closures
/// of D and F big too, which would split them; the bigness rule is tested on its own below.)
fn nixery_example() -> (RuntimeGraph, Popularity) {
    let g = graph(
        &["a", "b", "c", "d"],
        &[
            ("a", 1, &["e"]),
            ("b", 1, &["e"]),
            ("c", 1, &["e", "d"]),
            ("d", 10, &["f"]),
            ("e", 100, &[]),
            ("f", 10, &["g"]),
            ("g", 1000, &[]),
        ],
    );
    let pop = Popularity::from_counts(HashMap::from([
        ("e".to_string(), 100),
        ("g".to_string(), 200),
    ]));
    (g, pop)
}

#[test]
fn nixery_example_without_budget_pressure() {
    let (g, pop) = nixery_example();
    let layers = group(&g, &pop, &BTreeSet::new(), 10);
    assert_eq!(
        names(&layers).into_iter().collect::<BTreeSet<_>>(),
        set(&[&["a"], &["b"], &["c"], &["d", "f"], &["e"], &["g"]])
    );
}

#[test]
fn nixery_example_budgets_merge_lowest_rated_first() {
    let (g, pop) = nixery_example();
    let expect: [(usize, &[&[&str]]); 4] = [
        (1, &[&["a", "b", "c", "d", "e", "f", "g"]]),
        (2, &[&["g"], &["a", "b", "c", "d", "e", "f"]]),
        (3, &[&["g"], &["e"], &["a", "b", "c", "d", "f"]]),
        (4, &[&["g"], &["e"], &["d", "f"], &["a", "b", "c"]]),
    ];
    for (budget, layers) in expect {
        let got = group(&g, &pop, &BTreeSet::new(), budget);
        let want: Vec<Vec<String>> = layers
            .iter()
            .map(|l| l.iter().map(|s| s.to_string()).collect())
            .collect();
        assert_eq!(names(&got), want, "budget {budget}");
    }
}

#[test]
fn layers_are_in_descending_merge_rating_and_cover_every_path_once() {
    let (g, pop) = nixery_example();
    for budget in 1..=8 {
        let layers = group(&g, &pop, &BTreeSet::new(), budget);
        assert!(layers.len() <= budget);
        assert!(
            layers
                .windows(2)
                .all(|w| w[0].merge_rating >= w[1].merge_rating)
        );
        let mut all: Vec<&String> = layers.iter().flat_map(|l| &l.contents).collect();
        all.sort();
        let before = all.len();
        all.dedup();
        assert_eq!(before, all.len(), "a path is in two layers");
        assert_eq!(all.len(), g.paths.len());
        let total: u64 = layers.iter().map(|l| l.size).sum();
        assert_eq!(total, g.paths.values().map(|i| i.nar_size).sum::<u64>());
    }
}

#[test]
fn merge_rating_is_root_popularity_times_layer_size() {
    let (g, pop) = nixery_example();
    let layers = group(&g, &pop, &BTreeSet::new(), 10);
    let df = layers
        .iter()
        .find(|l| l.contents.contains(&p("d")))
        .unwrap();
    assert_eq!(df.contents, vec![p("d"), p("f")]);
    assert_eq!(df.size, 20);
    assert_eq!(df.merge_rating, 20);
    let e = layers.iter().find(|l| l.contents == vec![p("e")]).unwrap();
    assert_eq!(e.merge_rating, 100 * 100);
}

#[test]
fn equal_ratings_still_give_one_order() {
    // Four identical leaves: every rating ties, the order must not depend on anything but
    // the contents.
    let g = graph(
        &["w", "x", "y", "z"],
        &[("w", 5, &[]), ("x", 5, &[]), ("y", 5, &[]), ("z", 5, &[])],
    );
    let pop = Popularity::default();
    let first = group(&g, &pop, &BTreeSet::new(), 3);
    for _ in 0..20 {
        assert_eq!(group(&g, &pop, &BTreeSet::new(), 3), first);
    }
    // w and x (lowest by contents among equals) merge; the merged layer rates highest.
    assert_eq!(
        names(&first),
        vec![
            vec!["w".to_string(), "x".to_string()],
            vec!["y".to_string()],
            vec!["z".to_string()]
        ]
    );
}

#[test]
fn always_included_packages_come_first_and_alone() {
    let g = graph(
        &["cacert", "app", "iana"],
        &[
            ("cacert", 1000, &[]),
            ("iana", 900, &[]),
            ("app", 1_000_000, &["lib"]),
            ("lib", 1_000_000, &[]),
        ],
    );
    let very: BTreeSet<String> = [p("cacert"), p("iana")].into();
    // Without data, cacert and iana-etc (1 kB each) still outrank a 2 MB package.
    let layers = group(&g, &Popularity::default(), &very, 94);
    assert_eq!(
        names(&layers[..2]),
        vec![vec!["cacert".to_string()], vec!["iana".to_string()]]
    );
    assert_eq!(layers[0].popularity, VERY_POPULAR);
    // With data, they are more popular than the most popular path.
    let pop = Popularity::from_counts(HashMap::from([("lib".to_string(), 900_000)]));
    let layers = group(&g, &pop, &very, 94);
    assert_eq!(
        names(&layers[..1]),
        vec![vec!["lib".to_string()]],
        "lib is popular and big, so it rates highest"
    );
    assert!(
        layers
            .iter()
            .any(|l| l.contents == vec![p("cacert")] && l.popularity == 900_001)
    );
    assert!(layers.iter().any(|l| l.contents == vec![p("iana")]));
}

#[test]
fn a_shared_dependency_gets_its_own_layer() {
    // Two packages share `lib`: it is dominated by the root, so it is a layer of its own
    // that both images would reuse.
    let g = graph(
        &["p1", "p2"],
        &[("p1", 3, &["lib"]), ("p2", 3, &["lib"]), ("lib", 9, &[])],
    );
    let layers = group(&g, &Popularity::default(), &BTreeSet::new(), 94);
    assert!(layers.iter().any(|l| l.contents == vec![p("lib")]));
    assert_eq!(layers.len(), 3);
}

#[test]
fn a_path_with_a_big_closure_gets_its_own_layer() {
    // `big` is only reachable through `app`, so it would travel with it, but its closure is
    // over 100 MB, so it is split off (and so is `app`, whose closure contains it).
    let g = graph(
        &["app", "tool"],
        &[
            ("app", 10, &["big"]),
            ("big", 150_000_000, &[]),
            ("tool", 10, &[]),
        ],
    );
    let layers = group(&g, &Popularity::default(), &BTreeSet::new(), 94);
    assert!(
        layers.iter().any(|l| l.contents == vec![p("big")]),
        "{:?}",
        names(&layers)
    );
    assert!(layers.iter().any(|l| l.contents == vec![p("app")]));
    let small = graph(&["app"], &[("app", 10, &["dep"]), ("dep", 50_000_000, &[])]);
    let layers = group(&small, &Popularity::default(), &BTreeSet::new(), 94);
    assert_eq!(
        layers.len(),
        1,
        "a dependency under the threshold travels with its package"
    );
}
