//! The session's command window: CmdSN ordering across connections (RFC 7143 section 4.2.2.1).
//!
//! Non-immediate requests are admitted strictly in CmdSN order. One that arrives early waits
//! until the gap before it is filled; one outside `[ExpCmdSN, MaxCmdSN]` is ignored, as the RFC
//! says. SCSI commands hold a slot of the window from admission until their status is sent
//! (`finish`), so `MaxCmdSN = ExpCmdSN + depth - 1 - (commands holding a slot)`: the window an
//! initiator sees never lets more than `depth` commands be outstanding, and it only grows.

use std::collections::{HashMap, HashSet};

use tokio::sync::oneshot;

/// Serial number arithmetic (RFC 1982, 32 bits): is `a < b`?
pub fn sn_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < (1 << 31)
}

/// `a <= b` in serial arithmetic.
pub fn sn_le(a: u32, b: u32) -> bool {
    a == b || sn_lt(a, b)
}

#[derive(Debug)]
pub enum Admission {
    /// In order: go ahead now.
    Now,
    /// Early: go ahead when the receiver fires (or give up if it is dropped).
    Later(oneshot::Receiver<()>),
    /// Outside the window (a duplicate or beyond MaxCmdSN): ignore the request.
    Ignore,
}

#[derive(Debug)]
pub struct CmdWindow {
    exp_cmd_sn: u32,
    depth: u32,
    /// Early arrivals by CmdSN, and whether each will hold a slot once admitted.
    waiting: HashMap<u32, (oneshot::Sender<()>, bool)>,
    /// Admitted commands that hold a slot until they finish, by CmdSN.
    outstanding: HashSet<u32>,
}

impl CmdWindow {
    pub fn new(first_cmd_sn: u32, depth: u32) -> CmdWindow {
        CmdWindow {
            exp_cmd_sn: first_cmd_sn,
            depth: depth.max(1),
            waiting: HashMap::new(),
            outstanding: HashSet::new(),
        }
    }

    pub fn exp_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn
    }

    /// `ExpCmdSN - 1` (a closed window) when every slot is held.
    pub fn max_cmd_sn(&self) -> u32 {
        let held = u32::try_from(self.outstanding.len()).unwrap_or(u32::MAX);
        let room = self.depth.saturating_sub(held);
        self.exp_cmd_sn.wrapping_add(room).wrapping_sub(1)
    }

    /// A non-immediate request with `cmd_sn` arrived. With `holds_slot` (SCSI commands) it keeps
    /// a slot of the window from admission until [`CmdWindow::finish`].
    pub fn admit(&mut self, cmd_sn: u32, holds_slot: bool) -> Admission {
        if sn_lt(cmd_sn, self.exp_cmd_sn) || sn_lt(self.max_cmd_sn(), cmd_sn) {
            return Admission::Ignore;
        }
        if cmd_sn == self.exp_cmd_sn {
            if holds_slot {
                self.outstanding.insert(cmd_sn);
            }
            self.advance();
            return Admission::Now;
        }
        if self.waiting.contains_key(&cmd_sn) {
            return Admission::Ignore;
        }
        let (tx, rx) = oneshot::channel();
        self.waiting.insert(cmd_sn, (tx, holds_slot));
        Admission::Later(rx)
    }

    /// The command admitted with `cmd_sn` is done (its status is about to be sent, or it ended
    /// without one): its slot frees. Calling it again, or for a CmdSN without a slot, does
    /// nothing.
    pub fn finish(&mut self, cmd_sn: u32) {
        self.outstanding.remove(&cmd_sn);
    }

    /// Step past the admitted request and release every waiter that is now in order.
    fn advance(&mut self) {
        self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
        while let Some((tx, holds_slot)) = self.waiting.remove(&self.exp_cmd_sn) {
            // A waiter that gave up (receiver dropped) still used its CmdSN, but holds no slot.
            if tx.send(()).is_ok() && holds_slot {
                self.outstanding.insert(self.exp_cmd_sn);
            }
            self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
        }
    }

    /// How many admitted commands hold a slot.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// How many requests are held back waiting for a gap to fill.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_arithmetic_wraps() {
        assert!(sn_lt(1, 2));
        assert!(sn_lt(u32::MAX, 0));
        assert!(!sn_lt(0, u32::MAX));
        assert!(sn_le(5, 5));
    }

    #[test]
    fn in_order_and_out_of_order_arrival() {
        let mut w = CmdWindow::new(10, 4);
        assert_eq!(w.max_cmd_sn(), 13);
        assert!(matches!(w.admit(10, false), Admission::Now));
        let Admission::Later(mut r12) = w.admit(12, false) else {
            panic!("12 must wait")
        };
        assert!(r12.try_recv().is_err());
        assert!(
            matches!(w.admit(12, false), Admission::Ignore),
            "duplicate CmdSN"
        );
        assert!(
            matches!(w.admit(9, false), Admission::Ignore),
            "already seen"
        );
        assert!(
            matches!(w.admit(15, false), Admission::Ignore),
            "beyond MaxCmdSN 14"
        );
        assert!(matches!(w.admit(11, false), Admission::Now));
        assert!(r12.try_recv().is_ok(), "gap filled releases 12");
        assert_eq!(w.exp_cmd_sn(), 13);
        assert_eq!(w.waiting(), 0);
    }

    #[test]
    fn window_wraps_around_zero() {
        let mut w = CmdWindow::new(u32::MAX, 8);
        let Admission::Later(mut r) = w.admit(1, false) else {
            panic!("1 must wait")
        };
        assert!(matches!(w.admit(u32::MAX, false), Admission::Now));
        assert!(matches!(w.admit(0, false), Admission::Now));
        assert!(r.try_recv().is_ok());
        assert_eq!(w.exp_cmd_sn(), 2);
    }

    #[test]
    fn slots_close_the_window_until_commands_finish() {
        let mut w = CmdWindow::new(1, 3);
        assert_eq!(w.max_cmd_sn(), 3);
        assert!(matches!(w.admit(1, true), Admission::Now));
        assert_eq!(w.max_cmd_sn(), 3, "admitting does not move MaxCmdSN");
        let Admission::Later(mut r3) = w.admit(3, true) else {
            panic!("3 must wait")
        };
        assert!(matches!(w.admit(2, true), Admission::Now));
        assert!(r3.try_recv().is_ok());
        assert_eq!(w.outstanding(), 3);
        assert_eq!(w.max_cmd_sn(), 3, "closed: MaxCmdSN = ExpCmdSN - 1");
        assert!(matches!(w.admit(4, true), Admission::Ignore), "no room");
        w.finish(2);
        w.finish(2);
        assert_eq!(w.max_cmd_sn(), 4, "one slot back, once");
        // A non-SCSI request uses a CmdSN but no slot.
        assert!(matches!(w.admit(4, false), Admission::Now));
        assert_eq!(w.max_cmd_sn(), 5);
        w.finish(1);
        w.finish(3);
        assert_eq!(w.max_cmd_sn(), 7);
    }

    #[test]
    fn a_waiter_that_gave_up_holds_no_slot() {
        let mut w = CmdWindow::new(1, 4);
        let Admission::Later(r2) = w.admit(2, true) else {
            panic!("2 must wait")
        };
        drop(r2);
        assert!(matches!(w.admit(1, true), Admission::Now));
        assert_eq!(w.exp_cmd_sn(), 3);
        assert_eq!(w.outstanding(), 1);
        assert_eq!(w.max_cmd_sn(), 5);
    }
}
