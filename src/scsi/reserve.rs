//! SPC-2 RESERVE / RELEASE (6) and (10). Conflicts with persistent reservations are checked
//! before these run (see `LogicalUnit::check_conflict`).

use super::lu::{CmdResult, Ctx, LogicalUnit, Reply};
use super::sense::ScsiError;

pub(crate) fn reserve(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let mut st = lu.state();
    match st.reserved_by {
        Some(h) if h != ctx.nexus_id() => Err(ScsiError::ReservationConflict),
        _ => {
            st.reserved_by = Some(ctx.nexus_id());
            Ok(Reply::good())
        }
    }
}

pub(crate) fn release(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let mut st = lu.state();
    if st.reserved_by == Some(ctx.nexus_id()) {
        st.reserved_by = None;
    }
    Ok(Reply::good())
}
