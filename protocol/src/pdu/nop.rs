use bytes::Bytes;

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
