//! The on-disk record format shared by partial and primary journal segments.
//!
//! A segment file starts with a 28-byte header:
//! `magic "RWNDJRNL" | version u16 | kind u8 | 0 u8 | chunk_bytes u32 | segment id u64 | crc32c u32`
//! followed by records `len u32 | kind u8 | crc32c u32 | payload[len]` (little endian). The
//! checksum covers `len`, `kind` and the payload, so a torn or flipped record is detected and a
//! scan stops cleanly before it.

use super::error::JournalError;

pub const SEGMENT_MAGIC: [u8; 8] = *b"RWNDJRNL";
pub const FORMAT_VERSION: u16 = 1;
pub const SEGMENT_HEADER_LEN: usize = 28;
pub const RECORD_HEADER_LEN: usize = 9;
/// Upper bound of one payload; a larger length field is corruption.
pub const MAX_PAYLOAD: usize = 64 << 20;

const KIND_ENTRY: u8 = 1;
const KIND_STATUS: u8 = 2;
const FLAG_UNALLOCATED: u8 = 1;
const FLAG_MERGED: u8 = 2;

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
        if version != FORMAT_VERSION {
            return Err(format!("unsupported segment format version {version}"));
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

/// The three-phase status of a journaled write (journal, update, record the outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Journaled; the new data may or may not have reached the volume.
    Pending,
    /// The new data was accepted.
    Ok,
    /// Updating failed; the old data still equals the volume content.
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

/// One journal entry: the old content of one chunk-aligned range, as it was just before the
/// write stamped `ts` (by `port`, its `seq`-th write) changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub ts: u64,
    pub port: u64,
    pub seq: u64,
    pub lba: u64,
    pub blocks: u32,
    pub status: Status,
    /// The old range was never written (deallocated): no data is kept, it reads as zeros.
    pub unallocated: bool,
    /// Entry produced by merging (it stands for a whole window).
    pub merged: bool,
    /// Ports whose partial journals were not valid during the window of a merged entry.
    pub invalid_ports: Vec<u64>,
    pub data: Vec<u8>,
}

/// A status record: the outcome of the write `(ts, port, seq)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusUpdate {
    pub ts: u64,
    pub port: u64,
    pub seq: u64,
    pub status: Status,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Entry(Entry),
    Status(StatusUpdate),
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
    let start = begin(out, KIND_ENTRY);
    for v in [e.ts, e.port, e.seq, e.lba] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&e.blocks.to_le_bytes());
    out.push(status.to_u8());
    let mut flags = 0;
    if e.unallocated {
        flags |= FLAG_UNALLOCATED;
    }
    if e.merged {
        flags |= FLAG_MERGED;
    }
    out.push(flags);
    out.extend_from_slice(&(e.invalid_ports.len() as u32).to_le_bytes());
    for p in &e.invalid_ports {
        out.extend_from_slice(&p.to_le_bytes());
    }
    out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
    out.extend_from_slice(&e.data);
    finish(out, start);
}

/// Append the framed encoding of a status update to `out`.
pub fn encode_status(s: &StatusUpdate, out: &mut Vec<u8>) {
    let start = begin(out, KIND_STATUS);
    for v in [s.ts, s.port, s.seq] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.push(s.status.to_u8());
    finish(out, start);
}

pub fn encode_record(r: &Record, out: &mut Vec<u8>) {
    match r {
        Record::Entry(e) => encode_entry(e, out),
        Record::Status(s) => encode_status(s, out),
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
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.b.len() - self.pos < n {
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
}

/// Decode one record from the start of `buf`; returns it and its framed length.
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
    let want = u32::from_le_bytes([buf[5], buf[6], buf[7], buf[8]]);
    let got = crc32c::crc32c_append(crc32c::crc32c(&buf[0..5]), &buf[RECORD_HEADER_LEN..total]);
    if want != got {
        return Err(DecodeError::Corrupt("record checksum mismatch".into()));
    }
    let mut r = Reader {
        b: &buf[RECORD_HEADER_LEN..total],
        pos: 0,
    };
    let bad_status = || DecodeError::Corrupt("bad status".into());
    let rec = match buf[4] {
        KIND_ENTRY => {
            let ts = r.u64()?;
            let port = r.u64()?;
            let seq = r.u64()?;
            let lba = r.u64()?;
            let blocks = r.u32()?;
            let status = Status::from_u8(r.u8()?).ok_or_else(bad_status)?;
            let flags = r.u8()?;
            let n = r.u32()? as usize;
            if n > len / 8 {
                return Err(DecodeError::Corrupt("bad port list length".into()));
            }
            let mut invalid_ports = Vec::with_capacity(n);
            for _ in 0..n {
                invalid_ports.push(r.u64()?);
            }
            let dlen = r.u32()? as usize;
            let data = r.take(dlen)?.to_vec();
            Record::Entry(Entry {
                ts,
                port,
                seq,
                lba,
                blocks,
                status,
                unallocated: flags & FLAG_UNALLOCATED != 0,
                merged: flags & FLAG_MERGED != 0,
                invalid_ports,
                data,
            })
        }
        KIND_STATUS => Record::Status(StatusUpdate {
            ts: r.u64()?,
            port: r.u64()?,
            seq: r.u64()?,
            status: Status::from_u8(r.u8()?).ok_or_else(bad_status)?,
        }),
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

/// Scan a whole segment file image (header included).
pub fn scan_segment(buf: &[u8], file: &str) -> Result<(SegmentHeader, ScanResult), JournalError> {
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
        let entry = (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            arb_status(),
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(any::<u64>(), 0..3),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(ts, port, seq, lba, blocks, status, u, m, ip, data)| {
                Record::Entry(Entry {
                    ts,
                    port,
                    seq,
                    lba,
                    blocks,
                    status,
                    unallocated: u,
                    merged: m,
                    invalid_ports: ip,
                    data,
                })
            });
        let status = (any::<u64>(), any::<u64>(), any::<u64>(), arb_status()).prop_map(
            |(ts, port, seq, status)| {
                Record::Status(StatusUpdate {
                    ts,
                    port,
                    seq,
                    status,
                })
            },
        );
        prop_oneof![3 => entry, 1 => status]
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

    proptest! {
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
