use super::{Encoded, ParseError, RawPdu};
use crate::bhs::{BhsBuilder, FINAL_BIT};
use crate::opcode::Opcode;

/// Ready To Transfer (0x31).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct R2t {
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub r2t_sn: u32,
    pub buffer_offset: u32,
    pub desired_len: u32,
}

impl R2t {
    pub(crate) fn parse(raw: RawPdu) -> Result<Self, ParseError> {
        let h = &raw.bhs;
        Ok(R2t {
            lun: h.lun,
            itt: h.itt,
            ttt: h.u32_at(20),
            stat_sn: h.u32_at(24),
            exp_cmd_sn: h.u32_at(28),
            max_cmd_sn: h.u32_at(32),
            r2t_sn: h.u32_at(36),
            buffer_offset: h.u32_at(40),
            desired_len: h.u32_at(44),
        })
    }

    pub(crate) fn encode_parts(&self) -> Encoded<'_> {
        let mut b = BhsBuilder::new(Opcode::R2T, false, FINAL_BIT);
        b.lun(self.lun)
            .itt(self.itt)
            .u32_at(20, self.ttt)
            .u32_at(24, self.stat_sn)
            .u32_at(28, self.exp_cmd_sn)
            .u32_at(32, self.max_cmd_sn)
            .u32_at(36, self.r2t_sn)
            .u32_at(40, self.buffer_offset)
            .u32_at(44, self.desired_len);
        Encoded::header_only(b)
    }
}
