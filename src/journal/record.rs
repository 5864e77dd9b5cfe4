//! The on-disk record format shared by partial and primary journal segments.
//!
//! A segment file starts with a 28-byte header:
//! `magic "RWNDJRNL" | version u16 | kind u8 | 0 u8 | chunk_bytes u32 | segment id u64 | crc32c u32`
//! followed by records `len u32 | kind u8 | crc32c u32 | payload[len]` (little endian). The
//! checksum covers `len`, `kind` and the payload, so a torn or flipped record is detected and a
//! scan stops cleanly before it.
//!
//! Format version 2: an entry record covers a run of whole chunks (one write, or a part of a
//! very large one), with a per-chunk "unallocated" bitmap and the old data of the allocated
//! chunks packed in chunk order. Version 3 adds two things a version 2 reader does not know: a
//! status record carries the command's block range (so a `Failed` outcome recorded after its
//! entry left the partial journal still says which blocks it concerns), and the merged-window
//! record (port validity of a merged window). Segments of version 2 are read as they are (they
//! hold neither). Version 1 (one record per chunk) is refused at open.
//!
//! Format version 4 writes entry records of a new kind (4, "entry with chunk checksums"): the
//! head carries a crc32c of each chunk's old data after the unallocated bitmap, and the record
//! checksum covers `len`, `kind` and the head only (not the old data). Any subset of an entry's
//! chunks can so be read and verified without reading the rest of the record
//! (`decode_entry_head`, `EntryHead::check_chunk`); a whole-record decode (`decode_record`, what
//! scans, recovery and `rewind verify` use) still verifies every chunk. Entry records of kind 1
//! (versions 2 and 3, one checksum over the whole record) are still read. New segments are
//! written as version 4; a segment of an older version is never appended to (a new one is
//! started), so an older rewind never finds a record kind it does not know in a segment whose
//! version it reads.
//!
//! Format version 5 writes entry records of kind 5 ("compact entry"): the same head as kind 4
//! with its integers as LEB128 varints instead of fixed-width fields (the stamp stays a fixed
//! `u64`), the invalid-port list present only when it is not empty, the unallocated bitmap present
//! only when a chunk is unallocated (a flag says so), and no old-data length (it is what the
//! record length leaves after the head). A one-chunk 4 KiB entry's head shrinks from 68 bytes
//! to about 32. Kinds 1 and 4 are still read.

use super::error::JournalError;
use integer_encoding::VarInt;

pub const SEGMENT_MAGIC: [u8; 8] = *b"RWNDJRNL";
pub const FORMAT_VERSION: u16 = 5;
/// The oldest segment format version still read.
pub const MIN_FORMAT_VERSION: u16 = 2;
pub const SEGMENT_HEADER_LEN: usize = 28;
pub const RECORD_HEADER_LEN: usize = 9;
/// Upper bound of one payload; a larger length field is corruption.
pub const MAX_PAYLOAD: usize = 64 << 20;

/// Entry record of format versions 2 and 3: one checksum over the whole record.
const KIND_ENTRY: u8 = 1;
const KIND_STATUS: u8 = 2;
const KIND_WINDOW: u8 = 3;
/// Entry record of format version 4: a checksum per chunk of old data in the head; the record
/// checksum covers the head.
const KIND_CHUNKED_ENTRY: u8 = 4;
/// Entry record of format version 5: kind 4's head with varint fields (see the module doc).
const KIND_COMPACT_ENTRY: u8 = 5;
const FLAG_MERGED: u8 = 2;
/// Kind 5: the unallocated bitmap follows (some chunk is unallocated).
const FLAG_UNALLOCATED: u8 = 4;
/// Kind 5: the invalid-port list follows (it is not empty).
const FLAG_PORTS: u8 = 8;
/// Most old-data bytes one entry record spans; a larger write is journaled as several records
/// (all with the same `(ts, port, seq)`), so that reading one chunk of history never has to
/// read and checksum more than this.
pub const MAX_RECORD_SPAN: u64 = 256 << 10;

/// Which journal a segment belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    Partial,
    Primary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub kind: SegmentKind,
    /// Journal chunk size the entries of this segment were cut to.
    pub chunk_bytes: u32,
    pub id: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[10] = match self.kind {
            SegmentKind::Partial => 1,
            SegmentKind::Primary => 2,
        };
        b[12..16].copy_from_slice(&self.chunk_bytes.to_le_bytes());
        b[16..24].copy_from_slice(&self.id.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..24]);
        b[24..28].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() < SEGMENT_HEADER_LEN {
            return Err("short segment header".into());
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err("bad segment magic".into());
        }
        if crc32c::crc32c(&b[0..24]).to_le_bytes() != b[24..28] {
            return Err("segment header checksum mismatch".into());
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(format!(
                "unsupported segment format version {version} (this version of rewind reads \
                 versions {MIN_FORMAT_VERSION} to {FORMAT_VERSION})"
            ));
        }
        let kind = match b[10] {
            1 => SegmentKind::Partial,
            2 => SegmentKind::Primary,
            k => return Err(format!("unknown segment kind {k}")),
        };
        Ok(SegmentHeader {
            kind,
            chunk_bytes: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
            id: u64::from_le_bytes(b[16..24].try_into().map_err(|_| "header")?),
        })
    }
}

/// The three-phase status of a journaled write (journal, update, record the outcome): what the
/// initiator was told about the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Journaled; the outcome is not known (yet, or ever: a crash before it was recorded).
    Pending,
    /// The command completed with GOOD: the new data was accepted (in the dirty cache, and on
    /// the volume once its entry is durable; with FUA, on the volume and durable).
    Ok,
    /// The command ended in CHECK CONDITION after its old data was journaled (a FUA
    /// write-through that failed, or a failure of the commit a writer waited for). The entry's
    /// old data is still the blocks' content before the command; the new data may or may not
    /// have reached the volume (SCSI leaves a failed write's blocks indeterminate): views read
    /// what the volume and the dirty cache really held after it.
    Failed,
}

impl Status {
    fn to_u8(self) -> u8 {
        match self {
            Status::Pending => 0,
            Status::Ok => 1,
            Status::Failed => 2,
        }
    }
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Status::Pending),
            1 => Some(Status::Ok),
            2 => Some(Status::Failed),
            _ => None,
        }
    }
}

/// One journal entry: the old content of a run of whole chunks, as it was just before the
/// write stamped `ts` (by `port`, its `seq`-th write) changed it. A write spanning several
/// chunks is one entry (one record); each of its chunks is indexed on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub ts: u64,
    pub port: u64,
    pub seq: u64,
    /// First block of the first chunk.
    pub lba: u64,
    /// Blocks covered: whole chunks (the last may be shorter at the end of the volume).
    pub blocks: u32,
    /// Blocks per chunk of the journal that wrote it.
    pub chunk_blocks: u32,
    pub status: Status,
    /// Bit `k` (byte `k / 8`, bit `k % 8`): chunk `k` was never written (deallocated): no data
    /// is kept for it, it reads as zeros. Exactly `chunks().div_ceil(8)` bytes.
    pub unallocated: Vec<u8>,
    /// Entry produced by merging (it stands for a whole window).
    pub merged: bool,
    /// Ports whose partial journals were not valid during the window of a merged entry.
    pub invalid_ports: Vec<u64>,
    /// Old data of the allocated chunks, in chunk order, packed (an unallocated chunk takes no
    /// room).
    pub data: Vec<u8>,
}

/// An unallocated bitmap for `chunks` chunks with none set.
pub fn no_unallocated(chunks: u32) -> Vec<u8> {
    vec![0u8; (chunks as usize).div_ceil(8)]
}

impl Entry {
    /// Number of chunks the entry covers.
    pub fn chunks(&self) -> u32 {
        if self.chunk_blocks == 0 {
            return 0;
        }
        self.blocks.div_ceil(self.chunk_blocks)
    }

    /// The first chunk the entry covers.
    pub fn first_chunk(&self) -> u64 {
        self.lba / u64::from(self.chunk_blocks.max(1))
    }

    pub fn is_unallocated(&self, k: u32) -> bool {
        self.unallocated
            .get(k as usize / 8)
            .is_some_and(|b| b & (1 << (k % 8)) != 0)
    }

    pub fn set_unallocated(&mut self, k: u32) {
        if let Some(b) = self.unallocated.get_mut(k as usize / 8) {
            *b |= 1 << (k % 8);
        }
    }

    /// Every chunk unallocated.
    pub fn all_unallocated(&self) -> bool {
        (0..self.chunks()).all(|k| self.is_unallocated(k))
    }

    /// Blocks of chunk `k`.
    pub fn blocks_of(&self, k: u32) -> u32 {
        let start = k.saturating_mul(self.chunk_blocks);
        self.chunk_blocks.min(self.blocks.saturating_sub(start))
    }

    /// Bytes of old data the entry should hold with blocks of `block_size` bytes.
    pub fn expected_data_len(&self, block_size: usize) -> u64 {
        (0..self.chunks())
            .filter(|k| !self.is_unallocated(*k))
            .map(|k| u64::from(self.blocks_of(k)) * block_size as u64)
            .sum()
    }

    /// Old data of chunk `k`: `None` if it was unallocated; an error if the entry does not
    /// hold it (malformed entry or wrong block size).
    pub fn chunk_data(&self, k: u32, block_size: usize) -> Result<Option<&[u8]>, String> {
        if k >= self.chunks() {
            return Err(format!(
                "chunk {k} outside an entry of {} chunks",
                self.chunks()
            ));
        }
        if self.is_unallocated(k) {
            return Ok(None);
        }
        let before = (0..k).filter(|i| !self.is_unallocated(*i)).count();
        let full = self.chunk_blocks as usize * block_size;
        let from = before * full;
        let len = self.blocks_of(k) as usize * block_size;
        self.data
            .get(from..from + len)
            .map(Some)
            .ok_or_else(|| "entry holds less old data than its chunks need".to_string())
    }
}

/// A status record: the outcome of the write `(ts, port, seq)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusUpdate {
    pub ts: u64,
    pub port: u64,
    pub seq: u64,
    pub status: Status,
    /// The command's first block and block count (format version 3; 0, 0 in version 2
    /// records).
    pub lba: u64,
    pub blocks: u64,
}

/// Port validity of one merged window `(start, end]` (format version 3): the ports that wrote
/// in it or were invalid during it, sorted, and a bit vector over them (bit `k`, byte `k / 8`,
/// bit `k % 8`: `ports[k]`'s partial journal was valid over the whole window). The entries the
/// merge keeps for the window stand for it; this record says whether they are complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedWindow {
    pub start: u64,
    pub end: u64,
    pub ports: Vec<u64>,
    pub valid: Vec<u8>,
}

impl MergedWindow {
    /// A window over `ports` (sorted, deduplicated here) with the `invalid` ones marked.
    pub fn new(start: u64, end: u64, mut ports: Vec<u64>, invalid: &[u64]) -> Self {
        ports.extend_from_slice(invalid);
        ports.sort_unstable();
        ports.dedup();
        let mut valid = vec![0u8; ports.len().div_ceil(8)];
        for (k, p) in ports.iter().enumerate() {
            if !invalid.contains(p) {
                valid[k / 8] |= 1 << (k % 8);
            }
        }
        MergedWindow {
            start,
            end,
            ports,
            valid,
        }
    }

    /// The ports whose bit says invalid.
    pub fn invalid_ports(&self) -> Vec<u64> {
        self.ports
            .iter()
            .enumerate()
            .filter(|(k, _)| {
                self.valid
                    .get(k / 8)
                    .is_none_or(|b| b & (1 << (k % 8)) == 0)
            })
            .map(|(_, p)| *p)
            .collect()
    }

    /// Every port was valid over the window.
    pub fn complete(&self) -> bool {
        self.invalid_ports().is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Entry(Entry),
    Status(StatusUpdate),
    Window(MergedWindow),
}

fn begin(out: &mut Vec<u8>, kind: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
    out[start + 4] = kind;
    start
}

fn finish(out: &mut [u8], start: usize) {
    let len = (out.len() - start - RECORD_HEADER_LEN) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&out[start..start + 5]),
        &out[start + RECORD_HEADER_LEN..],
    );
    out[start + 5..start + 9].copy_from_slice(&crc.to_le_bytes());
}

/// Append the framed encoding of an entry to `out`.
pub fn encode_entry(e: &Entry, out: &mut Vec<u8>) {
    encode_entry_with_status(e, e.status, out)
}

/// As `encode_entry`, with `status` in place of `e.status`.
pub fn encode_entry_with_status(e: &Entry, status: Status, out: &mut Vec<u8>) {
    let start = out.len();
    encode_entry_head(e, status, out);
    out.extend_from_slice(&e.data);
    debug_assert_eq!(out.len() - start, entry_record_len(e));
}

/// Framed length of an entry record (of the kind `encode_entry_head` writes).
pub fn entry_record_len(e: &Entry) -> usize {
    let var = |x: u64| x.required_space();
    let mut n = RECORD_HEADER_LEN
        + 8
        + var(e.port)
        + var(e.seq)
        + var(e.lba)
        + var(u64::from(e.blocks))
        + var(u64::from(e.chunk_blocks))
        + 2
        + 4 * e.chunks() as usize
        + e.data.len();
    if !e.invalid_ports.is_empty() {
        n += var(e.invalid_ports.len() as u64)
            + e.invalid_ports.iter().map(|p| var(*p)).sum::<usize>();
    }
    if has_unallocated(e) {
        n += e.unallocated.len();
    }
    n
}

/// Append `x` to `out` as a LEB128 varint (what kind 5 heads and index groups use).
pub(crate) fn push_var(out: &mut Vec<u8>, x: u64) {
    let mut buf = [0u8; 10];
    let used = x.encode_var(&mut buf);
    out.extend_from_slice(&buf[..used]);
}

/// Some chunk of `e` is unallocated (a kind 5 head then carries the bitmap).
fn has_unallocated(e: &Entry) -> bool {
    e.unallocated.iter().any(|b| *b != 0)
}

/// Byte range within `e.data` of each chunk's old data (`None`: unallocated), the blocks of
/// an allocated chunk taken as `e.data.len() / allocated blocks` bytes each. Ranges are
/// clamped to the data (a malformed entry gets checksums a decoder then refuses, no panic).
fn chunk_ranges(e: &Entry) -> impl Iterator<Item = Option<std::ops::Range<usize>>> + '_ {
    let alloc_blocks: u64 = (0..e.chunks())
        .filter(|k| !e.is_unallocated(*k))
        .map(|k| u64::from(e.blocks_of(k)))
        .sum();
    let bs = (e.data.len() as u64).checked_div(alloc_blocks).unwrap_or(0) as usize;
    let mut at = 0usize;
    (0..e.chunks()).map(move |k| {
        if e.is_unallocated(k) {
            return None;
        }
        let from = at.min(e.data.len());
        at = at.saturating_add(e.blocks_of(k) as usize * bs);
        Some(from..at.min(e.data.len()))
    })
}

/// Append everything of an entry's framed record except its old data, which must follow it
/// unchanged (`e.data`): the length and the chunk checksums already account for the data. Lets
/// a caller write the record with `[head, e.data]` without copying the data. Writes the
/// current format's entry record (kind 5: varint fields, a checksum per chunk).
pub fn encode_entry_head(e: &Entry, status: Status, out: &mut Vec<u8>) {
    let start = begin(out, KIND_COMPACT_ENTRY);
    out.extend_from_slice(&e.ts.to_le_bytes());
    for x in [
        e.port,
        e.seq,
        e.lba,
        u64::from(e.blocks),
        u64::from(e.chunk_blocks),
    ] {
        push_var(out, x);
    }
    let unallocated = has_unallocated(e);
    out.push(status.to_u8());
    let ports = !e.invalid_ports.is_empty();
    out.push(
        if e.merged { FLAG_MERGED } else { 0 }
            | if unallocated { FLAG_UNALLOCATED } else { 0 }
            | if ports { FLAG_PORTS } else { 0 },
    );
    if ports {
        push_var(out, e.invalid_ports.len() as u64);
        for p in &e.invalid_ports {
            push_var(out, *p);
        }
    }
    if unallocated {
        out.extend_from_slice(&e.unallocated);
    }
    close_chunked_head(e, out, start, false);
}

/// The chunk checksums (and, for kind 4, the old data's length) that end an entry head
/// begun at `start`, then the framing: the record length counts the old data to follow, and
/// the record checksum covers the head.
fn close_chunked_head(e: &Entry, out: &mut Vec<u8>, start: usize, data_len: bool) {
    for r in chunk_ranges(e) {
        let crc = r.map_or(0, |r| crc32c::crc32c(&e.data[r]));
        out.extend_from_slice(&crc.to_le_bytes());
    }
    if data_len {
        out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
    }
    let len = (out.len() - start - RECORD_HEADER_LEN + e.data.len()) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&out[start..start + 5]),
        &out[start + RECORD_HEADER_LEN..],
    );
    out[start + 5..start + 9].copy_from_slice(&crc.to_le_bytes());
}

/// The head of an entry record as format version 4 wrote it (kind 4, fixed-width fields): for
/// tests of reading older journals.
#[cfg(test)]
pub(crate) fn encode_entry_head_v4(e: &Entry, status: Status, out: &mut Vec<u8>) {
    let start = begin(out, KIND_CHUNKED_ENTRY);
    encode_entry_fields(e, status, out);
    close_chunked_head(e, out, start, true);
}

/// The fixed-width fields entry records of kinds 1 and 4 start with, up to and including the
/// unallocated bitmap.
#[cfg(test)]
fn encode_entry_fields(e: &Entry, status: Status, out: &mut Vec<u8>) {
    for v in [e.ts, e.port, e.seq, e.lba] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&e.blocks.to_le_bytes());
    out.extend_from_slice(&e.chunk_blocks.to_le_bytes());
    out.push(status.to_u8());
    out.push(if e.merged { FLAG_MERGED } else { 0 });
    out.extend_from_slice(&(e.invalid_ports.len() as u32).to_le_bytes());
    for p in &e.invalid_ports {
        out.extend_from_slice(&p.to_le_bytes());
    }
    out.extend_from_slice(&(e.unallocated.len() as u32).to_le_bytes());
    out.extend_from_slice(&e.unallocated);
}

/// An entry record as format versions 2 and 3 wrote it (kind 1, one checksum over the whole
/// record): for tests of reading older journals.
#[cfg(test)]
pub(crate) fn encode_entry_v3(e: &Entry, out: &mut Vec<u8>) {
    let start = begin(out, KIND_ENTRY);
    encode_entry_fields(e, e.status, out);
    out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
    out.extend_from_slice(&e.data);
    finish(out, start);
}

/// A segment header of format version `version` (tests of older journals).
#[cfg(test)]
pub(crate) fn encode_header_version(h: &SegmentHeader, version: u16) -> [u8; SEGMENT_HEADER_LEN] {
    let mut b = h.encode();
    b[8..10].copy_from_slice(&version.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..24]);
    b[24..28].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Append the framed encoding of a status update to `out`.
pub fn encode_status(s: &StatusUpdate, out: &mut Vec<u8>) {
    let start = begin(out, KIND_STATUS);
    for v in [s.ts, s.port, s.seq] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.push(s.status.to_u8());
    for v in [s.lba, s.blocks] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    finish(out, start);
}

/// Append the framed encoding of a merged window's port validity to `out`.
pub fn encode_window(w: &MergedWindow, out: &mut Vec<u8>) {
    let start = begin(out, KIND_WINDOW);
    for v in [w.start, w.end] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&(w.ports.len() as u32).to_le_bytes());
    for p in &w.ports {
        out.extend_from_slice(&p.to_le_bytes());
    }
    out.extend_from_slice(&w.valid);
    finish(out, start);
}

pub fn encode_record(r: &Record, out: &mut Vec<u8>) {
    match r {
        Record::Entry(e) => encode_entry(e, out),
        Record::Status(s) => encode_status(s, out),
        Record::Window(w) => encode_window(w, out),
    }
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer ends inside the record.
    Torn,
    Corrupt(String),
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    /// `b` is only the start of the payload: running out of it is `Torn` (read more), not
    /// corruption.
    prefix: bool,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.b.len() - self.pos < n {
            if self.prefix {
                return Err(DecodeError::Torn);
            }
            return Err(DecodeError::Corrupt("payload too short".into()));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    /// A LEB128 varint of at most 10 bytes.
    fn var(&mut self) -> Result<u64, DecodeError> {
        let rest = &self.b[self.pos..];
        match u64::decode_var(rest) {
            Some((x, used)) => {
                self.pos += used;
                Ok(x)
            }
            None if self.prefix && rest.len() < 10 && rest.iter().all(|b| b & 0x80 != 0) => {
                Err(DecodeError::Torn)
            }
            None => Err(DecodeError::Corrupt("bad varint".into())),
        }
    }
    fn var_u32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.var()?).map_err(|_| DecodeError::Corrupt("field out of range".into()))
    }
}

/// The head of an entry record of format version 4 (kind 4): everything but the old data,
/// its checksum verified, with the checksum of each chunk's old data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHead {
    /// The entry without its old data (`data` is empty).
    pub entry: Entry,
    /// crc32c of each chunk's old data (0 for an unallocated chunk), in chunk order.
    pub crcs: Vec<u32>,
    /// Offset of the old data from the start of the framed record (the head's length).
    pub data_off: usize,
    /// Bytes of old data.
    pub data_len: usize,
}

impl EntryHead {
    /// Where chunk `k`'s old data lies within the old data (add `data_off` for the record):
    /// `None` if it was unallocated; an error if the record does not hold it with blocks of
    /// `block_size` bytes (as `Entry::chunk_data`).
    pub fn chunk_range(
        &self,
        k: u32,
        block_size: usize,
    ) -> Result<Option<std::ops::Range<usize>>, String> {
        let e = &self.entry;
        if k >= e.chunks() {
            return Err(format!(
                "chunk {k} outside an entry of {} chunks",
                e.chunks()
            ));
        }
        if e.is_unallocated(k) {
            return Ok(None);
        }
        let before = (0..k).filter(|i| !e.is_unallocated(*i)).count();
        let from = before * e.chunk_blocks as usize * block_size;
        let to = from + e.blocks_of(k) as usize * block_size;
        if to > self.data_len {
            return Err("entry holds less old data than its chunks need".into());
        }
        Ok(Some(from..to))
    }

    /// `data` (chunk `k`'s old data) matches the chunk's checksum.
    pub fn check_chunk(&self, k: u32, data: &[u8]) -> bool {
        self.crcs
            .get(k as usize)
            .is_some_and(|c| *c == crc32c::crc32c(data))
    }
}

/// Parse and verify the head of the entry record at the start of `buf`, which may hold only
/// the start of the record: `Torn` if it ends inside the head (read more; the framed record
/// length is in the first 4 bytes). `Ok(None)` for an entry record of format versions 2 and 3
/// (kind 1: one checksum over the whole record, which must be decoded whole with
/// `decode_record`); an error for a record of another kind.
pub fn decode_entry_head(buf: &[u8]) -> Result<Option<EntryHead>, DecodeError> {
    if buf.len() < RECORD_HEADER_LEN {
        return Err(DecodeError::Torn);
    }
    let compact = match buf[4] {
        KIND_COMPACT_ENTRY => true,
        KIND_CHUNKED_ENTRY => false,
        KIND_ENTRY => return Ok(None),
        k => {
            return Err(DecodeError::Corrupt(format!(
                "record of kind {k} where an entry was expected"
            )))
        }
    };
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(DecodeError::Corrupt(format!(
            "record length {len} too large"
        )));
    }
    let total = RECORD_HEADER_LEN + len;
    let mut r = Reader {
        b: &buf[RECORD_HEADER_LEN..total.min(buf.len())],
        pos: 0,
        prefix: buf.len() < total,
    };
    let entry = if compact {
        compact_entry_fields(&mut r, len)?
    } else {
        entry_fields(&mut r, len)?
    };
    let chunks = entry.chunks() as usize;
    if chunks > len / 4 {
        return Err(DecodeError::Corrupt(
            "more chunk checksums than the record holds".into(),
        ));
    }
    let crcs = r
        .take(4 * chunks)?
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    // Kind 5 has no data length: the old data is the rest of the record.
    let dlen = if compact {
        len - r.pos
    } else {
        r.u32()? as usize
    };
    let data_off = RECORD_HEADER_LEN + r.pos;
    let want = u32::from_le_bytes([buf[5], buf[6], buf[7], buf[8]]);
    let got = crc32c::crc32c_append(
        crc32c::crc32c(&buf[0..5]),
        &buf[RECORD_HEADER_LEN..data_off],
    );
    if want != got {
        return Err(DecodeError::Corrupt("record checksum mismatch".into()));
    }
    if data_off + dlen != total {
        return Err(DecodeError::Corrupt(
            "old data length does not match the record length".into(),
        ));
    }
    check_data_fits(&entry, dlen)?;
    Ok(Some(EntryHead {
        entry,
        crcs,
        data_off,
        data_len: dlen,
    }))
}

/// The fields an entry record's payload starts with, in both entry kinds: stamp, port,
/// sequence, range, chunk size, status, flags, invalid ports, unallocated bitmap (the entry
/// has no data yet). `len` is the payload's length, which bounds the counts read.
fn entry_fields(r: &mut Reader<'_>, len: usize) -> Result<Entry, DecodeError> {
    let (ts, port, seq, lba) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
    let (blocks, chunk_blocks) = (r.u32()?, r.u32()?);
    let status =
        Status::from_u8(r.u8()?).ok_or_else(|| DecodeError::Corrupt("bad status".into()))?;
    let flags = r.u8()?;
    let n = r.u32()? as usize;
    if n > len / 8 {
        return Err(DecodeError::Corrupt("bad port list length".into()));
    }
    let mut invalid_ports = Vec::with_capacity(n);
    for _ in 0..n {
        invalid_ports.push(r.u64()?);
    }
    if chunk_blocks == 0 || blocks == 0 {
        return Err(DecodeError::Corrupt("entry without chunks".into()));
    }
    let chunks = blocks.div_ceil(chunk_blocks) as usize;
    let blen = r.u32()? as usize;
    if blen != chunks.div_ceil(8) {
        return Err(DecodeError::Corrupt("bad unallocated bitmap length".into()));
    }
    let unallocated = r.take(blen)?.to_vec();
    Ok(Entry {
        ts,
        port,
        seq,
        lba,
        blocks,
        chunk_blocks,
        status,
        unallocated,
        merged: flags & FLAG_MERGED != 0,
        invalid_ports,
        data: Vec::new(),
    })
}

/// The head fields of a kind 5 entry record (see the module doc), up to the chunk checksums.
fn compact_entry_fields(r: &mut Reader<'_>, len: usize) -> Result<Entry, DecodeError> {
    let ts = r.u64()?;
    let (port, seq, lba) = (r.var()?, r.var()?, r.var()?);
    let (blocks, chunk_blocks) = (r.var_u32()?, r.var_u32()?);
    let status =
        Status::from_u8(r.u8()?).ok_or_else(|| DecodeError::Corrupt("bad status".into()))?;
    let flags = r.u8()?;
    if flags & !(FLAG_MERGED | FLAG_UNALLOCATED | FLAG_PORTS) != 0 {
        return Err(DecodeError::Corrupt(format!(
            "unknown entry flags {flags:#x}"
        )));
    }
    let mut invalid_ports = Vec::new();
    if flags & FLAG_PORTS != 0 {
        let n = r.var()?;
        if n == 0 || n > len as u64 {
            return Err(DecodeError::Corrupt("bad port list length".into()));
        }
        for _ in 0..n {
            invalid_ports.push(r.var()?);
        }
    }
    if chunk_blocks == 0 || blocks == 0 {
        return Err(DecodeError::Corrupt("entry without chunks".into()));
    }
    let chunks = blocks.div_ceil(chunk_blocks) as usize;
    if chunks > len / 4 {
        return Err(DecodeError::Corrupt(
            "more chunk checksums than the record holds".into(),
        ));
    }
    let blen = chunks.div_ceil(8);
    let unallocated = if flags & FLAG_UNALLOCATED != 0 {
        let b = r.take(blen)?.to_vec();
        if b.iter().all(|x| *x == 0) {
            return Err(DecodeError::Corrupt(
                "unallocated bitmap present but empty".into(),
            ));
        }
        b
    } else {
        vec![0u8; blen]
    };
    Ok(Entry {
        ts,
        port,
        seq,
        lba,
        blocks,
        chunk_blocks,
        status,
        unallocated,
        merged: flags & FLAG_MERGED != 0,
        invalid_ports,
        data: Vec::new(),
    })
}

/// The old data must be whole blocks of the allocated chunks (of some block size).
fn check_data_fits(e: &Entry, dlen: usize) -> Result<(), DecodeError> {
    let alloc_blocks: u64 = (0..e.chunks())
        .filter(|k| !e.is_unallocated(*k))
        .map(|k| u64::from(e.blocks_of(k)))
        .sum();
    let fits = if alloc_blocks == 0 {
        dlen == 0
    } else {
        dlen as u64 % alloc_blocks == 0
    };
    if !fits {
        return Err(DecodeError::Corrupt(
            "old data length does not match the entry's chunks".into(),
        ));
    }
    Ok(())
}

/// Decode one record from the start of `buf`; returns it and its framed length. An entry
/// record of format version 4 has each chunk's old data verified against its checksum.
pub fn decode_record(buf: &[u8]) -> Result<(Record, usize), DecodeError> {
    if buf.len() < RECORD_HEADER_LEN {
        return Err(DecodeError::Torn);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(DecodeError::Corrupt(format!(
            "record length {len} too large"
        )));
    }
    let total = RECORD_HEADER_LEN + len;
    if buf.len() < total {
        return Err(DecodeError::Torn);
    }
    if buf[4] == KIND_CHUNKED_ENTRY || buf[4] == KIND_COMPACT_ENTRY {
        let Some(h) = decode_entry_head(&buf[..total])? else {
            return Err(DecodeError::Corrupt("bad entry record".into()));
        };
        let data = &buf[h.data_off..total];
        let alloc_blocks: u64 = (0..h.entry.chunks())
            .filter(|k| !h.entry.is_unallocated(*k))
            .map(|k| u64::from(h.entry.blocks_of(k)))
            .sum();
        let bs = (data.len() as u64).checked_div(alloc_blocks).unwrap_or(0) as usize;
        for k in 0..h.entry.chunks() {
            let r = h.chunk_range(k, bs).map_err(DecodeError::Corrupt)?;
            if let Some(r) = r {
                if !h.check_chunk(k, &data[r]) {
                    return Err(DecodeError::Corrupt(format!(
                        "checksum mismatch in the old data of chunk {k}"
                    )));
                }
            }
        }
        let mut e = h.entry;
        e.data = data.to_vec();
        return Ok((Record::Entry(e), total));
    }
    let want = u32::from_le_bytes([buf[5], buf[6], buf[7], buf[8]]);
    let got = crc32c::crc32c_append(crc32c::crc32c(&buf[0..5]), &buf[RECORD_HEADER_LEN..total]);
    if want != got {
        return Err(DecodeError::Corrupt("record checksum mismatch".into()));
    }
    let mut r = Reader {
        b: &buf[RECORD_HEADER_LEN..total],
        pos: 0,
        prefix: false,
    };
    let bad_status = || DecodeError::Corrupt("bad status".into());
    let rec = match buf[4] {
        KIND_ENTRY => {
            let mut e = entry_fields(&mut r, len)?;
            let dlen = r.u32()? as usize;
            e.data = r.take(dlen)?.to_vec();
            check_data_fits(&e, dlen)?;
            Record::Entry(e)
        }
        KIND_STATUS => {
            let (ts, port, seq) = (r.u64()?, r.u64()?, r.u64()?);
            let status = Status::from_u8(r.u8()?).ok_or_else(bad_status)?;
            // Version 2 records end here; version 3 ones carry the command's range.
            let (lba, blocks) = if len > r.pos {
                (r.u64()?, r.u64()?)
            } else {
                (0, 0)
            };
            Record::Status(StatusUpdate {
                ts,
                port,
                seq,
                status,
                lba,
                blocks,
            })
        }
        KIND_WINDOW => {
            let (start, end) = (r.u64()?, r.u64()?);
            let n = r.u32()? as usize;
            if n > len / 8 {
                return Err(DecodeError::Corrupt("bad port list length".into()));
            }
            let mut ports = Vec::with_capacity(n);
            for _ in 0..n {
                ports.push(r.u64()?);
            }
            let valid = r.take(n.div_ceil(8))?.to_vec();
            Record::Window(MergedWindow {
                start,
                end,
                ports,
                valid,
            })
        }
        k => return Err(DecodeError::Corrupt(format!("unknown record kind {k}"))),
    };
    if r.pos != len {
        return Err(DecodeError::Corrupt("trailing bytes in record".into()));
    }
    Ok((rec, total))
}

/// Where and why a scan stopped before the end of the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailProblem {
    pub offset: u64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    pub offset: u64,
    pub len: u32,
    pub record: Record,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanResult {
    pub records: Vec<Scanned>,
    /// Offset just past the last good record.
    pub valid_end: u64,
    pub tail: Option<TailProblem>,
}

/// Scan records from `buf`, whose first byte is at file offset `base`. Stops at the first torn
/// or corrupt record; everything before it is returned.
pub fn scan_records(buf: &[u8], base: u64) -> ScanResult {
    let mut pos = 0usize;
    let mut records = Vec::new();
    let mut tail = None;
    while pos < buf.len() {
        match decode_record(&buf[pos..]) {
            Ok((record, n)) => {
                records.push(Scanned {
                    offset: base + pos as u64,
                    len: n as u32,
                    record,
                });
                pos += n;
            }
            Err(e) => {
                tail = Some(TailProblem {
                    offset: base + pos as u64,
                    reason: match e {
                        DecodeError::Torn => "torn record".into(),
                        DecodeError::Corrupt(r) => r,
                    },
                });
                break;
            }
        }
    }
    ScanResult {
        records,
        valid_end: base + pos as u64,
        tail,
    }
}

/// The format version a segment header claims, if it is a segment header at all.
pub fn segment_version(b: &[u8]) -> Option<u16> {
    if b.len() < SEGMENT_HEADER_LEN || b[0..8] != SEGMENT_MAGIC {
        return None;
    }
    Some(u16::from_le_bytes([b[8], b[9]]))
}

/// `UnsupportedFormat` if `b` is the header of a segment of a format version not read.
pub fn check_version(b: &[u8], file: &str) -> Result<(), JournalError> {
    match segment_version(b) {
        Some(version) if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) => {
            Err(JournalError::UnsupportedFormat {
                file: file.to_string(),
                version,
                supported: FORMAT_VERSION,
            })
        }
        _ => Ok(()),
    }
}

/// Scan a whole segment file image (header included).
pub fn scan_segment(buf: &[u8], file: &str) -> Result<(SegmentHeader, ScanResult), JournalError> {
    check_version(buf, file)?;
    let header = SegmentHeader::decode(buf).map_err(|reason| JournalError::Corrupt {
        file: file.to_string(),
        offset: 0,
        reason,
    })?;
    let scan = scan_records(&buf[SEGMENT_HEADER_LEN..], SEGMENT_HEADER_LEN as u64);
    Ok((header, scan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_status() -> impl Strategy<Value = Status> {
        prop_oneof![
            Just(Status::Pending),
            Just(Status::Ok),
            Just(Status::Failed)
        ]
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        // A run of 1..=10 chunks of 1..=8 blocks (the last possibly short), random
        // unallocated chunks, blocks of 1..=16 bytes.
        let shape = (1u32..=8, 1u32..=10, 0u32..8, 1usize..=16, any::<u16>());
        let entry = (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            arb_status(),
            any::<bool>(),
            proptest::collection::vec(any::<u64>(), 0..3),
            shape,
            any::<u8>(),
        )
            .prop_map(|(ts, port, seq, lba, status, m, ip, shape, fill)| {
                let (cb, chunks, short, bs, bits) = shape;
                let blocks = cb * chunks - short.min(cb - 1);
                let mut e = Entry {
                    ts,
                    port,
                    seq,
                    lba,
                    blocks,
                    chunk_blocks: cb,
                    status,
                    unallocated: no_unallocated(chunks),
                    merged: m,
                    invalid_ports: ip,
                    data: Vec::new(),
                };
                for k in 0..chunks {
                    if bits & (1 << k) != 0 {
                        e.set_unallocated(k);
                    }
                }
                let n = e.expected_data_len(bs) as usize;
                e.data = (0..n).map(|i| fill.wrapping_add(i as u8)).collect();
                Record::Entry(e)
            });
        let status = (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            arb_status(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(|(ts, port, seq, status, lba, blocks)| {
                Record::Status(StatusUpdate {
                    ts,
                    port,
                    seq,
                    status,
                    lba,
                    blocks,
                })
            });
        let window = (
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(any::<u64>(), 0..20),
            any::<u32>(),
        )
            .prop_map(|(start, end, ports, bits)| {
                let invalid: Vec<u64> = ports
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| bits & (1 << (k % 32)) != 0)
                    .map(|(_, p)| *p)
                    .collect();
                Record::Window(MergedWindow::new(start, end, ports, &invalid))
            });
        prop_oneof![3 => entry, 1 => status, 1 => window]
    }

    fn segment(records: &[Record]) -> (Vec<u8>, Vec<(usize, usize)>) {
        let h = SegmentHeader {
            kind: SegmentKind::Primary,
            chunk_bytes: 4096,
            id: 7,
        };
        let mut buf = h.encode().to_vec();
        let mut spans = Vec::new();
        for r in records {
            let s = buf.len();
            encode_record(r, &mut buf);
            spans.push((s, buf.len()));
        }
        (buf, spans)
    }

    #[test]
    fn header_round_trip_and_checks() {
        let h = SegmentHeader {
            kind: SegmentKind::Partial,
            chunk_bytes: 8192,
            id: 42,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        let mut bad = b;
        bad[17] ^= 1;
        assert!(SegmentHeader::decode(&bad).is_err());
        assert!(SegmentHeader::decode(&b[..10]).is_err());
    }

    #[test]
    fn multi_chunk_entry_addresses_each_chunk() {
        // 4 chunks of 8 blocks (the last 5 blocks), chunk 1 unallocated, 2-byte blocks.
        let mut e = Entry {
            ts: 1,
            port: 2,
            seq: 3,
            lba: 64,
            blocks: 29,
            chunk_blocks: 8,
            status: Status::Pending,
            unallocated: no_unallocated(4),
            merged: false,
            invalid_ports: vec![],
            data: Vec::new(),
        };
        e.set_unallocated(1);
        assert_eq!((e.chunks(), e.first_chunk()), (4, 8));
        assert_eq!(e.expected_data_len(2), (8 + 8 + 5) * 2);
        e.data = (0..42u8).collect();
        assert_eq!(e.chunk_data(0, 2).unwrap().unwrap(), &e.data[0..16]);
        assert_eq!(e.chunk_data(1, 2).unwrap(), None);
        assert_eq!(e.chunk_data(2, 2).unwrap().unwrap(), &e.data[16..32]);
        assert_eq!(e.chunk_data(3, 2).unwrap().unwrap(), &e.data[32..42]);
        assert!(e.chunk_data(4, 2).is_err());
        assert!(e.chunk_data(3, 4).is_err(), "wrong block size: no panic");
        let mut buf = Vec::new();
        encode_entry(&e, &mut buf);
        assert_eq!(buf.len(), entry_record_len(&e));
        let (r, n) = decode_record(&buf).unwrap();
        assert_eq!((r, n), (Record::Entry(e.clone()), buf.len()));
        // A data length that fits no block size is corruption, not a panic later.
        let mut bad = e.clone();
        bad.data.pop();
        let mut buf = Vec::new();
        encode_entry(&bad, &mut buf);
        assert!(matches!(decode_record(&buf), Err(DecodeError::Corrupt(_))));
    }

    #[test]
    fn old_format_version_is_refused() {
        let mut b = SegmentHeader {
            kind: SegmentKind::Primary,
            chunk_bytes: 4096,
            id: 1,
        }
        .encode();
        b[8..10].copy_from_slice(&1u16.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..24]);
        b[24..28].copy_from_slice(&crc.to_le_bytes());
        let err = SegmentHeader::decode(&b).unwrap_err();
        assert!(err.contains("format version 1"), "{err}");
    }

    /// A version 2 segment (status records without a range) is still read.
    #[test]
    fn version_2_segments_and_status_records_are_read() {
        let mut b = SegmentHeader {
            kind: SegmentKind::Partial,
            chunk_bytes: 4096,
            id: 1,
        }
        .encode()
        .to_vec();
        b[8..10].copy_from_slice(&2u16.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..24]);
        b[24..28].copy_from_slice(&crc.to_le_bytes());
        // A version 2 status record: ts, port, seq, status.
        let start = begin(&mut b, KIND_STATUS);
        for v in [5u64, 6, 7] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.push(2);
        finish(&mut b, start);
        check_version(&b, "t").unwrap();
        let (_, scan) = scan_segment(&b, "t").unwrap();
        assert!(scan.tail.is_none());
        assert_eq!(
            scan.records[0].record,
            Record::Status(StatusUpdate {
                ts: 5,
                port: 6,
                seq: 7,
                status: Status::Failed,
                lba: 0,
                blocks: 0
            })
        );
    }

    #[test]
    fn merged_window_bit_vector() {
        let w = MergedWindow::new(10, 20, vec![9, 3, 700, 3], &[700]);
        assert_eq!(w.ports, vec![3, 9, 700]);
        assert_eq!(w.valid, vec![0b011]);
        assert_eq!(w.invalid_ports(), vec![700]);
        assert!(!w.complete());
        let all: Vec<u64> = (0..20).collect();
        let w = MergedWindow::new(0, 1, all, &[]);
        assert_eq!(w.valid, vec![0xff, 0xff, 0x0f]);
        assert!(w.complete());
    }

    /// A 4-chunk entry of 8-byte blocks (chunk 1 unallocated, the last chunk short).
    fn four_chunks() -> Entry {
        let mut e = Entry {
            ts: 9,
            port: 1,
            seq: 2,
            lba: 32,
            blocks: 14,
            chunk_blocks: 4,
            status: Status::Ok,
            unallocated: no_unallocated(4),
            merged: false,
            invalid_ports: vec![3],
            data: Vec::new(),
        };
        e.set_unallocated(1);
        e.data = (0..e.expected_data_len(8) as u8).collect();
        e
    }

    #[test]
    fn chunked_entry_head_reads_and_verifies_chunks_alone() {
        let e = four_chunks();
        let mut compact = Vec::new();
        encode_entry(&e, &mut compact);
        let mut v4 = Vec::new();
        encode_entry_head_v4(&e, e.status, &mut v4);
        v4.extend_from_slice(&e.data);
        assert!(compact.len() < v4.len());
        for (kind, buf) in [(KIND_COMPACT_ENTRY, compact), (KIND_CHUNKED_ENTRY, v4)] {
            assert_eq!(buf[4], kind);
            assert_eq!(
                decode_record(&buf).unwrap(),
                (Record::Entry(e.clone()), buf.len())
            );
            let h = decode_entry_head(&buf).unwrap().unwrap();
            assert_eq!(h.data_off + h.data_len, buf.len());
            assert_eq!(
                h.entry,
                Entry {
                    data: vec![],
                    ..e.clone()
                }
            );
            for k in 0..4 {
                let got = h
                    .chunk_range(k, 8)
                    .unwrap()
                    .map(|r| &buf[h.data_off + r.start..h.data_off + r.end]);
                assert_eq!(got, e.chunk_data(k, 8).unwrap(), "chunk {k}");
                if let Some(d) = got {
                    assert!(h.check_chunk(k, d));
                }
            }
            assert!(h.chunk_range(4, 8).is_err());
            assert!(
                h.chunk_range(3, 16).is_err(),
                "wrong block size: an error, no panic"
            );
            // The head alone is enough; a prefix cut inside the head is torn, not corrupt.
            assert_eq!(decode_entry_head(&buf[..h.data_off]).unwrap().unwrap(), h);
            for cut in 0..h.data_off {
                assert_eq!(
                    decode_entry_head(&buf[..cut]),
                    Err(DecodeError::Torn),
                    "cut {cut}"
                );
            }
            // A flipped byte of chunk 2's data: chunk 2 fails its check, the others do not, and a
            // whole-record decode (scans, verify) finds it.
            let r2 = h.chunk_range(2, 8).unwrap().unwrap();
            let mut bad = buf.clone();
            bad[h.data_off + r2.start + 3] ^= 0x10;
            let hb = decode_entry_head(&bad).unwrap().unwrap();
            let chunk = |k: u32| {
                let r = hb.chunk_range(k, 8).unwrap().unwrap();
                bad[hb.data_off + r.start..hb.data_off + r.end].to_vec()
            };
            assert!(!hb.check_chunk(2, &chunk(2)));
            assert!(hb.check_chunk(0, &chunk(0)));
            assert!(hb.check_chunk(3, &chunk(3)));
            match decode_record(&bad) {
                Err(DecodeError::Corrupt(r)) => assert!(r.contains("chunk 2"), "{r}"),
                other => panic!("{other:?}"),
            }
            // A flipped byte of the head: the head's checksum.
            let mut bad = buf.clone();
            bad[RECORD_HEADER_LEN + 1] ^= 1;
            assert!(matches!(
                decode_entry_head(&bad),
                Err(DecodeError::Corrupt(_))
            ));
        }
        // Other record kinds: an error; an older entry record: `None` (read it whole).
        let mut st = Vec::new();
        encode_status(
            &StatusUpdate {
                ts: 1,
                port: 1,
                seq: 1,
                status: Status::Ok,
                lba: 0,
                blocks: 1,
            },
            &mut st,
        );
        assert!(matches!(
            decode_entry_head(&st),
            Err(DecodeError::Corrupt(_))
        ));
        let mut old = Vec::new();
        encode_entry_v3(&e, &mut old);
        assert_eq!(decode_entry_head(&old), Ok(None));
        assert_eq!(decode_record(&old).unwrap(), (Record::Entry(e), old.len()));
    }

    /// A version 3 segment (entry records of kind 1, one checksum over each) is still read.
    /// A one-chunk 4 KiB entry, the commonest record, with realistic fields: its kind 5 head
    /// (record header, stamp, varints, status, flags, one chunk checksum) is 32 bytes, against
    /// 68 for kind 4.
    #[test]
    fn a_small_entry_has_a_small_head() {
        let e = Entry {
            ts: 1_795_000_000_000_000_000,
            port: 3,
            seq: 1_500_000,
            lba: 2_000_000,
            blocks: 8,
            chunk_blocks: 8,
            status: Status::Ok,
            unallocated: no_unallocated(1),
            merged: false,
            invalid_ports: vec![],
            data: vec![7; 4096],
        };
        let (mut compact, mut v4) = (Vec::new(), Vec::new());
        encode_entry_head(&e, e.status, &mut compact);
        encode_entry_head_v4(&e, e.status, &mut v4);
        assert_eq!((compact.len(), v4.len()), (32, 68));
        assert_eq!(entry_record_len(&e), 32 + 4096);
    }

    #[test]
    fn version_3_segments_are_read() {
        let h = SegmentHeader {
            kind: SegmentKind::Primary,
            chunk_bytes: 32,
            id: 3,
        };
        let mut b = encode_header_version(&h, 3).to_vec();
        let e = four_chunks();
        encode_entry_v3(&e, &mut b);
        let mut e2 = e.clone();
        e2.ts = 10;
        encode_entry_v3(&e2, &mut b);
        check_version(&b, "t").unwrap();
        let (hd, scan) = scan_segment(&b, "t").unwrap();
        assert_eq!(hd, h);
        assert!(scan.tail.is_none());
        let got: Vec<Record> = scan.records.into_iter().map(|s| s.record).collect();
        assert_eq!(got, vec![Record::Entry(e), Record::Entry(e2)]);
    }

    proptest! {
        /// Any one chunk of a version 4 entry record reads and verifies alone; a flipped bit
        /// of one chunk's data fails that chunk's check only.
        #[test]
        fn chunk_subsets_verify_alone(r in arb_record(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let Record::Entry(e) = r else { return Ok(()) };
            let mut buf = Vec::new();
            encode_entry(&e, &mut buf);
            let h = decode_entry_head(&buf).unwrap().unwrap();
            let alloc: u64 = (0..e.chunks()).filter(|k| !e.is_unallocated(*k)).map(|k| u64::from(e.blocks_of(k))).sum();
            if alloc == 0 {
                prop_assert_eq!(h.data_len, 0);
                return Ok(());
            }
            let bs = h.data_len / alloc as usize;
            for k in 0..e.chunks() {
                let got = h.chunk_range(k, bs).unwrap().map(|r| buf[h.data_off + r.start..h.data_off + r.end].to_vec());
                prop_assert_eq!(got.as_deref(), e.chunk_data(k, bs).unwrap());
                if let Some(d) = got {
                    prop_assert!(h.check_chunk(k, &d));
                }
            }
            let pos = at.index(h.data_len);
            buf[h.data_off + pos] ^= 1 << bit;
            for k in 0..e.chunks() {
                if let Some(r) = h.chunk_range(k, bs).unwrap() {
                    let d = &buf[h.data_off + r.start..h.data_off + r.end];
                    prop_assert_eq!(h.check_chunk(k, d), !r.contains(&pos), "chunk {}", k);
                }
            }
            prop_assert!(matches!(decode_record(&buf), Err(DecodeError::Corrupt(_))));
        }

        /// Entry records of the older kind (versions 2 and 3) decode as they did.
        #[test]
        fn older_entry_records_round_trip(r in arb_record()) {
            let Record::Entry(e) = r else { return Ok(()) };
            let mut buf = Vec::new();
            encode_entry_v3(&e, &mut buf);
            prop_assert_eq!(decode_record(&buf).unwrap(), (Record::Entry(e), buf.len()));
        }

        #[test]
        fn round_trip(records in proptest::collection::vec(arb_record(), 0..12)) {
            let (buf, _) = segment(&records);
            let (h, scan) = scan_segment(&buf, "t").unwrap();
            prop_assert_eq!(h.id, 7);
            prop_assert!(scan.tail.is_none());
            prop_assert_eq!(scan.valid_end as usize, buf.len());
            let got: Vec<Record> = scan.records.into_iter().map(|s| s.record).collect();
            prop_assert_eq!(got, records);
        }

        /// Every prefix of an entry record's head is torn (read more), never corrupt, in
        /// both chunked kinds; the head alone decodes to the entry without its data.
        #[test]
        fn entry_head_prefixes_are_torn(r in arb_record(), v4 in any::<bool>()) {
            let Record::Entry(e) = r else { return Ok(()) };
            let mut buf = Vec::new();
            if v4 {
                encode_entry_head_v4(&e, e.status, &mut buf);
            } else {
                encode_entry_head(&e, e.status, &mut buf);
                prop_assert_eq!(buf.len() + e.data.len(), entry_record_len(&e));
            }
            let data_off = buf.len();
            buf.extend_from_slice(&e.data);
            let h = decode_entry_head(&buf[..data_off]).unwrap().unwrap();
            prop_assert_eq!(h.data_off, data_off);
            prop_assert_eq!(&h.entry, &Entry { data: vec![], ..e.clone() });
            for cut in 0..data_off {
                prop_assert_eq!(decode_entry_head(&buf[..cut]), Err(DecodeError::Torn));
            }
        }

        #[test]
        fn truncation_is_detected(records in proptest::collection::vec(arb_record(), 1..8), cut in any::<prop::sample::Index>()) {
            let (buf, spans) = segment(&records);
            let cut = SEGMENT_HEADER_LEN + cut.index(buf.len() - SEGMENT_HEADER_LEN);
            let (_, scan) = scan_segment(&buf[..cut], "t").unwrap();
            let whole = spans.iter().filter(|(_, e)| *e <= cut).count();
            prop_assert_eq!(scan.records.len(), whole);
            let end = if whole == 0 { SEGMENT_HEADER_LEN } else { spans[whole - 1].1 };
            prop_assert_eq!(scan.valid_end as usize, end);
            prop_assert_eq!(scan.tail.is_some(), end != cut);
            for (s, r) in scan.records.iter().zip(&records) {
                prop_assert_eq!(&s.record, r);
            }
        }

        #[test]
        fn bit_flip_is_detected(records in proptest::collection::vec(arb_record(), 1..8), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let (mut buf, spans) = segment(&records);
            let pos = SEGMENT_HEADER_LEN + at.index(buf.len() - SEGMENT_HEADER_LEN);
            buf[pos] ^= 1 << bit;
            let (_, scan) = scan_segment(&buf, "t").unwrap();
            let hit = spans.iter().position(|(s, e)| *s <= pos && pos < *e).unwrap();
            prop_assert_eq!(scan.records.len(), hit);
            prop_assert_eq!(scan.tail.as_ref().map(|t| t.offset as usize), Some(spans[hit].0));
            for (s, r) in scan.records.iter().zip(&records) {
                prop_assert_eq!(&s.record, r);
            }
        }
    }
}
