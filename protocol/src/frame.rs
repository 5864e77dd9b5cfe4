//! Stage two of parsing: whole-PDU framing over a receive buffer, and encoding.
//!
//! CONTRACT (implemented by the protocol work):
//! - `decode(buf, cfg)` returns `Ok(None)` when `buf` does not yet hold a whole PDU ("need more
//!   bytes" is not an error), `Ok(Some(pdu))` after splitting exactly one PDU off the front of
//!   `buf` (zero-copy: data segments are `Bytes` slices of it), or `Err(DecodeError)`.
//! - The data segment length is checked against `cfg.max_recv_data_segment` from the BHS alone,
//!   before waiting for or allocating the payload.
//! - Header/data digests are verified when enabled in `cfg`.
//! - `encode(pdu, cfg, out)` appends the wire form (BHS, AHS, data, padding, digests) to `out`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::bhs::{pad_len, padded, Bhs, BHS_LEN, DIGEST_LEN, MAX_AHS_LEN, MAX_DATA_SEGMENT_LEN};
use crate::digest;
use crate::pdu::{Encoded, ParseError, Pdu, RawPdu};

/// What was negotiated for this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameConfig {
    pub header_digest: bool,
    pub data_digest: bool,
    /// The most data-segment bytes we accept in one PDU (our MaxRecvDataSegmentLength).
    pub max_recv_data_segment: u32,
}

impl Default for FrameConfig {
    fn default() -> Self {
        // During login the limit is 8192 (RFC 7143 section 13.12).
        FrameConfig {
            header_digest: false,
            data_digest: false,
            max_recv_data_segment: 8192,
        }
    }
}

/// Why a PDU could not be decoded. `header` holds the 48-byte BHS when it was read, so a Reject
/// can quote it. `consumed` says whether the bad PDU was removed from the buffer (the connection
/// may go on) or not (the stream is out of sync: close the connection).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct DecodeError {
    pub kind: DecodeErrorKind,
    pub header: Option<[u8; 48]>,
    pub consumed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    #[error("header digest mismatch")]
    HeaderDigest,
    #[error("data digest mismatch")]
    DataDigest,
    #[error("data segment of {len} bytes exceeds the limit of {max}")]
    DataSegmentTooLong { len: u32, max: u32 },
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    #[error("malformed PDU: {0}")]
    Malformed(&'static str),
}

impl FrameConfig {
    /// Bytes of header digest per PDU under this config.
    #[inline]
    pub fn header_digest_len(&self) -> usize {
        if self.header_digest {
            DIGEST_LEN
        } else {
            0
        }
    }

    /// Bytes of data digest for a PDU with `data_len` data bytes under this config.
    #[inline]
    pub fn data_digest_len(&self, data_len: usize) -> usize {
        if self.data_digest && data_len > 0 {
            DIGEST_LEN
        } else {
            0
        }
    }

    /// Total wire length of a PDU with `ahs_len` AHS bytes and `data_len` data bytes.
    #[inline]
    pub fn frame_len(&self, ahs_len: usize, data_len: usize) -> usize {
        BHS_LEN
            + ahs_len
            + self.header_digest_len()
            + padded(data_len)
            + self.data_digest_len(data_len)
    }
}

impl DecodeError {
    fn new(kind: DecodeErrorKind, header: Option<[u8; 48]>, consumed: bool) -> Self {
        DecodeError {
            kind,
            header,
            consumed,
        }
    }
}

/// Why a PDU could not be encoded (its fields do not fit the wire format).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("data segment of {0} bytes does not fit the 24-bit DataSegmentLength")]
    DataSegmentTooLong(usize),
    #[error("AHS of {0} bytes exceeds the 1020-byte maximum")]
    AhsTooLong(usize),
}

/// Split one whole PDU off the front of `buf`.
///
/// Order of checks: the BHS is parsed as soon as 48 bytes are there and DataSegmentLength is
/// checked against `cfg.max_recv_data_segment` (error, not consumed); the header digest is
/// checked as soon as it is buffered (error, not consumed); once the whole frame is buffered it
/// is split off, then the data digest (error, consumed), the opcode (error, consumed) and the
/// opcode-specific fields (`Malformed`, consumed) are checked.
pub fn decode(buf: &mut BytesMut, cfg: &FrameConfig) -> Result<Option<Pdu>, DecodeError> {
    let bhs = match buf.get(..BHS_LEN).and_then(Bhs::from_bytes) {
        Some(b) => b,
        None => return Ok(None),
    };
    if bhs.data_segment_len > cfg.max_recv_data_segment {
        return Err(DecodeError::new(
            DecodeErrorKind::DataSegmentTooLong {
                len: bhs.data_segment_len,
                max: cfg.max_recv_data_segment,
            },
            Some(bhs.raw),
            false,
        ));
    }
    let ahs_len = bhs.ahs_len();
    let data_len = bhs.data_len();
    let header_end = BHS_LEN + ahs_len;
    let hd_len = cfg.header_digest_len();
    let data_start = header_end + hd_len;
    let dd_len = cfg.data_digest_len(data_len);
    let data_padded_end = data_start + padded(data_len);
    let total = data_padded_end + dd_len;

    // The header digest is checked as soon as it has arrived, so that a corrupt header does
    // not leave us waiting for a payload that will never come.
    if cfg.header_digest {
        let ok = match (buf.get(..header_end), buf.get(header_end..data_start)) {
            (Some(h), Some(d)) => digest::verify(h, d),
            _ => return Ok(None),
        };
        if !ok {
            return Err(DecodeError::new(
                DecodeErrorKind::HeaderDigest,
                Some(bhs.raw),
                false,
            ));
        }
    }

    if buf.len() < total {
        // Bounded: data_len was checked above and the AHS is at most 1020 bytes.
        buf.reserve(total - buf.len());
        return Ok(None);
    }

    let frame = buf.split_to(total).freeze();

    if dd_len > 0 {
        let ok = match (
            frame.get(data_start..data_padded_end),
            frame.get(data_padded_end..total),
        ) {
            (Some(d), Some(w)) => digest::verify(d, w),
            _ => false,
        };
        if !ok {
            return Err(DecodeError::new(
                DecodeErrorKind::DataDigest,
                Some(bhs.raw),
                true,
            ));
        }
    }

    if !Pdu::is_known_opcode(bhs.opcode) {
        return Err(DecodeError::new(
            DecodeErrorKind::UnknownOpcode(bhs.opcode.0),
            Some(bhs.raw),
            true,
        ));
    }

    let raw = RawPdu {
        bhs,
        header: frame.slice(..BHS_LEN),
        ahs: frame.slice(BHS_LEN..header_end),
        data: frame.slice(data_start..data_start + data_len),
    };
    Pdu::parse(raw).map(Some).map_err(|e| {
        let kind = match e {
            ParseError::UnknownOpcode(op) => DecodeErrorKind::UnknownOpcode(op),
            ParseError::Malformed(m) => DecodeErrorKind::Malformed(m),
        };
        DecodeError::new(kind, Some(bhs.raw), true)
    })
}

/// Append the wire form of `pdu` to `out`.
///
/// # Panics
/// If the PDU cannot be represented on the wire (data segment over 16 MiB - 1, or a CDB so long
/// that the AHS exceeds 1020 bytes); use [`try_encode`] to get an error instead. Neither can
/// happen for PDUs that respect the negotiated limits.
pub fn encode(pdu: &Pdu, cfg: &FrameConfig, out: &mut BytesMut) {
    if let Err(e) = try_encode(pdu, cfg, out) {
        panic!("cannot encode {:?} PDU: {e}", pdu.opcode());
    }
}

/// Append the wire form of `pdu` to `out`, or leave `out` untouched and return an error when
/// a length does not fit its wire field.
pub fn try_encode(pdu: &Pdu, cfg: &FrameConfig, out: &mut BytesMut) -> Result<(), EncodeError> {
    let parts = pdu.encode_parts();
    let header = finish_header(&parts)?;
    let data = parts.data;
    out.reserve(cfg.frame_len(parts.ahs.len(), data.len()));
    let start = out.len();
    put_head(&header, &parts.ahs, cfg, out);
    out.put_slice(data);
    let (tail, tail_len) = tail(data, cfg);
    out.put_slice(tail.get(..tail_len).unwrap_or(&[]));
    debug_assert_eq!(
        out.len() - start,
        cfg.frame_len(parts.ahs.len(), data.len())
    );
    Ok(())
}

/// A PDU's wire form in three pieces, so that the data segment can be written straight from
/// its `Bytes` (e.g. `head.chain(data).chain(tail)` with a vectored write) without copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameParts {
    /// BHS, AHS and header digest.
    pub head: Bytes,
    /// The data segment (a clone of the PDU's `Bytes`: no copy).
    pub data: Bytes,
    /// Padding and data digest.
    pub tail: Bytes,
}

impl FrameParts {
    /// Total wire length.
    pub fn len(&self) -> usize {
        self.head.len() + self.data.len() + self.tail.len()
    }

    /// Never true: a PDU has at least its 48-byte header.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The three pieces as one `Buf`.
    pub fn into_buf(self) -> impl Buf {
        self.head.chain(self.data).chain(self.tail)
    }
}

/// Encode `pdu` as [`FrameParts`] (zero-copy for the data segment).
pub fn encode_parts(pdu: &Pdu, cfg: &FrameConfig) -> Result<FrameParts, EncodeError> {
    let parts = pdu.encode_parts();
    let header = finish_header(&parts)?;
    let mut head = BytesMut::with_capacity(BHS_LEN + parts.ahs.len() + cfg.header_digest_len());
    put_head(&header, &parts.ahs, cfg, &mut head);
    let (tail, tail_len) = tail(parts.data, cfg);
    let tail = if tail_len == 0 {
        Bytes::new()
    } else {
        Bytes::copy_from_slice(tail.get(..tail_len).unwrap_or(&[]))
    };
    Ok(FrameParts {
        head: head.freeze(),
        data: pdu.data_bytes(),
        tail,
    })
}

/// Validate the lengths and fill them into the header.
fn finish_header(parts: &Encoded<'_>) -> Result<[u8; BHS_LEN], EncodeError> {
    let data_len = u32::try_from(parts.data.len())
        .ok()
        .filter(|n| *n <= MAX_DATA_SEGMENT_LEN)
        .ok_or(EncodeError::DataSegmentTooLong(parts.data.len()))?;
    let ahs_len = parts.ahs.len();
    if ahs_len > MAX_AHS_LEN || ahs_len % 4 != 0 {
        return Err(EncodeError::AhsTooLong(ahs_len));
    }
    let ahs_words = u8::try_from(ahs_len / 4).map_err(|_| EncodeError::AhsTooLong(ahs_len))?;
    let mut b = parts.bhs;
    b.total_ahs_len(ahs_words).data_segment_len(data_len);
    Ok(b.build())
}

/// BHS, AHS, header digest.
fn put_head(header: &[u8; BHS_LEN], ahs: &[u8], cfg: &FrameConfig, out: &mut BytesMut) {
    out.put_slice(header);
    out.put_slice(ahs);
    if cfg.header_digest {
        let crc = digest::crc32c_append(digest::crc32c(header), ahs);
        out.put_slice(&crc.to_le_bytes());
    }
}

/// Padding and data digest following `data` (up to 7 bytes, the used length returned).
fn tail(data: &[u8], cfg: &FrameConfig) -> ([u8; 7], usize) {
    let mut t = [0u8; 7];
    let pad = pad_len(data.len());
    if cfg.data_digest && !data.is_empty() {
        let zeros = [0u8; 3];
        let crc = digest::crc32c_append(digest::crc32c(data), zeros.get(..pad).unwrap_or(&[]));
        if let Some(d) = t.get_mut(pad..pad + DIGEST_LEN) {
            d.copy_from_slice(&crc.to_le_bytes());
        }
        (t, pad + DIGEST_LEN)
    } else {
        (t, pad)
    }
}

/// Encode `pdu` into a fresh buffer.
pub fn encode_to_bytes(pdu: &Pdu, cfg: &FrameConfig) -> BytesMut {
    let mut out = BytesMut::new();
    encode(pdu, cfg, &mut out);
    out
}
