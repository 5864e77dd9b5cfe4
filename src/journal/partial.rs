//! One partial journal per port (I_T nexus): entries are kept in memory, indexed for point-in-time
//! lookups, and appended (no fsync) to the port's own segment file. The group commit fsyncs it;
//! when full or old enough it is flushed into the primary journal and its file rotated away.

use super::record::{
    encode_entry, encode_status, scan_segment, Entry, Record, SegmentHeader, SegmentKind, Status,
    StatusUpdate, TailProblem,
};
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// In-memory key: (chunk, ts, seq).
pub(crate) type PartialKey = (u64, u64, u64);

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
    pub entries: BTreeMap<PartialKey, Arc<Entry>>,
    statuses: HashMap<u64, Status>,
    /// Old-data bytes held.
    pub bytes: u64,
    /// When the oldest unflushed entry was appended.
    pub first_append: Option<Instant>,
}

/// What a rotation hands to the primary flush.
pub(crate) struct Rotated {
    pub old_path: PathBuf,
    pub keys: Vec<PartialKey>,
    /// The entries (shared with the in-memory map, not copied) and their last status.
    pub entries: Vec<(Arc<Entry>, Status)>,
    pub upto_seq: u64,
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
            entries: BTreeMap::new(),
            statuses: HashMap::new(),
            bytes: 0,
            first_append: None,
        })
    }

    /// Append the entries of one write (all stamped `ts`, one per chunk). Returns its seq.
    pub fn append(&mut self, ts: u64, mut entries: Vec<(u64, Entry)>) -> io::Result<u64> {
        let seq = self.next_seq + 1;
        let mut buf = Vec::new();
        for (_, e) in entries.iter_mut() {
            e.ts = ts;
            e.port = self.port;
            e.seq = seq;
            e.status = Status::Pending;
            encode_entry(e, &mut buf);
        }
        if let Err(err) = (&*self.file).write_all(&buf) {
            // Cut a possibly torn record off so later appends stay readable.
            let _ = self.file.set_len(self.file_len);
            return Err(err);
        }
        self.file_len += buf.len() as u64;
        self.next_seq = seq;
        self.appended_seq = seq;
        for (chunk, e) in entries {
            self.bytes += e.data.len() as u64 + 64;
            self.entries.insert((chunk, ts, seq), Arc::new(e));
        }
        self.statuses.insert(seq, Status::Pending);
        self.first_append.get_or_insert_with(Instant::now);
        Ok(seq)
    }

    /// Record the outcome of write `seq` (phase three).
    pub fn set_status(&mut self, ts: u64, seq: u64, status: Status) -> io::Result<()> {
        self.statuses.insert(seq, status);
        let mut buf = Vec::new();
        encode_status(
            &StatusUpdate {
                ts,
                port: self.port,
                seq,
                status,
            },
            &mut buf,
        );
        if let Err(err) = (&*self.file).write_all(&buf) {
            let _ = self.file.set_len(self.file_len);
            return Err(err);
        }
        self.file_len += buf.len() as u64;
        Ok(())
    }

    /// The first entry for `chunk` stamped after `ts`.
    pub fn first_after(&self, chunk: u64, ts: u64) -> Option<Arc<Entry>> {
        if ts == u64::MAX {
            return None;
        }
        self.entries
            .range((chunk, ts + 1, 0)..(chunk + 1, 0, 0))
            .next()
            .map(|(_, e)| e.clone())
    }

    /// The file to fsync for a group commit and the seq it will cover.
    pub fn commit_target(&self) -> Option<(Arc<File>, u64)> {
        (self.appended_seq > self.synced_seq).then(|| (self.file.clone(), self.appended_seq))
    }

    /// After a successful fsync of the file handed out by `commit_target`.
    pub fn committed(&mut self, upto: u64) {
        if self.blocked.is_none() {
            self.synced_seq = self.synced_seq.max(upto);
        }
    }

    /// Stamp of the oldest entry not yet known durable.
    pub fn oldest_unsynced_ts(&self) -> Option<u64> {
        self.entries
            .iter()
            .filter(|(k, _)| k.2 > self.synced_seq)
            .map(|(k, _)| k.1)
            .min()
    }

    /// Start a new segment file for new appends and hand out every entry held, for the flush
    /// into the primary journal. Entries stay visible here until `finish_flush`.
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
        // Entries of the old file: durable now if this fsync works, else once in the primary.
        match self.file.sync_data() {
            Ok(()) => self.synced_seq = self.synced_seq.max(self.appended_seq),
            Err(_) => self.blocked = Some(self.appended_seq),
        }
        let old_path = std::mem::replace(&mut self.path, path);
        self.file = Arc::new(file);
        self.file_len = header.encode().len() as u64;
        self.file_no = file_no;
        let mut keys = Vec::with_capacity(self.entries.len());
        let mut entries = Vec::with_capacity(self.entries.len());
        for (k, e) in &self.entries {
            let status = self.statuses.get(&k.2).copied().unwrap_or(e.status);
            keys.push(*k);
            entries.push((e.clone(), status));
        }
        Ok(Rotated {
            old_path,
            keys,
            entries,
            upto_seq: self.appended_seq,
        })
    }

    /// The rotated entries are durable in the primary journal (and indexed there).
    pub fn finish_flush(&mut self, r: &Rotated) {
        for k in &r.keys {
            if let Some(e) = self.entries.remove(k) {
                self.bytes = self.bytes.saturating_sub(e.data.len() as u64 + 64);
            }
        }
        self.statuses.retain(|seq, _| *seq > r.upto_seq);
        if self.blocked.is_some_and(|b| b <= r.upto_seq) {
            self.blocked = None;
        }
        self.synced_seq = self.synced_seq.max(r.upto_seq);
        self.first_append = if self.entries.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Read back a partial segment file after a restart: its entries with their last status.
pub(crate) fn replay_file(
    path: &Path,
) -> Result<(Vec<Entry>, Option<TailProblem>), super::JournalError> {
    let buf = std::fs::read(path)?;
    let name = path.display().to_string();
    if buf.len() < super::record::SEGMENT_HEADER_LEN {
        // Created, then a crash before its header was written: it holds nothing.
        let reason = "segment torn before its header was written".to_string();
        return Ok((Vec::new(), Some(TailProblem { offset: 0, reason })));
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
    let mut status: HashMap<(u64, u64), Status> = HashMap::new();
    for s in scan.records {
        match s.record {
            Record::Entry(e) => entries.push(e),
            Record::Status(u) => {
                status.insert((u.port, u.seq), u.status);
            }
        }
    }
    for e in &mut entries {
        if let Some(s) = status.get(&(e.port, e.seq)) {
            e.status = *s;
        }
    }
    Ok((entries, scan.tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(lba: u64, byte: u8) -> Entry {
        Entry {
            ts: 0,
            port: 0,
            seq: 0,
            lba,
            blocks: 8,
            status: Status::Pending,
            unallocated: false,
            merged: false,
            invalid_ports: vec![],
            data: vec![byte; 4096],
        }
    }

    #[test]
    fn append_lookup_rotate_replay() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = PartialJournal::create(dir.path(), 9, 4096, 0).unwrap();
        let s1 = p
            .append(100, vec![(0, entry(0, 1)), (1, entry(8, 2))])
            .unwrap();
        p.set_status(100, s1, Status::Ok).unwrap();
        let s2 = p.append(200, vec![(0, entry(0, 3))]).unwrap();
        assert_eq!((s1, s2), (1, 2));
        assert_eq!(p.first_after(0, 50).unwrap().data[0], 1);
        assert_eq!(p.first_after(0, 100).unwrap().data[0], 3);
        assert!(p.first_after(0, 200).is_none());
        assert!(p.first_after(2, 0).is_none());

        let (entries, tail) = replay_file(p.path()).unwrap();
        assert!(tail.is_none());
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].status, Status::Ok);
        assert_eq!(entries[2].status, Status::Pending);

        let r = p.rotate().unwrap();
        assert_eq!(r.entries.len(), 3);
        assert_eq!(p.synced_seq, 2);
        assert!(p.first_after(0, 50).is_some(), "visible until flushed");
        p.finish_flush(&r);
        assert!(p.first_after(0, 50).is_none());
        assert_eq!(p.bytes, 0);
    }

    #[test]
    fn torn_tail_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = PartialJournal::create(dir.path(), 1, 4096, 0).unwrap();
        p.append(10, vec![(0, entry(0, 1))]).unwrap();
        p.append(20, vec![(0, entry(0, 2))]).unwrap();
        let len = std::fs::metadata(p.path()).unwrap().len();
        let f = OpenOptions::new().write(true).open(p.path()).unwrap();
        f.set_len(len - 10).unwrap();
        let (entries, tail) = replay_file(p.path()).unwrap();
        assert_eq!(entries.len(), 1);
        assert!(tail.is_some());
    }
}
