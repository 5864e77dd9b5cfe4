//! The command table: dispatch, CDB reserved-bit checks and REPORT SUPPORTED OPERATION CODES
//! all come from [`COMMANDS`], so they cannot disagree.

use super::cdb::{field, put_be, truncate};
use super::lu::{CmdResult, Ctx, LogicalUnit, Reply};
use super::sense::ScsiError;
use super::{capacity, inquiry, misc, mode, pr, provisioning, reserve, rw, sanitize, xcopy};

/// How a command is treated under reservations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Never conflicts with a persistent reservation.
    Always,
    /// Reads the medium (allowed under Write Exclusive).
    Read,
    /// Changes the medium or LU state.
    Write,
    /// RESERVE / RELEASE (6)/(10).
    Reserve,
}

pub(crate) type Handler = fn(&LogicalUnit, &Ctx) -> CmdResult;

pub(crate) struct OpDesc {
    pub opcode: u8,
    pub service_action: Option<u8>,
    pub name: &'static str,
    pub cdb_len: u8,
    /// CDB usage data: bits the device server looks at; any other bit set is an invalid field.
    pub usage: &'static [u8],
    pub handler: Handler,
    pub access: Access,
    /// Allowed while another nexus holds an SPC-2 reservation.
    pub spc2_ok: bool,
    /// Does not report or clear pending unit attentions.
    pub ua_exempt: bool,
    /// Only offered by thin-provisioned logical units.
    pub thin_only: bool,
}

const fn op(
    opcode: u8,
    service_action: Option<u8>,
    name: &'static str,
    usage: &'static [u8],
    handler: Handler,
    access: Access,
) -> OpDesc {
    OpDesc {
        opcode,
        service_action,
        name,
        cdb_len: usage.len() as u8,
        usage,
        handler,
        access,
        spc2_ok: false,
        ua_exempt: false,
        thin_only: false,
    }
}

const fn thin_only(mut d: OpDesc) -> OpDesc {
    d.thin_only = true;
    d
}

const fn exempt(mut d: OpDesc) -> OpDesc {
    d.ua_exempt = true;
    d.spc2_ok = true;
    d
}

const fn spc2_ok(mut d: OpDesc) -> OpDesc {
    d.spc2_ok = true;
    d
}

use Access::*;

const FF: u8 = 0xFF;

pub(crate) static COMMANDS: &[OpDesc] = &[
    op(
        0x00,
        None,
        "TEST UNIT READY",
        &[0x00, 0, 0, 0, 0, 0],
        misc::test_unit_ready,
        Always,
    ),
    exempt(op(
        0x03,
        None,
        "REQUEST SENSE",
        &[0x03, 0x01, 0, 0, FF, 0],
        misc::request_sense,
        Always,
    )),
    op(
        0x08,
        None,
        "READ(6)",
        &[0x08, 0x1F, FF, FF, FF, 0],
        rw::read,
        Read,
    ),
    op(
        0x0A,
        None,
        "WRITE(6)",
        &[0x0A, 0x1F, FF, FF, FF, 0],
        rw::write,
        Write,
    ),
    exempt(op(
        0x12,
        None,
        "INQUIRY",
        &[0x12, 0x01, FF, FF, FF, 0],
        inquiry::inquiry,
        Always,
    )),
    op(
        0x15,
        None,
        "MODE SELECT(6)",
        &[0x15, 0x11, 0, 0, FF, 0],
        mode::mode_select,
        Write,
    ),
    op(
        0x16,
        None,
        "RESERVE(6)",
        &[0x16, 0, 0, 0, 0, 0],
        reserve::reserve,
        Reserve,
    ),
    spc2_ok(op(
        0x17,
        None,
        "RELEASE(6)",
        &[0x17, 0, 0, 0, 0, 0],
        reserve::release,
        Reserve,
    )),
    op(
        0x1A,
        None,
        "MODE SENSE(6)",
        &[0x1A, 0x08, FF, FF, FF, 0],
        mode::mode_sense,
        Read,
    ),
    op(
        0x1B,
        None,
        "START STOP UNIT",
        &[0x1B, 0x01, 0, 0x0F, 0xF7, 0],
        misc::start_stop_unit,
        Write,
    ),
    op(
        0x1E,
        None,
        "PREVENT ALLOW MEDIUM REMOVAL",
        &[0x1E, 0, 0, 0, 0x03, 0],
        misc::prevent_allow,
        Write,
    ),
    op(
        0x25,
        None,
        "READ CAPACITY(10)",
        &[0x25, 0, FF, FF, FF, FF, 0, 0, 0x01, 0],
        capacity::read_capacity10,
        Always,
    ),
    op(
        0x28,
        None,
        "READ(10)",
        &[0x28, 0x1E, FF, FF, FF, FF, 0x1F, FF, FF, 0],
        rw::read,
        Read,
    ),
    op(
        0x2A,
        None,
        "WRITE(10)",
        &[0x2A, 0x1A, FF, FF, FF, FF, 0x1F, FF, FF, 0],
        rw::write,
        Write,
    ),
    op(
        0x2E,
        None,
        "WRITE AND VERIFY(10)",
        &[0x2E, 0x16, FF, FF, FF, FF, 0x1F, FF, FF, 0],
        rw::write,
        Write,
    ),
    op(
        0x2F,
        None,
        "VERIFY(10)",
        &[0x2F, 0x16, FF, FF, FF, FF, 0x1F, FF, FF, 0],
        rw::verify,
        Read,
    ),
    op(
        0x34,
        None,
        "PRE-FETCH(10)",
        &[0x34, 0x02, FF, FF, FF, FF, 0x1F, FF, FF, 0],
        rw::prefetch,
        Read,
    ),
    op(
        0x35,
        None,
        "SYNCHRONIZE CACHE(10)",
        &[0x35, 0x06, FF, FF, FF, FF, 0x1F, FF, FF, 0],
        rw::sync_cache,
        Write,
    ),
    op(
        0x37,
        None,
        "READ DEFECT DATA(10)",
        &[0x37, 0, 0x1F, 0, 0, 0, 0, FF, FF, 0],
        misc::read_defect_data,
        Read,
    ),
    op(
        0x41,
        None,
        "WRITE SAME(10)",
        &[0x41, 0x08, FF, FF, FF, FF, 0x1F, FF, FF, 0],
        provisioning::write_same,
        Write,
    ),
    thin_only(op(
        0x42,
        None,
        "UNMAP",
        &[0x42, 0, 0, 0, 0, 0, 0x1F, FF, FF, 0],
        provisioning::unmap,
        Write,
    )),
    op(
        0x48,
        Some(0x01),
        "SANITIZE / OVERWRITE",
        &[0x48, 0xBF, 0, 0, 0, 0, 0, FF, FF, 0],
        sanitize::sanitize,
        Write,
    ),
    thin_only(op(
        0x48,
        Some(0x02),
        "SANITIZE / BLOCK ERASE",
        &[0x48, 0xBF, 0, 0, 0, 0, 0, FF, FF, 0],
        sanitize::sanitize,
        Write,
    )),
    op(
        0x48,
        Some(0x1F),
        "SANITIZE / EXIT FAILURE MODE",
        &[0x48, 0xBF, 0, 0, 0, 0, 0, FF, FF, 0],
        sanitize::sanitize,
        Write,
    ),
    op(
        0x55,
        None,
        "MODE SELECT(10)",
        &[0x55, 0x11, 0, 0, 0, 0, 0, FF, FF, 0],
        mode::mode_select,
        Write,
    ),
    op(
        0x56,
        None,
        "RESERVE(10)",
        &[0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        reserve::reserve,
        Reserve,
    ),
    spc2_ok(op(
        0x57,
        None,
        "RELEASE(10)",
        &[0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        reserve::release,
        Reserve,
    )),
    op(
        0x5A,
        None,
        "MODE SENSE(10)",
        &[0x5A, 0x18, FF, FF, 0, 0, 0, FF, FF, 0],
        mode::mode_sense,
        Read,
    ),
    op(
        0x5E,
        Some(0x00),
        "PERSISTENT RESERVE IN / READ KEYS",
        &[0x5E, 0x1F, 0, 0, 0, 0, 0, FF, FF, 0],
        pr::pr_in,
        Always,
    ),
    op(
        0x5E,
        Some(0x01),
        "PERSISTENT RESERVE IN / READ RESERVATION",
        &[0x5E, 0x1F, 0, 0, 0, 0, 0, FF, FF, 0],
        pr::pr_in,
        Always,
    ),
    op(
        0x5E,
        Some(0x02),
        "PERSISTENT RESERVE IN / REPORT CAPABILITIES",
        &[0x5E, 0x1F, 0, 0, 0, 0, 0, FF, FF, 0],
        pr::pr_in,
        Always,
    ),
    op(
        0x5E,
        Some(0x03),
        "PERSISTENT RESERVE IN / READ FULL STATUS",
        &[0x5E, 0x1F, 0, 0, 0, 0, 0, FF, FF, 0],
        pr::pr_in,
        Always,
    ),
    op(
        0x5F,
        Some(0x00),
        "PERSISTENT RESERVE OUT / REGISTER",
        &[0x5F, 0x1F, FF, 0, 0, FF, FF, FF, FF, 0],
        pr::pr_out,
        Always,
    ),
    op(
        0x5F,
        Some(0x01),
        "PERSISTENT RESERVE OUT / RESERVE",
        &[0x5F, 0x1F, FF, 0, 0, FF, FF, FF, FF, 0],
        pr::pr_out,
        Always,
    ),
    op(
        0x5F,
        Some(0x02),
        "PERSISTENT RESERVE OUT / RELEASE",
        &[0x5F, 0x1F, FF, 0, 0, FF, FF, FF, FF, 0],
        pr::pr_out,
        Always,
    ),
    op(
        0x5F,
        Some(0x03),
        "PERSISTENT RESERVE OUT / CLEAR",
        &[0x5F, 0x1F, FF, 0, 0, FF, FF, FF, FF, 0],
        pr::pr_out,
        Always,
    ),
    op(
        0x5F,
        Some(0x04),
        "PERSISTENT RESERVE OUT / PREEMPT",
        &[0x5F, 0x1F, FF, 0, 0, FF, FF, FF, FF, 0],
        pr::pr_out,
        Always,
    ),
    op(
        0x5F,
        Some(0x05),
        "PERSISTENT RESERVE OUT / PREEMPT AND ABORT",
        &[0x5F, 0x1F, FF, 0, 0, FF, FF, FF, FF, 0],
        pr::pr_out,
        Always,
    ),
    op(
        0x5F,
        Some(0x06),
        "PERSISTENT RESERVE OUT / REGISTER AND IGNORE EXISTING KEY",
        &[0x5F, 0x1F, FF, 0, 0, FF, FF, FF, FF, 0],
        pr::pr_out,
        Always,
    ),
    op(
        0x83,
        Some(0x00),
        "EXTENDED COPY (LID1)",
        &[0x83, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0],
        xcopy::extended_copy,
        Write,
    ),
    op(
        0x84,
        Some(0x00),
        "RECEIVE COPY RESULTS / COPY STATUS",
        &[0x84, 0x1F, FF, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0],
        xcopy::receive_copy_results,
        Read,
    ),
    op(
        0x84,
        Some(0x03),
        "RECEIVE COPY RESULTS / OPERATING PARAMETERS",
        &[0x84, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0],
        xcopy::receive_copy_results,
        Read,
    ),
    op(
        0x88,
        None,
        "READ(16)",
        &[
            0x88, 0x1E, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1F, 0,
        ],
        rw::read,
        Read,
    ),
    op(
        0x89,
        None,
        "COMPARE AND WRITE",
        &[
            0x89, 0x1A, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0, 0, FF, 0x1F, 0,
        ],
        rw::compare_and_write,
        Write,
    ),
    op(
        0x8A,
        None,
        "WRITE(16)",
        &[
            0x8A, 0x1A, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1F, 0,
        ],
        rw::write,
        Write,
    ),
    op(
        0x8B,
        None,
        "ORWRITE(16)",
        &[
            0x8B, 0x1A, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1F, 0,
        ],
        rw::orwrite,
        Write,
    ),
    op(
        0x8E,
        None,
        "WRITE AND VERIFY(16)",
        &[
            0x8E, 0x16, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1F, 0,
        ],
        rw::write,
        Write,
    ),
    op(
        0x8F,
        None,
        "VERIFY(16)",
        &[
            0x8F, 0x16, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1F, 0,
        ],
        rw::verify,
        Read,
    ),
    op(
        0x90,
        None,
        "PRE-FETCH(16)",
        &[
            0x90, 0x02, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1F, 0,
        ],
        rw::prefetch,
        Read,
    ),
    op(
        0x91,
        None,
        "SYNCHRONIZE CACHE(16)",
        &[
            0x91, 0x06, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1F, 0,
        ],
        rw::sync_cache,
        Write,
    ),
    op(
        0x93,
        None,
        "WRITE SAME(16)",
        &[
            0x93, 0x09, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x1F, 0,
        ],
        provisioning::write_same,
        Write,
    ),
    op(
        0x9C,
        None,
        "WRITE ATOMIC(16)",
        &[
            0x9C, 0x18, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0, FF, FF, 0x1F, 0,
        ],
        rw::write_atomic,
        Write,
    ),
    op(
        0x9E,
        Some(0x10),
        "READ CAPACITY(16)",
        &[
            0x9E, 0x1F, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x01, 0,
        ],
        capacity::read_capacity16,
        Always,
    ),
    op(
        0x9E,
        Some(0x12),
        "GET LBA STATUS",
        &[
            0x9E, 0x1F, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0,
        ],
        provisioning::get_lba_status,
        Read,
    ),
    exempt(op(
        0xA0,
        None,
        "REPORT LUNS",
        &[0xA0, 0, FF, 0, 0, 0, FF, FF, FF, FF, 0, 0],
        misc::report_luns_lu,
        Always,
    )),
    op(
        0xA3,
        Some(0x0C),
        "REPORT SUPPORTED OPERATION CODES",
        &[0xA3, 0x1F, 0x87, FF, FF, FF, FF, FF, FF, FF, 0, 0],
        report_supported_opcodes,
        Always,
    ),
    op(
        0xA3,
        Some(0x0D),
        "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS",
        &[0xA3, 0x1F, 0x80, 0, 0, 0, FF, FF, FF, FF, 0, 0],
        misc::report_tmf,
        Always,
    ),
    op(
        0xA8,
        None,
        "READ(12)",
        &[0xA8, 0x1E, FF, FF, FF, FF, FF, FF, FF, FF, 0x1F, 0],
        rw::read,
        Read,
    ),
    op(
        0xAA,
        None,
        "WRITE(12)",
        &[0xAA, 0x1A, FF, FF, FF, FF, FF, FF, FF, FF, 0x1F, 0],
        rw::write,
        Write,
    ),
    op(
        0xAE,
        None,
        "WRITE AND VERIFY(12)",
        &[0xAE, 0x16, FF, FF, FF, FF, FF, FF, FF, FF, 0x1F, 0],
        rw::write,
        Write,
    ),
    op(
        0xAF,
        None,
        "VERIFY(12)",
        &[0xAF, 0x16, FF, FF, FF, FF, FF, FF, FF, FF, 0x1F, 0],
        rw::verify,
        Read,
    ),
    op(
        0xB7,
        None,
        "READ DEFECT DATA(12)",
        &[0xB7, 0x1F, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0],
        misc::read_defect_data,
        Read,
    ),
];

/// Every command the logical units implement: (opcode, service action, name).
pub fn supported_commands() -> impl Iterator<Item = (u8, Option<u8>, &'static str)> {
    COMMANDS
        .iter()
        .map(|d| (d.opcode, d.service_action, d.name))
}

/// Service-action field of an opcode that has service actions.
fn service_action(cdb: &[u8]) -> u8 {
    cdb.get(1).copied().unwrap_or(0) & 0x1F
}

fn has_service_actions(opcode: u8) -> bool {
    COMMANDS
        .iter()
        .any(|d| d.opcode == opcode && d.service_action.is_some())
}

pub(crate) fn find(opcode: u8, sa: Option<u8>) -> Option<&'static OpDesc> {
    COMMANDS
        .iter()
        .find(|d| d.opcode == opcode && (d.service_action.is_none() || d.service_action == sa))
}

/// The table entry for a CDB.
pub(crate) fn lookup(cdb: &[u8]) -> Result<&'static OpDesc, ScsiError> {
    let opcode = *cdb.first().ok_or(ScsiError::InvalidOpcode)?;
    if has_service_actions(opcode) {
        if cdb.len() < 2 {
            return Err(ScsiError::invalid_cdb(1));
        }
        return find(opcode, Some(service_action(cdb))).ok_or(ScsiError::InvalidFieldInCdb {
            byte: 1,
            bit: Some(4),
        });
    }
    find(opcode, None).ok_or(ScsiError::InvalidOpcode)
}

/// Reject bits the command does not define (or we do not support).
pub(crate) fn check_reserved_bits(op: &OpDesc, cdb: &[u8]) -> Result<(), ScsiError> {
    for (i, (&b, &m)) in cdb.iter().zip(op.usage.iter()).enumerate().skip(1) {
        let bad = b & !m;
        if bad != 0 {
            return Err(ScsiError::InvalidFieldInCdb {
                byte: i as u16,
                bit: Some(7 - bad.leading_zeros() as u8),
            });
        }
    }
    Ok(())
}

const NOMINAL_TIMEOUT: u32 = 10;
const RECOMMENDED_TIMEOUT: u32 = 60;

fn timeouts_descriptor() -> [u8; 12] {
    let mut t = [0u8; 12];
    put_be(&mut t, 0, 2, 0x0A);
    put_be(&mut t, 4, 4, NOMINAL_TIMEOUT as u64);
    put_be(&mut t, 8, 4, RECOMMENDED_TIMEOUT as u64);
    t
}

/// REPORT SUPPORTED OPERATION CODES (MAINTENANCE IN / 0Ch).
pub(crate) fn report_supported_opcodes(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let offered = |d: &&OpDesc| !d.thin_only || lu.config.thin;
    let cdb = ctx.cdb;
    let rctd = cdb[2] & 0x80 != 0;
    let options = cdb[2] & 0x07;
    let req_op = cdb[3];
    let req_sa = field(cdb, 4, 2)?;
    let alloc = field(cdb, 6, 4)?;
    let mut out = Vec::new();
    match options {
        0 => {
            out.extend_from_slice(&[0; 4]);
            for d in COMMANDS.iter().filter(offered) {
                let mut desc = [0u8; 8];
                desc[0] = d.opcode;
                if let Some(sa) = d.service_action {
                    put_be(&mut desc, 2, 2, sa as u64);
                    desc[5] |= 0x01; // SERVACTV
                }
                if rctd {
                    desc[5] |= 0x02; // CTDP
                }
                put_be(&mut desc, 6, 2, d.cdb_len as u64);
                out.extend_from_slice(&desc);
                if rctd {
                    out.extend_from_slice(&timeouts_descriptor());
                }
            }
            let len = out.len() as u64 - 4;
            put_be(&mut out, 0, 4, len);
        }
        1..=3 => {
            let entry = match options {
                1 => {
                    if req_sa != 0 || has_service_actions(req_op) {
                        return Err(ScsiError::invalid_cdb(2));
                    }
                    find(req_op, None)
                }
                2 => {
                    if !has_service_actions(req_op) {
                        return Err(ScsiError::invalid_cdb(2));
                    }
                    u8::try_from(req_sa)
                        .ok()
                        .and_then(|sa| find(req_op, Some(sa)))
                }
                _ => {
                    if has_service_actions(req_op) {
                        u8::try_from(req_sa)
                            .ok()
                            .and_then(|sa| find(req_op, Some(sa)))
                    } else if req_sa == 0 {
                        find(req_op, None)
                    } else {
                        None
                    }
                }
            };
            out.extend_from_slice(&[0; 4]);
            match entry.filter(offered) {
                Some(d) => {
                    out[1] = 0x03; // SUPPORT: supported in conformance with a standard
                    if rctd {
                        out[1] |= 0x80; // CTDP
                    }
                    put_be(&mut out, 2, 2, d.cdb_len as u64);
                    out.extend_from_slice(d.usage);
                    if rctd {
                        out.extend_from_slice(&timeouts_descriptor());
                    }
                }
                None => out[1] = 0x01, // not supported
            }
        }
        _ => return Err(ScsiError::invalid_cdb(2)),
    }
    Ok(Reply::data(truncate(out, alloc)))
}
