//! Persistent reservations (SPC-4 5.13): PERSISTENT RESERVE IN and OUT.
//!
//! Registrations belong to an I_T nexus named by its initiator and target port names, so they
//! survive sessions (a new session with the same ISID is the same I_T nexus). State is kept in
//! memory only: APTPL is not offered.

use super::cdb::{field, param, put_be, truncate};
use super::lu::{CmdResult, Ctx, LogicalUnit, LuState, Reply};
use super::opcodes::Access;
use super::sense::ScsiError;
use super::Nexus;

const WRITE_EXCLUSIVE: u8 = 1;
const EXCLUSIVE_ACCESS: u8 = 3;
const WRITE_EXCLUSIVE_RO: u8 = 5;
const EXCLUSIVE_ACCESS_RO: u8 = 6;
const WRITE_EXCLUSIVE_AR: u8 = 7;
const EXCLUSIVE_ACCESS_AR: u8 = 8;

/// Most registrations kept per logical unit.
const MAX_REGISTRATIONS: usize = 1024;

#[derive(Debug, Clone)]
struct Registration {
    key: u64,
    initiator_port: String,
    target_port: String,
    relative_port: u16,
}

impl Registration {
    fn is(&self, n: &Nexus) -> bool {
        self.initiator_port.eq_ignore_ascii_case(&n.initiator_port)
            && self.target_port.eq_ignore_ascii_case(&n.target_port)
    }

    fn same_nexus(&self, o: &Registration) -> bool {
        self.initiator_port.eq_ignore_ascii_case(&o.initiator_port)
            && self.target_port.eq_ignore_ascii_case(&o.target_port)
    }
}

#[derive(Debug, Clone)]
struct Reservation {
    rtype: u8,
    /// The holder (for all-registrants types every registrant holds it).
    holder: Registration,
}

#[derive(Debug, Default)]
pub(crate) struct PrState {
    generation: u32,
    regs: Vec<Registration>,
    reservation: Option<Reservation>,
}

fn all_registrants(rtype: u8) -> bool {
    matches!(rtype, WRITE_EXCLUSIVE_AR | EXCLUSIVE_ACCESS_AR)
}

fn registrants_only(rtype: u8) -> bool {
    matches!(
        rtype,
        WRITE_EXCLUSIVE_RO | EXCLUSIVE_ACCESS_RO | WRITE_EXCLUSIVE_AR | EXCLUSIVE_ACCESS_AR
    )
}

fn valid_type(rtype: u8) -> bool {
    matches!(
        rtype,
        WRITE_EXCLUSIVE
            | EXCLUSIVE_ACCESS
            | WRITE_EXCLUSIVE_RO
            | EXCLUSIVE_ACCESS_RO
            | WRITE_EXCLUSIVE_AR
            | EXCLUSIVE_ACCESS_AR
    )
}

impl PrState {
    /// Any registration or reservation (SPC-2 RESERVE/RELEASE then conflict).
    pub fn active(&self) -> bool {
        !self.regs.is_empty() || self.reservation.is_some()
    }

    fn registration(&self, n: &Nexus) -> Option<&Registration> {
        self.regs.iter().find(|r| r.is(n))
    }

    fn is_holder(&self, n: &Nexus) -> bool {
        match &self.reservation {
            None => false,
            Some(r) if all_registrants(r.rtype) => self.registration(n).is_some(),
            Some(r) => r.holder.is(n),
        }
    }

    /// Whether a command of class `access` from `n` conflicts with the reservation.
    pub fn conflicts(&self, n: &Nexus, access: Access) -> bool {
        let Some(r) = &self.reservation else {
            return false;
        };
        if matches!(access, Access::Always | Access::Reserve) || self.is_holder(n) {
            return false;
        }
        let registered = self.registration(n).is_some();
        match r.rtype {
            WRITE_EXCLUSIVE => access == Access::Write,
            EXCLUSIVE_ACCESS => true,
            WRITE_EXCLUSIVE_RO | WRITE_EXCLUSIVE_AR => !registered && access == Access::Write,
            EXCLUSIVE_ACCESS_RO | EXCLUSIVE_ACCESS_AR => !registered,
            _ => false,
        }
    }
}

pub(crate) fn pr_in(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let sa = ctx.cdb[1] & 0x1F;
    let alloc = field(ctx.cdb, 7, 2)?;
    let st = lu.state();
    let pr = &st.pr;
    let mut out = vec![0u8; 8];
    put_be(&mut out, 0, 4, pr.generation as u64);
    match sa {
        0x00 => {
            for r in &pr.regs {
                out.extend_from_slice(&r.key.to_be_bytes());
            }
        }
        0x01 => {
            if let Some(r) = &pr.reservation {
                let mut d = [0u8; 16];
                if !all_registrants(r.rtype) {
                    put_be(&mut d, 0, 8, r.holder.key);
                }
                d[13] = r.rtype & 0x0F;
                out.extend_from_slice(&d);
            }
        }
        0x02 => {
            out = vec![0u8; 8];
            put_be(&mut out, 0, 2, 8);
            out[3] = 0x80; // TMV; ALLOW COMMANDS 0
            out[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02; // WR_EX_AR EX_AC_RO WR_EX_RO EX_AC WR_EX
            out[5] = 0x01; // EX_AC_AR
            return Ok(Reply::data(truncate(out, alloc)));
        }
        0x03 => {
            for r in &pr.regs {
                let holder = pr.is_holder(&Nexus {
                    id: 0,
                    initiator_port: r.initiator_port.clone(),
                    target_port: r.target_port.clone(),
                    relative_port: r.relative_port,
                });
                let tid = transport_id(&r.initiator_port);
                let mut d = vec![0u8; 24];
                put_be(&mut d, 0, 8, r.key);
                if holder {
                    d[12] = 0x01;
                    d[13] = pr.reservation.as_ref().map(|x| x.rtype & 0x0F).unwrap_or(0);
                }
                put_be(&mut d, 18, 2, r.relative_port as u64);
                put_be(&mut d, 20, 4, tid.len() as u64);
                out.extend(d);
                out.extend(tid);
            }
        }
        _ => return Err(ScsiError::invalid_cdb(1)),
    }
    let len = out.len() as u64 - 8;
    put_be(&mut out, 4, 4, len);
    Ok(Reply::data(truncate(out, alloc)))
}

/// iSCSI TransportID of an initiator port (`<name>,i,0x<isid>`).
fn transport_id(initiator_port: &str) -> Vec<u8> {
    let with_isid = initiator_port.to_ascii_lowercase().contains(",i,0x");
    let mut v = vec![if with_isid { 0x45 } else { 0x05 }, 0, 0, 0];
    v.extend(initiator_port.bytes().take(1000));
    v.push(0);
    while v.len() % 4 != 0 || v.len() < 24 {
        v.push(0);
    }
    let len = v.len() as u64 - 4;
    put_be(&mut v, 2, 2, len);
    v
}

fn ua_to(st: &mut LuState, r: &Registration, asc: u8, ascq: u8) {
    st.ua
        .send_to_ports(&r.initiator_port, &r.target_port, asc, ascq);
}

pub(crate) fn pr_out(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let sa = ctx.cdb[1] & 0x1F;
    let scope = ctx.cdb[2] >> 4;
    let rtype = ctx.cdb[2] & 0x0F;
    let plen = field(ctx.cdb, 5, 4)?;
    let p = ctx.params(plen);
    if plen != 24 || p.len() < 24 {
        return Err(ScsiError::ParamListLength);
    }
    let key = param(p, 0, 8)?;
    let sa_key = param(p, 8, 8)?;
    let flags = p[20];
    for bit in [3u8, 2, 0] {
        // SPEC_I_PT, ALL_TG_PT and APTPL are not supported (capabilities say so).
        if flags & (1 << bit) != 0 {
            return Err(ScsiError::InvalidFieldInParam {
                byte: 20,
                bit: Some(bit),
            });
        }
    }
    let n = &ctx.req.nexus;
    let me = Registration {
        key: sa_key,
        initiator_port: n.initiator_port.clone(),
        target_port: n.target_port.clone(),
        relative_port: n.relative_port,
    };
    let mut guard = lu.state();
    let st = &mut *guard;
    let registered = st.pr.registration(n).cloned();
    let check_type = || -> Result<(), ScsiError> {
        if scope != 0 || !valid_type(rtype) {
            return Err(ScsiError::invalid_cdb(2));
        }
        Ok(())
    };
    match sa {
        // REGISTER / REGISTER AND IGNORE EXISTING KEY
        0x00 | 0x06 => {
            match &registered {
                None => {
                    if sa == 0x00 && key != 0 {
                        return Err(ScsiError::ReservationConflict);
                    }
                    if sa_key == 0 {
                        return Ok(Reply::good());
                    }
                    if st.pr.regs.len() >= MAX_REGISTRATIONS {
                        return Err(ScsiError::NoRegistrationResources);
                    }
                    st.pr.regs.push(me);
                }
                Some(r) => {
                    if sa == 0x00 && key != r.key {
                        return Err(ScsiError::ReservationConflict);
                    }
                    if sa_key == 0 {
                        unregister(st, n);
                    } else if let Some(x) = st.pr.regs.iter_mut().find(|x| x.is(n)) {
                        x.key = sa_key;
                        if let Some(res) = st.pr.reservation.as_mut() {
                            if res.holder.is(n) {
                                res.holder.key = sa_key;
                            }
                        }
                    }
                }
            }
            st.pr.generation = st.pr.generation.wrapping_add(1);
        }
        // RESERVE
        0x01 => {
            let r = registered.ok_or(ScsiError::ReservationConflict)?;
            if r.key != key {
                return Err(ScsiError::ReservationConflict);
            }
            check_type()?;
            match &st.pr.reservation {
                Some(res) => {
                    if !(st.pr.is_holder(n) && res.rtype == rtype) {
                        return Err(ScsiError::ReservationConflict);
                    }
                }
                None => st.pr.reservation = Some(Reservation { rtype, holder: r }),
            }
        }
        // RELEASE
        0x02 => {
            let r = registered.ok_or(ScsiError::ReservationConflict)?;
            if r.key != key {
                return Err(ScsiError::ReservationConflict);
            }
            let Some(res) = st.pr.reservation.clone() else {
                return Ok(Reply::good());
            };
            if !st.pr.is_holder(n) {
                return Ok(Reply::good());
            }
            if scope != 0 || res.rtype != rtype {
                return Err(ScsiError::InvalidRelease);
            }
            st.pr.reservation = None;
            if registrants_only(res.rtype) {
                let others: Vec<Registration> =
                    st.pr.regs.iter().filter(|x| !x.is(n)).cloned().collect();
                for o in &others {
                    ua_to(st, o, 0x2A, 0x04); // RESERVATIONS RELEASED
                }
            }
        }
        // CLEAR
        0x03 => {
            let r = registered.ok_or(ScsiError::ReservationConflict)?;
            if r.key != key {
                return Err(ScsiError::ReservationConflict);
            }
            let others: Vec<Registration> =
                st.pr.regs.iter().filter(|x| !x.is(n)).cloned().collect();
            st.pr.regs.clear();
            st.pr.reservation = None;
            for o in &others {
                ua_to(st, o, 0x2A, 0x03); // RESERVATIONS PREEMPTED
            }
            st.pr.generation = st.pr.generation.wrapping_add(1);
        }
        // PREEMPT / PREEMPT AND ABORT
        0x04 | 0x05 => {
            let r = registered.ok_or(ScsiError::ReservationConflict)?;
            if r.key != key {
                return Err(ScsiError::ReservationConflict);
            }
            check_type()?;
            preempt(st, n, r, sa_key, rtype)?;
            st.pr.generation = st.pr.generation.wrapping_add(1);
        }
        _ => return Err(ScsiError::invalid_cdb(1)),
    }
    Ok(Reply::good())
}

fn unregister(st: &mut LuState, n: &Nexus) {
    st.pr.regs.retain(|x| !x.is(n));
    let Some(res) = st.pr.reservation.clone() else {
        return;
    };
    let release = if all_registrants(res.rtype) {
        st.pr.regs.is_empty()
    } else {
        res.holder.is(n)
    };
    if release {
        st.pr.reservation = None;
        if registrants_only(res.rtype) {
            let others = st.pr.regs.clone();
            for o in &others {
                ua_to(st, o, 0x2A, 0x04);
            }
        }
    }
}

/// Remove every registration with `sa_key` except the caller's own; returns the removed ones.
fn remove_key(st: &mut LuState, n: &Nexus, sa_key: u64) -> Vec<Registration> {
    let (gone, keep): (Vec<Registration>, Vec<Registration>) = st
        .pr
        .regs
        .drain(..)
        .partition(|x| x.key == sa_key && !x.is(n));
    st.pr.regs = keep;
    for g in &gone {
        ua_to(st, g, 0x2A, 0x05); // REGISTRATIONS PREEMPTED
    }
    gone
}

fn preempt(
    st: &mut LuState,
    n: &Nexus,
    me: Registration,
    sa_key: u64,
    rtype: u8,
) -> Result<(), ScsiError> {
    match st.pr.reservation.clone() {
        None => {
            if sa_key == 0 {
                return Err(ScsiError::invalid_param(8));
            }
            if remove_key(st, n, sa_key).is_empty() {
                return Err(ScsiError::ReservationConflict);
            }
        }
        Some(res) if all_registrants(res.rtype) => {
            if sa_key == 0 {
                let others: Vec<Registration> =
                    st.pr.regs.iter().filter(|x| !x.is(n)).cloned().collect();
                st.pr.regs.retain(|x| x.is(n));
                for o in &others {
                    ua_to(st, o, 0x2A, 0x05);
                }
                st.pr.reservation = Some(Reservation { rtype, holder: me });
            } else if remove_key(st, n, sa_key).is_empty() {
                return Err(ScsiError::ReservationConflict);
            }
        }
        Some(res) if sa_key == res.holder.key => {
            let gone = remove_key(st, n, sa_key);
            let same = res.holder.same_nexus(&me);
            if gone.is_empty() && !same {
                return Err(ScsiError::ReservationConflict);
            }
            st.pr.reservation = Some(Reservation { rtype, holder: me });
            if res.rtype != rtype && registrants_only(res.rtype) {
                let others: Vec<Registration> =
                    st.pr.regs.iter().filter(|x| !x.is(n)).cloned().collect();
                for o in &others {
                    ua_to(st, o, 0x2A, 0x04);
                }
            }
        }
        Some(_) => {
            if sa_key == 0 {
                return Err(ScsiError::invalid_param(8));
            }
            if remove_key(st, n, sa_key).is_empty() {
                return Err(ScsiError::ReservationConflict);
            }
        }
    }
    Ok(())
}
