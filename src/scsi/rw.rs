//! Medium access: READ, WRITE, WRITE AND VERIFY, VERIFY, PRE-FETCH, SYNCHRONIZE CACHE,
//! COMPARE AND WRITE, ORWRITE.

use super::cdb::{byte, field};
use super::inquiry::MAX_CAW_BLOCKS;

use super::lu::{CmdResult, Ctx, LogicalUnit, Reply};
use super::sense::ScsiError;

/// LBA and transfer length of a READ/WRITE-style CDB of any size.
pub(crate) fn lba_len(cdb: &[u8]) -> Result<(u64, u64), ScsiError> {
    // The CDB may arrive padded (iSCSI carries 16 bytes), so the opcode group decides.
    match byte(cdb, 0) >> 5 {
        0 => {
            let lba = field(cdb, 1, 3)? & 0x1F_FFFF;
            let len = match field(cdb, 4, 1)? {
                0 => 256,
                n => n,
            };
            Ok((lba, len))
        }
        1 | 2 => Ok((field(cdb, 2, 4)?, field(cdb, 7, 2)?)),
        5 => Ok((field(cdb, 2, 4)?, field(cdb, 6, 4)?)),
        _ => Ok((field(cdb, 2, 8)?, field(cdb, 10, 4)?)),
    }
}

fn is_six(cdb: &[u8]) -> bool {
    cdb.first().map(|&o| o >> 5 == 0).unwrap_or(false)
}

impl LogicalUnit {
    pub(crate) fn check_transfer(&self, len: u64, byte_off: u16) -> Result<(), ScsiError> {
        if len > self.max_transfer_blocks() {
            return Err(ScsiError::invalid_cdb(byte_off));
        }
        Ok(())
    }

    pub(crate) fn read_blocks(&self, lba: u64, blocks: u64) -> Result<Vec<u8>, ScsiError> {
        let bs = self.block_size() as usize;
        let mut buf = vec![0u8; blocks as usize * bs];
        self.store
            .read(lba, &mut buf)
            .map_err(ScsiError::from_read)?;
        Ok(buf)
    }

    /// FUA as the command asked, or always when the write cache is disabled.
    pub(crate) fn effective_fua(&self, fua: bool) -> bool {
        fua || !self.state().mode.wce
    }

    pub(crate) fn write_blocks(
        &self,
        ctx: &Ctx,
        lba: u64,
        data: &[u8],
        fua: bool,
    ) -> Result<(), ScsiError> {
        if data.is_empty() {
            return Ok(());
        }
        self.store
            .write(ctx.origin(), lba, data, self.effective_fua(fua))
            .map_err(ScsiError::from_write)
    }
}

fn len_field_offset(cdb: &[u8]) -> u16 {
    match byte(cdb, 0) >> 5 {
        0 => 4,
        1 | 2 => 7,
        5 => 6,
        _ => 10,
    }
}

pub(crate) fn read(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let (lba, len) = lba_len(ctx.cdb)?;
    lu.check_lba(lba, len)?;
    lu.check_transfer(len, len_field_offset(ctx.cdb))?;
    Ok(Reply::data(lu.read_blocks(lba, len)?))
}

pub(crate) fn write(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let (lba, len) = lba_len(ctx.cdb)?;
    let bs = lu.block_size() as u64;
    ctx.out_wanted
        .set(u32::try_from(len * bs).unwrap_or(u32::MAX));
    lu.check_writable()?;
    lu.check_lba(lba, len)?;
    lu.check_transfer(len, len_field_offset(ctx.cdb))?;
    let verify = matches!(ctx.cdb[0], 0x2E | 0xAE | 0x8E);
    let fua = verify || (!is_six(ctx.cdb) && byte(ctx.cdb, 1) & 0x08 != 0);
    // Write only the whole blocks the initiator actually sent.
    let have = (ctx.req.data_out.len() as u64 / bs).min(len);
    let data = ctx.req.data_out.slice(..(have * bs) as usize);
    if data.is_empty() {
        return Ok(Reply::good());
    }
    let _g = lu.io_lock.read().unwrap_or_else(|p| p.into_inner());
    lu.store
        .write_shared(ctx.origin(), lba, data, lu.effective_fua(fua))
        .map_err(ScsiError::from_write)?;
    Ok(Reply::good())
}

/// Index of the first differing byte.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b.iter()).position(|(x, y)| x != y)
}

pub(crate) fn verify(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let (lba, len) = lba_len(ctx.cdb)?;
    let bs = lu.block_size() as u64;
    let bytchk = (ctx.cdb[1] >> 1) & 0x03;
    let wanted = match bytchk {
        0 => 0,
        1 => len * bs,
        3 => bs,
        _ => {
            return Err(ScsiError::InvalidFieldInCdb {
                byte: 1,
                bit: Some(2),
            })
        }
    };
    ctx.out_wanted
        .set(u32::try_from(wanted).unwrap_or(u32::MAX));
    lu.check_lba(lba, len)?;
    lu.check_transfer(len, len_field_offset(ctx.cdb))?;
    if bytchk == 0 || len == 0 {
        return Ok(Reply::good());
    }
    let medium = lu.read_blocks(lba, len)?;
    let sent = &ctx.req.data_out[..ctx.req.data_out.len().min(wanted as usize)];
    if bytchk == 1 {
        if let Some(off) = first_difference(&medium, sent) {
            return Err(ScsiError::Miscompare { offset: off as u64 });
        }
    } else {
        for (i, block) in medium.chunks(bs as usize).enumerate() {
            if let Some(off) = first_difference(block, sent) {
                return Err(ScsiError::Miscompare {
                    offset: (i as u64) * bs + off as u64,
                });
            }
        }
    }
    Ok(Reply::good())
}

pub(crate) fn prefetch(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let (lba, len) = lba_len(ctx.cdb)?;
    lu.check_lba(lba, len)?;
    // Nothing is pinned in a cache here, so GOOD (not CONDITION MET).
    Ok(Reply::good())
}

pub(crate) fn sync_cache(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let (lba, len) = lba_len(ctx.cdb)?;
    lu.check_lba(lba, len)?;
    lu.store.flush().map_err(ScsiError::from_write)?;
    Ok(Reply::good())
}

pub(crate) fn compare_and_write(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let lba = field(ctx.cdb, 2, 8)?;
    let n = ctx.cdb[13] as u64;
    let bs = lu.block_size() as u64;
    ctx.out_wanted.set((2 * n * bs) as u32);
    if n > MAX_CAW_BLOCKS {
        return Err(ScsiError::invalid_cdb(13));
    }
    lu.check_writable()?;
    lu.check_lba(lba, n)?;
    if n == 0 {
        // Nothing to compare; but an initiator that sends Data-Out with NUMBER OF LOGICAL
        // BLOCKS zero meant a length the one-byte field cannot hold (e.g. 256).
        if ctx.req.expected_out_len != 0 || !ctx.req.data_out.is_empty() {
            return Err(ScsiError::invalid_cdb(13));
        }
        return Ok(Reply::good());
    }
    let data = &ctx.req.data_out;
    // The Data-Out must be exactly the verify and write instances; anything else is an
    // initiator error rather than something to guess about.
    if data.len() as u64 != 2 * n * bs {
        return Err(ScsiError::InvalidFieldInIu);
    }
    let (verify, new) = data[..(2 * n * bs) as usize].split_at((n * bs) as usize);
    let fua = ctx.cdb[1] & 0x08 != 0;
    let _g = lu.io_lock.write().unwrap_or_else(|p| p.into_inner());
    let medium = lu.read_blocks(lba, n)?;
    if let Some(off) = first_difference(&medium, verify) {
        return Err(ScsiError::Miscompare { offset: off as u64 });
    }
    lu.write_blocks(ctx, lba, new, fua)?;
    Ok(Reply::good())
}

pub(crate) fn orwrite(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let (lba, len) = lba_len(ctx.cdb)?;
    let bs = lu.block_size() as u64;
    ctx.out_wanted
        .set(u32::try_from(len * bs).unwrap_or(u32::MAX));
    lu.check_writable()?;
    lu.check_lba(lba, len)?;
    lu.check_transfer(len, 10)?;
    let have = (ctx.req.data_out.len() as u64 / bs).min(len);
    if have == 0 {
        return Ok(Reply::good());
    }
    let fua = ctx.cdb[1] & 0x08 != 0;
    let _g = lu.io_lock.write().unwrap_or_else(|p| p.into_inner());
    let mut medium = lu.read_blocks(lba, have)?;
    for (m, d) in medium.iter_mut().zip(ctx.req.data_out.iter()) {
        *m |= *d;
    }
    lu.write_blocks(ctx, lba, &medium, fua)?;
    Ok(Reply::good())
}

/// WRITE ATOMIC (16): all of the blocks or none of them. The write holds the I/O lock
/// exclusively, so no other command sees or produces a partial result, and nothing is written
/// unless the whole Data-Out arrived. (Durability across a host crash is that of the backing
/// store's single write call.)
pub(crate) fn write_atomic(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let lba = field(ctx.cdb, 2, 8)?;
    let len = field(ctx.cdb, 12, 2)?;
    let bs = lu.block_size() as u64;
    ctx.out_wanted
        .set(u32::try_from(len * bs).unwrap_or(u32::MAX));
    lu.check_writable()?;
    lu.check_lba(lba, len)?;
    if len > lu.max_atomic_blocks() {
        return Err(ScsiError::invalid_cdb(12));
    }
    if len == 0 {
        return Ok(Reply::good());
    }
    let data = ctx
        .req
        .data_out
        .get(..(len * bs) as usize)
        .ok_or(ScsiError::InvalidFieldInIu)?;
    let fua = ctx.cdb[1] & 0x08 != 0;
    let _g = lu.io_lock.write().unwrap_or_else(|p| p.into_inner());
    lu.write_blocks(ctx, lba, data, fua)?;
    Ok(Reply::good())
}
