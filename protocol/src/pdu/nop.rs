use bytes::Bytes;

use super::{Encoded, ParseError, RawPdu};
use crate::bhs::{BhsBuilder, FINAL_BIT};
use crate::opcode::Opcode;

/// NOP-Out (0x00), initiator -> target. A ping, or the answer to a target's NOP-In.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NopOut {
    pub immediate: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub data: Bytes,
}

/// NOP-In (0x20), target -> initiator. Answer to a NOP-Out (itt echoed, ttt 0xffffffff),
/// or a target ping (itt 0xffffffff, ttt != 0xffffffff).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NopIn {
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub data: Bytes,
}

impl NopOut {
    pub(crate) fn parse(raw: RawPdu) -> Result<Self, ParseError> {
        let h = &raw.bhs;
        Ok(NopOut {
            immediate: h.immediate,
            lun: h.lun,
            itt: h.itt,
            ttt: h.u32_at(20),
            cmd_sn: h.u32_at(24),
            exp_stat_sn: h.u32_at(28),
            data: raw.data,
        })
    }

    pub(crate) fn encode_parts(&self) -> Encoded<'_> {
        let mut b = BhsBuilder::new(Opcode::NOP_OUT, self.immediate, FINAL_BIT);
        b.lun(self.lun)
            .itt(self.itt)
            .u32_at(20, self.ttt)
            .u32_at(24, self.cmd_sn)
            .u32_at(28, self.exp_stat_sn);
        Encoded::with_data(b, &self.data)
    }
}

impl NopIn {
    pub(crate) fn parse(raw: RawPdu) -> Result<Self, ParseError> {
        let h = &raw.bhs;
        Ok(NopIn {
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
        let mut b = BhsBuilder::new(Opcode::NOP_IN, false, FINAL_BIT);
        b.lun(self.lun)
            .itt(self.itt)
            .u32_at(20, self.ttt)
            .u32_at(24, self.stat_sn)
            .u32_at(28, self.exp_cmd_sn)
            .u32_at(32, self.max_cmd_sn);
        Encoded::with_data(b, &self.data)
    }

    /// The answer to an initiator's ping: ITT and LUN echoed, TTT reserved, ping data echoed.
    pub fn reply_to(ping: &NopOut, stat_sn: u32, exp_cmd_sn: u32, max_cmd_sn: u32) -> NopIn {
        NopIn {
            lun: ping.lun,
            itt: ping.itt,
            ttt: super::RESERVED_TAG,
            stat_sn,
            exp_cmd_sn,
            max_cmd_sn,
            data: ping.data.clone(),
        }
    }
}
