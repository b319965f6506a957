//! The order book: every open ask and bid, indexed so that the best matches for a new
//! order are found without looking at every order.
//!
//! Each side is a k-d tree over the order's point (13 benchmarks, price, duration).
//! Every node keeps the bounds of its subtree — per-benchmark min and max, price
//! range, duration range, OR and AND of the netflags, the lowest identity level
//! required — so a search discards a subtree as soon as its bounds show that no order
//! in it can match. The search is best-first: a heap ordered by price holds subtrees
//! (keyed by their best price) and matching orders (keyed by their own price), so
//! orders come out exactly in (price, id) order and the search stops after `k`.
//!
//! Leaves hold the compact entries themselves, contiguous, so scanning a leaf is a
//! walk through memory. Inserts descend to a leaf and split it when full; a subtree
//! that grows lopsided (one child holding more than [`ALPHA`] of it) or shrinks
//! below half a leaf is rebuilt by median splits, which keeps depth logarithmic at
//! an amortised O(log² n) per update (the scapegoat-tree argument).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use alloy_primitives::Address;
use foldhash::fast::RandomState;

use crate::benchmarks::{BENCHMARK_COUNT, Benchmarks};
use crate::error::BookError;
use crate::matching::{MatchContext, OrderFields, check_match, durations_agree};
use crate::order::{IdentityLevel, NetFlags, Order, OrderId, OrderType};

/// Orders per leaf before it splits. 64 entries of 160 bytes scan in about a
/// microsecond and keep the tree's own bookkeeping under 5% of the book.
pub const DEFAULT_LEAF_CAPACITY: usize = 64;
/// A subtree whose larger child holds more than this share of it is rebuilt.
const ALPHA: f64 = 0.8;
/// How much more a spread of price counts than the same spread of a benchmark when
/// choosing where to split. Measured on the bench's market: 1 (plain k-d tree) needs
/// 7× more leaf visits per search than 32; 16–64 perform alike.
const PRICE_WEIGHT: f64 = 32.0;
/// Dimensions the tree splits on: the benchmarks, then price, then duration.
const DIMS: usize = BENCHMARK_COUNT + 2;
const DIM_PRICE: usize = BENCHMARK_COUNT;
const DIM_DURATION: usize = BENCHMARK_COUNT + 1;
const NONE: u32 = u32::MAX;

type FastMap<K, V> = HashMap<K, V, RandomState>;

/// An order as the book keeps it: what matching reads, with addresses interned.
/// The tag is not kept (it never decides a match); full orders live in the DWH.
#[derive(Clone, Debug)]
struct Entry {
    price: u128,
    benchmarks: Benchmarks,
    id: OrderId,
    duration: u64,
    author: u32,
    /// 0 when the order names none.
    counterparty: u32,
    /// 0 when the order names none.
    blacklist: u32,
    netflags: NetFlags,
    identity_level: IdentityLevel,
}

impl Entry {
    fn dim(&self, dim: usize) -> u128 {
        match dim {
            DIM_PRICE => self.price,
            DIM_DURATION => u128::from(self.duration),
            d => u128::from(self.benchmarks.0[d]),
        }
    }
}

/// Splits `entries` (more than one) in place on `dim`: the left part is everything
/// below the returned split key, which starts the right part at the returned index.
/// Equal values stay together when that costs at most a 30/70 balance, so that a
/// kind of hardware is not cut in two; otherwise the median by (value, id).
fn split_point(entries: &mut [Entry], dim: usize) -> ((u128, OrderId), usize) {
    let n = entries.len();
    let mid = n / 2;
    entries.select_nth_unstable_by_key(mid, |e| (e.dim(dim), e.id));
    let v = entries[mid].dim(dim);
    let below = entries.iter().filter(|e| e.dim(dim) < v).count();
    let upto = below + entries.iter().filter(|e| e.dim(dim) == v).count();
    let (lo, hi) = (n * 3 / 10, n - n * 3 / 10);
    let candidates = [(below, (v, 0)), (upto, (v.saturating_add(1), 0))];
    let best = candidates
        .into_iter()
        .filter(|&(at, _)| at >= lo.max(1) && at <= hi.min(n - 1))
        .min_by_key(|&(at, _)| at.abs_diff(mid));
    match best {
        Some((at, split)) => {
            let mut i = 0;
            for j in 0..n {
                if (entries[j].dim(dim), entries[j].id) < split {
                    entries.swap(i, j);
                    i += 1;
                }
            }
            debug_assert_eq!(i, at);
            (split, at)
        }
        None => ((v, entries[mid].id), mid),
    }
}

/// A search's heap item: (rank, subtree or match, node, position in the leaf).
type HeapItem = ((u128, OrderId), u8, u32, u32);

/// Where an order ranks among its side: by price (cheapest ask first, best-paying
/// bid first), then by id. The search returns orders in this order.
fn rank(side: OrderType, e: &Entry) -> (u128, OrderId) {
    let key = match side {
        OrderType::Ask => e.price,
        OrderType::Bid => u128::MAX - e.price,
    };
    (key, e.id)
}

/// An [`Entry`] seen as an order, so that the book judges it with [`check_match`].
struct View<'a> {
    entry: &'a Entry,
    order_type: OrderType,
    addresses: &'a Interner,
}

impl OrderFields for View<'_> {
    fn id(&self) -> OrderId {
        self.entry.id
    }
    fn order_type(&self) -> OrderType {
        self.order_type
    }
    fn author(&self) -> Address {
        self.addresses.get(self.entry.author)
    }
    fn counterparty(&self) -> Option<Address> {
        self.addresses.get_opt(self.entry.counterparty)
    }
    fn duration(&self) -> u64 {
        self.entry.duration
    }
    fn price(&self) -> u128 {
        self.entry.price
    }
    fn netflags(&self) -> NetFlags {
        self.entry.netflags
    }
    fn identity_level(&self) -> IdentityLevel {
        self.entry.identity_level
    }
    fn blacklist(&self) -> Option<Address> {
        self.addresses.get_opt(self.entry.blacklist)
    }
    fn benchmarks(&self) -> &Benchmarks {
        &self.entry.benchmarks
    }
}

/// Addresses by small index, reference-counted so that the table shrinks with the
/// book. Index 0 means "no address".
#[derive(Debug, Default)]
struct Interner {
    index: FastMap<Address, u32>,
    /// (address, references); slot 0 is the "none" sentinel.
    slots: Vec<(Address, u32)>,
    free: Vec<u32>,
}

impl Interner {
    fn new() -> Self {
        Interner {
            slots: vec![(Address::ZERO, 0)],
            ..Default::default()
        }
    }

    fn intern(&mut self, address: Option<Address>) -> u32 {
        let Some(address) = address else { return 0 };
        let slots = &mut self.slots;
        let free = &mut self.free;
        let i = *self.index.entry(address).or_insert_with(|| {
            if let Some(i) = free.pop() {
                slots[i as usize] = (address, 0);
                i
            } else {
                slots.push((address, 0));
                (slots.len() - 1) as u32
            }
        });
        self.slots[i as usize].1 += 1;
        i
    }

    fn release(&mut self, i: u32) {
        if i == 0 {
            return;
        }
        let slot = &mut self.slots[i as usize];
        slot.1 -= 1;
        if slot.1 == 0 {
            self.index.remove(&slot.0);
            self.free.push(i);
        }
    }

    fn get(&self, i: u32) -> Address {
        self.slots[i as usize].0
    }

    fn get_opt(&self, i: u32) -> Option<Address> {
        (i != 0).then(|| self.get(i))
    }
}

/// What every order below a node has in common, as ranges.
#[derive(Clone, Debug)]
struct Bounds {
    bench_min: [u64; BENCHMARK_COUNT],
    bench_max: [u64; BENCHMARK_COUNT],
    price_min: u128,
    price_max: u128,
    duration_min: u64,
    duration_max: u64,
    flags_or: u8,
    flags_and: u8,
    /// The lowest identity level that any order below requires of its counterparty.
    level_min: IdentityLevel,
}

impl Bounds {
    const EMPTY: Bounds = Bounds {
        bench_min: [u64::MAX; BENCHMARK_COUNT],
        bench_max: [0; BENCHMARK_COUNT],
        price_min: u128::MAX,
        price_max: 0,
        duration_min: u64::MAX,
        duration_max: 0,
        flags_or: 0,
        flags_and: NetFlags::ALL.bits(),
        level_min: IdentityLevel::Professional,
    };

    fn of(entries: &[Entry]) -> Bounds {
        let mut b = Bounds::EMPTY;
        for e in entries {
            b.add(e);
        }
        b
    }

    fn add(&mut self, e: &Entry) {
        for i in 0..BENCHMARK_COUNT {
            self.bench_min[i] = self.bench_min[i].min(e.benchmarks.0[i]);
            self.bench_max[i] = self.bench_max[i].max(e.benchmarks.0[i]);
        }
        self.price_min = self.price_min.min(e.price);
        self.price_max = self.price_max.max(e.price);
        self.duration_min = self.duration_min.min(e.duration);
        self.duration_max = self.duration_max.max(e.duration);
        self.flags_or |= e.netflags.bits();
        self.flags_and &= e.netflags.bits();
        self.level_min = self.level_min.min(e.identity_level);
    }

    fn merge(a: &Bounds, b: &Bounds) -> Bounds {
        let mut m = a.clone();
        for i in 0..BENCHMARK_COUNT {
            m.bench_min[i] = m.bench_min[i].min(b.bench_min[i]);
            m.bench_max[i] = m.bench_max[i].max(b.bench_max[i]);
        }
        m.price_min = m.price_min.min(b.price_min);
        m.price_max = m.price_max.max(b.price_max);
        m.duration_min = m.duration_min.min(b.duration_min);
        m.duration_max = m.duration_max.max(b.duration_max);
        m.flags_or |= b.flags_or;
        m.flags_and &= b.flags_and;
        m.level_min = m.level_min.min(b.level_min);
        m
    }

    fn range(&self, dim: usize) -> (u128, u128) {
        match dim {
            DIM_PRICE => (self.price_min, self.price_max),
            DIM_DURATION => (self.duration_min.into(), self.duration_max.into()),
            d => (self.bench_min[d].into(), self.bench_max[d].into()),
        }
    }

    /// The dimension to split on: the widest spread in log scale (benchmarks span
    /// units from cores to bytes), with price's spread weighted by [`PRICE_WEIGHT`].
    /// Boxes of different kinds differ by factors of two or more in some benchmark,
    /// and those splits win, so that a subtree holds one kind of box and its bounds
    /// prune whole kinds; within a kind the benchmarks differ by measurement noise,
    /// price wins, and leaves become price slices that a search walks cheapest first.
    fn split_dim(&self) -> usize {
        let log = |v: u128| (v as f64 + 1.0).log2();
        let spread = |d: usize| {
            let (lo, hi) = self.range(d);
            log(hi) - log(lo)
        };
        (0..DIMS)
            .map(|d| {
                (
                    d,
                    spread(d) * if d == DIM_PRICE { PRICE_WEIGHT } else { 1.0 },
                )
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(DIM_PRICE, |(d, _)| d)
    }
}

#[derive(Debug)]
enum Kind {
    Leaf(Vec<Entry>),
    Inner {
        left: u32,
        right: u32,
        dim: u8,
        /// Orders below (value, id) go left.
        split: (u128, OrderId),
    },
}

#[derive(Debug)]
struct Node {
    parent: u32,
    count: u32,
    bounds: Bounds,
    kind: Kind,
}

/// A search, with what it compares against computed once.
struct Query {
    /// The side searched (the type of the orders looked for).
    side: OrderType,
    price: u128,
    duration: u64,
    netflags: NetFlags,
    benchmarks: [u64; BENCHMARK_COUNT],
    /// The benchmarks that can rule an order out: for a bid, those it asks for (a
    /// bid names 2 to 6 of 13 typically); for an ask, all of them.
    dims: Vec<usize>,
    /// The query author's identity level.
    level: IdentityLevel,
}

impl Query {
    fn new(order: &impl OrderFields, side: OrderType, ctx: &impl MatchContext) -> Self {
        let benchmarks = *order.benchmarks().as_array();
        let dims = (0..BENCHMARK_COUNT)
            .filter(|&i| side == OrderType::Bid || benchmarks[i] > 0)
            .collect();
        Query {
            side,
            price: order.price(),
            duration: order.duration(),
            netflags: order.netflags(),
            benchmarks,
            dims,
            level: ctx.identity_level(order.author()),
        }
    }

    /// False when no order below a node with these bounds can match. Only numeric
    /// rules prune; parties and lists are checked per order.
    fn admits(&self, node: &Node) -> bool {
        let b = &node.bounds;
        let d = self.duration;
        if node.count == 0 || b.level_min > self.level {
            return false;
        }
        match self.side {
            // Asks for a bid.
            OrderType::Ask => {
                b.price_min <= self.price
                    && self.netflags.bits() & !b.flags_or == 0
                    && if d == 0 {
                        b.duration_min == 0
                    } else {
                        b.duration_max >= d
                    }
                    && self
                        .dims
                        .iter()
                        .all(|&i| b.bench_max[i] >= self.benchmarks[i])
            }
            // Bids for an ask.
            OrderType::Bid => {
                b.price_max >= self.price
                    && b.flags_and & !self.netflags.bits() == 0
                    && if d == 0 {
                        b.duration_min == 0
                    } else {
                        b.duration_max > 0 && b.duration_min <= d
                    }
                    && self
                        .dims
                        .iter()
                        .all(|&i| b.bench_min[i] <= self.benchmarks[i])
            }
        }
    }

    /// The numeric rules for one entry, without the view and context look-ups of
    /// [`check_match`], which confirms every entry that passes.
    fn passes_numeric(&self, e: &Entry) -> bool {
        match self.side {
            OrderType::Ask => {
                durations_agree(self.duration, e.duration)
                    && e.netflags.covers(self.netflags)
                    && self
                        .dims
                        .iter()
                        .all(|&i| e.benchmarks.0[i] >= self.benchmarks[i])
            }
            OrderType::Bid => {
                durations_agree(e.duration, self.duration)
                    && self.netflags.covers(e.netflags)
                    && self
                        .dims
                        .iter()
                        .all(|&i| e.benchmarks.0[i] <= self.benchmarks[i])
            }
        }
    }

    /// True when the entry's price is out of reach; entries after it in its leaf
    /// are too (leaves are sorted by rank).
    fn priced_out(&self, e: &Entry) -> bool {
        match self.side {
            OrderType::Ask => e.price > self.price,
            OrderType::Bid => e.price < self.price,
        }
    }
}

/// One side of the book.
#[derive(Debug)]
struct Tree {
    /// The type of the orders stored here.
    side: OrderType,
    nodes: Vec<Node>,
    free: Vec<u32>,
    root: u32,
    /// The leaf each order sits in.
    location: FastMap<OrderId, u32>,
    leaf_capacity: usize,
}

impl Tree {
    fn new(side: OrderType, leaf_capacity: usize) -> Self {
        Tree {
            side,
            nodes: vec![Node {
                parent: NONE,
                count: 0,
                bounds: Bounds::EMPTY,
                kind: Kind::Leaf(Vec::new()),
            }],
            free: Vec::new(),
            root: 0,
            location: FastMap::default(),
            leaf_capacity,
        }
    }

    fn len(&self) -> usize {
        self.location.len()
    }

    fn insert(&mut self, entry: Entry) {
        let side = self.side;
        let mut path = Vec::with_capacity(32);
        let mut n = self.root;
        loop {
            let node = &mut self.nodes[n as usize];
            node.count += 1;
            node.bounds.add(&entry);
            match &mut node.kind {
                Kind::Inner {
                    left,
                    right,
                    dim,
                    split,
                } => {
                    path.push(n);
                    n = if (entry.dim(usize::from(*dim)), entry.id) < *split {
                        *left
                    } else {
                        *right
                    };
                }
                Kind::Leaf(entries) => {
                    if entries.len() == entries.capacity() {
                        // Grow leaves by an eighth, not by doubling: leaves are most of
                        // the book's memory and doubling would leave a third of it unused.
                        entries.reserve_exact(entries.len() / 8 + 1);
                    }
                    let at = entries.partition_point(|e| rank(side, e) < rank(side, &entry));
                    self.location.insert(entry.id, n);
                    entries.insert(at, entry);
                    break;
                }
            }
        }
        let leaf_len = self.nodes[n as usize].count as usize;
        if leaf_len > self.leaf_capacity {
            self.rebuild(n);
        }
        if let Some(&top) = path.iter().find(|&&p| self.lopsided(p)) {
            self.rebuild(top);
        }
    }

    fn remove(&mut self, id: OrderId) -> Option<Entry> {
        let leaf = self.location.remove(&id)?;
        let node = &mut self.nodes[leaf as usize];
        let Kind::Leaf(entries) = &mut node.kind else {
            unreachable!("location points at a leaf");
        };
        let pos = entries
            .iter()
            .position(|e| e.id == id)
            .expect("a located order is in its leaf");
        let entry = entries.remove(pos);
        if entries.capacity() > entries.len() + entries.len() / 4 + 4 {
            entries.shrink_to(entries.len() + entries.len() / 8);
        }
        node.bounds = Bounds::of(entries);
        node.count -= 1;
        let mut path = Vec::with_capacity(32);
        let mut p = node.parent;
        while p != NONE {
            path.push(p);
            let Kind::Inner { left, right, .. } = self.nodes[p as usize].kind else {
                unreachable!("a parent is an inner node");
            };
            let bounds = Bounds::merge(
                &self.nodes[left as usize].bounds,
                &self.nodes[right as usize].bounds,
            );
            let node = &mut self.nodes[p as usize];
            node.bounds = bounds;
            node.count -= 1;
            p = node.parent;
        }
        // The highest ancestor that is small enough to be a leaf, or lopsided.
        let small = self.leaf_capacity / 2;
        if let Some(&top) = path
            .iter()
            .rev()
            .find(|&&p| self.nodes[p as usize].count as usize <= small || self.lopsided(p))
        {
            self.rebuild(top);
        }
        Some(entry)
    }

    fn lopsided(&self, n: u32) -> bool {
        let node = &self.nodes[n as usize];
        let Kind::Inner { left, right, .. } = node.kind else {
            return false;
        };
        let count = node.count as usize;
        let larger = self.nodes[left as usize]
            .count
            .max(self.nodes[right as usize].count);
        count >= 4 * self.leaf_capacity && f64::from(larger) > ALPHA * count as f64
    }

    /// Rebuilds the subtree at `n` in place, balanced, by median splits.
    fn rebuild(&mut self, n: u32) {
        let mut entries = Vec::with_capacity(self.nodes[n as usize].count as usize);
        self.drain(n, &mut entries);
        let parent = self.nodes[n as usize].parent;
        self.build(n, parent, entries);
    }

    /// Moves every entry below `n` into `out` and frees the nodes below `n`.
    fn drain(&mut self, n: u32, out: &mut Vec<Entry>) {
        match std::mem::replace(&mut self.nodes[n as usize].kind, Kind::Leaf(Vec::new())) {
            Kind::Leaf(mut entries) => out.append(&mut entries),
            Kind::Inner { left, right, .. } => {
                for child in [left, right] {
                    self.drain(child, out);
                    self.free.push(child);
                }
            }
        }
    }

    fn alloc(&mut self) -> u32 {
        self.free.pop().unwrap_or_else(|| {
            self.nodes.push(Node {
                parent: NONE,
                count: 0,
                bounds: Bounds::EMPTY,
                kind: Kind::Leaf(Vec::new()),
            });
            (self.nodes.len() - 1) as u32
        })
    }

    /// Builds a balanced subtree of `entries` into node `slot`.
    fn build(&mut self, slot: u32, parent: u32, mut entries: Vec<Entry>) {
        let bounds = Bounds::of(&entries);
        let count = entries.len() as u32;
        if entries.len() <= self.leaf_capacity {
            entries.shrink_to_fit();
            let side = self.side;
            entries.sort_unstable_by_key(|e| rank(side, e));
            for e in &entries {
                self.location.insert(e.id, slot);
            }
            self.nodes[slot as usize] = Node {
                parent,
                count,
                bounds,
                kind: Kind::Leaf(entries),
            };
            return;
        }
        let dim = bounds.split_dim();
        let (split, at) = split_point(&mut entries, dim);
        let right_entries = entries.split_off(at);
        let (left, right) = (self.alloc(), self.alloc());
        self.nodes[slot as usize] = Node {
            parent,
            count,
            bounds,
            kind: Kind::Inner {
                left,
                right,
                dim: dim as u8,
                split,
            },
        };
        self.build(left, slot, entries);
        self.build(right, slot, right_entries);
    }

    /// The best key any order below `bounds` can have.
    fn best_key(&self, bounds: &Bounds) -> u128 {
        match self.side {
            OrderType::Ask => bounds.price_min,
            OrderType::Bid => u128::MAX - bounds.price_max,
        }
    }

    /// The `k` best matches for `order`, best first, ties by id.
    ///
    /// Best-first over a heap of (rank, what, node, position): a subtree is keyed by
    /// the best price below it, a found match by its own rank. Leaves are sorted by
    /// rank, so a leaf works as a cursor: it offers its next match only once the
    /// previous one has been taken, and its orders past the query's price are never
    /// looked at.
    fn best<Q: OrderFields>(
        &self,
        order: &Q,
        k: usize,
        ctx: &impl MatchContext,
        addresses: &Interner,
    ) -> Vec<OrderId> {
        const SUBTREE: u8 = 0;
        const MATCH: u8 = 1;
        let mut out = Vec::with_capacity(k.min(64));
        if k == 0 {
            return out;
        }
        let q = Query::new(order, self.side, ctx);
        let next_match = |leaf: u32, entries: &[Entry], from: usize| {
            for (i, entry) in entries.iter().enumerate().skip(from) {
                if q.priced_out(entry) {
                    return None;
                }
                if !q.passes_numeric(entry) {
                    continue;
                }
                let view = View {
                    entry,
                    order_type: self.side,
                    addresses,
                };
                let confirmed = match self.side {
                    OrderType::Ask => check_match(order, &view, ctx),
                    OrderType::Bid => check_match(&view, order, ctx),
                };
                if confirmed.is_ok() {
                    return Some(Reverse((rank(self.side, entry), MATCH, leaf, i as u32)));
                }
            }
            None
        };
        // Subtrees sort before matches of the same rank, so none is passed over.
        let mut heap: BinaryHeap<Reverse<HeapItem>> = BinaryHeap::with_capacity(64);
        let root = &self.nodes[self.root as usize];
        if q.admits(root) {
            heap.push(Reverse((
                (self.best_key(&root.bounds), 0),
                SUBTREE,
                self.root,
                0,
            )));
        }
        while let Some(Reverse(((_, id), what, n, pos))) = heap.pop() {
            match &self.nodes[n as usize].kind {
                Kind::Leaf(entries) if what == MATCH => {
                    out.push(id);
                    if out.len() == k {
                        break;
                    }
                    heap.extend(next_match(n, entries, pos as usize + 1));
                }
                Kind::Leaf(entries) => {
                    heap.extend(next_match(n, entries, 0));
                }
                Kind::Inner { left, right, .. } => {
                    for child in [*left, *right] {
                        let node = &self.nodes[child as usize];
                        if q.admits(node) {
                            let key = (self.best_key(&node.bounds), 0);
                            heap.push(Reverse((key, SUBTREE, child, 0)));
                        }
                    }
                }
            }
        }
        out
    }

    /// Checks the tree's structural invariants; an error names the first broken one.
    fn check(&self) -> Result<(), String> {
        let mut seen = 0usize;
        self.check_node(self.root, NONE, &mut seen)?;
        if seen != self.location.len() {
            return Err(format!(
                "{seen} entries in leaves, {} located",
                self.location.len()
            ));
        }
        Ok(())
    }

    fn check_node(&self, n: u32, parent: u32, seen: &mut usize) -> Result<(), String> {
        let node = &self.nodes[n as usize];
        if node.parent != parent {
            return Err(format!("node {n}: parent {} != {parent}", node.parent));
        }
        let (count, bounds) = match &node.kind {
            Kind::Leaf(entries) => {
                for (pos, e) in entries.iter().enumerate() {
                    if self.location.get(&e.id) != Some(&n) {
                        return Err(format!("order {} at ({n},{pos}) mislocated", e.id));
                    }
                }
                if !entries.is_sorted_by_key(|e| rank(self.side, e)) {
                    return Err(format!("leaf {n} is not sorted"));
                }
                *seen += entries.len();
                (entries.len() as u32, Bounds::of(entries))
            }
            Kind::Inner { left, right, .. } => {
                self.check_node(*left, n, seen)?;
                self.check_node(*right, n, seen)?;
                let (l, r) = (&self.nodes[*left as usize], &self.nodes[*right as usize]);
                (l.count + r.count, Bounds::merge(&l.bounds, &r.bounds))
            }
        };
        if count != node.count {
            return Err(format!("node {n}: count {} != {count}", node.count));
        }
        // Bounds may only be looser than the truth after an insert, never tighter.
        let b = &node.bounds;
        let covers = (0..BENCHMARK_COUNT).all(|i| {
            b.bench_min[i] <= bounds.bench_min[i] && b.bench_max[i] >= bounds.bench_max[i]
        }) && b.price_min <= bounds.price_min
            && b.price_max >= bounds.price_max
            && b.duration_min <= bounds.duration_min
            && b.duration_max >= bounds.duration_max
            && b.flags_or & bounds.flags_or == bounds.flags_or
            && b.flags_and & bounds.flags_and == b.flags_and
            && b.level_min <= bounds.level_min;
        if !covers {
            return Err(format!("node {n}: bounds do not cover its orders"));
        }
        Ok(())
    }

    fn depth(&self, n: u32) -> usize {
        match &self.nodes[n as usize].kind {
            Kind::Leaf(_) => 1,
            Kind::Inner { left, right, .. } => 1 + self.depth(*left).max(self.depth(*right)),
        }
    }
}

/// Open asks and bids, indexed for matching. Pure data structure: no I/O, no clock.
#[derive(Debug)]
pub struct OrderBook {
    asks: Tree,
    bids: Tree,
    addresses: Interner,
}

impl Default for OrderBook {
    fn default() -> Self {
        Self::new()
    }
}

impl OrderBook {
    pub fn new() -> Self {
        Self::with_leaf_capacity(DEFAULT_LEAF_CAPACITY)
    }

    /// A book whose leaves split above `leaf_capacity` orders (at least 2). Small
    /// leaves exercise the tree's reshaping in tests; the default suits production.
    pub fn with_leaf_capacity(leaf_capacity: usize) -> Self {
        let leaf_capacity = leaf_capacity.max(2);
        OrderBook {
            asks: Tree::new(OrderType::Ask, leaf_capacity),
            bids: Tree::new(OrderType::Bid, leaf_capacity),
            addresses: Interner::new(),
        }
    }

    fn tree(&self, side: OrderType) -> &Tree {
        match side {
            OrderType::Ask => &self.asks,
            OrderType::Bid => &self.bids,
        }
    }

    /// Adds an open order. Refuses an invalid order and an id already present.
    pub fn insert(&mut self, order: &Order) -> Result<(), BookError> {
        order.validate().map_err(|source| BookError::Invalid {
            id: order.id,
            source,
        })?;
        if self.contains(order.id) {
            return Err(BookError::Duplicate(order.id));
        }
        let entry = Entry {
            price: order.price,
            benchmarks: order.benchmarks,
            id: order.id,
            duration: order.duration,
            author: self.addresses.intern(Some(order.author)),
            counterparty: self.addresses.intern(order.counterparty),
            blacklist: self.addresses.intern(order.blacklist),
            netflags: order.netflags,
            identity_level: order.identity_level,
        };
        match order.order_type {
            OrderType::Ask => self.asks.insert(entry),
            OrderType::Bid => self.bids.insert(entry),
        }
        Ok(())
    }

    /// Removes an order (cancelled, or taken by a deal).
    pub fn cancel(&mut self, id: OrderId) -> Result<(), BookError> {
        let entry = self
            .asks
            .remove(id)
            .or_else(|| self.bids.remove(id))
            .ok_or(BookError::Unknown(id))?;
        for a in [entry.author, entry.counterparty, entry.blacklist] {
            self.addresses.release(a);
        }
        Ok(())
    }

    pub fn contains(&self, id: OrderId) -> bool {
        self.asks.location.contains_key(&id) || self.bids.location.contains_key(&id)
    }

    /// Open orders of one type.
    pub fn len_of(&self, side: OrderType) -> usize {
        self.tree(side).len()
    }

    pub fn len(&self) -> usize {
        self.asks.len() + self.bids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `k` cheapest asks that match `bid`, cheapest first, ties by id: exactly
    /// what [`crate::scan_best_asks`] answers over the same asks.
    pub fn best_asks(
        &self,
        bid: &impl OrderFields,
        k: usize,
        ctx: &impl MatchContext,
    ) -> Result<Vec<OrderId>, BookError> {
        if bid.order_type() != OrderType::Bid {
            return Err(BookError::WrongQueryType(bid.id()));
        }
        Ok(self.asks.best(bid, k, ctx, &self.addresses))
    }

    /// The `k` best-paying bids that match `ask`, highest price first, ties by id.
    pub fn best_bids(
        &self,
        ask: &impl OrderFields,
        k: usize,
        ctx: &impl MatchContext,
    ) -> Result<Vec<OrderId>, BookError> {
        if ask.order_type() != OrderType::Ask {
            return Err(BookError::WrongQueryType(ask.id()));
        }
        Ok(self.bids.best(ask, k, ctx, &self.addresses))
    }

    /// The open orders of one side as (price, benchmarks), in no particular order: what
    /// market statistics read ([`crate::MarketStats`]). O(n), no allocation.
    pub fn open_orders(&self, side: OrderType) -> impl Iterator<Item = (u128, &Benchmarks)> {
        self.tree(side)
            .nodes
            .iter()
            .filter_map(|node| match &node.kind {
                Kind::Leaf(entries) => Some(entries),
                Kind::Inner { .. } => None,
            })
            .flatten()
            .map(|e| (e.price, &e.benchmarks))
    }

    /// Depth of the deeper side's tree (1 for a single leaf); for tests and reports.
    pub fn depth(&self) -> usize {
        self.asks
            .depth(self.asks.root)
            .max(self.bids.depth(self.bids.root))
    }

    /// Checks the index's internal invariants (counts, bounds, locations, parents).
    /// For tests; O(n).
    pub fn check_invariants(&self) -> Result<(), String> {
        self.asks.check()?;
        self.bids.check()
    }
}
