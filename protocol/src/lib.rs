//! # rewind-protocol: the iSCSI (RFC 7143) wire codec
//!
//! A pure library: bytes in, PDUs out, and back. No sockets, no files, no async.
//!
//! ## Layout
//! - [`opcode`]: wire codes as integer newtypes (opcodes, login status, reject reasons, ...).
//! - [`bhs`]: the 48-byte Basic Header Segment, parsed in the first stage of framing.
//! - [`pdu`]: one file per PDU family, each with its parse and encode side by side; [`Pdu`] dispatches.
//!   [`RawPdu`] (BHS + AHS + data as zero-copy `Bytes`) is the input of [`Pdu::parse`].
//! - [`frame`]: stage two: total length (AHS, padding, digests) checked against the negotiated
//!   limit before any payload is taken; `decode` splits one whole PDU off a `BytesMut`;
//!   `encode` / `try_encode` write one.
//! - [`digest`]: CRC32C header and data digests (wire byte order and RFC test vectors).
//! - [`text`]: `key=value` text segments and continuation across PDUs (the C bit).
//! - [`lun`]: the 8-byte LUN field to and from a plain LU number.
//!
//! Data flows: socket bytes -> `frame::decode` -> `bhs::Bhs` -> `Pdu::parse` -> the server;
//! the server builds a `Pdu` -> `frame::encode` -> socket.
//!
//! Tests: unit tests beside the code, byte fixtures and property tests under `tests/`, and
//! cargo-fuzz targets (`decode`, `text`, and `cdb` for the SCSI layer) under `fuzz/`, outside
//! the workspace.
#![forbid(unsafe_code)]

pub mod bhs;
pub mod digest;
pub mod frame;
pub mod lun;
pub mod opcode;
pub mod pdu;
pub mod text;

pub use frame::{
    decode, encode, encode_parts, try_encode, DecodeError, DecodeErrorKind, EncodeError,
    FrameConfig, FrameParts,
};
pub use opcode::Opcode;
pub use pdu::*;
