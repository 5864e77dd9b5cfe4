//! The primary journal: old data in checksummed append-only segment files, and a sled index
//! of where each entry's chunks are. A record holds one write's old data for all of its
//! chunks; the index notes it once per extent of `EXTENT_CHUNKS` chunks it touches (a 128 KiB
//! write at 4 KiB chunks: 2 or 3 index entries, not 32), with the write's stamp, port and
//! sequence number and its location `(segment, record offset, record length, chunk index
//! within the record)` plus the run of the extent's chunks it covers. Index entries are
//! stored in groups of up to 32 per sled key (`index_group`: per extent, flush and segment,
//! within 50 ms of stamps), about 15 bytes each. "The first entry for chunk c after T" is an
//! ordered walk of c's extent from just before T that stops once no later group can hold an
//! earlier answer.
//!
//! sled holds only small values (locations and metadata) and is always rebuildable from the
//! segment files: `meta` remembers up to which offset each segment is indexed, and open catches
//! up from there (or from 0 when the index is lost or inconsistent).

use super::error::{JournalError, Result};
use super::hit_cache::{ExtentHits, HitCache};
use super::index_group::{
    decode_group, encode_group_keyed, parse_key, place, Group, Indexed, Ordered,
};
pub(crate) use super::index_group::{index_key, KEY_LEN};
use super::latest_group::{Latest, LatestGroups};
use super::partial::{sync_dir, write_all_parts};
use super::record::{
    check_version, decode_entry_head, decode_record, encode_entry_head, encode_record,
    scan_segment, segment_version, DecodeError, Entry, EntryHead, MergedWindow, Record,
    SegmentHeader, SegmentKind, Status, StatusUpdate, FORMAT_VERSION, SEGMENT_HEADER_LEN,
};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Chunks per index extent. A group covers runs of at most this many chunks; a lookup walks
/// the groups of one extent, so a larger extent means fewer keys per large write but longer
/// walks where one chunk of an extent is rewritten much more often than its neighbours.
pub(crate) const EXTENT_CHUNKS: u64 = 16;

/// Version of the index layout, kept in `meta`: an index of another layout is rebuilt from
/// the segments at open (the segments themselves do not change). Format 4: one key per group
/// of entries of one flush (`index_group`); format 5: groups span flushes and segments, and
/// the groups of an extent never overlap in time.
const INDEX_FORMAT: u32 = 5;

/// The running entry count, kept in the index tree itself so that it changes in the same
/// atomic batch as the keys it counts. Its length differs from `KEY_LEN`, so no lookup or walk
/// of entries ever sees it.
const COUNT_KEY: &[u8] = b"\xffcount";

fn be(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(0..8)?.try_into().ok()?))
}

/// An indexed entry: `((extent, ts, port, seq), location)`.
pub(crate) type IndexEntry = ((u64, u64, u64, u64), Loc);

/// Key of the failed-writes tree: `(ts, port, seq)`, big endian (time order).
fn status_key(ts: u64, port: u64, seq: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[0..8].copy_from_slice(&ts.to_be_bytes());
    k[8..16].copy_from_slice(&port.to_be_bytes());
    k[16..24].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Key of the merged-windows tree: `(end, start)`, so that "windows ending after T" is a range.
fn window_key(start: u64, end: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[0..8].copy_from_slice(&end.to_be_bytes());
    k[8..16].copy_from_slice(&start.to_be_bytes());
    k
}

fn range_value(lba: u64, blocks: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[0..8].copy_from_slice(&lba.to_be_bytes());
    v[8..16].copy_from_slice(&blocks.to_be_bytes());
    v
}

fn encode_window_value(seg: u64, w: &MergedWindow) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + 8 * w.ports.len() + w.valid.len());
    v.extend_from_slice(&seg.to_be_bytes());
    v.extend_from_slice(&(w.ports.len() as u32).to_be_bytes());
    for p in &w.ports {
        v.extend_from_slice(&p.to_be_bytes());
    }
    v.extend_from_slice(&w.valid);
    v
}

fn decode_window_value(k: &[u8], v: &[u8]) -> Option<(MergedWindow, u64)> {
    let end = be(k.get(0..8)?)?;
    let start = be(k.get(8..16)?)?;
    let seg = be(v.get(0..8)?)?;
    let n = u32::from_be_bytes(v.get(8..12)?.try_into().ok()?) as usize;
    let mut ports = Vec::with_capacity(n);
    for i in 0..n {
        ports.push(be(v.get(12 + 8 * i..)?)?);
    }
    let valid = v.get(12 + 8 * n..12 + 8 * n + n.div_ceil(8))?.to_vec();
    Some((
        MergedWindow {
            start,
            end,
            ports,
            valid,
        },
        seg,
    ))
}

/// `(ts, port, seq)` of an indexed entry and where its record lives.
pub(crate) type IndexHit = ((u64, u64, u64), Loc);

/// Where an index key's chunks live: the record, the run of the extent's chunks it covers
/// (`lo..lo + n`, relative to the extent's first chunk), and the record's chunk index of the
/// run's first chunk. Lookups for one chunk hand out a `Loc` whose `idx` is that chunk's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub seg: u64,
    pub off: u64,
    pub len: u32,
    /// Chunk index within the record (0 = the record's first chunk) of chunk `lo`.
    pub idx: u32,
    /// First chunk of the run, relative to the extent.
    pub lo: u8,
    /// Chunks in the run (1..=EXTENT_CHUNKS).
    pub n: u8,
}

impl Loc {
    /// The same record.
    pub fn record(&self) -> (u64, u64) {
        (self.seg, self.off)
    }
    /// The extent's chunks this key covers, as a bit mask (bit k = the extent's chunk k).
    pub fn mask(&self) -> u32 {
        (((1u64 << self.n) - 1) << self.lo) as u32
    }
    /// This location narrowed to chunk `k` of the extent, if the key covers it.
    pub fn for_chunk(&self, k: u64) -> Option<Loc> {
        let lo = u64::from(self.lo);
        (lo..lo + u64::from(self.n)).contains(&k).then(|| Loc {
            idx: self.idx + (k - lo) as u32,
            lo: k as u8,
            n: 1,
            ..*self
        })
    }
}

/// Reading chunks of one version 4 record (`PrimaryJournal::read_chunks`).
struct Run<'a> {
    dir: &'a Path,
    f: &'a File,
    head: &'a EntryHead,
    /// Bytes of the record's start already read (with its head), maybe empty.
    start: &'a [u8],
    loc: Loc,
    block_size: usize,
}

impl Run<'_> {
    fn corrupt(&self, reason: String) -> JournalError {
        JournalError::Corrupt {
            file: seg_path(self.dir, self.loc.seg).display().to_string(),
            offset: self.loc.off,
            reason,
        }
    }

    /// `dst.len()` bytes of old data from byte `d` of it: from the bytes already read if they
    /// hold them, else one `pread`.
    fn fetch(&self, d: usize, dst: &mut [u8]) -> Result<()> {
        let at = self.head.data_off + d;
        if let Some(src) = self.start.get(at..at + dst.len()) {
            dst.copy_from_slice(src);
            return Ok(());
        }
        let off = self.loc.off + at as u64;
        match self.f.read_exact_at(dst, off) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(self.corrupt(format!(
                "segment ends inside the record ({} bytes wanted at offset {off})",
                dst.len()
            ))),
            Err(e) => Err(e.into()),
        }
    }

    fn check(&self, k: u32, data: &[u8]) -> Result<()> {
        if self.head.check_chunk(k, data) {
            Ok(())
        } else {
            Err(self.corrupt(format!("checksum mismatch in the old data of chunk {k}")))
        }
    }

    /// Read allocated chunks `k0..k1`, whose data starts at byte `data` of the old data and at
    /// `s0` in the stream of `read_chunks`, into the part of `out` they cover: whole chunks
    /// straight into `out`, a chunk cut by `skip` or by the end of `out` through a buffer of
    /// its own (a chunk is verified whole).
    fn read(
        &self,
        (k0, k1): (u32, u32),
        data: usize,
        s0: usize,
        skip: usize,
        out: &mut [u8],
    ) -> Result<()> {
        let e = &self.head.entry;
        let bs = self.block_size;
        let want_end = skip + out.len();
        // [cut first chunk] [whole chunks] [cut last chunk]
        let (mut k, mut s, mut d) = (k0, s0, data);
        while k < k1 {
            let size = e.blocks_of(k) as usize * bs;
            if s < skip || s + size > want_end {
                let mut tmp = vec![0u8; size];
                self.fetch(d, &mut tmp)?;
                self.check(k, &tmp)?;
                let (a, b) = (s.max(skip), (s + size).min(want_end));
                if a < b {
                    out[a - skip..b - skip].copy_from_slice(&tmp[a - s..b - s]);
                }
                s += size;
                d += size;
                k += 1;
                continue;
            }
            let (kw, sw, dw) = (k, s, d);
            while k < k1 {
                let size = e.blocks_of(k) as usize * bs;
                if s + size > want_end {
                    break;
                }
                s += size;
                d += size;
                k += 1;
            }
            let dst = &mut out[sw - skip..s - skip];
            self.fetch(dw, dst)?;
            let mut at = 0;
            for c in kw..k {
                let size = e.blocks_of(c) as usize * bs;
                self.check(c, &dst[at..at + size])?;
                at += size;
            }
        }
        Ok(())
    }
}

/// `read_chunks` of a decoded entry (an older-format record, read whole): chunks
/// `idx..idx + n` of `e`, from byte `skip` of the first, into `out`.
pub(crate) fn copy_chunks(
    e: &Entry,
    idx: u32,
    n: u32,
    skip: usize,
    out: &mut [u8],
    block_size: usize,
) -> std::result::Result<(), String> {
    let last = idx
        .checked_add(n)
        .filter(|l| *l <= e.chunks())
        .ok_or("index points past the chunks of its record")?;
    let want_end = skip + out.len();
    let (mut k, mut s) = (idx, 0usize);
    while k < last && s < want_end {
        let size = e.blocks_of(k) as usize * block_size;
        let (a, b) = (s.max(skip), (s + size).min(want_end));
        if a < b {
            let dst = &mut out[a - skip..b - skip];
            match e.chunk_data(k, block_size)? {
                None => dst.fill(0),
                Some(d) => dst.copy_from_slice(
                    d.get(a - s..b - s)
                        .ok_or("chunk shorter than the volume's")?,
                ),
            }
        }
        s += size;
        k += 1;
    }
    if s < want_end {
        return Err("chunk shorter than the volume's".into());
    }
    Ok(())
}

/// The extent of a chunk and the chunk's place in it.
pub(crate) fn extent_of(chunk: u64) -> (u64, u64) {
    (chunk / EXTENT_CHUNKS, chunk % EXTENT_CHUNKS)
}

/// The chunks of `c0..=c1` within extent `x`, as a mask of the extent's chunks (bit k = its
/// chunk k). `x` must overlap the range.
fn extent_mask(x: u64, c0: u64, c1: u64) -> u32 {
    let from = c0.max(x * EXTENT_CHUNKS) - x * EXTENT_CHUNKS;
    let to = c1.min(x * EXTENT_CHUNKS + EXTENT_CHUNKS - 1) - x * EXTENT_CHUNKS;
    (((1u64 << (to - from + 1)) - 1) << from) as u32
}

/// How many recently read records `read_entry` keeps decoded: reading a view chunk by chunk
/// then reads and checksums each multi-chunk record once, not once per chunk.
const RECORD_CACHE: usize = 8;

/// Segment files kept open for reading.
const MAX_OPEN_READERS: usize = 256;

/// How many record heads (format version 4) `read_chunks` keeps: a view read chunk by chunk
/// then reads each record's head once, and each later read of its chunks is one `pread`.
/// A head is a few hundred bytes (16384 of them: a few MiB per journaled volume; they cover
/// 2 GiB of history in records of 128 KiB writes). Heads of records read whole
/// (`SMALL_RECORD`) are not kept.
const HEAD_CACHE: usize = 16384;

/// Bytes read at a record's start to get its head when it is not cached: the head of a record
/// of up to about 80 chunks without invalid ports fits; a larger head is read again whole.
const HEAD_PROBE: usize = 512;

/// A record up to this long whose head is not cached is read whole in one `pread` (the chunks
/// asked for are copied out of it) rather than its head and then its chunks: a record of a
/// small write.
const SMALL_RECORD: usize = 16 << 10;

/// The longest run of back-to-back small records a view read fetches with one `pread`.
const MAX_SPAN: usize = 1 << 20;

/// Bytes of a segment read ahead for several small records (`PrimaryJournal::read_span`).
pub(crate) struct Span {
    seg: u64,
    off: u64,
    /// The span's bytes are `bytes[..len]`; the buffer goes back to its thread's
    /// `SPAN_BUFFER` when the span is dropped.
    bytes: Vec<u8>,
    len: usize,
}

thread_local! {
    /// The buffer of this thread's last span, kept for its next one: a read ahead then
    /// neither allocates nor zeroes its buffer (at most `MAX_SPAN` bytes per reading thread).
    static SPAN_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Span {
    /// The bytes of the record at `loc`, if they all lie in this span.
    fn slice(&self, loc: Loc) -> Option<&[u8]> {
        if loc.seg != self.seg {
            return None;
        }
        let from = usize::try_from(loc.off.checked_sub(self.off)?).ok()?;
        self.bytes[..self.len].get(from..from.checked_add(loc.len as usize)?)
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let bytes = std::mem::take(&mut self.bytes);
        SPAN_BUFFER.with(|b| {
            let mut b = b.borrow_mut();
            if b.len() < bytes.len() {
                *b = bytes;
            }
        });
    }
}

/// Recently read record heads by `(segment, offset)`, oldest first in `order`.
#[derive(Default)]
struct HeadCache {
    map: HashMap<(u64, u64), Arc<EntryHead>>,
    order: VecDeque<(u64, u64)>,
}

impl HeadCache {
    fn get(&self, at: (u64, u64)) -> Option<Arc<EntryHead>> {
        self.map.get(&at).cloned()
    }
    fn insert(&mut self, at: (u64, u64), h: Arc<EntryHead>) {
        if self.map.insert(at, h).is_none() {
            self.order.push_back(at);
            while self.order.len() > HEAD_CACHE {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
    fn drop_segment(&mut self, seg: u64) {
        self.map.retain(|k, _| k.0 != seg);
        self.order.retain(|k| k.0 != seg);
    }
}

/// A piece of the buffered segment write: a range of the head buffer, or an entry's old data.
enum Part<'a> {
    Head(usize, usize),
    Data(&'a [u8]),
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

/// Records buffered for one segment write.
#[derive(Default)]
struct Pending<'a> {
    head: Vec<u8>,
    parts: Vec<Part<'a>>,
    /// Bytes buffered (heads and data).
    len: u64,
    locs: Vec<Indexed>,
}

/// Why [`PrimaryJournal::adopt_segment`] failed, and whether the file was taken.
#[derive(Debug)]
pub(crate) enum Adopt {
    /// The file is still where it was; nothing changed.
    NotTaken(JournalError),
    /// The file is a segment now (its entries durable there); indexing it failed.
    Taken(JournalError),
}

pub(crate) struct PrimaryJournal {
    dir: PathBuf,
    chunk_bytes: u32,
    blocks_per_chunk: u64,
    segment_size: u64,
    pub db: sled::Db,
    index: sled::Tree,
    pub meta: sled::Tree,
    /// Writes whose outcome is `Failed`: `(ts, port, seq)` -> `(lba, blocks)`. Derived from the
    /// segments (entry records and status records), rebuilt with the index.
    failed: sled::Tree,
    /// Port validity of merged windows: `(end, start)` -> `(segment, ports, bit vector)`.
    /// Derived from the segments' window records, rebuilt with the index.
    windows: sled::Tree,
    active: Mutex<Active>,
    /// Open segment files and their format versions.
    readers: Mutex<HashMap<u64, (Arc<File>, u16)>>,
    /// Recently read records, newest last.
    recent: Mutex<Vec<(Loc, Arc<Entry>)>>,
    /// Recently read record heads (format version 4).
    heads: Mutex<HeadCache>,
    /// What the index walks of point-in-time reads found (bumped on every index change).
    hits: HitCache,
    /// Each extent's latest group, for the next append to it.
    latest: LatestGroups,
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

/// zstd level of a compressed index's pages (`[journal] index_compression`). Level 1 takes
/// the least CPU; higher levels made the index no smaller (a page holds at most 16 keys).
const INDEX_ZSTD_LEVEL: i32 = 1;

/// Open the sled index. sled holds an exclusive lock on it until its last reference (including
/// its own background flush thread, which lets go up to about half a second after the journal
/// is dropped) is gone, so a journal reopened right after it was closed waits for the lock. A
/// lock is never mistaken for corruption: treating it as such would throw the index away, and
/// the bookmarks with it.
///
/// `compress` applies to a new index. sled cannot change that setting of an existing database
/// and says so with `Unsupported`: an index made with the other setting is opened as it is,
/// not taken for a damaged one.
fn open_index(dir: &Path, compress: bool) -> Result<sled::Db> {
    match open_index_with(dir, compress) {
        Err(JournalError::Index(sled::Error::Unsupported(why))) => {
            tracing::info!(%why, compress = !compress, "journal index keeps the setting it was made with");
            open_index_with(dir, !compress)
        }
        other => other,
    }
}

fn open_index_with(dir: &Path, compress: bool) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + INDEX_LOCK_WAIT;
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(INDEX_CACHE_BYTES)
            .use_compression(compress)
            .compression_factor(INDEX_ZSTD_LEVEL)
            .open()
        {
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(JournalError::IndexLocked {
                        dir: dir.display().to_string(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.map_err(JournalError::from),
        }
    }
}

/// How long `open_index` waits for a closing journal to let go of its index.
const INDEX_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

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
    /// A new index is not compressed.
    #[cfg(test)]
    pub fn open(
        dir: &Path,
        chunk_bytes: u32,
        block_size: u32,
        segment_size: u64,
    ) -> Result<(Self, PrimaryRecovery)> {
        Self::open_with(dir, chunk_bytes, block_size, segment_size, false)
    }

    /// `open`, where a new index compresses its pages if `compress_index`
    /// (`[journal] index_compression`; an existing index keeps the setting it was made with).
    pub fn open_with(
        dir: &Path,
        chunk_bytes: u32,
        block_size: u32,
        segment_size: u64,
        compress_index: bool,
    ) -> Result<(Self, PrimaryRecovery)> {
        let seg_dir = dir.join("primary");
        std::fs::create_dir_all(&seg_dir)?;
        let idx_dir = dir.join("index");
        let mut rebuild = false;
        let db = match open_index(&idx_dir, compress_index) {
            Ok(db) => db,
            Err(e @ JournalError::IndexLocked { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!("journal index unreadable ({e}); rebuilding it from segments");
                std::fs::remove_dir_all(&idx_dir)?;
                rebuild = true;
                open_index(&idx_dir, compress_index)?
            }
        };
        let index = db.open_tree("index")?;
        let meta = db.open_tree("meta")?;
        let failed = db.open_tree("failed_writes")?;
        let windows = db.open_tree("merged_windows")?;
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
        // An index of an older layout: rebuilt below (and marked current once it is).
        let format = meta
            .get("index_format")?
            .and_then(|v| v.as_ref().try_into().ok().map(u32::from_be_bytes));
        if format != Some(INDEX_FORMAT) {
            if index.is_empty() {
                meta.insert("index_format", &INDEX_FORMAT.to_be_bytes())?;
            } else {
                tracing::info!("journal index has an older layout; rebuilding it from segments");
                rebuild = true;
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
        // A journal written in another record format: refuse it with a clear error (the old
        // format is not converted).
        for &seg in &segs {
            let path = seg_path(&seg_dir, seg);
            let mut head = [0u8; SEGMENT_HEADER_LEN];
            let mut f = File::open(&path)?;
            if f.read_exact(&mut head).is_ok() {
                check_version(&head, &path.display().to_string())?;
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
            failed,
            windows,
            active: Mutex::new(Active {
                id: 0,
                file: None,
                len: 0,
                broken: true,
            }),
            readers: Mutex::new(HashMap::new()),
            recent: Mutex::new(Vec::new()),
            heads: Mutex::new(HeadCache::default()),
            hits: HitCache::default(),
            latest: LatestGroups::default(),
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
        if rebuild {
            pj.meta
                .insert("index_format", &INDEX_FORMAT.to_be_bytes())?;
            pj.db.flush()?;
        }
        // Continue in the last segment if it has room and is of the current format (records
        // of this format never go into a segment whose header promises an older one).
        if let Some(&last) = segs.iter().next_back() {
            let path = seg_path(&pj.dir, last);
            let len = std::fs::metadata(&path)?.len();
            let mut head = [0u8; SEGMENT_HEADER_LEN];
            let current = File::open(&path)?.read_exact(&mut head).is_ok()
                && segment_version(&head) == Some(FORMAT_VERSION);
            if len < segment_size && current {
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
            // A segment indexed to its end is not read at all (at open, every segment but the
            // newest usually is).
            if done > 0 && done >= std::fs::metadata(&path)?.len() {
                continue;
            }
            let buf = std::fs::read(&path)?;
            let (header, scan) = scan_segment(&buf, &path.display().to_string())?;
            // A partial journal file adopted whole keeps its header (kind `Partial`).
            if header.chunk_bytes != self.chunk_bytes {
                return Err(JournalError::Corrupt {
                    file: path.display().to_string(),
                    offset: 0,
                    reason: "segment chunk size does not match this journal".into(),
                });
            }
            let mut batch = sled::Batch::default();
            let mut items = Vec::new();
            for s in &scan.records {
                if s.offset < done {
                    continue;
                }
                self.note_record(&s.record, seg)?;
                if let Record::Entry(e) = &s.record {
                    let c0 = self.chunk_of(e.lba);
                    if e.chunk_blocks as u64 != self.blocks_per_chunk
                        || e.lba % self.blocks_per_chunk != 0
                        || c0.checked_add(u64::from(e.chunks())).is_none()
                    {
                        return Err(JournalError::Corrupt {
                            file: path.display().to_string(),
                            offset: s.offset,
                            reason: "entry not cut to this journal's chunks".into(),
                        });
                    }
                    // A record past `done` may already be indexed (a crash between the index
                    // batch and the `meta` update): `place_items` indexes and counts it once.
                    items.extend(self.indexed(e, seg, s.offset, s.len));
                    rec.records_indexed += u64::from(e.chunks());
                    rec.max_ts = rec.max_ts.max(e.ts);
                }
            }
            let (added, latest) = self.place_items(items, &mut batch)?;
            batch.insert(COUNT_KEY, &(self.count()? + added).to_be_bytes()[..]);
            self.apply_index(batch, latest)?;
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
        self.latest.clear();
        self.index.clear()?;
        self.hits.changed();
        self.failed.clear()?;
        self.windows.clear()?;
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

    /// The index entries of the record of `e` at `(seg, off)`, `len` bytes: one per extent it
    /// touches, in extent order, each with the run of the extent it covers.
    fn indexed<'a>(
        &self,
        e: &'a Entry,
        seg: u64,
        off: u64,
        len: u32,
    ) -> impl Iterator<Item = Indexed> + 'a {
        let c0 = self.chunk_of(e.lba);
        let end = c0.saturating_add(u64::from(e.chunks()));
        let (x0, _) = extent_of(c0);
        let x1 = if end > c0 { extent_of(end - 1).0 } else { x0 };
        (x0..=x1).filter(move |_| end > c0).map(move |x| {
            let from = c0.max(x * EXTENT_CHUNKS);
            let to = end.min((x + 1) * EXTENT_CHUNKS);
            Indexed {
                extent: x,
                ts: e.ts,
                port: e.port,
                seq: e.seq,
                loc: Loc {
                    seg,
                    off,
                    len,
                    idx: (from - c0) as u32,
                    lo: (from - x * EXTENT_CHUNKS) as u8,
                    n: (to - from) as u8,
                },
            }
        })
    }

    /// Add index entries to the index's groups ([`place`]): each extent's groups that can take
    /// them are read and written back whole, with new groups, into `batch`. Returns the chunk
    /// versions added (an entry the index holds already is not added again) and the extents'
    /// latest groups once `batch` is applied, for [`apply_index`](Self::apply_index). Index
    /// writers are serialized (the store's flush lock), and each applies its batch before the
    /// next reads.
    ///
    /// An extent's latest group comes from `latest` where it is known, else from the index.
    /// Entries at or after it (the common case: stamps only go forward) can only go into it
    /// or into new groups after it, so no other group is read.
    fn place_items(
        &self,
        mut items: Vec<Indexed>,
        batch: &mut sled::Batch,
    ) -> Result<(u64, Vec<(u64, Latest)>)> {
        items.sort_by_key(|i| (i.order(), i.loc.seg));
        let mut added = 0u64;
        let mut after = Vec::new();
        let mut from = 0;
        while from < items.len() {
            let x = items[from].extent;
            let to = from + items[from..].partition_point(|i| i.extent == x);
            let (first, last) = (items[from], items[to - 1]);
            let lo_key = index_key(x, first.ts, first.loc.lo);
            let latest = match self.latest.take(x) {
                Some(l) => l,
                None => self.last_group(x)?,
            };
            let latest_key = latest.as_ref().map(|g| g.0);
            // `kept`: the latest group when no group read is it (entries before it).
            let (groups, kept) = match latest {
                None => (Vec::new(), None),
                Some(g) if g.0 <= lo_key => (vec![g], None),
                Some(g) => (self.groups_spanning(x, first, last)?, Some(g)),
            };
            let mut placed = place(groups, items[from..to].to_vec());
            for (k, g) in &placed.write {
                batch.insert(&k[..], encode_group_keyed(k, g));
            }
            added += placed.added.iter().map(|i| u64::from(i.loc.n)).sum::<u64>();
            // The written group with the greatest key is the latest unless the latest was
            // before every entry and is left as it was; nothing written: unknown.
            match placed.write.pop() {
                Some(w) if latest_key.is_none_or(|k| w.0 >= k) => after.push((x, Some(w))),
                Some(_) => after.extend(kept.map(|g| (x, Some(g)))),
                None => {}
            }
            from = to;
        }
        Ok((added, after))
    }

    /// Apply an index batch of `place_items`, then note the extents' latest groups it left.
    fn apply_index(&self, batch: sled::Batch, latest: Vec<(u64, Latest)>) -> Result<()> {
        self.index.apply_batch(batch)?;
        self.hits.changed();
        self.latest.put(latest);
        Ok(())
    }

    /// Extent `x`'s group with the greatest key, if it has any.
    fn last_group(&self, x: u64) -> Result<Latest> {
        let last = self
            .index
            .range(index_key(x, 0, 0)..=index_key(x, u64::MAX, u8::MAX))
            .next_back()
            .transpose()?;
        last.map(|kv| self.decode_kv(kv)).transpose()
    }

    /// Extent `x`'s groups that can take entries from `first` to `last`: the one with the
    /// greatest key at or before `first` and every one after it up to `last`, in key order.
    fn groups_spanning(&self, x: u64, first: Indexed, last: Indexed) -> Result<Vec<Group>> {
        let mut groups: Vec<Group> = Vec::new();
        if let Some(kv) = self.group_at_or_before(x, first.ts, first.loc.lo)? {
            groups.push(self.decode_kv(kv)?);
        }
        let lo_key = index_key(x, first.ts, first.loc.lo);
        for kv in self
            .index
            .range(lo_key..=index_key(x, last.ts, last.loc.lo))
        {
            let g = self.decode_kv(kv?)?;
            if groups.first().is_none_or(|f| f.0 != g.0) {
                groups.push(g);
            }
        }
        Ok(groups)
    }

    /// A group read from the index.
    fn decode_kv(&self, (k, v): (sled::IVec, sled::IVec)) -> Result<Group> {
        let g = decode_group(&k, &v).ok_or_else(|| self.bad_index())?;
        Ok((self.group_key(&k)?, g))
    }

    /// An index key as read from sled.
    fn group_key(&self, k: &[u8]) -> Result<[u8; KEY_LEN]> {
        <[u8; KEY_LEN]>::try_from(k).map_err(|_| self.bad_index())
    }

    /// The group of extent `x` with the greatest key at or before `(ts, lo)`: the one that holds
    /// an entry so stamped, if any does (an extent's groups keep apart in time).
    fn group_at_or_before(
        &self,
        x: u64,
        ts: u64,
        lo: u8,
    ) -> Result<Option<(sled::IVec, sled::IVec)>> {
        Ok(self
            .index
            .range(index_key(x, 0, 0)..=index_key(x, ts, lo))
            .next_back()
            .transpose()?)
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

    /// As `append`, with each entry's status given beside it (no copy of the old data: the
    /// records are written with vectored writes straight from the entries).
    pub fn append_refs(&self, entries: &[(&Entry, Status)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        for (e, _) in entries {
            if !self.cut_to_chunks(e) {
                return Err(JournalError::Config(
                    "entry not cut to this journal's chunks".into(),
                ));
            }
        }
        let mut a = self.active.lock().unwrap_or_else(|p| p.into_inner());
        let mut items = Vec::new();
        let mut w = Pending::default();
        let mut max_ts = 0;
        let mut touched: Vec<(u64, u64)> = Vec::new();
        for &(e, status) in entries {
            if a.broken || a.len >= self.segment_size {
                self.write_out(&mut a, &mut w, &mut items, &mut touched)?;
                self.new_segment(&mut a)?;
            }
            let off = a.len + w.len;
            let from = w.head.len();
            encode_entry_head(e, status, &mut w.head);
            let len = (w.head.len() - from + e.data.len()) as u32;
            w.parts.push(Part::Head(from, w.head.len()));
            w.parts.push(Part::Data(&e.data));
            w.len += u64::from(len);
            w.locs.extend(self.indexed(e, a.id, off, len));
            max_ts = max_ts.max(e.ts);
            if a.len + w.len >= self.segment_size || w.parts.len() >= 4096 {
                self.write_out(&mut a, &mut w, &mut items, &mut touched)?;
            }
        }
        self.write_out(&mut a, &mut w, &mut items, &mut touched)?;
        drop(a);
        self.commit_index(items, entries, max_ts, &touched)
    }

    /// Apply the index keys of freshly written `entries` and note what derives from them.
    fn commit_index(
        &self,
        items: Vec<Indexed>,
        entries: &[(&Entry, Status)],
        max_ts: u64,
        touched: &[(u64, u64)],
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        let (added, latest) = self.place_items(items, &mut batch)?;
        batch.insert(COUNT_KEY, &(self.count()? + added).to_be_bytes()[..]);
        self.apply_index(batch, latest)?;
        for &(e, status) in entries {
            self.note_entry(e, status)?;
        }
        for &(seg, end) in touched {
            self.meta.insert(seg_meta_key(seg), &end.to_be_bytes())?;
        }
        let stored = self.meta.get("max_ts")?.and_then(|v| be(&v)).unwrap_or(0);
        if max_ts > stored {
            self.meta.insert("max_ts", &max_ts.to_be_bytes())?;
        }
        Ok(())
    }

    /// Take a rotated partial journal file whole as the next segment: fsync it, move it into
    /// the segment directory and index its entries where they lie (each at its `(offset,
    /// length)` in `places`), instead of writing their old data a second time. The segment
    /// becomes the active one: later status and window records are appended to it.
    ///
    /// An error before the file moved ([`Adopt::NotTaken`]) leaves it where it was: the
    /// caller copies the entries instead. After the move ([`Adopt::Taken`]) the entries are
    /// durable in the segment, and a reopen indexes whatever the index missed.
    pub fn adopt_segment(
        &self,
        file: &File,
        path: &Path,
        len: u64,
        entries: &[(&Entry, Status)],
        places: &[(u64, u32)],
    ) -> std::result::Result<(), Adopt> {
        let not_taken = |e: JournalError| Adopt::NotTaken(e);
        if places.len() != entries.len() || entries.is_empty() {
            return Err(not_taken(JournalError::Config(
                "entries and their places differ".into(),
            )));
        }
        for ((e, _), &(off, rlen)) in entries.iter().zip(places) {
            if !self.cut_to_chunks(e) || off + u64::from(rlen) > len {
                return Err(not_taken(JournalError::Config(
                    "entry not cut to this journal's chunks".into(),
                )));
            }
        }
        file.sync_data().map_err(|e| not_taken(e.into()))?;
        let mut a = self.active.lock().unwrap_or_else(|p| p.into_inner());
        let id = a.id + 1;
        let dst = seg_path(&self.dir, id);
        if dst.exists() {
            return Err(not_taken(JournalError::Config(format!(
                "journal segment {} exists already",
                dst.display()
            ))));
        }
        std::fs::rename(path, &dst).map_err(|e| not_taken(e.into()))?;
        // From here on the file is a segment: the next one gets a higher number whatever
        // happens below.
        *a = Active {
            id,
            file: None,
            len,
            broken: true,
        };
        let taken = |e: JournalError| Adopt::Taken(e);
        sync_dir(&self.dir).map_err(|e| taken(e.into()))?;
        if let Some(from) = path.parent() {
            sync_dir(from).map_err(|e| taken(e.into()))?;
        }
        // Appended to only if of the current format (a file written by an older rewind and
        // adopted at open is not: the next append starts a new segment).
        let current = File::open(&dst)
            .and_then(|f| {
                let mut head = [0u8; SEGMENT_HEADER_LEN];
                f.read_exact_at(&mut head, 0)
                    .map(|_| segment_version(&head) == Some(FORMAT_VERSION))
            })
            .unwrap_or(false);
        if let (true, Ok(f)) = (current, OpenOptions::new().append(true).open(&dst)) {
            a.file = Some(Arc::new(f));
            a.broken = false;
        }
        drop(a);
        let mut max_ts = 0;
        let mut items = Vec::with_capacity(entries.len());
        for (&(e, _), &(off, rlen)) in entries.iter().zip(places) {
            items.extend(self.indexed(e, id, off, rlen));
            max_ts = max_ts.max(e.ts);
        }
        self.commit_index(items, entries, max_ts, &[(id, len)])
            .map_err(taken)
    }

    fn cut_to_chunks(&self, e: &Entry) -> bool {
        e.chunk_blocks as u64 == self.blocks_per_chunk
            && e.chunks() > 0
            && e.lba % self.blocks_per_chunk == 0
    }

    /// Write the buffered records to the active segment and fsync it.
    fn write_out(
        &self,
        a: &mut Active,
        w: &mut Pending<'_>,
        items: &mut Vec<Indexed>,
        touched: &mut Vec<(u64, u64)>,
    ) -> Result<()> {
        if w.parts.is_empty() {
            return Ok(());
        }
        let Some(file) = a.file.clone() else {
            a.broken = true;
            return Err(std::io::Error::other("no active journal segment").into());
        };
        let slices: Vec<&[u8]> = w
            .parts
            .iter()
            .map(|p| match p {
                Part::Head(from, to) => &w.head[*from..*to],
                Part::Data(d) => *d,
            })
            .collect();
        if let Err(e) = write_all_parts(&file, &slices).and_then(|_| file.sync_data()) {
            // Start a fresh segment next time; recovery cuts any torn tail of this one.
            let _ = file.set_len(a.len);
            a.broken = true;
            return Err(e.into());
        }
        a.len += w.len;
        w.len = 0;
        w.head.clear();
        w.parts.clear();
        items.append(&mut w.locs);
        touched.retain(|t| t.0 != a.id);
        touched.push((a.id, a.len));
        Ok(())
    }

    /// Keep the trees derived from records (failed writes, merged windows) up to date with a
    /// record found in, or appended to, segment `seg`.
    fn note_record(&self, r: &Record, seg: u64) -> Result<()> {
        match r {
            Record::Entry(e) => self.note_entry(e, e.status),
            Record::Status(u) => {
                let key = status_key(u.ts, u.port, u.seq);
                match u.status {
                    Status::Failed => {
                        self.failed.insert(key, &range_value(u.lba, u.blocks)[..])?;
                    }
                    Status::Ok => {
                        self.failed.remove(key)?;
                    }
                    // An outcome not known does not undo one that is.
                    Status::Pending => {}
                }
                Ok(())
            }
            Record::Window(w) => {
                self.windows
                    .insert(window_key(w.start, w.end), encode_window_value(seg, w))?;
                Ok(())
            }
        }
    }

    /// An entry record written with `status`: only `Failed` is noted (an entry comes before
    /// any status record of its write, so it has nothing to undo). A huge write is several
    /// records: the range of the first one noted stays.
    fn note_entry(&self, e: &Entry, status: Status) -> Result<()> {
        if status == Status::Failed {
            let key = status_key(e.ts, e.port, e.seq);
            if !self.failed.contains_key(key)? {
                self.failed
                    .insert(key, &range_value(e.lba, u64::from(e.blocks))[..])?;
            }
        }
        Ok(())
    }

    /// Append status and window records to the active segment, fsync them, and note them.
    /// Callers serialize appends (the store's flush lock).
    pub fn append_records(&self, records: &[Record]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for r in records {
            encode_record(r, &mut buf);
        }
        let mut a = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if a.broken || a.file.is_none() || a.len >= self.segment_size {
            self.new_segment(&mut a)?;
        }
        let Some(file) = a.file.clone() else {
            return Err(std::io::Error::other("no active journal segment").into());
        };
        if let Err(e) = write_all_parts(&file, &[&buf]).and_then(|_| file.sync_data()) {
            let _ = file.set_len(a.len);
            a.broken = true;
            return Err(e.into());
        }
        a.len += buf.len() as u64;
        let (seg, end) = (a.id, a.len);
        drop(a);
        for r in records {
            self.note_record(r, seg)?;
        }
        self.meta.insert(seg_meta_key(seg), &end.to_be_bytes())?;
        Ok(())
    }

    /// Writes recorded `Failed` with stamps in `[from, to]`, oldest first.
    pub fn failed_writes(&self, from: u64, to: u64) -> Result<Vec<StatusUpdate>> {
        let mut out = Vec::new();
        let lo = status_key(from, 0, 0);
        let hi = status_key(to, u64::MAX, u64::MAX);
        for kv in self.failed.range(lo..=hi) {
            let (k, v) = kv?;
            if let (Some(ts), Some(port), Some(seq), Some(lba), Some(blocks)) = (
                be(&k[0..]),
                k.get(8..).and_then(be),
                k.get(16..).and_then(be),
                be(&v[0..]),
                v.get(8..).and_then(be),
            ) {
                out.push(StatusUpdate {
                    ts,
                    port,
                    seq,
                    status: Status::Failed,
                    lba,
                    blocks,
                });
            }
        }
        Ok(out)
    }

    /// Forget failed writes stamped at or before `horizon` (their history is gone).
    pub fn drop_failed_upto(&self, horizon: u64) -> Result<()> {
        let hi = status_key(horizon, u64::MAX, u64::MAX);
        let old: Vec<_> = self.failed.range(..=hi).keys().collect::<Result<_, _>>()?;
        for k in old {
            self.failed.remove(k)?;
        }
        Ok(())
    }

    /// Merged windows with `end > after`, and the segment each record lives in.
    pub fn windows_after(&self, after: u64) -> Result<Vec<(MergedWindow, u64)>> {
        let mut out = Vec::new();
        let from = window_key(0, after.saturating_add(1));
        for kv in self.windows.range(from..) {
            let (k, v) = kv?;
            if let Some(w) = decode_window_value(&k, &v) {
                out.push(w);
            }
        }
        Ok(out)
    }

    /// Forget merged windows ending at or before `horizon`.
    pub fn drop_windows_upto(&self, horizon: u64) -> Result<()> {
        let hi = window_key(u64::MAX, horizon);
        let old: Vec<_> = self.windows.range(..=hi).keys().collect::<Result<_, _>>()?;
        for k in old {
            self.windows.remove(k)?;
        }
        Ok(())
    }

    /// The first entry for `chunk` stamped after `ts`: its key parts and location (narrowed
    /// to the chunk).
    pub fn first_after(&self, chunk: u64, ts: u64) -> Result<Option<IndexHit>> {
        Ok(self.first_after_range(chunk, chunk, ts)?.pop().flatten())
    }

    /// `first_after` for every chunk of `c0..=c1`, with one ordered walk of the index per
    /// extent.
    pub fn first_after_range(&self, c0: u64, c1: u64, ts: u64) -> Result<Vec<Option<IndexHit>>> {
        self.per_extent(c0, c1, ts, |x, want| {
            Ok(self.walk_extent(x, ts, want, 0)?.0)
        })
    }

    /// The answers for chunks `c0..=c1` after `ts`, taken extent by extent from what
    /// `extent_hits(x, want)` gives for extent `x` and its chunks `want` in the range.
    fn per_extent(
        &self,
        c0: u64,
        c1: u64,
        ts: u64,
        mut extent_hits: impl FnMut(u64, u32) -> Result<ExtentHits>,
    ) -> Result<Vec<Option<IndexHit>>> {
        let n = (c1 - c0 + 1) as usize;
        let mut out = vec![None; n];
        if ts == u64::MAX {
            return Ok(out);
        }
        for x in extent_of(c0).0..=extent_of(c1).0 {
            let hits = extent_hits(x, extent_mask(x, c0, c1))?;
            let (first, last) = (
                c0.max(x * EXTENT_CHUNKS),
                c1.min(x * EXTENT_CHUNKS + EXTENT_CHUNKS - 1),
            );
            for c in first..=last {
                out[(c - c0) as usize] = hits[(c - x * EXTENT_CHUNKS) as usize];
            }
        }
        Ok(out)
    }

    /// The first entry after `ts` of each chunk of extent `x` (narrowed to the chunk), by a
    /// walk of the extent's groups from the last one keyed at or before `ts`. Returns the
    /// answers and the chunks whose answer is final: every chunk of `want`, and any other the
    /// walk settled on its way, going on for up to `extra` groups past the one that settled
    /// `want`.
    ///
    /// A group's entries are at or after its key's stamp, and keys come in stamp order: once
    /// a key is stamped after a chunk's best answer, no later group has an earlier one.
    fn walk_extent(&self, x: u64, ts: u64, want: u32, extra: u32) -> Result<(ExtentHits, u32)> {
        const ALL: u32 = (1 << EXTENT_CHUNKS) - 1;
        let mut hits: ExtentHits = [None; EXTENT_CHUNKS as usize];
        // Chunks with an answer (maybe not the first yet), and those settled.
        let (mut seen, mut known) = (0u32, 0u32);
        let mut past = 0;
        let hi = index_key(x, u64::MAX, u8::MAX);
        // Groups before the last one keyed at or before `ts` hold only entries at or before it.
        let start = match self.group_at_or_before(x, ts, u8::MAX)? {
            Some((k, _)) => self.group_key(&k)?,
            None => index_key(x, 0, 0),
        };
        for kv in self.index.range(start..=hi) {
            let (k, v) = kv?;
            let g = decode_group(&k, &v).ok_or_else(|| self.bad_index())?;
            let (_, key_ts, _) = parse_key(&k).ok_or_else(|| self.bad_index())?;
            // Answers stamped before this key are settled.
            let mut open = seen & !known;
            while open != 0 {
                let c = open.trailing_zeros() as usize;
                open &= open - 1;
                if hits[c].is_some_and(|((t, _, _), _)| t < key_ts) {
                    known |= 1 << c;
                }
            }
            if known & want == want {
                if known == ALL || past >= extra {
                    return Ok((hits, known));
                }
                past += 1;
            }
            for it in &g {
                if it.ts <= ts {
                    continue;
                }
                let mut bits = it.loc.mask() & !known;
                while bits != 0 {
                    let c = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let better = hits[c].is_none_or(|((t, _, _), _)| it.ts < t);
                    if better {
                        hits[c] = it
                            .loc
                            .for_chunk(c as u64)
                            .map(|l| ((it.ts, it.port, it.seq), l));
                        seen |= 1 << c;
                    }
                }
            }
        }
        // The extent's end: every answer is final (`None`: nothing after `ts`).
        Ok((hits, ALL))
    }

    /// [`first_after_range`](Self::first_after_range) for point-in-time reads: each extent is
    /// answered from the [`HitCache`] when it knows the asked chunks, else by a walk of the
    /// extent that also notes the first entries of the other chunks it settles, going on for
    /// up to `EXTRA_GROUPS` groups past the one that answered the asked ones.
    pub fn first_after_range_cached(
        &self,
        c0: u64,
        c1: u64,
        ts: u64,
    ) -> Result<Vec<Option<IndexHit>>> {
        const EXTRA_GROUPS: u32 = 4;
        self.per_extent(c0, c1, ts, |x, want| {
            if let Some(h) = self.hits.get(ts, x, want) {
                return Ok(h);
            }
            let generation = self.hits.generation();
            let (hits, known) = self.walk_extent(x, ts, want, EXTRA_GROUPS)?;
            self.hits.put(ts, x, generation, known, hits);
            Ok(hits)
        })
    }

    fn bad_index(&self) -> JournalError {
        JournalError::Corrupt {
            file: "index".into(),
            offset: 0,
            reason: "malformed index entry".into(),
        }
    }

    /// An open segment file and the format version its header says (0 if it has none).
    fn reader(&self, seg: u64) -> Result<(Arc<File>, u16)> {
        let mut r = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((f, v)) = r.get(&seg) {
            return Ok((f.clone(), *v));
        }
        let f = Arc::new(File::open(seg_path(&self.dir, seg))?);
        let mut head = [0u8; SEGMENT_HEADER_LEN];
        let version = match f.read_exact_at(&mut head, 0) {
            Ok(()) => segment_version(&head).unwrap_or(0),
            Err(_) => 0,
        };
        // Adopted partial files make segments small and many: bound the open files.
        if r.len() >= MAX_OPEN_READERS {
            r.clear();
        }
        r.insert(seg, (f.clone(), version));
        Ok((f, version))
    }

    /// Read and verify the record at `loc` (any chunk of it). Recently read records are kept.
    pub fn read_entry(&self, loc: Loc) -> Result<Arc<Entry>> {
        {
            let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, e)) = recent.iter().find(|(l, _)| l.record() == loc.record()) {
                return Ok(e.clone());
            }
        }
        let (f, _) = self.reader(loc.seg)?;
        let mut buf = vec![0u8; loc.len as usize];
        self.read_record_bytes(&f, loc, &mut buf, loc.off)?;
        match decode_record(&buf) {
            Ok((Record::Entry(e), _)) if loc.idx < e.chunks() => {
                let e = Arc::new(e);
                let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
                if recent.len() >= RECORD_CACHE {
                    recent.remove(0);
                }
                recent.push((loc, e.clone()));
                Ok(e)
            }
            Ok((Record::Entry(_), _)) => Err(JournalError::Corrupt {
                file: seg_path(&self.dir, loc.seg).display().to_string(),
                offset: loc.off,
                reason: "index points past the chunks of its record".into(),
            }),
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

    fn corrupt(&self, loc: Loc, reason: impl Into<String>) -> JournalError {
        JournalError::Corrupt {
            file: seg_path(&self.dir, loc.seg).display().to_string(),
            offset: loc.off,
            reason: reason.into(),
        }
    }

    /// `pread` `buf` from `at` of the segment of `loc`: a segment that ends before is corrupt
    /// (the index points past it), not an I/O error.
    fn read_record_bytes(&self, f: &File, loc: Loc, buf: &mut [u8], at: u64) -> Result<()> {
        match f.read_exact_at(buf, at) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(self.corrupt(
                loc,
                format!(
                    "segment ends inside the record ({} bytes wanted at offset {at})",
                    buf.len()
                ),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// The verified head of the record at `loc` if it is of format version 4 or later (`None`:
    /// an entry record of an older format, to be read whole), and, unless the head was cached,
    /// the bytes read from the record's start to get it (a small record is read whole, or
    /// taken in place from `span`). Heads are cached.
    #[allow(clippy::type_complexity)]
    fn record_head<'s>(
        &self,
        f: &File,
        loc: Loc,
        span: Option<&'s Span>,
    ) -> Result<Option<(Arc<EntryHead>, Cow<'s, [u8]>)>> {
        if let Some(h) = self
            .heads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(loc.record())
        {
            return Ok(Some((h, Cow::Borrowed(&[]))));
        }
        let len = loc.len as usize;
        let probe = if len <= SMALL_RECORD { len } else { HEAD_PROBE };
        let mut buf = match span.and_then(|s| s.slice(loc)) {
            // A small record inside bytes already read for its neighbours: used in place.
            Some(b) if len <= SMALL_RECORD => Cow::Borrowed(b),
            _ => {
                let mut buf = vec![0u8; len.min(probe)];
                self.read_record_bytes(f, loc, &mut buf, loc.off)?;
                Cow::Owned(buf)
            }
        };
        let mut parsed = decode_entry_head(&buf);
        if parsed == Err(DecodeError::Torn) && buf.len() < len {
            // A large head: read the whole record once.
            let mut whole = vec![0u8; len];
            self.read_record_bytes(f, loc, &mut whole, loc.off)?;
            parsed = decode_entry_head(&whole);
            buf = Cow::Owned(whole);
        }
        let head = match parsed {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(None),
            Err(DecodeError::Torn) => {
                return Err(self.corrupt(loc, "record longer than the index says"))
            }
            Err(DecodeError::Corrupt(r)) => return Err(self.corrupt(loc, r)),
        };
        if head.data_off + head.data_len != len {
            return Err(self.corrupt(loc, "record length differs from the index's"));
        }
        let head = Arc::new(head);
        // A small record is read whole anyway: caching its head would save no `pread`.
        if len > SMALL_RECORD {
            self.heads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(loc.record(), head.clone());
        }
        Ok(Some((head, buf)))
    }

    /// Read chunks `loc.idx .. loc.idx + n` of the record at `loc` (blocks of `block_size`
    /// bytes) into `out`: their bytes back to back, from byte `skip` of the first, `out.len()`
    /// bytes; an unallocated chunk reads as zeros. For a record of format version 4 only the
    /// chunks asked for are read (one `pread` per run of allocated chunks, straight into `out`
    /// where whole chunks are asked for) and each is verified against its checksum; a record
    /// of an older format is read whole (`read_entry`). Bad checksums, a record that does not
    /// hold the chunks asked for, or `out` reaching past them are `Corrupt`.
    #[cfg(test)]
    pub fn read_chunks(
        &self,
        loc: Loc,
        n: u32,
        skip: usize,
        out: &mut [u8],
        block_size: usize,
    ) -> Result<()> {
        self.read_chunks_in(loc, n, skip, out, block_size, None)
    }

    /// Bytes `range` of segment `seg`, read with one `pread`: the small records a view read
    /// needs that lie back to back (a sequential run of small writes, in one segment), so that
    /// [`read_chunks_in`](Self::read_chunks_in) takes them from memory instead of one `pread`
    /// each. `None` when the range is too long or cannot be read (each record is then read
    /// on its own, which reports what is wrong).
    pub fn read_span(&self, seg: u64, range: std::ops::Range<u64>) -> Option<Span> {
        let len = usize::try_from(range.end.checked_sub(range.start)?).ok()?;
        if len == 0 || len > MAX_SPAN {
            return None;
        }
        let (f, version) = self.reader(seg).ok()?;
        if version < 4 {
            return None;
        }
        let mut bytes = SPAN_BUFFER.with(|b| std::mem::take(&mut *b.borrow_mut()));
        if bytes.len() < len {
            bytes.resize(len, 0);
        }
        // On an error the buffer still goes back (the span is dropped).
        let mut span = Span {
            seg,
            off: range.start,
            bytes,
            len,
        };
        f.read_exact_at(&mut span.bytes[..len], range.start).ok()?;
        Some(span)
    }

    /// As [`read_chunks`](Self::read_chunks), taking a small record from `span` when it lies
    /// in it (its head and chunks are verified all the same).
    pub fn read_chunks_in(
        &self,
        loc: Loc,
        n: u32,
        skip: usize,
        out: &mut [u8],
        block_size: usize,
        span: Option<&Span>,
    ) -> Result<()> {
        let (f, version) = self.reader(loc.seg)?;
        // Segments of older formats hold only entry records read whole (kind 1).
        let head = if version >= 4 {
            self.record_head(&f, loc, span)?
        } else {
            None
        };
        let Some((head, start)) = head else {
            let e = self.read_entry(loc)?;
            return copy_chunks(&e, loc.idx, n, skip, out, block_size)
                .map_err(|r| self.corrupt(loc, r));
        };
        let e = &head.entry;
        let last = loc.idx.checked_add(n).filter(|l| *l <= e.chunks());
        let Some(last) = last else {
            return Err(self.corrupt(loc, "index points past the chunks of its record"));
        };
        let want_end = skip + out.len();
        // `s`: offset of chunk `k`'s first byte in the stream of the chunks asked for.
        let (mut k, mut s) = (loc.idx, 0usize);
        while k < last && s < want_end {
            let size = e.blocks_of(k) as usize * block_size;
            let Some(first) = head
                .chunk_range(k, block_size)
                .map_err(|r| self.corrupt(loc, r))?
            else {
                let (a, b) = (s.max(skip), (s + size).min(want_end));
                if a < b {
                    out[a - skip..b - skip].fill(0);
                }
                s += size;
                k += 1;
                continue;
            };
            // A run of allocated chunks: their data is contiguous in the record.
            let (k0, s0) = (k, s);
            let mut data_end = first.end;
            s += size;
            k += 1;
            while k < last && s < want_end {
                match head
                    .chunk_range(k, block_size)
                    .map_err(|r| self.corrupt(loc, r))?
                {
                    Some(r) if r.start == data_end => {
                        data_end = r.end;
                        s += r.len();
                        k += 1;
                    }
                    _ => break,
                }
            }
            let run = Run {
                dir: &self.dir,
                f: &f,
                head: &head,
                start: &start,
                loc,
                block_size,
            };
            run.read((k0, k), first.start, s0, skip, out)?;
        }
        if s < want_end {
            return Err(self.corrupt(loc, "chunk shorter than the volume's"));
        }
        Ok(())
    }

    /// Every index entry, in `(extent, ts, run start)` order, each with the key of its group
    /// (for [`remove_entries`](Self::remove_entries)).
    pub fn iter_index(&self) -> impl Iterator<Item = Result<(IndexEntry, [u8; KEY_LEN])>> + '_ {
        let groups = self
            .index
            .iter()
            .filter_map(move |kv| -> Option<Result<Group>> {
                let (k, v) = match kv {
                    Ok(kv) => kv,
                    Err(e) => return Some(Err(e.into())),
                };
                if k.as_ref() == COUNT_KEY {
                    return None;
                }
                let Some(key) = <[u8; KEY_LEN]>::try_from(k.as_ref()).ok() else {
                    return Some(Err(self.bad_index()));
                };
                Some(
                    decode_group(&k, &v)
                        .map(|g| (key, g))
                        .ok_or_else(|| self.bad_index()),
                )
            });
        // A group split while this walk runs may come again under a later key: an entry is
        // handed out once, in order.
        let mut last: Option<(u64, u64, u8)> = None;
        Ordered::new(groups)
            .filter(move |r| match r {
                Ok((it, _)) => {
                    let fresh = last.is_none_or(|l| it.order() > l);
                    if fresh {
                        last = Some(it.order());
                    }
                    fresh
                }
                Err(_) => true,
            })
            .map(|r| r.map(|(it, key)| (((it.extent, it.ts, it.port, it.seq), it.loc), key)))
    }

    /// Drop index entries, each given as `(group key, ts, run start, chunks)`: each group
    /// keeps the rest of its entries under its key, or goes when none is left. An entry no
    /// longer in the group named (a group split since the walk that found it) is looked up by
    /// its stamp. Callers serialize this with appends (the store's flush lock).
    pub fn remove_entries(&self, entries: &[([u8; KEY_LEN], u64, u8, u8)]) -> Result<()> {
        let mut by_group: BTreeMap<[u8; KEY_LEN], Vec<(u64, u8)>> = BTreeMap::new();
        for &(key, ts, lo, _) in entries {
            by_group.entry(key).or_default().push((ts, lo));
        }
        // Each entry's group now, and the groups read.
        let mut at: BTreeMap<[u8; KEY_LEN], Vec<(u64, u8)>> = BTreeMap::new();
        let mut read: HashMap<[u8; KEY_LEN], Vec<Indexed>> = HashMap::new();
        for (key, gone) in by_group {
            let g = match self.index.get(key)? {
                Some(v) => decode_group(&key, &v).ok_or_else(|| self.bad_index())?,
                None => Vec::new(),
            };
            let (x, _, _) = parse_key(&key).ok_or_else(|| self.bad_index())?;
            for (ts, lo) in gone {
                if g.iter().any(|it| (it.ts, it.loc.lo) == (ts, lo)) {
                    at.entry(key).or_default().push((ts, lo));
                } else if let Some((k, _)) = self.group_at_or_before(x, ts, lo)? {
                    // The group that holds it now.
                    let k = self.group_key(&k)?;
                    if k != key {
                        at.entry(k).or_default().push((ts, lo));
                    }
                }
            }
            read.insert(key, g);
        }
        let mut b = sled::Batch::default();
        let mut removed = 0u64;
        for (key, gone) in at {
            let g = match read.remove(&key) {
                Some(g) => g,
                None => match self.index.get(key)? {
                    Some(v) => decode_group(&key, &v).ok_or_else(|| self.bad_index())?,
                    None => continue,
                },
            };
            let (x, _, _) = parse_key(&key).ok_or_else(|| self.bad_index())?;
            self.latest.forget(x);
            removed += self.drop_from_group(&mut b, &key, g, &gone);
        }
        let n = self.count()?.saturating_sub(removed);
        b.insert(COUNT_KEY, &n.to_be_bytes()[..]);
        self.index.apply_batch(b)?;
        self.hits.changed();
        Ok(())
    }

    /// Write group `key` without the entries `gone` into `b` (or remove it if none is left);
    /// returns the chunk versions dropped.
    fn drop_from_group(
        &self,
        b: &mut sled::Batch,
        key: &[u8; KEY_LEN],
        g: Vec<Indexed>,
        gone: &[(u64, u8)],
    ) -> u64 {
        let before = g.len();
        let mut dropped = 0u64;
        let left: Vec<Indexed> = g
            .into_iter()
            .filter(|it| {
                let out = gone.contains(&(it.ts, it.loc.lo));
                if out {
                    dropped += u64::from(it.loc.n);
                }
                !out
            })
            .collect();
        if left.len() == before {
            return 0;
        }
        if left.is_empty() {
            b.remove(&key[..]);
        } else {
            b.insert(&key[..], encode_group_keyed(key, &left));
        }
        dropped
    }

    /// The running count of indexed chunk versions (a record counts once per chunk it
    /// covers), kept without an index walk.
    fn count(&self) -> Result<u64> {
        Ok(self.index.get(COUNT_KEY)?.and_then(|v| be(&v)).unwrap_or(0))
    }

    /// Number of indexed chunk versions ("entries" in history and status): O(1).
    pub fn len(&self) -> usize {
        self.count().unwrap_or(0) as usize
    }

    /// Count the chunk versions by walking the index (tests check the running count against
    /// this).
    #[cfg(test)]
    pub fn walk_len(&self) -> usize {
        self.iter_index()
            .map(|r| usize::from(r.map(|((_, l), _)| l.n).unwrap_or(0)))
            .sum()
    }

    /// Keys of the index, the entry count aside (for tests of the layout).
    #[cfg(test)]
    pub fn key_count(&self) -> usize {
        self.index
            .iter()
            .keys()
            .filter(|k| k.as_ref().map_or(true, |k| k.as_ref() != COUNT_KEY))
            .count()
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
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(l, _)| l.seg != seg);
        self.heads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drop_segment(seg);
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
            chunk_blocks: 8,
            status: Status::Ok,
            unallocated: super::super::record::no_unallocated(1),
            merged: false,
            invalid_ports: vec![],
            data: vec![byte; 4096],
        }
    }

    /// One write over `chunks` chunks from `lba`: chunk k filled with `byte + k`, chunk
    /// `hole` (if any) unallocated.
    fn multi(ts: u64, lba: u64, chunks: u32, byte: u8, hole: Option<u32>) -> Entry {
        let mut e = entry(ts, lba, byte);
        e.blocks = 8 * chunks;
        e.unallocated = super::super::record::no_unallocated(chunks);
        e.data.clear();
        for k in 0..chunks {
            if Some(k) == hole {
                e.set_unallocated(k);
            } else {
                e.data.extend(std::iter::repeat_n(byte + k as u8, 4096));
            }
        }
        e
    }

    fn chunk_byte(p: &PrimaryJournal, chunk: u64, after: u64) -> Option<(u64, Option<u8>)> {
        let ((ts, _, _), loc) = p.first_after(chunk, after).unwrap()?;
        let e = p.read_entry(loc).unwrap();
        assert_eq!(e.first_chunk() + u64::from(loc.idx), chunk);
        Some((ts, e.chunk_data(loc.idx, 512).unwrap().map(|d| d[0])))
    }

    #[test]
    fn multi_chunk_records_are_indexed_per_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let seg = seg_path(&dir.path().join("primary"), 1);
        {
            let (p, _) = PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20).unwrap();
            p.append(&[multi(10, 0, 4, 10, Some(2)), multi(20, 16, 4, 20, None)])
                .unwrap();
            // Two records, eight index keys.
            let (_, scan) = scan_segment(&std::fs::read(&seg).unwrap(), "t").unwrap();
            assert_eq!(scan.records.len(), 2);
            assert_eq!((p.len(), p.walk_len()), (8, 8));
            assert_eq!(chunk_byte(&p, 0, 0), Some((10, Some(10))));
            assert_eq!(chunk_byte(&p, 1, 0), Some((10, Some(11))));
            assert_eq!(chunk_byte(&p, 2, 0), Some((10, None)), "unallocated chunk");
            assert_eq!(chunk_byte(&p, 3, 0), Some((10, Some(13))));
            // Chunks 2 and 3 are in both records: the earliest after the time wins.
            assert_eq!(chunk_byte(&p, 3, 10), Some((20, Some(21))));
            assert_eq!(chunk_byte(&p, 5, 0), Some((20, Some(23))));
            assert_eq!(chunk_byte(&p, 6, 0), None);
            // A third multi-chunk record, then a crash that tears it.
            p.append(&[multi(30, 8, 3, 30, None)]).unwrap();
        }
        let len = std::fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 4000)
            .unwrap();
        std::fs::remove_dir_all(dir.path().join("index")).unwrap();
        let (p, r) = PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20).unwrap();
        assert_eq!(r.torn_tails.len(), 1);
        assert_eq!(
            r.records_indexed, 8,
            "the torn record's chunks are not indexed"
        );
        assert_eq!(chunk_byte(&p, 1, 0), Some((10, Some(11))));
        assert_eq!(chunk_byte(&p, 1, 10), None);
        assert_eq!(chunk_byte(&p, 4, 10), Some((20, Some(22))));
        // The segment continues after the cut.
        p.append(&[multi(40, 8, 2, 40, None)]).unwrap();
        assert_eq!(chunk_byte(&p, 2, 20), Some((40, Some(41))));
        let r = p.rebuild_index().unwrap();
        assert_eq!((r.records_indexed, p.len()), (10, 10));
        assert!(r.torn_tails.is_empty());
    }

    #[test]
    fn a_record_has_one_key_per_extent_it_touches() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20).unwrap();
        // 32 chunks from chunk 2: extents 0 (2..16), 1 (16..32), 2 (32..34).
        p.append(&[multi(10, 2 * 8, 32, 1, Some(20))]).unwrap();
        assert_eq!((p.key_count(), p.len(), p.walk_len()), (3, 32, 32));
        for c in 2..34u64 {
            let ((ts, _, _), loc) = p.first_after(c, 0).unwrap().unwrap();
            assert_eq!((ts, loc.idx), (10, (c - 2) as u32), "chunk {c}");
        }
        assert_eq!(chunk_byte(&p, 22, 0), Some((10, None)), "unallocated chunk");
        assert_eq!(chunk_byte(&p, 33, 0), Some((10, Some(32))));
        assert!(p.first_after(1, 0).unwrap().is_none());
        assert!(p.first_after(34, 0).unwrap().is_none());
    }

    #[test]
    fn an_index_of_the_older_layout_is_rebuilt_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (p, _) = PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20).unwrap();
            p.append(&[multi(10, 0, 20, 1, None), entry(11, 8, 2)])
                .unwrap();
            // What the per-chunk layout left: format unset, 32-byte keys, 24-byte values.
            p.meta.remove("index_format").unwrap();
            p.index.insert([7u8; 32], &[0u8; 24]).unwrap();
            p.flush_index().unwrap();
        }
        let (p, r) = PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20).unwrap();
        assert!(r.rebuilt);
        // Extent 0: both records in one group; extent 1: the first one's last 4 chunks.
        assert_eq!((p.len(), p.walk_len(), p.key_count()), (21, 21, 2));
        assert_eq!(chunk_byte(&p, 1, 0), Some((10, Some(2))));
        assert_eq!(chunk_byte(&p, 1, 10), Some((11, Some(2))));
        drop(p);
        let (_, r) = PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20).unwrap();
        assert!(!r.rebuilt, "marked current once rebuilt");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Lookups against a brute-force answer over the appended records: random runs of
        /// chunks (some crossing extents, some one chunk rewritten often next to cold ones).
        #[test]
        fn lookups_match_a_brute_force_answer(
            writes in proptest::collection::vec((0u64..60, 1u32..40, 0u8..4), 1..60),
            probes in proptest::collection::vec((0u64..100, 0u64..100, 0u64..80), 1..12),
            step in proptest::prop_oneof![proptest::strategy::Just(100u64), proptest::strategy::Just(20_000u64)],
            ports in 1usize..4,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (p, _) = PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20).unwrap();
            let mut es = Vec::new();
            for (i, (c, n, hot)) in writes.iter().enumerate() {
                // `hot` > 0: a burst of single-chunk rewrites of chunk 17.
                for j in 0..u64::from(*hot) * 5 {
                    es.push(entry(1000 + i as u64 * step + j, 17 * 8, 9));
                }
                es.push(multi(1000 + i as u64 * step + 50, c * 8, *n, i as u8, None));
            }
            // Entries of `ports` ports, each flushed on its own: a later port's entries are
            // late for the groups of the ports before it.
            let append = |part: &[Entry]| {
                for port in 0..ports {
                    let mine: Vec<Entry> = part
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| i % ports == port)
                        .map(|(_, e)| e.clone())
                        .collect();
                    if !mine.is_empty() {
                        p.append(&mine).unwrap();
                    }
                }
            };
            // Half the records now, half after the first probes: the cached lookups must see
            // the second half (the append changes the index generation).
            let half = es.len() / 2;
            append(&es[..half]);
            let brute_upto = |c: u64, ts: u64, upto: usize| {
                es[..upto].iter()
                    .filter(|e| e.ts > ts && (e.first_chunk()..e.first_chunk() + u64::from(e.chunks())).contains(&c))
                    .min_by_key(|e| (e.ts, e.port, e.seq))
                    .map(|e| (e.ts, (c - e.first_chunk()) as u32))
            };
            for (a, b, t) in probes.iter().copied() {
                let (c0, c1) = (a.min(b), a.max(b));
                let ts = 1000 + t * step;
                // Twice: the second answer comes from the cache where the first walk noted it.
                for _ in 0..2 {
                    let got = p.first_after_range_cached(c0, c1, ts).unwrap();
                    for c in c0..=c1 {
                        let hit = got[(c - c0) as usize].map(|((ts, _, _), l)| (ts, l.idx));
                        proptest::prop_assert_eq!(hit, brute_upto(c, ts, half), "cached, chunk {} after {}", c, ts);
                    }
                }
            }
            append(&es[half..]);
            proptest::prop_assert_eq!(p.walk_len(), p.len());
            let brute = |c: u64, ts: u64| {
                es.iter()
                    .filter(|e| e.ts > ts && (e.first_chunk()..e.first_chunk() + u64::from(e.chunks())).contains(&c))
                    .min_by_key(|e| (e.ts, e.port, e.seq))
                    .map(|e| (e.ts, (c - e.first_chunk()) as u32))
            };
            for (a, b, t) in probes {
                let (c0, c1) = (a.min(b), a.max(b));
                let ts = 1000 + t * step;
                let got = p.first_after_range(c0, c1, ts).unwrap();
                for c in c0..=c1 {
                    let want = brute(c, ts);
                    let hit = got[(c - c0) as usize].map(|((ts, _, _), l)| (ts, l.idx));
                    proptest::prop_assert_eq!(hit, want, "chunk {} after {}", c, ts);
                    let one = p.first_after(c, ts).unwrap().map(|((ts, _, _), l)| (ts, l.idx));
                    proptest::prop_assert_eq!(one, want);
                }
                for _ in 0..2 {
                    let got = p.first_after_range_cached(c0, c1, ts).unwrap();
                    for c in c0..=c1 {
                        let hit = got[(c - c0) as usize].map(|((ts, _, _), l)| (ts, l.idx));
                        proptest::prop_assert_eq!(hit, brute(c, ts), "cached after the second append, chunk {} after {}", c, ts);
                    }
                }
            }
        }
    }

    /// Every extent `latest` knows has that latest group in the index, exactly.
    fn assert_latest_is_the_index(p: &PrimaryJournal) -> std::result::Result<(), String> {
        for (x, known) in p.latest.known() {
            let stored = p.last_group(x).map_err(|e| e.to_string())?;
            if known != stored {
                return Err(format!("extent {x}: kept {known:?}, index {stored:?}"));
            }
        }
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// The latest groups kept for appends stay what the index holds through appends of
        /// several ports (a later port's entries late for the groups before them, some already
        /// indexed), merges dropping entries, and rebuilds; and the index built with them
        /// answers lookups as a brute force over what is left.
        #[test]
        fn kept_latest_groups_match_the_index(
            ops in proptest::collection::vec(
                proptest::prop_oneof![
                    4 => proptest::strategy::Strategy::prop_map(
                        proptest::collection::vec((0u64..40, 1u32..20, 0u64..3), 1..12),
                        Some,
                    ),
                    1 => proptest::strategy::Just(None),
                ],
                1..24,
            ),
            drops in proptest::collection::vec(0usize..64, 0..6),
            rebuild_at in 0usize..30,
        ) {
            use proptest::prelude::*;
            let dir = tempfile::tempdir().unwrap();
            let (p, _) = PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20).unwrap();
            let mut live: Vec<Entry> = Vec::new();
            // Runs dropped by a merge: `(ts, port, seq, extent)`.
            let mut dropped: std::collections::HashSet<(u64, u64, u64, u64)> = Default::default();
            let mut seq = 0u64;
            let mut appended = 0usize;
            for (i, op) in ops.iter().enumerate() {
                match op {
                    Some(writes) => {
                        // Port k's entries of this op are stamped k steps apart and appended
                        // port by port, the last port first: each later append is late.
                        let mut by_port: BTreeMap<u64, Vec<Entry>> = BTreeMap::new();
                        for (j, &(c, n, port)) in writes.iter().enumerate() {
                            seq += 1;
                            let mut e = multi(1000 * (i as u64 + 1) + j as u64 * 3 + port, c * 8, n, j as u8, None);
                            e.port = port;
                            e.seq = seq;
                            by_port.entry(port).or_default().push(e);
                        }
                        for es in by_port.values().rev() {
                            p.append(es).unwrap();
                            appended += 1;
                            if appended % 3 == 0 {
                                // The same records again (a replay after a crash): not added twice.
                                p.append(es).unwrap();
                            }
                            live.extend(es.iter().cloned());
                        }
                    }
                    None => {
                        // A merge: drop some index entries (whole records' runs of an extent).
                        let all: Vec<_> = p.iter_index().map(|r| r.unwrap()).collect();
                        let mut gone = Vec::new();
                        for &d in &drops {
                            if let Some((((x, ts, port, seq), l), key)) = all.get(d % all.len().max(1)).copied() {
                                gone.push((key, ts, l.lo, l.n));
                                dropped.insert((ts, port, seq, x));
                            }
                        }
                        gone.sort();
                        gone.dedup();
                        p.remove_entries(&gone).unwrap();
                    }
                }
                assert_latest_is_the_index(&p).map_err(TestCaseError::fail)?;
                prop_assert_eq!(p.walk_len(), p.len());
                if i == rebuild_at {
                    p.rebuild_index().unwrap();
                    // A rebuild indexes every record again, dropped runs too.
                    dropped.clear();
                    assert_latest_is_the_index(&p).map_err(TestCaseError::fail)?;
                }
            }
            // Lookups: the first entry after each stamp, per chunk, over what is left (a
            // dropped run is gone from its extent only).
            let extent_gone = |e: &Entry, c: u64| dropped.contains(&(e.ts, e.port, e.seq, extent_of(c).0));
            for c in 0..60u64 {
                for ts in [0u64, 1500, 3000, 6000, 12_000] {
                    let want = live.iter()
                        .filter(|e| e.ts > ts && (e.first_chunk()..e.first_chunk() + u64::from(e.chunks())).contains(&c) && !extent_gone(e, c))
                        .map(|e| (e.ts, e.port, e.seq))
                        .min();
                    let got = p.first_after(c, ts).unwrap().map(|h| h.0);
                    prop_assert_eq!(got, want, "chunk {} after {}", c, ts);
                }
            }
        }
    }

    #[test]
    fn range_lookup_matches_per_chunk_lookups() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20).unwrap();
        // Chunk 3 gets 40 versions (forces re-seeks), others a few, chunk 7 none.
        let mut es = Vec::new();
        for t in 1..=40u64 {
            es.push(entry(t, 3 * 8, t as u8));
        }
        for t in [5u64, 15, 25] {
            es.push(multi(100 + t, 0, 3, 1, None));
            es.push(multi(200 + t, 4 * 8, 3, 2, Some(1)));
        }
        es.push(entry(300, 8 * 8, 3));
        p.append(&es).unwrap();
        for ts in [0, 3, 20, 39, 40, 104, 105, 110, 210, 299, 300] {
            let got = p.first_after_range(0, 9, ts).unwrap();
            for c in 0..=9u64 {
                assert_eq!(
                    got[c as usize],
                    p.first_after(c, ts).unwrap(),
                    "chunk {c} ts {ts}"
                );
            }
            let got = p.first_after_range(3, 5, ts).unwrap();
            assert_eq!(got[1], p.first_after(4, ts).unwrap());
        }
    }

    #[test]
    fn misaligned_or_overflowing_entries_are_corrupt_not_a_panic() {
        for lba in [4u64, u64::MAX - 7] {
            let dir = tempfile::tempdir().unwrap();
            drop(PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20).unwrap());
            let seg = seg_path(&dir.path().join("primary"), 1);
            let mut buf = SegmentHeader {
                kind: SegmentKind::Primary,
                chunk_bytes: 4096,
                id: 1,
            }
            .encode()
            .to_vec();
            super::super::record::encode_entry(&multi(1, lba, 2, 1, None), &mut buf);
            std::fs::write(&seg, &buf).unwrap();
            std::fs::remove_dir_all(dir.path().join("index")).unwrap();
            let r = PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20);
            if lba == 4 {
                assert!(matches!(r, Err(JournalError::Corrupt { .. })));
            }
        }
    }

    #[test]
    fn old_format_journal_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (p, _) = PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20).unwrap();
            p.append(&[entry(1, 0, 1)]).unwrap();
        }
        let seg = seg_path(&dir.path().join("primary"), 1);
        let mut buf = std::fs::read(&seg).unwrap();
        buf[8..10].copy_from_slice(&1u16.to_le_bytes());
        let crc = crc32c::crc32c(&buf[0..24]);
        buf[24..28].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&seg, &buf).unwrap();
        match PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20) {
            Err(JournalError::UnsupportedFormat { version: 1, .. }) => {}
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("old format opened"),
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
                let (((_, ts, _, _), l), group) = r.unwrap();
                (group, ts, l.lo, l.n)
            })
            .collect();
        p.remove_entries(&gone).unwrap();
        assert_eq!((p.len(), p.walk_len()), (291, 291));
        for (_, ts, _, _) in &gone {
            let c = ts % 3;
            assert_ne!(
                p.first_after(c, ts - 1).unwrap().map(|h| h.0 .0),
                Some(*ts),
                "removed"
            );
        }
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

    /// `read_chunks` of chunks `idx..idx + n` from byte `skip`, `len` bytes.
    fn read(p: &PrimaryJournal, chunk: u64, n: u32, skip: usize, len: usize) -> Result<Vec<u8>> {
        let ((_, _, _), loc) = p.first_after(chunk, 0).unwrap().unwrap();
        let mut out = vec![0xeeu8; len];
        p.read_chunks(loc, n, skip, &mut out, 512).map(|_| out)
    }

    /// What `multi(_, _, chunks, byte, hole)` holds from chunk `from` on, from byte `skip`.
    fn expect(
        chunks: u32,
        byte: u8,
        hole: Option<u32>,
        from: u32,
        skip: usize,
        len: usize,
    ) -> Vec<u8> {
        let mut v = Vec::new();
        for k in from..chunks {
            let b = if Some(k) == hole { 0 } else { byte + k as u8 };
            v.extend(std::iter::repeat_n(b, 4096));
        }
        v[skip..skip + len].to_vec()
    }

    /// Spans reuse their thread's buffer: a short span after a long one holds only its own
    /// bytes, and records read from either match the records read alone.
    #[test]
    fn a_span_after_a_longer_one_holds_only_its_own_records() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20).unwrap();
        let entries: Vec<Entry> = (0..8).map(|i| entry(10 + i, i * 8, i as u8 + 1)).collect();
        p.append(&entries).unwrap();
        let locs: Vec<Loc> = (0..8)
            .map(|c| p.first_after(c, 0).unwrap().unwrap().1)
            .collect();
        let end = |l: &Loc| l.off + u64::from(l.len);
        let read_in = |l: Loc, span: &Span| {
            let mut out = vec![0u8; 4096];
            p.read_chunks_in(l, 1, 0, &mut out, 512, Some(span))
                .unwrap();
            out
        };
        let long = p
            .read_span(locs[0].seg, locs[0].off..end(&locs[7]))
            .unwrap();
        assert!(locs.iter().all(|l| long.slice(*l).is_some()));
        assert_eq!(read_in(locs[6], &long), vec![7; 4096]);
        drop(long);
        let short = p
            .read_span(locs[1].seg, locs[1].off..end(&locs[2]))
            .unwrap();
        assert_eq!(short.len, (end(&locs[2]) - locs[1].off) as usize);
        assert!(short.slice(locs[3]).is_none(), "past the span's own bytes");
        assert!(short.slice(locs[0]).is_none());
        assert_eq!(read_in(locs[2], &short), vec![3; 4096]);
        assert_eq!(read_in(locs[5], &short), vec![6; 4096], "read alone");
    }

    #[test]
    fn chunk_subsets_are_read_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20).unwrap();
        // A 128 KiB write (32 chunks, chunk 5 unallocated) and a small one (2 chunks).
        p.append(&[
            multi(10, 0, 32, 1, Some(5)),
            multi(11, 64 * 8, 2, 100, None),
        ])
        .unwrap();
        for (from, n, skip, len) in [
            (0u32, 1u32, 0usize, 4096usize),
            (7, 1, 0, 4096),
            (31, 1, 0, 4096),
            (3, 4, 0, 4 * 4096),
            (0, 32, 0, 32 * 4096),
            (4, 3, 512, 2 * 4096),
            (4, 3, 1024, 2 * 4096 - 512),
            (6, 2, 3584, 512),
            (5, 1, 512, 1024),
        ] {
            let got = read(&p, u64::from(from), n, skip, len).unwrap();
            assert_eq!(
                got,
                expect(32, 1, Some(5), from, skip, len),
                "chunks {from}+{n} from {skip}, {len} bytes"
            );
        }
        assert_eq!(read(&p, 65, 1, 0, 4096).unwrap(), vec![101; 4096]);
        assert_eq!(read(&p, 64, 2, 4096, 4096).unwrap(), vec![101; 4096]);
        // Asking past the record's chunks, or for more bytes than the chunks hold: corrupt.
        assert!(matches!(
            read(&p, 30, 3, 0, 3 * 4096),
            Err(JournalError::Corrupt { .. })
        ));
        assert!(matches!(
            read(&p, 31, 1, 0, 8192),
            Err(JournalError::Corrupt { .. })
        ));
        let ((_, _, _), loc) = p.first_after(0, 0).unwrap().unwrap();
        let bad = Loc { idx: 32, ..loc };
        let mut out = vec![0u8; 4096];
        assert!(matches!(
            p.read_chunks(bad, 1, 0, &mut out, 512),
            Err(JournalError::Corrupt { .. })
        ));
        // The same through a whole-record read.
        let e = p.read_entry(loc).unwrap();
        assert_eq!(e.chunk_data(7, 512).unwrap().unwrap(), &vec![8u8; 4096][..]);
    }

    #[test]
    fn a_bad_chunk_fails_its_own_reads_only() {
        let dir = tempfile::tempdir().unwrap();
        let seg = seg_path(&dir.path().join("primary"), 1);
        let (p, _) = PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20).unwrap();
        p.append(&[multi(10, 0, 32, 1, None), multi(11, 64 * 8, 2, 100, None)])
            .unwrap();
        let big = p.first_after(0, 0).unwrap().unwrap().1;
        let small = p.first_after(64, 0).unwrap().unwrap().1;
        // The head of the big record is cached by this read; its data is read each time.
        read(&p, 0, 1, 0, 4096).unwrap();
        let mut f = std::fs::read(&seg).unwrap();
        let data_at = |loc: Loc, k: u64, f: &[u8]| {
            let h = decode_entry_head(&f[loc.off as usize..]).unwrap().unwrap();
            loc.off as usize + h.data_off + k as usize * 4096
        };
        let bad_big = data_at(big, 9, &f) + 100;
        let bad_small = data_at(small, 1, &f) + 4095;
        f[bad_big] ^= 4;
        f[bad_small] ^= 4;
        std::fs::write(&seg, &f).unwrap();
        match read(&p, 9, 1, 0, 4096) {
            Err(JournalError::Corrupt {
                file,
                offset,
                reason,
            }) => {
                assert!(file.ends_with("0000000000000001.seg"), "{file}");
                assert_eq!(offset, big.off);
                assert!(reason.contains("chunk 9"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            read(&p, 8, 2, 0, 2 * 4096).is_err(),
            "a run over the bad chunk"
        );
        assert!(
            read(&p, 9, 1, 512, 512).is_err(),
            "a cut read of the bad chunk"
        );
        assert_eq!(read(&p, 8, 1, 0, 4096).unwrap(), vec![9; 4096]);
        assert_eq!(read(&p, 10, 1, 0, 4096).unwrap(), vec![11; 4096]);
        assert_eq!(
            read(&p, 0, 9, 0, 9 * 4096).unwrap(),
            expect(32, 1, None, 0, 0, 9 * 4096)
        );
        // The small record is read whole, but only the chunks asked for are verified.
        assert_eq!(read(&p, 64, 1, 0, 4096).unwrap(), vec![100; 4096]);
        assert!(matches!(
            read(&p, 65, 1, 0, 4096),
            Err(JournalError::Corrupt { .. })
        ));
        // A whole-record read and a scan find both.
        assert!(p.read_entry(big).is_err());
        let (_, scan) = scan_segment(&f, "t").unwrap();
        assert_eq!(scan.records.len(), 0);
        // A segment cut inside a record: corrupt, not an I/O error.
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(data_at(big, 20, &f) as u64)
            .unwrap();
        assert!(matches!(
            read(&p, 25, 1, 0, 4096),
            Err(JournalError::Corrupt { .. })
        ));
        assert_eq!(read(&p, 19, 1, 0, 4096).unwrap(), vec![20; 4096]);
    }

    /// A journal whose segments are of format version 3 (entry records with one checksum over
    /// each) is read as it is, through the whole-record path; appends go to a new segment of
    /// the current version.
    #[test]
    fn version_3_segments_are_read_and_not_appended_to() {
        use super::super::record::encode_entry_v3;
        let (dir, seg, buf, p) = older_segment_read_and_appended_after(3, encode_entry_v3);
        assert_eq!(chunk_byte(&p, 5, 0), Some((10, None)));
        assert_eq!(read(&p, 1, 1, 0, 4096).unwrap_or_default().len(), 4096);
        // A flipped byte in an old record: its whole-record checksum.
        let mut bad = buf.clone();
        let n = bad.len();
        bad[n - 10] ^= 1;
        std::fs::write(&seg, &bad).unwrap();
        drop(p);
        let (p, _) = PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20).unwrap();
        assert!(matches!(
            read(&p, 65, 1, 0, 4096),
            Err(JournalError::Corrupt { .. })
        ));
        assert_eq!(read(&p, 7, 1, 0, 4096).unwrap(), vec![8; 4096]);
    }

    /// A journal whose segments are of format version 4 (entry heads of fixed-width fields)
    /// is read chunk by chunk as it is; appends go to a new segment of the current version.
    #[test]
    fn version_4_segments_are_read_and_not_appended_to() {
        use super::super::record::encode_entry_head_v4;
        older_segment_read_and_appended_after(4, |e, buf| {
            encode_entry_head_v4(e, e.status, buf);
            buf.extend_from_slice(&e.data);
        });
    }

    /// A journal whose one segment is of format `version`, its two entries written by
    /// `encode`, with its index lost: it opens, its entries read back, and an append goes to a
    /// new segment of the current version, leaving it unchanged. Returns the journal's
    /// directory, the segment's path and bytes, and the open journal.
    fn older_segment_read_and_appended_after(
        version: u16,
        encode: impl Fn(&Entry, &mut Vec<u8>),
    ) -> (tempfile::TempDir, PathBuf, Vec<u8>, PrimaryJournal) {
        use super::super::record::encode_header_version;
        let dir = tempfile::tempdir().unwrap();
        drop(PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20).unwrap());
        let seg = seg_path(&dir.path().join("primary"), 1);
        let mut buf = encode_header_version(
            &SegmentHeader {
                kind: SegmentKind::Primary,
                chunk_bytes: 4096,
                id: 1,
            },
            version,
        )
        .to_vec();
        encode(&multi(10, 0, 32, 1, Some(5)), &mut buf);
        encode(&multi(11, 64 * 8, 2, 100, None), &mut buf);
        std::fs::write(&seg, &buf).unwrap();
        std::fs::remove_dir_all(dir.path().join("index")).unwrap();
        let (p, r) = PrimaryJournal::open(dir.path(), 4096, 512, 1 << 20).unwrap();
        assert_eq!(r.records_indexed, 34);
        assert_eq!(read(&p, 7, 1, 0, 4096).unwrap(), vec![8; 4096]);
        assert_eq!(
            read(&p, 4, 3, 512, 2 * 4096).unwrap(),
            expect(32, 1, Some(5), 4, 512, 2 * 4096)
        );
        assert_eq!(read(&p, 65, 1, 0, 4096).unwrap(), vec![101; 4096]);
        p.append(&[multi(20, 0, 2, 50, None)]).unwrap();
        assert_eq!(
            std::fs::read(&seg).unwrap(),
            buf,
            "the version {version} segment is unchanged"
        );
        assert_eq!(p.segments().unwrap().0.len(), 2);
        let ((ts, _, _), loc) = p.first_after(1, 10).unwrap().unwrap();
        assert_eq!(ts, 20);
        let mut out = vec![0u8; 4096];
        p.read_chunks(loc, 1, 0, &mut out, 512).unwrap();
        assert_eq!(out, vec![51; 4096]);
        (dir, seg, buf, p)
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
