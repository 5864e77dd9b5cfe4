use bytes::Bytes;

/// Task attribute of a SCSI Command (ATTR field, 3 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskAttr(pub u8);
impl TaskAttr {
    pub const UNTAGGED: TaskAttr = TaskAttr(0);
    pub const SIMPLE: TaskAttr = TaskAttr(1);
    pub const ORDERED: TaskAttr = TaskAttr(2);
    pub const HEAD_OF_QUEUE: TaskAttr = TaskAttr(3);
    pub const ACA: TaskAttr = TaskAttr(4);
}

/// SCSI Command (0x01).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiCommand {
    pub immediate: bool,
    pub final_: bool,
    pub read: bool,
    pub write: bool,
    pub attr: TaskAttr,
    pub lun: u64,
    pub itt: u32,
    pub expected_data_len: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    /// The whole CDB: the 16 bytes of the BHS followed by the Extended CDB AHS (type 1) if any.
    pub cdb: Bytes,
    /// Bidirectional Read Expected Data Transfer Length AHS (type 2), if present.
    pub bidi_read_len: Option<u32>,
    /// Immediate data.
    pub data: Bytes,
}

/// SCSI Response (0x21).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiResponse {
    pub bidi_overflow: bool,
    pub bidi_underflow: bool,
    pub overflow: bool,
    pub underflow: bool,
    /// 0x00 command completed at target, 0x01 target failure.
    pub response: u8,
    pub status: u8,
    pub itt: u32,
    pub snack_tag: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub exp_data_sn: u32,
    pub bidi_residual: u32,
    pub residual: u32,
    /// Data segment: SenseLength (2 bytes, big-endian) + sense data, or empty.
    pub data: Bytes,
}
