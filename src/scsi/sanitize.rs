//! SANITIZE (SBC-4): OVERWRITE, BLOCK ERASE (thin logical units: every block deallocated) and
//! EXIT FAILURE MODE. CRYPTO ERASE is not offered: volumes are not encrypted, so there is no
//! key to change.
//!
//! The operation runs to completion inside the command (IMMED is accepted and changes nothing
//! but when status is returned). While it runs, every command other than INQUIRY, REPORT LUNS
//! and REQUEST SENSE ends with NOT READY / SANITIZE IN PROGRESS; if it fails, the logical unit
//! refuses medium access with SANITIZE COMMAND FAILED until a SANITIZE succeeds or EXIT FAILURE
//! MODE is sent.
//!
//! History: a store that keeps overwritten data (the CDP journal) still holds the old blocks
//! after a SANITIZE; `BlockStore` has no call to drop them yet, so until it does, SANITIZE
//! erases the current image only.

use super::cdb::{field, param};
use super::lu::{CmdResult, Ctx, LogicalUnit, Reply};
use super::sense::ScsiError;

pub(crate) const OPCODE: u8 = 0x48;

const SA_OVERWRITE: u8 = 0x01;
const SA_BLOCK_ERASE: u8 = 0x02;
const SA_EXIT_FAILURE_MODE: u8 = 0x1F;

/// Bytes written per store call while overwriting.
const CHUNK_BYTES: u64 = 1 << 20;

/// The block an OVERWRITE leaves on the medium: the pattern repeated to fill a block, inverted
/// when INVERT is set and the pass count is even (passes alternate, the first is not inverted).
fn overwrite_block(pattern: &[u8], bs: usize, inverted: bool) -> Vec<u8> {
    pattern
        .iter()
        .cycle()
        .take(bs)
        .map(|&b| if inverted { !b } else { b })
        .collect()
}

/// Parse and check the OVERWRITE parameter list; the block to write.
fn overwrite_params(lu: &LogicalUnit, ctx: &Ctx, plen: u64) -> Result<Vec<u8>, ScsiError> {
    let bs = lu.block_size() as u64;
    if plen <= 4 || plen > bs + 4 {
        return Err(ScsiError::invalid_cdb(7));
    }
    let p = ctx.params(plen);
    if (p.len() as u64) < plen {
        return Err(ScsiError::ParamListLength);
    }
    let invert = p[0] & 0x80 != 0;
    if p[0] & 0x60 != 0 {
        // TEST is for vendor testing only.
        return Err(ScsiError::InvalidFieldInParam {
            byte: 0,
            bit: Some(6),
        });
    }
    let count = p[0] & 0x1F;
    if count == 0 {
        return Err(ScsiError::InvalidFieldInParam {
            byte: 0,
            bit: Some(4),
        });
    }
    let ip_len = param(p, 2, 2)?;
    if ip_len == 0 || ip_len > bs || ip_len + 4 > plen {
        return Err(ScsiError::invalid_param(2));
    }
    let pattern = &p[4..4 + ip_len as usize];
    Ok(overwrite_block(
        pattern,
        bs as usize,
        invert && count % 2 == 0,
    ))
}

pub(crate) fn sanitize(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let sa = ctx.cdb[1] & 0x1F;
    let plen = field(ctx.cdb, 7, 2)?;
    lu.check_writable()?;
    let block = match sa {
        SA_OVERWRITE => Some(overwrite_params(lu, ctx, plen)?),
        SA_BLOCK_ERASE | SA_EXIT_FAILURE_MODE => {
            if plen != 0 {
                return Err(ScsiError::invalid_cdb(7));
            }
            None
        }
        // The command table only lets the service actions above through.
        _ => return Err(ScsiError::invalid_cdb(1)),
    };
    if sa == SA_EXIT_FAILURE_MODE {
        lu.state().sanitize_failed = false;
        return Ok(Reply::good());
    }
    {
        let mut st = lu.state();
        if st.sanitizing {
            return Err(ScsiError::SanitizeInProgress);
        }
        st.sanitizing = true;
    }
    let result = {
        // Exclusive: no command's I/O overlaps the sanitize.
        let _g = lu.io_lock.write().unwrap_or_else(|p| p.into_inner());
        match &block {
            Some(b) => overwrite_all(lu, ctx, b),
            None => lu
                .store
                .unmap(ctx.origin(), 0, lu.num_blocks())
                .map_err(ScsiError::from_write),
        }
        .and_then(|()| lu.store.flush().map_err(ScsiError::from_write))
    };
    let mut st = lu.state();
    st.sanitizing = false;
    st.sanitize_failed = result.is_err();
    result.map(|()| Reply::good())
}

fn overwrite_all(lu: &LogicalUnit, ctx: &Ctx, block: &[u8]) -> Result<(), ScsiError> {
    let bs = block.len().max(1) as u64;
    let nb = lu.num_blocks();
    let per = (CHUNK_BYTES / bs).clamp(1, nb.max(1));
    let buf: Vec<u8> = block
        .iter()
        .copied()
        .cycle()
        .take((per * bs) as usize)
        .collect();
    let mut done = 0;
    while done < nb {
        let n = (nb - done).min(per);
        lu.store
            .write(ctx.origin(), done, &buf[..(n * bs) as usize], false)
            .map_err(ScsiError::from_write)?;
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::overwrite_block;

    #[test]
    fn pattern_fills_and_inverts() {
        assert_eq!(overwrite_block(&[1, 2, 3], 7, false), [1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(overwrite_block(&[0x0F], 2, true), [0xF0, 0xF0]);
    }
}
