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
