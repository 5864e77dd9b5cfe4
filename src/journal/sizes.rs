//! The sizes a volume has had: a view of time T presents the volume as big as it was at T.
//!
//! Volumes only grow. The file `sizes` in the journal directory holds one line per size,
//! `STAMP BLOCKS`, oldest first; the first line is the size at the journal's birth. It is
//! rewritten whole (write, fsync, rename) on every change, which is rare.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use super::error::{JournalError, Result};

pub(crate) struct SizeHistory {
    path: PathBuf,
    /// (from stamp, blocks), oldest first; never empty.
    entries: RwLock<Vec<(u64, u64)>>,
}

impl SizeHistory {
    /// Load the history, or start it at `born` with `blocks`. A backing store found bigger
    /// than the last recorded size (grown while the daemon was down) gets a new entry at
    /// `now`.
    pub fn open(dir: &Path, born: u64, now: u64, blocks: u64) -> Result<SizeHistory> {
        let path = dir.join("sizes");
        let mut entries = match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text).ok_or_else(|| JournalError::Corrupt {
                file: path.display().to_string(),
                offset: 0,
                reason: "not a list of `STAMP BLOCKS` lines".into(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let changed = match entries.last() {
            None => {
                entries.push((born, blocks));
                true
            }
            Some(&(_, last)) if last != blocks => {
                if blocks < last {
                    tracing::warn!(
                        "the volume has {blocks} blocks, fewer than the {last} its journal \
                         recorded: it was shrunk outside rewind; views of earlier times may \
                         fail to read their last blocks"
                    );
                }
                entries.push((now.max(entries.last().map_or(0, |e| e.0)), blocks));
                true
            }
            Some(_) => false,
        };
        let h = SizeHistory {
            path,
            entries: RwLock::new(entries),
        };
        if changed {
            h.save(&h.read())?;
        }
        Ok(h)
    }

    fn read(&self) -> Vec<(u64, u64)> {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The size in blocks at time `ts` (the first size for times before the history).
    pub fn at(&self, ts: u64) -> u64 {
        let e = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let i = e.partition_point(|&(from, _)| from <= ts);
        e[i.saturating_sub(1)].1
    }

    /// Every (from stamp, blocks), oldest first.
    pub fn all(&self) -> Vec<(u64, u64)> {
        self.read()
    }

    /// Record that the volume has `blocks` blocks from `ts` on; durable when this returns.
    pub fn record(&self, ts: u64, blocks: u64) -> Result<()> {
        let mut e = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let mut next = e.clone();
        next.push((ts, blocks));
        self.save(&next)?;
        *e = next;
        Ok(())
    }

    fn save(&self, entries: &[(u64, u64)]) -> Result<()> {
        let text: String = entries.iter().map(|(t, b)| format!("{t} {b}\n")).collect();
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            super::partial::sync_dir(dir)?;
        }
        Ok(())
    }
}

fn parse(text: &str) -> Option<Vec<(u64, u64)>> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut it = line.split_whitespace();
        let ts = it.next()?.parse().ok()?;
        let blocks = it.next()?.parse().ok()?;
        if it.next().is_some() || out.last().is_some_and(|&(t, _)| t > ts) {
            return None;
        }
        out.push((ts, blocks));
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_by_time_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let h = SizeHistory::open(dir.path(), 100, 150, 8).unwrap();
        assert_eq!(h.at(50), 8);
        h.record(200, 16).unwrap();
        h.record(300, 32).unwrap();
        assert_eq!((h.at(100), h.at(199), h.at(200), h.at(299)), (8, 8, 16, 16));
        assert_eq!(h.at(u64::MAX), 32);
        let h = SizeHistory::open(dir.path(), 100, 400, 32).unwrap();
        assert_eq!(h.all(), vec![(100, 8), (200, 16), (300, 32)]);
        // Grown while the daemon was down: noted at the next open.
        let h = SizeHistory::open(dir.path(), 100, 500, 64).unwrap();
        assert_eq!((h.at(499), h.at(500)), (32, 64));
    }

    #[test]
    fn a_damaged_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sizes"), "100 8\nnonsense\n").unwrap();
        assert!(matches!(
            SizeHistory::open(dir.path(), 100, 150, 8),
            Err(JournalError::Corrupt { .. })
        ));
    }
}
