use bytes::Bytes;

use super::{bit, Encoded, ParseError, RawPdu};
use crate::bhs::BhsBuilder;
use crate::opcode::Opcode;

/// Login Request (0x03). Always immediate on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRequest {
    pub transit: bool,
    pub cont: bool,
    /// Current stage: 0 security negotiation, 1 operational negotiation, 3 full feature phase.
    pub csg: u8,
    pub nsg: u8,
    pub version_max: u8,
    pub version_min: u8,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    /// Text key=value pairs (NUL separated).
    pub data: Bytes,
}

/// Login Response (0x23).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginResponse {
    pub transit: bool,
    pub cont: bool,
    pub csg: u8,
    pub nsg: u8,
    pub version_max: u8,
    pub version_active: u8,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub status_class: u8,
    pub status_detail: u8,
    pub data: Bytes,
}

const T_BIT: u8 = 0x80;
const C_BIT: u8 = 0x40;

fn stage_flags(transit: bool, cont: bool, csg: u8, nsg: u8) -> u8 {
    bit(transit, T_BIT) | bit(cont, C_BIT) | ((csg & 3) << 2) | (nsg & 3)
}

impl LoginRequest {
    pub(crate) fn parse(raw: RawPdu) -> Result<Self, ParseError> {
        let h = &raw.bhs;
        Ok(LoginRequest {
            transit: h.flags & T_BIT != 0,
            cont: h.flags & C_BIT != 0,
            csg: (h.flags >> 2) & 3,
            nsg: h.flags & 3,
            version_max: h.u8_at(2),
            version_min: h.u8_at(3),
            isid: h.array_at(8),
            tsih: h.u16_at(14),
            itt: h.itt,
            cid: h.u16_at(20),
            cmd_sn: h.u32_at(24),
            exp_stat_sn: h.u32_at(28),
            data: raw.data,
        })
    }

    pub(crate) fn encode_parts(&self) -> Encoded<'_> {
        let flags = stage_flags(self.transit, self.cont, self.csg, self.nsg);
        let mut b = BhsBuilder::new(Opcode::LOGIN_REQUEST, true, flags);
        b.u8_at(2, self.version_max)
            .u8_at(3, self.version_min)
            .bytes_at(8, &self.isid)
            .u16_at(14, self.tsih)
            .itt(self.itt)
            .u16_at(20, self.cid)
            .u32_at(24, self.cmd_sn)
            .u32_at(28, self.exp_stat_sn);
        Encoded::with_data(b, &self.data)
    }
}

impl LoginResponse {
    pub(crate) fn parse(raw: RawPdu) -> Result<Self, ParseError> {
        let h = &raw.bhs;
        Ok(LoginResponse {
            transit: h.flags & T_BIT != 0,
            cont: h.flags & C_BIT != 0,
            csg: (h.flags >> 2) & 3,
            nsg: h.flags & 3,
            version_max: h.u8_at(2),
            version_active: h.u8_at(3),
            isid: h.array_at(8),
            tsih: h.u16_at(14),
            itt: h.itt,
            stat_sn: h.u32_at(24),
            exp_cmd_sn: h.u32_at(28),
            max_cmd_sn: h.u32_at(32),
            status_class: h.u8_at(36),
            status_detail: h.u8_at(37),
            data: raw.data,
        })
    }

    pub(crate) fn encode_parts(&self) -> Encoded<'_> {
        let flags = stage_flags(self.transit, self.cont, self.csg, self.nsg);
        let mut b = BhsBuilder::new(Opcode::LOGIN_RESPONSE, false, flags);
        b.u8_at(2, self.version_max)
            .u8_at(3, self.version_active)
            .bytes_at(8, &self.isid)
            .u16_at(14, self.tsih)
            .itt(self.itt)
            .u32_at(24, self.stat_sn)
            .u32_at(28, self.exp_cmd_sn)
            .u32_at(32, self.max_cmd_sn)
            .u8_at(36, self.status_class)
            .u8_at(37, self.status_detail);
        Encoded::with_data(b, &self.data)
    }

    /// Login status as one value (class << 8 | detail).
    pub fn status(&self) -> crate::opcode::LoginStatus {
        crate::opcode::LoginStatus(
            (u16::from(self.status_class) << 8) | u16::from(self.status_detail),
        )
    }

    /// Set status class and detail from a `LoginStatus`.
    pub fn set_status(&mut self, s: crate::opcode::LoginStatus) {
        self.status_class = s.class();
        self.status_detail = s.detail();
    }
}
