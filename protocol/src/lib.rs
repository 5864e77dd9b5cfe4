//! # rewind-protocol: the iSCSI (RFC 7143) wire codec
//!
//! A pure library: bytes in, PDUs out, and back. No sockets, no files, no async.
//!
//! ## Layout
//! - [`opcode`]: wire codes as integer newtypes (opcodes, login status, reject reasons, ...).
//! - [`bhs`]: the 48-byte Basic Header Segment, parsed in the first stage of framing.
//! - [`pdu`]: one file per PDU family, each with its parse and encode side by side; [`Pdu`] dispatches.
//! - [`frame`]: stage two: total length (AHS, padding, digests) checked against the negotiated
//!   limit before any payload is taken; `decode` splits one whole PDU off a `BytesMut`.
//! - [`digest`]: CRC32C header and data digests.
//! - [`text`]: `key=value` text segments and continuation across PDUs (the C bit).
//!
//! Data flows: socket bytes -> `frame::decode` -> `bhs::Bhs` -> `Pdu::parse` -> the server;
//! the server builds a `Pdu` -> `frame::encode` -> socket.
#![forbid(unsafe_code)]

pub mod bhs;
pub mod digest;
pub mod frame;
pub mod opcode;
pub mod pdu;
pub mod text;

pub use frame::{
    decode, encode, try_encode, DecodeError, DecodeErrorKind, EncodeError, FrameConfig,
};
pub use opcode::Opcode;
pub use pdu::*;
