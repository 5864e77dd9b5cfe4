//! What the index walks of point-in-time reads found, per (point in time, extent): a view read
//! asks for the first entry after its point for a few chunks, and the walk that answers it also
//! notes the first entries of the extent's other chunks it passes. The next reads of that extent
//! at that point (sequential reads, or random ones coming back) are answered from here instead
//! of walking the sled index again.
//!
//! Any change to the index (entries flushed in, a merge, a rebuild) bumps a generation; an
//! answer noted under an older generation is never used. At most [`MAX_EXTENTS`] extents are
//! kept (about 1 KiB each); past that the cache starts over.

use super::primary::{IndexHit, EXTENT_CHUNKS};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Extents (of `EXTENT_CHUNKS` chunks) kept at most.
pub(crate) const MAX_EXTENTS: usize = 16384;

/// Per chunk of an extent: its first index hit after the point (None: nothing after it).
pub(crate) type ExtentHits = [Option<IndexHit>; EXTENT_CHUNKS as usize];

struct Noted {
    generation: u64,
    /// Chunks whose answer is known (bit k: chunk k of the extent).
    known: u32,
    hits: ExtentHits,
}

#[derive(Default)]
pub(crate) struct HitCache {
    generation: AtomicU64,
    map: Mutex<HashMap<(u64, u64), Noted>>,
}

impl HitCache {
    /// The index changed: forget every answer.
    pub fn changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Read before a walk; its answers are noted under it.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The answers for extent `x` at point `ts`, if every chunk of `want` is known.
    pub fn get(&self, ts: u64, x: u64, want: u32) -> Option<ExtentHits> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.get(&(ts, x))?;
        (n.generation == self.generation() && n.known & want == want).then_some(n.hits)
    }

    /// Note what a walk begun at `generation` found.
    pub fn put(&self, ts: u64, x: u64, generation: u64, known: u32, hits: ExtentHits) {
        if generation != self.generation() {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_EXTENTS && !map.contains_key(&(ts, x)) {
            map.clear();
        }
        map.insert(
            (ts, x),
            Noted {
                generation,
                known,
                hits,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::primary::Loc;
    use super::*;

    fn hit(ts: u64) -> Option<IndexHit> {
        Some((
            (ts, 1, 1),
            Loc {
                seg: 1,
                off: 0,
                len: 100,
                idx: 0,
                lo: 0,
                n: 1,
            },
        ))
    }

    #[test]
    fn answers_only_what_is_known_under_the_current_generation() {
        let c = HitCache::default();
        let mut hits: ExtentHits = [None; EXTENT_CHUNKS as usize];
        hits[2] = hit(50);
        let g = c.generation();
        c.put(10, 7, g, 0b0111, hits);
        assert_eq!(c.get(10, 7, 0b0100).unwrap()[2], hit(50));
        assert_eq!(
            c.get(10, 7, 0b0001).unwrap()[0],
            None,
            "known: nothing after"
        );
        assert!(c.get(10, 7, 0b1000).is_none(), "chunk 3 not known");
        assert!(c.get(11, 7, 0b0001).is_none(), "another point");
        assert!(c.get(10, 8, 0b0001).is_none(), "another extent");
        c.changed();
        assert!(c.get(10, 7, 0b0001).is_none(), "the index changed");
        // A walk that began before a change is not noted.
        c.put(10, 7, g, 0b0111, hits);
        assert!(c.get(10, 7, 0b0001).is_none());
    }

    #[test]
    fn starts_over_when_full() {
        let c = HitCache::default();
        let hits: ExtentHits = [None; EXTENT_CHUNKS as usize];
        for x in 0..MAX_EXTENTS as u64 + 1 {
            c.put(1, x, c.generation(), u32::MAX, hits);
        }
        assert!(c.get(1, 0, 1).is_none());
        assert!(c.get(1, MAX_EXTENTS as u64, 1).is_some());
        assert!(c.map.lock().unwrap().len() <= MAX_EXTENTS);
    }
}
