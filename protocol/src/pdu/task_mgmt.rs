use super::{Encoded, ParseError, RawPdu};
use crate::bhs::{BhsBuilder, FINAL_BIT};
use crate::opcode::Opcode;

/// Task Management Function Request (0x02).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMgmtRequest {
    pub immediate: bool,
    /// Function code (1 ABORT TASK, 2 ABORT TASK SET, 3 CLEAR ACA, 4 CLEAR TASK SET,
    /// 5 LOGICAL UNIT RESET, 6 TARGET WARM RESET, 7 TARGET COLD RESET, 8 TASK REASSIGN);
    /// see `opcode::TmfFunction`.
    pub function: u8,
    pub lun: u64,
    pub itt: u32,
    pub referenced_task_tag: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub ref_cmd_sn: u32,
    pub exp_data_sn: u32,
}

/// Task Management Function Response (0x22).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMgmtResponse {
    /// 0 complete, 1 task does not exist, 2 LUN does not exist, 3 task still allegiant,
    /// 4 reassignment not supported, 5 not supported, 6 authorization failed, 255 rejected.
    pub response: u8,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

impl TaskMgmtRequest {
    pub(crate) fn parse(raw: RawPdu) -> Result<Self, ParseError> {
        let h = &raw.bhs;
        Ok(TaskMgmtRequest {
            immediate: h.immediate,
            function: h.flags & 0x7f,
            lun: h.lun,
            itt: h.itt,
            referenced_task_tag: h.u32_at(20),
            cmd_sn: h.u32_at(24),
            exp_stat_sn: h.u32_at(28),
            ref_cmd_sn: h.u32_at(32),
            exp_data_sn: h.u32_at(36),
        })
    }

    pub(crate) fn encode_parts(&self) -> Encoded<'_> {
        let flags = FINAL_BIT | (self.function & 0x7f);
        let mut b = BhsBuilder::new(Opcode::TASK_MGMT_REQUEST, self.immediate, flags);
        b.lun(self.lun)
            .itt(self.itt)
            .u32_at(20, self.referenced_task_tag)
            .u32_at(24, self.cmd_sn)
            .u32_at(28, self.exp_stat_sn)
            .u32_at(32, self.ref_cmd_sn)
            .u32_at(36, self.exp_data_sn);
        Encoded::header_only(b)
    }
}

impl TaskMgmtResponse {
    pub(crate) fn parse(raw: RawPdu) -> Result<Self, ParseError> {
        let h = &raw.bhs;
        Ok(TaskMgmtResponse {
            response: h.u8_at(2),
            itt: h.itt,
            stat_sn: h.u32_at(24),
            exp_cmd_sn: h.u32_at(28),
            max_cmd_sn: h.u32_at(32),
        })
    }

    pub(crate) fn encode_parts(&self) -> Encoded<'_> {
        let mut b = BhsBuilder::new(Opcode::TASK_MGMT_RESPONSE, false, FINAL_BIT);
        b.u8_at(2, self.response)
            .itt(self.itt)
            .u32_at(24, self.stat_sn)
            .u32_at(28, self.exp_cmd_sn)
            .u32_at(32, self.max_cmd_sn);
        Encoded::header_only(b)
    }
}
