//! Retention policy: which points in time stay reachable as history ages.
//!
//! Every write is kept while younger than `keep_all`. After that, tier by tier, only one point
//! per `every` (window boundaries, multiples of `every` since the epoch) is kept until the
//! entry's age reaches the tier's `until`; history older than the last tier's `until` is dropped.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::Duration;

/// A duration written the human way ("24h", "7days", "500ms").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn micros(&self) -> u64 {
        self.0.as_micros().min(u64::MAX as u128) as u64
    }
    pub fn parse(s: &str) -> Result<Self, humantime::DurationError> {
        humantime::parse_duration(s).map(HumanDuration)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HumanDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One point per `every` for entries younger than `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionTier {
    pub every: HumanDuration,
    pub until: HumanDuration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Every write stays reachable while younger than this.
    pub keep_all: HumanDuration,
    /// Coarser and coarser tiers, by increasing `until`.
    pub tiers: Vec<RetentionTier>,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        let h = |s: u64| HumanDuration(Duration::from_secs(s));
        RetentionPolicy {
            keep_all: h(24 * 3600),
            tiers: vec![
                RetentionTier {
                    every: h(60),
                    until: h(7 * 24 * 3600),
                },
                RetentionTier {
                    every: h(3600),
                    until: h(30 * 24 * 3600),
                },
            ],
        }
    }
}

impl RetentionPolicy {
    pub fn validate(&self) -> Result<(), String> {
        let mut prev_until = self.keep_all.micros();
        let mut prev_every = 1u64;
        for (i, t) in self.tiers.iter().enumerate() {
            let every = t.every.micros();
            let until = t.until.micros();
            if every == 0 {
                return Err(format!("retention tier {i}: `every` must be positive"));
            }
            if until <= prev_until {
                return Err(format!(
                    "retention tier {i}: `until` must exceed the previous tier's (or keep_all)"
                ));
            }
            if every % prev_every != 0 {
                return Err(format!(
                    "retention tier {i}: `every` must be a multiple of the previous tier's"
                ));
            }
            prev_until = until;
            prev_every = every;
        }
        Ok(())
    }

    /// Age at which tier `i` starts.
    fn start(&self, i: usize) -> u64 {
        if i == 0 {
            self.keep_all.micros()
        } else {
            self.tiers[i - 1].until.micros()
        }
    }

    /// Entries with `ts <= horizon` are dropped by a merge at `now`.
    pub fn horizon(&self, now: u64) -> u64 {
        match self.tiers.last() {
            None => now.saturating_sub(self.keep_all.micros()),
            Some(t) => {
                let h = now.saturating_sub(t.until.micros());
                h - h % t.every.micros()
            }
        }
    }

    /// The earliest time at which a merge would drop history at `oldest` (the oldest point
    /// kept): the first `now` whose [`horizon`](Self::horizon) reaches it. A merge that has
    /// not run since then is late by the difference.
    pub fn merge_due(&self, oldest: u64) -> u64 {
        match self.tiers.last() {
            None => oldest.saturating_add(self.keep_all.micros()),
            Some(t) => {
                let every = t.every.micros().max(1);
                oldest
                    .div_ceil(every)
                    .saturating_mul(every)
                    .saturating_add(t.until.micros())
            }
        }
    }

    /// For an entry stamped `ts`, merged at `now`: the coarsest tier whose window
    /// `(w*every, (w+1)*every]` containing `ts` is entirely old enough, and that window's start.
    pub fn window_of(&self, now: u64, ts: u64) -> Option<(usize, u64)> {
        for i in (0..self.tiers.len()).rev() {
            let e = self.tiers[i].every.micros();
            let w = ts.saturating_sub(1) / e;
            let end = (w + 1).saturating_mul(e);
            if end <= now.saturating_sub(self.start(i)) {
                return Some((i, w * e));
            }
        }
        None
    }

    /// The retained point that stands for `t` after a merge at `merged_at`: `t` itself when
    /// every write around it is still kept, else the start of its merged window.
    pub fn resolve(&self, merged_at: u64, t: u64) -> u64 {
        for i in (0..self.tiers.len()).rev() {
            let e = self.tiers[i].every.micros();
            let w = t / e;
            let end = (w + 1).saturating_mul(e);
            if end <= merged_at.saturating_sub(self.start(i)) {
                return w * e;
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> HumanDuration {
        HumanDuration(Duration::from_millis(v))
    }

    fn policy() -> RetentionPolicy {
        RetentionPolicy {
            keep_all: ms(10),
            tiers: vec![
                RetentionTier {
                    every: ms(2),
                    until: ms(100),
                },
                RetentionTier {
                    every: ms(10),
                    until: ms(400),
                },
            ],
        }
    }

    #[test]
    fn default_is_valid_and_serde_round_trips() {
        let p = RetentionPolicy::default();
        p.validate().unwrap();
        let j = serde_json::to_string(&p).unwrap();
        assert!(j.contains("\"1day\""), "{j}");
        let back: RetentionPolicy = serde_json::from_str(&j).unwrap();
        assert_eq!(back, p);
        let q: RetentionPolicy =
            serde_json::from_str(r#"{"keep_all":"1h","tiers":[{"every":"5m","until":"2days"}]}"#)
                .unwrap();
        q.validate().unwrap();
    }

    #[test]
    fn validate_rejects_bad_tiers() {
        let mut p = policy();
        p.tiers[1].every = ms(3);
        assert!(p.validate().is_err());
        let mut p = policy();
        p.tiers[0].until = ms(5);
        assert!(p.validate().is_err());
        let mut p = policy();
        p.tiers[0].every = ms(0);
        assert!(p.validate().is_err());
    }

    #[test]
    fn windows_and_resolution() {
        let p = policy();
        let now = 1_000_000;
        // Young: not merged.
        assert_eq!(p.window_of(now, now - 5_000), None);
        assert_eq!(p.resolve(now, now - 5_000), now - 5_000);
        // 50 ms old: tier 0, 2 ms windows.
        let ts = now - 50_000 + 1;
        assert_eq!(p.window_of(now, ts), Some((0, now - 50_000)));
        assert_eq!(p.resolve(now, now - 49_000), now - 50_000);
        // 200 ms old: tier 1.
        assert_eq!(
            p.window_of(now, now - 200_000 + 5),
            Some((1, now - 200_000))
        );
        assert_eq!(p.horizon(now), 600_000);
    }

    #[test]
    fn a_merge_is_due_once_the_horizon_reaches_the_oldest_point() {
        for p in [
            policy(),
            RetentionPolicy {
                keep_all: ms(10),
                tiers: vec![],
            },
        ] {
            for oldest in [1, 599_999, 600_000, 600_001, 1_234_567] {
                let due = p.merge_due(oldest);
                assert!(p.horizon(due) >= oldest, "{p:?} {oldest}");
                assert!(p.horizon(due - 1) < oldest, "{p:?} {oldest}");
            }
        }
    }
}
