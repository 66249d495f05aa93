//! The groupings on Nixery's documented example, nixpkgs' documented example, and on properties any
//! grouping must keep.

use super::*;
use crate::nix::PathInfo;
use std::collections::{BTreeMap, HashMap};

/// The store path of test package `name`. Its hash part is the name repeated to 20 bytes,
/// written in Nix's base-32 alphabet (which is in ascending order), so the paths sort as the
/// repeated names do: the order the expected tie-breaks below were written against.
fn p(name: &str) -> StorePath {
    const NIX_BASE32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let bytes: Vec<u8> = name.bytes().cycle().take(20).collect();
    let hash: String = (0..32)
        .map(|digit| {
            let value = (digit * 5..digit * 5 + 5).fold(0, |v, bit| v << 1 | (bytes[bit / 8] >> (7 - bit % 8)) & 1);
            NIX_BASE32[value as usize] as char
        })
        .collect();
    StorePath::parse(&format!("/nix/store/{hash}-{name}")).unwrap()
}

/// Builds a graph from (name, nar size, references); `closure_size` is computed.
fn graph(roots: &[&str], nodes: &[(&str, u64, &[&str])]) -> RuntimeGraph {
    let mut paths = BTreeMap::new();
    for (name, size, refs) in nodes {
        let references = refs.iter().map(|r| p(r)).collect();
        paths.insert(p(name), PathInfo { nar_size: *size, closure_size: 0, nar_hash: None, references });
    }
    let keys: Vec<StorePath> = paths.keys().cloned().collect();
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
    RuntimeGraph { roots: roots.iter().map(|r| p(r)).collect(), paths }
}

fn names(layers: &[Layer]) -> Vec<Vec<String>> {
    layers
        .iter()
        .map(|l| {
            let mut n: Vec<String> = l.contents.iter().map(|c| c.name().to_owned()).collect();
            n.sort();
            n
        })
        .collect()
}

fn set(v: &[&[&str]]) -> BTreeSet<Vec<String>> {
    v.iter().map(|l| l.iter().map(|s| s.to_string()).collect()).collect()
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
    let pop = Popularity::from_counts(HashMap::from([("e".to_string(), 100), ("g".to_string(), 200)]));
    (g, pop)
}

#[test]
fn nixery_example_without_budget_pressure() {
    let (g, pop) = nixery_example();
    let layers = group_nixery(&g, &pop, &BTreeSet::new(), 10);
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
        let got = group_nixery(&g, &pop, &BTreeSet::new(), budget);
        let want: Vec<Vec<String>> = layers.iter().map(|l| l.iter().map(|s| s.to_string()).collect()).collect();
        assert_eq!(names(&got), want, "budget {budget}");
    }
}

#[test]
fn layers_are_in_descending_merge_rating_and_cover_every_path_once() {
    let (g, pop) = nixery_example();
    for budget in 1..=8 {
        let layers = group_nixery(&g, &pop, &BTreeSet::new(), budget);
        assert!(layers.len() <= budget);
        assert!(layers.windows(2).all(|w| w[0].merge_rating >= w[1].merge_rating));
        let mut all: Vec<&StorePath> = layers.iter().flat_map(|l| &l.contents).collect();
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
fn merge_rating_is_root_popularity_times_the_closure_sizes_of_the_layer() {
    let (g, pop) = nixery_example();
    let layers = group_nixery(&g, &pop, &BTreeSet::new(), 10);
    let df = layers.iter().find(|l| l.contents.contains(&p("d"))).unwrap();
    assert_eq!(df.contents, vec![p("d"), p("f")]);
    assert_eq!(df.size, 20, "the size is what the layer holds");
    // Nixery sums closure sizes: d's (d f g: 1020) and f's (f g: 1010).
    assert_eq!(df.merge_rating, 1020 + 1010);
    let e = layers.iter().find(|l| l.contents == vec![p("e")]).unwrap();
    assert_eq!(e.merge_rating, 100 * 100);
    // The old port rated by the layer's own NAR sizes.
    let pairwise = group_nixery_pairwise(&g, &pop, &BTreeSet::new(), 10);
    assert_eq!(pairwise.iter().find(|l| l.contents.contains(&p("d"))).unwrap().merge_rating, 20);
}

#[test]
fn nixery_folds_every_layer_past_the_budget_into_one() {
    // Ratings 5, 5, 6, 7 at budget 2: layers.go sorts once and folds the lowest three into
    // one layer (w x y, 16) beside z (7); merging the two lowest again and again gives w x
    // (10) and y z (13).
    let g = graph(&["w", "x", "y", "z"], &[("w", 5, &[]), ("x", 5, &[]), ("y", 6, &[]), ("z", 7, &[])]);
    let none = BTreeSet::new();
    let faithful = group_nixery(&g, &Popularity::default(), &none, 2);
    assert_eq!(names(&faithful), vec![vec!["w", "x", "y"], vec!["z"]]);
    assert_eq!(faithful[0].merge_rating, 16);
    let pairwise = group_nixery_pairwise(&g, &Popularity::default(), &none, 2);
    assert_eq!(names(&pairwise), vec![vec!["y", "z"], vec!["w", "x"]]);
}

#[test]
fn equal_ratings_still_give_one_order() {
    // Four identical leaves: every rating ties, the order must not depend on anything but
    // the contents.
    let g = graph(&["w", "x", "y", "z"], &[("w", 5, &[]), ("x", 5, &[]), ("y", 5, &[]), ("z", 5, &[])]);
    let pop = Popularity::default();
    let first = group_nixery(&g, &pop, &BTreeSet::new(), 3);
    for _ in 0..20 {
        assert_eq!(group_nixery(&g, &pop, &BTreeSet::new(), 3), first);
    }
    // w and x (lowest by contents among equals) merge; the merged layer rates highest.
    assert_eq!(
        names(&first),
        vec![vec!["w".to_string(), "x".to_string()], vec!["y".to_string()], vec!["z".to_string()]]
    );
}

#[test]
fn always_included_packages_come_first_and_alone() {
    let g = graph(
        &["cacert", "app", "iana"],
        &[("cacert", 1000, &[]), ("iana", 900, &[]), ("app", 1_000_000, &["lib"]), ("lib", 1_000_000, &[])],
    );
    let very: BTreeSet<StorePath> = [p("cacert"), p("iana")].into();
    // Without data, cacert and iana-etc (1 kB each) still outrank a 2 MB package.
    let layers = group_nixery(&g, &Popularity::default(), &very, 94);
    assert_eq!(names(&layers[..2]), vec![vec!["cacert".to_string()], vec!["iana".to_string()]]);
    assert_eq!(layers[0].popularity, VERY_POPULAR);
    // With data, they are more popular than the most popular path.
    let pop = Popularity::from_counts(HashMap::from([("lib".to_string(), 900_000)]));
    let layers = group_nixery(&g, &pop, &very, 94);
    assert_eq!(names(&layers[..1]), vec![vec!["lib".to_string()]], "lib is popular and big, so it rates highest");
    assert!(layers.iter().any(|l| l.contents == vec![p("cacert")] && l.popularity == 900_001));
    assert!(layers.iter().any(|l| l.contents == vec![p("iana")]));
}

#[test]
fn a_shared_dependency_gets_its_own_layer() {
    // Two packages share `lib`: it is dominated by the root, so it is a layer of its own
    // that both images would reuse.
    let g = graph(&["p1", "p2"], &[("p1", 3, &["lib"]), ("p2", 3, &["lib"]), ("lib", 9, &[])]);
    let layers = group_nixery(&g, &Popularity::default(), &BTreeSet::new(), 94);
    assert!(layers.iter().any(|l| l.contents == vec![p("lib")]));
    assert_eq!(layers.len(), 3);
}

#[test]
fn a_path_with_a_big_closure_gets_its_own_layer() {
    // `big` is only reachable through `app`, so it would travel with it, but its closure is
    // over 100 MB, so it is split off (and so is `app`, whose closure contains it).
    let g = graph(&["app", "tool"], &[("app", 10, &["big"]), ("big", 150_000_000, &[]), ("tool", 10, &[])]);
    let layers = group_nixery(&g, &Popularity::default(), &BTreeSet::new(), 94);
    assert!(layers.iter().any(|l| l.contents == vec![p("big")]), "{:?}", names(&layers));
    assert!(layers.iter().any(|l| l.contents == vec![p("app")]));
    let small = graph(&["app"], &[("app", 10, &["dep"]), ("dep", 50_000_000, &[])]);
    let layers = group_nixery(&small, &Popularity::default(), &BTreeSet::new(), 94);
    assert_eq!(layers.len(), 1, "a dependency under the threshold travels with its package");
}

// ---------------------------------------------------------------------------------------
// `group`: stable units, the heaviest kept, one shared rest.

fn pop(counts: &[(&str, u64)]) -> Popularity {
    Popularity::from_counts(counts.iter().map(|(n, c)| (n.to_string(), *c)).collect())
}

/// Every path exactly once, sizes add up, within the budget, in manifest order.
fn assert_valid(g: &RuntimeGraph, layers: &[Layer], budget: usize) {
    assert!(!layers.is_empty() && layers.len() <= budget.max(1), "{} layers for budget {budget}", layers.len());
    let mut all: Vec<&StorePath> = layers.iter().flat_map(|l| &l.contents).collect();
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len(), "a path is in two layers");
    assert!(all.into_iter().eq(g.paths.keys()), "paths missing");
    for l in layers {
        assert!(l.contents.windows(2).all(|w| w[0] < w[1]), "contents not sorted");
        assert_eq!(l.size, l.contents.iter().map(|p| g.paths[p].nar_size).sum::<u64>());
    }
    assert!(layers.windows(2).all(|w| w[0].merge_rating >= w[1].merge_rating), "not in manifest order");
}

/// A package set: two apps sharing `lib` (popularity 2), `app1` with a private helper chain,
/// `app2` with a private `data`, all on `libc` (popular).
type Nodes = Vec<(&'static str, u64, &'static [&'static str])>;

fn app_set() -> (Nodes, Popularity) {
    let nodes: Vec<(&str, u64, &[&str])> = vec![
        ("app1", 50, &["helper", "lib", "libc"]),
        ("helper", 7, &["helperdata", "libc"]),
        ("helperdata", 3, &[]),
        ("app2", 40, &["data", "lib", "libc"]),
        ("data", 900, &[]),
        ("lib", 20, &["libc"]),
        ("libc", 300, &[]),
    ];
    let p = pop(&[("lib", 2), ("libc", 5000), ("helper", 1), ("helperdata", 1), ("data", 1)]);
    (nodes, p)
}

fn subgraph(roots: &[&str], nodes: &[(&'static str, u64, &'static [&'static str])]) -> RuntimeGraph {
    let full = graph(roots, nodes);
    let mut keep = BTreeSet::new();
    let mut stack: Vec<StorePath> = full.roots.clone();
    while let Some(n) = stack.pop() {
        if keep.insert(n.clone()) {
            stack.extend(full.paths[&n].references.iter().cloned());
        }
    }
    RuntimeGraph {
        roots: full.roots.clone(),
        paths: full.paths.into_iter().filter(|(k, _)| keep.contains(k)).collect(),
    }
}

#[test]
fn private_paths_travel_with_their_package_and_shared_ones_stand_alone() {
    let (nodes, p) = app_set();
    let g = subgraph(&["app1"], &nodes);
    let layers = group(&g, &p, &BTreeSet::new(), 94);
    assert_valid(&g, &layers, 94);
    assert_eq!(
        names(&layers).into_iter().collect::<BTreeSet<_>>(),
        set(&[&["app1", "helper", "helperdata"], &["lib"], &["libc"]]),
        "lib is only used by app1 here, but the data says another package uses it too"
    );
}

#[test]
fn a_package_gets_the_same_layers_in_every_image() {
    // Nixery's dominator tree puts `lib` into app1's layer when app1 is alone and makes it a
    // layer of its own beside app2: two different app1 layers. The units do not change.
    let (nodes, p) = app_set();
    let alone = group(&subgraph(&["app1"], &nodes), &p, &BTreeSet::new(), 94);
    let both = group(&subgraph(&["app1", "app2"], &nodes), &p, &BTreeSet::new(), 94);
    let both_names = names(&both);
    for layer in names(&alone) {
        assert!(both_names.contains(&layer), "{layer:?} is not a layer of app1/app2: {both_names:?}");
    }
    assert!(both_names.contains(&vec!["app2".to_string(), "data".to_string()]));
    let nixery_alone = names(&group_nixery(&subgraph(&["app1"], &nodes), &p, &BTreeSet::new(), 94));
    let nixery_both = names(&group_nixery(&subgraph(&["app1", "app2"], &nodes), &p, &BTreeSet::new(), 94));
    assert!(nixery_alone.iter().any(|l| !nixery_both.contains(l)), "the example no longer shows the difference");
}

#[test]
fn without_data_every_path_is_a_unit() {
    // Popularity 1 everywhere is what no data looks like: nothing is known to be private.
    let (nodes, _) = app_set();
    let g = subgraph(&["app1", "app2"], &nodes);
    let layers = group(&g, &Popularity::default(), &BTreeSet::new(), 94);
    assert_valid(&g, &layers, 94);
    assert_eq!(layers.len(), g.paths.len());
    assert!(layers.iter().all(|l| l.contents.len() == 1));
}

#[test]
fn over_budget_the_heaviest_units_keep_their_layers_and_the_rest_share_the_last() {
    let (nodes, p) = app_set();
    let g = subgraph(&["app1", "app2"], &nodes);
    // Units by size: app2+data 940, libc 300, app1+helper+helperdata 60, lib 20.
    let layers = group(&g, &p, &BTreeSet::new(), 3);
    assert_valid(&g, &layers, 3);
    assert_eq!(
        names(&layers),
        vec![
            vec!["libc".to_string()],
            vec!["app2".to_string(), "data".to_string()],
            vec!["app1".to_string(), "helper".to_string(), "helperdata".to_string(), "lib".to_string()],
        ],
        "libc rates 5000 × 300 and comes first; the rest comes last, rated 0"
    );
    assert_eq!(layers[2].merge_rating, 0);
    assert_eq!(layers[2].popularity, 2);
    assert_eq!(layers[0].merge_rating, 5000 * 300);
    let one = group(&g, &p, &BTreeSet::new(), 1);
    assert_valid(&g, &one, 1);
    assert_eq!(one[0].contents.len(), g.paths.len());
}

#[test]
fn always_included_units_are_kept_and_come_first_even_when_small() {
    let g = graph(
        &["cacert", "iana", "a", "b", "c"],
        &[("cacert", 2, &[]), ("iana", 1, &[]), ("a", 1000, &[]), ("b", 2000, &[]), ("c", 3000, &[])],
    );
    let very: BTreeSet<StorePath> = [p("cacert"), p("iana")].into();
    let data = pop(&[("zzz", 7)]);
    let layers = group(&g, &data, &very, 3);
    assert_valid(&g, &layers, 3);
    assert_eq!(
        names(&layers),
        vec![
            vec!["cacert".to_string()],
            vec!["iana".to_string()],
            vec!["a".to_string(), "b".to_string(), "c".to_string()]
        ]
    );
    assert_eq!(layers[0].popularity, VERY_POPULAR);
    let layers = group(&g, &data, &very, 4);
    assert_eq!(names(&layers)[2], vec!["c".to_string()], "then the heaviest");
}

#[test]
fn the_same_graph_built_in_another_order_gives_the_same_layers() {
    let (nodes, p) = app_set();
    let forward = subgraph(&["app1", "app2"], &nodes);
    let mut reversed_nodes = nodes.clone();
    reversed_nodes.reverse();
    let mut backward = subgraph(&["app2", "app1"], &reversed_nodes);
    for info in backward.paths.values_mut() {
        info.references.reverse();
    }
    let counts: Vec<(&str, u64)> = vec![("data", 1), ("helperdata", 1), ("helper", 1), ("libc", 5000), ("lib", 2)];
    let p2 = pop(&counts);
    for budget in 1..=8 {
        let a = group(&forward, &p, &BTreeSet::new(), budget);
        let b = group(&backward, &p2, &BTreeSet::new(), budget);
        assert_eq!(a, b, "budget {budget}");
        assert_valid(&forward, &a, budget);
    }
}

#[test]
fn every_budget_covers_every_path_once_on_a_larger_graph() {
    // 60 paths: path i references i+1 and i+7 (when they exist), sizes vary, every third is
    // private, equal sizes force ties.
    let names_: Vec<String> = (0..60).map(|i| format!("p{i:02}")).collect();
    let refs: Vec<Vec<&str>> =
        (0..60).map(|i| [i + 1, i + 7].iter().filter(|&&j| j < 60).map(|&j| names_[j].as_str()).collect()).collect();
    let nodes: Vec<(&str, u64, &[&str])> =
        (0..60).map(|i| (names_[i].as_str(), (i as u64 * 37) % 11, refs[i].as_slice())).collect();
    let roots: Vec<&str> = vec![names_[0].as_str(), names_[30].as_str()];
    let g = graph(&roots, &nodes);
    let counts: Vec<(&str, u64)> =
        (0..60).map(|i| (names_[i].as_str(), if i % 3 == 0 { 1 } else { 2 + i as u64 })).collect();
    let data = pop(&counts);
    for budget in [1, 2, 3, 5, 10, 20, 40, 59, 60, 61, 94] {
        let layers = group(&g, &data, &BTreeSet::new(), budget);
        assert_valid(&g, &layers, budget);
        assert_eq!(layers, group(&g, &data, &BTreeSet::new(), budget));
    }
}

// ---------------------------------------------------------------------------------------
// nixpkgs' popularity contest.

/// The example of nixpkgs' description: A - B - C - D - F, A - G, B - E, C - E, E - F.
fn contest_example() -> RuntimeGraph {
    graph(
        &["a"],
        &[
            ("a", 1, &["b", "g"]),
            ("b", 2, &["c", "e"]),
            ("c", 3, &["d", "e"]),
            ("d", 4, &["f"]),
            ("e", 5, &["f"]),
            ("f", 6, &[]),
            ("g", 7, &[]),
        ],
    )
}

#[test]
fn popularity_contest_follows_the_documented_example() {
    // Documented popularities: F 9, E 5, D 4, C 3, B 2, G 2, A 1 (here one more each: the
    // synthetic root above A adds 1 to everything).
    let order = popularity_contest_order(&contest_example());
    let got: Vec<(&str, u128)> = order.iter().map(|(p, s)| (p.name(), *s)).collect();
    assert_eq!(got, vec![("f", 10), ("e", 6), ("d", 5), ("c", 4), ("b", 3), ("g", 3), ("a", 2)]);
}

#[test]
fn popularity_contest_gives_the_most_popular_a_layer_each_and_the_rest_one() {
    let g = contest_example();
    let layers = group_popularity_contest(&g, 3);
    assert_eq!(names(&layers), vec![vec!["f"], vec!["e"], vec!["a", "b", "c", "d", "g"]]);
    let all = group_popularity_contest(&g, 94);
    assert_eq!(all.len(), 7);
    assert!(all.iter().all(|l| l.contents.len() == 1));
}

// ---------------------------------------------------------------------------------------
// nixpkgs' size-first grouping.

/// app -> big, lib; big -> libc, z; lib -> libc, z; tool -> libc. Sizes: big 100, tool 60,
/// libc 50, app 10, lib 5, z 1.
fn size_first_example() -> RuntimeGraph {
    graph(
        &["app", "tool"],
        &[
            ("app", 10, &["big", "lib"]),
            ("big", 100, &["libc", "z"]),
            ("lib", 5, &["libc", "z"]),
            ("libc", 50, &[]),
            ("tool", 60, &["libc"]),
            ("z", 1, &[]),
        ],
    )
}

#[test]
fn size_first_follows_the_labelling_step_by_step() {
    // Worked by hand through auto-layer.py: big first takes libc and z (nothing outside
    // big's users uses them), the rest is the unlabelled layer (2 layers). tool next: libc
    // is now used by big and tool (4 layers: over 3, so budget 3 stops at 2).
    let g = size_first_example();
    let two = group_size_first(&g, 3);
    assert_eq!(names(&two), vec![vec!["big", "libc", "z"], vec!["app", "lib", "tool"]]);
    // Then libc (its own primary) and app (takes lib) keep 4 layers; lib would split z off
    // big's layer (6), so budgets 4 and 5 stop there. Ordered by closure size: libc 50,
    // tool 110, big z 151, app lib 166.
    for budget in [4, 5] {
        let four = group_size_first(&g, budget);
        assert_eq!(names(&four), vec![vec!["libc"], vec!["tool"], vec!["big", "z"], vec!["app", "lib"]], "{budget}");
    }
    let all = group_size_first(&g, 6);
    assert_eq!(names(&all), vec![vec!["z"], vec!["libc"], vec!["lib"], vec!["tool"], vec!["big"], vec!["app"]]);
    assert_eq!(names(&group_size_first(&g, 1)), vec![vec!["app", "big", "lib", "libc", "tool", "z"]]);
}

#[test]
fn size_first_covers_every_path_once_within_the_budget_and_is_deterministic() {
    let names_: Vec<String> = (0..60).map(|i| format!("p{i:02}")).collect();
    let refs: Vec<Vec<&str>> =
        (0..60).map(|i| [i + 1, i + 7].iter().filter(|&&j| j < 60).map(|&j| names_[j].as_str()).collect()).collect();
    let nodes: Vec<(&str, u64, &[&str])> =
        (0..60).map(|i| (names_[i].as_str(), (i as u64 * 37) % 11, refs[i].as_slice())).collect();
    let g = graph(&[names_[0].as_str(), names_[30].as_str()], &nodes);
    for budget in [1, 2, 3, 5, 10, 20, 40, 59, 60, 61, 94] {
        let layers = group_size_first(&g, budget);
        assert!(!layers.is_empty() && layers.len() <= budget, "{} layers for budget {budget}", layers.len());
        let mut all: Vec<&StorePath> = layers.iter().flat_map(|l| &l.contents).collect();
        all.sort();
        assert!(all.into_iter().eq(g.paths.keys()), "budget {budget}: a path missing or twice");
        assert_eq!(layers, group_size_first(&g, budget));
    }
}

// ---------------------------------------------------------------------------------------
// `group_banded`: the default.

/// 60 paths: path i references i+1 and i+7 (when they exist), sizes vary, every third is
/// private; the data as the larger-graph test above uses.
fn chain_graph() -> (RuntimeGraph, Popularity) {
    let names_: Vec<String> = (0..60).map(|i| format!("p{i:02}")).collect();
    let refs: Vec<Vec<&str>> =
        (0..60).map(|i| [i + 1, i + 7].iter().filter(|&&j| j < 60).map(|&j| names_[j].as_str()).collect()).collect();
    let nodes: Vec<(&str, u64, &[&str])> =
        (0..60).map(|i| (names_[i].as_str(), 1 + (i as u64 * 37) % 11, refs[i].as_slice())).collect();
    let g = graph(&[names_[0].as_str(), names_[30].as_str()], &nodes);
    let counts: Vec<(&str, u64)> =
        (0..60).map(|i| (names_[i].as_str(), if i % 3 == 0 { 1 } else { 2 + i as u64 })).collect();
    (g, pop(&counts))
}

#[test]
fn banded_is_stable_when_the_budget_has_room_for_one_band_only() {
    let (g, data) = chain_graph();
    for p in [data, Popularity::default()] {
        for budget in (1..BUDGET_PER_BAND * 2).chain([60, 61, 94]) {
            let banded = group_banded(&g, &p, &BTreeSet::new(), budget);
            assert_valid(&g, &banded, budget);
            assert_eq!(banded, group(&g, &p, &BTreeSet::new(), budget), "budget {budget}");
        }
    }
}

#[test]
fn banded_keeps_the_heaviest_and_merges_the_rest_into_runs_of_the_closure_order() {
    // Without data every path is a unit. Path i's closure is p_i..p_59: 60 - i paths, each
    // closure holding the next one's, so a band's closure is its top path's and a merge of
    // two groups with another between them in closure order always costs more than merging
    // one of them with that one: the bands are runs of that order.
    let (g, _) = chain_graph();
    let none = Popularity::default();
    let budget = 3 * BUDGET_PER_BAND;
    let layers = group_banded(&g, &none, &BTreeSet::new(), budget);
    assert_valid(&g, &layers, budget);
    assert_eq!(layers.len(), budget);
    let (kept, bands) = layers.split_at(budget - 3);
    assert!(kept.iter().all(|l| l.contents.len() == 1 && l.merge_rating > 0));
    // The kept are the heaviest: nothing in a band outweighs a kept path.
    let lightest_kept = kept.iter().map(|l| l.size).min().unwrap();
    let banded: Vec<&StorePath> = bands.iter().flat_map(|l| &l.contents).collect();
    assert_eq!(banded.len(), 33);
    assert!(banded.iter().all(|p| g.paths[*p].nar_size <= lightest_kept));
    assert!(bands.iter().all(|b| b.merge_rating == 0));
    // Bottom first: every path of a band has a shorter closure (a higher index) than every
    // path of the band after it, and each band is a run of the banded paths in that order.
    let index = |p: &StorePath| p.name()[1..].parse::<usize>().unwrap();
    for pair in bands.windows(2) {
        let lowest_of_lower = pair[0].contents.iter().map(index).min().unwrap();
        let highest_of_upper = pair[1].contents.iter().map(index).max().unwrap();
        assert!(lowest_of_lower >= highest_of_upper, "{:?}", names(bands));
    }
    let mut order: Vec<usize> = banded.iter().map(|p| index(p)).collect();
    order.sort_unstable_by(|a, b| b.cmp(a));
    assert!(bands.iter().all(|b| {
        let mut ix: Vec<usize> = b.contents.iter().map(index).collect();
        ix.sort_unstable_by(|a, b| b.cmp(a));
        order.windows(ix.len()).any(|w| w == ix.as_slice())
    }));
    assert_eq!(layers, group_banded(&g, &none, &BTreeSet::new(), budget), "deterministic");
}

#[test]
fn banded_keeps_private_units_whole_and_always_included_first() {
    let (g, data) = chain_graph();
    let very: BTreeSet<StorePath> = [p("p59")].into();
    let budget = 2 * BUDGET_PER_BAND;
    let layers = group_banded(&g, &data, &very, budget);
    assert_valid(&g, &layers, budget);
    assert_eq!(layers[0].contents, vec![p("p59")], "the always-included path is kept and first");
    let stable_units = group(&g, &data, &very, 94);
    for l in &layers {
        // Every layer is a union of stable's units: a private path is never split off.
        let covered: usize = stable_units
            .iter()
            .filter(|u| u.contents.iter().all(|c| l.contents.contains(c)))
            .map(|u| u.contents.len())
            .sum();
        assert_eq!(covered, l.contents.len(), "{:?}", names(std::slice::from_ref(l)));
    }
}
