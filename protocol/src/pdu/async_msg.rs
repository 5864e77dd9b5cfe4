use bytes::Bytes;

use super::{Encoded, ParseError, RawPdu};
use crate::bhs::{BhsBuilder, FINAL_BIT};
use crate::opcode::Opcode;

/// Asynchronous Message (0x32).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncMessage {
    pub lun: u64,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    /// 0 SCSI async event (sense data), 1 logout request, 2 connection drop, 3 session drop,
    /// 4 negotiation request, 5 task termination, 255 vendor specific.
    pub event: u8,
    pub vcode: u8,
    pub param1: u16,
    pub param2: u16,
    pub param3: u16,
    pub data: Bytes,
}

impl AsyncMessage {
    pub(crate) fn parse(raw: RawPdu) -> Result<Self, ParseError> {
        let h = &raw.bhs;
        Ok(AsyncMessage {
            lun: h.lun,
            stat_sn: h.u32_at(24),
            exp_cmd_sn: h.u32_at(28),
            max_cmd_sn: h.u32_at(32),
            event: h.u8_at(36),
            vcode: h.u8_at(37),
            param1: h.u16_at(38),
            param2: h.u16_at(40),
            param3: h.u16_at(42),
            data: raw.data,
        })
    }

    pub(crate) fn encode_parts(&self) -> Encoded<'_> {
        let mut b = BhsBuilder::new(Opcode::ASYNC_MESSAGE, false, FINAL_BIT);
        b.lun(self.lun)
            .itt(super::RESERVED_TAG)
            .u32_at(24, self.stat_sn)
            .u32_at(28, self.exp_cmd_sn)
            .u32_at(32, self.max_cmd_sn)
            .u8_at(36, self.event)
            .u8_at(37, self.vcode)
            .u16_at(38, self.param1)
            .u16_at(40, self.param2)
            .u16_at(42, self.param3);
        Encoded::with_data(b, &self.data)
    }
}
