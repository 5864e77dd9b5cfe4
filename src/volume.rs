//! Volumes as the daemon runs them: the backing store, the CDP journal wrapped around it, the
//! logical unit that serves it, and the point-in-time views exported from it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::default_target_name;
use crate::datadir::{DataDir, VolumeMeta};
use crate::journal::{JournalConfig, JournaledStore};
use crate::scsi::{LogicalUnit, LuConfig};
use crate::storage::{BlockStore, FileStore};
use crate::target::session::lock;
use crate::target::{Target, TargetContext};

/// One served volume.
pub struct Volume {
    pub meta: VolumeMeta,
    /// What the logical unit reads and writes: the journal, or the file when not journaled.
    pub store: Arc<dyn BlockStore>,
    pub journal: Option<Arc<JournaledStore>>,
    pub lu: Arc<LogicalUnit>,
}

/// A point-in-time view exported as a read-only target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViewInfo {
    pub target: String,
    pub volume: String,
    /// The time asked for, µs since the epoch.
    pub requested: u64,
    /// The retained point the view reads (equal to `requested` unless merged history rounded it).
    pub point: u64,
    /// Ports whose journal may be incomplete at this point (empty: the view is complete).
    pub invalid_ports: Vec<u64>,
    /// Writes go to a private overlay, discarded at unexport.
    #[serde(default)]
    pub writable: bool,
    /// The name given at export, if any (else the target name is derived from the time).
    #[serde(default)]
    pub name: Option<String>,
}

/// What `DIR/snapshots.json` keeps so exported views come back after a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedView {
    volume: String,
    requested: u64,
    name: Option<String>,
    writable: bool,
}

/// The most a writable view's private overlay may hold.
const OVERLAY_LIMIT: u64 = 1 << 30;

/// The IQN suffix for a time: 2026-11-23T10:15:00.000000Z -> 20261123t101500.000000z.
pub fn stamp_for_iqn(ts: u64) -> String {
    format_stamp(ts)
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Journal errors about points in time, in an operator's terms.
fn history_error(e: crate::journal::JournalError) -> String {
    use crate::journal::JournalError;
    match e {
        JournalError::BeforeHistory { ts, born } => format!(
            "{} is before this volume's history begins ({}); pick a later time",
            format_stamp(ts),
            format_stamp(born)
        ),
        JournalError::Expired { ts, horizon } => format!(
            "{} is no longer kept (retention policy or journal size quota); the oldest point kept is {}",
            format_stamp(ts),
            format_stamp(horizon)
        ),
        other => other.to_string(),
    }
}

/// The retention policy as time ranges ending now: what resolution each range of history has.
fn retention_tiers(
    policy: &crate::journal::RetentionPolicy,
    born: u64,
    now: u64,
) -> Vec<serde_json::Value> {
    // Ranges are clipped to when history began.
    let at = |age: u64| format_stamp(now.saturating_sub(age).max(born));
    let mut out = vec![serde_json::json!({
        "keeps": "every write",
        "from": at(policy.keep_all.micros()),
        "to": format_stamp(now),
    })];
    let mut newer = policy.keep_all.micros();
    for t in &policy.tiers {
        out.push(serde_json::json!({
            "keeps": format!("one point per {}", humantime::format_duration(t.every.0)),
            "from": at(t.until.micros()),
            "to": at(newer),
        }));
        newer = t.until.micros();
    }
    out
}

/// Bytes of the files under `dir` (the journal's size on disk).
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Everything the daemon serves.
pub struct Registry {
    pub ctx: Arc<TargetContext>,
    pub dd: DataDir,
    pub journal: JournalConfig,
    volumes: Mutex<BTreeMap<String, Arc<Volume>>>,
    views: Mutex<BTreeMap<String, ViewInfo>>,
}

fn lu_config(meta: &VolumeMeta, read_only: bool, id: u64, name: String) -> LuConfig {
    LuConfig {
        name,
        serial: format!("{id:016x}"),
        naa_id: id,
        vendor: "REWIND".into(),
        product: "rewind volume".into(),
        revision: env!("CARGO_PKG_VERSION")
            .chars()
            .filter(|c| *c != '.')
            .take(4)
            .collect(),
        read_only,
        thin: meta.path.is_none(),
    }
}

/// Format a journal time stamp (µs since the epoch) for people.
pub fn format_stamp(ts: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(ts);
    humantime::format_rfc3339_micros(t).to_string()
}

/// Parse a point in time: an RFC 3339 time ("2026-11-23T10:00:00Z") or an age ("5m", "2h 30m")
/// meaning that long ago. Returns µs since the epoch.
pub fn parse_point(text: &str, now_micros: u64) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .map_err(|_| format!("{text:?} is before 1970"));
    }
    let ago = text.strip_suffix(" ago").unwrap_or(text);
    match humantime::parse_duration(ago) {
        Ok(d) => Ok(now_micros.saturating_sub(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))),
        Err(_) => Err(format!(
            "cannot read the time {text:?}: give an RFC 3339 time like 2026-11-23T10:00:00Z or an age like 5m or 2h30m"
        )),
    }
}

pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Registry {
    /// Let go of every volume and target (a daemon shutting down, or restarted in the same
    /// process): once the sessions using them are gone, the volumes and their journals close
    /// (flushing them) and release their locks. Saved snapshots stay saved.
    pub fn close(&self) {
        for t in self.ctx.targets() {
            self.ctx.remove_target(&t.name);
        }
        self.volumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub fn new(ctx: Arc<TargetContext>, dd: DataDir, journal: JournalConfig) -> Arc<Registry> {
        Arc::new(Registry {
            ctx,
            dd,
            journal,
            volumes: Mutex::new(BTreeMap::new()),
            views: Mutex::new(BTreeMap::new()),
        })
    }

    /// Open a volume: its backing store, its journal (unless switched off), its logical unit.
    pub fn open_volume(&self, meta: &VolumeMeta) -> anyhow::Result<Arc<Volume>> {
        let path = self.dd.data_path(meta);
        let file = FileStore::open(&path, meta.block_size, meta.read_only)
            .with_context(|| format!("opening volume {:?} at {}", meta.name, path.display()))?;
        let file: Arc<dyn BlockStore> = Arc::new(file);
        let journaled = meta.journal && self.journal.enabled && !meta.read_only;
        let (store, journal) = if journaled {
            let dir = self.dd.volume_dir(&meta.name).join("journal");
            let j = JournaledStore::open(&dir, file, self.journal.clone()).with_context(|| {
                format!(
                    "opening the journal of volume {:?} in {}",
                    meta.name,
                    dir.display()
                )
            })?;
            let report = j.recovery_report();
            tracing::info!(volume = %meta.name, recovery = ?report, "journal open");
            let j = Arc::new(j);
            (j.clone() as Arc<dyn BlockStore>, Some(j))
        } else {
            (file, None)
        };
        let lu = Arc::new(LogicalUnit::new(
            lu_config(meta, meta.read_only, meta.id, meta.name.clone()),
            store.clone(),
        ));
        let v = Arc::new(Volume {
            meta: meta.clone(),
            store,
            journal,
            lu,
        });
        lock(&self.volumes).insert(meta.name.clone(), v.clone());
        Ok(v)
    }

    pub fn volume(&self, name: &str) -> Option<Arc<Volume>> {
        lock(&self.volumes).get(name).cloned()
    }

    pub fn volumes(&self) -> Vec<Arc<Volume>> {
        lock(&self.volumes).values().cloned().collect()
    }

    /// Serve a volume as its own target (`iqn.2026-11.dev.rewind:NAME`, LUN 0).
    pub fn add_default_target(&self, v: &Volume) {
        let mut luns = BTreeMap::new();
        luns.insert(0, v.lu.clone());
        self.ctx.add_target(Target {
            name: default_target_name(&v.meta.name),
            alias: Some(v.meta.name.clone()),
            luns,
        });
    }

    fn journal_of(&self, volume: &str) -> Result<(Arc<Volume>, Arc<JournaledStore>), String> {
        let v = self
            .volume(volume)
            .ok_or_else(|| format!("no volume named {volume:?} (see `rewind volume list`)"))?;
        let j = v
            .journal
            .clone()
            .ok_or_else(|| format!("volume {volume:?} is not journaled, so it has no history"))?;
        Ok((v, j))
    }

    /// Resolve WHEN: an RFC 3339 time, an age ("15m ago", "2h"), or "@bookmark".
    pub fn resolve_when(&self, volume: &str, when: &str) -> Result<u64, String> {
        match when.trim().strip_prefix('@') {
            Some(name) => self.bookmark_stamp(volume, name),
            None => parse_point(when, now_micros()),
        }
    }

    /// Export the volume as it was at `ts` as a target of its own (read-only, or with a
    /// private writable overlay). The target's IQN is derived from the volume and the time.
    pub fn export_view(
        &self,
        volume: &str,
        ts: u64,
        name: Option<&str>,
        writable: bool,
    ) -> Result<ViewInfo, String> {
        let info = self.export_view_inner(volume, ts, name, writable)?;
        self.save_views();
        Ok(info)
    }

    fn export_view_inner(
        &self,
        volume: &str,
        ts: u64,
        name: Option<&str>,
        writable: bool,
    ) -> Result<ViewInfo, String> {
        let (v, j) = self.journal_of(volume)?;
        if ts > j.last_stamp().max(now_micros()) {
            return Err("that time is in the future".into());
        }
        let view = j.view(ts).map_err(history_error)?;
        let point = view.point();
        let invalid_ports = view.invalid_ports().map_err(|e| e.to_string())?;
        let suffix = match name {
            Some(n) => {
                crate::config::check_volume_name(n)
                    .map_err(|e| e.to_string().replace("volume name", "snapshot name"))?;
                n.to_string()
            }
            None => format!("at.{}", stamp_for_iqn(point)),
        };
        let target = format!("{}.{}", default_target_name(volume), suffix);
        if self.ctx.target(&target).is_some() {
            return Err(format!("{target} is already exported"));
        }
        // A distinct identity per view, so initiators never mistake it for the live volume.
        let id = v.meta.id ^ point.rotate_left(17) ^ 0x5649_4557_0000_0000;
        let view: Arc<dyn BlockStore> = Arc::new(view);
        let store: Arc<dyn BlockStore> = if writable {
            Arc::new(crate::storage::overlay::OverlayStore::new(
                view,
                OVERLAY_LIMIT,
            ))
        } else {
            view
        };
        let lu = Arc::new(LogicalUnit::new(
            lu_config(&v.meta, !writable, id, format!("{volume}@{point}")),
            store,
        ));
        let mut luns = BTreeMap::new();
        luns.insert(0, lu);
        self.ctx.add_target(Target {
            name: target.clone(),
            alias: Some(format!("{volume} at {}", format_stamp(point))),
            luns,
        });
        let info = ViewInfo {
            target: target.clone(),
            volume: volume.to_string(),
            requested: ts,
            point,
            invalid_ports,
            writable,
            name: name.map(str::to_string),
        };
        lock(&self.views).insert(target.to_ascii_lowercase(), info.clone());
        tracing::info!(%target, volume, point = %format_stamp(point), writable, "snapshot exported");
        Ok(info)
    }

    pub fn views(&self) -> Vec<ViewInfo> {
        lock(&self.views).values().cloned().collect()
    }

    /// Stop exporting a view: its sessions are closed (a writable view's overlay is dropped).
    pub fn remove_view(&self, target: &str) -> Result<ViewInfo, String> {
        let info = lock(&self.views)
            .remove(&target.to_ascii_lowercase())
            .ok_or_else(|| {
                format!("no exported snapshot named {target} (see `rewind snapshot list`)")
            })?;
        if let Some(t) = self.ctx.remove_target(&info.target) {
            for s in self.ctx.sessions.all() {
                if s.target.as_ref().is_some_and(|x| Arc::ptr_eq(x, &t)) {
                    s.close();
                }
            }
        }
        self.save_views();
        tracing::info!(target = %info.target, "snapshot unexported");
        Ok(info)
    }

    fn views_path(&self) -> std::path::PathBuf {
        self.dd.root().join("snapshots.json")
    }

    /// Remember the exported views, so they come back after a restart.
    fn save_views(&self) {
        let saved: Vec<SavedView> = self
            .views()
            .into_iter()
            .map(|v| SavedView {
                volume: v.volume,
                requested: v.requested,
                name: v.name,
                writable: v.writable,
            })
            .collect();
        let path = self.views_path();
        let tmp = path.with_extension("json.tmp");
        let result = serde_json::to_vec_pretty(&saved)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = result {
            tracing::warn!(error = %e, path = %path.display(), "could not save the list of exported snapshots");
        }
    }

    /// Export again the views that were exported when the daemon last stopped.
    pub fn restore_saved_views(&self) {
        let path = self.views_path();
        let saved: Vec<SavedView> = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, path = %path.display(), "ignoring an unreadable snapshot list");
                    return;
                }
            },
            Err(_) => return,
        };
        for s in saved {
            match self.export_view_inner(&s.volume, s.requested, s.name.as_deref(), s.writable) {
                Ok(info) => {
                    tracing::info!(target = %info.target, "snapshot exported again after restart")
                }
                Err(e) => {
                    tracing::warn!(volume = %s.volume, error = %e, "could not export a saved snapshot again")
                }
            }
        }
    }

    pub fn bookmark(&self, volume: &str, name: &str) -> Result<u64, String> {
        let (_, j) = self.journal_of(volume)?;
        j.bookmark(name).map_err(|e| e.to_string())
    }

    /// Resolve a bookmark name to its time stamp.
    pub fn bookmark_stamp(&self, volume: &str, name: &str) -> Result<u64, String> {
        let (_, j) = self.journal_of(volume)?;
        let marks = j.bookmarks().map_err(|e| e.to_string())?;
        marks
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, ts)| ts)
            .ok_or_else(|| format!("volume {volume:?} has no bookmark {name:?}"))
    }

    pub fn history(&self, volume: &str) -> Result<serde_json::Value, String> {
        let (v, j) = self.journal_of(volume)?;
        let bookmarks: Vec<serde_json::Value> = j
            .bookmarks()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(name, ts)| serde_json::json!({ "name": name, "time": format_stamp(ts), "stamp": ts }))
            .collect();
        let now = j.last_stamp();
        let marks = j
            .consistency_marks(0, u64::MAX)
            .map_err(|e| e.to_string())?;
        let invalid = j.invalid_ports(0, u64::MAX).map_err(|e| e.to_string())?;
        // Writes whose entry ends Failed: the newest 100 are listed.
        let failed = j.failed_writes(0, u64::MAX).map_err(|e| e.to_string())?;
        let failed_list: Vec<serde_json::Value> = failed
            .iter()
            .rev()
            .take(100)
            .map(|u| {
                serde_json::json!({
                    "time": format_stamp(u.ts), "stamp": u.ts, "port": u.port,
                    "lba": u.lba, "blocks": u.blocks,
                })
            })
            .collect();
        let windows: Vec<serde_json::Value> = j
            .incomplete_windows(0)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|w| {
                serde_json::json!({
                    "from": format_stamp(w.start), "to": format_stamp(w.end),
                    "invalid_ports": w.invalid_ports(),
                })
            })
            .collect();
        Ok(serde_json::json!({
            "volume": v.meta.name,
            "oldest": format_stamp(j.oldest_point()),
            "history_begins": format_stamp(j.born()),
            "quota_bytes": self.journal.max_bytes,
            "min_free_percent": self.journal.min_free_percent,
            "newest": format_stamp(now),
            "newest_stamp": now,
            "entries": j.primary_entries(),
            "consistency_marks": marks.len(),
            "last_consistency_mark": marks.last().map(|ts| format_stamp(*ts)),
            "bookmarks": bookmarks,
            "invalid_ports": invalid,
            "failed_write_count": failed.len(),
            "failed_writes": failed_list,
            "incomplete_merged_windows": windows,
            "retention": self.journal.retention,
            "retention_tiers": retention_tiers(&self.journal.retention, j.oldest_point(), now),
            "journal_bytes": dir_bytes(&self.dd.volume_dir(volume).join("journal")),
            "sizes": j
                .sizes()
                .into_iter()
                .map(|(ts, blocks)| serde_json::json!({
                    "from": format_stamp(ts),
                    "stamp": ts,
                    "bytes": blocks * u64::from(v.lu.block_size()),
                }))
                .collect::<Vec<_>>(),
        }))
    }

    /// Roll the volume back to `ts` (journaled, so it can itself be undone). Refuses while
    /// initiators are logged in to the volume, unless `force`, which logs them out first.
    /// `progress(done, total)` is called as it goes.
    pub fn restore(
        &self,
        volume: &str,
        ts: u64,
        force: bool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<u64, String> {
        let (_, j) = self.journal_of(volume)?;
        let target = default_target_name(volume);
        let busy: Vec<_> = self
            .ctx
            .sessions
            .all()
            .into_iter()
            .filter(|s| {
                s.target_name()
                    .is_some_and(|t| t.eq_ignore_ascii_case(&target))
            })
            .collect();
        if !busy.is_empty() {
            if !force {
                return Err(format!(
                    "{} initiator session(s) are logged in to {target}; log them out first, or pass --force to log them out",
                    busy.len()
                ));
            }
            for s in &busy {
                tracing::warn!(tsih = s.tsih, initiator = %s.initiator_name, "logging out for a forced restore");
                self.ctx.sessions.remove(s);
                s.close();
            }
        }
        let start = std::time::Instant::now();
        let changed = j.restore_to(ts, progress).map_err(history_error)?;
        tracing::info!(volume, to = %format_stamp(ts), changed, elapsed = ?start.elapsed(), "restore complete");
        Ok(changed)
    }

    /// Grow a served volume to `size` bytes: the backing file (or a block device grown
    /// beforehand), the journal's size history, `volume.toml`; then every session using it
    /// is told (unit attention CAPACITY DATA HAS CHANGED, and an asynchronous event).
    /// Returns the size before.
    pub fn grow_volume(&self, volume: &str, size: u64) -> Result<u64, String> {
        let v = self
            .volume(volume)
            .ok_or_else(|| format!("no volume named {volume:?} (see `rewind volume list`)"))?;
        let bs = u64::from(v.lu.block_size());
        let before = v.lu.num_blocks() * bs;
        if size % bs != 0 {
            return Err(format!(
                "size {size} is not a multiple of the volume's {bs}-byte blocks"
            ));
        }
        if size < before {
            return Err(format!(
                "volume {volume:?} holds {before} bytes; volumes only grow (shrinking would throw away data and its history)"
            ));
        }
        if v.lu.config().read_only {
            return Err(format!("volume {volume:?} is read-only"));
        }
        if size == before {
            return Ok(before);
        }
        v.lu.grow(size / bs)
            .map_err(|e| format!("cannot grow volume {volume:?}: {e}"))?;
        self.dd
            .set_size(volume, size)
            .map_err(|e| format!("volume {volume:?} grew, but recording its size failed: {e}"))?;
        let told = self
            .ctx
            .announce_event(&v.lu, &crate::scsi::LogicalUnit::capacity_changed_sense());
        tracing::info!(
            volume,
            from = before,
            to = size,
            sessions_told = told,
            "volume grown"
        );
        Ok(before)
    }

    pub fn merge(&self, volume: &str) -> Result<String, String> {
        let (_, j) = self.journal_of(volume)?;
        j.merge()
            .map(|r| format!("{r:?}"))
            .map_err(|e| e.to_string())
    }
}

/// Is there a journal directory for this volume (for offline tools)?
pub fn has_journal(dd: &DataDir, name: &str) -> bool {
    Path::new(&dd.volume_dir(name)).join("journal").is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_in_time_parse() {
        let now = 1_800_000_000_000_000;
        assert_eq!(parse_point("5m", now), Ok(now - 300_000_000));
        assert_eq!(parse_point("1h 30m ago", now), Ok(now - 5_400_000_000));
        assert_eq!(
            parse_point("2026-11-23T10:00:00Z", now),
            Ok(1_795_428_000_000_000)
        );
        assert!(parse_point("yesterday-ish", now)
            .unwrap_err()
            .contains("RFC 3339"));
        assert_eq!(
            format_stamp(1_795_428_000_000_000),
            "2026-11-23T10:00:00.000000Z"
        );
    }
}
