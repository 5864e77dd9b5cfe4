//! PDU types, one file per family. Every struct owns its data segment as `Bytes`
//! (a zero-copy slice of the receive buffer).
//!
//! Field names follow RFC 7143 section 11. `itt` = Initiator Task Tag, `ttt` = Target Transfer
//! Tag, sequence numbers are raw `u32` (serial-number arithmetic is the caller's business).
//!
//! Parsing starts from a [`RawPdu`] (the parsed BHS plus the AHS and data segment, already split
//! off the receive buffer by `frame::decode`); [`Pdu::parse`] dispatches on the opcode to the
//! family's parser. Encoding is the reverse: each family fills a [`BhsBuilder`] (plus the AHS for
//! SCSI Command) and `frame::encode` adds lengths, padding and digests.
//!
//! Encoding normalises a few fields so that what goes on the wire is valid: fields narrower than
//! their Rust type are masked (task attribute, CSG/NSG, TMF function, logout reason, SNACK type),
//! a Login Request always carries the I bit, a Data-In carrying status always has F set and its
//! StatSN is only written when it carries status, a CDB shorter than 16 bytes is zero-padded.

use bytes::Bytes;

use crate::bhs::{Bhs, BhsBuilder};
use crate::opcode::Opcode;

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
pub use scsi::{
    ScsiCommand, ScsiResponse, TaskAttr, AHS_BIDI_READ_LEN, AHS_EXTENDED_CDB, BHS_CDB_LEN,
};
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

/// One PDU split off the wire, before opcode-specific parsing. The `Bytes` are zero-copy slices
/// of the received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPdu {
    pub bhs: Bhs,
    /// The 48 header bytes (the same as `bhs.raw`, as a shareable slice).
    pub header: Bytes,
    /// The Additional Header Segments (`bhs.total_ahs_len * 4` bytes).
    pub ahs: Bytes,
    /// The data segment without padding or digest.
    pub data: Bytes,
}

impl RawPdu {
    /// A `RawPdu` without AHS, for building PDUs by hand (tests, tools).
    pub fn new(bhs: Bhs, data: Bytes) -> RawPdu {
        RawPdu {
            header: Bytes::copy_from_slice(&bhs.raw),
            bhs,
            ahs: Bytes::new(),
            data,
        }
    }
}

/// Why opcode-specific parsing failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    #[error("malformed PDU: {0}")]
    Malformed(&'static str),
}

/// The parts of an outgoing PDU: header (lengths filled in by the framer), AHS, data segment.
pub(crate) struct Encoded<'a> {
    pub bhs: BhsBuilder,
    /// Whole AHS area, already padded to 4-byte words; empty for almost every PDU.
    pub ahs: Vec<u8>,
    pub data: &'a [u8],
}

impl<'a> Encoded<'a> {
    pub(crate) fn header_only(bhs: BhsBuilder) -> Self {
        Encoded {
            bhs,
            ahs: Vec::new(),
            data: &[],
        }
    }
    pub(crate) fn with_data(bhs: BhsBuilder, data: &'a [u8]) -> Self {
        Encoded {
            bhs,
            ahs: Vec::new(),
            data,
        }
    }
}

/// `mask` if `b`, else 0.
#[inline]
pub(crate) fn bit(b: bool, mask: u8) -> u8 {
    if b {
        mask
    } else {
        0
    }
}

/// The ITT value meaning "no task" (Reject, Async Message, target-initiated NOP-In).
pub const RESERVED_TAG: u32 = 0xffff_ffff;

macro_rules! dispatch {
    ($self:expr, $p:ident => $e:expr) => {
        match $self {
            Pdu::NopOut($p) => $e,
            Pdu::ScsiCommand($p) => $e,
            Pdu::TaskMgmtRequest($p) => $e,
            Pdu::LoginRequest($p) => $e,
            Pdu::TextRequest($p) => $e,
            Pdu::DataOut($p) => $e,
            Pdu::LogoutRequest($p) => $e,
            Pdu::Snack($p) => $e,
            Pdu::NopIn($p) => $e,
            Pdu::ScsiResponse($p) => $e,
            Pdu::TaskMgmtResponse($p) => $e,
            Pdu::LoginResponse($p) => $e,
            Pdu::TextResponse($p) => $e,
            Pdu::DataIn($p) => $e,
            Pdu::LogoutResponse($p) => $e,
            Pdu::R2t($p) => $e,
            Pdu::AsyncMessage($p) => $e,
            Pdu::Reject($p) => $e,
        }
    };
}

impl Pdu {
    /// Parse an opcode-specific PDU from its header, AHS and data segment.
    pub fn parse(raw: RawPdu) -> Result<Pdu, ParseError> {
        Ok(match raw.bhs.opcode {
            Opcode::NOP_OUT => Pdu::NopOut(NopOut::parse(raw)?),
            Opcode::SCSI_COMMAND => Pdu::ScsiCommand(ScsiCommand::parse(raw)?),
            Opcode::TASK_MGMT_REQUEST => Pdu::TaskMgmtRequest(TaskMgmtRequest::parse(raw)?),
            Opcode::LOGIN_REQUEST => Pdu::LoginRequest(LoginRequest::parse(raw)?),
            Opcode::TEXT_REQUEST => Pdu::TextRequest(TextRequest::parse(raw)?),
            Opcode::DATA_OUT => Pdu::DataOut(DataOut::parse(raw)?),
            Opcode::LOGOUT_REQUEST => Pdu::LogoutRequest(LogoutRequest::parse(raw)?),
            Opcode::SNACK => Pdu::Snack(Snack::parse(raw)?),
            Opcode::NOP_IN => Pdu::NopIn(NopIn::parse(raw)?),
            Opcode::SCSI_RESPONSE => Pdu::ScsiResponse(ScsiResponse::parse(raw)?),
            Opcode::TASK_MGMT_RESPONSE => Pdu::TaskMgmtResponse(TaskMgmtResponse::parse(raw)?),
            Opcode::LOGIN_RESPONSE => Pdu::LoginResponse(LoginResponse::parse(raw)?),
            Opcode::TEXT_RESPONSE => Pdu::TextResponse(TextResponse::parse(raw)?),
            Opcode::DATA_IN => Pdu::DataIn(DataIn::parse(raw)?),
            Opcode::LOGOUT_RESPONSE => Pdu::LogoutResponse(LogoutResponse::parse(raw)?),
            Opcode::R2T => Pdu::R2t(R2t::parse(raw)?),
            Opcode::ASYNC_MESSAGE => Pdu::AsyncMessage(AsyncMessage::parse(raw)?),
            Opcode::REJECT => Pdu::Reject(Reject::parse(raw)?),
            Opcode(other) => return Err(ParseError::UnknownOpcode(other)),
        })
    }

    /// Is `op` one this crate can parse?
    pub fn is_known_opcode(op: Opcode) -> bool {
        matches!(op.0, 0x00..=0x06 | 0x10 | 0x20..=0x26 | 0x31 | 0x32 | 0x3f)
    }

    /// The wire opcode of this PDU.
    pub fn opcode(&self) -> Opcode {
        match self {
            Pdu::NopOut(_) => Opcode::NOP_OUT,
            Pdu::ScsiCommand(_) => Opcode::SCSI_COMMAND,
            Pdu::TaskMgmtRequest(_) => Opcode::TASK_MGMT_REQUEST,
            Pdu::LoginRequest(_) => Opcode::LOGIN_REQUEST,
            Pdu::TextRequest(_) => Opcode::TEXT_REQUEST,
            Pdu::DataOut(_) => Opcode::DATA_OUT,
            Pdu::LogoutRequest(_) => Opcode::LOGOUT_REQUEST,
            Pdu::Snack(_) => Opcode::SNACK,
            Pdu::NopIn(_) => Opcode::NOP_IN,
            Pdu::ScsiResponse(_) => Opcode::SCSI_RESPONSE,
            Pdu::TaskMgmtResponse(_) => Opcode::TASK_MGMT_RESPONSE,
            Pdu::LoginResponse(_) => Opcode::LOGIN_RESPONSE,
            Pdu::TextResponse(_) => Opcode::TEXT_RESPONSE,
            Pdu::DataIn(_) => Opcode::DATA_IN,
            Pdu::LogoutResponse(_) => Opcode::LOGOUT_RESPONSE,
            Pdu::R2t(_) => Opcode::R2T,
            Pdu::AsyncMessage(_) => Opcode::ASYNC_MESSAGE,
            Pdu::Reject(_) => Opcode::REJECT,
        }
    }

    /// The Initiator Task Tag (0xffffffff for PDUs that carry none: Reject, Async Message).
    pub fn itt(&self) -> u32 {
        match self {
            Pdu::NopOut(p) => p.itt,
            Pdu::ScsiCommand(p) => p.itt,
            Pdu::TaskMgmtRequest(p) => p.itt,
            Pdu::LoginRequest(p) => p.itt,
            Pdu::TextRequest(p) => p.itt,
            Pdu::DataOut(p) => p.itt,
            Pdu::LogoutRequest(p) => p.itt,
            Pdu::Snack(p) => p.itt,
            Pdu::NopIn(p) => p.itt,
            Pdu::ScsiResponse(p) => p.itt,
            Pdu::TaskMgmtResponse(p) => p.itt,
            Pdu::LoginResponse(p) => p.itt,
            Pdu::TextResponse(p) => p.itt,
            Pdu::DataIn(p) => p.itt,
            Pdu::LogoutResponse(p) => p.itt,
            Pdu::R2t(p) => p.itt,
            Pdu::AsyncMessage(_) | Pdu::Reject(_) => RESERVED_TAG,
        }
    }

    /// The I (immediate delivery) bit as it goes on the wire.
    pub fn immediate(&self) -> bool {
        match self {
            Pdu::NopOut(p) => p.immediate,
            Pdu::ScsiCommand(p) => p.immediate,
            Pdu::TaskMgmtRequest(p) => p.immediate,
            Pdu::LoginRequest(_) => true,
            Pdu::TextRequest(p) => p.immediate,
            Pdu::LogoutRequest(p) => p.immediate,
            _ => false,
        }
    }

    /// The data segment (empty for PDUs that have none).
    pub fn data(&self) -> &[u8] {
        match self {
            Pdu::NopOut(p) => &p.data,
            Pdu::ScsiCommand(p) => &p.data,
            Pdu::LoginRequest(p) => &p.data,
            Pdu::TextRequest(p) => &p.data,
            Pdu::DataOut(p) => &p.data,
            Pdu::NopIn(p) => &p.data,
            Pdu::ScsiResponse(p) => &p.data,
            Pdu::LoginResponse(p) => &p.data,
            Pdu::TextResponse(p) => &p.data,
            Pdu::DataIn(p) => &p.data,
            Pdu::AsyncMessage(p) => &p.data,
            Pdu::Reject(p) => &p.header,
            Pdu::TaskMgmtRequest(_)
            | Pdu::LogoutRequest(_)
            | Pdu::Snack(_)
            | Pdu::TaskMgmtResponse(_)
            | Pdu::LogoutResponse(_)
            | Pdu::R2t(_) => &[],
        }
    }

    /// The data segment as `Bytes` (a cheap reference-counted clone).
    pub fn data_bytes(&self) -> Bytes {
        match self {
            Pdu::NopOut(p) => p.data.clone(),
            Pdu::ScsiCommand(p) => p.data.clone(),
            Pdu::LoginRequest(p) => p.data.clone(),
            Pdu::TextRequest(p) => p.data.clone(),
            Pdu::DataOut(p) => p.data.clone(),
            Pdu::NopIn(p) => p.data.clone(),
            Pdu::ScsiResponse(p) => p.data.clone(),
            Pdu::LoginResponse(p) => p.data.clone(),
            Pdu::TextResponse(p) => p.data.clone(),
            Pdu::DataIn(p) => p.data.clone(),
            Pdu::AsyncMessage(p) => p.data.clone(),
            Pdu::Reject(p) => p.header.clone(),
            Pdu::TaskMgmtRequest(_)
            | Pdu::LogoutRequest(_)
            | Pdu::Snack(_)
            | Pdu::TaskMgmtResponse(_)
            | Pdu::LogoutResponse(_)
            | Pdu::R2t(_) => Bytes::new(),
        }
    }

    /// Header (without lengths), AHS and data of the wire form.
    pub(crate) fn encode_parts(&self) -> Encoded<'_> {
        dispatch!(self, p => p.encode_parts())
    }
}

macro_rules! impl_from {
    ($($v:ident),*) => {$(
        impl From<$v> for Pdu {
            fn from(p: $v) -> Pdu {
                Pdu::$v(p)
            }
        }
    )*};
}
impl_from!(
    NopOut,
    ScsiCommand,
    TaskMgmtRequest,
    LoginRequest,
    TextRequest,
    DataOut,
    LogoutRequest,
    Snack,
    NopIn,
    ScsiResponse,
    TaskMgmtResponse,
    LoginResponse,
    TextResponse,
    DataIn,
    LogoutResponse,
    R2t,
    AsyncMessage,
    Reject
);
