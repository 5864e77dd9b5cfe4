//! Merge and retention: per window and chunk keep the earliest entry (its old data is the
//! chunk's state at the window start), drop history past the horizon, reclaim segments whose
//! entries are all dropped. The index holds one key per record and extent: a key goes when
//! every chunk it covers has an earlier entry in its window, so a key that is the earliest for
//! some of its chunks keeps the later versions of the others (harmless: views in a merged
//! window read at its start, and the earliest entry after the start is the kept one).

use super::error::Result;
use super::primary::KEY_LEN;
use super::record::{MergedWindow, Record};
use super::store::{lock, Shared};
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MergeReport {
    /// The merge's notion of now.
    pub now: u64,
    /// Entries with stamps at or before this are gone.
    pub horizon: u64,
    pub scanned: u64,
    pub dropped: u64,
    pub segments_deleted: Vec<u64>,
    /// Ports whose journals were invalid during the merged span (port validity).
    pub invalid_ports: Vec<u64>,
    /// Merged windows whose port validity record was written (new, or changed since the last
    /// merge), and how many of those had a port invalid.
    pub windows_recorded: u64,
    pub windows_incomplete: u64,
    /// Set when the journal was over `max_bytes`, or its filesystem short of free space
    /// (`min_free_percent`), and the oldest history up to this stamp was dropped.
    pub quota_horizon: Option<u64>,
}

impl Shared {
    /// Bytes of history to give up: what the primary journal holds over 90% of `max_bytes`,
    /// or what the filesystem lacks to keep `min_free_percent` free (the larger), with the
    /// reason for the log.
    fn space_to_free(&self, used: u64) -> (u64, &'static str) {
        let quota = self.cfg.max_bytes;
        let over_quota = if quota > 0 && used > quota {
            used - quota / 10 * 9
        } else {
            0
        };
        let short = if self.cfg.min_free_percent > 0 {
            match self.space_probe().space() {
                Ok(s) => s.shortfall(self.cfg.min_free_percent),
                Err(e) => {
                    tracing::warn!("cannot tell the free space of the journal's filesystem: {e}");
                    0
                }
            }
        } else {
            0
        };
        if short > over_quota {
            (
                short,
                "the journal's filesystem is short of free space (min_free_percent)",
            )
        } else {
            (over_quota, "the journal is over its size quota (max_bytes)")
        }
    }

    /// The stamp up to which the oldest history must go to free what `space_to_free` asks:
    /// whole segments, oldest (by their newest live entry) first. Segments are written in
    /// roughly time order, so this frees about what it says.
    fn quota_horizon(&self, horizon: u64) -> Result<Option<u64>> {
        if self.cfg.max_bytes == 0 && self.cfg.min_free_percent == 0 {
            return Ok(None);
        }
        let (segs, active) = self.primary.segments()?;
        let sizes: HashMap<u64, u64> = segs
            .iter()
            .map(|s| (*s, self.primary.segment_bytes(*s)))
            .collect();
        let used: u64 = sizes.values().sum();
        let (to_free, why) = self.space_to_free(used);
        if to_free == 0 {
            return Ok(None);
        }
        // Newest live entry per segment.
        let mut newest: HashMap<u64, u64> = HashMap::new();
        for item in self.primary.iter_index() {
            let (((_, ts, _, _), loc), _) = item?;
            if ts > horizon {
                let n = newest.entry(loc.seg).or_default();
                *n = (*n).max(ts);
            }
        }
        // Segments with no live entry go anyway; then the oldest live ones, until enough is free.
        let size = |seg: &u64| sizes.get(seg).copied().unwrap_or(0);
        let mut freed: u64 = segs
            .iter()
            .filter(|s| **s != active && !newest.contains_key(s))
            .map(size)
            .sum();
        let mut order: Vec<(u64, u64)> = newest
            .into_iter()
            .filter(|(seg, _)| *seg != active)
            .map(|(seg, ts)| (ts, seg))
            .collect();
        order.sort_unstable();
        let mut cut = None;
        for (ts, seg) in order {
            if freed >= to_free {
                break;
            }
            freed += size(&seg);
            cut = Some(ts);
        }
        match cut {
            Some(ts) => tracing::warn!(
                journal_bytes = used,
                to_free,
                dropped_before = ts,
                "{why}: dropping the oldest history"
            ),
            None if freed < to_free => tracing::warn!(
                journal_bytes = used,
                to_free,
                "{why}, but the journal holds no older history to drop"
            ),
            None => {}
        }
        Ok(cut)
    }

    pub fn merge(&self) -> Result<MergeReport> {
        // A partial journal that cannot be flushed (say, the disk is full) must not stop the
        // merge that would free space: its entries stay in its file and come later. The
        // retention windows stay right, since per chunk and window the earliest entry is kept.
        if let Err(e) = self.flush_all_ports() {
            tracing::warn!("merge: partial journals not flushed first: {e}");
        }
        // One merge at a time. The index walks below run without the flush lock, so that
        // flushes (and the writes waiting on them) go on; the lock is taken for each change
        // of the index. Keys a flush adds meanwhile are newer than this merge's stamp or, if
        // older, merely kept until the next merge; none of them points into a segment that
        // existed when the merge began, other than the active one, so the segments this merge
        // may delete are those before the active one at its start.
        let _m = lock(&self.merge_lock);
        let policy = &self.cfg.retention;
        let now = self.clock.stamp();
        let mut horizon = policy.horizon(now);
        let quota_horizon = self.quota_horizon(horizon)?;
        if let Some(q) = quota_horizon {
            horizon = horizon.max(q);
        }
        let active_at_start = {
            let _f = lock(&self.flush_lock);
            // Record the intent first: views resolve against it, so a merge cut short leaves
            // views rounding to window starts, which stay correct.
            self.metalog
                .append(&super::metalog::Op::Merge { now, horizon }, true)?;
            self.primary.meta.insert("merge_now", &now.to_be_bytes())?;
            self.primary
                .meta
                .insert("horizon", &horizon.to_be_bytes())?;
            self.primary.flush_index()?;
            self.primary.segments()?.1
        };

        let mut report = MergeReport {
            now,
            horizon,
            quota_horizon,
            invalid_ports: self.invalid_ports(0, now)?,
            ..Default::default()
        };
        let mut live: HashMap<u64, u64> = HashMap::new();
        let mut drop_keys: Vec<([u8; KEY_LEN], u64, u8, u8)> = Vec::new();
        let mut dropped_chunks = 0u64;
        // The extent and window being walked, and which of its chunks already have their
        // earliest entry of that window. Keys of one extent come in time order, so a window,
        // once left, does not come back.
        let mut window: Option<(u64, usize, u64)> = None;
        let mut kept = 0u32;
        // Per merged window `(start, end]`: the ports that wrote in it.
        let mut writers: BTreeMap<(u64, u64), BTreeSet<u64>> = BTreeMap::new();
        for item in self.primary.iter_index() {
            #[cfg(test)]
            if let Some(hook) = lock(&self.merge_walk_hook).take() {
                hook();
            }
            let (((extent, ts, port, _), loc), group) = item?;
            report.scanned += u64::from(loc.n);
            let dead = if ts <= horizon {
                true
            } else if let Some((tier, start)) = policy.window_of(now, ts) {
                let end = start.saturating_add(policy.tiers[tier].every.micros());
                writers.entry((start, end)).or_default().insert(port);
                let w = (extent, tier, start);
                if window != Some(w) {
                    window = Some(w);
                    kept = 0;
                }
                // Dead when every chunk it covers has an earlier entry in the window; a key
                // that is the earliest for any of its chunks stays whole.
                let fresh = loc.mask() & !kept;
                kept |= loc.mask();
                fresh == 0
            } else {
                false
            };
            if dead {
                drop_keys.push((group, ts, loc.lo, loc.n));
                dropped_chunks += u64::from(loc.n);
                if drop_keys.len() >= 10_000 {
                    let _f = lock(&self.flush_lock);
                    self.primary.remove_entries(&drop_keys)?;
                    drop_keys.clear();
                }
            } else {
                *live.entry(loc.seg).or_default() += 1;
            }
        }
        report.dropped = dropped_chunks;
        let _f = lock(&self.flush_lock);
        // The merged windows' port validity goes into the journal before their entries are
        // thinned out: the kept entries stand for the window, the record says whether they are
        // complete.
        self.record_windows(&writers, horizon, &mut report)?;
        self.primary.remove_entries(&drop_keys)?;
        self.set_marks_floor(horizon)?;
        self.primary.drop_failed_upto(horizon)?;
        self.primary.drop_windows_upto(horizon)?;
        // The index must forget before the files go.
        self.primary.flush_index()?;
        let (segs, active) = self.primary.segments()?;
        let doomed: Vec<u64> = segs
            .into_iter()
            .filter(|seg| *seg != active && *seg < active_at_start && !live.contains_key(seg))
            .collect();
        // Window records still in force move out of segments about to go (they are small).
        let moving: Vec<Record> = self
            .primary
            .windows_after(horizon)?
            .into_iter()
            .filter(|(_, seg)| doomed.contains(seg))
            .map(|(w, _)| Record::Window(w))
            .collect();
        self.primary.append_records(&moving)?;
        if !moving.is_empty() {
            self.primary.flush_index()?;
        }
        for seg in doomed {
            self.primary.delete_segment(seg)?;
            report.segments_deleted.push(seg);
        }
        Ok(report)
    }

    /// Write the port validity of every merged window that holds entries: its writers, and
    /// the ports invalid at any time in it, from the port-validity intervals and from window
    /// records already written (so validity survives the loss of the intervals with the sled
    /// database). A window whose record says the same already is not written again.
    fn record_windows(
        &self,
        writers: &BTreeMap<(u64, u64), BTreeSet<u64>>,
        horizon: u64,
        report: &mut MergeReport,
    ) -> Result<()> {
        let intervals = self.validity_intervals()?;
        let known: Vec<MergedWindow> = self
            .primary
            .windows_after(horizon)?
            .into_iter()
            .map(|(w, _)| w)
            .collect();
        let mut records = Vec::new();
        for (&(start, end), ports) in writers {
            let mut invalid: Vec<u64> = intervals
                .iter()
                .filter(|(since, _, until)| *since <= end && *until > start)
                .map(|(_, port, _)| *port)
                .collect();
            for w in known.iter().filter(|w| w.start < end && w.end > start) {
                invalid.extend(w.invalid_ports());
            }
            invalid.sort_unstable();
            invalid.dedup();
            let w = MergedWindow::new(start, end, ports.iter().copied().collect(), &invalid);
            if known.contains(&w) {
                continue;
            }
            report.windows_recorded += 1;
            report.windows_incomplete += u64::from(!w.complete());
            records.push(Record::Window(w));
        }
        self.primary.append_records(&records)
    }
}
