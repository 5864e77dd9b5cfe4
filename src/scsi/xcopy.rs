//! EXTENDED COPY (LID1) and RECEIVE COPY RESULTS: block-to-block copies between logical units
//! named by NAA identification target descriptors (E4h).

use std::collections::HashMap;
use std::sync::Arc;

use super::cdb::{field, param, put_be, truncate};
use super::lu::{CmdResult, Ctx, LogicalUnit, Reply};
use super::sense::ScsiError;

/// Finds other logical units of this target for EXTENDED COPY.
pub trait CopyRegistry: Send + Sync {
    /// The logical unit whose NAA designator value is `naa`.
    fn find_by_naa(&self, naa: &[u8]) -> Option<Arc<LogicalUnit>>;
}

const MAX_TARGET_DESCRIPTORS: u64 = 16;
const MAX_SEGMENT_DESCRIPTORS: u64 = 64;
const MAX_DESCRIPTOR_LIST: u64 = 16 + MAX_TARGET_DESCRIPTORS * 32 + MAX_SEGMENT_DESCRIPTORS * 28;
/// Largest segment, in bytes.
const MAX_SEGMENT_BYTES: u64 = 65535 * 4096;
const COPY_CHUNK_BYTES: u64 = 1 << 20;
/// Completed copy results kept for RECEIVE COPY RESULTS.
const MAX_RESULTS: usize = 256;

#[derive(Debug, Clone, Copy)]
struct CopyResult {
    ok: bool,
    segments: u16,
    bytes: u64,
}

#[derive(Default)]
pub(crate) struct CopyState {
    results: HashMap<(String, u8), CopyResult>,
}

enum Target {
    This,
    Other(Arc<LogicalUnit>),
    Unreachable,
}

struct Segment {
    src: usize,
    dst: usize,
    blocks: u64,
    src_lba: u64,
    dst_lba: u64,
}

fn resolve(lu: &LogicalUnit, p: &[u8], off: usize) -> Result<Target, ScsiError> {
    let kind = p[off];
    if kind != 0xE4 {
        return Err(ScsiError::ParamValue { ascq: 0x07 });
    }
    // LU ID TYPE must be 0 (LUN); NUL targets are not supported.
    if p[off + 1] & 0x38 != 0 {
        return Err(ScsiError::invalid_param(off as u16 + 1));
    }
    let dtype = p[off + 5] & 0x0F;
    let len = (p[off + 7] as usize).min(20);
    let value = &p[off + 8..off + 8 + len];
    if dtype != 0x03 {
        return Ok(Target::Unreachable);
    }
    if value == lu.naa_bytes() {
        return Ok(Target::This);
    }
    let reg = lu
        .registry
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(match reg.and_then(|r| r.find_by_naa(value)) {
        Some(other) => Target::Other(other),
        None => Target::Unreachable,
    })
}

pub(crate) fn extended_copy(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let plen = field(ctx.cdb, 10, 4)?;
    let p = ctx.params(plen);
    if plen == 0 {
        return Ok(Reply::good());
    }
    if (p.len() as u64) < plen || plen < 16 {
        return Err(ScsiError::ParamListLength);
    }
    let list_id = p[0];
    let tdl = param(p, 2, 2)?;
    let sdl = param(p, 8, 4)?;
    let inline = param(p, 12, 4)?;
    if inline != 0 {
        return Err(ScsiError::invalid_param(12));
    }
    if tdl % 32 != 0 {
        return Err(ScsiError::invalid_param(2));
    }
    // The list as a whole is checked before the descriptor counts: a list longer than
    // MAXIMUM DESCRIPTOR LIST LENGTH is a length error whatever it holds.
    if 16 + tdl + sdl > plen || tdl + sdl > MAX_DESCRIPTOR_LIST {
        return Err(ScsiError::ParamListLength);
    }
    if tdl / 32 > MAX_TARGET_DESCRIPTORS {
        return Err(ScsiError::ParamValue { ascq: 0x06 });
    }
    if sdl / 28 > MAX_SEGMENT_DESCRIPTORS {
        return Err(ScsiError::ParamValue { ascq: 0x08 });
    }
    let mut targets = Vec::new();
    for i in 0..(tdl / 32) as usize {
        targets.push(resolve(lu, p, 16 + i * 32)?);
    }
    let mut segments = Vec::new();
    let mut off = 16 + tdl as usize;
    let end = off + sdl as usize;
    while off < end {
        if end - off < 4 {
            return Err(ScsiError::ParamListLength);
        }
        if p[off] != 0x02 {
            return Err(ScsiError::ParamValue { ascq: 0x09 });
        }
        let dlen = param(p, off + 2, 2)? as usize;
        if dlen != 0x18 || off + 4 + dlen > end {
            return Err(ScsiError::invalid_param(off as u16 + 2));
        }
        let src = param(p, off + 4, 2)? as usize;
        let dst = param(p, off + 6, 2)? as usize;
        // A segment naming a target descriptor that is not in the list names a copy target
        // that cannot be reached: the copy is aborted.
        if src >= targets.len() || dst >= targets.len() {
            return Err(ScsiError::CopyTargetUnreachable);
        }
        segments.push(Segment {
            src,
            dst,
            blocks: param(p, off + 10, 2)?,
            src_lba: param(p, off + 12, 8)?,
            dst_lba: param(p, off + 20, 8)?,
        });
        off += 4 + dlen;
        if segments.len() as u64 > MAX_SEGMENT_DESCRIPTORS {
            return Err(ScsiError::ParamValue { ascq: 0x08 });
        }
    }
    let mut result = CopyResult {
        ok: true,
        segments: 0,
        bytes: 0,
    };
    let outcome = run_segments(lu, ctx, &targets, &segments, &mut result);
    result.ok = outcome.is_ok();
    let mut st = lu.state();
    if st.copy.results.len() >= MAX_RESULTS {
        st.copy.results.clear();
    }
    st.copy
        .results
        .insert((ctx.req.nexus.initiator_port.clone(), list_id), result);
    drop(st);
    outcome.map(|_| Reply::good())
}

fn run_segments(
    lu: &LogicalUnit,
    ctx: &Ctx,
    targets: &[Target],
    segments: &[Segment],
    result: &mut CopyResult,
) -> Result<(), ScsiError> {
    for s in segments {
        let pick = |i: usize| -> Result<&LogicalUnit, ScsiError> {
            match targets.get(i) {
                Some(Target::This) => Ok(lu),
                Some(Target::Other(o)) => Ok(o.as_ref()),
                _ => Err(ScsiError::CopyTargetUnreachable),
            }
        };
        let src = pick(s.src)?;
        let dst = pick(s.dst)?;
        if src.block_size() != dst.block_size() {
            return Err(ScsiError::CopyAborted {
                asc: 0x26,
                ascq: 0x00,
            });
        }
        let bs = src.block_size() as u64;
        if s.blocks * bs > MAX_SEGMENT_BYTES {
            return Err(ScsiError::invalid_param(10));
        }
        dst.check_writable()?;
        // A segment reaching past the end of either device aborts the copy (the copy target
        // would have refused the access).
        let out_of_range = |_| ScsiError::CopyAborted {
            asc: 0x00,
            ascq: 0x00,
        };
        src.check_lba(s.src_lba, s.blocks).map_err(out_of_range)?;
        dst.check_lba(s.dst_lba, s.blocks).map_err(out_of_range)?;
        let per = (COPY_CHUNK_BYTES / bs).max(1);
        let mut done = 0;
        while done < s.blocks {
            let n = (s.blocks - done).min(per);
            let data = src.read_blocks(s.src_lba + done, n)?;
            let _g = dst.io_lock.read().unwrap_or_else(|p| p.into_inner());
            dst.store
                .write(
                    ctx.origin(),
                    s.dst_lba + done,
                    &data,
                    dst.effective_fua(false),
                )
                .map_err(ScsiError::from_write)?;
            done += n;
            result.bytes += n * bs;
        }
        result.segments += 1;
    }
    Ok(())
}

pub(crate) fn receive_copy_results(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let sa = ctx.cdb[1] & 0x1F;
    let alloc = field(ctx.cdb, 10, 4)?;
    let out = match sa {
        0x00 => {
            let list_id = ctx.cdb[2];
            let st = lu.state();
            let r = st
                .copy
                .results
                .get(&(ctx.req.nexus.initiator_port.clone(), list_id))
                .copied()
                .ok_or(ScsiError::invalid_cdb(2))?;
            let mut d = vec![0u8; 12];
            put_be(&mut d, 0, 4, 8);
            d[4] = if r.ok { 0x01 } else { 0x02 };
            put_be(&mut d, 5, 2, r.segments as u64);
            if r.bytes <= u32::MAX as u64 {
                d[7] = 0x00; // bytes
                put_be(&mut d, 8, 4, r.bytes);
            } else {
                d[7] = 0x01; // kibibytes
                put_be(&mut d, 8, 4, (r.bytes >> 10).min(u32::MAX as u64));
            }
            d
        }
        0x03 => {
            let implemented = [0x02u8, 0xE4];
            let mut d = vec![0u8; 44];
            d[4] = 0x01; // SNLID
            put_be(&mut d, 8, 2, MAX_TARGET_DESCRIPTORS);
            put_be(&mut d, 10, 2, MAX_SEGMENT_DESCRIPTORS);
            put_be(&mut d, 12, 4, MAX_DESCRIPTOR_LIST);
            put_be(&mut d, 16, 4, MAX_SEGMENT_BYTES);
            put_be(&mut d, 34, 2, 1); // total concurrent copies
            d[36] = 1; // maximum concurrent copies
            d[37] = lu.block_size().trailing_zeros() as u8; // data segment granularity
            d[43] = implemented.len() as u8;
            d.extend_from_slice(&implemented);
            let len = d.len() as u64 - 4;
            put_be(&mut d, 0, 4, len);
            d
        }
        _ => return Err(ScsiError::invalid_cdb(1)),
    };
    Ok(Reply::data(truncate(out, alloc)))
}
