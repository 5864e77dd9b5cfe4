use bytes::{BufMut, Bytes, BytesMut};

use super::{bit, Encoded, ParseError, RawPdu};
use crate::bhs::{padded, BhsBuilder, FINAL_BIT};
use crate::opcode::Opcode;

/// Task attribute of a SCSI Command (ATTR field, 3 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskAttr(pub u8);
impl TaskAttr {
    pub const UNTAGGED: TaskAttr = TaskAttr(0);
    pub const SIMPLE: TaskAttr = TaskAttr(1);
    pub const ORDERED: TaskAttr = TaskAttr(2);
    pub const HEAD_OF_QUEUE: TaskAttr = TaskAttr(3);
    pub const ACA: TaskAttr = TaskAttr(4);
}

/// SCSI Command (0x01).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiCommand {
    pub immediate: bool,
    pub final_: bool,
    pub read: bool,
    pub write: bool,
    pub attr: TaskAttr,
    pub lun: u64,
    pub itt: u32,
    pub expected_data_len: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    /// The whole CDB: the 16 bytes of the BHS followed by the Extended CDB AHS (type 1) if any.
    pub cdb: Bytes,
    /// Bidirectional Read Expected Data Transfer Length AHS (type 2), if present.
    pub bidi_read_len: Option<u32>,
    /// Immediate data.
    pub data: Bytes,
}

/// SCSI Response (0x21).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiResponse {
    pub bidi_overflow: bool,
    pub bidi_underflow: bool,
    pub overflow: bool,
    pub underflow: bool,
    /// 0x00 command completed at target, 0x01 target failure.
    pub response: u8,
    pub status: u8,
    pub itt: u32,
    pub snack_tag: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub exp_data_sn: u32,
    pub bidi_residual: u32,
    pub residual: u32,
    /// Data segment: SenseLength (2 bytes, big-endian) + sense data, or empty.
    pub data: Bytes,
}

const R_BIT: u8 = 0x40;
const W_BIT: u8 = 0x20;
const ATTR_MASK: u8 = 0x07;

/// AHS type of the Extended CDB AHS.
pub const AHS_EXTENDED_CDB: u8 = 1;
/// AHS type of the Bidirectional Read Expected Data Transfer Length AHS.
pub const AHS_BIDI_READ_LEN: u8 = 2;
/// Bytes of CDB carried in the BHS.
pub const BHS_CDB_LEN: usize = 16;

impl ScsiCommand {
    pub(crate) fn parse(raw: RawPdu) -> Result<Self, ParseError> {
        let h = &raw.bhs;
        let mut ext_cdb: Option<&[u8]> = None;
        let mut bidi_read_len = None;
        // Walk the AHS area: each AHS is AHSLength (2), AHSType (1), AHSLength bytes of
        // type-specific content, padded to a multiple of 4.
        let mut rest: &[u8] = &raw.ahs;
        while !rest.is_empty() {
            let (len, ty) = match rest {
                [l0, l1, ty, ..] => (usize::from(u16::from_be_bytes([*l0, *l1])), *ty),
                _ => return Err(ParseError::Malformed("truncated AHS")),
            };
            let total = padded(3 + len);
            let content = rest
                .get(3..3 + len)
                .ok_or(ParseError::Malformed("AHS longer than TotalAHSLength"))?;
            match ty {
                AHS_EXTENDED_CDB => {
                    // One reserved byte, then the CDB bytes beyond the first 16.
                    let cdb = content
                        .get(1..)
                        .filter(|c| !c.is_empty())
                        .ok_or(ParseError::Malformed("empty extended CDB AHS"))?;
                    if ext_cdb.replace(cdb).is_some() {
                        return Err(ParseError::Malformed("duplicate extended CDB AHS"));
                    }
                }
                AHS_BIDI_READ_LEN => match content {
                    [_, a, b, c, d] => {
                        if bidi_read_len
                            .replace(u32::from_be_bytes([*a, *b, *c, *d]))
                            .is_some()
                        {
                            return Err(ParseError::Malformed("duplicate bidi read length AHS"));
                        }
                    }
                    _ => return Err(ParseError::Malformed("bad bidi read length AHS")),
                },
                _ => {} // reserved / unknown AHS types are ignored
            }
            rest = rest.get(total..).unwrap_or(&[]);
        }
        let cdb = match ext_cdb {
            None => raw.header.slice(32..48),
            Some(ext) => {
                let mut c = BytesMut::with_capacity(BHS_CDB_LEN + ext.len());
                c.put_slice(&h.raw[32..48]);
                c.put_slice(ext);
                c.freeze()
            }
        };
        Ok(ScsiCommand {
            immediate: h.immediate,
            final_: h.final_bit(),
            read: h.flags & R_BIT != 0,
            write: h.flags & W_BIT != 0,
            attr: TaskAttr(h.flags & ATTR_MASK),
            lun: h.lun,
            itt: h.itt,
            expected_data_len: h.u32_at(20),
            cmd_sn: h.u32_at(24),
            exp_stat_sn: h.u32_at(28),
            cdb,
            bidi_read_len,
            data: raw.data,
        })
    }

    pub(crate) fn encode_parts(&self) -> Encoded<'_> {
        let flags = bit(self.final_, FINAL_BIT)
            | bit(self.read, R_BIT)
            | bit(self.write, W_BIT)
            | (self.attr.0 & ATTR_MASK);
        let mut b = BhsBuilder::new(Opcode::SCSI_COMMAND, self.immediate, flags);
        b.lun(self.lun)
            .itt(self.itt)
            .u32_at(20, self.expected_data_len)
            .u32_at(24, self.cmd_sn)
            .u32_at(28, self.exp_stat_sn);
        let (first, ext) = self.cdb.split_at(self.cdb.len().min(BHS_CDB_LEN));
        b.bytes_at(32, first);
        let mut ahs = Vec::new();
        if !ext.is_empty() {
            // AHSLength counts the reserved byte and the CDB bytes; the framer rejects an
            // AHS area over 1020 bytes, so a value that does not fit is caught there.
            let len = u16::try_from(ext.len() + 1).unwrap_or(u16::MAX);
            ahs.reserve(padded(4 + ext.len()) + 8);
            ahs.extend_from_slice(&len.to_be_bytes());
            ahs.push(AHS_EXTENDED_CDB);
            ahs.push(0);
            ahs.extend_from_slice(ext);
            ahs.resize(padded(ahs.len()), 0);
        }
        if let Some(n) = self.bidi_read_len {
            ahs.extend_from_slice(&[0, 5, AHS_BIDI_READ_LEN, 0]);
            ahs.extend_from_slice(&n.to_be_bytes());
        }
        Encoded {
            bhs: b,
            ahs,
            data: &self.data,
        }
    }

    /// The SCSI operation code (first CDB byte), 0 if the CDB is empty.
    pub fn op_code(&self) -> u8 {
        self.cdb.first().copied().unwrap_or(0)
    }
}

const BIDI_O_BIT: u8 = 0x10;
const BIDI_U_BIT: u8 = 0x08;
const O_BIT: u8 = 0x04;
const U_BIT: u8 = 0x02;

impl ScsiResponse {
    pub(crate) fn parse(raw: RawPdu) -> Result<Self, ParseError> {
        let h = &raw.bhs;
        let f = h.flags;
        Ok(ScsiResponse {
            bidi_overflow: f & BIDI_O_BIT != 0,
            bidi_underflow: f & BIDI_U_BIT != 0,
            overflow: f & O_BIT != 0,
            underflow: f & U_BIT != 0,
            response: h.u8_at(2),
            status: h.u8_at(3),
            itt: h.itt,
            snack_tag: h.u32_at(20),
            stat_sn: h.u32_at(24),
            exp_cmd_sn: h.u32_at(28),
            max_cmd_sn: h.u32_at(32),
            exp_data_sn: h.u32_at(36),
            bidi_residual: h.u32_at(40),
            residual: h.u32_at(44),
            data: raw.data,
        })
    }

    pub(crate) fn encode_parts(&self) -> Encoded<'_> {
        let flags = FINAL_BIT
            | bit(self.bidi_overflow, BIDI_O_BIT)
            | bit(self.bidi_underflow, BIDI_U_BIT)
            | bit(self.overflow, O_BIT)
            | bit(self.underflow, U_BIT);
        let mut b = BhsBuilder::new(Opcode::SCSI_RESPONSE, false, flags);
        b.u8_at(2, self.response)
            .u8_at(3, self.status)
            .itt(self.itt)
            .u32_at(20, self.snack_tag)
            .u32_at(24, self.stat_sn)
            .u32_at(28, self.exp_cmd_sn)
            .u32_at(32, self.max_cmd_sn)
            .u32_at(36, self.exp_data_sn)
            .u32_at(40, self.bidi_residual)
            .u32_at(44, self.residual);
        Encoded::with_data(b, &self.data)
    }

    /// The sense data carried in the data segment (after the 2-byte SenseLength), if any.
    /// Returns `None` when the segment is empty or shorter than SenseLength claims.
    pub fn sense(&self) -> Option<&[u8]> {
        match self.data.get(..2) {
            Some(&[a, b]) => {
                let n = usize::from(u16::from_be_bytes([a, b]));
                self.data.get(2..2 + n)
            }
            _ => None,
        }
    }

    /// Build a data segment carrying `sense` (SenseLength + sense bytes).
    pub fn sense_segment(sense: &[u8]) -> Bytes {
        let n = u16::try_from(sense.len()).unwrap_or(u16::MAX);
        let sense = sense.get(..usize::from(n)).unwrap_or(sense);
        let mut b = BytesMut::with_capacity(2 + sense.len());
        b.put_u16(n);
        b.put_slice(sense);
        b.freeze()
    }
}
