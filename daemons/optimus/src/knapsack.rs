//! The multi-dimensional 0/1 knapsack: which bids to serve so that the slices fit the box and
//! the prices add up to the most. Exact branch and bound for small inputs, greedy by value
//! density plus swap-based local improvement for large ones, and brute force as the reference.

use crate::slice::DIMS;

/// One candidate: the slice it needs (per dimension) and what it pays (wei/s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    pub weight: [u64; DIMS],
    pub value: u128,
}

fn fits(w: &[u64; DIMS], room: &[u64; DIMS]) -> bool {
    w.iter().zip(room).all(|(a, b)| a <= b)
}

fn sub(room: &[u64; DIMS], w: &[u64; DIMS]) -> [u64; DIMS] {
    std::array::from_fn(|d| room[d] - w[d])
}

fn add(room: &[u64; DIMS], w: &[u64; DIMS]) -> [u64; DIMS] {
    std::array::from_fn(|d| room[d].saturating_add(w[d]))
}

/// The value of a selection.
pub fn total(items: &[Item], chosen: &[usize]) -> u128 {
    chosen
        .iter()
        .fold(0u128, |acc, &i| acc.saturating_add(items[i].value))
}

/// True when the selection fits `cap` and names each item at most once.
pub fn feasible(items: &[Item], chosen: &[usize], cap: &[u64; DIMS]) -> bool {
    let mut seen = vec![false; items.len()];
    let mut room = *cap;
    for &i in chosen {
        if i >= items.len() || std::mem::replace(&mut seen[i], true) {
            return false;
        }
        if !fits(&items[i].weight, &room) {
            return false;
        }
        room = sub(&room, &items[i].weight);
    }
    true
}

/// Every subset, for tests: exponential, `items.len()` must be small (≤ 20 or so).
pub fn brute_force(items: &[Item], cap: &[u64; DIMS]) -> Vec<usize> {
    assert!(items.len() <= 24, "brute force over {} items", items.len());
    let mut best = (0u128, Vec::new());
    for mask in 0u32..(1 << items.len()) {
        let chosen: Vec<usize> = (0..items.len()).filter(|i| mask & (1 << i) != 0).collect();
        if feasible(items, &chosen, cap) {
            let v = total(items, &chosen);
            if v > best.0 {
                best = (v, chosen);
            }
        }
    }
    best.1
}

/// Value per weighted share of the box: the order the greedy fills in. `scarcity[d]` weighs
/// dimension `d` (1 everywhere for plain density; the demand on it for the scarcity-aware
/// order). Dimensions the box lacks are skipped (an item needing them is infeasible).
fn density(item: &Item, cap: &[u64; DIMS], scarcity: &[f64; DIMS]) -> f64 {
    let load: f64 = (0..DIMS)
        .filter(|&d| cap[d] > 0)
        .map(|d| scarcity[d] * item.weight[d] as f64 / cap[d] as f64)
        .sum();
    item.value as f64 / load.max(1e-12)
}

/// How many unchosen items (best first) one local-improvement move looks at: bounds a pass at
/// this × the chosen count, whatever the number of bids.
const IMPROVE_WINDOW: usize = 256;
const IMPROVE_PASSES: usize = 8;

fn by_key(items: &[usize], key: impl Fn(usize) -> f64) -> Vec<usize> {
    let mut keyed: Vec<(f64, usize)> = items.iter().map(|&i| (key(i), i)).collect();
    keyed.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    keyed.into_iter().map(|(_, i)| i).collect()
}

/// A good selection fast: fill in three orders — by density, by density with each dimension
/// weighted by how oversubscribed the bids make it, and by value — keep the best, then improve
/// it locally. O(n log n) plus bounded improvement passes. Indices come back sorted.
pub fn solve_greedy(items: &[Item], cap: &[u64; DIMS]) -> Vec<usize> {
    let feasible_items: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].value > 0 && fits(&items[i].weight, cap))
        .collect();
    let fill = |order: &[usize]| {
        let mut room = *cap;
        let mut chosen = Vec::new();
        for &i in order {
            if fits(&items[i].weight, &room) {
                room = sub(&room, &items[i].weight);
                chosen.push(i);
            }
        }
        chosen
    };
    let plain = [1.0; DIMS];
    let scarcity: [f64; DIMS] = std::array::from_fn(|d| {
        let demand: f64 = feasible_items
            .iter()
            .map(|&i| items[i].weight[d] as f64)
            .sum();
        if cap[d] > 0 {
            (demand / cap[d] as f64).max(1e-6)
        } else {
            0.0
        }
    });
    let by_density = by_key(&feasible_items, |i| density(&items[i], cap, &plain));
    let by_scarcity = by_key(&feasible_items, |i| density(&items[i], cap, &scarcity));
    let by_value = by_key(&feasible_items, |i| items[i].value as f64);
    let mut chosen = [&by_density, &by_scarcity, &by_value]
        .into_iter()
        .map(|order| fill(order))
        .max_by_key(|c| total(items, c))
        .unwrap_or_default();
    improve(items, cap, &by_value, &by_density, &mut chosen);
    chosen.sort_unstable();
    chosen
}

/// Local improvement until a pass gains nothing (at most [`IMPROVE_PASSES`]):
/// - for the best-valued unchosen items, add one that fits or exchange it for the cheapest
///   chosen item whose removal makes room, if that is cheaper;
/// - drop the chosen item whose removal, refilled by density from the unchosen, gains most.
fn improve(
    items: &[Item],
    cap: &[u64; DIMS],
    by_value: &[usize],
    by_density: &[usize],
    chosen: &mut Vec<usize>,
) {
    let mut in_set = vec![false; items.len()];
    let mut room = *cap;
    for &i in chosen.iter() {
        in_set[i] = true;
        room = sub(&room, &items[i].weight);
    }
    for _ in 0..IMPROVE_PASSES {
        let mut gained = false;
        let window: Vec<usize> = by_value
            .iter()
            .copied()
            .filter(|&i| !in_set[i])
            .take(IMPROVE_WINDOW)
            .collect();
        for u in window {
            let w = &items[u].weight;
            if fits(w, &room) {
                room = sub(&room, w);
                in_set[u] = true;
                chosen.push(u);
                gained = true;
                continue;
            }
            let best = chosen
                .iter()
                .enumerate()
                .filter(|&(_, &s)| items[s].value < items[u].value)
                .filter(|&(_, &s)| fits(w, &add(&room, &items[s].weight)))
                .min_by_key(|&(_, &s)| items[s].value);
            if let Some((pos, &s)) = best {
                room = sub(&add(&room, &items[s].weight), w);
                in_set[s] = false;
                in_set[u] = true;
                chosen[pos] = u;
                gained = true;
            }
        }
        // Drop one, refill by density: escapes a big item that blocks several small ones.
        let refill_window: Vec<usize> = by_density
            .iter()
            .copied()
            .filter(|&i| !in_set[i])
            .take(IMPROVE_WINDOW)
            .collect();
        let refill = |room: [u64; DIMS]| {
            let mut room = room;
            let mut got = Vec::new();
            for &i in &refill_window {
                if fits(&items[i].weight, &room) {
                    room = sub(&room, &items[i].weight);
                    got.push(i);
                }
            }
            got
        };
        let best = chosen
            .iter()
            .enumerate()
            .map(|(pos, &s)| {
                let got = refill(add(&room, &items[s].weight));
                (total(items, &got), pos, got)
            })
            .filter(|(value, pos, _)| *value > items[chosen[*pos]].value)
            .max_by_key(|(value, pos, _)| value - items[chosen[*pos]].value);
        if let Some((_, pos, got)) = best {
            let s = chosen.swap_remove(pos);
            in_set[s] = false;
            room = add(&room, &items[s].weight);
            for i in got {
                room = sub(&room, &items[i].weight);
                in_set[i] = true;
                chosen.push(i);
            }
            gained = true;
        }
        if !gained {
            break;
        }
    }
}

/// The optimum by depth-first branch and bound, seeded with the heuristic's selection. The bound
/// at a node is the least, over the dimensions, of the fractional (LP) knapsack on that dimension
/// alone: each is a valid upper bound, so their minimum is too. Exponential in the worst case:
/// for inputs up to a few dozen items. Indices come back sorted.
pub fn solve_exact(items: &[Item], cap: &[u64; DIMS]) -> Vec<usize> {
    branch_and_bound(items, cap, solve_greedy(items, cap), u64::MAX).0
}

/// Candidates [`solve_large`] hands to branch and bound besides the heuristic's picks, and the
/// nodes it may visit: a few milliseconds at most, whatever the number of bids.
const LARGE_WINDOW: usize = 48;
const LARGE_NODES: u64 = 20_000;

/// For many candidates: the heuristic, then branch and bound over the densest
/// 48 candidates and the heuristic's picks, stopped after 20,000 nodes (about 2 ms).
/// Seeded with the heuristic's selection, so never worse than it. Indices come back sorted,
/// with whether the selection is proven optimal (every candidate was in the search, and it
/// finished).
pub fn solve_large(items: &[Item], cap: &[u64; DIMS]) -> (Vec<usize>, bool) {
    let greedy = solve_greedy(items, cap);
    let feasible_items: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].value > 0 && fits(&items[i].weight, cap))
        .collect();
    let mut pool = by_key(&feasible_items, |i| density(&items[i], cap, &[1.0; DIMS]));
    pool.truncate(LARGE_WINDOW);
    pool.extend(&greedy);
    pool.sort_unstable();
    pool.dedup();
    let sub: Vec<Item> = pool.iter().map(|&i| items[i]).collect();
    let seed: Vec<usize> = greedy
        .iter()
        .filter_map(|g| pool.binary_search(g).ok())
        .collect();
    let (found, finished) = branch_and_bound(&sub, cap, seed, LARGE_NODES);
    let mut chosen: Vec<usize> = found.into_iter().map(|p| pool[p]).collect();
    chosen.sort_unstable();
    (chosen, finished && pool.len() == feasible_items.len())
}

/// Branch and bound from the feasible selection `seed`, visiting at most `max_nodes` nodes.
/// Returns the best selection found (sorted) and whether the search finished, which proves it
/// optimal.
fn branch_and_bound(
    items: &[Item],
    cap: &[u64; DIMS],
    seed: Vec<usize>,
    max_nodes: u64,
) -> (Vec<usize>, bool) {
    let mut order: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].value > 0 && fits(&items[i].weight, cap))
        .collect();
    // Dense items first: good selections are found early, so the bound prunes more.
    order.sort_unstable_by(|&a, &b| {
        density(&items[b], cap, &[1.0; DIMS])
            .total_cmp(&density(&items[a], cap, &[1.0; DIMS]))
            .then(a.cmp(&b))
    });
    let sorted: Vec<Item> = order.iter().map(|&i| items[i]).collect();
    // Per dimension, positions in `sorted` by value per unit of that dimension (weightless
    // first): the order the fractional bound fills in.
    let by_dim: [Vec<usize>; DIMS] = std::array::from_fn(|d| {
        let mut v: Vec<usize> = (0..sorted.len()).collect();
        v.sort_unstable_by(|&a, &b| {
            let ra = (sorted[a].value as f64) / (sorted[a].weight[d].max(1) as f64);
            let rb = (sorted[b].value as f64) / (sorted[b].weight[d].max(1) as f64);
            let wa = sorted[a].weight[d] == 0;
            let wb = sorted[b].weight[d] == 0;
            wb.cmp(&wa).then(rb.total_cmp(&ra))
        });
        v
    });
    let mut search = Bnb {
        items: &sorted,
        by_dim: &by_dim,
        best: total(items, &seed),
        best_set: None,
        current: Vec::new(),
        nodes_left: max_nodes,
    };
    search.dfs(0, *cap, 0);
    let finished = search.nodes_left > 0;
    let mut chosen = match search.best_set {
        Some(set) => set.into_iter().map(|p| order[p]).collect(),
        None => seed,
    };
    chosen.sort_unstable();
    (chosen, finished)
}

struct Bnb<'a> {
    items: &'a [Item],
    by_dim: &'a [Vec<usize>; DIMS],
    best: u128,
    /// Positions in `items`; `None` while the greedy seed is still the best.
    best_set: Option<Vec<usize>>,
    current: Vec<usize>,
    /// 0 once the node budget is spent: the search unwinds with what it has.
    nodes_left: u64,
}

impl Bnb<'_> {
    fn dfs(&mut self, i: usize, room: [u64; DIMS], value: u128) {
        if self.nodes_left == 0 {
            return;
        }
        self.nodes_left -= 1;
        if value > self.best {
            self.best = value;
            self.best_set = Some(self.current.clone());
        }
        if i == self.items.len() || value.saturating_add(self.bound(i, &room)) <= self.best {
            return;
        }
        let item = self.items[i];
        if fits(&item.weight, &room) {
            self.current.push(i);
            self.dfs(
                i + 1,
                sub(&room, &item.weight),
                value.saturating_add(item.value),
            );
            self.current.pop();
        }
        self.dfs(i + 1, room, value);
    }

    /// An upper bound on what items `i..` can add within `room`.
    fn bound(&self, i: usize, room: &[u64; DIMS]) -> u128 {
        let mut best = self.items[i..]
            .iter()
            .fold(0u128, |acc, it| acc.saturating_add(it.value));
        for (d, (&cap, order)) in room.iter().zip(self.by_dim).enumerate() {
            let mut left = cap;
            let mut sum = 0u128;
            for &p in order {
                if p < i {
                    continue;
                }
                let it = &self.items[p];
                let w = it.weight[d];
                if w <= left {
                    left -= w;
                    sum = sum.saturating_add(it.value);
                } else {
                    // The fraction left/w of the item, rounded up; left < w keeps it in range.
                    let (w, l) = (u128::from(w), u128::from(left));
                    let part = it.value / w * l + (it.value % w * l).div_ceil(w);
                    sum = sum.saturating_add(part);
                    break;
                }
            }
            best = best.min(sum);
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(w: [u64; DIMS], value: u128) -> Item {
        Item { weight: w, value }
    }

    #[test]
    fn exact_beats_greedy_where_density_misleads() {
        // Capacity 10 cores: one dense small item (value 6, 1 core) blocks the 10-core item
        // (value 11) for a density-first fill; the value-first fill takes it. Two 5-core
        // items worth 6 each beat both.
        let cap = [10, 0, 0, 0];
        let items = [
            item([1, 0, 0, 0], 6),
            item([10, 0, 0, 0], 11),
            item([5, 0, 0, 0], 6),
            item([5, 0, 0, 0], 6),
        ];
        let exact = solve_exact(&items, &cap);
        assert_eq!(total(&items, &exact), 12);
        assert_eq!(
            total(&items, &exact),
            total(&items, &brute_force(&items, &cap))
        );
        assert!(feasible(&items, &solve_greedy(&items, &cap), &cap));
    }

    #[test]
    fn nothing_fits_nothing_chosen() {
        let items = [item([3, 0, 0, 0], 5)];
        assert!(solve_exact(&items, &[2, 0, 0, 0]).is_empty());
        assert!(solve_greedy(&items, &[2, 0, 0, 0]).is_empty());
    }
}
