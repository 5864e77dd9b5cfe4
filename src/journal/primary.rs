//! The primary journal: old data in checksummed append-only segment files, and a sled index
//! `(chunk, ts, port, seq)` (big endian, so byte order = time order per chunk) -> location.
//!
//! sled holds only small values (locations and metadata) and is always rebuildable from the
//! segment files: `meta` remembers up to which offset each segment is indexed, and open catches
//! up from there (or from 0 when the index is lost or inconsistent).

use super::error::{JournalError, Result};
use super::partial::sync_dir;
use super::record::{
    decode_record, encode_entry_with_status, scan_segment, Entry, Record, SegmentHeader,
    SegmentKind, Status, SEGMENT_HEADER_LEN,
};
use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub(crate) const KEY_LEN: usize = 32;

/// Index key of one entry.
pub(crate) fn index_key(chunk: u64, ts: u64, port: u64, seq: u64) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[0..8].copy_from_slice(&chunk.to_be_bytes());
    k[8..16].copy_from_slice(&ts.to_be_bytes());
    k[16..24].copy_from_slice(&port.to_be_bytes());
    k[24..32].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The running entry count, kept in the index tree itself so that it changes in the same
/// atomic batch as the keys it counts. Its length differs from `KEY_LEN`, so no lookup or walk
/// of entries ever sees it.
const COUNT_KEY: &[u8] = b"\xffcount";

fn be(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(0..8)?.try_into().ok()?))
}

/// (chunk, ts, port, seq) of an index key.
pub(crate) fn parse_key(k: &[u8]) -> Option<(u64, u64, u64, u64)> {
    if k.len() != KEY_LEN {
        return None;
    }
    Some((be(&k[0..])?, be(&k[8..])?, be(&k[16..])?, be(&k[24..])?))
}

/// `(ts, port, seq)` of an indexed entry and where its record lives.
pub(crate) type IndexHit = ((u64, u64, u64), Loc);

/// Where an entry's record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub seg: u64,
    pub off: u64,
    pub len: u32,
}

impl Loc {
    fn encode(&self) -> [u8; 20] {
        let mut v = [0u8; 20];
        v[0..8].copy_from_slice(&self.seg.to_be_bytes());
        v[8..16].copy_from_slice(&self.off.to_be_bytes());
        v[16..20].copy_from_slice(&self.len.to_be_bytes());
        v
    }
    pub fn decode(v: &[u8]) -> Option<Self> {
        if v.len() != 20 {
            return None;
        }
        Some(Loc {
            seg: be(&v[0..])?,
            off: be(&v[8..])?,
            len: u32::from_be_bytes(v[16..20].try_into().ok()?),
        })
    }
}

fn seg_meta_key(seg: u64) -> Vec<u8> {
    let mut k = b"idx:".to_vec();
    k.extend_from_slice(&seg.to_be_bytes());
    k
}

struct Active {
    id: u64,
    file: Option<Arc<File>>,
    len: u64,
    /// An append failed half way: start a new segment before the next one.
    broken: bool,
}

pub(crate) struct PrimaryJournal {
    dir: PathBuf,
    chunk_bytes: u32,
    blocks_per_chunk: u64,
    segment_size: u64,
    pub db: sled::Db,
    index: sled::Tree,
    pub meta: sled::Tree,
    active: Mutex<Active>,
    readers: Mutex<HashMap<u64, Arc<File>>>,
}

/// What `open` found.
#[derive(Debug, Default, Clone)]
pub struct PrimaryRecovery {
    pub rebuilt: bool,
    pub records_indexed: u64,
    pub max_ts: u64,
    pub torn_tails: Vec<(u64, u64, String)>,
}

/// sled's page cache bound. sled's default is 1 GiB per database, i.e. per journaled volume;
/// the index only holds small values, so a small cache does.
pub(crate) const INDEX_CACHE_BYTES: u64 = 64 << 20;

fn open_index(dir: &Path) -> sled::Result<sled::Db> {
    sled::Config::new()
        .path(dir)
        .cache_capacity(INDEX_CACHE_BYTES)
        .open()
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.seg"))
}

fn list_segments(dir: &Path) -> Result<BTreeSet<u64>> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(hex) = name.strip_suffix(".seg") {
            if let Ok(id) = u64::from_str_radix(hex, 16) {
                out.insert(id);
            }
        }
    }
    Ok(out)
}

impl PrimaryJournal {
    /// Open (or create) the primary journal in `dir`, catching the index up with the segments.
    pub fn open(
        dir: &Path,
        chunk_bytes: u32,
        block_size: u32,
        segment_size: u64,
    ) -> Result<(Self, PrimaryRecovery)> {
        let seg_dir = dir.join("primary");
        std::fs::create_dir_all(&seg_dir)?;
        let idx_dir = dir.join("index");
        let mut rebuild = false;
        let db = match open_index(&idx_dir) {
            Ok(db) => db,
            Err(e) => {
                tracing::warn!("journal index unreadable ({e}); rebuilding it from segments");
                std::fs::remove_dir_all(&idx_dir)?;
                rebuild = true;
                open_index(&idx_dir)?
            }
        };
        let index = db.open_tree("index")?;
        let meta = db.open_tree("meta")?;
        match meta.get("chunk_bytes")? {
            Some(v) if v.as_ref() != chunk_bytes.to_be_bytes() => {
                return Err(JournalError::Config(
                    "chunk_size differs from the one this journal was created with".into(),
                ))
            }
            Some(_) => {}
            None => {
                meta.insert("chunk_bytes", &chunk_bytes.to_be_bytes())?;
                // Durable now: a later open must see what this journal was created with.
                db.flush()?;
                if !index.is_empty() {
                    rebuild = true;
                }
            }
        }
        let mut segs = list_segments(&seg_dir)?;
        // The newest segment may have been created just before a crash, without its header:
        // it holds nothing.
        if let Some(&last) = segs.iter().next_back() {
            let path = seg_path(&seg_dir, last);
            if std::fs::metadata(&path)?.len() < crate::journal::record::SEGMENT_HEADER_LEN as u64 {
                tracing::warn!(
                    "removing journal segment {} torn before its header was written",
                    path.display()
                );
                std::fs::remove_file(&path)?;
                segs.remove(&last);
            }
        }
        // Index entries for segments that are gone: inconsistent, rebuild.
        for kv in meta.scan_prefix(b"idx:") {
            let (k, _) = kv?;
            let seg = be(&k[4..]).unwrap_or(u64::MAX);
            if !segs.contains(&seg) {
                rebuild = true;
            }
        }
        let pj = PrimaryJournal {
            dir: seg_dir,
            chunk_bytes,
            blocks_per_chunk: (chunk_bytes / block_size) as u64,
            segment_size,
            db,
            index,
            meta,
            active: Mutex::new(Active {
                id: 0,
                file: None,
                len: 0,
                broken: true,
            }),
            readers: Mutex::new(HashMap::new()),
        };
        if !rebuild && !pj.index.contains_key(COUNT_KEY)? && !pj.index.is_empty() {
            // An index from before the running count: count it once.
            let n = pj.index.len() as u64;
            pj.index.insert(COUNT_KEY, &n.to_be_bytes())?;
        }
        let mut rec = if rebuild {
            pj.rebuild_index()?
        } else {
            pj.catch_up(&segs, false)?
        };
        rec.rebuilt = rebuild;
        // Continue in the last segment if it has room.
        if let Some(&last) = segs.iter().next_back() {
            let path = seg_path(&pj.dir, last);
            let len = std::fs::metadata(&path)?.len();
            if len < segment_size {
                let file = OpenOptions::new().append(true).open(&path)?;
                *pj.active.lock().unwrap_or_else(|p| p.into_inner()) = Active {
                    id: last,
                    file: Some(Arc::new(file)),
                    len,
                    broken: false,
                };
            } else {
                pj.active.lock().unwrap_or_else(|p| p.into_inner()).id = last;
            }
        }
        Ok((pj, rec))
    }

    /// Index every record of every segment past what `meta` says is indexed. Truncates a torn
    /// tail of the newest segment.
    fn catch_up(&self, segs: &BTreeSet<u64>, from_zero: bool) -> Result<PrimaryRecovery> {
        let mut rec = PrimaryRecovery::default();
        let last = segs.iter().next_back().copied();
        for &seg in segs {
            let path = seg_path(&self.dir, seg);
            let done = if from_zero {
                0
            } else {
                self.meta
                    .get(seg_meta_key(seg))?
                    .and_then(|v| be(&v))
                    .unwrap_or(0)
            };
            let buf = std::fs::read(&path)?;
            if done as usize >= buf.len() && done > 0 {
                continue;
            }
            let (header, scan) = scan_segment(&buf, &path.display().to_string())?;
            if header.kind != SegmentKind::Primary || header.chunk_bytes != self.chunk_bytes {
                return Err(JournalError::Corrupt {
                    file: path.display().to_string(),
                    offset: 0,
                    reason: "segment kind or chunk size does not match this journal".into(),
                });
            }
            let mut batch = sled::Batch::default();
            let mut added = 0u64;
            for s in &scan.records {
                if s.offset < done {
                    continue;
                }
                if let Record::Entry(e) = &s.record {
                    let loc = Loc {
                        seg,
                        off: s.offset,
                        len: s.len,
                    };
                    let key = self.key_of(e);
                    // A record past `done` may already be indexed (a crash between the index
                    // batch and the `meta` update): count it once.
                    if from_zero || !self.index.contains_key(key)? {
                        added += 1;
                    }
                    batch.insert(&key[..], &loc.encode()[..]);
                    rec.records_indexed += 1;
                    rec.max_ts = rec.max_ts.max(e.ts);
                }
            }
            batch.insert(COUNT_KEY, &(self.count()? + added).to_be_bytes()[..]);
            self.index.apply_batch(batch)?;
            if let Some(t) = &scan.tail {
                tracing::warn!(
                    "journal segment {} ends in a bad record at {}: {}",
                    path.display(),
                    t.offset,
                    t.reason
                );
                rec.torn_tails.push((seg, t.offset, t.reason.clone()));
                if Some(seg) == last {
                    OpenOptions::new()
                        .write(true)
                        .open(&path)?
                        .set_len(scan.valid_end)?;
                }
            }
            self.meta
                .insert(seg_meta_key(seg), &scan.valid_end.to_be_bytes())?;
        }
        let stored = self.meta.get("max_ts")?.and_then(|v| be(&v)).unwrap_or(0);
        rec.max_ts = rec.max_ts.max(stored);
        self.meta.insert("max_ts", &rec.max_ts.to_be_bytes())?;
        self.db.flush()?;
        Ok(rec)
    }

    /// Drop the sled index and rebuild it from the segment files.
    pub fn rebuild_index(&self) -> Result<PrimaryRecovery> {
        self.index.clear()?;
        self.index.insert(COUNT_KEY, &0u64.to_be_bytes())?;
        for kv in self.meta.scan_prefix(b"idx:") {
            let (k, _) = kv?;
            self.meta.remove(k)?;
        }
        let segs = list_segments(&self.dir)?;
        let mut r = self.catch_up(&segs, true)?;
        r.rebuilt = true;
        Ok(r)
    }

    pub fn chunk_of(&self, lba: u64) -> u64 {
        lba / self.blocks_per_chunk
    }

    fn key_of(&self, e: &Entry) -> [u8; KEY_LEN] {
        index_key(self.chunk_of(e.lba), e.ts, e.port, e.seq)
    }

    fn new_segment(&self, a: &mut Active) -> Result<()> {
        let id = a.id + 1;
        let path = seg_path(&self.dir, id);
        let header = SegmentHeader {
            kind: SegmentKind::Primary,
            chunk_bytes: self.chunk_bytes,
            id,
        };
        let mut f = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        f.write_all(&header.encode())?;
        f.sync_data()?;
        sync_dir(&self.dir)?;
        *a = Active {
            id,
            file: Some(Arc::new(f)),
            len: SEGMENT_HEADER_LEN as u64,
            broken: false,
        };
        Ok(())
    }

    /// Append entries, fsync them, then index them. Durable when this returns Ok.
    pub fn append(&self, entries: &[Entry]) -> Result<()> {
        let refs: Vec<(&Entry, Status)> = entries.iter().map(|e| (e, e.status)).collect();
        self.append_refs(&refs)
    }

    /// As `append`, with each entry's status given beside it (no copy of the old data).
    pub fn append_refs(&self, entries: &[(&Entry, Status)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut a = self.active.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = sled::Batch::default();
        // One segment write per call: size the buffer once instead of doubling it (a doubled
        // 8 MiB partial journal kept a 16 MiB buffer per flush).
        let need: usize = entries.iter().map(|(e, _)| e.data.len() + 128).sum();
        let mut buf = Vec::with_capacity(need.min(self.segment_size as usize));
        let mut locs = Vec::new();
        let mut max_ts = 0;
        let mut touched: Vec<(u64, u64)> = Vec::new();
        for &(e, status) in entries {
            if a.broken || a.len >= self.segment_size {
                self.write_out(&mut a, &mut buf, &mut locs, &mut batch, &mut touched)?;
                self.new_segment(&mut a)?;
            }
            let off = a.len + buf.len() as u64;
            let before = buf.len();
            encode_entry_with_status(e, status, &mut buf);
            let len = (buf.len() - before) as u32;
            locs.push((
                self.key_of(e),
                Loc {
                    seg: a.id,
                    off,
                    len,
                },
            ));
            max_ts = max_ts.max(e.ts);
            if a.len + buf.len() as u64 >= self.segment_size {
                self.write_out(&mut a, &mut buf, &mut locs, &mut batch, &mut touched)?;
            }
        }
        self.write_out(&mut a, &mut buf, &mut locs, &mut batch, &mut touched)?;
        drop(a);
        // Keys are (chunk, ts, port, seq) of new writes: each is new to the index.
        batch.insert(
            COUNT_KEY,
            &(self.count()? + entries.len() as u64).to_be_bytes()[..],
        );
        self.index.apply_batch(batch)?;
        for (seg, end) in touched {
            self.meta.insert(seg_meta_key(seg), &end.to_be_bytes())?;
        }
        let stored = self.meta.get("max_ts")?.and_then(|v| be(&v)).unwrap_or(0);
        if max_ts > stored {
            self.meta.insert("max_ts", &max_ts.to_be_bytes())?;
        }
        Ok(())
    }

    /// Write the buffered records to the active segment and fsync it.
    fn write_out(
        &self,
        a: &mut Active,
        buf: &mut Vec<u8>,
        locs: &mut Vec<([u8; KEY_LEN], Loc)>,
        batch: &mut sled::Batch,
        touched: &mut Vec<(u64, u64)>,
    ) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let Some(file) = a.file.clone() else {
            a.broken = true;
            return Err(std::io::Error::other("no active journal segment").into());
        };
        if let Err(e) = (&*file).write_all(buf).and_then(|_| file.sync_data()) {
            // Start a fresh segment next time; recovery cuts any torn tail of this one.
            let _ = file.set_len(a.len);
            a.broken = true;
            return Err(e.into());
        }
        a.len += buf.len() as u64;
        buf.clear();
        for (k, l) in locs.drain(..) {
            batch.insert(&k[..], &l.encode()[..]);
        }
        touched.retain(|t| t.0 != a.id);
        touched.push((a.id, a.len));
        Ok(())
    }

    /// The first entry for `chunk` stamped after `ts`: its key parts and location.
    pub fn first_after(&self, chunk: u64, ts: u64) -> Result<Option<IndexHit>> {
        if ts == u64::MAX {
            return Ok(None);
        }
        let lo = index_key(chunk, ts + 1, 0, 0);
        let hi = index_key(chunk, u64::MAX, u64::MAX, u64::MAX);
        match self.index.range(lo..=hi).next() {
            None => Ok(None),
            Some(kv) => {
                let (k, v) = kv?;
                let (_, ts, port, seq) = parse_key(&k).ok_or_else(|| self.bad_index())?;
                let loc = Loc::decode(&v).ok_or_else(|| self.bad_index())?;
                Ok(Some(((ts, port, seq), loc)))
            }
        }
    }

    fn bad_index(&self) -> JournalError {
        JournalError::Corrupt {
            file: "index".into(),
            offset: 0,
            reason: "malformed index entry".into(),
        }
    }

    fn reader(&self, seg: u64) -> Result<Arc<File>> {
        let mut r = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = r.get(&seg) {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(seg_path(&self.dir, seg))?);
        r.insert(seg, f.clone());
        Ok(f)
    }

    /// Read and verify the record at `loc`.
    pub fn read_entry(&self, loc: Loc) -> Result<Entry> {
        let f = self.reader(loc.seg)?;
        let mut buf = vec![0u8; loc.len as usize];
        f.read_exact_at(&mut buf, loc.off)?;
        match decode_record(&buf) {
            Ok((Record::Entry(e), _)) => Ok(e),
            Ok(_) => Err(JournalError::Corrupt {
                file: seg_path(&self.dir, loc.seg).display().to_string(),
                offset: loc.off,
                reason: "index points at a non-entry record".into(),
            }),
            Err(e) => Err(JournalError::Corrupt {
                file: seg_path(&self.dir, loc.seg).display().to_string(),
                offset: loc.off,
                reason: format!("{e:?}"),
            }),
        }
    }

    /// Iterate the whole index in key order.
    pub fn iter_index(&self) -> impl Iterator<Item = Result<((u64, u64, u64, u64), Loc)>> + '_ {
        self.index.iter().filter_map(move |kv| {
            let (k, v) = match kv {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e.into())),
            };
            if k.as_ref() == COUNT_KEY {
                return None;
            }
            Some(
                parse_key(&k)
                    .zip(Loc::decode(&v))
                    .ok_or_else(|| self.bad_index()),
            )
        })
    }

    /// Remove index keys that exist (the caller found them in the index; index changes are
    /// serialized by the store's flush lock).
    pub fn remove_keys(&self, keys: &[[u8; KEY_LEN]]) -> Result<()> {
        let mut b = sled::Batch::default();
        for k in keys {
            b.remove(&k[..]);
        }
        let n = self.count()?.saturating_sub(keys.len() as u64);
        b.insert(COUNT_KEY, &n.to_be_bytes()[..]);
        self.index.apply_batch(b)?;
        Ok(())
    }

    /// The running entry count (no index walk).
    fn count(&self) -> Result<u64> {
        Ok(self.index.get(COUNT_KEY)?.and_then(|v| be(&v)).unwrap_or(0))
    }

    /// Number of indexed entries: the running count, O(1).
    pub fn len(&self) -> usize {
        self.count().unwrap_or(0) as usize
    }

    /// Count the index by walking it (tests check the running count against this).
    #[cfg(test)]
    pub fn walk_len(&self) -> usize {
        self.index.len() - usize::from(self.index.contains_key(COUNT_KEY).unwrap_or(false))
    }

    /// Segment ids on disk, and the one being appended to.
    pub fn segments(&self) -> Result<(BTreeSet<u64>, u64)> {
        let active = self.active.lock().unwrap_or_else(|p| p.into_inner()).id;
        Ok((list_segments(&self.dir)?, active))
    }

    /// Delete a segment none of whose entries is indexed any more. The caller flushed the index.
    /// Bytes a segment file takes (0 if it is gone).
    pub fn segment_bytes(&self, seg: u64) -> u64 {
        std::fs::metadata(seg_path(&self.dir, seg))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    pub fn delete_segment(&self, seg: u64) -> Result<()> {
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&seg);
        std::fs::remove_file(seg_path(&self.dir, seg))?;
        self.meta.remove(seg_meta_key(seg))?;
        sync_dir(&self.dir)?;
        Ok(())
    }

    pub fn flush_index(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ts: u64, lba: u64, byte: u8) -> Entry {
        Entry {
            ts,
            port: 1,
            seq: ts,
            lba,
            blocks: 8,
            status: Status::Ok,
            unallocated: false,
            merged: false,
            invalid_ports: vec![],
            data: vec![byte; 4096],
        }
    }

    #[test]
    fn append_lookup_reopen_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (p, r) = PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20).unwrap();
            assert_eq!(r.records_indexed, 0);
            // ~300 entries of 4 KiB: spans two segments.
            let es: Vec<Entry> = (1..=300).map(|t| entry(t, (t % 3) * 8, t as u8)).collect();
            p.append(&es).unwrap();
            let ((ts, _, _), loc) = p.first_after(1, 10).unwrap().unwrap();
            assert_eq!(ts, 13);
            assert_eq!(p.read_entry(loc).unwrap().data[0], 13);
            assert!(p.first_after(0, 300).unwrap().is_none());
            assert!(p.segments().unwrap().0.len() >= 2);
        }
        let (p, r) = PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20).unwrap();
        assert!(!r.rebuilt);
        assert_eq!(r.max_ts, 300);
        assert_eq!(p.len(), 300);
        let r = p.rebuild_index().unwrap();
        assert_eq!(r.records_indexed, 300);
        assert_eq!(p.len(), 300);
        let ((ts, _, _), loc) = p.first_after(2, 100).unwrap().unwrap();
        assert_eq!(ts, 101);
        assert_eq!(p.read_entry(loc).unwrap().ts, 101);
        p.append(&[entry(301, 0, 7)]).unwrap();
        assert_eq!(p.first_after(0, 300).unwrap().unwrap().0 .0, 301);
        assert_eq!((p.len(), p.walk_len()), (301, 301));
        // The running count follows removals and survives a reopen.
        let gone: Vec<_> = p
            .iter_index()
            .take(10)
            .map(|r| {
                let ((c, ts, port, seq), _) = r.unwrap();
                index_key(c, ts, port, seq)
            })
            .collect();
        p.remove_keys(&gone).unwrap();
        assert_eq!((p.len(), p.walk_len()), (291, 291));
        p.flush_index().unwrap();
        drop(p);
        let (p, _) = PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20).unwrap();
        assert_eq!((p.len(), p.walk_len()), (291, 291));
    }

    #[test]
    fn lost_index_is_rebuilt_and_torn_tail_cut() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (p, _) = PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20).unwrap();
            p.append(&(1..=5).map(|t| entry(t, 0, 1)).collect::<Vec<_>>())
                .unwrap();
        }
        std::fs::remove_dir_all(dir.path().join("index")).unwrap();
        let seg = seg_path(&dir.path().join("primary"), 1);
        let len = std::fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 100)
            .unwrap();
        let (p, r) = PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20).unwrap();
        assert_eq!(r.records_indexed, 4);
        assert_eq!(r.torn_tails.len(), 1);
        assert_eq!(p.len(), 4);
        // Appending after the cut keeps the segment readable.
        p.append(&[entry(9, 0, 9)]).unwrap();
        drop(p);
        let (p, _) = PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20).unwrap();
        let r = p.rebuild_index().unwrap();
        assert_eq!(r.records_indexed, 5);
        assert!(r.torn_tails.is_empty());
    }

    #[test]
    fn chunk_size_mismatch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20).unwrap());
        assert!(matches!(
            PrimaryJournal::open(dir.path(), 8192, 512, 1 << 20),
            Err(JournalError::Config(_))
        ));
    }
}
