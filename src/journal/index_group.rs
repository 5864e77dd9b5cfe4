//! The layout of the primary journal's sled index (index format 4): one key per *group* of
//! entries of one extent, instead of one key per entry.
//!
//! sled keeps at most 16 keys in a leaf and writes each leaf whole, so every key costs it on
//! the order of 150 bytes on disk whatever its size: at 4 KiB writes one key per entry made
//! the index 4 % of the old data. A group holds up to [`GROUP_MAX`] entries of one extent,
//! from one index batch (one flush) and one segment, whose stamps lie within [`GROUP_SPAN`]
//! of the first one's.
//!
//! Key: `extent u64 | ts u64 | lo u8` (big endian) of the group's first entry: stamps are
//! unique per write, and the run start keeps apart records of one large write that share
//! their stamp. Every entry of the group is at or after its key `(ts, lo)` and at most
//! `GROUP_SPAN` after the key's stamp; a merge that drops entries keeps the key, so both stay
//! true. Groups of different flushes may interleave in time (ports flush on their own), so a
//! lookup for the first entry after `t` starts at the keys stamped `t + 1 - GROUP_SPAN` and
//! walks on until the next key is stamped after every answer it has.
//!
//! Value: `count, segment` (LEB128 varints), then per entry, ordered by `(ts, lo)`: the stamp's
//! distance from the entry before (the first: from the key's stamp), `lo u8, n u8` (the run of
//! the extent's chunks), then varints `port, seq, offset, record length, chunk index`.

use super::primary::{Loc, EXTENT_CHUNKS};
use super::record::push_var;
use integer_encoding::VarInt;

/// Bytes of an index key: `(extent, ts, run start)`.
pub(crate) const KEY_LEN: usize = 17;

/// Most stamp distance (microseconds) from a group's key to its entries. A lookup walks the
/// groups up to this far before its point, so a larger span means bigger groups under slow
/// writers but longer walks where one extent is written very often.
pub(crate) const GROUP_SPAN: u64 = 50_000;

/// Most entries a flush puts in one group: bounds what a lookup decodes per key.
pub(crate) const GROUP_MAX: usize = 32;

/// Most entries a stored group may hold (a group rebuilt from an older one and new entries at
/// open may pass `GROUP_MAX`); more is corruption.
const GROUP_LIMIT: u64 = 4096;

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
    fn order(&self) -> (u64, u64, u8) {
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

/// Key of the first entry where the first entry after `ts` in `extent` may be found: groups
/// keyed earlier hold only entries at or before `ts`.
pub(crate) fn walk_start(extent: u64, ts: u64) -> [u8; KEY_LEN] {
    index_key(extent, ts.saturating_add(1).saturating_sub(GROUP_SPAN), 0)
}

/// Key and value of one group. `items` must be one extent's, of one segment, ordered by
/// `(ts, lo)` without repeats, within `GROUP_SPAN` of the first (as [`build_groups`] makes
/// them).
pub(crate) fn encode_group(items: &[Indexed]) -> ([u8; KEY_LEN], Vec<u8>) {
    let first = items[0];
    let key = index_key(first.extent, first.ts, first.loc.lo);
    (key, encode_value(first.ts, items))
}

/// The value of group `key` once it holds only `items` (what is left of it after a merge).
pub(crate) fn encode_group_keyed(key: &[u8; KEY_LEN], items: &[Indexed]) -> Vec<u8> {
    let key_ts = parse_key(key).map_or(0, |(_, ts, _)| ts);
    encode_value(key_ts, items)
}

fn encode_value(key_ts: u64, items: &[Indexed]) -> Vec<u8> {
    let first = items[0];
    let mut v = Vec::with_capacity(4 + items.len() * 16);
    push_var(&mut v, items.len() as u64);
    push_var(&mut v, first.loc.seg);
    let mut prev = key_ts;
    for it in items {
        debug_assert_eq!((it.extent, it.loc.seg), (first.extent, first.loc.seg));
        push_var(&mut v, it.ts - prev);
        prev = it.ts;
        v.push(it.loc.lo);
        v.push(it.loc.n);
        for x in [
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
/// order, before the key or past its span, runs of no chunks or past the extent's end,
/// numbers out of range, bytes left over.
pub(crate) fn decode_group(k: &[u8], v: &[u8]) -> Option<Vec<Indexed>> {
    let (extent, kts, klo) = parse_key(k)?;
    let mut rest = v;
    let var = |rest: &mut &[u8]| -> Option<u64> {
        let (x, used) = u64::decode_var(rest)?;
        *rest = rest.get(used..)?;
        Some(x)
    };
    let count = var(&mut rest)?;
    if count == 0 || count > GROUP_LIMIT {
        return None;
    }
    let seg = var(&mut rest)?;
    let last_ts = kts.saturating_add(GROUP_SPAN);
    let mut out = Vec::with_capacity(count as usize);
    let mut prev = (kts, klo);
    let mut at_ts = kts;
    for i in 0..count {
        let ts = at_ts.checked_add(var(&mut rest)?)?;
        let (&lo, r) = rest.split_first()?;
        let (&n, r) = r.split_first()?;
        rest = r;
        let (port, seq, off) = (var(&mut rest)?, var(&mut rest)?, var(&mut rest)?);
        let len = u32::try_from(var(&mut rest)?).ok()?;
        let idx = u32::try_from(var(&mut rest)?).ok()?;
        let ok_order = if i == 0 {
            (ts, lo) >= prev
        } else {
            (ts, lo) > prev
        };
        if !ok_order || ts > last_ts || n == 0 || u64::from(lo) + u64::from(n) > EXTENT_CHUNKS {
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

/// Cut entries into groups (keys and values): per extent and segment, in `(ts, lo)` order,
/// a new group once `GROUP_MAX` entries are in one or an entry is stamped more than
/// `GROUP_SPAN` after its first. A repeated `(extent, ts, lo)` is kept once.
pub(crate) fn build_groups(mut items: Vec<Indexed>) -> Vec<([u8; KEY_LEN], Vec<u8>)> {
    // A repeat (the same write's run indexed twice) may name another segment: drop it first.
    items.sort_unstable_by_key(|i| (i.order(), i.loc.seg));
    items.dedup_by_key(|i| i.order());
    items.sort_by_key(|i| (i.extent, i.loc.seg, i.ts, i.loc.lo));
    let mut out = Vec::new();
    let mut from = 0;
    for i in 1..=items.len() {
        let cut = items.get(i).is_none_or(|it| {
            let first = &items[from];
            it.extent != first.extent
                || it.loc.seg != first.loc.seg
                || it.ts - first.ts > GROUP_SPAN
                || i - from >= GROUP_MAX
        });
        if cut {
            out.push(encode_group(&items[from..i]));
            from = i;
        }
    }
    out
}

/// The entries of groups given in key order, in `(extent, ts, lo)` order, each with its
/// group's key. Groups of one extent may interleave within `GROUP_SPAN`; an entry is handed
/// out once no group not yet read can hold an earlier one (a group's entries are at or after
/// its key), so only the groups that overlap are held at a time.
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

/// A decoded group: its key and entries.
pub(crate) type Group = ([u8; KEY_LEN], Vec<Indexed>);

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
                0u64..3 * GROUP_SPAN,
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
                prop_assert!(g.iter().all(|i| i.ts - ts <= GROUP_SPAN && i.loc.seg == g[0].loc.seg));
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
    fn groups_are_cut_by_extent_segment_span_and_size() {
        let mut items: Vec<Indexed> = (0..40).map(|t| item(1, 100 + t, 0, 1, 1)).collect();
        items.push(item(2, 100, 0, 1, 1));
        items.push(item(1, 140 + GROUP_SPAN + 1, 0, 1, 1));
        items.push(item(1, 150, 3, 1, 2));
        let g = build_groups(items);
        let sizes: Vec<usize> = g
            .iter()
            .map(|(k, v)| decode_group(k, v).unwrap().len())
            .collect();
        // Extent 1, segment 1: 32 + 8, then one past the second group's span; segment 2;
        // extent 2.
        assert_eq!(sizes, vec![32, 8, 1, 1, 1]);
    }

    /// Entries before their key, past its span, out of order, or with impossible runs make
    /// no group.
    #[test]
    fn impossible_groups_are_rejected() {
        let t = 10 * GROUP_SPAN;
        let (k, v) = encode_group(&[item(1, t, 2, 1, 1), item(1, t + 20, 0, 1, 1)]);
        assert_eq!(decode_group(&k, &v).unwrap().len(), 2);
        // The key claims a later run start for the first entry's stamp.
        assert_eq!(decode_group(&index_key(1, t, 3), &v), None);
        // A key earlier than its entries is fine (a merge dropped the first).
        let items = decode_group(&k, &v).unwrap();
        let early = index_key(1, t - 10, 0);
        let v1 = encode_group_keyed(&early, &items[1..]);
        assert_eq!(decode_group(&early, &v1).unwrap(), items[1..].to_vec());
        // An entry past the key's span.
        let far = index_key(1, t - GROUP_SPAN, 0);
        assert!(decode_group(&far, &encode_group_keyed(&far, &items[..1])).is_some());
        assert_eq!(decode_group(&far, &encode_group_keyed(&far, &items)), None);
        // Out of order (same stamp and run twice).
        let (k2, v2) = encode_group(&[item(1, t, 2, 1, 1), item(1, t, 2, 1, 1)]);
        assert_eq!(decode_group(&k2, &v2), None);
        // Runs of no chunks, or past the extent's end.
        let (k3, v3) = encode_group(&[item(1, t, 15, 2, 1)]);
        assert_eq!(decode_group(&k3, &v3), None);
        let (k4, v4) = encode_group(&[item(1, t, 3, 0, 1)]);
        assert_eq!(decode_group(&k4, &v4), None);
    }

    /// 4 KiB writes in sequence: a group of 16 entries takes about 15 bytes of value per
    /// entry, and one key for them all.
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
        assert!(g[0].1.len() <= 16 * 15, "{} bytes", g[0].1.len());
    }
}
