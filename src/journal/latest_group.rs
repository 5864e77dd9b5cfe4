//! Each extent's latest index group, as the index holds it, kept for the index's writers.
//!
//! A flush adds its entries to each extent's latest group (`index_group::place`), so it has to
//! read that group first. Where writes are scattered over the volume, every write of a flush
//! is in an extent of its own, and that read (a reverse walk of the sled tree, then the group
//! decoded) was a sizeable part of the flusher's work. The group a flush writes is the
//! extent's latest one afterwards, so it is kept here and the next flush to the extent starts
//! from it instead.
//!
//! An entry here is exactly what the index holds: writers *take* an extent's entry before they
//! change the extent's groups, and put back what they wrote only once their batch is applied.
//! A failed batch therefore leaves the extent unknown, never stale. Index changes other than
//! appends (a merge dropping entries, a rebuild) forget what they touch.
//!
//! At most [`MAX_ENTRIES`] index entries are kept (about 64 bytes each, so some 8 MiB per
//! journaled volume); past that it starts over.

use super::index_group::Group;
use std::collections::HashMap;
use std::sync::Mutex;

/// Index entries (and extents known to have no group) kept at most.
pub(crate) const MAX_ENTRIES: usize = 1 << 17;

/// What is known of an extent's latest group: `None`, the extent has none.
pub(crate) type Latest = Option<Group>;

#[derive(Default)]
struct Map {
    groups: HashMap<u64, Latest>,
    /// Entries held: each group's, plus one per extent.
    entries: usize,
}

fn weight(l: &Latest) -> usize {
    1 + l.as_ref().map_or(0, |g| g.1.len())
}

#[derive(Default)]
pub(crate) struct LatestGroups {
    map: Mutex<Map>,
}

impl LatestGroups {
    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Extent `x`'s latest group, if known; it is unknown from now until [`put`](Self::put).
    pub fn take(&self, x: u64) -> Option<Latest> {
        let mut m = self.lock();
        let l = m.groups.remove(&x)?;
        m.entries -= weight(&l);
        Some(l)
    }

    /// Note extents' latest groups, as the index now holds them.
    pub fn put(&self, latest: impl IntoIterator<Item = (u64, Latest)>) {
        let mut m = self.lock();
        for (x, l) in latest {
            if let Some(old) = m.groups.remove(&x) {
                m.entries -= weight(&old);
            }
            let w = weight(&l);
            if m.entries + w > MAX_ENTRIES {
                m.groups.clear();
                m.entries = 0;
            }
            m.entries += w;
            m.groups.insert(x, l);
        }
    }

    /// Extent `x`'s groups changed otherwise: its latest one is unknown.
    pub fn forget(&self, x: u64) {
        self.take(x);
    }

    /// The index changed as a whole.
    pub fn clear(&self) {
        let mut m = self.lock();
        m.groups.clear();
        m.entries = 0;
    }

    /// Every extent known, with its latest group (tests compare them with the index).
    #[cfg(test)]
    pub fn known(&self) -> Vec<(u64, Latest)> {
        let m = self.lock();
        let mut v: Vec<(u64, Latest)> = m.groups.iter().map(|(x, l)| (*x, l.clone())).collect();
        v.sort_by_key(|(x, _)| *x);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::index_group::{index_key, Indexed};
    use crate::journal::primary::Loc;

    fn group(x: u64, n: usize) -> Group {
        let items = (0..n as u64)
            .map(|i| Indexed {
                extent: x,
                ts: 10 + i,
                port: 1,
                seq: i,
                loc: Loc {
                    seg: 1,
                    off: 0,
                    len: 1,
                    idx: 0,
                    lo: 0,
                    n: 1,
                },
            })
            .collect();
        (index_key(x, 10, 0), items)
    }

    #[test]
    fn taken_until_put_back() {
        let c = LatestGroups::default();
        assert_eq!(c.take(3), None);
        c.put([(3, Some(group(3, 2))), (4, None)]);
        assert_eq!(c.take(3), Some(Some(group(3, 2))));
        assert_eq!(c.take(3), None, "unknown once taken");
        assert_eq!(c.take(4), Some(None), "known to have no group");
        c.put([(5, Some(group(5, 1)))]);
        c.forget(5);
        assert_eq!(c.take(5), None);
    }

    #[test]
    fn bounded_by_entries() {
        let c = LatestGroups::default();
        let per = 31;
        let fit = MAX_ENTRIES / (per + 1);
        for x in 0..fit as u64 {
            c.put([(x, Some(group(x, per)))]);
        }
        assert_eq!(c.known().len(), fit);
        // Replacing a group does not count it twice.
        c.put([(0, Some(group(0, per)))]);
        assert_eq!(c.known().len(), fit);
        // One more starts over.
        c.put([(fit as u64, Some(group(fit as u64, per)))]);
        assert_eq!(c.known().len(), 1);
        assert_eq!(c.lock().entries, per + 1);
    }
}
