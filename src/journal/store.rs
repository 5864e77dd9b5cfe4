//! `JournaledStore`: a [`BlockStore`] that journals the old data of every change (copy on
//! write) before the new data may reach the volume.

use super::cache::{ChunkData, Deps, DirtyCache, DirtyChunk, CLEAN, DATA, SHARE_MIN, UNMAPPED};
use super::changes::{ChangeSubscription, ChangeTracker};
use super::clock::{StampClock, SystemClock, WallClock};
use super::config::JournalConfig;
use super::error::{JournalError, Result};
use super::metalog::{MetaLog, MetaState, Op};
use super::partial::{replay_file, PartialJournal};
use super::port::Port;
use super::primary::{copy_chunks, Adopt, Loc, PrimaryJournal, PrimaryRecovery, Span};
use super::record::{no_unallocated, Entry, Record, Status, StatusUpdate, MAX_RECORD_SPAN};
use super::sizes::SizeHistory;
use super::space::{FsProbe, SpaceProbe};
use super::view::JournalView;
use crate::storage::{Allocation, BlockStore, IoOrigin, StorageError};
use bytes::Bytes;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Chunk-range locks: chunk `c` is guarded by stripe `c % LOCK_STRIPES`. One stripe per chunk
/// keeps neighbouring small writes apart (sequential 4 KiB writes in flight together each have
/// their own), and with 4096 stripes sequential writes in flight together meet on a stripe
/// only 16 MiB apart at 4 KiB chunks (with 256 stripes, 128 KiB writes at queue depth 16 met
/// every eighth write and waited for each other).
const LOCK_STRIPES: usize = 4096;

/// The stripes guarding chunks `c0..=c1`, ascending (the order they are locked in).
fn stripes_of(c0: u64, c1: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = if c1 - c0 + 1 >= LOCK_STRIPES as u64 {
        (0..LOCK_STRIPES).collect()
    } else {
        (c0..=c1)
            .map(|c| (c % LOCK_STRIPES as u64) as usize)
            .collect()
    };
    idx.sort_unstable();
    idx.dedup();
    idx
}
/// A timed merge waits at least this many times as long as the last merge took.
const MERGE_SPACING: u32 = 9;

/// How long after the start of the last timed merge, which took `took`, the next one is due.
fn merge_due(every: Duration, took: Duration) -> Duration {
    every.max(took.saturating_mul(MERGE_SPACING + 1))
}
/// Most bytes of one UNMAP journaled as one change (see `JournaledStore::unmap`).
const MAX_UNMAP_PIECE: u64 = 16 << 20;

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a chunk looked like at some point in time.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChunkAt {
    /// Never written then: reads as zeros, deallocated.
    Unallocated,
    Data(Vec<u8>),
}

/// An entry and the index of one of its chunks.
pub(crate) type EntryChunk = (Arc<Entry>, u32);

/// Where the first entry for a chunk after some time is: in a partial journal (in memory),
/// with the chunk's index in it, or in the primary journal, by its `(ts, port, seq)` and the
/// location of its record narrowed to the chunk (not read yet).
enum Hit {
    Partial(Arc<Entry>, u32),
    Primary((u64, u64, u64), Loc),
}

impl Hit {
    fn ts(&self) -> u64 {
        match self {
            Hit::Partial(e, _) => e.ts,
            Hit::Primary((ts, _, _), _) => *ts,
        }
    }
}

/// What `open` found and did.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    pub primary: PrimaryRecovery,
    /// Entries (chunks) moved from partial journal files into the primary journal.
    pub replayed_entries: u64,
    pub partial_files: u64,
    /// Bytes of a torn or damaged tail cut off `meta.log` (bookmarks, marks, validity).
    pub metadata_tail_cut: u64,
}

/// A rotated partial file of at least this many bytes (or half of `partial_capacity`, if that
/// is less) becomes a primary segment as it is; a smaller one is copied.
const ADOPT_MIN_BYTES: u64 = 4 << 20;

pub(crate) struct Shared {
    pub inner: Arc<dyn BlockStore>,
    pub cfg: JournalConfig,
    pub block_size: usize,
    pub bpc: u64,
    /// The volume's size in blocks; it grows with `grow`.
    blocks: AtomicU64,
    /// The sizes the volume has had, for views of earlier times.
    pub sizes: SizeHistory,
    /// Serializes growths.
    grow_lock: Mutex<()>,
    pub clock: StampClock,
    stripes: Vec<Mutex<()>>,
    ports: RwLock<HashMap<u64, Arc<Port>>>,
    /// Old-data bytes held by all ports' partial journals (`partial_limit`).
    partial_held: Arc<AtomicU64>,
    partial_dir: PathBuf,
    pub primary: PrimaryJournal,
    cache: Mutex<DirtyCache>,
    gen: AtomicU64,
    durable_gen: AtomicU64,
    sync_lock: Mutex<()>,
    /// Serializes the changes of the primary journal's index: flushes of partial journals
    /// into it, and the removals and segment deletions of a merge (whose index walk runs
    /// without it, so that writes go on during a merge).
    pub flush_lock: Mutex<()>,
    /// One merge (or index rebuild) at a time. Taken before `flush_lock`, never after it.
    pub merge_lock: Mutex<()>,
    /// Test hook: run once when a merge's index walk reaches its first key.
    #[cfg(test)]
    pub(crate) merge_walk_hook: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    wake: (Mutex<bool>, Condvar),
    bookmarks: sled::Tree,
    marks: sled::Tree,
    validity: sled::Tree,
    /// Our own record of the three trees above and the merge state (sled may lose them).
    pub metalog: MetaLog,
    last_mark_gen: AtomicU64,
    /// The first stamp of this journal's history.
    born: u64,
    /// Free space of the journal's filesystem (`min_free_percent`).
    space: Mutex<Arc<dyn SpaceProbe>>,
    /// Writes in flight and extents written, for replication.
    changes: Arc<ChangeTracker>,
}

/// The journal's birth stamp from `DIR/born`, written (and made durable) on first open.
fn read_or_create_born(dir: &Path, clock: &StampClock) -> Result<u64> {
    let path = dir.join("born");
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .map_err(|_| JournalError::Corrupt {
                file: path.display().to_string(),
                offset: 0,
                reason: "not a time stamp".into(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let born = clock.stamp();
            let tmp = dir.join("born.tmp");
            std::fs::write(&tmp, format!("{born}\n"))?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            super::partial::sync_dir(dir)?;
            Ok(born)
        }
        Err(e) => Err(e.into()),
    }
}

/// Open `meta.log` and make the sled trees say what it says (it is the authority: sled may
/// have lost them). A journal from before the log seeds it from sled.
fn load_metadata(
    dir: &Path,
    primary: &PrimaryJournal,
    bookmarks: &sled::Tree,
    marks: &sled::Tree,
    validity: &sled::Tree,
) -> Result<(MetaLog, u64)> {
    let opened = MetaLog::open(dir)?;
    let be = |v: &[u8]| <[u8; 8]>::try_from(v).ok().map(u64::from_be_bytes);
    let state = if opened.created {
        let mut s = MetaState::default();
        for kv in bookmarks.iter() {
            let (k, v) = kv?;
            if let Some(ts) = be(&v) {
                s.bookmarks
                    .insert(String::from_utf8_lossy(&k).into_owned(), ts);
            }
        }
        for kv in marks.iter() {
            if let Some(ts) = be(&kv?.0) {
                s.marks.insert(ts);
            }
        }
        for kv in validity.iter() {
            let (k, v) = kv?;
            if let (Some(since), Some(port), Some(until)) =
                (k.get(0..8).and_then(be), k.get(8..16).and_then(be), be(&v))
            {
                s.validity.insert((since, port), until);
            }
        }
        let meta =
            |key: &str| -> Result<Option<u64>> { Ok(primary.meta.get(key)?.and_then(|v| be(&v))) };
        if let (Some(now), Some(horizon)) = (meta("merge_now")?, meta("horizon")?) {
            s.merge = Some((now, horizon));
        }
        opened.log.rewrite(&s)?;
        s
    } else {
        opened.state
    };
    bookmarks.clear()?;
    for (name, ts) in &state.bookmarks {
        bookmarks.insert(name.as_bytes(), &ts.to_be_bytes())?;
    }
    marks.clear()?;
    for ts in &state.marks {
        marks.insert(ts.to_be_bytes(), &[])?;
    }
    validity.clear()?;
    for (&(since, port), until) in &state.validity {
        let mut k = since.to_be_bytes().to_vec();
        k.extend_from_slice(&port.to_be_bytes());
        validity.insert(k, &until.to_be_bytes())?;
    }
    if let Some((now, horizon)) = state.merge {
        primary.meta.insert("merge_now", &now.to_be_bytes())?;
        primary.meta.insert("horizon", &horizon.to_be_bytes())?;
    }
    Ok((opened.log, opened.cut))
}

/// Tell the background threads to stop and wait for them.
fn stop_threads(shared: &Shared, threads: Vec<JoinHandle<()>>) {
    {
        let mut stop = lock(&shared.wake.0);
        *stop = true;
        shared.wake.1.notify_all();
    }
    for h in threads {
        let _ = h.join();
    }
}

/// The journaling wrapper around a volume.
pub struct JournaledStore {
    shared: Arc<Shared>,
    /// The background threads: the flusher (commits, batches, flushes into the primary) and
    /// the merger (retention and space merges).
    flusher: Mutex<Vec<JoinHandle<()>>>,
    recovery: RecoveryReport,
    /// Set by the `crash` test hook: drop without the shutdown flush.
    crashed: std::sync::atomic::AtomicBool,
}

impl JournaledStore {
    /// Open (or create) the journal in `dir` for the volume `inner`, recovering what a crash left.
    pub fn open(dir: &Path, inner: Arc<dyn BlockStore>, cfg: JournalConfig) -> Result<Self> {
        Self::open_with_clock(dir, inner, cfg, Arc::new(SystemClock))
    }

    /// As `open`, with an injected wall clock.
    pub fn open_with_clock(
        dir: &Path,
        inner: Arc<dyn BlockStore>,
        cfg: JournalConfig,
        wall: Arc<dyn WallClock>,
    ) -> Result<Self> {
        cfg.validate()?;
        let block_size = inner.block_size();
        let chunk_bytes = cfg.chunk_bytes(block_size);
        if block_size == 0 || chunk_bytes % block_size != 0 {
            return Err(JournalError::Config(
                "chunk size must be a multiple of the block size".into(),
            ));
        }
        std::fs::create_dir_all(dir)?;
        let (primary, prec) = PrimaryJournal::open_with(
            dir,
            chunk_bytes,
            block_size,
            cfg.segment_size,
            cfg.index_compression,
        )?;
        let clock = StampClock::new(wall);
        clock.observe(prec.max_ts);
        let partial_dir = dir.join("partial");
        std::fs::create_dir_all(&partial_dir)?;
        let mut report = RecoveryReport {
            primary: prec,
            ..Default::default()
        };
        // Replay partial journals left behind into the primary, then delete them.
        let mut files: Vec<PathBuf> = std::fs::read_dir(&partial_dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        files.sort();
        // An outcome may be recorded in a later file than its entry (after a rotation), or
        // after its entry went to the primary: statuses are matched across all files, and the
        // ones whose entries are not here go to the primary as status records.
        let mut replayed = Vec::with_capacity(files.len());
        let mut outcomes: HashMap<(u64, u64), StatusUpdate> = HashMap::new();
        for f in &files {
            let r = replay_file(f)?;
            if let Some(t) = &r.tail {
                tracing::warn!(
                    "partial journal {} ends at a bad record at {}: {}",
                    f.display(),
                    t.offset,
                    t.reason
                );
            }
            for u in &r.statuses {
                outcomes.insert((u.port, u.seq), *u);
            }
            replayed.push(r.entries);
        }
        let mut matched = std::collections::HashSet::new();
        for mut entries in replayed {
            for e in &mut entries {
                if let Some(u) = outcomes.get(&(e.port, e.seq)) {
                    e.status = u.status;
                    matched.insert((e.port, e.seq));
                }
            }
            if let Some(m) = entries.iter().map(|e| e.ts).max() {
                clock.observe(m);
            }
            report.replayed_entries += entries.iter().map(|e| u64::from(e.chunks())).sum::<u64>();
            primary.append(&entries)?;
        }
        // Failures always (they carry the command's exact range), other outcomes of entries
        // that already left the partial journals.
        let mut late: Vec<StatusUpdate> = outcomes
            .into_values()
            .filter(|u| {
                u.status == Status::Failed
                    || (u.status == Status::Ok && !matched.contains(&(u.port, u.seq)))
            })
            .collect();
        late.sort_by_key(|u| (u.ts, u.port, u.seq));
        primary.append_records(&late.into_iter().map(Record::Status).collect::<Vec<_>>())?;
        for f in &files {
            std::fs::remove_file(f)?;
            report.partial_files += 1;
        }
        super::partial::sync_dir(&partial_dir)?;
        // History starts when the journal is first opened: no point before it can be shown.
        // Kept in a file of its own, since the sled index may be rebuilt.
        let born = read_or_create_born(dir, &clock)?;
        let sizes = SizeHistory::open(dir, born, clock.stamp(), inner.num_blocks())?;
        let bookmarks = primary.db.open_tree("bookmarks")?;
        let marks = primary.db.open_tree("consistency_marks")?;
        let validity = primary.db.open_tree("port_validity")?;
        let (metalog, cut) = load_metadata(dir, &primary, &bookmarks, &marks, &validity)?;
        report.metadata_tail_cut = cut;
        let shared = Arc::new(Shared {
            block_size: block_size as usize,
            bpc: (chunk_bytes / block_size) as u64,
            blocks: AtomicU64::new(inner.num_blocks()),
            sizes,
            grow_lock: Mutex::new(()),
            inner,
            cfg,
            clock,
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            ports: RwLock::new(HashMap::new()),
            partial_held: Arc::default(),
            partial_dir,
            primary,
            cache: Mutex::new(DirtyCache::default()),
            gen: AtomicU64::new(0),
            durable_gen: AtomicU64::new(0),
            sync_lock: Mutex::new(()),
            flush_lock: Mutex::new(()),
            merge_lock: Mutex::new(()),
            #[cfg(test)]
            merge_walk_hook: Mutex::new(None),
            wake: (Mutex::new(false), Condvar::new()),
            bookmarks,
            marks,
            validity,
            metalog,
            last_mark_gen: AtomicU64::new(u64::MAX),
            born,
            space: Mutex::new(Arc::new(FsProbe(dir.to_path_buf()))),
            changes: Arc::default(),
        });
        let bg = shared.clone();
        let flusher = std::thread::Builder::new()
            .name("journal-flusher".into())
            .spawn(move || bg.flusher_loop())?;
        let bg = shared.clone();
        let merger = std::thread::Builder::new()
            .name("journal-merger".into())
            .spawn(move || bg.merger_loop());
        let merger = match merger {
            Ok(m) => m,
            Err(e) => {
                stop_threads(&shared, vec![flusher]);
                return Err(e.into());
            }
        };
        Ok(JournaledStore {
            shared,
            flusher: Mutex::new(vec![flusher, merger]),
            crashed: std::sync::atomic::AtomicBool::new(false),
            recovery: report,
        })
    }

    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// When history begins: the journal's creation.
    pub fn born(&self) -> u64 {
        self.shared.born
    }

    /// The oldest point still available: the journal's creation, or later once merges (the
    /// retention policy or the size quota) dropped older history.
    pub fn oldest_point(&self) -> u64 {
        let meta = |k: &str| {
            self.shared
                .primary
                .meta
                .get(k)
                .ok()
                .flatten()
                .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0)
        };
        let horizon = if meta("merge_now") > 0 {
            meta("horizon").saturating_add(1)
        } else {
            0
        };
        self.shared.born.max(horizon)
    }

    /// The newest stamp handed out.
    pub fn last_stamp(&self) -> u64 {
        self.shared.clock.last()
    }

    /// The newest stamp at or before which every write has completed: a view at it holds
    /// every write stamped up to it, and no write is half-way in.
    pub fn settled_stamp(&self) -> u64 {
        self.shared.changes.settled(&self.shared.clock)
    }

    /// Track which extents of `extent_blocks` blocks are written from now on (writes in flight
    /// included), for shipping only what changed; see [`ChangeSubscription::take`]. Past
    /// `max_extents` marked extents it reports "unknown" instead of listing them.
    pub fn subscribe_changes(&self, extent_blocks: u64, max_extents: usize) -> ChangeSubscription {
        self.shared.changes.subscribe(extent_blocks, max_extents)
    }

    /// A read-only view of the volume as it was at `ts` (µs since the epoch). Cheap: nothing
    /// is built up front, every read looks its chunks up in the journal.
    pub fn view_at(&self, ts: u64) -> Result<Arc<dyn BlockStore>> {
        Ok(Arc::new(self.view(ts)?))
    }

    /// As `view_at`, with the concrete type (it tells the retained point it reads).
    pub fn view(&self, ts: u64) -> Result<JournalView> {
        let point = self.shared.resolve_point(ts)?;
        Ok(JournalView::new(self.shared.clone(), point))
    }

    /// Write the volume's content at `ts` back onto the volume through the journaled write
    /// path, so the restore itself can be undone. `progress(done_chunks, total_chunks)`.
    ///
    /// Works in batches of up to 1 MiB: the batch is read from the view (one index walk) and
    /// from the volume, compared chunk by chunk, and each run of consecutive chunks that differ
    /// goes back with one journaled write (or one unmap, for chunks unallocated at `ts`).
    /// Returns the number of chunks changed.
    pub fn restore_to(&self, ts: u64, progress: &mut dyn FnMut(u64, u64)) -> Result<u64> {
        let view = self.view(ts)?;
        let s = &self.shared;
        let bs = s.block_size;
        let chunks = view.num_blocks().div_ceil(s.bpc);
        let chunk_bytes = s.bpc as usize * bs;
        let batch = ((1usize << 20) / chunk_bytes).max(1) as u64;
        let origin = IoOrigin::default();
        let mut changed = 0;
        let mut then = Vec::new();
        let mut now = Vec::new();
        let mut c0 = 0;
        while c0 < chunks {
            let c1 = (c0 + batch).min(chunks) - 1;
            let (lba, _) = s.chunk_range(c0);
            let (last, last_blocks) = s.chunk_range(c1);
            let len = ((last + last_blocks - lba) as usize) * bs;
            then.resize(len, 0);
            now.resize(len, 0);
            view.read(lba, &mut then)?;
            s.read_current(lba, &mut now)?;
            // What chunk `c` needs: nothing, its data from `ts`, or an unmap.
            #[derive(Clone, Copy, PartialEq)]
            enum Need {
                Keep,
                Write,
                Unmap,
            }
            let mut needs = Vec::with_capacity((c1 - c0 + 1) as usize);
            for c in c0..=c1 {
                let (clba, cblocks) = s.chunk_range(c);
                let r = ((clba - lba) as usize) * bs..((clba + cblocks - lba) as usize) * bs;
                let zeros = then[r.clone()].iter().all(|b| *b == 0);
                let need = if zeros && view.chunk(c)? == ChunkAt::Unallocated {
                    let (a, n) = self.allocation(clba, cblocks)?;
                    if a == Allocation::Deallocated && n >= cblocks {
                        Need::Keep
                    } else {
                        Need::Unmap
                    }
                } else if then[r.clone()] != now[r] {
                    Need::Write
                } else {
                    Need::Keep
                };
                needs.push(need);
            }
            let mut i = 0;
            while i < needs.len() {
                let need = needs[i];
                let mut k = i + 1;
                while k < needs.len() && needs[k] == need {
                    k += 1;
                }
                let (from, _) = s.chunk_range(c0 + i as u64);
                let (to_lba, to_blocks) = s.chunk_range(c0 + k as u64 - 1);
                let to = to_lba + to_blocks;
                match need {
                    Need::Keep => {}
                    Need::Write => {
                        let r = ((from - lba) as usize) * bs..((to - lba) as usize) * bs;
                        self.write(origin, from, &then[r], false)?;
                    }
                    Need::Unmap => self.unmap(origin, from, to - from)?,
                }
                if need != Need::Keep {
                    changed += (k - i) as u64;
                }
                i = k;
            }
            progress(c1 + 1, chunks);
            c0 = c1 + 1;
        }
        // Blocks the volume gained after `ts` did not exist then: deallocate what was written
        // there since (the volume cannot shrink back).
        let mut lba = view.num_blocks();
        while lba < s.num_blocks() {
            let (a, n) = self.allocation(lba, s.num_blocks() - lba)?;
            if a == Allocation::Mapped {
                self.unmap(origin, lba, n)?;
                changed += n.div_ceil(s.bpc);
            }
            lba += n;
        }
        self.flush()?;
        Ok(changed)
    }

    /// The sizes the volume has had: (from stamp, blocks), oldest first.
    pub fn sizes(&self) -> Vec<(u64, u64)> {
        self.shared.sizes.all()
    }

    /// Name the current moment; returns its stamp.
    pub fn bookmark(&self, name: &str) -> Result<u64> {
        let ts = self.shared.clock.stamp();
        self.shared.metalog.append(
            &Op::Bookmark {
                ts,
                name: name.to_string(),
            },
            true,
        )?;
        self.shared.bookmarks.insert(name, &ts.to_be_bytes())?;
        self.shared.primary.flush_index()?;
        Ok(ts)
    }

    pub fn bookmarks(&self) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for kv in self.shared.bookmarks.iter() {
            let (k, v) = kv?;
            if let Ok(a) = <[u8; 8]>::try_from(v.as_ref()) {
                out.push((
                    String::from_utf8_lossy(&k).into_owned(),
                    u64::from_be_bytes(a),
                ));
            }
        }
        Ok(out)
    }

    pub fn delete_bookmark(&self, name: &str) -> Result<bool> {
        self.shared.metalog.append(
            &Op::Unbookmark {
                name: name.to_string(),
            },
            true,
        )?;
        let had = self.shared.bookmarks.remove(name)?.is_some();
        self.shared.primary.flush_index()?;
        Ok(had)
    }

    /// Stamps of SYNCHRONIZE CACHE completions (points where the initiators' data was durable).
    pub fn consistency_marks(&self, from: u64, to: u64) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for kv in self
            .shared
            .marks
            .range(from.to_be_bytes()..=to.to_be_bytes())
        {
            let (k, _) = kv?;
            if let Ok(a) = <[u8; 8]>::try_from(k.as_ref()) {
                out.push(u64::from_be_bytes(a));
            }
        }
        Ok(out)
    }

    /// How long the oldest journal entry not yet durable has waited, at wall time `now` (µs
    /// since the epoch): zero when everything journaled is durable.
    pub fn flush_lag(&self, now: u64) -> Duration {
        let ports: Vec<_> = self
            .shared
            .ports
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let oldest = ports
            .iter()
            .filter_map(|p| p.lock().oldest_unsynced_ts())
            .min();
        Duration::from_micros(oldest.map_or(0, |ts| now.saturating_sub(ts)))
    }

    /// How long a merge has been due at wall time `now`: the time since the retention policy
    /// first wanted history this journal still keeps dropped. Zero while merges keep up.
    pub fn merge_lag(&self, now: u64) -> Duration {
        let due = self.shared.cfg.retention.merge_due(self.oldest_point());
        Duration::from_micros(now.saturating_sub(due))
    }

    /// Every port that journaled writes since the journal was opened, and every port recorded
    /// invalid now, with whether its journal is valid now (`false` until it resynchronises).
    pub fn port_validity(&self) -> Result<Vec<(u64, bool)>> {
        let invalid = self
            .shared
            .invalid_ports(self.last_stamp().saturating_add(1), u64::MAX)?;
        let mut ports: Vec<u64> = self
            .shared
            .ports
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .chain(invalid.iter().copied())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        Ok(ports
            .into_iter()
            .map(|p| (p, !invalid.contains(&p)))
            .collect())
    }

    /// Ports whose partial journal was invalid at any time in `[from, to]`.
    pub fn invalid_ports(&self, from: u64, to: u64) -> Result<Vec<u64>> {
        self.shared.invalid_ports(from, to)
    }

    /// Writes whose journal entry ends `Failed` (the initiator got CHECK CONDITION after the
    /// old data was journaled), stamped in `[from, to]`, oldest first, each with the command's
    /// range. Kept as long as the history around them.
    pub fn failed_writes(&self, from: u64, to: u64) -> Result<Vec<StatusUpdate>> {
        let s = &self.shared;
        // The ports first: an outcome moves from a port to the primary, never back.
        let mut out: Vec<StatusUpdate> = Vec::new();
        for pj in s.all_ports() {
            out.extend(
                pj.lock()
                    .late()
                    .iter()
                    .filter(|u| u.status == Status::Failed && (from..=to).contains(&u.ts))
                    .copied(),
            );
        }
        out.extend(s.primary.failed_writes(from, to)?);
        out.sort_by_key(|u| (u.ts, u.port, u.seq));
        out.dedup_by_key(|u| (u.ts, u.port, u.seq));
        Ok(out)
    }

    /// Merged windows ending after `after` whose port validity bit vector has a port invalid.
    pub fn incomplete_windows(&self, after: u64) -> Result<Vec<super::record::MergedWindow>> {
        Ok(self
            .shared
            .primary
            .windows_after(after)?
            .into_iter()
            .map(|(w, _)| w)
            .filter(|w| !w.complete())
            .collect())
    }

    /// Apply the retention policy now.
    pub fn merge(&self) -> Result<super::merge::MergeReport> {
        self.shared.merge()
    }

    /// Drop the index and rebuild it from the segment files.
    pub fn rebuild_index(&self) -> Result<PrimaryRecovery> {
        // Not during a merge's walk: it would miss keys and take their segments for dead.
        let _m = lock(&self.shared.merge_lock);
        let _g = lock(&self.shared.flush_lock);
        self.shared.primary.rebuild_index()
    }

    /// Move every partial journal into the primary journal now.
    pub fn flush_partials(&self) -> Result<()> {
        self.shared.flush_all_ports()
    }

    /// Number of entries in the primary index.
    pub fn primary_entries(&self) -> usize {
        self.shared.primary.len()
    }

    /// Old-data bytes held in memory by all partial journals.
    #[cfg(test)]
    pub(crate) fn partial_bytes(&self) -> u64 {
        self.shared.all_ports().iter().map(|p| p.lock().bytes).sum()
    }

    fn stop_flusher(&self) {
        let threads = std::mem::take(&mut *lock(&self.flusher));
        stop_threads(&self.shared, threads);
    }

    /// Test hook: record `port` invalid from `since` (as a failed append or commit does), or
    /// resynchronised now.
    #[cfg(test)]
    pub(crate) fn set_port_invalid(&self, port: u64, since: Option<u64>) {
        match since {
            Some(since) => self.shared.mark_invalid(port, since),
            None => self.shared.mark_valid(port),
        }
    }

    /// Test hook: the index's chunk versions counted by walking it (`primary_entries` is the
    /// running count).
    #[cfg(test)]
    pub(crate) fn index_walk_len(&self) -> usize {
        self.shared.primary.walk_len()
    }

    /// Test hook: `f` runs once when the next merge's index walk reaches its first key.
    #[cfg(test)]
    pub(crate) fn set_merge_walk_hook(&self, f: impl FnOnce() + Send + 'static) {
        *lock(&self.shared.merge_walk_hook) = Some(Box::new(f));
    }

    /// Test hook: ask `probe` instead of the filesystem how much space is free.
    #[cfg(test)]
    pub(crate) fn set_space_probe(&self, probe: Arc<dyn SpaceProbe>) {
        *lock(&self.shared.space) = probe;
    }

    /// Test hook: dirty chunks that hold a piece of a write's data rather than a copy.
    #[cfg(test)]
    pub(crate) fn shared_chunks(&self) -> usize {
        lock(&self.shared.cache)
            .chunks
            .values()
            .filter(|d| matches!(d.data, ChunkData::Shared { .. }))
            .count()
    }

    /// Test hook: back-pressure's flush of every port at `limit` bytes, as a writer that found
    /// its port over `limit` runs it once the flush lock is its.
    #[cfg(test)]
    pub(crate) fn backpressure_flush(&self, limit: u64) -> Result<()> {
        for pj in self.shared.all_ports() {
            self.shared.flush_port_over(&pj, limit)?;
        }
        Ok(())
    }

    /// Test hook: the flush lock, held as a flush holds it (flushes and back-pressure wait).
    #[cfg(test)]
    pub(crate) fn hold_flush_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        lock(&self.shared.flush_lock)
    }

    /// Test hook: back-pressure's flush of every port at `limit` bytes for a caller holding
    /// the flush lock (`hold_flush_lock`).
    #[cfg(test)]
    pub(crate) fn backpressure_flush_held(
        &self,
        held: &std::sync::MutexGuard<'_, ()>,
        limit: u64,
    ) -> Result<()> {
        for pj in self.shared.all_ports() {
            self.shared
                .flush_port_when_held(&pj, &|p| p.bytes >= limit, held)?;
        }
        Ok(())
    }

    /// Test hook: write every port's waiting entries to its partial file, as the background
    /// round does every `commit_interval`.
    #[cfg(test)]
    pub(crate) fn write_partials(&self) {
        for pj in self.shared.all_ports() {
            pj.lock_idle()
                .write_pending()
                .expect("partial journal write");
        }
    }

    /// Test hook: stop as if the process died (dirty cache lost, nothing flushed). The
    /// handles are closed as the kernel would close them (so the index lock is released), but
    /// nothing of the journal's own shutdown runs.
    #[cfg(test)]
    pub(crate) fn crash(self) {
        self.stop_flusher();
        lock(&self.shared.cache).clear();
        self.crashed.store(true, Ordering::SeqCst);
    }
}

impl Drop for JournaledStore {
    fn drop(&mut self) {
        self.stop_flusher();
        if self.crashed.load(Ordering::SeqCst) {
            return;
        }
        let s = &self.shared;
        if let Err(e) = s
            .sync_upto(s.gen.load(Ordering::SeqCst))
            .map_err(JournalError::from)
            .and_then(|_| s.flush_all_ports())
            .and_then(|_| s.primary.flush_index())
        {
            tracing::error!("journal shutdown flush failed: {e}");
        }
    }
}

impl JournaledStore {
    /// A write; with `share` (the same bytes as `data`), the dirty cache keeps pieces of it
    /// instead of copies.
    fn write_new(
        &self,
        origin: IoOrigin,
        lba: u64,
        data: &[u8],
        share: Option<&Bytes>,
        fua: bool,
    ) -> Result<(), StorageError> {
        let s = &self.shared;
        if data.len() % s.block_size != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "write is not a whole number of blocks",
            )
            .into());
        }
        let blocks = (data.len() / s.block_size) as u64;
        s.change(origin.port, lba, blocks, Some(data), share, fua)?;
        Ok(())
    }
}

impl BlockStore for JournaledStore {
    fn block_size(&self) -> u32 {
        self.shared.block_size as u32
    }
    fn num_blocks(&self) -> u64 {
        self.shared.num_blocks()
    }
    fn read_only(&self) -> bool {
        self.shared.inner.read_only()
    }
    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        self.shared.read_current(lba, buf)
    }
    /// Grow the volume and note the new size with its time stamp, so that views of earlier
    /// times keep their size. The stamp is taken after the backing store has grown and before
    /// the new blocks can be written, so every write to them is stamped later.
    fn grow(&self, num_blocks: u64) -> Result<(), StorageError> {
        let s = &self.shared;
        let _g = lock(&s.grow_lock);
        let current = s.num_blocks();
        crate::storage::check_growth(current, num_blocks)?;
        if num_blocks == current {
            return Ok(());
        }
        if current % s.bpc != 0 {
            return Err(StorageError::CannotResize(format!(
                "the volume's size is not a whole number of journal chunks ({} bytes), so its \
                 last chunk cannot grow",
                s.bpc * s.block_size as u64
            )));
        }
        s.inner.grow(num_blocks)?;
        s.sizes
            .record(s.clock.stamp(), num_blocks)
            .map_err(|e| StorageError::Io(std::io::Error::other(e.to_string())))?;
        s.blocks.store(num_blocks, Ordering::Release);
        tracing::info!(from = current, to = num_blocks, "volume grown");
        Ok(())
    }
    fn write(
        &self,
        origin: IoOrigin,
        lba: u64,
        data: &[u8],
        fua: bool,
    ) -> Result<(), StorageError> {
        self.write_new(origin, lba, data, None, fua)
    }
    fn write_shared(
        &self,
        origin: IoOrigin,
        lba: u64,
        data: Bytes,
        fua: bool,
    ) -> Result<(), StorageError> {
        let share = (data.len() >= SHARE_MIN).then_some(&data);
        self.write_new(origin, lba, &data, share, fua)
    }
    fn unmap(&self, origin: IoOrigin, lba: u64, blocks: u64) -> Result<(), StorageError> {
        // A deallocation carries no data, so one command may cover the whole volume (WRITE
        // SAME with UNMAP): journal it in pieces, so that the old data held in memory at once
        // (the read buffer, the partial journal, the dirty cache) stays bounded. SCSI makes no
        // promise that a multi-block command is atomic, and each piece is journaled before it
        // is applied, so a point in time between two pieces reads a partly unmapped range.
        let s = &self.shared;
        let piece = (MAX_UNMAP_PIECE / s.block_size as u64).max(s.bpc) / s.bpc * s.bpc;
        s.check_range(lba, blocks)?;
        let mut b = lba;
        while b < lba + blocks {
            // Cut on chunk boundaries so no chunk is journaled twice by one command.
            let end = (lba + blocks).min((b / s.bpc * s.bpc).saturating_add(piece));
            s.change(origin.port, b, end - b, None, None, false)?;
            b = end;
        }
        Ok(())
    }
    fn flush(&self) -> Result<(), StorageError> {
        let s = &self.shared;
        let gen = s.gen.load(Ordering::SeqCst);
        s.sync_upto(gen)?;
        // Consistency mark: everything acknowledged so far is durable at this stamp.
        if s.last_mark_gen.swap(gen, Ordering::SeqCst) != gen {
            let ts = s.clock.stamp();
            s.metalog.append(&Op::Mark { ts }, false)?;
            s.marks
                .insert(ts.to_be_bytes(), &[])
                .map_err(JournalError::from)?;
        }
        Ok(())
    }
    fn allocation(&self, lba: u64, max_blocks: u64) -> Result<(Allocation, u64), StorageError> {
        self.shared.allocation_current(lba, max_blocks)
    }
}

/// Logs a background failure when it first happens, then at most every 10 s with a count, so
/// a failing disk does not flood the log.
#[derive(Default)]
struct ErrorLog {
    last: Option<(String, Instant)>,
    repeats: u64,
}

impl ErrorLog {
    fn report(&mut self, what: &str, e: &dyn std::fmt::Display) {
        let msg = format!("{what}: {e}");
        match &self.last {
            Some((m, at)) if *m == msg && at.elapsed() < Duration::from_secs(10) => {
                self.repeats += 1;
            }
            _ => {
                if self.repeats > 0 {
                    tracing::warn!(
                        "{msg} (and {} more times since the last report)",
                        self.repeats
                    );
                } else {
                    tracing::warn!("{msg}");
                }
                self.last = Some((msg, Instant::now()));
                self.repeats = 0;
            }
        }
    }
}

impl Shared {
    pub fn num_blocks(&self) -> u64 {
        self.blocks.load(Ordering::Acquire)
    }

    pub fn chunk_range(&self, c: u64) -> (u64, u64) {
        let lba = c * self.bpc;
        (lba, self.bpc.min(self.num_blocks().saturating_sub(lba)))
    }

    fn check_range(&self, lba: u64, blocks: u64) -> Result<(), StorageError> {
        match lba.checked_add(blocks) {
            Some(end) if end <= self.num_blocks() => Ok(()),
            _ => Err(StorageError::OutOfRange { lba, blocks }),
        }
    }

    fn lock_chunks(&self, c0: u64, c1: u64) -> Vec<std::sync::MutexGuard<'_, ()>> {
        stripes_of(c0, c1)
            .into_iter()
            .map(|i| lock(&self.stripes[i]))
            .collect()
    }

    fn port(&self, port: u64) -> Result<Arc<Port>> {
        if let Some(p) = self
            .ports
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&port)
        {
            return Ok(p.clone());
        }
        let mut ports = self.ports.write().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = ports.get(&port) {
            return Ok(p.clone());
        }
        let chunk_bytes = (self.bpc as usize * self.block_size) as u32;
        let p = Arc::new(Port::new(
            PartialJournal::create(&self.partial_dir, port, chunk_bytes, 0)?
                .count_in(self.partial_held.clone()),
        ));
        ports.insert(port, p.clone());
        Ok(p)
    }

    fn all_ports(&self) -> Vec<Arc<Port>> {
        self.ports
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The journaled write path. `data == None` is an unmap; `fua`: the data is durable on
    /// the volume before this returns. Returns the write's generation.
    ///
    /// Its journal entry ends with the outcome the caller gets: `Ok`, or `Failed` when the
    /// command fails after its old data was journaled (the FUA write-through, or a commit it
    /// waits for as back-pressure). A command that fails before (reading the old data) has no
    /// entry: nothing was journaled and nothing changed. The entry is held in memory and
    /// written to the port's file with a later batch; a failure there shows at the next
    /// commit (see `rescue_port`).
    fn change(
        &self,
        port: u64,
        lba: u64,
        blocks: u64,
        data: Option<&[u8]>,
        share: Option<&Bytes>,
        fua: bool,
    ) -> Result<u64, StorageError> {
        if self.inner.read_only() {
            return Err(StorageError::ReadOnly);
        }
        self.check_range(lba, blocks)?;
        if blocks == 0 {
            return Ok(self.gen.load(Ordering::SeqCst));
        }
        let c0 = lba / self.bpc;
        let c1 = (lba + blocks - 1) / self.bpc;
        let pj = self.port(port)?;
        let bs = self.block_size;
        // 1. Lock the chunk range.
        let guards = self.lock_chunks(c0, c1);
        // 2. Stamp while holding the lock (in flight for change tracking until step 6).
        let (ts, tracked) = self.changes.begin(&self.clock, lba, blocks);
        // 3. Old data of the covering chunks: cached chunks from the dirty cache (one lock),
        //    the rest from the volume with one allocation query and one read per run.
        let n = (c1 - c0 + 1) as usize;
        let (rlba, _) = self.chunk_range(c0);
        let (last_lba, last_blocks) = self.chunk_range(c1);
        let rblocks = last_lba + last_blocks - rlba;
        let mut old = vec![0u8; rblocks as usize * bs];
        let mut cached = vec![false; n];
        {
            let cache = lock(&self.cache);
            for (c, d) in cache.chunks.range(c0..=c1) {
                let i = (c - c0) as usize;
                let o = ((self.chunk_range(*c).0 - rlba) as usize) * bs;
                let d = d.data.as_slice();
                old[o..o + d.len()].copy_from_slice(d);
                cached[i] = true;
            }
        }
        // Per block of the range: deallocated on the volume (only asked for uncached chunks).
        let mut dealloc = vec![false; rblocks as usize];
        let mut i = 0;
        while i < n {
            if cached[i] {
                i += 1;
                continue;
            }
            let mut k = i;
            while k < n && !cached[k] {
                k += 1;
            }
            let from = self.chunk_range(c0 + i as u64).0;
            let (elba, eblocks) = self.chunk_range(c0 + k as u64 - 1);
            let to = elba + eblocks;
            let mut b = from;
            let mut any_data = false;
            while b < to {
                let (a, cnt) = self.inner.allocation(b, to - b)?;
                let cnt = cnt.clamp(1, to - b);
                if a == Allocation::Deallocated {
                    dealloc[(b - rlba) as usize..(b - rlba + cnt) as usize].fill(true);
                } else {
                    any_data = true;
                }
                b += cnt;
            }
            if any_data {
                let o = ((from - rlba) as usize) * bs;
                self.inner
                    .read(from, &mut old[o..((to - rlba) as usize) * bs])?;
            }
            i = k;
        }
        // The write's journal entry: one record over all its chunks (split only past
        // MAX_RECORD_SPAN), old data packed; the cache needs a base only for an edge chunk the
        // write covers partly and the cache does not hold.
        let unallocated = |i: usize| -> bool {
            let (clba, cblocks) = self.chunk_range(c0 + i as u64);
            !cached[i]
                && dealloc[(clba - rlba) as usize..(clba - rlba + cblocks) as usize]
                    .iter()
                    .all(|d| *d)
        };
        let covered = |c: u64| {
            let (clba, cblocks) = self.chunk_range(c);
            lba <= clba && lba + blocks >= clba + cblocks
        };
        let mut bases: Vec<(u64, Vec<u8>)> = Vec::new();
        for c in [c0, c1] {
            let i = (c - c0) as usize;
            if cached[i] || covered(c) || bases.iter().any(|b| b.0 == c) {
                continue;
            }
            let (clba, cblocks) = self.chunk_range(c);
            let o = ((clba - rlba) as usize) * bs;
            bases.push((
                c,
                if unallocated(i) {
                    vec![0u8; cblocks as usize * bs]
                } else {
                    old[o..o + cblocks as usize * bs].to_vec()
                },
            ));
        }
        let chunk_bytes = self.bpc as usize * bs;
        let per_record = (MAX_RECORD_SPAN / chunk_bytes as u64).max(1);
        let mut entries = Vec::with_capacity(1);
        let mut g0 = c0;
        while g0 <= c1 {
            let g1 = (g0 + per_record - 1).min(c1);
            let chunks = (g1 - g0 + 1) as u32;
            let (glba, _) = self.chunk_range(g0);
            let (llba, lblocks) = self.chunk_range(g1);
            let mut e = Entry {
                ts,
                port,
                seq: 0,
                lba: glba,
                blocks: (llba + lblocks - glba) as u32,
                chunk_blocks: self.bpc as u32,
                status: Status::Pending,
                unallocated: no_unallocated(chunks),
                merged: false,
                invalid_ports: Vec::new(),
                data: Vec::new(),
            };
            for k in 0..chunks {
                if unallocated((g0 - c0) as usize + k as usize) {
                    e.set_unallocated(k);
                }
            }
            let from = ((glba - rlba) as usize) * bs;
            let to = ((llba + lblocks - rlba) as usize) * bs;
            e.data = if e.unallocated.iter().any(|b| *b != 0) {
                let mut d = Vec::with_capacity(to - from);
                for k in 0..chunks {
                    if !e.is_unallocated(k) {
                        let (clba, cblocks) = self.chunk_range(g0 + u64::from(k));
                        let o = ((clba - rlba) as usize) * bs;
                        d.extend_from_slice(&old[o..o + cblocks as usize * bs]);
                    }
                }
                d
            } else if from == 0 && to == old.len() {
                // The whole read: the entry takes the buffer, no copy.
                std::mem::take(&mut old)
            } else {
                old[from..to].to_vec()
            };
            entries.push(e);
            g0 = g1 + 1;
        }
        drop(old);
        // 4. Journal {ts, port, range, old data, Pending} in the port's partial journal (held
        //    in memory, written to its file with the next batch).
        let seq = pj.lock().append(ts, entries);
        // 5. New data into the dirty cache (reads see it; the volume gets it after commit).
        let mut cache_bytes = 0;
        {
            let mut cache = lock(&self.cache);
            let put = |d: &mut DirtyChunk, clba: u64, from: u64, to: u64| {
                let (i, j) = ((from - clba) as usize, (to - clba) as usize);
                let dst = &mut d.data.make_mut()[i * bs..j * bs];
                match data {
                    Some(src) => {
                        let o = ((from - lba) as usize) * bs;
                        dst.copy_from_slice(&src[o..o + dst.len()]);
                        d.state[i..j].fill(DATA);
                    }
                    None => {
                        dst.fill(0);
                        d.state[i..j].fill(UNMAPPED);
                    }
                }
            };
            for c in c0..=c1 {
                let (clba, cblocks) = self.chunk_range(c);
                let from = lba.max(clba);
                let to = (lba + blocks).min(clba + cblocks);
                let len = cblocks as usize * bs;
                // A chunk this write covers whole, of a large write: its piece of the data.
                let piece = share.filter(|_| covered(c)).map(|whole| ChunkData::Shared {
                    whole: whole.clone(),
                    off: ((clba - lba) as usize) * bs,
                    len,
                });
                if let Some(d) = cache.chunks.get_mut(&c) {
                    match piece {
                        Some(p) => {
                            d.data = p;
                            d.state.fill(DATA);
                        }
                        None => put(d, clba, from, to),
                    }
                    d.add_dep(port, seq);
                    continue;
                }
                let mut d = if covered(c) {
                    // Covered whole by this write: no base, the new content as it is.
                    let (content, st) = match (piece, data) {
                        (Some(p), _) => (p, DATA),
                        (None, Some(src)) => {
                            let o = ((clba - lba) as usize) * bs;
                            (ChunkData::Owned(src[o..o + len].to_vec()), DATA)
                        }
                        (None, None) => (ChunkData::Owned(vec![0u8; len]), UNMAPPED),
                    };
                    DirtyChunk {
                        data: content,
                        state: smallvec::smallvec![st; cblocks as usize],
                        deps: Deps::new(),
                    }
                } else {
                    let base = match bases.iter().position(|b| b.0 == c) {
                        Some(k) => bases.swap_remove(k).1,
                        None => vec![0u8; len],
                    };
                    let mut d = DirtyChunk {
                        data: ChunkData::Owned(base),
                        state: smallvec::smallvec![CLEAN; cblocks as usize],
                        deps: Deps::new(),
                    };
                    put(&mut d, clba, from, to);
                    d
                };
                d.add_dep(port, seq);
                cache.chunks.insert(c, d);
                cache.bytes += len as u64;
            }
            cache.wait_for(port, seq, c0, c1);
            cache_bytes = cache_bytes.max(cache.bytes);
        }
        let gen = self.gen.fetch_add(1, Ordering::SeqCst) + 1;
        drop(guards);
        drop(tracked);
        // The writer whose append filled a batch writes it, outside the port's lock (the
        // port's other writers go on meanwhile); a failure is left to the next commit, which
        // writes the batch again (the entries stay held).
        if let Err(e) = pj.write_full_batch() {
            tracing::warn!(
                "partial journal of port {port} could not be written (retried at the next commit): {e}"
            );
        }
        // 6. Phase three: record the outcome the initiator gets.
        let outcome = self.finish_change(&pj, gen, cache_bytes, fua);
        let status = match outcome {
            Ok(()) => Status::Ok,
            Err(_) => Status::Failed,
        };
        // A failure is written at once, so the port must have no batch out.
        let mut journal = match status {
            Status::Failed => pj.lock_idle(),
            _ => pj.lock(),
        };
        if let Err(e) = journal.set_status(ts, seq, status, lba, blocks) {
            tracing::warn!("cannot record the outcome of write {seq} of port {port}: {e}");
        }
        outcome.map(|()| gen)
    }

    /// What may still fail once a change is journaled and cached: back-pressure (the writer
    /// waits for a flush or a commit) and, with FUA, the write-through.
    fn finish_change(
        &self,
        pj: &Port,
        gen: u64,
        cache_bytes: u64,
        fua: bool,
    ) -> Result<(), StorageError> {
        let partial_bytes = pj.lock().bytes;
        let held = self.partial_held.load(Ordering::Relaxed);
        if cache_bytes >= self.cfg.dirty_cache_limit
            || partial_bytes >= self.cfg.partial_capacity
            || held >= self.cfg.partial_limit / 2
        {
            self.kick();
        }
        if partial_bytes >= 2 * self.cfg.partial_capacity {
            // Back-pressure: the flusher is behind; move this port's entries into the primary
            // now, so a port never holds more than about twice `partial_capacity` in memory.
            self.flush_port_over(pj, 2 * self.cfg.partial_capacity)
                .map_err(StorageError::from)?;
        }
        if held >= self.cfg.partial_limit {
            // The same for the volume's ports together: the largest go into the primary. Their
            // failure is not this write's (its own port's flush above fails it when due).
            if let Err(e) = self.flush_largest_ports(self.cfg.partial_limit) {
                tracing::warn!("partial journals over partial_limit could not be flushed: {e}");
            }
        }
        if cache_bytes >= 2 * self.cfg.dirty_cache_limit {
            // Back-pressure: wait for the group commit and the volume writes (not a volume
            // flush: that is FUA's and SYNCHRONIZE CACHE's).
            self.drain_cache()?;
        }
        if fua {
            self.sync_upto(gen)?;
        }
        Ok(())
    }

    fn kick(&self) {
        self.wake.1.notify_all();
    }

    /// Make every write with generation <= `gen` durable: journal fsync (group commit), volume
    /// write, volume fsync.
    pub fn sync_upto(&self, gen: u64) -> Result<(), StorageError> {
        let _g = lock(&self.sync_lock);
        if self.durable_gen.load(Ordering::SeqCst) >= gen {
            return Ok(());
        }
        let target = self.gen.load(Ordering::SeqCst);
        self.commit_journals()?;
        self.apply_cache()?;
        self.inner.flush()?;
        self.durable_gen.fetch_max(target, Ordering::SeqCst);
        Ok(())
    }

    /// Group commit and apply the dirty cache to the volume, without flushing the volume.
    fn drain_cache(&self) -> Result<(), StorageError> {
        let _g = lock(&self.sync_lock);
        self.commit_journals()?;
        self.apply_cache()
    }

    /// Group commit: one fsync per partial journal with unsynced appends (and of a rotated file
    /// on its way into the primary, whose entries are not durable until that flush is done).
    fn commit_journals(&self) -> Result<()> {
        for pj in self.all_ports() {
            let target = pj.lock_idle().commit_target();
            let synced = match target {
                Ok(None) => Ok(None),
                Ok(Some((files, upto))) => files
                    .iter()
                    .try_for_each(|f| f.sync_data())
                    .map(|()| Some(upto)),
                Err(e) => Err(e),
            };
            match synced {
                Ok(None) => {}
                Ok(Some(upto)) => pj.lock().committed(upto),
                Err(e) => {
                    let port = pj.lock().port;
                    tracing::error!("partial journal of port {port} failed to write or sync: {e}");
                    self.rescue_port(&pj)?;
                }
            }
            // A rotated file that could not be fsynced: its entries go durable via the primary.
            if pj.lock().blocked.is_some() {
                self.flush_port(&pj)?;
            }
        }
        Ok(())
    }

    /// Apply dirty chunks whose journal entries are all durable to the volume.
    fn apply_cache(&self) -> Result<(), StorageError> {
        let synced: HashMap<u64, u64> = self
            .all_ports()
            .iter()
            .map(|p| {
                let p = p.lock();
                (p.port, p.synced_seq)
            })
            .collect();
        let ready = |d: &DirtyChunk| d.ready(&synced);
        let candidates = lock(&self.cache).take_ready(&synced);
        // Runs of consecutive chunks: one stripe-lock sequence, and one volume write for each
        // stretch of chunks whose blocks are all new data.
        const MAX_RUN: usize = 256;
        let mut k = 0;
        while k < candidates.len() {
            let mut e = k + 1;
            while e < candidates.len() && e - k < MAX_RUN && candidates[e] == candidates[e - 1] + 1
            {
                e += 1;
            }
            if let Err(err) = self.apply_run(&candidates[k..e], &ready) {
                lock(&self.cache).retry(candidates[k..].iter().copied());
                return Err(err);
            }
            k = e;
        }
        Ok(())
    }

    /// Apply the ready chunks of `run` (consecutive chunk numbers) to the volume.
    fn apply_run(
        &self,
        run: &[u64],
        ready: &dyn Fn(&DirtyChunk) -> bool,
    ) -> Result<(), StorageError> {
        let (c0, c1) = (run[0], run[run.len() - 1]);
        // Writers of these chunks are held off by the stripe locks; readers still see the
        // cached copies until the volume has them.
        let _g = self.lock_chunks(c0, c1);
        // What to write, copied out under the cache lock: runs of consecutive fully written
        // chunks as one buffer each (one volume write per run), other chunks as snapshots.
        enum Op {
            /// Consecutive fully written chunks, copied into one buffer.
            Run(u64, Vec<u8>),
            /// Consecutive chunks that are pieces of one write's data: `whole[from..to]`.
            Piece(u64, Bytes, usize, usize),
            Chunk(u64, DirtyChunk),
        }
        let mut ops: Vec<Op> = Vec::new();
        let mut snaps: Vec<u64> = Vec::with_capacity(run.len());
        {
            let cache = lock(&self.cache);
            let chunk_bytes = self.bpc as usize * self.block_size;
            let mut next = None;
            for (c, d) in cache.chunks.range(c0..=c1) {
                if !ready(d) {
                    continue;
                }
                snaps.push(*c);
                let (lba, _) = self.chunk_range(*c);
                if !d.state.iter().all(|s| *s == DATA) {
                    ops.push(Op::Chunk(
                        lba,
                        DirtyChunk {
                            data: d.data.clone(),
                            state: d.state.clone(),
                            deps: Deps::new(),
                        },
                    ));
                    next = None;
                    continue;
                }
                let follows = next == Some(*c);
                match (&d.data, ops.last_mut()) {
                    (ChunkData::Shared { whole, off, len }, Some(Op::Piece(_, w, _, to)))
                        if follows
                            && w.as_ptr() == whole.as_ptr()
                            && w.len() == whole.len()
                            && *to == *off =>
                    {
                        *to += len;
                    }
                    (ChunkData::Shared { whole, off, len }, _) => {
                        ops.push(Op::Piece(lba, whole.clone(), *off, off + len));
                    }
                    (ChunkData::Owned(data), Some(Op::Run(_, buf))) if follows => {
                        buf.extend_from_slice(data)
                    }
                    (ChunkData::Owned(data), _) => {
                        let mut buf = Vec::with_capacity((c1 - c + 1) as usize * chunk_bytes);
                        buf.extend_from_slice(data);
                        ops.push(Op::Run(lba, buf));
                    }
                }
                next = Some(c + 1);
            }
        }
        for op in &ops {
            let origin = IoOrigin::default();
            match op {
                Op::Run(lba, buf) => self.inner.write(origin, *lba, buf, false)?,
                Op::Piece(lba, whole, from, to) => {
                    self.inner.write(origin, *lba, &whole[*from..*to], false)?
                }
                Op::Chunk(lba, d) => d.apply(&*self.inner, *lba, self.block_size)?,
            }
        }
        let mut cache = lock(&self.cache);
        for c in &snaps {
            let (_, blocks) = self.chunk_range(*c);
            if cache.chunks.remove(c).is_some() {
                cache.bytes = cache.bytes.saturating_sub(blocks * self.block_size as u64);
            }
        }
        Ok(())
    }

    /// Move one port's partial journal into the primary journal.
    pub fn flush_port(&self, pj: &Port) -> Result<()> {
        let f = lock(&self.flush_lock);
        self.flush_port_held(pj, &f)
    }

    /// Back-pressure's flush: move the port's partial journal into the primary if it still
    /// holds at least `limit` bytes once the flush lock is ours. Writers that found the port
    /// over the limit queue on the lock behind the flush that brings it under; each of them
    /// flushing again would rotate and copy a file of a few entries, one fsync each.
    fn flush_port_over(&self, pj: &Port, limit: u64) -> Result<()> {
        self.flush_port_when(pj, &|p| p.bytes >= limit)
    }

    /// Move the port's partial journal into the primary if `due` still says so once the flush
    /// lock is ours: a flush that ran while we waited for the lock may have emptied it.
    fn flush_port_when(&self, pj: &Port, due: &dyn Fn(&PartialJournal) -> bool) -> Result<()> {
        let f = lock(&self.flush_lock);
        self.flush_port_when_held(pj, due, &f)
    }

    /// `flush_port_when` for a caller that holds the flush lock.
    fn flush_port_when_held(
        &self,
        pj: &Port,
        due: &dyn Fn(&PartialJournal) -> bool,
        held: &std::sync::MutexGuard<'_, ()>,
    ) -> Result<()> {
        if !due(&pj.lock()) {
            return Ok(());
        }
        self.flush_port_held(pj, held)
    }

    /// Flush the ports holding the most old data into the primary until all of them together
    /// hold less than `limit` (`partial_limit`), or none holds anything.
    fn flush_largest_ports(&self, limit: u64) -> Result<()> {
        let f = lock(&self.flush_lock);
        for _ in 0..self.ports.read().unwrap_or_else(|p| p.into_inner()).len() {
            if self.partial_held.load(Ordering::Relaxed) < limit {
                break;
            }
            let largest = self
                .all_ports()
                .into_iter()
                .map(|pj| {
                    let bytes = pj.lock().bytes;
                    (bytes, pj)
                })
                .max_by_key(|(bytes, _)| *bytes);
            match largest {
                Some((bytes, pj)) if bytes > 0 => self.flush_port_held(&pj, &f)?,
                _ => break,
            }
        }
        Ok(())
    }

    /// The background round flushes a port whose partial journal holds `partial_capacity`
    /// bytes, or whose oldest entry waited `partial_flush_interval`.
    fn flush_due(&self, p: &PartialJournal) -> bool {
        p.bytes >= self.cfg.partial_capacity
            || p.first_append
                .is_some_and(|t| t.elapsed() >= self.cfg.partial_flush_interval.0)
    }

    /// `flush_port` for a caller that holds the flush lock (`_held`).
    fn flush_port_held(&self, pj: &Port, _held: &std::sync::MutexGuard<'_, ()>) -> Result<()> {
        let rotated = {
            // The rotated file must hold every batch claimed from it.
            let mut p = pj.lock_idle();
            if p.entries.is_empty() {
                drop(p);
                return self.flush_late(pj);
            }
            p.rotate()?
        };
        // Durable and indexed in the primary before it leaves the partial journal, so views
        // always find it in one or the other.
        let refs: Vec<(&Entry, Status)> = rotated.entries.iter().map(|(e, s)| (&**e, *s)).collect();
        // A full file becomes a primary segment as it is (its old data is not written again);
        // a small one (a port writing little) is copied, so segments do not become many and tiny.
        let adopt_from = (self.cfg.partial_capacity / 2).min(ADOPT_MIN_BYTES);
        let adopt = rotated.adoptable.as_ref().filter(|a| a.len >= adopt_from);
        let adopted = match adopt {
            None => false,
            Some(a) => match self.primary.adopt_segment(
                &a.file,
                &rotated.old_path,
                a.len,
                &refs,
                &a.places,
            ) {
                Ok(()) => true,
                Err(Adopt::NotTaken(e)) => {
                    tracing::warn!("partial journal not adopted as a segment, copying it: {e}");
                    false
                }
                Err(Adopt::Taken(e)) => {
                    // The entries are durable in their new segment, but the index may miss
                    // them: they stay in the partial journal (views find them there) and are
                    // copied into the primary by the next flush.
                    pj.lock().flush_failed(&rotated);
                    return Err(e);
                }
            },
        };
        if !adopted {
            if let Err(e) = self.primary.append_refs(&refs) {
                pj.lock().flush_failed(&rotated);
                return Err(e);
            }
        }
        let port = {
            let mut p = pj.lock();
            p.finish_flush(&rotated);
            p.port
        };
        if !adopted {
            std::fs::remove_file(&rotated.old_path)?;
        }
        if !rotated.superseded.is_empty() {
            for f in &rotated.superseded {
                match std::fs::remove_file(f) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                    _ => {}
                }
            }
            super::partial::sync_dir(&self.partial_dir)?;
        }
        // Outcomes recorded after the rotation follow their entries into the primary.
        self.flush_late(pj)?;
        // Everything this port journaled is durable in the primary again: it is resynchronised.
        self.mark_valid(port);
        Ok(())
    }

    /// A port's partial file could not be written or fsynced: its entries are still in memory,
    /// so the primary journal takes them now. If it cannot either, the port is invalid from its
    /// oldest entry not known durable (views from there on may miss its writes) until a flush
    /// works again.
    fn rescue_port(&self, pj: &Port) -> Result<()> {
        let Err(e) = self.flush_port(pj) else {
            return Ok(());
        };
        let (port, since) = {
            let p = pj.lock();
            (p.port, p.oldest_unsynced_ts())
        };
        self.mark_invalid(port, since.unwrap_or(self.clock.last()));
        Err(e)
    }

    /// Append the port's outcomes that wait for the primary journal (their entries are there,
    /// or go there first: see `PartialJournal::set_status`). The caller holds the flush lock.
    fn flush_late(&self, pj: &Port) -> Result<()> {
        let records: Vec<Record> = pj
            .lock()
            .late()
            .iter()
            .copied()
            .map(Record::Status)
            .collect();
        if records.is_empty() {
            return Ok(());
        }
        // The outcomes stay on the port until the primary has noted them (outcomes recorded
        // meanwhile are appended behind them).
        self.primary.append_records(&records)?;
        pj.lock().forget_late(records.len());
        Ok(())
    }

    pub fn flush_all_ports(&self) -> Result<()> {
        for pj in self.all_ports() {
            self.flush_port(&pj)?;
        }
        Ok(())
    }

    fn flusher_loop(self: Arc<Self>) {
        let interval = self.cfg.commit_interval.0;
        let mut errors = ErrorLog::default();
        while self.wait_or_stop(interval) {
            if let Err(e) = self.background_round() {
                errors.report("journal background commit failed", &e);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Wait up to `timeout` or until kicked; false once the journal is closing.
    fn wait_or_stop(&self, timeout: Duration) -> bool {
        let stop = lock(&self.wake.0);
        if *stop {
            return false;
        }
        let (stop, _) = self
            .wake
            .1
            .wait_timeout(stop, timeout)
            .unwrap_or_else(|p| p.into_inner());
        !*stop
    }

    /// Merges on their own thread: a merge walks the whole index, which takes seconds at
    /// millions of entries, and the flusher's rounds (and so the writes) must not wait for it.
    /// A timed merge starts `merge_interval` after the last one began, or
    /// [`MERGE_SPACING`] times as long as the last one took after it ended, whichever is
    /// later, so that merges take at most about a tenth of one CPU however big the index.
    fn merger_loop(self: Arc<Self>) {
        let merge_every = self.cfg.merge_interval.0;
        let mut last_merge = Instant::now();
        let mut last_took = Duration::ZERO;
        let mut last_space_check = Instant::now();
        // Space merges that freed nothing are retried only this often (each scans the index).
        let mut space_backoff = Duration::ZERO;
        let mut errors = ErrorLog::default();
        let tick = Duration::from_millis(100).min(if merge_every.is_zero() {
            Duration::MAX
        } else {
            merge_every
        });
        while self.wait_or_stop(tick) {
            let mut merge_now =
                !merge_every.is_zero() && last_merge.elapsed() >= merge_due(merge_every, last_took);
            let space_merge = !merge_now
                && self.cfg.min_free_percent > 0
                && last_space_check.elapsed() >= Duration::from_secs(1).max(space_backoff)
                && {
                    last_space_check = Instant::now();
                    self.space_low()
                };
            merge_now |= space_merge;
            if merge_now {
                last_merge = Instant::now();
                let r = self.merge();
                last_took = last_merge.elapsed();
                match r {
                    Ok(r) => {
                        space_backoff = if space_merge && r.segments_deleted.is_empty() {
                            Duration::from_secs(30)
                        } else {
                            Duration::ZERO
                        };
                    }
                    Err(e) => errors.report("journal merge failed", &e),
                }
            }
        }
    }

    /// The journal's filesystem has less than `min_free_percent` free.
    fn space_low(&self) -> bool {
        self.space_probe()
            .space()
            .is_ok_and(|s| s.shortfall(self.cfg.min_free_percent) > 0)
    }

    pub(crate) fn space_probe(&self) -> Arc<dyn SpaceProbe> {
        lock(&self.space).clone()
    }

    fn background_round(&self) -> Result<()> {
        {
            // Entries become durable when their partial journal is flushed into the primary
            // (one fsync of the old data there); the partial files themselves are fsynced only
            // for FUA, SYNCHRONIZE CACHE, and when the dirty cache is full.
            let _g = lock(&self.sync_lock);
            if lock(&self.cache).bytes >= self.cfg.dirty_cache_limit {
                self.commit_journals()?;
            }
            self.apply_cache()?;
        }
        for pj in self.all_ports() {
            let written = pj.write_waiting();
            let (due, late) = {
                let p = pj.lock();
                (self.flush_due(&p), p.has_late())
            };
            if let Err(e) = written {
                let port = pj.lock().port;
                tracing::error!("partial journal of port {port} could not be written: {e}");
                self.rescue_port(&pj)?;
            } else if due {
                // Asked again under the flush lock: a writer's back-pressure flush may have
                // moved the entries while this round waited for it (flushing again would
                // rotate and copy a file of the few entries written since, with an fsync).
                self.flush_port_when(&pj, &|p| self.flush_due(p))?;
            } else if late {
                // Outcomes of entries already in the primary follow them there; the entries
                // held now wait until their file is full (so it is adopted, not copied).
                let _f = lock(&self.flush_lock);
                self.flush_late(&pj)?;
            }
        }
        // Many ports, each below `partial_capacity`, may together hold more than the volume's
        // share: the largest go before writers have to wait for it.
        if self.partial_held.load(Ordering::Relaxed) >= self.cfg.partial_limit / 2 {
            self.flush_largest_ports(self.cfg.partial_limit / 2)?;
        }
        Ok(())
    }

    // ---- port validity ----

    fn mark_invalid(&self, port: u64, since: u64) {
        if let Err(e) = self.metalog.append(&Op::Invalid { port, since }, true) {
            tracing::error!("cannot log invalid port {port}: {e}");
        }
        let mut k = since.to_be_bytes().to_vec();
        k.extend_from_slice(&port.to_be_bytes());
        if let Err(e) = self.validity.insert(k, &u64::MAX.to_be_bytes()) {
            tracing::error!("cannot record invalid port {port}: {e}");
        }
        tracing::error!("partial journal of port {port} marked invalid from {since}");
    }

    /// Close the port's open invalid intervals at the current stamp: points after it are
    /// complete again for this port (every later write of it is journaled).
    fn mark_valid(&self, port: u64) {
        let open: Vec<sled::IVec> = self
            .validity
            .iter()
            .filter_map(|kv| kv.ok())
            .filter(|(k, v)| {
                k.get(8..16) == Some(&port.to_be_bytes()[..])
                    && v.as_ref() == u64::MAX.to_be_bytes()
            })
            .map(|(k, _)| k)
            .collect();
        if open.is_empty() {
            return;
        }
        let now = self.clock.stamp();
        if let Err(e) = self.metalog.append(&Op::Valid { port, at: now }, true) {
            tracing::error!("cannot log port {port} as resynchronised: {e}");
        }
        for k in open {
            if let Err(e) = self.validity.insert(k, &now.to_be_bytes()) {
                tracing::error!("cannot record port {port} as resynchronised: {e}");
                return;
            }
        }
        tracing::info!("partial journal of port {port} resynchronised at {now}");
    }

    /// The recorded invalid intervals: `(since, port, until)`, `until` = `u64::MAX` while
    /// the port is not resynchronised.
    pub fn validity_intervals(&self) -> Result<Vec<(u64, u64, u64)>> {
        let mut out = Vec::new();
        for kv in self.validity.iter() {
            let (k, v) = kv?;
            let since = k
                .get(0..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes);
            let port = k
                .get(8..16)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes);
            let until = v
                .get(0..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes);
            if let (Some(since), Some(port), Some(until)) = (since, port, until) {
                out.push((since, port, until));
            }
        }
        Ok(out)
    }

    /// Ports whose partial journal was invalid at any time in `[from, to]`: from the recorded
    /// intervals, and from the port validity bit vectors of merged windows `(start, end]`
    /// overlapping it (which survive the loss of the intervals with the sled database).
    pub fn invalid_ports(&self, from: u64, to: u64) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for (since, port, until) in self.validity_intervals()? {
            if since <= to && until >= from && !out.contains(&port) {
                out.push(port);
            }
        }
        for (w, _) in self.primary.windows_after(from)? {
            if w.start < to {
                for port in w.invalid_ports() {
                    if !out.contains(&port) {
                        out.push(port);
                    }
                }
            }
        }
        Ok(out)
    }

    // ---- current content ----

    /// Current content of one chunk (dirty cache, else the volume).
    pub fn current_chunk(&self, c: u64) -> Result<Vec<u8>> {
        if let Some(d) = lock(&self.cache).chunks.get(&c) {
            return Ok(d.data.as_slice().to_vec());
        }
        let (lba, blocks) = self.chunk_range(c);
        let mut b = vec![0u8; blocks as usize * self.block_size];
        self.inner.read(lba, &mut b)?;
        Ok(b)
    }

    pub(crate) fn read_current(&self, lba: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        let bs = self.block_size;
        let blocks = (buf.len() / bs) as u64;
        self.check_range(lba, blocks)?;
        let mut b = lba;
        while b < lba + blocks {
            let c = b / self.bpc;
            let (clba, cblocks) = self.chunk_range(c);
            let end = (lba + blocks).min(clba + cblocks);
            let dst = &mut buf[((b - lba) as usize) * bs..((end - lba) as usize) * bs];
            let hit = {
                let cache = lock(&self.cache);
                match cache.chunks.get(&c) {
                    Some(d) => {
                        let o = ((b - clba) as usize) * bs;
                        dst.copy_from_slice(&d.data.as_slice()[o..o + dst.len()]);
                        true
                    }
                    None => false,
                }
            };
            if !hit {
                self.inner.read(b, dst)?;
            }
            b = end;
        }
        Ok(())
    }

    fn allocation_current(&self, lba: u64, max: u64) -> Result<(Allocation, u64), StorageError> {
        // `max` bounds the answer; it may reach past the end of the volume (GET LBA STATUS).
        self.check_range(lba, 1)?;
        let max = max.max(1).min(self.num_blocks() - lba);
        let c = lba / self.bpc;
        let (clba, cblocks) = self.chunk_range(c);
        let chunk_end = clba + cblocks;
        {
            let cache = lock(&self.cache);
            if let Some(d) = cache.chunks.get(&c) {
                let i = (lba - clba) as usize;
                let st = d.state[i];
                if st != CLEAN {
                    let mut n = 1;
                    while (i + n) < d.state.len() && d.state[i + n] == st && (n as u64) < max {
                        n += 1;
                    }
                    let a = if st == DATA {
                        Allocation::Mapped
                    } else {
                        Allocation::Deallocated
                    };
                    return Ok((a, n as u64));
                }
                let mut n = 1;
                while (i + n) < d.state.len() && d.state[i + n] == CLEAN && (n as u64) < max {
                    n += 1;
                }
                drop(cache);
                return self.inner.allocation(lba, n as u64);
            }
            // Not cached: the volume answers, up to the next cached chunk.
            let limit = cache
                .chunks
                .range(c + 1..)
                .next()
                .map(|(n, _)| n * self.bpc)
                .unwrap_or(u64::MAX);
            let max = max.min(limit - lba).max(1).min(self.num_blocks() - lba);
            let _ = chunk_end;
            drop(cache);
            self.inner.allocation(lba, max)
        }
    }

    // ---- history ----

    /// The first entry for chunk `c` stamped after `ts`, from the partial journals or the
    /// primary, whichever is earlier, and the chunk's index within it. Partials are searched
    /// first: an entry moving from a partial journal to the primary is indexed there before it
    /// leaves the partial.
    pub fn first_entry_after(&self, c: u64, ts: u64) -> Result<Option<EntryChunk>> {
        let mut attempt = 0;
        loop {
            match self.first_hit_after(c, ts)? {
                None => return Ok(None),
                Some(Hit::Partial(e, k)) => return Ok(Some((e, k))),
                Some(Hit::Primary(_, loc)) => match self.primary.read_entry(loc) {
                    Ok(e) => return Ok(Some((e, loc.idx))),
                    // A merge may have dropped it meanwhile: look again.
                    Err(JournalError::Io(_)) if attempt == 0 => attempt += 1,
                    Err(e) => return Err(e),
                },
            }
        }
    }

    /// Where the first entry for chunk `c` stamped after `ts` is (see `first_entry_after`).
    fn first_hit_after(&self, c: u64, ts: u64) -> Result<Option<Hit>> {
        let settled = self.clock.last();
        let hit = self.first_hit_after_once(c, ts)?;
        if hit.as_ref().is_some_and(|h| h.ts() > settled) {
            // See `hits_after`: an earlier entry may have been appended behind the scan.
            return self.first_hit_after_once(c, ts);
        }
        Ok(hit)
    }

    /// One scan of the partial journals, then the primary (see `first_entry_after`).
    fn first_hit_after_once(&self, c: u64, ts: u64) -> Result<Option<Hit>> {
        let mut best: Option<Arc<Entry>> = None;
        for pj in self.all_ports() {
            if let Some(e) = pj.lock().first_after(c, ts) {
                if best
                    .as_ref()
                    .is_none_or(|b| (e.ts, e.port, e.seq) < (b.ts, b.port, b.seq))
                {
                    best = Some(e.clone());
                }
            }
        }
        if let Some((key, loc)) = self.primary.first_after(c, ts)? {
            if best.as_ref().is_none_or(|b| key < (b.ts, b.port, b.seq)) {
                return Ok(Some(Hit::Primary(key, loc)));
            }
        }
        Ok(best.map(|e| {
            let k = (c - e.first_chunk()) as u32;
            Hit::Partial(e, k)
        }))
    }

    /// `first_hit_after` for every chunk of `c0..=c1`: each partial journal locked once, one
    /// walk of the primary index. Nothing is read from the primary's segments.
    ///
    /// The partial journals are scanned one after the other, not at one instant, so a scan can
    /// miss an entry appended to a port it has already passed while it finds a later entry for
    /// the same chunk in a port it reaches afterwards; that later entry's old data would then be
    /// taken for the state at `ts`. Writes to a chunk are serialised by its stripe lock, so every
    /// entry older than a found entry was appended before the found one was stamped. A hit
    /// stamped no later than the clock read before the scan therefore hides nothing; a hit
    /// stamped after it is looked up again, and that second scan sees every older entry.
    fn hits_after(&self, c0: u64, c1: u64, ts: u64) -> Result<Vec<Option<Hit>>> {
        let settled = self.clock.last();
        let mut out = self.hits_after_once(c0, c1, ts)?;
        for (i, slot) in out.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|h| h.ts() > settled) {
                *slot = self.first_hit_after_once(c0 + i as u64, ts)?;
            }
        }
        Ok(out)
    }

    /// One scan of the partial journals and one walk of the primary index (see `hits_after`).
    fn hits_after_once(&self, c0: u64, c1: u64, ts: u64) -> Result<Vec<Option<Hit>>> {
        let n = (c1 - c0 + 1) as usize;
        let mut best: Vec<Option<Arc<Entry>>> = vec![None; n];
        for pj in self.all_ports() {
            let p = pj.lock();
            for (i, slot) in best.iter_mut().enumerate() {
                if let Some(e) = p.first_after(c0 + i as u64, ts) {
                    if slot
                        .as_ref()
                        .is_none_or(|b| (e.ts, e.port, e.seq) < (b.ts, b.port, b.seq))
                    {
                        *slot = Some(e.clone());
                    }
                }
            }
        }
        let hits = self.primary.first_after_range_cached(c0, c1, ts)?;
        let mut out = Vec::with_capacity(n);
        for (i, (hit, partial)) in hits.into_iter().zip(best).enumerate() {
            let c = c0 + i as u64;
            match hit {
                Some((key, loc))
                    if partial.as_ref().is_none_or(|b| key < (b.ts, b.port, b.seq)) =>
                {
                    out.push(Some(Hit::Primary(key, loc)))
                }
                _ => out.push(partial.map(|e| {
                    let k = (c - e.first_chunk()) as u32;
                    Hit::Partial(e, k)
                })),
            }
        }
        Ok(out)
    }

    /// Read `buf` from block `lba` of the volume as it was at `ts`: chunks with a later entry
    /// from their entries, the others from the current content. Chunks of one primary record
    /// next to each other are read together, straight into `buf` (only those chunks of the
    /// record are read: see `PrimaryJournal::read_chunks`).
    pub fn read_at(&self, lba: u64, buf: &mut [u8], ts: u64) -> Result<()> {
        let bs = self.block_size;
        let blocks = (buf.len() / bs) as u64;
        if blocks == 0 {
            return Ok(());
        }
        let c0 = lba / self.bpc;
        let c1 = (lba + blocks - 1) / self.bpc;
        let mut hits = self.hits_after(c0, c1, ts)?;
        // The part of `buf` chunk `c` covers.
        let span = |c: u64| {
            let (clba, cblocks) = self.chunk_range(c);
            let from = lba.max(clba);
            let to = (lba + blocks).min(clba + cblocks);
            (
                from,
                to,
                ((from - lba) as usize) * bs,
                ((to - lba) as usize) * bs,
            )
        };
        // Chunks without history after `ts`: the current content, read in runs.
        let mut i = 0;
        let mut missing = false;
        while i < hits.len() {
            if hits[i].is_some() {
                i += 1;
                continue;
            }
            missing = true;
            let mut j = i + 1;
            while j < hits.len() && hits[j].is_none() {
                j += 1;
            }
            let (from, _, o0, _) = span(c0 + i as u64);
            let (_, _, _, o1) = span(c0 + j as u64 - 1);
            self.read_current(from, &mut buf[o0..o1])?;
            i = j;
        }
        if missing {
            // A write may have slipped in between: its entry is journaled before the cache
            // changes.
            let again = self.hits_after(c0, c1, ts)?;
            for (h, a) in hits.iter_mut().zip(again) {
                if h.is_none() {
                    *h = a;
                }
            }
        }
        // Small records of this read lying back to back in one segment (a run of small writes
        // made one after the other) are fetched with one `pread`.
        let mut ahead: Option<(usize, Span)> = None;
        let mut i = 0;
        while i < hits.len() {
            let c = c0 + i as u64;
            let (from, _, o0, o1) = span(c);
            let skip = ((from - self.chunk_range(c).0) as usize) * bs;
            if ahead.as_ref().is_none_or(|(upto, _)| *upto <= i) {
                ahead = self.read_ahead(&hits[i..]).map(|(n, s)| (i + n, s));
            }
            match &hits[i] {
                None => i += 1,
                Some(Hit::Partial(e, k)) => {
                    copy_chunks(e, *k, 1, skip, &mut buf[o0..o1], bs).map_err(|reason| {
                        JournalError::Corrupt {
                            file: "journal entry".into(),
                            offset: e.lba,
                            reason,
                        }
                    })?;
                    i += 1;
                }
                Some(Hit::Primary(_, loc)) => {
                    // The run of chunks that are the next chunks of the same record.
                    let mut j = i + 1;
                    while let Some(Some(Hit::Primary(_, l))) = hits.get(j) {
                        if l.record() != loc.record() || l.idx != loc.idx + (j - i) as u32 {
                            break;
                        }
                        j += 1;
                    }
                    let (_, _, _, o1) = span(c0 + j as u64 - 1);
                    let n = (j - i) as u32;
                    let pre = ahead.as_ref().map(|(_, s)| s);
                    match self
                        .primary
                        .read_chunks_in(*loc, n, skip, &mut buf[o0..o1], bs, pre)
                    {
                        Ok(()) => {}
                        // A merge may have dropped its segment meanwhile: look these chunks up
                        // again, one by one.
                        Err(JournalError::Io(_)) => {
                            for c in c..c0 + j as u64 {
                                self.read_chunk_again(c, ts, span(c), buf)?;
                            }
                        }
                        Err(e) => return Err(e),
                    }
                    i = j;
                }
            }
        }
        Ok(())
    }

    /// If `hits` starts with at least two small primary records lying back to back in one
    /// segment (at most a few status records between them), each hit on a record following
    /// the one before (a record may cover several hits), read them with one `pread`: how many
    /// hits that covers, and the bytes.
    fn read_ahead(&self, hits: &[Option<Hit>]) -> Option<(usize, Span)> {
        let small = |l: &Loc| l.len as usize <= 16 << 10;
        let Some(Some(Hit::Primary(_, first))) = hits.first() else {
            return None;
        };
        if !small(first) {
            return None;
        }
        let (mut end, mut last, mut records, mut n) =
            (first.off + u64::from(first.len), *first, 1, 1);
        for h in &hits[1..] {
            let Some(Hit::Primary(_, l)) = h else { break };
            if l.record() == last.record() {
                n += 1;
                continue;
            }
            // Status records of the writes may lie between their entries (a partial file
            // adopted whole holds each write's entry and then its outcome).
            let gap = l.off.checked_sub(end);
            if l.seg != first.seg || gap.is_none_or(|g| g > 512) || !small(l) {
                break;
            }
            end = l.off + u64::from(l.len);
            last = *l;
            records += 1;
            n += 1;
        }
        if records < 2 {
            return None;
        }
        let s = self.primary.read_span(first.seg, first.off..end)?;
        Some((n, s))
    }

    /// The part `(from, to, o0, o1)` of `buf` that chunk `c` covers, as it was at `ts`, from a
    /// fresh lookup (after its record went away under a read).
    fn read_chunk_again(
        &self,
        c: u64,
        ts: u64,
        (from, _, o0, o1): (u64, u64, usize, usize),
        buf: &mut [u8],
    ) -> Result<()> {
        let bs = self.block_size;
        match self.first_entry_after(c, ts)? {
            Some((e, k)) => {
                let skip = ((from - self.chunk_range(c).0) as usize) * bs;
                copy_chunks(&e, k, 1, skip, &mut buf[o0..o1], bs).map_err(|reason| {
                    JournalError::Corrupt {
                        file: "journal entry".into(),
                        offset: e.lba,
                        reason,
                    }
                })
            }
            None => Ok(self.read_current(from, &mut buf[o0..o1])?),
        }
    }

    /// Chunk `k` of entry `e` as the state it saved.
    fn saved_state(&self, e: &Entry, k: u32) -> Result<ChunkAt> {
        match e.chunk_data(k, self.block_size) {
            Ok(None) => Ok(ChunkAt::Unallocated),
            Ok(Some(d)) => Ok(ChunkAt::Data(d.to_vec())),
            Err(reason) => Err(JournalError::Corrupt {
                file: "journal entry".into(),
                offset: e.lba,
                reason,
            }),
        }
    }

    /// Chunk `c` as it was at `ts`.
    pub fn chunk_at(&self, c: u64, ts: u64) -> Result<ChunkAt> {
        if let Some((e, k)) = self.first_entry_after(c, ts)? {
            return self.saved_state(&e, k);
        }
        let cur = self.current_chunk(c)?;
        // A write may have slipped in between: its entry is journaled before the cache changes.
        if let Some((e, k)) = self.first_entry_after(c, ts)? {
            return self.saved_state(&e, k);
        }
        let (lba, blocks) = self.chunk_range(c);
        let cached = lock(&self.cache).chunks.contains_key(&c);
        if !cached {
            let (a, n) = self.inner.allocation(lba, blocks)?;
            if a == Allocation::Deallocated && n >= blocks {
                return Ok(ChunkAt::Unallocated);
            }
        }
        Ok(ChunkAt::Data(cur))
    }

    /// The retained point standing for `ts`, or `Expired`.
    pub fn resolve_point(&self, ts: u64) -> Result<u64> {
        let get = |k: &str| -> Result<u64> {
            Ok(self
                .primary
                .meta
                .get(k)?
                .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0))
        };
        if ts < self.born {
            return Err(JournalError::BeforeHistory {
                ts,
                born: self.born,
            });
        }
        let merged_at = get("merge_now")?;
        let horizon = get("horizon")?;
        if merged_at > 0 && ts < horizon {
            return Err(JournalError::Expired { ts, horizon });
        }
        Ok(self.cfg.retention.resolve(merged_at, ts))
    }

    pub fn set_marks_floor(&self, horizon: u64) -> Result<()> {
        let old: Vec<_> = self
            .marks
            .range(..horizon.to_be_bytes())
            .keys()
            .collect::<Result<_, _>>()?;
        for k in old {
            self.marks.remove(k)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod merge_schedule_tests {
    use super::merge_due;
    use std::time::Duration;

    #[test]
    fn merges_are_spaced_by_their_own_duration() {
        let s = Duration::from_secs;
        // Quick merges keep to the interval.
        assert_eq!(merge_due(s(60), Duration::from_millis(300)), s(60));
        // A 20 s merge (10 million entries) starts the next one 200 s after it began: 180 s
        // of the 200 s without a merge.
        assert_eq!(merge_due(s(60), s(20)), s(200));
        assert_eq!(
            merge_due(s(60), Duration::MAX),
            Duration::MAX,
            "no overflow"
        );
    }
}

#[cfg(test)]
mod stripe_tests {
    use super::{stripes_of, LOCK_STRIPES};
    use proptest::prelude::*;

    #[test]
    fn writes_in_flight_together_have_stripes_of_their_own() {
        // Sequential 4 KiB writes (one chunk each), 32 in flight.
        let small: Vec<Vec<usize>> = (0..32u64).map(|c| stripes_of(c, c)).collect();
        for (i, a) in small.iter().enumerate() {
            for b in &small[i + 1..] {
                assert!(a.iter().all(|s| !b.contains(s)));
            }
        }
        // Sequential 128 KiB writes (32 chunks), 64 in flight (8 MiB).
        let a = stripes_of(0, 31);
        assert_eq!(a.len(), 32);
        for w in 1..64u64 {
            let b = stripes_of(w * 32, w * 32 + 31);
            assert!(a.iter().all(|s| !b.contains(s)), "writes 0 and {w}");
        }
        // A range of LOCK_STRIPES chunks or more takes every stripe once.
        let all = stripes_of(5, 5 + LOCK_STRIPES as u64);
        assert_eq!(all, (0..LOCK_STRIPES).collect::<Vec<_>>());
    }

    proptest! {
        /// Writes to overlapping chunk ranges always meet on a stripe (the lock is what keeps
        /// their copy-on-write reads and cache updates apart), and stripes come sorted and
        /// once each, so two writers never lock in opposite orders.
        #[test]
        fn overlapping_ranges_share_a_stripe(
            a0 in 0u64..1 << 40, alen in 0u64..20_000, off in 0u64..20_000, blen in 0u64..20_000,
        ) {
            let a1 = a0 + alen;
            let b0 = a0 + off.min(alen);
            let b1 = b0 + blen;
            let (sa, sb) = (stripes_of(a0, a1), stripes_of(b0, b1));
            prop_assert!(sa.iter().any(|s| sb.contains(s)));
            prop_assert!(sa.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(sb.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
