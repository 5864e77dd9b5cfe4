use bytes::Bytes;

use super::{Encoded, ParseError, RawPdu};
use crate::bhs::{BhsBuilder, FINAL_BIT};
use crate::opcode::Opcode;

/// Reject (0x3f).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// See `opcode::RejectReason`.
    pub reason: u8,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub data_sn_r2t_sn: u32,
    /// The complete header (48 bytes) of the rejected PDU, as the data segment.
    pub header: Bytes,
}

impl Reject {
    pub(crate) fn parse(raw: RawPdu) -> Result<Self, ParseError> {
        let h = &raw.bhs;
        Ok(Reject {
            reason: h.u8_at(2),
            stat_sn: h.u32_at(24),
            exp_cmd_sn: h.u32_at(28),
            max_cmd_sn: h.u32_at(32),
            data_sn_r2t_sn: h.u32_at(36),
            header: raw.data,
        })
    }

    pub(crate) fn encode_parts(&self) -> Encoded<'_> {
        let mut b = BhsBuilder::new(Opcode::REJECT, false, FINAL_BIT);
        b.u8_at(2, self.reason)
            .itt(super::RESERVED_TAG)
            .u32_at(24, self.stat_sn)
            .u32_at(28, self.exp_cmd_sn)
            .u32_at(32, self.max_cmd_sn)
            .u32_at(36, self.data_sn_r2t_sn);
        Encoded::with_data(b, &self.header)
    }

    /// A Reject quoting `header` (the rejected PDU's BHS), sequence numbers to be filled in.
    pub fn new(reason: u8, header: &[u8; 48]) -> Reject {
        Reject {
            reason,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            data_sn_r2t_sn: 0,
            header: Bytes::copy_from_slice(header),
        }
    }
}
