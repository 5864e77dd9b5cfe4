//! The logical unit: shared state and command dispatch.

use std::cell::Cell;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;

use super::mode::ModeState;
use super::opcodes::{self, Access};
use super::pr::PrState;
use super::sense::{self, ScsiError, STATUS_GOOD};
use super::ua::UnitAttentions;
use super::xcopy::{CopyRegistry, CopyState};
use super::{ScsiOutcome, ScsiRequest};
use crate::storage::{BlockStore, IoOrigin};

/// How a logical unit presents itself.
#[derive(Debug, Clone)]
pub struct LuConfig {
    /// Volume name.
    pub name: String,
    pub serial: String,
    /// 64-bit NAA identifier (NAA 5 format; the top nibble is forced to 5).
    pub naa_id: u64,
    pub vendor: String,
    pub product: String,
    pub revision: String,
    pub read_only: bool,
    pub thin: bool,
}

/// Task management resets that reach a logical unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetKind {
    LogicalUnit,
    TargetWarm,
    TargetCold,
}

/// Mutable per-LU state, behind one mutex (commands hold it only briefly, never across I/O).
pub(crate) struct LuState {
    pub ua: UnitAttentions,
    pub mode: ModeState,
    pub pr: PrState,
    /// SPC-2 RESERVE(6)/(10) holder (nexus id).
    pub reserved_by: Option<u64>,
    /// Nexuses that asked to PREVENT MEDIUM REMOVAL.
    pub prevent: HashSet<u64>,
    pub copy: CopyState,
    /// A SANITIZE is running: only INQUIRY, REPORT LUNS and REQUEST SENSE are served.
    pub sanitizing: bool,
    /// The last SANITIZE failed: medium access is refused until a SANITIZE succeeds or
    /// EXIT FAILURE MODE.
    pub sanitize_failed: bool,
}

/// One SCSI disk over a [`BlockStore`].
pub struct LogicalUnit {
    pub(crate) config: LuConfig,
    pub(crate) store: Arc<dyn BlockStore>,
    pub(crate) state: Mutex<LuState>,
    /// Writes take it shared; COMPARE AND WRITE / ORWRITE / XCOPY take it exclusive so their
    /// read-modify-write is atomic with respect to every other write.
    pub(crate) io_lock: RwLock<()>,
    pub(crate) registry: RwLock<Option<Arc<dyn CopyRegistry>>>,
}

/// What a handler sees.
pub(crate) struct Ctx<'a> {
    pub req: &'a ScsiRequest,
    pub cdb: &'a [u8],
    /// Data-Out bytes the CDB asks for; handlers set it as soon as they know.
    pub out_wanted: Cell<u32>,
}

impl Ctx<'_> {
    pub fn nexus_id(&self) -> u64 {
        self.req.nexus.id
    }

    pub fn origin(&self) -> IoOrigin {
        IoOrigin {
            port: self.req.nexus.id,
        }
    }

    /// The parameter list of `len` bytes the CDB announced; may be shorter if the initiator
    /// sent less.
    pub fn params(&self, len: u64) -> &[u8] {
        self.out_wanted.set(u32::try_from(len).unwrap_or(u32::MAX));
        let n = (len.min(self.req.data_out.len() as u64)) as usize;
        &self.req.data_out[..n]
    }
}

/// A successful command.
pub(crate) struct Reply {
    pub data: Vec<u8>,
    pub status: u8,
}

impl Reply {
    pub fn good() -> Self {
        Reply {
            data: Vec::new(),
            status: STATUS_GOOD,
        }
    }

    pub fn data(data: Vec<u8>) -> Self {
        Reply {
            data,
            status: STATUS_GOOD,
        }
    }
}

pub(crate) type CmdResult = Result<Reply, ScsiError>;

impl LogicalUnit {
    pub fn new(config: LuConfig, store: Arc<dyn BlockStore>) -> Self {
        LogicalUnit {
            state: Mutex::new(LuState {
                ua: UnitAttentions::default(),
                mode: ModeState::default(),
                pr: PrState::default(),
                reserved_by: None,
                prevent: HashSet::new(),
                copy: CopyState::default(),
                sanitizing: false,
                sanitize_failed: false,
            }),
            config,
            store,
            io_lock: RwLock::new(()),
            registry: RwLock::new(None),
        }
    }

    pub fn config(&self) -> &LuConfig {
        &self.config
    }

    pub fn read_only(&self) -> bool {
        self.config.read_only || self.store.read_only()
    }

    pub fn block_size(&self) -> u32 {
        self.store.block_size()
    }

    pub fn num_blocks(&self) -> u64 {
        self.store.num_blocks()
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, LuState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether sense data goes out in descriptor format (control page D_SENSE).
    pub(crate) fn descriptor_sense(&self) -> bool {
        self.state().mode.d_sense
    }

    /// Let EXTENDED COPY reach other logical units by their NAA designator.
    pub fn set_copy_registry(&self, registry: Arc<dyn CopyRegistry>) {
        *self.registry.write().unwrap_or_else(|p| p.into_inner()) = Some(registry);
    }

    /// Blocking. Runs one command. Never panics on any CDB/data.
    pub fn execute(&self, req: &ScsiRequest) -> ScsiOutcome {
        let ctx = Ctx {
            req,
            cdb: &req.cdb,
            out_wanted: Cell::new(0),
        };
        let result = self.dispatch(&ctx);
        let mut out = match result {
            Ok(reply) => ScsiOutcome {
                status: reply.status,
                sense: None,
                data_in: Bytes::from(reply.data),
                data_out_wanted: 0,
            },
            Err(e) => self.error_outcome(&e),
        };
        out.data_out_wanted = ctx.out_wanted.get();
        out
    }

    pub(crate) fn error_outcome(&self, e: &ScsiError) -> ScsiOutcome {
        let d = self.descriptor_sense();
        ScsiOutcome {
            status: e.status(),
            sense: e.fields().map(|f| sense::encode(&f, d)),
            data_in: Bytes::new(),
            data_out_wanted: 0,
        }
    }

    fn dispatch(&self, ctx: &Ctx) -> CmdResult {
        let op = opcodes::lookup(ctx.cdb)?;
        if op.thin_only && !self.config.thin {
            return Err(match op.service_action {
                Some(_) => ScsiError::InvalidFieldInCdb {
                    byte: 1,
                    bit: Some(4),
                },
                None => ScsiError::InvalidOpcode,
            });
        }
        let nexus = &ctx.req.nexus;
        {
            let mut st = self.state();
            st.ua.touch(nexus);
            if !op.ua_exempt {
                if let Some((asc, ascq)) = st.ua.pop(nexus.id) {
                    return Err(ScsiError::UnitAttention { asc, ascq });
                }
            }
            if st.sanitizing && !op.ua_exempt {
                return Err(ScsiError::SanitizeInProgress);
            }
            if ctx.cdb.len() < op.cdb_len as usize {
                return Err(ScsiError::invalid_cdb(ctx.cdb.len() as u16));
            }
            self.check_conflict(&st, ctx, op.access, op.spc2_ok)?;
            if st.sanitize_failed
                && matches!(op.access, Access::Read | Access::Write)
                && op.opcode != super::sanitize::OPCODE
            {
                return Err(ScsiError::SanitizeFailed);
            }
        }
        opcodes::check_reserved_bits(op, ctx.cdb)?;
        (op.handler)(self, ctx)
    }

    fn check_conflict(
        &self,
        st: &LuState,
        ctx: &Ctx,
        access: Access,
        spc2_ok: bool,
    ) -> Result<(), ScsiError> {
        let nexus = &ctx.req.nexus;
        if let Some(holder) = st.reserved_by {
            if holder != nexus.id && !spc2_ok {
                return Err(ScsiError::ReservationConflict);
            }
        }
        if access == Access::Reserve {
            return if st.pr.active() {
                Err(ScsiError::ReservationConflict)
            } else {
                Ok(())
            };
        }
        if st.pr.conflicts(nexus, access) {
            return Err(ScsiError::ReservationConflict);
        }
        Ok(())
    }

    /// Grow the medium to `num_blocks` blocks. Every I_T nexus that has talked to this LU
    /// gets the unit attention CAPACITY DATA HAS CHANGED (2A/09) on its next command.
    pub fn grow(&self, num_blocks: u64) -> Result<(), crate::storage::StorageError> {
        if self.config.read_only {
            return Err(crate::storage::StorageError::ReadOnly);
        }
        let before = self.num_blocks();
        self.store.grow(num_blocks)?;
        if num_blocks != before {
            self.state().ua.broadcast(None, 0x2A, 0x09);
        }
        Ok(())
    }

    /// Sense data (fixed format, as iSCSI's SCSI asynchronous event carries) saying the
    /// capacity changed.
    pub fn capacity_changed_sense() -> Bytes {
        match (ScsiError::UnitAttention {
            asc: 0x2A,
            ascq: 0x09,
        })
        .fields()
        {
            Some(f) => sense::encode(&f, false),
            None => Bytes::new(),
        }
    }

    /// LOGICAL UNIT RESET / TARGET WARM/COLD RESET.
    pub fn reset(&self, kind: ResetKind) {
        let mut st = self.state();
        let (asc, ascq) = match kind {
            ResetKind::LogicalUnit => (0x29, 0x03),
            ResetKind::TargetWarm => (0x29, 0x00),
            ResetKind::TargetCold => (0x29, 0x01),
        };
        st.ua.broadcast(None, asc, ascq);
        st.reserved_by = None;
        st.prevent.clear();
        if kind == ResetKind::TargetCold {
            // Power on: mode pages return to their defaults; persistent reservations stay
            // (APTPL is not offered, but nothing here persists across restarts anyway).
            st.mode = ModeState::default();
        }
    }

    /// An I_T nexus went away: drop its per-nexus state.
    pub fn nexus_gone(&self, nexus_id: u64) {
        let mut st = self.state();
        st.ua.forget(nexus_id);
        if st.reserved_by == Some(nexus_id) {
            st.reserved_by = None;
        }
        st.prevent.remove(&nexus_id);
    }

    /// Read-only by configuration or store, or software write protected (control page SWP).
    pub(crate) fn write_protected(&self) -> bool {
        self.read_only() || self.state().mode.swp
    }

    pub(crate) fn check_writable(&self) -> Result<(), ScsiError> {
        if self.write_protected() {
            Err(ScsiError::WriteProtected)
        } else {
            Ok(())
        }
    }

    /// `blocks` blocks at `lba` within the volume.
    pub(crate) fn check_lba(&self, lba: u64, blocks: u64) -> Result<(), ScsiError> {
        match lba.checked_add(blocks) {
            Some(end) if end <= self.num_blocks() => Ok(()),
            _ => Err(ScsiError::LbaOutOfRange),
        }
    }
}
