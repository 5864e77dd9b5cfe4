//! SCSI logical units (SPC-4 / SBC-3 disk emulation), free of iSCSI and of async.
//!
//! CONTRACT between the iSCSI target layer and this module:
//! - The target builds one [`LogicalUnit`] per LUN and shares it (`Arc`) across sessions.
//! - For each SCSI command, once all Data-Out has been gathered, the target calls
//!   [`LogicalUnit::execute`] on a blocking thread and turns the [`ScsiOutcome`] into Data-In
//!   and a SCSI Response (residuals from `expected_data_len` vs. the lengths reported here).
//! - Task management and nexus loss are reported with the other methods, so unit attentions,
//!   reservations and aborted tasks are kept right.

use std::sync::Arc;

use bytes::Bytes;

/// An I_T nexus: one initiator port talking to one target port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Nexus {
    /// Unique for the process lifetime; used as the journal's port id too.
    pub id: u64,
    /// iSCSI initiator port name: `<initiator iqn>,i,0x<isid hex>`.
    pub initiator_port: String,
    /// iSCSI target port name: `<target iqn>,t,0x<tpgt hex>`.
    pub target_port: String,
    /// Relative target port identifier (the target portal group tag).
    pub relative_port: u16,
}

/// One SCSI command, as the target hands it over.
#[derive(Debug, Clone)]
pub struct ScsiRequest {
    pub nexus: Arc<Nexus>,
    pub cdb: Bytes,
    /// All Data-Out the initiator sent (may be shorter or longer than the CDB asks for).
    pub data_out: Bytes,
    /// The initiator's Expected Data Transfer Length for the read direction (0 for writes).
    pub expected_in_len: u32,
    /// The initiator's Expected Data Transfer Length for the write direction (0 for reads).
    pub expected_out_len: u32,
    /// Task attribute (SIMPLE, ORDERED, HEAD OF QUEUE, ACA).
    pub task_attr: u8,
}

/// What a command produced.
#[derive(Debug, Clone, Default)]
pub struct ScsiOutcome {
    /// SCSI status byte (GOOD 0x00, CHECK CONDITION 0x02, BUSY 0x08, RESERVATION CONFLICT 0x18, ...).
    pub status: u8,
    /// Sense data (fixed or descriptor format), when status is CHECK CONDITION.
    pub sense: Option<Bytes>,
    /// Data for the initiator: the full length the command produced before truncation to the
    /// allocation length; the target truncates to `expected_in_len` and reports residuals.
    pub data_in: Bytes,
    /// How many Data-Out bytes the CDB called for (for write-direction residuals).
    pub data_out_wanted: u32,
}

mod capacity;
mod cdb;
mod inquiry;
mod lu;
mod misc;
mod mode;
mod opcodes;
mod pr;
mod provisioning;
mod reserve;
mod rw;
mod sanitize;
pub mod sense;
mod ua;
mod xcopy;

pub use lu::{LogicalUnit, LuConfig, ResetKind};
pub use misc::{no_such_lun, report_luns};
pub use opcodes::supported_commands;
pub use sense::ScsiError;
pub use xcopy::CopyRegistry;

#[cfg(test)]
mod tests;
