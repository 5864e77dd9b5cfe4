use bytes::Bytes;

/// Asynchronous Message (0x32).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncMessage {
    pub lun: u64,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    /// 0 SCSI async event (sense data), 1 logout request, 2 connection drop, 3 session drop,
    /// 4 negotiation request, 5 task termination, 255 vendor specific.
    pub event: u8,
    pub vcode: u8,
    pub param1: u16,
    pub param2: u16,
    pub param3: u16,
    pub data: Bytes,
}
