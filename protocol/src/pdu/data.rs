use bytes::Bytes;

use super::{bit, Encoded, ParseError, RawPdu};
use crate::bhs::{BhsBuilder, FINAL_BIT};
use crate::opcode::Opcode;

/// SCSI Data-Out (0x05).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataOut {
    pub final_: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub data_sn: u32,
    pub buffer_offset: u32,
    pub data: Bytes,
}

/// SCSI Data-In (0x25).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataIn {
    pub final_: bool,
    pub ack: bool,
    pub overflow: bool,
    pub underflow: bool,
    /// `Some(status)` sets the S bit (status carried in this last Data-In); the F bit must then be set too.
    pub status: Option<u8>,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    /// Only meaningful when `status` is Some; encoded as 0 otherwise is fine (reserved).
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub data_sn: u32,
    pub buffer_offset: u32,
    pub residual: u32,
    pub data: Bytes,
}

const A_BIT: u8 = 0x40;
const O_BIT: u8 = 0x04;
const U_BIT: u8 = 0x02;
const S_BIT: u8 = 0x01;

impl DataOut {
    pub(crate) fn parse(raw: RawPdu) -> Result<Self, ParseError> {
        let h = &raw.bhs;
        Ok(DataOut {
            final_: h.final_bit(),
            lun: h.lun,
            itt: h.itt,
            ttt: h.u32_at(20),
            exp_stat_sn: h.u32_at(28),
            data_sn: h.u32_at(36),
            buffer_offset: h.u32_at(40),
            data: raw.data,
        })
    }

    pub(crate) fn encode_parts(&self) -> Encoded<'_> {
        let mut b = BhsBuilder::new(Opcode::DATA_OUT, false, bit(self.final_, FINAL_BIT));
        b.lun(self.lun)
            .itt(self.itt)
            .u32_at(20, self.ttt)
            .u32_at(28, self.exp_stat_sn)
            .u32_at(36, self.data_sn)
            .u32_at(40, self.buffer_offset);
        Encoded::with_data(b, &self.data)
    }
}

impl DataIn {
    pub(crate) fn parse(raw: RawPdu) -> Result<Self, ParseError> {
        let h = &raw.bhs;
        let f = h.flags;
        Ok(DataIn {
            final_: f & FINAL_BIT != 0,
            ack: f & A_BIT != 0,
            overflow: f & O_BIT != 0,
            underflow: f & U_BIT != 0,
            status: (f & S_BIT != 0).then(|| h.u8_at(3)),
            lun: h.lun,
            itt: h.itt,
            ttt: h.u32_at(20),
            stat_sn: h.u32_at(24),
            exp_cmd_sn: h.u32_at(28),
            max_cmd_sn: h.u32_at(32),
            data_sn: h.u32_at(36),
            buffer_offset: h.u32_at(40),
            residual: h.u32_at(44),
            data: raw.data,
        })
    }

    /// Encoding sets F whenever status is carried, and writes StatSN only then.
    pub(crate) fn encode_parts(&self) -> Encoded<'_> {
        let flags = bit(self.final_ || self.status.is_some(), FINAL_BIT)
            | bit(self.ack, A_BIT)
            | bit(self.overflow, O_BIT)
            | bit(self.underflow, U_BIT)
            | bit(self.status.is_some(), S_BIT);
        let mut b = BhsBuilder::new(Opcode::DATA_IN, false, flags);
        if let Some(status) = self.status {
            b.u8_at(3, status).u32_at(24, self.stat_sn);
        }
        b.lun(self.lun)
            .itt(self.itt)
            .u32_at(20, self.ttt)
            .u32_at(28, self.exp_cmd_sn)
            .u32_at(32, self.max_cmd_sn)
            .u32_at(36, self.data_sn)
            .u32_at(40, self.buffer_offset)
            .u32_at(44, self.residual);
        Encoded::with_data(b, &self.data)
    }
}
