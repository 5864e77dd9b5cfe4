//! The session's command window: CmdSN ordering across connections (RFC 7143 section 4.2.2.1).
//!
//! Non-immediate requests are admitted strictly in CmdSN order. One that arrives early waits
//! until the gap before it is filled; one outside `[ExpCmdSN, MaxCmdSN]` is ignored, as the RFC
//! says. `MaxCmdSN = ExpCmdSN + depth - 1`.

use std::collections::HashMap;

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
    /// Early arrivals by CmdSN.
    waiting: HashMap<u32, oneshot::Sender<()>>,
}

impl CmdWindow {
    pub fn new(first_cmd_sn: u32, depth: u32) -> CmdWindow {
        CmdWindow {
            exp_cmd_sn: first_cmd_sn,
            depth: depth.max(1),
            waiting: HashMap::new(),
        }
    }

    pub fn exp_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn
    }

    pub fn max_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn.wrapping_add(self.depth - 1)
    }

    /// A non-immediate request with `cmd_sn` arrived.
    pub fn admit(&mut self, cmd_sn: u32) -> Admission {
        if sn_lt(cmd_sn, self.exp_cmd_sn) || sn_lt(self.max_cmd_sn(), cmd_sn) {
            return Admission::Ignore;
        }
        if cmd_sn == self.exp_cmd_sn {
            self.advance();
            return Admission::Now;
        }
        if self.waiting.contains_key(&cmd_sn) {
            return Admission::Ignore;
        }
        let (tx, rx) = oneshot::channel();
        self.waiting.insert(cmd_sn, tx);
        Admission::Later(rx)
    }

    /// Step past the admitted request and release every waiter that is now in order.
    fn advance(&mut self) {
        self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
        while let Some(tx) = self.waiting.remove(&self.exp_cmd_sn) {
            // A waiter that gave up (receiver dropped) still used its CmdSN.
            let _ = tx.send(());
            self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
        }
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
        assert!(matches!(w.admit(10), Admission::Now));
        let Admission::Later(mut r12) = w.admit(12) else {
            panic!("12 must wait")
        };
        assert!(r12.try_recv().is_err());
        assert!(matches!(w.admit(12), Admission::Ignore), "duplicate CmdSN");
        assert!(matches!(w.admit(9), Admission::Ignore), "already seen");
        assert!(
            matches!(w.admit(15), Admission::Ignore),
            "beyond MaxCmdSN 14"
        );
        assert!(matches!(w.admit(11), Admission::Now));
        assert!(r12.try_recv().is_ok(), "gap filled releases 12");
        assert_eq!(w.exp_cmd_sn(), 13);
        assert_eq!(w.waiting(), 0);
    }

    #[test]
    fn window_wraps_around_zero() {
        let mut w = CmdWindow::new(u32::MAX, 8);
        let Admission::Later(mut r) = w.admit(1) else {
            panic!("1 must wait")
        };
        assert!(matches!(w.admit(u32::MAX), Admission::Now));
        assert!(matches!(w.admit(0), Admission::Now));
        assert!(r.try_recv().is_ok());
        assert_eq!(w.exp_cmd_sn(), 2);
    }
}
