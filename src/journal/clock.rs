//! One time source for all ports: microsecond stamps that never go backwards.
//!
//! Stamps follow the wall clock. If the wall clock steps back, stamps keep moving forward
//! (at least 1 µs per stamp) and the accumulated offset is slewed away at half the wall clock's
//! rate until stamps are back in step — a tiny phase-locked loop. Entries are ordered by
//! `(ts, port, seq)`; since stamps are unique per process, `ts` alone already orders them.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// A wall clock, injectable for tests.
pub trait WallClock: Send + Sync {
    /// Microseconds since the UNIX epoch.
    fn now_micros(&self) -> u64;
}

/// The system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_micros(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    }
}

#[derive(Debug, Default)]
struct State {
    last: u64,
    last_wall: u64,
    /// How far stamps run ahead of the wall clock.
    offset: u64,
    /// Remainder of the slew division, so that frequent calls still slew.
    carry: u64,
}

/// Monotonic stamp source shared by every port of a volume.
pub struct StampClock {
    wall: Arc<dyn WallClock>,
    state: Mutex<State>,
}

impl StampClock {
    pub fn new(wall: Arc<dyn WallClock>) -> Self {
        StampClock {
            wall,
            state: Mutex::new(State::default()),
        }
    }

    /// A new stamp, strictly greater than every stamp handed out or observed before.
    pub fn stamp(&self) -> u64 {
        let w = self.wall.now_micros();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if w < s.last_wall {
            // Wall clock stepped back: absorb the step into the offset.
            s.offset += s.last_wall - w;
            s.carry = 0;
        } else {
            // Slew: the offset shrinks by half the elapsed wall time.
            let elapsed = w - s.last_wall + s.carry;
            s.carry = elapsed % 2;
            s.offset -= s.offset.min(elapsed / 2);
        }
        let stamp = (w + s.offset).max(s.last + 1);
        s.offset = stamp - w;
        s.last = stamp;
        s.last_wall = w;
        stamp
    }

    /// The last stamp handed out (or observed), without creating a new one.
    pub fn last(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).last
    }

    /// Never hand out a stamp `<= ts` (used on recovery with the newest journaled stamp).
    pub fn observe(&self, ts: u64) {
        let w = self.wall.now_micros();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if ts > s.last {
            s.last = ts;
            if s.last_wall == 0 {
                s.last_wall = w;
            }
            s.offset = s.offset.max(ts.saturating_sub(w));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A wall clock the test moves by hand.
    #[derive(Debug, Default)]
    pub struct FakeWall(pub AtomicU64);

    impl FakeWall {
        pub fn new(t: u64) -> Arc<Self> {
            Arc::new(FakeWall(AtomicU64::new(t)))
        }
        pub fn set(&self, t: u64) {
            self.0.store(t, Ordering::SeqCst)
        }
        pub fn advance(&self, d: u64) {
            self.0.fetch_add(d, Ordering::SeqCst);
        }
    }

    impl WallClock for FakeWall {
        fn now_micros(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn follows_wall_and_is_strictly_increasing() {
        let w = FakeWall::new(1_000);
        let c = StampClock::new(w.clone());
        assert_eq!(c.stamp(), 1_000);
        assert_eq!(c.stamp(), 1_001);
        w.set(5_000);
        assert_eq!(c.stamp(), 5_000);
    }

    #[test]
    fn step_back_keeps_moving_and_slews_into_step() {
        let w = FakeWall::new(10_000_000);
        let c = StampClock::new(w.clone());
        let a = c.stamp();
        w.set(9_000_000); // one second back
        let mut prev = a;
        for _ in 0..1000 {
            w.advance(5_000);
            let s = c.stamp();
            assert!(s > prev, "stamps must never go backwards");
            prev = s;
        }
        // 5 s of wall time passed: the 1 s offset is slewed away at half rate (needs 2 s).
        assert_eq!(prev, w.now_micros());
        // Back in step: follows the wall clock exactly.
        w.advance(7);
        assert_eq!(c.stamp(), w.now_micros());
    }

    #[test]
    fn many_stamps_in_one_microsecond_slew_back() {
        let w = FakeWall::new(100);
        let c = StampClock::new(w.clone());
        for _ in 0..50 {
            c.stamp();
        }
        assert_eq!(c.last(), 149);
        w.set(300);
        assert_eq!(c.stamp(), 300);
    }

    #[test]
    fn observe_raises_floor() {
        let w = FakeWall::new(100);
        let c = StampClock::new(w.clone());
        c.observe(1_000);
        assert!(c.stamp() > 1_000);
    }
}
