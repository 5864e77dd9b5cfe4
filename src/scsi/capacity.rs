//! READ CAPACITY (10) and (16).

use super::cdb::{field, put_be, truncate};
use super::lu::{CmdResult, Ctx, LogicalUnit, Reply};

pub(crate) fn read_capacity10(lu: &LogicalUnit, _ctx: &Ctx) -> CmdResult {
    let last = lu.num_blocks().saturating_sub(1).min(0xFFFF_FFFF);
    let mut d = vec![0u8; 8];
    put_be(&mut d, 0, 4, last);
    put_be(&mut d, 4, 4, lu.block_size() as u64);
    Ok(Reply::data(d))
}

pub(crate) fn read_capacity16(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let alloc = field(ctx.cdb, 10, 4)?;
    let mut d = vec![0u8; 32];
    put_be(&mut d, 0, 8, lu.num_blocks().saturating_sub(1));
    put_be(&mut d, 8, 4, lu.block_size() as u64);
    if lu.config.thin {
        d[14] = 0x80 | 0x40; // LBPME, LBPRZ
    }
    Ok(Reply::data(truncate(d, alloc)))
}
