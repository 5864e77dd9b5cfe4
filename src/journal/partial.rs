//! One partial journal per port (I_T nexus): entries are kept in memory, indexed for point-in-time
//! lookups, and written (no fsync) to the port's own segment file in batches: by the background
//! round every `commit_interval`, by the writer whose append leaves [`WRITE_BATCH`] bytes
//! waiting, and before any fsync or rotation. A batch is claimed under the port's lock and
//! written outside it ([`Batch`], `port::Port`), so appends go on while it is copied. An
//! entry whose outcome is known by then is written with it (no status record). The group commit fsyncs the file; when full or old enough it is flushed into the
//! primary journal and its file rotated away.

use super::record::{
    encode_entry_head, encode_status, scan_segment, Entry, Record, SegmentHeader, SegmentKind,
    Status, StatusUpdate, TailProblem,
};
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// In-memory key: (chunk, ts, seq). Each chunk of an entry has its key; all point at the
/// one shared entry.
pub(crate) type PartialKey = (u64, u64, u64);

/// Bytes of entries waiting for their segment file that make the appending writer claim them as
/// a batch and write it.
pub(crate) const WRITE_BATCH: u64 = 1 << 20;

/// Write all of `parts` (vectored, no copy into one buffer).
pub(crate) fn write_all_parts(mut f: &File, parts: &[&[u8]]) -> io::Result<()> {
    let mut i = 0;
    let mut skip = 0;
    loop {
        while i < parts.len() && parts[i].len() == skip {
            i += 1;
            skip = 0;
        }
        if i == parts.len() {
            return Ok(());
        }
        let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity((parts.len() - i).min(512));
        iov.push(IoSlice::new(&parts[i][skip..]));
        for p in parts[i + 1..].iter().take(511) {
            iov.push(IoSlice::new(p));
        }
        let mut n = f.write_vectored(&iov)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while i < parts.len() && n >= parts[i].len() - skip {
            n -= parts[i].len() - skip;
            skip = 0;
            i += 1;
        }
        skip += n;
    }
}

pub(crate) struct PartialJournal {
    pub port: u64,
    dir: PathBuf,
    chunk_bytes: u32,
    file: Arc<File>,
    path: PathBuf,
    file_len: u64,
    file_no: u64,
    next_seq: u64,
    /// Highest seq written to a segment file.
    pub appended_seq: u64,
    /// Entries with a higher seq wait to be written (lower ones are in a file, or were handed
    /// to the primary journal by a rotation).
    written_upto: u64,
    /// Status records waiting to be written with the next batch.
    pending_status: Vec<StatusUpdate>,
    /// Bytes of entries waiting to be written.
    pending_bytes: u64,
    /// Every entry with seq <= synced_seq is durable (partial file fsynced or in the primary).
    pub synced_seq: u64,
    /// A rotated file could not be fsynced: seqs up to this wait for the primary flush.
    pub blocked: Option<u64>,
    /// The rotated file whose entries are on their way into the primary journal (not fsynced:
    /// the primary's fsync makes them durable), and the last seq it holds. A commit before
    /// that flush is done fsyncs it too.
    in_flight: Option<(Arc<File>, u64)>,
    /// Rotated files whose flush into the primary failed: their entries are still held (and
    /// go with the next rotation), the files stay until that flush is done.
    superseded: Vec<PathBuf>,
    /// Per chunk: the entry holding its old data.
    pub entries: BTreeMap<PartialKey, Arc<Entry>>,
    /// The entries in append order (each once).
    writes: Vec<Arc<Entry>>,
    /// Where each of `writes` lies: (file number, record offset, record length).
    places: Vec<(u64, u64, u32)>,
    /// A write to the current file failed: it may hold a torn record in its middle, so it is
    /// copied into the primary journal record by record, never adopted whole.
    tainted: bool,
    /// A claimed [`Batch`] is being written to the current file outside the port's lock: the
    /// file's other writers (a commit, a rotation, a failure's status) wait for it.
    writing: bool,
    statuses: HashMap<u64, Status>,
    /// Outcomes recorded after their entries were handed to the primary journal (by a rotation):
    /// the next flush of this port writes them there as status records.
    late: Vec<StatusUpdate>,
    /// Old-data bytes held.
    pub bytes: u64,
    /// Old-data bytes held by this and the other ports of the volume ([`count_in`]).
    ///
    /// [`count_in`]: Self::count_in
    total: Arc<AtomicU64>,
    /// When the oldest unflushed entry was appended.
    pub first_append: Option<Instant>,
}

/// What a rotation hands to the primary flush.
pub(crate) struct Rotated {
    pub old_path: PathBuf,
    /// The entries (shared with the in-memory map, not copied) and their last status.
    pub entries: Vec<(Arc<Entry>, Status)>,
    pub upto_seq: u64,
    /// The rotated file can become a primary segment as it is: it holds every entry handed
    /// out (at `places`, same order) and nothing torn.
    pub adoptable: Option<Adoptable>,
    /// Files of earlier rotations whose flush failed: their entries are among `entries`, so
    /// once this flush is done they hold nothing the primary journal lacks and are deleted.
    pub superseded: Vec<PathBuf>,
}

/// A rotated partial file that holds exactly the rotated entries, whole.
pub(crate) struct Adoptable {
    pub file: Arc<File>,
    pub len: u64,
    /// Per rotated entry: record offset and length in `file`.
    pub places: Vec<(u64, u32)>,
}

/// Entries and status records claimed for one write to a partial segment file
/// ([`PartialJournal::claim_batch`]), written outside the port's lock.
pub(crate) struct Batch {
    file: Arc<File>,
    /// The entries with the status each is written with.
    entries: Vec<(Arc<Entry>, Status)>,
    /// Status records, written after the entries (put back if the write fails).
    statuses: Vec<StatusUpdate>,
    /// Record heads of the entries, then the status records (encoded by `write`).
    head: Vec<u8>,
    /// Per entry: where its head ends in `head`.
    ends: Vec<usize>,
    /// `written_upto` before the claim (put back if the write fails).
    from: u64,
    /// The waiting bytes claimed.
    bytes: u64,
}

impl Batch {
    /// Encode the record heads (checksums included) and write heads and old data with one
    /// vectored write at the end of the file.
    pub fn write(&mut self) -> io::Result<()> {
        let mut head = Vec::with_capacity(self.entries.len() * 80 + self.statuses.len() * 48);
        let mut ends = Vec::with_capacity(self.entries.len());
        for (e, status) in &self.entries {
            encode_entry_head(e, *status, &mut head);
            ends.push(head.len());
        }
        for u in &self.statuses {
            encode_status(u, &mut head);
        }
        self.head = head;
        self.ends = ends;
        let mut parts: Vec<&[u8]> = Vec::with_capacity(2 * self.entries.len() + 1);
        let mut start = 0;
        for ((e, _), end) in self.entries.iter().zip(&self.ends) {
            parts.push(&self.head[start..*end]);
            parts.push(&e.data);
            start = *end;
        }
        parts.push(&self.head[start..]);
        write_all_parts(&self.file, &parts)
    }
}

pub(crate) fn partial_path(dir: &Path, port: u64, file_no: u64) -> PathBuf {
    dir.join(format!("{port:016x}-{file_no:016x}.seg"))
}

fn create_segment(path: &Path, header: &SegmentHeader) -> io::Result<File> {
    let mut f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)?;
    f.write_all(&header.encode())?;
    Ok(f)
}

/// fsync a directory so that file creations and removals in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl PartialJournal {
    pub fn create(dir: &Path, port: u64, chunk_bytes: u32, file_no: u64) -> io::Result<Self> {
        let path = partial_path(dir, port, file_no);
        let header = SegmentHeader {
            kind: SegmentKind::Partial,
            chunk_bytes,
            id: file_no,
        };
        let file = create_segment(&path, &header)?;
        sync_dir(dir)?;
        Ok(PartialJournal {
            port,
            dir: dir.to_path_buf(),
            chunk_bytes,
            file: Arc::new(file),
            path,
            file_len: header.encode().len() as u64,
            file_no,
            next_seq: 0,
            appended_seq: 0,
            written_upto: 0,
            pending_status: Vec::new(),
            pending_bytes: 0,
            synced_seq: 0,
            blocked: None,
            superseded: Vec::new(),
            in_flight: None,
            entries: BTreeMap::new(),
            writes: Vec::new(),
            places: Vec::new(),
            tainted: false,
            writing: false,
            statuses: HashMap::new(),
            late: Vec::new(),
            bytes: 0,
            total: Arc::default(),
            first_append: None,
        })
    }

    /// Count the bytes this journal holds into `total`, shared with the volume's other ports
    /// (before anything is appended).
    pub fn count_in(mut self, total: Arc<AtomicU64>) -> Self {
        debug_assert_eq!(self.bytes, 0);
        self.total = total;
        self
    }

    /// Old-data bytes held by this entry.
    fn held(e: &Entry) -> u64 {
        e.data.len() as u64 + 64 * u64::from(e.chunks())
    }

    /// Append the entries of one write (all stamped `ts`; one entry unless the write is very
    /// large). Returns its seq. The entries are written to the segment file with a later batch:
    /// [`claim_full_batch`](Self::claim_full_batch) hands one out once [`WRITE_BATCH`] bytes
    /// wait.
    pub fn append(&mut self, ts: u64, entries: Vec<Entry>) -> u64 {
        let seq = self.next_seq + 1;
        self.next_seq = seq;
        for mut e in entries {
            e.ts = ts;
            e.port = self.port;
            e.seq = seq;
            e.status = Status::Pending;
            let held = Self::held(&e);
            self.bytes += held;
            self.total.fetch_add(held, Ordering::Relaxed);
            self.pending_bytes += held;
            let e = Arc::new(e);
            let c0 = e.first_chunk();
            for c in c0..c0 + u64::from(e.chunks()) {
                self.entries.insert((c, ts, seq), e.clone());
            }
            self.writes.push(e);
        }
        self.statuses.insert(seq, Status::Pending);
        self.first_append.get_or_insert_with(Instant::now);
        seq
    }

    /// A batch is being written outside the lock ([`claim_batch`](Self::claim_batch)).
    pub fn writing(&self) -> bool {
        self.writing
    }

    /// [`claim_batch`](Self::claim_batch) once [`WRITE_BATCH`] bytes wait.
    pub fn claim_full_batch(&mut self) -> Option<Batch> {
        if self.pending_bytes < WRITE_BATCH {
            return None;
        }
        self.claim_batch()
    }

    /// Claim the waiting entries (each with the status it has now) and status records for one
    /// write to the segment file, made by the caller without the port's lock
    /// ([`Batch::write`]) and recorded with [`finish_batch`](Self::finish_batch). None if
    /// nothing waits or a batch is being written already (its writer leaves the rest to the
    /// next batch). Appends and outcomes recorded meanwhile wait for the next batch.
    pub fn claim_batch(&mut self) -> Option<Batch> {
        if self.writing || !self.has_pending() {
            return None;
        }
        let from = self.writes.partition_point(|e| e.seq <= self.written_upto);
        let entries: Vec<(Arc<Entry>, Status)> = self.writes[from..]
            .iter()
            .map(|e| {
                let status = self.statuses.get(&e.seq).copied().unwrap_or(e.status);
                (e.clone(), status)
            })
            .collect();
        self.writing = true;
        let batch = Batch {
            file: self.file.clone(),
            entries,
            statuses: std::mem::take(&mut self.pending_status),
            head: Vec::new(),
            ends: Vec::new(),
            from: self.written_upto,
            bytes: self.pending_bytes,
        };
        self.written_upto = self.next_seq;
        self.pending_bytes = 0;
        Some(batch)
    }

    /// Record a claimed batch as written, or, if `written` failed, cut the file back to where
    /// it was, mark it tainted (never adopted whole) and put the batch back to wait for the next
    /// write. Returns the write's outcome.
    pub fn finish_batch(&mut self, batch: Batch, written: io::Result<()>) -> io::Result<()> {
        self.writing = false;
        debug_assert!(
            Arc::ptr_eq(&batch.file, &self.file),
            "rotated while writing"
        );
        if let Err(err) = written {
            // Cut a possibly torn record off so later writes stay readable.
            let _ = self.file.set_len(self.file_len);
            self.tainted = true;
            self.written_upto = batch.from;
            let mut statuses = batch.statuses;
            statuses.append(&mut self.pending_status);
            self.pending_status = statuses;
            self.pending_bytes += batch.bytes;
            return Err(err);
        }
        let mut off = self.file_len;
        let mut start = 0;
        for ((e, _), end) in batch.entries.iter().zip(&batch.ends) {
            let len = end - start + e.data.len();
            self.places.push((self.file_no, off, len as u32));
            off += len as u64;
            start = *end;
        }
        self.file_len = off + (batch.head.len() - start) as u64;
        if let Some((last, _)) = batch.entries.last() {
            self.appended_seq = last.seq;
        }
        Ok(())
    }

    /// Entries or status records wait to be written.
    pub fn has_pending(&self) -> bool {
        self.next_seq > self.written_upto || !self.pending_status.is_empty()
    }

    /// Write the waiting entries and status records to the segment file now, under the lock:
    /// for the file's writers that must see everything written before they go on (a commit, a
    /// rotation). The caller holds the port with no batch being written (`Port::lock_idle`);
    /// if one is, this writes nothing and says so. On an error the file is cut back and
    /// tainted, and everything stays waiting ([`finish_batch`](Self::finish_batch)).
    pub fn write_pending(&mut self) -> io::Result<()> {
        if self.writing {
            return Err(io::Error::other(
                "a batch of this partial journal is being written",
            ));
        }
        match self.claim_batch() {
            None => Ok(()),
            Some(mut batch) => {
                let written = batch.write();
                self.finish_batch(batch, written)
            }
        }
    }

    /// Record the outcome of write `seq` over `blocks` blocks from `lba` (phase three). An entry
    /// not written yet is written with it; otherwise a status record follows in the port's
    /// current segment file (a failure is written at once, with the entry if need be). If a
    /// rotation already handed the entry to the primary journal (with the status it had then),
    /// the outcome is also kept for the primary: the next flush of this port appends it there
    /// ([`late`](Self::late), [`forget_late`](Self::forget_late)). For a failure the caller
    /// holds the port with no batch being written (`Port::lock_idle`).
    pub fn set_status(
        &mut self,
        ts: u64,
        seq: u64,
        status: Status,
        lba: u64,
        blocks: u64,
    ) -> io::Result<()> {
        let update = StatusUpdate {
            ts,
            port: self.port,
            seq,
            status,
            lba,
            blocks,
        };
        let rotated = self
            .in_flight
            .as_ref()
            .is_some_and(|(_, upto)| seq <= *upto);
        let held = self.statuses.contains_key(&seq);
        if held {
            self.statuses.insert(seq, status);
        }
        // A failure goes to the primary as a status record in any case: it carries the
        // command's own range (the entry covers whole chunks).
        if rotated || !held || status == Status::Failed {
            self.late.push(update);
        }
        let unwritten = held && seq > self.written_upto;
        if unwritten && status != Status::Failed {
            return Ok(());
        }
        self.pending_status.push(update);
        if status == Status::Failed {
            self.write_pending()?;
        }
        Ok(())
    }

    /// The first `n` outcomes of [`late`](Self::late) are in the primary journal now. They
    /// leave the port only then, so that a reader of the outcomes (`failed_writes`: the ports
    /// first, then the primary) always finds them in one or the other.
    pub fn forget_late(&mut self, n: usize) {
        self.late.drain(..n.min(self.late.len()));
    }

    pub fn has_late(&self) -> bool {
        !self.late.is_empty()
    }

    /// Outcomes waiting for the primary journal.
    pub fn late(&self) -> &[StatusUpdate] {
        &self.late
    }

    /// The first entry for `chunk` stamped after `ts` (the chunk is `chunk - e.first_chunk()`
    /// within it).
    pub fn first_after(&self, chunk: u64, ts: u64) -> Option<&Arc<Entry>> {
        if ts == u64::MAX {
            return None;
        }
        self.entries
            .range((chunk, ts + 1, 0)..(chunk + 1, 0, 0))
            .next()
            .map(|(_, e)| e)
    }

    /// The files to fsync for a group commit (a rotated file still being flushed into the
    /// primary, then the current one) and the seq they will cover together.
    /// Waiting entries are written first; an error there is returned (nothing is fsynced).
    pub fn commit_target(&mut self) -> io::Result<Option<(Vec<Arc<File>>, u64)>> {
        self.write_pending()?;
        if self.appended_seq <= self.synced_seq {
            return Ok(None);
        }
        let mut files = Vec::with_capacity(2);
        if let Some((f, upto)) = &self.in_flight {
            if *upto > self.synced_seq {
                files.push(f.clone());
            }
        }
        files.push(self.file.clone());
        Ok(Some((files, self.appended_seq)))
    }

    /// After a successful fsync of the files handed out by `commit_target`.
    pub fn committed(&mut self, upto: u64) {
        if self.blocked.is_none() {
            self.synced_seq = self.synced_seq.max(upto);
        }
    }

    /// Stamp of the oldest entry not yet known durable.
    pub fn oldest_unsynced_ts(&self) -> Option<u64> {
        self.writes
            .iter()
            .filter(|e| e.seq > self.synced_seq)
            .map(|e| e.ts)
            .min()
    }

    /// Start a new segment file for new appends and hand out every entry held, for the flush
    /// into the primary journal. Entries stay visible here until `finish_flush`. The old file
    /// is not fsynced: the primary's fsync makes its entries durable (so old data goes to disk
    /// once, not twice); a commit in between fsyncs it ([`commit_target`]), and so does
    /// [`flush_failed`] if the primary cannot take them.
    ///
    /// Waiting entries are written to the old file first. If that fails the file is tainted
    /// (copied, not adopted) and the commits leave the rotated entries to the primary flush
    /// (`blocked`): they are not all in the file.
    pub fn rotate(&mut self) -> io::Result<Rotated> {
        let unwritten = self.write_pending().is_err();
        let file_no = self.file_no + 1;
        let path = partial_path(&self.dir, self.port, file_no);
        let header = SegmentHeader {
            kind: SegmentKind::Partial,
            chunk_bytes: self.chunk_bytes,
            id: file_no,
        };
        let file = create_segment(&path, &header)?;
        sync_dir(&self.dir)?;
        let old_path = std::mem::replace(&mut self.path, path);
        let old = std::mem::replace(&mut self.file, Arc::new(file));
        let old_len = std::mem::replace(&mut self.file_len, header.encode().len() as u64);
        let old_no = std::mem::replace(&mut self.file_no, file_no);
        let tainted = std::mem::replace(&mut self.tainted, false);
        let adoptable =
            (!tainted && self.places.iter().all(|p| p.0 == old_no)).then(|| Adoptable {
                file: old.clone(),
                len: old_len,
                places: self.places.iter().map(|p| (p.1, p.2)).collect(),
            });
        self.in_flight = Some((old, self.next_seq));
        if unwritten {
            self.blocked = Some(self.blocked.map_or(self.next_seq, |b| b.max(self.next_seq)));
        }
        // Everything held is handed out: nothing of it is written to the new file.
        self.written_upto = self.next_seq;
        self.pending_bytes = 0;
        let entries = self
            .writes
            .iter()
            .map(|e| {
                let status = self.statuses.get(&e.seq).copied().unwrap_or(e.status);
                (e.clone(), status)
            })
            .collect();
        Ok(Rotated {
            old_path,
            entries,
            upto_seq: self.next_seq,
            adoptable,
            superseded: std::mem::take(&mut self.superseded),
        })
    }

    /// The rotated entries are durable in the primary journal (and indexed there).
    pub fn finish_flush(&mut self, r: &Rotated) {
        // Appends made since the rotation follow the rotated entries in `writes`.
        let n = r.entries.len().min(self.writes.len());
        // What is left was appended since, and written (if at all) to the current file.
        let current = self.file_no;
        self.places.retain(|p| p.0 == current);
        for e in self.writes.drain(..n) {
            let c0 = e.first_chunk();
            for c in c0..c0 + u64::from(e.chunks()) {
                self.entries.remove(&(c, e.ts, e.seq));
            }
            let held = Self::held(&e).min(self.bytes);
            self.bytes -= held;
            self.total.fetch_sub(held, Ordering::Relaxed);
        }
        self.statuses.retain(|seq, _| *seq > r.upto_seq);
        if self.blocked.is_some_and(|b| b <= r.upto_seq) {
            self.blocked = None;
        }
        if self
            .in_flight
            .as_ref()
            .is_some_and(|(_, upto)| *upto <= r.upto_seq)
        {
            self.in_flight = None;
        }
        self.synced_seq = self.synced_seq.max(r.upto_seq);
        self.first_append = if self.writes.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
    }

    /// The primary journal could not take the rotated entries: make them durable in their
    /// partial file instead (they stay here and go to the primary with the next flush). If
    /// that fsync fails too, their new data waits for a flush that works (`blocked`).
    pub fn flush_failed(&mut self, r: &Rotated) {
        // The rotated files stay until a flush takes their entries (an adopted one that was
        // moved into the primary already is no longer here).
        self.superseded.extend(r.superseded.iter().cloned());
        if r.old_path.exists() {
            self.superseded.push(r.old_path.clone());
        }
        let Some((f, upto)) = self.in_flight.clone() else {
            return;
        };
        if upto > r.upto_seq {
            return;
        }
        match f.sync_data() {
            Ok(()) => {
                if self.blocked.is_none() {
                    self.synced_seq = self.synced_seq.max(upto);
                }
                self.in_flight = None;
            }
            Err(_) => self.blocked = Some(self.blocked.map_or(upto, |b| b.max(upto))),
        }
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PartialJournal {
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// What a partial segment file held: its entries (with the last status found for them in
/// this file), every status record in it (an outcome may be recorded in a later file than its
/// entry, or after the entry went to the primary journal), and where it stopped.
pub(crate) struct Replayed {
    pub entries: Vec<Entry>,
    pub statuses: Vec<StatusUpdate>,
    pub tail: Option<TailProblem>,
}

/// Read back a partial segment file after a restart.
pub(crate) fn replay_file(path: &Path) -> Result<Replayed, super::JournalError> {
    let buf = std::fs::read(path)?;
    let name = path.display().to_string();
    if buf.len() < super::record::SEGMENT_HEADER_LEN {
        // Created, then a crash before its header was written: it holds nothing.
        let reason = "segment torn before its header was written".to_string();
        return Ok(Replayed {
            entries: Vec::new(),
            statuses: Vec::new(),
            tail: Some(TailProblem { offset: 0, reason }),
        });
    }
    let (header, scan) = scan_segment(&buf, &name)?;
    if header.kind != SegmentKind::Partial {
        return Err(super::JournalError::Corrupt {
            file: name,
            offset: 0,
            reason: "not a partial journal segment".into(),
        });
    }
    let mut entries: Vec<Entry> = Vec::new();
    let mut statuses = Vec::new();
    let mut status: HashMap<(u64, u64), Status> = HashMap::new();
    for s in scan.records {
        match s.record {
            Record::Entry(e) => entries.push(e),
            Record::Status(u) => {
                status.insert((u.port, u.seq), u.status);
                statuses.push(u);
            }
            // Only the primary journal holds merged windows.
            Record::Window(_) => {}
        }
    }
    for e in &mut entries {
        if let Some(s) = status.get(&(e.port, e.seq)) {
            e.status = *s;
        }
    }
    Ok(Replayed {
        entries,
        statuses,
        tail: scan.tail,
    })
}

#[cfg(test)]
mod tests {
    use super::super::record::no_unallocated;
    use super::*;

    /// An entry of `chunks` 8-block chunks from `lba`, 512-byte blocks, filled with `byte`.
    fn entry_n(lba: u64, chunks: u32, byte: u8) -> Entry {
        Entry {
            ts: 0,
            port: 0,
            seq: 0,
            lba,
            blocks: 8 * chunks,
            chunk_blocks: 8,
            status: Status::Pending,
            unallocated: no_unallocated(chunks),
            merged: false,
            invalid_ports: vec![],
            data: vec![byte; 4096 * chunks as usize],
        }
    }

    fn entry(lba: u64, byte: u8) -> Entry {
        entry_n(lba, 1, byte)
    }

    #[test]
    fn append_lookup_rotate_replay() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = PartialJournal::create(dir.path(), 9, 4096, 0).unwrap();
        // One write over chunks 0 and 1: one entry, one record.
        let mut two = entry_n(0, 2, 1);
        two.data[4096..].fill(2);
        let s1 = p.append(100, vec![two]);
        p.set_status(100, s1, Status::Ok, 0, 16).unwrap();
        let s2 = p.append(200, vec![entry(0, 3)]);
        assert_eq!((s1, s2), (1, 2));
        let e = p.first_after(1, 50).unwrap();
        assert_eq!(e.chunk_data(1, 512).unwrap().unwrap()[0], 2);
        assert_eq!(p.first_after(0, 50).unwrap().data[0], 1);
        assert_eq!(p.first_after(0, 100).unwrap().data[0], 3);
        assert!(p.first_after(0, 200).is_none());
        assert!(p.first_after(2, 0).is_none());

        // Held in memory until a batch writes them.
        assert!(p.has_pending());
        assert!(replay_file(p.path()).unwrap().entries.is_empty());
        p.write_pending().unwrap();
        assert!(!p.has_pending());
        let Replayed {
            entries,
            statuses,
            tail,
        } = replay_file(p.path()).unwrap();
        assert!(tail.is_none());
        assert_eq!(entries.len(), 2, "one record per write");
        assert_eq!(entries[0].chunks(), 2);
        assert_eq!(entries[0].status, Status::Ok, "written with its outcome");
        assert!(statuses.is_empty(), "so no status record");
        assert_eq!(entries[1].status, Status::Pending);
        // An outcome known after its entry was written follows as a status record.
        p.set_status(200, s2, Status::Ok, 0, 8).unwrap();
        p.write_pending().unwrap();
        let Replayed {
            entries, statuses, ..
        } = replay_file(p.path()).unwrap();
        assert_eq!(entries[1].status, Status::Ok);
        assert_eq!(statuses.len(), 1);

        let r = p.rotate().unwrap();
        assert_eq!(r.entries.len(), 2);
        assert_eq!(p.synced_seq, 0, "not durable until the primary has them");
        assert!(p.first_after(0, 50).is_some(), "visible until flushed");
        // An append after the rotation stays after the flush.
        p.append(300, vec![entry(16, 4)]);
        // A commit meanwhile fsyncs the rotated file and the current one.
        let (files, upto) = p.commit_target().unwrap().unwrap();
        assert_eq!((files.len(), upto), (2, 3));
        p.finish_flush(&r);
        assert_eq!(p.synced_seq, 2);
        let (files, upto) = p.commit_target().unwrap().unwrap();
        assert_eq!((files.len(), upto), (1, 3));
        assert!(p.first_after(0, 50).is_none());
        assert!(p.first_after(1, 50).is_none());
        assert_eq!(p.first_after(2, 0).unwrap().data[0], 4);
        assert_eq!(p.bytes, 4096 + 64);
    }

    #[test]
    fn a_failed_primary_flush_makes_the_rotated_entries_durable_in_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = PartialJournal::create(dir.path(), 3, 4096, 0).unwrap();
        p.append(100, vec![entry(0, 1)]);
        p.append(200, vec![entry(8, 2)]);
        let r = p.rotate().unwrap();
        p.append(300, vec![entry(16, 3)]);
        assert_eq!(p.synced_seq, 0);
        p.flush_failed(&r);
        assert_eq!(p.synced_seq, 2, "fsynced where they are");
        assert!(
            p.first_after(0, 50).is_some(),
            "still held for the next flush"
        );
        let (files, upto) = p.commit_target().unwrap().unwrap();
        assert_eq!((files.len(), upto), (1, 3));
        // The next flush takes all three, and with them the file of the failed one.
        let r2 = p.rotate().unwrap();
        assert_eq!(r2.entries.len(), 3);
        assert_eq!(r2.superseded, vec![r.old_path.clone()]);
        assert!(r.old_path.exists(), "kept until a flush takes its entries");
        p.finish_flush(&r2);
        assert_eq!(p.synced_seq, 3);
        assert!(p.commit_target().unwrap().is_none());
    }

    /// Files of rotations whose flush failed pile up until one works, and are handed out with
    /// it: the caller deletes them once the primary holds their entries.
    #[test]
    fn files_of_failed_flushes_go_with_the_next_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = PartialJournal::create(dir.path(), 3, 4096, 0).unwrap();
        p.append(100, vec![entry(0, 1)]);
        let r1 = p.rotate().unwrap();
        assert!(r1.superseded.is_empty());
        p.flush_failed(&r1);
        p.append(200, vec![entry(8, 2)]);
        let r2 = p.rotate().unwrap();
        assert_eq!(r2.superseded, vec![r1.old_path.clone()]);
        p.flush_failed(&r2);
        let r3 = p.rotate().unwrap();
        assert_eq!(r3.entries.len(), 2);
        assert_eq!(
            r3.superseded,
            vec![r1.old_path.clone(), r2.old_path.clone()]
        );
        p.finish_flush(&r3);
        // A later rotation hands out nothing of them again.
        p.append(300, vec![entry(16, 3)]);
        assert!(p.rotate().unwrap().superseded.is_empty());
    }

    /// An outcome recorded after a rotation handed its entry to the primary (or after the
    /// flush) waits for the primary; a failure always does (it carries the command's range).
    #[test]
    fn outcomes_after_a_rotation_wait_for_the_primary() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = PartialJournal::create(dir.path(), 4, 4096, 0).unwrap();
        let s1 = p.append(100, vec![entry(0, 1)]);
        let s2 = p.append(200, vec![entry(8, 2)]);
        p.set_status(100, s1, Status::Ok, 0, 8).unwrap();
        assert!(!p.has_late(), "held here: goes with the entry");
        let r = p.rotate().unwrap();
        assert_eq!(r.entries[0].1, Status::Ok);
        assert_eq!(r.entries[1].1, Status::Pending);
        p.set_status(200, s2, Status::Failed, 9, 3).unwrap();
        p.finish_flush(&r);
        let s3 = p.append(300, vec![entry(16, 3)]);
        p.set_status(300, s3, Status::Failed, 16, 8).unwrap();
        let late = p.late().to_vec();
        p.forget_late(late.len());
        assert_eq!(
            late.iter()
                .map(|u| (u.seq, u.status, u.lba, u.blocks))
                .collect::<Vec<_>>(),
            vec![(s2, Status::Failed, 9, 3), (s3, Status::Failed, 16, 8)]
        );
        assert!(!p.has_late());
        // The file holds the outcome too: a replay finds it (and its entry, if here).
        assert!(!p.has_pending(), "a failure is written at once");
        let Replayed {
            entries, statuses, ..
        } = replay_file(p.path()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].status, Status::Failed);
        assert_eq!(statuses.len(), 2, "the one of a flushed entry as well");
    }

    #[test]
    fn write_all_parts_writes_everything_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = File::create(&path).unwrap();
        let big = vec![7u8; 3 << 20];
        let parts: Vec<&[u8]> = (0..1500)
            .map(|i| if i % 500 == 0 { &big[..] } else { &b"ab"[..] })
            .collect();
        write_all_parts(&f, &parts).unwrap();
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got, parts.concat());
    }

    #[test]
    fn torn_tail_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = PartialJournal::create(dir.path(), 1, 4096, 0).unwrap();
        p.append(10, vec![entry_n(0, 4, 1)]);
        p.append(20, vec![entry_n(0, 4, 2)]);
        p.write_pending().unwrap();
        let len = std::fs::metadata(p.path()).unwrap().len();
        let f = OpenOptions::new().write(true).open(p.path()).unwrap();
        f.set_len(len - 10).unwrap();
        let Replayed { entries, tail, .. } = replay_file(p.path()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].chunks(), 4);
        assert!(tail.is_some());
    }
}
