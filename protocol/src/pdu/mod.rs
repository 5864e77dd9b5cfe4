//! PDU types, one file per family. Every struct owns its data segment as `Bytes`
//! (a zero-copy slice of the receive buffer).
//!
//! Field names follow RFC 7143 section 11. `itt` = Initiator Task Tag, `ttt` = Target Transfer
//! Tag, sequence numbers are raw `u32` (serial-number arithmetic is the caller's business).

mod async_msg;
mod data;
mod login;
mod logout;
mod nop;
mod r2t;
mod reject;
mod scsi;
mod snack;
mod task_mgmt;
mod text_pdu;

pub use async_msg::AsyncMessage;
pub use data::{DataIn, DataOut};
pub use login::{LoginRequest, LoginResponse};
pub use logout::{LogoutRequest, LogoutResponse};
pub use nop::{NopIn, NopOut};
pub use r2t::R2t;
pub use reject::Reject;
pub use scsi::{ScsiCommand, ScsiResponse, TaskAttr};
pub use snack::Snack;
pub use task_mgmt::{TaskMgmtRequest, TaskMgmtResponse};
pub use text_pdu::{TextRequest, TextResponse};

/// Any iSCSI PDU, initiator or target side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pdu {
    NopOut(NopOut),
    ScsiCommand(ScsiCommand),
    TaskMgmtRequest(TaskMgmtRequest),
    LoginRequest(LoginRequest),
    TextRequest(TextRequest),
    DataOut(DataOut),
    LogoutRequest(LogoutRequest),
    Snack(Snack),
    NopIn(NopIn),
    ScsiResponse(ScsiResponse),
    TaskMgmtResponse(TaskMgmtResponse),
    LoginResponse(LoginResponse),
    TextResponse(TextResponse),
    DataIn(DataIn),
    LogoutResponse(LogoutResponse),
    R2t(R2t),
    AsyncMessage(AsyncMessage),
    Reject(Reject),
}
