//! The layout of the primary journal's sled index (index format 5): one key per *group* of
//! entries of one extent, instead of one key per entry.
//!
//! sled keeps at most 16 keys in a leaf and writes each leaf whole, so every key costs it on
//! the order of 150 bytes on disk and about half a KiB of memory whatever its size: at 4 KiB
//! writes one key per entry made the index 4-6 % of the old data. A group holds the entries of
//! one extent over a stretch of time, from any number of flushes and segments: a flush adds
//! its entries to the extent's latest group until that holds [`GROUP_MAX`], so writes
//! scattered over the volume share keys too, once their extents are written again.
//!
//! Key: `extent u64 | ts u64 | lo u8` (big endian) of the group's first entry. The groups of
//! one extent never overlap in time: every entry of a group is at or after its key and before
//! the next group's key. So the first entry after `t` is in the group with the greatest key at
//! or before `(t, 255)`, or in one after it, and groups read in key order give entries in
//! `(ts, lo)` order. Keys never change: an entry is added to the group whose span it falls in
//! ([`place`]), and a merge that drops entries keeps the key.
//!
//! Value: `count, lowest segment` (LEB128 varints), then per entry, ordered by `(ts, lo)`: the
//! stamp's distance from the entry before (the first: from the key's stamp), `lo u8, n u8`
//! (the run of the extent's chunks), then varints `segment - lowest, port, seq, offset, record
//! length, chunk index`.

use super::primary::{Loc, EXTENT_CHUNKS};
use super::record::push_var;
use integer_encoding::VarInt;

/// Bytes of an index key: `(extent, ts, run start)`.
pub(crate) const KEY_LEN: usize = 17;

/// Most entries appends put in one group: bounds what a lookup decodes per key and what a
/// flush rewrites when it adds to a group.
pub(crate) const GROUP_MAX: usize = 32;

/// Most entries a stored group may hold: entries that fall within a group's span (another
/// port's, flushed later) join it past `GROUP_MAX`; at this many it is split. More is
/// corruption.
const GROUP_LIMIT: usize = 4096;

/// One entry's run of one extent, as the index holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Indexed {
    pub extent: u64,
    pub ts: u64,
    pub port: u64,
    pub seq: u64,
    /// Where its chunks are; `lo..lo + n` is the run of the extent's chunks.
    pub loc: Loc,
}

impl Indexed {
    /// Order of entries within an extent.
    pub(crate) fn order(&self) -> (u64, u64, u8) {
        (self.extent, self.ts, self.loc.lo)
    }
}

/// Index key of a group whose first entry is the run starting at chunk `lo` of `extent`,
/// stamped `ts`.
pub(crate) fn index_key(extent: u64, ts: u64, lo: u8) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[0..8].copy_from_slice(&extent.to_be_bytes());
    k[8..16].copy_from_slice(&ts.to_be_bytes());
    k[16] = lo;
    k
}

/// `(extent, ts, lo)` of an index key.
pub(crate) fn parse_key(k: &[u8]) -> Option<(u64, u64, u8)> {
    if k.len() != KEY_LEN {
        return None;
    }
    let be = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
    Some((be(&k[0..8]), be(&k[8..16]), k[16]))
}

/// Key and value of one group. `items` must be one extent's, ordered by `(ts, lo)` without
/// repeats.
#[cfg(test)]
pub(crate) fn encode_group(items: &[Indexed]) -> ([u8; KEY_LEN], Vec<u8>) {
    let first = items[0];
    let key = index_key(first.extent, first.ts, first.loc.lo);
    (key, encode_value(first.ts, items))
}

/// The value of group `key` once it holds `items` (what is left of it after a merge, or more).
pub(crate) fn encode_group_keyed(key: &[u8; KEY_LEN], items: &[Indexed]) -> Vec<u8> {
    let key_ts = parse_key(key).map_or(0, |(_, ts, _)| ts);
    encode_value(key_ts, items)
}

fn encode_value(key_ts: u64, items: &[Indexed]) -> Vec<u8> {
    let base = items.iter().map(|i| i.loc.seg).min().unwrap_or(0);
    let mut v = Vec::with_capacity(4 + items.len() * 16);
    push_var(&mut v, items.len() as u64);
    push_var(&mut v, base);
    let mut prev = key_ts;
    for it in items {
        debug_assert_eq!(it.extent, items[0].extent);
        push_var(&mut v, it.ts - prev);
        prev = it.ts;
        v.push(it.loc.lo);
        v.push(it.loc.n);
        for x in [
            it.loc.seg - base,
            it.port,
            it.seq,
            it.loc.off,
            u64::from(it.loc.len),
            u64::from(it.loc.idx),
        ] {
            push_var(&mut v, x);
        }
    }
    v
}

/// The entries of one group, or `None` if the key or value is malformed: entries out of
/// order or before the key, runs of no chunks or past the extent's end, numbers out of
/// range, bytes left over.
pub(crate) fn decode_group(k: &[u8], v: &[u8]) -> Option<Vec<Indexed>> {
    let (extent, kts, klo) = parse_key(k)?;
    let mut rest = v;
    let var = |rest: &mut &[u8]| -> Option<u64> {
        let (x, used) = u64::decode_var(rest)?;
        *rest = rest.get(used..)?;
        Some(x)
    };
    let count = var(&mut rest)?;
    if count == 0 || count > GROUP_LIMIT as u64 {
        return None;
    }
    let base = var(&mut rest)?;
    let mut out = Vec::with_capacity(count as usize);
    let mut prev = (kts, klo);
    let mut at_ts = kts;
    for i in 0..count {
        let ts = at_ts.checked_add(var(&mut rest)?)?;
        let (&lo, r) = rest.split_first()?;
        let (&n, r) = r.split_first()?;
        rest = r;
        let seg = base.checked_add(var(&mut rest)?)?;
        let (port, seq, off) = (var(&mut rest)?, var(&mut rest)?, var(&mut rest)?);
        let len = u32::try_from(var(&mut rest)?).ok()?;
        let idx = u32::try_from(var(&mut rest)?).ok()?;
        let ok_order = if i == 0 {
            (ts, lo) >= prev
        } else {
            (ts, lo) > prev
        };
        if !ok_order || n == 0 || u64::from(lo) + u64::from(n) > EXTENT_CHUNKS {
            return None;
        }
        prev = (ts, lo);
        at_ts = ts;
        out.push(Indexed {
            extent,
            ts,
            port,
            seq,
            loc: Loc {
                seg,
                off,
                len,
                idx,
                lo,
                n,
            },
        });
    }
    rest.is_empty().then_some(out)
}

/// A decoded group: its key and entries.
pub(crate) type Group = ([u8; KEY_LEN], Vec<Indexed>);

/// What [`place`] decided: the groups to write (new or grown, each whole) and the entries that
/// were not in the index yet.
#[derive(Debug, Default)]
pub(crate) struct Placed {
    pub write: Vec<Group>,
    pub added: Vec<Indexed>,
}

/// Add `new` entries of one extent to its groups. `groups` are the extent's groups that can
/// take any of them, in key order: the one with the greatest key at or before the first new
/// entry (if any) and every later one up to the last new entry. An entry goes into the group
/// with the greatest key at or before it (so groups keep apart in time, and keys never change);
/// one past that group's last entry starts a new group, keyed by it, if the group holds
/// `GROUP_MAX` already, and one before every group starts a new group too. An entry the
/// index holds already (the same `(ts, lo)`) is not added again.
pub(crate) fn place(mut groups: Vec<Group>, mut new: Vec<Indexed>) -> Placed {
    new.sort_by_key(|i| (i.order(), i.loc.seg));
    new.dedup_by_key(|i| i.order());
    let key_of = |k: &[u8; KEY_LEN]| parse_key(k).map_or((0, 0), |(_, ts, lo)| (ts, lo));
    let mut dirty = vec![false; groups.len()];
    let mut out = Placed::default();
    for e in new {
        let at = (e.ts, e.loc.lo);
        // The group with the greatest key at or before the entry.
        let g = groups.partition_point(|(k, _)| key_of(k) <= at);
        if g == 0 {
            groups.insert(0, (index_key(e.extent, e.ts, e.loc.lo), vec![e]));
            dirty.insert(0, true);
            out.added.push(e);
            continue;
        }
        let gi = g - 1;
        let items = &mut groups[gi].1;
        let pos = items.partition_point(|i| (i.ts, i.loc.lo) < at);
        if items.get(pos).is_some_and(|i| (i.ts, i.loc.lo) == at) {
            continue;
        }
        out.added.push(e);
        if pos == items.len() && items.len() >= GROUP_MAX {
            groups.insert(g, (index_key(e.extent, e.ts, e.loc.lo), vec![e]));
            dirty.insert(g, true);
            continue;
        }
        items.insert(pos, e);
        dirty[gi] = true;
        if items.len() >= GROUP_LIMIT {
            // Only entries within the group's own span get it here: split it at its middle,
            // the upper half under the key of its first entry (between this key and the next).
            let upper = items.split_off(items.len() / 2);
            let k = index_key(upper[0].extent, upper[0].ts, upper[0].loc.lo);
            groups.insert(g, (k, upper));
            dirty.insert(g, true);
        }
    }
    out.write = groups
        .into_iter()
        .zip(dirty)
        .filter_map(|(g, d)| d.then_some(g))
        .collect();
    out
}

/// Cut entries into groups (keys and values) for an empty index: per extent, in `(ts, lo)`
/// order, a new group once `GROUP_MAX` entries are in one. A repeated `(extent, ts, lo)` is
/// kept once.
#[cfg(test)]
pub(crate) fn build_groups(mut items: Vec<Indexed>) -> Vec<([u8; KEY_LEN], Vec<u8>)> {
    items.sort_by_key(|i| (i.order(), i.loc.seg));
    items.dedup_by_key(|i| i.order());
    let mut out = Vec::new();
    let mut from = 0;
    for i in 1..=items.len() {
        let cut = items
            .get(i)
            .is_none_or(|it| it.extent != items[from].extent || i - from >= GROUP_MAX);
        if cut {
            out.push(encode_group(&items[from..i]));
            from = i;
        }
    }
    out
}

/// The entries of groups given in key order, in `(extent, ts, lo)` order, each with its
/// group's key. An entry is handed out once no group not yet read can hold an earlier one (a
/// group's entries are at or after its key); the groups of one extent keep apart in time, so
/// this holds one group at a time, and would hold the overlapping ones if they did not.
pub(crate) struct Ordered<I: Iterator> {
    groups: std::iter::Peekable<I>,
    held: std::collections::BinaryHeap<std::cmp::Reverse<Held>>,
}

#[derive(Debug, PartialEq, Eq)]
struct Held {
    order: (u64, u64, u8),
    item: Indexed,
    key: [u8; KEY_LEN],
}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order.cmp(&other.order)
    }
}

impl<I, E> Ordered<I>
where
    I: Iterator<Item = Result<Group, E>>,
{
    pub fn new(groups: I) -> Self {
        Ordered {
            groups: groups.peekable(),
            held: std::collections::BinaryHeap::new(),
        }
    }
}

impl<I, E> Iterator for Ordered<I>
where
    I: Iterator<Item = Result<Group, E>>,
{
    type Item = Result<(Indexed, [u8; KEY_LEN]), E>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let next_key = match self.groups.peek() {
                Some(Ok((k, _))) => parse_key(k),
                Some(Err(_)) => match self.groups.next() {
                    Some(Err(e)) => return Some(Err(e)),
                    _ => None,
                },
                None => None,
            };
            if let Some(std::cmp::Reverse(top)) = self.held.peek() {
                // Entries not read yet are at or after the next group's key.
                if next_key.is_none_or(|k| top.order < k) {
                    let std::cmp::Reverse(h) = self.held.pop()?;
                    return Some(Ok((h.item, h.key)));
                }
            }
            match self.groups.next()? {
                Ok((key, items)) => {
                    for item in items {
                        self.held.push(std::cmp::Reverse(Held {
                            order: item.order(),
                            item,
                            key,
                        }));
                    }
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn item(extent: u64, ts: u64, lo: u8, n: u8, seg: u64) -> Indexed {
        Indexed {
            extent,
            ts,
            port: ts % 3,
            seq: ts * 7,
            loc: Loc {
                seg,
                off: ts * 4200,
                len: 4168,
                idx: 0,
                lo,
                n,
            },
        }
    }

    fn arb_items() -> impl Strategy<Value = Vec<Indexed>> {
        proptest::collection::vec(
            (
                0u64..4,
                0u64..150_000,
                0u8..16,
                1u8..=16,
                1u64..3,
                any::<u64>(),
                any::<u64>(),
                any::<u32>(),
                any::<u32>(),
            ),
            1..200,
        )
        .prop_map(|v| {
            v.into_iter()
                .map(|(extent, ts, lo, n, seg, port, seq, len, idx)| Indexed {
                    extent,
                    ts,
                    port,
                    seq,
                    loc: Loc {
                        seg,
                        off: ts.wrapping_mul(31),
                        len,
                        idx,
                        lo,
                        n: n.min(16 - lo),
                    },
                })
                .collect()
        })
    }

    proptest! {
        /// Groups hold every entry once, decode to what was encoded, keep their bounds, and a
        /// value cut short or with a byte too many is no group.
        #[test]
        fn groups_round_trip(items in arb_items()) {
            let groups = build_groups(items.clone());
            let mut back = Vec::new();
            for (k, v) in &groups {
                let g = decode_group(k, v).expect("decodes");
                prop_assert!(g.len() <= GROUP_MAX);
                let (x, ts, lo) = parse_key(k).unwrap();
                prop_assert_eq!((g[0].extent, g[0].ts, g[0].loc.lo), (x, ts, lo));
                prop_assert_eq!(decode_group(k, &v[..v.len() - 1]), None);
                let mut long = v.clone();
                long.push(0);
                prop_assert_eq!(decode_group(k, &long), None);
                prop_assert_eq!(decode_group(&k[..KEY_LEN - 1], v), None);
                back.extend(g);
            }
            // A repeated `(extent, ts, lo)` is kept once, from its lowest segment.
            let mut want = items;
            want.sort_by_key(|i| (i.order(), i.loc.seg));
            want.dedup_by_key(|i| i.order());
            back.sort_by_key(|i| i.order());
            prop_assert_eq!(back, want);
        }

        /// Groups of several flushes, read in key order, come out in `(extent, ts, lo)` order.
        #[test]
        fn ordered_walk_sorts_interleaved_groups(flushes in proptest::collection::vec(arb_items(), 1..4)) {
            let mut all = std::collections::BTreeMap::new();
            let mut want = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for (f, items) in flushes.into_iter().enumerate() {
                // Each flush its own segment, and no entry in two flushes.
                let items: Vec<Indexed> = items
                    .into_iter()
                    .filter(|i| seen.insert(i.order()))
                    .map(|mut i| { i.loc.seg = f as u64; i })
                    .collect();
                want.extend(items.iter().copied());
                for (k, v) in build_groups(items) {
                    all.insert(k, v);
                }
            }
            want.sort_by_key(|i| i.order());
            let groups = all.iter().map(|(k, v)| Ok::<_, ()>((*k, decode_group(k, v).unwrap())));
            let got: Vec<Indexed> = Ordered::new(groups).map(|r| r.unwrap().0).collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn groups_are_cut_by_extent_and_size() {
        let mut items: Vec<Indexed> = (0..40).map(|t| item(1, 100 + t, 0, 1, 1)).collect();
        items.push(item(2, 100, 0, 1, 1));
        items.push(item(1, 1_000_000, 0, 1, 1));
        items.push(item(1, 150, 3, 1, 2));
        let g = build_groups(items);
        let sizes: Vec<usize> = g
            .iter()
            .map(|(k, v)| decode_group(k, v).unwrap().len())
            .collect();
        // Extent 1, of two segments and any span: 32 + 10; extent 2.
        assert_eq!(sizes, vec![32, 10, 1]);
        let second = decode_group(&g[1].0, &g[1].1).unwrap();
        assert_eq!(second.last().unwrap().loc.seg, 1);
        assert!(second.iter().any(|i| i.loc.seg == 2));
    }

    /// Entries before their key, out of order, or with impossible runs make no group.
    #[test]
    fn impossible_groups_are_rejected() {
        let t = 1_000_000;
        let (k, v) = encode_group(&[item(1, t, 2, 1, 1), item(1, t + 20, 0, 1, 1)]);
        assert_eq!(decode_group(&k, &v).unwrap().len(), 2);
        // The key claims a later run start for the first entry's stamp.
        assert_eq!(decode_group(&index_key(1, t, 3), &v), None);
        // A key earlier than its entries is fine (a merge dropped the first).
        let items = decode_group(&k, &v).unwrap();
        let early = index_key(1, t - 10, 0);
        let v1 = encode_group_keyed(&early, &items[1..]);
        assert_eq!(decode_group(&early, &v1).unwrap(), items[1..].to_vec());
        // Out of order (same stamp and run twice).
        let (k2, v2) = encode_group(&[item(1, t, 2, 1, 1), item(1, t, 2, 1, 1)]);
        assert_eq!(decode_group(&k2, &v2), None);
        // Runs of no chunks, or past the extent's end.
        let (k3, v3) = encode_group(&[item(1, t, 15, 2, 1)]);
        assert_eq!(decode_group(&k3, &v3), None);
        let (k4, v4) = encode_group(&[item(1, t, 3, 0, 1)]);
        assert_eq!(decode_group(&k4, &v4), None);
    }

    /// The groups `place_items` hands to [`place`] for new entries `new` of one extent: the
    /// last one keyed at or before the first, and those keyed up to the last.
    fn candidates(index: &BTreeMap<[u8; KEY_LEN], Vec<Indexed>>, new: &[Indexed]) -> Vec<Group> {
        let x = new[0].extent;
        let first = new.iter().map(|i| i.order()).min().unwrap();
        let last = new.iter().map(|i| i.order()).max().unwrap();
        let lo = index_key(x, first.1, first.2);
        let hi = index_key(x, last.1, last.2);
        let mut out: Vec<Group> = index
            .range(index_key(x, 0, 0)..=lo)
            .next_back()
            .map(|(k, g)| (*k, g.clone()))
            .into_iter()
            .collect();
        for (k, g) in index.range(lo..=hi) {
            if out.first().is_none_or(|f| f.0 != *k) {
                out.push((*k, g.clone()));
            }
        }
        out
    }

    proptest! {
        /// Flushes of entries in any stamp order (late ones, repeats, other segments) placed
        /// one after another: every entry is indexed once, keys never change, groups keep
        /// apart in time with every entry at or after its key, appends fill groups up to
        /// `GROUP_MAX`, and what is written decodes to what was placed.
        #[test]
        fn placed_groups_keep_apart_and_keys_stay(
            flushes in proptest::collection::vec(arb_items(), 1..6),
        ) {
            let mut index: BTreeMap<[u8; KEY_LEN], Vec<Indexed>> = BTreeMap::new();
            let mut want: BTreeMap<(u64, u64, u8), Indexed> = BTreeMap::new();
            for items in flushes {
                for x in 0..4u64 {
                    let new: Vec<Indexed> = items.iter().copied().filter(|i| i.extent == x).collect();
                    if new.is_empty() {
                        continue;
                    }
                    let before: BTreeSet<_> = index.keys().copied().collect();
                    let placed = place(candidates(&index, &new), new.clone());
                    let mut fresh: Vec<(u64, u64, u8)> = Vec::new();
                    for i in &new {
                        if !want.contains_key(&i.order()) && !fresh.contains(&i.order()) {
                            fresh.push(i.order());
                        }
                    }
                    let mut added: Vec<_> = placed.added.iter().map(|i| i.order()).collect();
                    added.sort();
                    fresh.sort();
                    prop_assert_eq!(&added, &fresh);
                    for i in &placed.added {
                        want.insert(i.order(), *i);
                    }
                    for (k, g) in placed.write {
                        let v = encode_group_keyed(&k, &g);
                        prop_assert_eq!(decode_group(&k, &v), Some(g.clone()));
                        if let Some(old) = index.get(&k) {
                            // A group only grows (its old entries stay in it).
                            prop_assert!(old.iter().all(|o| g.contains(o)));
                        }
                        index.insert(k, g);
                    }
                    // Old keys are all still there.
                    prop_assert!(before.iter().all(|k| index.contains_key(k)));
                }
            }
            let mut prev: Option<(u64, u64, u8)> = None;
            let mut got = Vec::new();
            for (k, g) in &index {
                let key = parse_key(k).unwrap();
                prop_assert!(!g.is_empty() && g.len() < GROUP_LIMIT);
                prop_assert!(g.iter().all(|i| i.order() >= key));
                if let Some(p) = prev {
                    if p.0 == key.0 {
                        prop_assert!(p < key, "groups overlap: {:?} then key {:?}", p, key);
                    }
                }
                prev = Some(g.last().unwrap().order());
                got.extend(g.iter().copied());
            }
            let want: Vec<Indexed> = want.into_values().collect();
            prop_assert_eq!(got, want);
        }
    }

    /// Late entries that all fall within one group's span grow it past `GROUP_MAX`; at
    /// `GROUP_LIMIT` it splits, the upper half under a new key within the old span.
    #[test]
    fn a_group_full_of_late_entries_splits() {
        let first = vec![item(3, 0, 0, 1, 1), item(3, 1_000_000, 0, 1, 1)];
        let placed = place(Vec::new(), first);
        let mut index: BTreeMap<[u8; KEY_LEN], Vec<Indexed>> = placed.write.into_iter().collect();
        assert_eq!(index.len(), 1);
        let late: Vec<Indexed> = (1..=GROUP_LIMIT as u64)
            .map(|t| item(3, t, 0, 1, 2))
            .collect();
        let placed = place(candidates(&index, &late), late);
        assert_eq!(placed.added.len(), GROUP_LIMIT);
        for (k, g) in placed.write {
            index.insert(k, g);
        }
        assert_eq!(index.len(), 2);
        let groups: Vec<&Vec<Indexed>> = index.values().collect();
        assert!(groups.iter().all(|g| g.len() < GROUP_LIMIT));
        assert!(groups[0].last().unwrap().ts < groups[1][0].ts);
        assert_eq!(groups[0].len() + groups[1].len(), GROUP_LIMIT + 2);
    }

    /// Scattered writes that come back to an extent flush after flush share its group.
    #[test]
    fn later_flushes_append_to_the_extent_group() {
        let mut index: BTreeMap<[u8; KEY_LEN], Vec<Indexed>> = BTreeMap::new();
        for f in 0..40u64 {
            let new = vec![item(5, 1000 * f, (f % 16) as u8, 1, f)];
            let placed = place(candidates(&index, &new), new);
            assert_eq!(placed.added.len(), 1);
            for (k, g) in placed.write {
                index.insert(k, g);
            }
        }
        let sizes: Vec<usize> = index.values().map(|g| g.len()).collect();
        assert_eq!(sizes, vec![GROUP_MAX, 40 - GROUP_MAX]);
    }

    /// 4 KiB writes in sequence: a group of 16 entries takes about 16 bytes of value per
    /// entry (one of them the segment), and one key for them all.
    #[test]
    fn a_group_of_small_writes_is_small() {
        let items: Vec<Indexed> = (0..16u64)
            .map(|c| Indexed {
                extent: 9000,
                ts: 1_795_000_000_000_000 + c * 40,
                port: 2,
                seq: 300_000 + c,
                loc: Loc {
                    seg: 40,
                    off: (7 << 20) + c * 4170,
                    len: 4128,
                    idx: 0,
                    lo: c as u8,
                    n: 1,
                },
            })
            .collect();
        let g = build_groups(items);
        assert_eq!(g.len(), 1);
        assert!(g[0].1.len() <= 16 * 16, "{} bytes", g[0].1.len());
    }
}
