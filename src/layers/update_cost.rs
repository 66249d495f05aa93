//! What keeping an image up to date is expected to cost, and the merges that add least to
//! it: how [`super::group_banded`] puts the units that get no layer of their own into its
//! few shared layers.
//!
//! # The cost
//!
//! When a channel moves, a store path changes whenever any path in its closure changes (its
//! hash covers its references), and a client downloads a layer again whenever any of its
//! paths changed. So a layer is downloaded again when anything in the union of its paths'
//! closures changes. If every package got a new version independently with probability `q`
//! per revision, a layer whose closures hold `k` paths would stay the same with probability
//! `(1 − q)^k`, and would cost `size × (1 − (1 − q)^k)` bytes per revision on average.
//! [`CHANGE_PERCENT`] is `q`: the model of a weekly moving package set
//! (benches/reuse/model.rs) gives the fewest update bytes between 1.5 and 3 % and more
//! above (docs/reuse.md). A grouping that sees one revision cannot know which packages move
//! often; the closure is what it can see, and it is what makes a top-level package move
//! with every library under it.
//!
//! # The merges
//!
//! [`merge_cheapest`] merges, again and again, the two groups whose merge adds the least to
//! the summed cost, until as many groups are left as asked for (greedy agglomeration, as
//! Ward's method does for variance). A merge of `a` and `b` adds
//! `a.size × (p(a ∪ b) − p(a)) + b.size × (p(a ∪ b) − p(b))`: nothing when neither changes
//! more often for the merge, a lot when a large group with a small closure joins one that
//! changes every revision. So libraries deep in the graph end up together, apart from the
//! image's top-level packages, and a small path rides with whatever changes about as often,
//! which is what cutting the units by closure length (the earlier `banded`) approximated;
//! measured, the merges download 6–7 % fewer bytes per update at a budget of 24 and 1–2 %
//! fewer at 94 (docs/reuse.md).
//!
//! # Determinism and cost
//!
//! The arithmetic is integer (probabilities in fixed point, bytes × probability in `u128`),
//! so every replica, on any architecture, makes the same merges; ties go to the pair that
//! comes first in the caller's order. Each group lists its [`KEEP`] cheapest merges, so a
//! merge computes the merged group's costs against every other group, and a group's whole
//! row again only when every merge it listed is gone: about `O(n² × p/64)` time for `n`
//! groups over an image of `p` paths, plus the rows computed again, and `O(n × KEEP)`
//! memory beyond the closures (a list grows only by merges with a newly merged group that
//! cost less than all it left out). Measured: 60–75 ms for the 977 groups of a 1,000-path
//! image, 7 s for the 5,150 of a whole distribution in one image (docs/reuse.md,
//! "Performance").

use super::Layer;

/// The probability, in percent, that a package gets a new version from one revision of the
/// package set to the next (see the module docs).
pub const CHANGE_PERCENT: u64 = 3;

/// Fixed-point one: probabilities are multiples of `1 / ONE`.
const ONE: u64 = 1 << 40;

/// A group of units: its layer and the union of its paths' closures as a bitset over the
/// image's paths.
pub struct Group {
    pub layer: Layer,
    pub closure: Vec<u64>,
    /// Paths in `closure`.
    pub reach: usize,
}

impl Group {
    pub fn new(closure: Vec<u64>, layer: Layer) -> Group {
        let reach = closure.iter().map(|w| w.count_ones() as usize).sum();
        Group { layer, closure, reach }
    }

    fn merge(self, other: Group) -> Group {
        let closure = self.closure.iter().zip(&other.closure).map(|(a, b)| a | b).collect();
        Group::new(closure, self.layer.merge(other.layer))
    }
}

/// `changes[k]`: the probability that something in a closure of `k` paths changes, × [`ONE`].
struct Changes(Vec<u64>);

impl Changes {
    fn up_to(paths: usize) -> Changes {
        let mut stays = ONE;
        let mut changes = Vec::with_capacity(paths + 1);
        for _ in 0..=paths {
            changes.push(ONE - stays);
            stays = stays * (100 - CHANGE_PERCENT) / 100;
        }
        Changes(changes)
    }

    /// Expected bytes per revision of a layer of `size` bytes whose closures hold `reach`
    /// paths, × [`ONE`].
    fn cost(&self, size: u64, reach: usize) -> u128 {
        size as u128 * self.0[reach] as u128
    }
}

/// What merging `a` and `b` adds to the expected cost.
fn added(changes: &Changes, a: &Group, b: &Group) -> u128 {
    let reach = a.closure.iter().zip(&b.closure).map(|(x, y)| (x | y).count_ones() as usize).sum();
    changes.cost(a.layer.size + b.layer.size, reach)
        - changes.cost(a.layer.size, a.reach)
        - changes.cost(b.layer.size, b.reach)
}

/// A candidate merge, ordered by added cost, then by the pair's positions.
type Pair = (u128, usize, usize);

fn pair(cost: u128, i: usize, j: usize) -> Pair {
    (cost, i.min(j), i.max(j))
}

/// Merges a group lists as its cheapest (it looks at every group again only when all of
/// them are gone; merges with newly merged groups that cost less than the bound are added).
/// The unit tests list 3, so that their groups run out of listed merges again and again.
const KEEP: usize = if cfg!(test) { 3 } else { 64 };

/// A group's cheapest merges, each with its partner's version (a merge makes a new version
/// of the group that absorbs the other): every merge with a current partner not listed
/// costs at least `bound`.
struct Partners {
    listed: Vec<(Pair, u32)>,
    bound: Pair,
    /// The cheapest current merge listed, if known.
    cheapest: Option<Pair>,
}

impl Partners {
    /// The [`KEEP`] cheapest of `row`, every current merge of one group.
    fn listing(mut row: Vec<(Pair, u32)>) -> Partners {
        let bound = if row.len() > KEEP {
            row.select_nth_unstable(KEEP);
            row[KEEP].0
        } else {
            (u128::MAX, usize::MAX, usize::MAX)
        };
        row.truncate(KEEP);
        let cheapest = row.iter().map(|&(p, _)| p).min();
        Partners { listed: row, bound, cheapest }
    }
}

/// Merges `groups` (closures over at most `paths` paths) down to `target` groups, cheapest
/// merge first (see the module docs); the result keeps the input's order, a merged group
/// where its first member was.
pub fn merge_cheapest(groups: Vec<Group>, target: usize, paths: usize) -> Vec<Group> {
    let target = target.max(1);
    if groups.len() <= target {
        return groups;
    }
    let changes = Changes::up_to(paths);
    let mut groups: Vec<Option<Group>> = groups.into_iter().map(Some).collect();
    let n = groups.len();
    let mut version = vec![0u32; n];
    let partner = |(_, x, y): Pair, of: usize| if x == of { y } else { x };
    // Every current merge of group `i`.
    let row = |groups: &[Option<Group>], version: &[u32], i: usize| -> Vec<(Pair, u32)> {
        let Some(g) = &groups[i] else { return Vec::new() };
        let others = groups.iter().enumerate().filter(|&(j, _)| j != i);
        others.filter_map(|(j, h)| h.as_ref().map(|h| (pair(added(&changes, g, h), i, j), version[j]))).collect()
    };
    let mut partners: Vec<Partners> = (0..n).map(|i| Partners::listing(row(&groups, &version, i))).collect();
    let mut left = n;
    while left > target {
        let (_, a, b) = partners.iter().filter_map(|p| p.cheapest).min().expect("two groups left");
        let merged = groups[a].take().expect("current").merge(groups[b].take().expect("current"));
        groups[a] = Some(merged);
        version[a] += 1;
        left -= 1;
        partners[b] = Partners::listing(Vec::new());
        let merges = row(&groups, &version, a);
        for &(with_merged, _) in &merges {
            let k = partner(with_merged, a);
            let mine = &mut partners[k];
            if with_merged < mine.bound {
                mine.listed.push((with_merged, version[a]));
            }
            let current = |&(p, v): &(Pair, u32)| groups[partner(p, k)].is_some() && version[partner(p, k)] == v;
            if mine.cheapest.is_some_and(|c| partner(c, k) == a || partner(c, k) == b) {
                // Its cheapest merge is gone: the next among the listed ones still current,
                // or, when none is left, the whole row again.
                mine.listed.retain(current);
                if mine.listed.is_empty() {
                    *mine = Partners::listing(row(&groups, &version, k));
                    continue;
                }
                mine.cheapest = mine.listed.iter().map(|&(p, _)| p).min();
            } else {
                mine.cheapest = Some(mine.cheapest.map_or(with_merged, |c| c.min(with_merged)));
            }
        }
        partners[a] = Partners::listing(merges);
        // In the unit tests, every group's cheapest merge is checked against its whole row.
        #[cfg(test)]
        for (k, listed) in partners.iter().enumerate().filter(|&(k, _)| groups[k].is_some()) {
            let whole = row(&groups, &version, k).into_iter().map(|(p, _)| p).min();
            assert_eq!(listed.cheapest, whole, "group {k}'s cheapest merge after merging {a} and {b}");
        }
    }
    groups.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::StorePath;

    fn group(name: &str, size: u64, closure: &[usize]) -> Group {
        let path = StorePath::parse(&format!("/nix/store/{}-{name}", "a".repeat(32))).unwrap();
        let mut bits = vec![0u64; 2];
        for &c in closure {
            bits[c / 64] |= 1 << (c % 64);
        }
        Group::new(bits, Layer { merge_rating: 0, contents: vec![path], size, popularity: 1 })
    }

    fn names(groups: &[Group]) -> Vec<Vec<String>> {
        groups.iter().map(|g| g.layer.contents.iter().map(|p| p.name().to_owned()).collect()).collect()
    }

    #[test]
    fn the_change_probability_grows_with_the_closure_as_one_minus_the_stay_probability_to_the_power() {
        let changes = Changes::up_to(200);
        let exact = |k: i32| 1.0 - (1.0 - CHANGE_PERCENT as f64 / 100.0).powi(k);
        for k in [0usize, 1, 2, 10, 50, 200] {
            let fixed = changes.0[k] as f64 / ONE as f64;
            assert!((fixed - exact(k as i32)).abs() < 1e-9, "k {k}: {fixed} against {}", exact(k as i32));
        }
        assert!(changes.0.windows(2).all(|w| w[0] < w[1]), "more paths, more change");
    }

    /// The same merges, every pair's cost computed afresh before each: what the remembered
    /// partners must reproduce.
    fn every_pair_each_time(groups: Vec<Group>, target: usize, paths: usize) -> Vec<Group> {
        let changes = Changes::up_to(paths);
        let mut groups: Vec<Option<Group>> = groups.into_iter().map(Some).collect();
        while groups.iter().flatten().count() > target {
            let mut cheapest: Option<Pair> = None;
            for i in 0..groups.len() {
                for j in i + 1..groups.len() {
                    if let (Some(a), Some(b)) = (&groups[i], &groups[j]) {
                        let candidate = pair(added(&changes, a, b), i, j);
                        if cheapest.is_none_or(|c| candidate < c) {
                            cheapest = Some(candidate);
                        }
                    }
                }
            }
            let (_, i, j) = cheapest.unwrap();
            let merged = groups[i].take().unwrap().merge(groups[j].take().unwrap());
            groups[i] = Some(merged);
        }
        groups.into_iter().flatten().collect()
    }

    #[test]
    fn remembered_partners_give_the_merges_of_comparing_every_pair_each_time() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            state >> 33
        };
        for round in 0..200 {
            let n = 5 + (next() % 60) as usize;
            let make = |next: &mut dyn FnMut() -> u64| -> Vec<Group> {
                (0..n)
                    .map(|i| {
                        let closure: Vec<usize> = (0..128).filter(|_| next().is_multiple_of(5)).chain([i]).collect();
                        group(&format!("p{i:02}"), 1 + next() % 5000, &closure)
                    })
                    .collect()
            };
            let groups = make(&mut next);
            let copy: Vec<Group> = groups.iter().map(|g| Group::new(g.closure.clone(), g.layer.clone())).collect();
            let target = 1 + (next() % n as u64) as usize;
            assert_eq!(
                names(&merge_cheapest(groups, target, 128)),
                names(&every_pair_each_time(copy, target, 128)),
                "round {round}: {n} groups to {target}"
            );
        }
    }

    #[test]
    fn a_tiny_package_on_top_is_cheaper_alone_than_a_large_one_made_to_change_with_it() {
        // The same graph with one large application and one tiny one: the large one takes
        // the libraries (they change with it anyway: its closure holds them) and the tiny
        // one stays apart, because joining it would make the large one change with it.
        let groups = vec![
            group("lib-a", 1000, &[0]),
            group("lib-b", 10, &[1, 0]),
            group("app-x", 5000, &[4, 0, 1, 2, 3]),
            group("lib-c", 300, &[2, 0]),
            group("lib-d", 20, &[3, 2, 0]),
            group("app-y", 5, &[5, 0, 1, 2, 3]),
        ];
        let merged = merge_cheapest(groups, 2, 6);
        assert_eq!(names(&merged), vec![vec!["app-x", "lib-a", "lib-b", "lib-c", "lib-d"], vec!["app-y"]]);
    }

    #[test]
    fn the_cheapest_merge_comes_first_and_ties_go_to_the_first_pair() {
        // Equal groups with disjoint closures of one path: every merge adds the same, so the
        // first two in the caller's order merge, then that pair with the next.
        let groups: Vec<Group> = (0..4).map(|i| group(&format!("p{i}"), 100, &[i])).collect();
        let merged = merge_cheapest(groups, 3, 4);
        assert_eq!(names(&merged), vec![vec!["p0", "p1"], vec!["p2"], vec!["p3"]]);
        // A group whose closure already holds another's adds only the smaller one's extra
        // risk: it is preferred to a disjoint pair.
        let groups =
            vec![group("p0", 100, &[0]), group("p1", 100, &[1]), group("top", 100, &[2, 1]), group("p3", 100, &[3])];
        let merged = merge_cheapest(groups, 3, 4);
        assert_eq!(names(&merged), vec![vec!["p0"], vec!["p1", "top"], vec!["p3"]]);
    }

    #[test]
    fn nothing_merges_when_the_target_holds_every_group() {
        let groups: Vec<Group> = (0..3).map(|i| group(&format!("p{i}"), 1, &[i])).collect();
        assert_eq!(merge_cheapest(groups, 3, 3).len(), 3);
    }
}
