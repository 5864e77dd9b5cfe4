//! One partial journal per port (I_T nexus): entries are kept in memory, indexed for point-in-time
//! lookups, and appended (no fsync) to the port's own segment file. The group commit fsyncs it;
//! when full or old enough it is flushed into the primary journal and its file rotated away.

use super::record::{
    encode_entry_head, encode_status, scan_segment, Entry, Record, SegmentHeader, SegmentKind,
    Status, StatusUpdate, TailProblem,
};
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// In-memory key: (chunk, ts, seq). Each chunk of an entry has its key; all point at the
/// one shared entry.
pub(crate) type PartialKey = (u64, u64, u64);

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
    /// Every entry with seq <= synced_seq is durable (partial file fsynced or in the primary).
    pub synced_seq: u64,
    /// A rotated file could not be fsynced: seqs up to this wait for the primary flush.
    pub blocked: Option<u64>,
    /// The rotated file whose entries are on their way into the primary journal (not fsynced:
    /// the primary's fsync makes them durable), and the last seq it holds. A commit before
    /// that flush is done fsyncs it too.
    in_flight: Option<(Arc<File>, u64)>,
    /// Per chunk: the entry holding its old data.
    pub entries: BTreeMap<PartialKey, Arc<Entry>>,
    /// The entries in append order (each once).
    writes: Vec<Arc<Entry>>,
    /// Where each of `writes` lies: (file number, record offset, record length).
    places: Vec<(u64, u64, u32)>,
    /// A write to the current file failed: it may hold a torn record in its middle, so it is
    /// copied into the primary journal record by record, never adopted whole.
    tainted: bool,
    statuses: HashMap<u64, Status>,
    /// Outcomes recorded after their entries were handed to the primary journal (by a rotation):
    /// the next flush of this port writes them there as status records.
    late: Vec<StatusUpdate>,
    /// Old-data bytes held.
    pub bytes: u64,
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
}

/// A rotated partial file that holds exactly the rotated entries, whole.
pub(crate) struct Adoptable {
    pub file: Arc<File>,
    pub len: u64,
    /// Per rotated entry: record offset and length in `file`.
    pub places: Vec<(u64, u32)>,
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
            synced_seq: 0,
            blocked: None,
            in_flight: None,
            entries: BTreeMap::new(),
            writes: Vec::new(),
            places: Vec::new(),
            tainted: false,
            statuses: HashMap::new(),
            late: Vec::new(),
            bytes: 0,
            first_append: None,
        })
    }

    /// Append the entries of one write (all stamped `ts`; one entry unless the write is very
    /// large). Returns its seq.
    pub fn append(&mut self, ts: u64, mut entries: Vec<Entry>) -> io::Result<u64> {
        let seq = self.next_seq + 1;
        let mut head = Vec::with_capacity(entries.len() * 80);
        let mut ends = Vec::with_capacity(entries.len());
        for e in entries.iter_mut() {
            e.ts = ts;
            e.port = self.port;
            e.seq = seq;
            e.status = Status::Pending;
            encode_entry_head(e, Status::Pending, &mut head);
            ends.push(head.len());
        }
        let mut parts: Vec<&[u8]> = Vec::with_capacity(2 * entries.len());
        let mut from = 0;
        let mut total = 0;
        for (e, end) in entries.iter().zip(&ends) {
            parts.push(&head[from..*end]);
            parts.push(&e.data);
            total += end - from + e.data.len();
            from = *end;
        }
        if let Err(err) = write_all_parts(&self.file, &parts) {
            // Cut a possibly torn record off so later appends stay readable.
            let _ = self.file.set_len(self.file_len);
            self.tainted = true;
            return Err(err);
        }
        let mut off = self.file_len;
        let mut from = 0;
        for (e, end) in entries.iter().zip(&ends) {
            let len = end - from + e.data.len();
            self.places.push((self.file_no, off, len as u32));
            off += len as u64;
            from = *end;
        }
        self.file_len += total as u64;
        self.next_seq = seq;
        self.appended_seq = seq;
        for e in entries {
            self.bytes += e.data.len() as u64 + 64 * u64::from(e.chunks());
            let e = Arc::new(e);
            let c0 = e.first_chunk();
            for c in c0..c0 + u64::from(e.chunks()) {
                self.entries.insert((c, ts, seq), e.clone());
            }
            self.writes.push(e);
        }
        self.statuses.insert(seq, Status::Pending);
        self.first_append.get_or_insert_with(Instant::now);
        Ok(seq)
    }

    /// Record the outcome of write `seq` over `blocks` blocks from `lba` (phase three), in the
    /// port's current segment file. If a rotation already handed the entry to the primary
    /// journal (with the status it had then), the outcome is also kept for the primary: the
    /// next flush of this port appends it there ([`take_late`](Self::take_late)).
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
        let mut buf = Vec::new();
        encode_status(&update, &mut buf);
        if let Err(err) = (&*self.file).write_all(&buf) {
            let _ = self.file.set_len(self.file_len);
            self.tainted = true;
            return Err(err);
        }
        self.file_len += buf.len() as u64;
        Ok(())
    }

    /// Outcomes waiting for the primary journal (see `set_status`).
    pub fn take_late(&mut self) -> Vec<StatusUpdate> {
        std::mem::take(&mut self.late)
    }

    /// Put outcomes back that the primary could not take.
    pub fn restore_late(&mut self, mut late: Vec<StatusUpdate>) {
        late.append(&mut self.late);
        self.late = late;
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
    pub fn commit_target(&self) -> Option<(Vec<Arc<File>>, u64)> {
        if self.appended_seq <= self.synced_seq {
            return None;
        }
        let mut files = Vec::with_capacity(2);
        if let Some((f, upto)) = &self.in_flight {
            if *upto > self.synced_seq {
                files.push(f.clone());
            }
        }
        files.push(self.file.clone());
        Some((files, self.appended_seq))
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
    pub fn rotate(&mut self) -> io::Result<Rotated> {
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
        self.in_flight = Some((old, self.appended_seq));
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
            upto_seq: self.appended_seq,
            adoptable,
        })
    }

    /// The rotated entries are durable in the primary journal (and indexed there).
    pub fn finish_flush(&mut self, r: &Rotated) {
        // Appends made since the rotation follow the rotated entries in `writes`.
        let n = r.entries.len().min(self.writes.len());
        self.places.drain(..n.min(self.places.len()));
        for e in self.writes.drain(..n) {
            let c0 = e.first_chunk();
            for c in c0..c0 + u64::from(e.chunks()) {
                self.entries.remove(&(c, e.ts, e.seq));
            }
            let held = e.data.len() as u64 + 64 * u64::from(e.chunks());
            self.bytes = self.bytes.saturating_sub(held);
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
        let s1 = p.append(100, vec![two]).unwrap();
        p.set_status(100, s1, Status::Ok, 0, 16).unwrap();
        let s2 = p.append(200, vec![entry(0, 3)]).unwrap();
        assert_eq!((s1, s2), (1, 2));
        let e = p.first_after(1, 50).unwrap();
        assert_eq!(e.chunk_data(1, 512).unwrap().unwrap()[0], 2);
        assert_eq!(p.first_after(0, 50).unwrap().data[0], 1);
        assert_eq!(p.first_after(0, 100).unwrap().data[0], 3);
        assert!(p.first_after(0, 200).is_none());
        assert!(p.first_after(2, 0).is_none());

        let Replayed { entries, tail, .. } = replay_file(p.path()).unwrap();
        assert!(tail.is_none());
        assert_eq!(entries.len(), 2, "one record per write");
        assert_eq!(entries[0].chunks(), 2);
        assert_eq!(entries[0].status, Status::Ok);
        assert_eq!(entries[1].status, Status::Pending);

        let r = p.rotate().unwrap();
        assert_eq!(r.entries.len(), 2);
        assert_eq!(p.synced_seq, 0, "not durable until the primary has them");
        assert!(p.first_after(0, 50).is_some(), "visible until flushed");
        // An append after the rotation stays after the flush.
        p.append(300, vec![entry(16, 4)]).unwrap();
        // A commit meanwhile fsyncs the rotated file and the current one.
        let (files, upto) = p.commit_target().unwrap();
        assert_eq!((files.len(), upto), (2, 3));
        p.finish_flush(&r);
        assert_eq!(p.synced_seq, 2);
        let (files, upto) = p.commit_target().unwrap();
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
        p.append(100, vec![entry(0, 1)]).unwrap();
        p.append(200, vec![entry(8, 2)]).unwrap();
        let r = p.rotate().unwrap();
        p.append(300, vec![entry(16, 3)]).unwrap();
        assert_eq!(p.synced_seq, 0);
        p.flush_failed(&r);
        assert_eq!(p.synced_seq, 2, "fsynced where they are");
        assert!(
            p.first_after(0, 50).is_some(),
            "still held for the next flush"
        );
        let (files, upto) = p.commit_target().unwrap();
        assert_eq!((files.len(), upto), (1, 3));
        // The next flush takes all three.
        let r2 = p.rotate().unwrap();
        assert_eq!(r2.entries.len(), 3);
        p.finish_flush(&r2);
        assert_eq!(p.synced_seq, 3);
        assert!(p.commit_target().is_none());
    }

    /// An outcome recorded after a rotation handed its entry to the primary (or after the
    /// flush) waits for the primary; a failure always does (it carries the command's range).
    #[test]
    fn outcomes_after_a_rotation_wait_for_the_primary() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = PartialJournal::create(dir.path(), 4, 4096, 0).unwrap();
        let s1 = p.append(100, vec![entry(0, 1)]).unwrap();
        let s2 = p.append(200, vec![entry(8, 2)]).unwrap();
        p.set_status(100, s1, Status::Ok, 0, 8).unwrap();
        assert!(!p.has_late(), "held here: goes with the entry");
        let r = p.rotate().unwrap();
        assert_eq!(r.entries[0].1, Status::Ok);
        assert_eq!(r.entries[1].1, Status::Pending);
        p.set_status(200, s2, Status::Failed, 9, 3).unwrap();
        p.finish_flush(&r);
        let s3 = p.append(300, vec![entry(16, 3)]).unwrap();
        p.set_status(300, s3, Status::Failed, 16, 8).unwrap();
        let late = p.take_late();
        assert_eq!(
            late.iter()
                .map(|u| (u.seq, u.status, u.lba, u.blocks))
                .collect::<Vec<_>>(),
            vec![(s2, Status::Failed, 9, 3), (s3, Status::Failed, 16, 8)]
        );
        assert!(!p.has_late());
        // The file holds the outcome too: a replay finds it (and its entry, if here).
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
        p.append(10, vec![entry_n(0, 4, 1)]).unwrap();
        p.append(20, vec![entry_n(0, 4, 2)]).unwrap();
        let len = std::fs::metadata(p.path()).unwrap().len();
        let f = OpenOptions::new().write(true).open(p.path()).unwrap();
        f.set_len(len - 10).unwrap();
        let Replayed { entries, tail, .. } = replay_file(p.path()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].chunks(), 4);
        assert!(tail.is_some());
    }
}
