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
