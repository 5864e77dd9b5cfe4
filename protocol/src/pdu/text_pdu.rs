use bytes::Bytes;

use super::{bit, Encoded, ParseError, RawPdu};
use crate::bhs::{BhsBuilder, FINAL_BIT};
use crate::opcode::Opcode;

/// Text Request (0x04).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextRequest {
    pub immediate: bool,
    pub final_: bool,
    pub cont: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub data: Bytes,
}

/// Text Response (0x24).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextResponse {
    pub final_: bool,
    pub cont: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub data: Bytes,
}

const C_BIT: u8 = 0x40;

impl TextRequest {
    pub(crate) fn parse(raw: RawPdu) -> Result<Self, ParseError> {
        let h = &raw.bhs;
        Ok(TextRequest {
            immediate: h.immediate,
            final_: h.final_bit(),
            cont: h.flags & C_BIT != 0,
            lun: h.lun,
            itt: h.itt,
            ttt: h.u32_at(20),
            cmd_sn: h.u32_at(24),
            exp_stat_sn: h.u32_at(28),
            data: raw.data,
        })
    }

    pub(crate) fn encode_parts(&self) -> Encoded<'_> {
        let flags = bit(self.final_, FINAL_BIT) | bit(self.cont, C_BIT);
        let mut b = BhsBuilder::new(Opcode::TEXT_REQUEST, self.immediate, flags);
        b.lun(self.lun)
            .itt(self.itt)
            .u32_at(20, self.ttt)
            .u32_at(24, self.cmd_sn)
            .u32_at(28, self.exp_stat_sn);
        Encoded::with_data(b, &self.data)
    }
}

impl TextResponse {
    pub(crate) fn parse(raw: RawPdu) -> Result<Self, ParseError> {
        let h = &raw.bhs;
        Ok(TextResponse {
            final_: h.final_bit(),
            cont: h.flags & C_BIT != 0,
            lun: h.lun,
            itt: h.itt,
            ttt: h.u32_at(20),
            stat_sn: h.u32_at(24),
            exp_cmd_sn: h.u32_at(28),
            max_cmd_sn: h.u32_at(32),
            data: raw.data,
        })
    }

    pub(crate) fn encode_parts(&self) -> Encoded<'_> {
        let flags = bit(self.final_, FINAL_BIT) | bit(self.cont, C_BIT);
        let mut b = BhsBuilder::new(Opcode::TEXT_RESPONSE, false, flags);
        b.lun(self.lun)
            .itt(self.itt)
            .u32_at(20, self.ttt)
            .u32_at(24, self.stat_sn)
            .u32_at(28, self.exp_cmd_sn)
            .u32_at(32, self.max_cmd_sn);
        Encoded::with_data(b, &self.data)
    }
}
