//! Small commands: TEST UNIT READY, REQUEST SENSE, START STOP UNIT, PREVENT ALLOW MEDIUM
//! REMOVAL, READ DEFECT DATA, REPORT LUNS, REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS, and
//! what a LUN with no logical unit behind it answers.

use bytes::Bytes;

use super::cdb::{byte, field, put_be, truncate};
use super::lu::{CmdResult, Ctx, LogicalUnit, Reply};
use super::opcodes;
use super::sense::{self, ScsiError, STATUS_GOOD};
use super::{ScsiOutcome, ScsiRequest};

pub(crate) fn test_unit_ready(_lu: &LogicalUnit, _ctx: &Ctx) -> CmdResult {
    Ok(Reply::good())
}

pub(crate) fn request_sense(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let desc = ctx.cdb[1] & 0x01 != 0;
    let alloc = ctx.cdb[4] as u64;
    let pending = lu.state().ua.pop(ctx.nexus_id());
    let data = match pending {
        Some((asc, ascq)) => match (ScsiError::UnitAttention { asc, ascq }).fields() {
            Some(f) => sense::encode(&f, desc),
            None => sense::no_sense(desc),
        },
        None => sense::no_sense(desc),
    };
    Ok(Reply::data(truncate(data.to_vec(), alloc)))
}

pub(crate) fn start_stop_unit(_lu: &LogicalUnit, _ctx: &Ctx) -> CmdResult {
    // Not removable, always spinning: every power condition and START value is accepted.
    Ok(Reply::good())
}

pub(crate) fn prevent_allow(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let prevent = ctx.cdb[4] & 0x01 != 0;
    let mut st = lu.state();
    if prevent {
        st.prevent.insert(ctx.nexus_id());
    } else {
        st.prevent.remove(&ctx.nexus_id());
    }
    Ok(Reply::good())
}

pub(crate) fn read_defect_data(_lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    // No defects, in whatever format was asked for.
    let (out, alloc) = if ctx.cdb[0] == 0x37 {
        (vec![0, ctx.cdb[2] & 0x1F, 0, 0], field(ctx.cdb, 7, 2)?)
    } else {
        (
            vec![0, ctx.cdb[1] & 0x1F, 0, 0, 0, 0, 0, 0],
            field(ctx.cdb, 6, 4)?,
        )
    };
    Ok(Reply::data(truncate(out, alloc)))
}

pub(crate) fn report_tmf(_lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let repd = ctx.cdb[2] & 0x80 != 0;
    let alloc = field(ctx.cdb, 6, 4)?;
    if alloc < 4 {
        return Err(ScsiError::invalid_cdb(6));
    }
    // ABORT TASK, ABORT TASK SET, CLEAR TASK SET, LOGICAL UNIT RESET, TARGET RESET.
    let mut out = vec![0xDA, 0, 0, 0];
    if repd {
        out[3] = 0x0C;
        out.resize(16, 0);
    }
    Ok(Reply::data(truncate(out, alloc)))
}

/// REPORT LUNS reaching a logical unit directly (the target normally answers it).
pub(crate) fn report_luns_lu(_lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    report_luns_data(&[0], ctx.cdb).map(Reply::data)
}

fn encode_lun(lun: u64) -> [u8; 8] {
    let mut b = [0u8; 8];
    if lun < 256 {
        b[1] = lun as u8;
    } else if lun < 0x4000 {
        b[0] = 0x40 | (lun >> 8) as u8;
        b[1] = lun as u8;
    } else {
        b = lun.to_be_bytes();
    }
    b
}

fn report_luns_data(luns: &[u64], cdb: &[u8]) -> Result<Vec<u8>, ScsiError> {
    let select = byte(cdb, 2);
    let alloc = field(cdb, 6, 4)?;
    if alloc < 16 {
        return Err(ScsiError::invalid_cdb(6));
    }
    let list: &[u64] = match select {
        0x00 | 0x02 => luns,
        0x01 => &[],
        _ => return Err(ScsiError::invalid_cdb(2)),
    };
    let mut out = vec![0u8; 8];
    put_be(&mut out, 0, 4, list.len() as u64 * 8);
    for &l in list {
        out.extend_from_slice(&encode_lun(l));
    }
    Ok(truncate(out, alloc))
}

fn fixed_error(e: &ScsiError) -> ScsiOutcome {
    ScsiOutcome {
        status: e.status(),
        sense: e.fields().map(|f| sense::encode(&f, false)),
        data_in: Bytes::new(),
        data_out_wanted: 0,
    }
}

/// REPORT LUNS for the target (which intercepts opcode A0h): `luns` are LUN numbers.
pub fn report_luns(luns: &[u64], req: &ScsiRequest) -> ScsiOutcome {
    let checked = match opcodes::find(0xA0, None) {
        Some(op) if req.cdb.len() >= op.cdb_len as usize => {
            opcodes::check_reserved_bits(op, &req.cdb)
        }
        _ => Err(ScsiError::invalid_cdb(req.cdb.len() as u16)),
    };
    match checked.and_then(|_| report_luns_data(luns, &req.cdb)) {
        Ok(d) => ScsiOutcome {
            status: STATUS_GOOD,
            sense: None,
            data_in: Bytes::from(d),
            data_out_wanted: 0,
        },
        Err(e) => fixed_error(&e),
    }
}

/// A command addressed to a LUN with no logical unit.
pub fn no_such_lun(req: &ScsiRequest) -> ScsiOutcome {
    let cdb = &req.cdb;
    match cdb.first() {
        Some(0x12) if byte(cdb, 1) & 0x01 == 0 && cdb.len() >= 6 => {
            // Peripheral qualifier 3, device type 1Fh: no logical unit here.
            let mut d = vec![0u8; 36];
            d[0] = 0x7F;
            d[2] = 0x06;
            d[3] = 0x12;
            d[4] = 31;
            let alloc = be_or_zero(cdb, 3, 2);
            ScsiOutcome {
                status: STATUS_GOOD,
                sense: None,
                data_in: Bytes::from(truncate(d, alloc)),
                data_out_wanted: 0,
            }
        }
        Some(0x03) => {
            let desc = byte(cdb, 1) & 0x01 != 0;
            let data = match ScsiError::LunNotSupported.fields() {
                Some(f) => sense::encode(&f, desc),
                None => sense::no_sense(desc),
            };
            ScsiOutcome {
                status: STATUS_GOOD,
                sense: None,
                data_in: Bytes::from(truncate(data.to_vec(), byte(cdb, 4) as u64)),
                data_out_wanted: 0,
            }
        }
        _ => fixed_error(&ScsiError::LunNotSupported),
    }
}

fn be_or_zero(cdb: &[u8], off: usize, n: usize) -> u64 {
    super::cdb::be(cdb, off, n).unwrap_or(0)
}
