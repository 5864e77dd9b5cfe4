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

use bytes::BytesMut;

use crate::pdu::Pdu;

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

/// Split one whole PDU off the front of `buf`.
pub fn decode(buf: &mut BytesMut, cfg: &FrameConfig) -> Result<Option<Pdu>, DecodeError> {
    let _ = (buf, cfg);
    unimplemented!("protocol work in progress")
}

/// Append the wire form of `pdu` to `out`.
pub fn encode(pdu: &Pdu, cfg: &FrameConfig, out: &mut BytesMut) {
    let _ = (pdu, cfg, out);
    unimplemented!("protocol work in progress")
}
