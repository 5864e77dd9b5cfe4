//! # rewind: an iSCSI target with continuous data protection
//!
//! ## Layout
//! - [`target`]: the iSCSI side. A listener accepts TCP connections; each connection reads PDUs
//!   with `rewind_protocol::decode`, runs the login stage machine, and in full feature phase
//!   turns SCSI Command + Data-Out into a [`scsi::ScsiRequest`].
//! - [`scsi`]: logical units (SPC-4/SBC-3): CDB decoding, sense data, reservations, mode pages.
//! - [`storage`]: the [`storage::BlockStore`] trait and its file/block-device backend; the CDP
//!   journal wraps a store here so that every write is journaled with the data it overwrote.
//! - [`config`], [`datadir`], [`daemon`]: configuration, the on-disk layout, `rewind serve`.
//!
//! A PDU flows: socket -> `target::pdu_io` -> `target::connection` -> `target::scsi_task`
//! (CmdSN ordering, Data-Out) -> `scsi::LogicalUnit::execute` (blocking pool) ->
//! `storage::BlockStore` -> backing file.

pub mod admin;
pub mod auth;
pub mod config;
pub mod daemon;
pub mod datadir;
pub mod http;
pub mod journal;
pub mod metrics;
pub mod replication;
pub mod scsi;
pub mod storage;
pub mod target;
pub mod verify;
pub mod volume;
