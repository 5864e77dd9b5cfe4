//! Change tracking for replication: which extents were written since a point, and the stamp up
//! to which every write has completed.
//!
//! The write path calls [`ChangeTracker::begin`] instead of stamping on its own: the stamp is
//! taken under the tracker's lock, the write is recorded as in flight until the returned guard
//! is dropped (once reads see its data), and every subscriber marks the extents it touches.
//!
//! - [`ChangeTracker::settled`]: every write stamped at or before it has completed, so a view at
//!   that point reads exactly what the volume held then (no write half-way in).
//! - [`ChangeSubscription::take`]: the extents written at or before a point since the last
//!   take; extents also written after the point stay marked for the next take, so a write
//!   racing with the point is never lost. Past `max_extents` marked extents a subscription
//!   stops listing them and reports "unknown" until a take covers every write made meanwhile
//!   (the caller then compares the whole volume instead).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::clock::StampClock;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Marked extents of one subscription.
#[derive(Default)]
struct Dirty {
    extent_blocks: u64,
    max_extents: usize,
    /// extent -> (oldest, newest) stamp of the writes marking it since the last take.
    extents: BTreeMap<u64, (u64, u64)>,
    /// Set when more than `max_extents` were marked: the newest stamp marked since.
    overflow: Option<u64>,
}

impl Dirty {
    fn mark(&mut self, ts: u64, lba: u64, blocks: u64) {
        if blocks == 0 {
            return;
        }
        if self.overflow.is_some() {
            self.overflow = Some(ts);
            return;
        }
        let e0 = lba / self.extent_blocks;
        let e1 = (lba + blocks - 1) / self.extent_blocks;
        if (self.extents.len() as u64).saturating_add(e1 - e0 + 1) > self.max_extents as u64 {
            self.extents.clear();
            self.overflow = Some(ts);
            return;
        }
        for e in e0..=e1 {
            let span = self.extents.entry(e).or_insert((ts, ts));
            span.0 = span.0.min(ts);
            span.1 = span.1.max(ts);
        }
    }
}

#[derive(Default)]
struct State {
    /// Writes stamped but not yet complete: stamp -> (lba, blocks).
    inflight: BTreeMap<u64, (u64, u64)>,
    subs: Vec<(u64, Arc<Mutex<Dirty>>)>,
    next_id: u64,
}

/// Shared by the write path and the subscriptions of one journal.
#[derive(Default)]
pub(crate) struct ChangeTracker {
    state: Mutex<State>,
}

/// A write in flight; dropping it marks the write complete.
pub(crate) struct InFlight<'a> {
    tracker: &'a ChangeTracker,
    ts: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(&self.tracker.state).inflight.remove(&self.ts);
    }
}

impl ChangeTracker {
    /// Stamp a write of `blocks` blocks at `lba`, mark it for every subscriber, and hold it
    /// in flight until the guard is dropped.
    pub(crate) fn begin<'a>(
        &'a self,
        clock: &StampClock,
        lba: u64,
        blocks: u64,
    ) -> (u64, InFlight<'a>) {
        let mut st = lock(&self.state);
        let ts = clock.stamp();
        st.inflight.insert(ts, (lba, blocks));
        for (_, d) in &st.subs {
            lock(d).mark(ts, lba, blocks);
        }
        (ts, InFlight { tracker: self, ts })
    }

    /// The newest stamp at or before which every write has completed.
    pub(crate) fn settled(&self, clock: &StampClock) -> u64 {
        let st = lock(&self.state);
        match st.inflight.keys().next() {
            Some(&oldest) => oldest.saturating_sub(1),
            None => clock.last(),
        }
    }

    /// Start tracking in `extent_blocks` extents. Writes still in flight are marked too.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        extent_blocks: u64,
        max_extents: usize,
    ) -> ChangeSubscription {
        let mut d = Dirty {
            extent_blocks: extent_blocks.max(1),
            max_extents,
            ..Default::default()
        };
        let mut st = lock(&self.state);
        for (&ts, &(lba, blocks)) in &st.inflight {
            d.mark(ts, lba, blocks);
        }
        let id = st.next_id;
        st.next_id += 1;
        let dirty = Arc::new(Mutex::new(d));
        st.subs.push((id, dirty.clone()));
        ChangeSubscription {
            tracker: self.clone(),
            id,
            dirty,
        }
    }
}

/// Extents written since the last [`take`](ChangeSubscription::take); see the module docs.
pub struct ChangeSubscription {
    tracker: Arc<ChangeTracker>,
    id: u64,
    dirty: Arc<Mutex<Dirty>>,
}

impl ChangeSubscription {
    /// The extents written at or before `point` since the last take, in ascending order, and
    /// forget them; extents also written after `point` stay marked. `None`: too many extents
    /// were written to list them, compare the whole volume at `point` instead.
    ///
    /// `point` should be settled ([`ChangeTracker::settled`]): the writes stamped at or before
    /// it are then complete and a view at `point` holds their data.
    pub fn take(&self, point: u64) -> Option<Vec<u64>> {
        let taken = {
            let mut d = lock(&self.dirty);
            if let Some(newest) = d.overflow {
                if newest <= point {
                    d.overflow = None;
                }
                return None;
            }
            std::mem::take(&mut d.extents)
        };
        let mut out = Vec::with_capacity(taken.len());
        let mut keep = Vec::new();
        for (e, (first, last)) in taken {
            if first <= point {
                out.push(e);
            }
            if last > point {
                keep.push((e, (first.max(point + 1), last)));
            }
        }
        let mut d = lock(&self.dirty);
        // An overflow since covers what would be kept: its stamp is newer than all of it.
        if d.overflow.is_none() {
            for (e, (first, last)) in keep {
                let span = d.extents.entry(e).or_insert((first, last));
                span.0 = span.0.min(first);
                span.1 = span.1.max(last);
            }
        }
        Some(out)
    }

    /// Extents marked now (0 when overflowed).
    pub fn marked(&self) -> usize {
        lock(&self.dirty).extents.len()
    }
}

impl Drop for ChangeSubscription {
    fn drop(&mut self) {
        lock(&self.tracker.state)
            .subs
            .retain(|(id, _)| *id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::clock::SystemClock;

    fn clock() -> StampClock {
        StampClock::new(Arc::new(SystemClock))
    }

    #[test]
    fn a_take_returns_extents_up_to_the_point_and_keeps_later_writes() {
        let (t, c) = (Arc::new(ChangeTracker::default()), clock());
        let sub = t.subscribe(128, 1000);
        let (a, g) = t.begin(&c, 0, 1); // extent 0
        drop(g);
        let (_b, g) = t.begin(&c, 130, 300); // extents 1..=3
        drop(g);
        let point = t.settled(&c);
        let (_late, g) = t.begin(&c, 256, 1); // extent 2 again, after the point
        drop(g);
        let (_later, g) = t.begin(&c, 1280, 1); // extent 10, only after the point
        drop(g);
        assert!(a <= point);
        assert_eq!(sub.take(point), Some(vec![0, 1, 2, 3]));
        // Extent 2 was written after the point as well, extent 10 only after it.
        assert_eq!(sub.take(point), Some(vec![]));
        assert_eq!(sub.take(t.settled(&c)), Some(vec![2, 10]));
        assert_eq!(sub.take(t.settled(&c)), Some(vec![]));
    }

    #[test]
    fn settled_stays_before_a_write_in_flight() {
        let (t, c) = (Arc::new(ChangeTracker::default()), clock());
        let (a, ga) = t.begin(&c, 0, 1);
        let (b, gb) = t.begin(&c, 8, 1);
        assert_eq!(t.settled(&c), a - 1);
        drop(gb);
        assert_eq!(t.settled(&c), a - 1, "the older write is still in flight");
        // A subscription made now still sees the write in flight.
        let sub = t.subscribe(8, 10);
        drop(ga);
        assert_eq!(t.settled(&c), b);
        assert_eq!(sub.take(b), Some(vec![0]));
    }

    #[test]
    fn too_many_extents_mean_unknown_until_a_take_covers_them() {
        let (t, c) = (Arc::new(ChangeTracker::default()), clock());
        let sub = t.subscribe(1, 4);
        for lba in 0..3 {
            drop(t.begin(&c, lba, 1).1);
        }
        assert_eq!(sub.marked(), 3);
        drop(t.begin(&c, 10, 5).1); // would make 8
        let before = t.settled(&c);
        drop(t.begin(&c, 20, 1).1);
        assert_eq!(sub.take(before), None, "overflowed after `before`");
        assert_eq!(sub.take(t.settled(&c)), None, "the take that covers it");
        drop(t.begin(&c, 2, 1).1);
        assert_eq!(sub.take(t.settled(&c)), Some(vec![2]));
    }

    #[test]
    fn a_dropped_subscription_stops_tracking() {
        let (t, c) = (Arc::new(ChangeTracker::default()), clock());
        let sub = t.subscribe(1, 4);
        drop(sub);
        drop(t.begin(&c, 0, 1).1);
        assert!(lock(&t.state).subs.is_empty());
    }
}
