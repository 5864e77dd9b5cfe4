//! MODE SENSE / MODE SELECT (6) and (10) with the read-write error recovery, disconnect-
//! reconnect, caching, control and informational exceptions pages.

use super::cdb::{field, param, put_be, truncate};
use super::lu::{CmdResult, Ctx, LogicalUnit, Reply};
use super::sense::ScsiError;

/// Changeable mode parameters (not saved: there is no saved page set).
#[derive(Debug, Clone)]
pub(crate) struct ModeState {
    /// Caching page WCE: writes may sit in the host page cache until SYNCHRONIZE CACHE.
    pub wce: bool,
    /// Control page D_SENSE: descriptor-format sense data.
    pub d_sense: bool,
    /// Control page SWP: software write protect (the medium is read-only until cleared).
    pub swp: bool,
}

impl Default for ModeState {
    fn default() -> Self {
        ModeState {
            wce: true,
            d_sense: false,
            swp: false,
        }
    }
}

const PAGES: &[u8] = &[0x01, 0x02, 0x08, 0x0A, 0x1C];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pc {
    Current,
    Changeable,
    Default,
}

fn page(code: u8, pc: Pc, st: &ModeState) -> Option<Vec<u8>> {
    let def = ModeState::default();
    let s = match pc {
        Pc::Current => st,
        _ => &def,
    };
    let (len, mut p) = match code {
        0x01 => (12, vec![0u8; 12]),
        0x02 => (16, vec![0u8; 16]),
        0x08 => (20, vec![0u8; 20]),
        0x0A => (12, vec![0u8; 12]),
        0x1C => (12, vec![0u8; 12]),
        _ => return None,
    };
    p[0] = code;
    p[1] = (len - 2) as u8;
    match (code, pc) {
        (0x08, Pc::Changeable) => p[2] = 0x04,
        (0x08, _) => p[2] = if s.wce { 0x04 } else { 0 },
        (0x0A, Pc::Changeable) => {
            p[2] = 0x04;
            p[4] = 0x08;
        }
        (0x0A, _) => {
            p[2] = if s.d_sense { 0x04 } else { 0 };
            p[4] = if s.swp { 0x08 } else { 0 };
            p[3] = 0x10; // unrestricted reordering allowed
            put_be(&mut p, 8, 2, 0xFFFF); // busy timeout: unlimited
        }
        (0x1C, Pc::Changeable) => {}
        (0x1C, _) => p[2] = 0x08, // DEXCPT: no informational exceptions
        _ => {}
    }
    Some(p)
}

pub(crate) fn mode_sense(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let cdb = ctx.cdb;
    let ten = cdb[0] == 0x5A;
    let dbd = cdb[1] & 0x08 != 0;
    let llbaa = ten && cdb[1] & 0x10 != 0;
    let pc = match cdb[2] >> 6 {
        0 => Pc::Current,
        1 => Pc::Changeable,
        2 => Pc::Default,
        _ => return Err(ScsiError::SavingParamsUnsupported),
    };
    let code = cdb[2] & 0x3F;
    let subpage = cdb[3];
    let alloc = if ten {
        field(cdb, 7, 2)?
    } else {
        field(cdb, 4, 1)?
    };
    let st = lu.state().mode.clone();
    let mut pages = Vec::new();
    if code == 0x3F {
        if subpage != 0 && subpage != 0xFF {
            return Err(ScsiError::invalid_cdb(3));
        }
        for &c in PAGES {
            pages.extend(page(c, pc, &st).unwrap_or_default());
        }
    } else {
        let p = page(code, pc, &st).ok_or(ScsiError::InvalidFieldInCdb {
            byte: 2,
            bit: Some(5),
        })?;
        if subpage != 0 && subpage != 0xFF {
            return Err(ScsiError::invalid_cdb(3));
        }
        pages.extend(p);
    }
    let mut bd = Vec::new();
    if !dbd {
        let nb = lu.num_blocks();
        let bs = lu.block_size() as u64;
        if llbaa {
            bd = vec![0u8; 16];
            put_be(&mut bd, 0, 8, nb);
            put_be(&mut bd, 12, 4, bs);
        } else {
            bd = vec![0u8; 8];
            put_be(&mut bd, 0, 4, nb.min(0xFFFF_FFFF));
            put_be(&mut bd, 5, 3, bs);
        }
    }
    let dsp = if lu.write_protected() { 0x80 } else { 0 } | 0x10; // WP, DPOFUA
    let mut out;
    if ten {
        out = vec![0u8; 8];
        out[3] = dsp;
        if bd.len() == 16 {
            out[4] = 0x01; // LONGLBA
        }
        put_be(&mut out, 6, 2, bd.len() as u64);
        out.extend(bd);
        out.extend(pages);
        let len = out.len() as u64 - 2;
        put_be(&mut out, 0, 2, len);
    } else {
        out = vec![0u8; 4];
        out[2] = dsp;
        out[3] = bd.len() as u8;
        out.extend(bd);
        out.extend(pages);
        out[0] = (out.len() - 1).min(255) as u8;
    }
    Ok(Reply::data(truncate(out, alloc)))
}

pub(crate) fn mode_select(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let cdb = ctx.cdb;
    let ten = cdb[0] == 0x55;
    let len = if ten {
        field(cdb, 7, 2)?
    } else {
        field(cdb, 4, 1)?
    };
    let p = ctx.params(len);
    if cdb[1] & 0x01 != 0 {
        return Err(ScsiError::InvalidFieldInCdb {
            byte: 1,
            bit: Some(0),
        });
    }
    if len == 0 {
        return Ok(Reply::good());
    }
    if (p.len() as u64) < len {
        return Err(ScsiError::ParamListLength);
    }
    let (hdr, bdl, long) = if ten {
        (
            8usize,
            param(p, 6, 2)? as usize,
            param(p, 4, 1)? & 0x01 != 0,
        )
    } else {
        (4usize, param(p, 3, 1)? as usize, false)
    };
    let bd_size = if long { 16 } else { 8 };
    if bdl % bd_size != 0 {
        return Err(ScsiError::invalid_param(if ten { 6 } else { 3 } as u16));
    }
    if p.len() < hdr + bdl {
        return Err(ScsiError::ParamListLength);
    }
    let bs = lu.block_size() as u64;
    for i in 0..bdl / bd_size {
        let off = hdr + i * bd_size;
        let blen = if long {
            param(p, off + 12, 4)?
        } else {
            param(p, off + 5, 3)?
        };
        if blen != bs {
            return Err(ScsiError::invalid_param((off + bd_size - 3) as u16));
        }
    }
    let mut st = lu.state();
    let mut new = st.mode.clone();
    let mut off = hdr + bdl;
    while off < p.len() {
        let code = p[off] & 0x3F;
        if p[off] & 0x40 != 0 {
            // Subpages: none are implemented.
            return Err(ScsiError::invalid_param(off as u16));
        }
        let plen = param(p, off + 1, 1)? as usize + 2;
        let cur = page(code, Pc::Current, &new).ok_or(ScsiError::InvalidFieldInParam {
            byte: off as u16,
            bit: Some(5),
        })?;
        if plen != cur.len() {
            return Err(ScsiError::invalid_param(off as u16 + 1));
        }
        let sent = p.get(off..off + plen).ok_or(ScsiError::ParamListLength)?;
        let changeable = page(code, Pc::Changeable, &new).unwrap_or_default();
        for i in 2..plen {
            if (sent[i] ^ cur[i]) & !changeable.get(i).copied().unwrap_or(0) != 0 {
                return Err(ScsiError::invalid_param((off + i) as u16));
            }
        }
        match code {
            0x08 => new.wce = sent[2] & 0x04 != 0,
            0x0A => {
                new.d_sense = sent[2] & 0x04 != 0;
                new.swp = sent[4] & 0x08 != 0;
            }
            _ => {}
        }
        off += plen;
    }
    let changed =
        new.wce != st.mode.wce || new.d_sense != st.mode.d_sense || new.swp != st.mode.swp;
    let cache_off = st.mode.wce && !new.wce;
    st.mode = new;
    if changed {
        // MODE PARAMETERS CHANGED for everyone else.
        st.ua.broadcast(Some(ctx.nexus_id()), 0x2A, 0x01);
    }
    drop(st);
    if cache_off {
        // Writes are FUA from now on; make the ones already cached durable too.
        lu.store.flush().map_err(ScsiError::from_write)?;
    }
    Ok(Reply::good())
}
