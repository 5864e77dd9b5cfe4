use super::{Encoded, ParseError, RawPdu};
use crate::bhs::{BhsBuilder, FINAL_BIT};
use crate::opcode::Opcode;

/// Logout Request (0x06).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    pub immediate: bool,
    /// 0 close the session, 1 close the connection, 2 remove the connection for recovery.
    pub reason: u8,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// Logout Response (0x26).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutResponse {
    /// 0 closed successfully, 1 CID not found, 2 recovery not supported, 3 cleanup failed.
    pub response: u8,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub time2wait: u16,
    pub time2retain: u16,
}

impl LogoutRequest {
    pub(crate) fn parse(raw: RawPdu) -> Result<Self, ParseError> {
        let h = &raw.bhs;
        Ok(LogoutRequest {
            immediate: h.immediate,
            reason: h.flags & 0x7f,
            itt: h.itt,
            cid: h.u16_at(20),
            cmd_sn: h.u32_at(24),
            exp_stat_sn: h.u32_at(28),
        })
    }

    pub(crate) fn encode_parts(&self) -> Encoded<'_> {
        let flags = FINAL_BIT | (self.reason & 0x7f);
        let mut b = BhsBuilder::new(Opcode::LOGOUT_REQUEST, self.immediate, flags);
        b.itt(self.itt)
            .u16_at(20, self.cid)
            .u32_at(24, self.cmd_sn)
            .u32_at(28, self.exp_stat_sn);
        Encoded::header_only(b)
    }
}

impl LogoutResponse {
    pub(crate) fn parse(raw: RawPdu) -> Result<Self, ParseError> {
        let h = &raw.bhs;
        Ok(LogoutResponse {
            response: h.u8_at(2),
            itt: h.itt,
            stat_sn: h.u32_at(24),
            exp_cmd_sn: h.u32_at(28),
            max_cmd_sn: h.u32_at(32),
            time2wait: h.u16_at(40),
            time2retain: h.u16_at(42),
        })
    }

    pub(crate) fn encode_parts(&self) -> Encoded<'_> {
        let mut b = BhsBuilder::new(Opcode::LOGOUT_RESPONSE, false, FINAL_BIT);
        b.u8_at(2, self.response)
            .itt(self.itt)
            .u32_at(24, self.stat_sn)
            .u32_at(28, self.exp_cmd_sn)
            .u32_at(32, self.max_cmd_sn)
            .u16_at(40, self.time2wait)
            .u16_at(42, self.time2retain);
        Encoded::header_only(b)
    }
}
