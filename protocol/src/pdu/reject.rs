use bytes::Bytes;

/// Reject (0x3f).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// See `opcode::RejectReason`.
    pub reason: u8,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub data_sn_r2t_sn: u32,
    /// The complete header (48 bytes) of the rejected PDU, as the data segment.
    pub header: Bytes,
}
