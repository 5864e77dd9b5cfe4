//! Resource limits over real sockets: the per-session command window (RFC 7143 section 4.2.2.1),
//! the task-set cap for immediate commands, the target-wide TCP connection cap and the
//! negotiated MaxRecvDataSegmentLength.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{start_server_with, Client, TARGET};
use rewind_protocol::{DataOut, Pdu};

/// Serial number arithmetic (RFC 1982): `a < b`.
fn sn_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < (1 << 31)
}

/// (ExpCmdSN, MaxCmdSN) carried by a target PDU.
fn window_of(p: &Pdu) -> Option<(u32, u32)> {
    match p {
        Pdu::ScsiResponse(r) => Some((r.exp_cmd_sn, r.max_cmd_sn)),
        Pdu::R2t(r) => Some((r.exp_cmd_sn, r.max_cmd_sn)),
        Pdu::NopIn(r) => Some((r.exp_cmd_sn, r.max_cmd_sn)),
        Pdu::DataIn(r) => Some((r.exp_cmd_sn, r.max_cmd_sn)),
        Pdu::LoginResponse(r) => Some((r.exp_cmd_sn, r.max_cmd_sn)),
        _ => None,
    }
}

/// Tracks the newest MaxCmdSN the target advertised, as an initiator must (it never goes back).
struct Window {
    max: u32,
}

impl Window {
    fn see(&mut self, p: &Pdu) {
        if let Some((_, max)) = window_of(p) {
            if sn_lt(self.max, max) {
                self.max = max;
            }
        }
    }
}

fn write10_cdb(lba: u32) -> [u8; 10] {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x2a;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[8] = 1;
    cdb
}

/// The next PDU that is not an unsolicited target ping.
async fn next(c: &mut Client, w: &mut Window, t: Duration) -> Option<Pdu> {
    loop {
        let p = c.recv_timeout(t).await?;
        w.see(&p);
        if matches!(&p, Pdu::NopIn(n) if n.itt == 0xffff_ffff) {
            continue;
        }
        return Some(p);
    }
}

async fn ping(c: &mut Client, w: &mut Window) {
    let itt = c.send_ping(b"ping").await;
    match next(c, w, Duration::from_secs(5)).await {
        Some(Pdu::NopIn(n)) if n.itt == itt => {}
        other => panic!("expected the NOP-In answer, got {other:?}"),
    }
}

/// Send a WRITE(10) of one block without data (InitialR2T=Yes): the target answers with an R2T
/// and the command stays outstanding until its Data-Out arrives. Returns (ITT, TTT).
async fn write_waiting_for_data(
    c: &mut Client,
    w: &mut Window,
    lba: u32,
    immediate: bool,
) -> Result<(u32, u32), u8> {
    let mut cmd = c.command(&write10_cdb(lba), 0, &[0u8; 512]);
    if immediate {
        cmd.immediate = true;
        c.cmd_sn = cmd.cmd_sn; // immediate commands do not use up a CmdSN
    }
    let itt = cmd.itt;
    c.send(&Pdu::ScsiCommand(cmd)).await;
    match next(c, w, Duration::from_secs(5)).await {
        Some(Pdu::R2t(r)) if r.itt == itt => Ok((itt, r.ttt)),
        Some(Pdu::ScsiResponse(r)) if r.itt == itt => Err(r.status),
        other => panic!("expected an R2T for itt {itt}, got {other:?}"),
    }
}

async fn send_data(c: &mut Client, itt: u32, ttt: u32, fill: u8) {
    let d = Pdu::DataOut(DataOut {
        final_: true,
        lun: 0,
        itt,
        ttt,
        exp_stat_sn: c.exp_stat_sn,
        data_sn: 0,
        buffer_offset: 0,
        data: Bytes::from(vec![fill; 512]),
    });
    c.send(&d).await;
}

async fn expect_good(c: &mut Client, w: &mut Window, itt: u32) {
    match next(c, w, Duration::from_secs(5)).await {
        Some(Pdu::ScsiResponse(r)) if r.itt == itt => assert_eq!(r.status, 0, "itt {itt}"),
        other => panic!("expected the SCSI Response for itt {itt}, got {other:?}"),
    }
}

/// RFC 7143 section 4.2.2.1: MaxCmdSN - ExpCmdSN + 1 is the room left for commands. With
/// `queue_depth` commands outstanding the window is closed; a command beyond MaxCmdSN is
/// silently ignored (not executed, no answer), and the session carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_window_caps_outstanding_commands() {
    const DEPTH: u32 = 4;
    let s = start_server_with(|c| c.iscsi.queue_depth = DEPTH).await;
    let mut c = Client::connect(s.addr).await;
    let r = c.login(Some(TARGET), &[("InitialR2T", "Yes")]).await;
    assert_eq!(r.status_class, 0);
    assert_eq!(r.exp_cmd_sn, c.cmd_sn);
    assert_eq!(
        r.max_cmd_sn.wrapping_sub(r.exp_cmd_sn).wrapping_add(1),
        DEPTH,
        "the login response opens a window of queue_depth commands"
    );
    let mut w = Window { max: r.max_cmd_sn };

    // Fill the window with writes that wait for their Data-Out.
    let mut pending = Vec::new();
    for i in 0..DEPTH {
        assert!(
            !sn_lt(w.max, c.cmd_sn),
            "window closed after {i} commands, before queue_depth"
        );
        let (itt, ttt) = write_waiting_for_data(&mut c, &mut w, 10 + i, false)
            .await
            .expect("a command inside the window is accepted");
        pending.push((itt, ttt, 10 + i));
    }
    assert_eq!(
        w.max,
        c.cmd_sn.wrapping_sub(1),
        "with queue_depth commands outstanding MaxCmdSN must close the window"
    );

    // One more, beyond MaxCmdSN: a write with all its data, which would complete at once.
    let beyond = c.cmd_sn;
    let mut cmd = c.command(&write10_cdb(99), 0, &[0x5a; 512]);
    cmd.data = Bytes::from(vec![0x5a; 512]);
    c.send(&Pdu::ScsiCommand(cmd)).await;
    c.cmd_sn = beyond; // it was not taken, so the next command reuses its CmdSN
    assert!(
        next(&mut c, &mut w, Duration::from_millis(700))
            .await
            .is_none(),
        "a command beyond MaxCmdSN gets no answer"
    );
    ping(&mut c, &mut w).await;
    assert_eq!(
        w.max,
        beyond.wrapping_sub(1),
        "the ignored command did not move the window"
    );

    // Completing the outstanding commands reopens the window.
    for &(itt, ttt, lba) in &pending {
        send_data(&mut c, itt, ttt, lba as u8).await;
        expect_good(&mut c, &mut w, itt).await;
    }
    assert_eq!(
        w.max,
        c.cmd_sn.wrapping_add(DEPTH - 1),
        "the window reopens as commands complete"
    );
    for &(_, _, lba) in &pending {
        assert_eq!(c.read10(lba, 1, 512).await.data, vec![lba as u8; 512]);
    }
    assert_eq!(
        c.read10(99, 1, 512).await.data,
        vec![0u8; 512],
        "the command beyond MaxCmdSN was never executed"
    );
}

/// Immediate commands are outside the CmdSN window; the task table still caps them, and the
/// ones over the cap get TASK SET FULL (0x28) while the session stays healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_commands_over_the_cap_get_task_set_full() {
    const DEPTH: u32 = 4;
    let s = start_server_with(|c| c.iscsi.queue_depth = DEPTH).await;
    let mut c = Client::connect(s.addr).await;
    let r = c.login(Some(TARGET), &[("InitialR2T", "Yes")]).await;
    assert_eq!(r.status_class, 0);
    let mut w = Window { max: r.max_cmd_sn };
    let mut pending = Vec::new();
    let full = loop {
        let lba = pending.len() as u32;
        match write_waiting_for_data(&mut c, &mut w, lba, true).await {
            Ok((itt, ttt)) => pending.push((itt, ttt)),
            Err(status) => break status,
        }
        assert!(
            pending.len() <= 64,
            "no cap on outstanding immediate commands"
        );
    };
    assert_eq!(full, 0x28, "TASK SET FULL");
    assert!(
        pending.len() >= DEPTH as usize,
        "at least queue_depth commands fit ({} did)",
        pending.len()
    );
    ping(&mut c, &mut w).await;
    // One finishes; the next one fits again.
    let (itt, ttt) = pending.remove(0);
    send_data(&mut c, itt, ttt, 1).await;
    expect_good(&mut c, &mut w, itt).await;
    let again = write_waiting_for_data(&mut c, &mut w, 200, true).await;
    assert!(again.is_ok(), "room again after one completed: {again:?}");
}

/// `max_tcp_connections`: a connection over the cap is not served (it waits in the accept
/// queue) and does not disturb the others; once one closes, it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tcp_connection_cap_refuses_extra_connections_promptly() {
    const CAP: u8 = 3;
    let s = start_server_with(|c| c.iscsi.max_tcp_connections = u32::from(CAP)).await;
    let mut held = Vec::new();
    for i in 0..CAP {
        let mut c = Client::connect(s.addr).await;
        c.isid[5] = i;
        assert_eq!(c.login(Some(TARGET), &[]).await.status_class, 0);
        held.push(c);
    }
    // One more is refused at once: its login is answered Target Error / Out of Resources and
    // the connection closed, while the others keep working.
    let mut extra = Client::connect(s.addr).await;
    extra.isid[5] = 0x40;
    let req = extra.first_login_request(TARGET);
    extra.send(&req).await;
    match extra.recv_timeout(Duration::from_secs(3)).await {
        Some(Pdu::LoginResponse(r)) => assert_eq!(
            (r.status_class, r.status_detail),
            (3, 2),
            "out of resources"
        ),
        other => panic!("expected a prompt login refusal, got {other:?}"),
    }
    assert!(
        extra.closed_within(Duration::from_secs(3)).await,
        "and closed"
    );
    for c in &mut held {
        let mut w = Window { max: 0 };
        ping(c, &mut w).await;
    }
    assert_eq!(s.running.ctx.sessions.len(), usize::from(CAP));

    // One closes: once the target has seen it go, a new connection is served (an initiator
    // retries after Out of Resources; so does this one, for up to 5 s).
    drop(held.remove(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let next = loop {
        let mut next = Client::connect(s.addr).await;
        next.isid[5] = 0x42;
        let r = next.login(Some(TARGET), &[]).await;
        if r.status_class == 0 {
            break next;
        }
        assert_eq!(
            (r.status_class, r.status_detail),
            (3, 2),
            "only out of resources"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "served once room frees"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    held.push(next);
    for c in &mut held {
        let mut w = Window { max: 0 };
        ping(c, &mut w).await;
    }
}

/// A data segment one byte longer than the target's declared MaxRecvDataSegmentLength closes
/// the connection from the header alone (nothing is read or allocated for it); exactly the
/// limit is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_segment_over_max_recv_data_segment_length_is_refused() {
    const MRDSL: u32 = 8192;
    let s = start_server_with(|c| c.iscsi.max_recv_data_segment_length = MRDSL).await;
    let nop_header = |c: &Client, len: u32| {
        let mut bhs = [0u8; 48];
        bhs[0] = 0x40; // NOP-Out, immediate
        bhs[1] = 0x80;
        bhs[5..8].copy_from_slice(&len.to_be_bytes()[1..]);
        bhs[16..20].copy_from_slice(&7u32.to_be_bytes());
        bhs[20..24].copy_from_slice(&0xffff_ffffu32.to_be_bytes());
        bhs[24..28].copy_from_slice(&c.cmd_sn.to_be_bytes());
        bhs[28..32].copy_from_slice(&c.exp_stat_sn.to_be_bytes());
        bhs
    };

    let mut good = Client::connect(s.addr).await;
    let r = good.login(Some(TARGET), &[]).await;
    assert_eq!(r.status_class, 0);
    let declared = rewind_protocol::text::parse_pairs(&r.data).expect("keys");
    assert!(
        declared
            .iter()
            .any(|(k, v)| k == "MaxRecvDataSegmentLength" && *v == MRDSL.to_string()),
        "{declared:?}"
    );
    // Exactly the limit: the target waits for the data, then echoes it.
    let bhs = nop_header(&good, MRDSL);
    good.send_raw(&bhs).await.expect("send");
    assert!(
        good.recv_timeout(Duration::from_millis(300))
            .await
            .is_none(),
        "the target waits for the announced data"
    );
    good.send_raw(&vec![0x33; MRDSL as usize])
        .await
        .expect("send");
    match good.recv().await {
        Some(Pdu::NopIn(n)) => assert_eq!(n.data.len(), MRDSL as usize),
        other => panic!("expected the NOP-In echo, got {other:?}"),
    }

    // One byte more: closed on the header, without the target waiting for the data.
    let mut bad = Client::connect(s.addr).await;
    bad.isid[5] = 0x77;
    assert_eq!(bad.login(Some(TARGET), &[]).await.status_class, 0);
    let bhs = nop_header(&bad, MRDSL + 1);
    bad.send_raw(&bhs).await.expect("send");
    assert!(
        bad.closed_within(Duration::from_secs(3)).await,
        "a data segment over MaxRecvDataSegmentLength closes the connection"
    );
    let mut w = Window { max: 0 };
    ping(&mut good, &mut w).await;
}
