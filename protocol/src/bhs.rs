//! The 48-byte Basic Header Segment: stage one of parsing.
//!
//! Every iSCSI PDU starts with the same 48-byte layout (RFC 7143 section 11.2.1):
//!
//! ```text
//! byte 0      .|I| opcode (6 bits)
//! byte 1      F| opcode-specific flags
//! bytes 2-3   opcode-specific
//! byte 4      TotalAHSLength (in 4-byte words)
//! bytes 5-7   DataSegmentLength (bytes, excluding padding)
//! bytes 8-15  LUN or opcode-specific
//! bytes 16-19 Initiator Task Tag
//! bytes 20-47 opcode-specific
//! ```
//!
//! [`Bhs::parse`] reads the common fields (a nom parser); the opcode-specific fields are read by
//! the PDU parsers through the fixed-offset accessors ([`Bhs::u32_at`] and friends): the raw
//! header is a fixed-size array and the offsets are constants of the layout, never wire data.
//! (The accessors panic on an offset past byte 47, a programming error.) [`BhsBuilder`] is the encoding counterpart.

use nom::bytes::complete::take;
use nom::number::complete::{be_u24, be_u32, be_u64, be_u8};
use nom::IResult;

use crate::opcode::Opcode;

/// Length of the Basic Header Segment.
pub const BHS_LEN: usize = 48;
/// Length of a header or data digest.
pub const DIGEST_LEN: usize = 4;
/// Largest value DataSegmentLength can carry (24 bits).
pub const MAX_DATA_SEGMENT_LEN: u32 = 0x00ff_ffff;
/// Largest AHS area in bytes (TotalAHSLength is one byte counting 4-byte words).
pub const MAX_AHS_LEN: usize = 255 * 4;

/// Immediate-delivery bit in byte 0.
pub const IMMEDIATE_BIT: u8 = 0x40;
/// Mask of the opcode in byte 0.
pub const OPCODE_MASK: u8 = 0x3f;
/// The F (final) bit in byte 1, common to most PDUs.
pub const FINAL_BIT: u8 = 0x80;

/// Padding needed to bring `len` to a multiple of 4.
#[inline]
pub const fn pad_len(len: usize) -> usize {
    (4 - (len & 3)) & 3
}

/// `len` rounded up to a multiple of 4.
#[inline]
pub const fn padded(len: usize) -> usize {
    len + pad_len(len)
}

/// A parsed Basic Header Segment: the common fields plus the raw 48 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bhs {
    /// The I bit (byte 0, 0x40).
    pub immediate: bool,
    /// Low 6 bits of byte 0.
    pub opcode: Opcode,
    /// Byte 1 (F bit and opcode-specific flags).
    pub flags: u8,
    /// TotalAHSLength, in 4-byte words.
    pub total_ahs_len: u8,
    /// DataSegmentLength, in bytes, excluding padding.
    pub data_segment_len: u32,
    /// Bytes 8-15 as a big-endian integer (the LUN for PDUs that carry one).
    pub lun: u64,
    /// Initiator Task Tag (bytes 16-19).
    pub itt: u32,
    /// The whole header as received.
    pub raw: [u8; BHS_LEN],
}

impl Bhs {
    /// Parse the first 48 bytes of `input`. Fails (nom `Incomplete`-free, complete parsers) only
    /// when fewer than 48 bytes are given.
    pub fn parse(input: &[u8]) -> IResult<&[u8], Bhs> {
        let (rest, raw) = take(BHS_LEN)(input)?;
        let (r, b0) = be_u8(raw)?;
        let (r, flags) = be_u8(r)?;
        let (r, _specific) = take(2usize)(r)?;
        let (r, total_ahs_len) = be_u8(r)?;
        let (r, data_segment_len) = be_u24(r)?;
        let (r, lun) = be_u64(r)?;
        let (_r, itt) = be_u32(r)?;
        let mut arr = [0u8; BHS_LEN];
        arr.copy_from_slice(raw);
        Ok((
            rest,
            Bhs {
                immediate: b0 & IMMEDIATE_BIT != 0,
                opcode: Opcode(b0 & OPCODE_MASK),
                flags,
                total_ahs_len,
                data_segment_len,
                lun,
                itt,
                raw: arr,
            },
        ))
    }

    /// Parse a header from exactly-or-more-than 48 bytes, `None` if too short.
    pub fn from_bytes(input: &[u8]) -> Option<Bhs> {
        Bhs::parse(input).ok().map(|(_, b)| b)
    }

    /// The F bit (byte 1, 0x80).
    #[inline]
    pub fn final_bit(&self) -> bool {
        self.flags & FINAL_BIT != 0
    }

    /// Length of the AHS area in bytes.
    #[inline]
    pub fn ahs_len(&self) -> usize {
        usize::from(self.total_ahs_len) * 4
    }

    /// DataSegmentLength as a `usize` (always fits: it is 24 bits).
    #[inline]
    pub fn data_len(&self) -> usize {
        // 24-bit value: lossless on every platform with >= 32-bit usize.
        usize::try_from(self.data_segment_len).unwrap_or(usize::MAX)
    }

    /// Byte at a fixed offset of the header.
    #[inline]
    pub fn u8_at(&self, off: usize) -> u8 {
        self.raw[off]
    }

    /// Big-endian u16 at a fixed offset of the header.
    #[inline]
    pub fn u16_at(&self, off: usize) -> u16 {
        u16::from_be_bytes([self.raw[off], self.raw[off + 1]])
    }

    /// Big-endian u32 at a fixed offset of the header.
    #[inline]
    pub fn u32_at(&self, off: usize) -> u32 {
        u32::from_be_bytes([
            self.raw[off],
            self.raw[off + 1],
            self.raw[off + 2],
            self.raw[off + 3],
        ])
    }

    /// Big-endian u64 at a fixed offset of the header.
    #[inline]
    pub fn u64_at(&self, off: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.raw[off..off + 8]);
        u64::from_be_bytes(b)
    }

    /// Copy of `N` bytes at a fixed offset of the header.
    #[inline]
    pub fn array_at<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut b = [0u8; N];
        b.copy_from_slice(&self.raw[off..off + N]);
        b
    }
}

/// Builds the 48 header bytes of an outgoing PDU. Offsets are fixed by the caller (the PDU
/// encoders), never taken from wire data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BhsBuilder {
    pub raw: [u8; BHS_LEN],
}

impl BhsBuilder {
    /// A zeroed header with `opcode` (and the I bit when `immediate`) in byte 0 and `flags`
    /// in byte 1.
    pub fn new(opcode: Opcode, immediate: bool, flags: u8) -> Self {
        let mut raw = [0u8; BHS_LEN];
        raw[0] = (opcode.0 & OPCODE_MASK) | if immediate { IMMEDIATE_BIT } else { 0 };
        raw[1] = flags;
        BhsBuilder { raw }
    }

    #[inline]
    pub fn u8_at(&mut self, off: usize, v: u8) -> &mut Self {
        self.raw[off] = v;
        self
    }

    #[inline]
    pub fn u16_at(&mut self, off: usize, v: u16) -> &mut Self {
        self.raw[off..off + 2].copy_from_slice(&v.to_be_bytes());
        self
    }

    #[inline]
    pub fn u32_at(&mut self, off: usize, v: u32) -> &mut Self {
        self.raw[off..off + 4].copy_from_slice(&v.to_be_bytes());
        self
    }

    #[inline]
    pub fn u64_at(&mut self, off: usize, v: u64) -> &mut Self {
        self.raw[off..off + 8].copy_from_slice(&v.to_be_bytes());
        self
    }

    #[inline]
    pub fn bytes_at(&mut self, off: usize, v: &[u8]) -> &mut Self {
        self.raw[off..off + v.len()].copy_from_slice(v);
        self
    }

    /// Set the LUN field (bytes 8-15).
    #[inline]
    pub fn lun(&mut self, lun: u64) -> &mut Self {
        self.u64_at(8, lun)
    }

    /// Set the Initiator Task Tag (bytes 16-19).
    #[inline]
    pub fn itt(&mut self, itt: u32) -> &mut Self {
        self.u32_at(16, itt)
    }

    /// Set TotalAHSLength (in 4-byte words).
    #[inline]
    pub fn total_ahs_len(&mut self, words: u8) -> &mut Self {
        self.u8_at(4, words)
    }

    /// Set DataSegmentLength (the low 24 bits of `len`).
    #[inline]
    pub fn data_segment_len(&mut self, len: u32) -> &mut Self {
        let b = len.to_be_bytes();
        self.raw[5..8].copy_from_slice(&b[1..4]);
        self
    }

    pub fn build(&self) -> [u8; BHS_LEN] {
        self.raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_fields() {
        let mut h = [0u8; 48];
        h[0] = 0x43; // immediate login request
        h[1] = 0x87;
        h[4] = 2;
        h[5..8].copy_from_slice(&[0x01, 0x02, 0x03]);
        h[8..16].copy_from_slice(&0x0001_0000_0000_0000u64.to_be_bytes());
        h[16..20].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        let (rest, b) = Bhs::parse(&h).unwrap();
        assert!(rest.is_empty());
        assert!(b.immediate);
        assert_eq!(b.opcode, Opcode::LOGIN_REQUEST);
        assert_eq!(b.flags, 0x87);
        assert!(b.final_bit());
        assert_eq!(b.total_ahs_len, 2);
        assert_eq!(b.ahs_len(), 8);
        assert_eq!(b.data_segment_len, 0x010203);
        assert_eq!(b.lun, 0x0001_0000_0000_0000);
        assert_eq!(b.itt, 0xdead_beef);
        assert_eq!(b.u32_at(16), 0xdead_beef);
        assert_eq!(b.raw, h);
    }

    #[test]
    fn short_input_fails() {
        assert!(Bhs::parse(&[0u8; 47]).is_err());
        assert!(Bhs::from_bytes(&[]).is_none());
    }

    #[test]
    fn builder_round_trips() {
        let mut b = BhsBuilder::new(Opcode::SCSI_COMMAND, true, 0xa1);
        b.lun(7)
            .itt(9)
            .total_ahs_len(3)
            .data_segment_len(0x00ab_cdef)
            .u32_at(20, 512);
        let h = Bhs::from_bytes(&b.build()).unwrap();
        assert!(h.immediate);
        assert_eq!(h.opcode, Opcode::SCSI_COMMAND);
        assert_eq!(h.flags, 0xa1);
        assert_eq!(h.lun, 7);
        assert_eq!(h.itt, 9);
        assert_eq!(h.total_ahs_len, 3);
        assert_eq!(h.data_segment_len, 0x00ab_cdef);
        assert_eq!(h.u32_at(20), 512);
    }

    #[test]
    fn padding() {
        assert_eq!(pad_len(0), 0);
        assert_eq!(pad_len(1), 3);
        assert_eq!(pad_len(4), 0);
        assert_eq!(pad_len(7), 1);
        assert_eq!(padded(5), 8);
    }
}
