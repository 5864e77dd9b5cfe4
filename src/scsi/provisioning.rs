//! Logical block provisioning: WRITE SAME (10)/(16), UNMAP, GET LBA STATUS.

use super::cdb::{field, param, put_be, truncate};
use super::inquiry::{MAX_UNMAP_DESCRIPTORS, MAX_UNMAP_LBAS};
use super::lu::{CmdResult, Ctx, LogicalUnit, Reply};
use super::sense::ScsiError;
use crate::storage::Allocation;

/// Bytes written per store call when WRITE SAME replicates a block.
const WRITE_SAME_CHUNK: u64 = 1 << 20;

pub(crate) fn write_same(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let cdb = ctx.cdb;
    let sixteen = cdb[0] == 0x93;
    let (lba, len) = if sixteen {
        (field(cdb, 2, 8)?, field(cdb, 10, 4)?)
    } else {
        (field(cdb, 2, 4)?, field(cdb, 7, 2)?)
    };
    let unmap = cdb[1] & 0x08 != 0;
    let ndob = sixteen && cdb[1] & 0x01 != 0;
    let bs = lu.block_size() as u64;
    ctx.out_wanted.set(if ndob { 0 } else { bs as u32 });
    lu.check_writable()?;
    // WSNZ is clear: NUMBER OF LOGICAL BLOCKS zero means from LBA to the end of the medium
    // (the LBA itself must still exist).
    let len = if len == 0 {
        if lba >= lu.num_blocks() {
            return Err(ScsiError::LbaOutOfRange);
        }
        lu.num_blocks() - lba
    } else {
        len
    };
    lu.check_lba(lba, len)?;
    let zero_block = vec![0u8; bs as usize];
    let block: &[u8] = if ndob {
        &zero_block
    } else {
        // Exactly one logical block of Data-Out: less cannot be replicated, and more means
        // the initiator and the CDB disagree about the command.
        if ctx.req.data_out.len() as u64 != bs {
            return Err(ScsiError::InvalidFieldInIu);
        }
        &ctx.req.data_out
    };
    let _g = lu.io_lock.read().unwrap_or_else(|p| p.into_inner());
    // UNMAP on a thin logical unit deallocates whatever the Data-Out holds: the LBAs then
    // read as zeros (LBPRZ), as the initiator asked for deallocation, not for its data.
    if unmap && lu.config.thin {
        lu.store
            .unmap(ctx.origin(), lba, len)
            .map_err(ScsiError::from_write)?;
        return Ok(Reply::good());
    }
    let per_chunk = (WRITE_SAME_CHUNK / bs).max(1);
    let mut buf = Vec::with_capacity((per_chunk.min(len) * bs) as usize);
    for _ in 0..per_chunk.min(len) {
        buf.extend_from_slice(block);
    }
    let mut done = 0;
    while done < len {
        let n = (len - done).min(per_chunk);
        lu.write_blocks(ctx, lba + done, &buf[..(n * bs) as usize], false)?;
        done += n;
    }
    Ok(Reply::good())
}

pub(crate) fn unmap(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let len = field(ctx.cdb, 7, 2)?;
    let p = ctx.params(len);
    lu.check_writable()?;
    if len == 0 {
        return Ok(Reply::good());
    }
    if len < 8 || (p.len() as u64) < len {
        return Err(ScsiError::ParamListLength);
    }
    let data_len = param(p, 0, 2)?;
    let bd_len = param(p, 2, 2)?;
    if data_len + 2 > len {
        return Err(ScsiError::invalid_param(0));
    }
    let usable = bd_len.min(len - 8);
    let count = usable / 16;
    if count > MAX_UNMAP_DESCRIPTORS {
        return Err(ScsiError::invalid_param(2));
    }
    let mut ranges = Vec::with_capacity(count as usize);
    for i in 0..count as usize {
        let off = 8 + i * 16;
        let lba = param(p, off, 8)?;
        let blocks = param(p, off + 8, 4)?;
        if blocks > MAX_UNMAP_LBAS {
            return Err(ScsiError::invalid_param(off as u16 + 8));
        }
        lu.check_lba(lba, blocks)?;
        if blocks > 0 {
            ranges.push((lba, blocks));
        }
    }
    let _g = lu.io_lock.read().unwrap_or_else(|p| p.into_inner());
    for (lba, blocks) in ranges {
        lu.store
            .unmap(ctx.origin(), lba, blocks)
            .map_err(ScsiError::from_write)?;
    }
    Ok(Reply::good())
}

/// Most descriptors one GET LBA STATUS returns.
const MAX_LBA_STATUS_DESCRIPTORS: u64 = 256;

pub(crate) fn get_lba_status(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let lba = field(ctx.cdb, 2, 8)?;
    let alloc = field(ctx.cdb, 10, 4)?;
    let nb = lu.num_blocks();
    if lba >= nb {
        return Err(ScsiError::LbaOutOfRange);
    }
    let want = (alloc.saturating_sub(8) / 16).clamp(1, MAX_LBA_STATUS_DESCRIPTORS);
    let mut out = vec![0u8; 8];
    let mut cur = lba;
    let mut n = 0;
    while cur < nb && n < want {
        let (status, run) = if lu.config.thin {
            lu.store
                .allocation(cur, 0xFFFF_FFFF)
                .map_err(ScsiError::from_read)?
        } else {
            (Allocation::Mapped, (nb - cur).min(0xFFFF_FFFF))
        };
        let run = run.clamp(1, nb - cur);
        let mut d = [0u8; 16];
        put_be(&mut d, 0, 8, cur);
        put_be(&mut d, 8, 4, run);
        d[12] = match status {
            Allocation::Mapped => 0,
            Allocation::Deallocated => 1,
        };
        out.extend_from_slice(&d);
        cur += run;
        n += 1;
    }
    let len = out.len() as u64 - 4;
    put_be(&mut out, 0, 4, len);
    Ok(Reply::data(truncate(out, alloc)))
}
