use super::{Encoded, ParseError, RawPdu};
use crate::bhs::{BhsBuilder, FINAL_BIT};
use crate::opcode::Opcode;

/// SNACK Request (0x10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snack {
    /// Type (low 4 bits of byte 1): 0 Data/R2T, 1 Status, 2 DataACK, 3 R-Data.
    pub kind: u8,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub beg_run: u32,
    pub run_length: u32,
}

impl Snack {
    pub(crate) fn parse(raw: RawPdu) -> Result<Self, ParseError> {
        let h = &raw.bhs;
        Ok(Snack {
            kind: h.flags & 0x0f,
            lun: h.lun,
            itt: h.itt,
            ttt: h.u32_at(20),
            exp_stat_sn: h.u32_at(28),
            beg_run: h.u32_at(40),
            run_length: h.u32_at(44),
        })
    }

    pub(crate) fn encode_parts(&self) -> Encoded<'_> {
        let mut b = BhsBuilder::new(Opcode::SNACK, false, FINAL_BIT | (self.kind & 0x0f));
        b.lun(self.lun)
            .itt(self.itt)
            .u32_at(20, self.ttt)
            .u32_at(28, self.exp_stat_sn)
            .u32_at(40, self.beg_run)
            .u32_at(44, self.run_length);
        Encoded::header_only(b)
    }
}
