//! Session mechanics over real sockets: several connections in one session sharing the CmdSN
//! window, NOP-In pings to idle initiators and dropping dead ones, login timeouts and the
//! session cap.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{start_server_with, Client, TARGET};
use rewind_protocol::{NopOut, Pdu};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_share_one_session() {
    let s = start_server_with(|_| {}).await;
    let mut a = Client::connect(s.addr).await;
    let r = a.login(Some(TARGET), &[("MaxConnections", "2")]).await;
    assert_eq!(r.status_class, 0);
    let answers = rewind_protocol::text::parse_pairs(&r.data).expect("keys");
    assert!(
        answers
            .iter()
            .any(|(k, v)| k == "MaxConnections" && v == "2"),
        "{answers:?}"
    );

    // The second connection joins with the TSIH; CmdSN continues from the first connection's.
    let mut b = Client::connect(s.addr).await;
    b.isid = a.isid;
    b.tsih = a.tsih;
    b.cid = 1;
    b.cmd_sn = a.cmd_sn;
    let r = b.login(Some(TARGET), &[("MaxConnections", "2")]).await;
    assert_eq!(
        (r.status_class, r.status_detail),
        (0, 0),
        "second connection joins"
    );
    assert_eq!(r.tsih, a.tsih);
    assert_eq!(s.running.ctx.sessions.len(), 1, "still one session");

    let data = vec![0xabu8; 4096];
    assert_eq!(a.write10(8, &data, 512).await.status, 0);
    b.cmd_sn = a.cmd_sn;
    assert_eq!(
        b.read10(8, 8, 512).await.data,
        data,
        "the other connection reads it"
    );
    a.cmd_sn = b.cmd_sn;
    assert_eq!(a.read10(8, 8, 512).await.data, data);

    // A third connection is one too many.
    let mut c = Client::connect(s.addr).await;
    c.isid = a.isid;
    c.tsih = a.tsih;
    c.cid = 2;
    let r = c.login(Some(TARGET), &[]).await;
    assert_eq!(
        (r.status_class, r.status_detail),
        (2, 6),
        "too many connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_initiators_are_pinged_and_dead_ones_dropped() {
    let s = start_server_with(|c| {
        c.iscsi.nop_in_interval = Duration::from_millis(300);
        c.iscsi.nop_in_timeout = Duration::from_millis(1500);
    })
    .await;
    let mut alive = Client::connect(s.addr).await;
    assert_eq!(alive.login(Some(TARGET), &[]).await.status_class, 0);
    let mut dead = Client::connect(s.addr).await;
    dead.isid[5] = 0x42;
    assert_eq!(dead.login(Some(TARGET), &[]).await.status_class, 0);

    // The live initiator answers every ping and keeps its session for well past the timeout.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut pings = 0;
    while tokio::time::Instant::now() < until {
        if let Some(Pdu::NopIn(n)) = alive.recv_timeout(Duration::from_millis(500)).await {
            assert_eq!(n.itt, 0xffff_ffff, "a target ping");
            pings += 1;
            let answer = Pdu::NopOut(NopOut {
                immediate: true,
                lun: 0,
                itt: 0xffff_ffff,
                ttt: n.ttt,
                cmd_sn: alive.cmd_sn,
                exp_stat_sn: alive.exp_stat_sn,
                data: Bytes::new(),
            });
            alive.send(&answer).await;
        }
    }
    assert!(
        pings >= 2,
        "the target pings an idle initiator ({pings} pings)"
    );
    // The silent one was dropped.
    assert!(
        dead.closed_within(Duration::from_secs(2)).await,
        "an initiator that never answers is dropped"
    );
    assert_eq!(
        alive.read10(0, 1, 512).await.status,
        0,
        "the live session still works"
    );
}

#[tokio::test]
async fn a_client_that_never_logs_in_is_dropped() {
    let s = start_server_with(|c| c.iscsi.login_timeout = Duration::from_millis(500)).await;
    let mut quiet = Client::connect(s.addr).await;
    assert!(
        quiet.closed_within(Duration::from_secs(3)).await,
        "silent connection dropped after the login timeout"
    );
}

#[tokio::test]
async fn the_session_cap_answers_out_of_resources() {
    let s = start_server_with(|c| c.iscsi.max_sessions = 2).await;
    let mut clients = Vec::new();
    for i in 0..2u8 {
        let mut c = Client::connect(s.addr).await;
        c.isid[5] = i;
        assert_eq!(c.login(Some(TARGET), &[]).await.status_class, 0);
        clients.push(c);
    }
    let mut extra = Client::connect(s.addr).await;
    extra.isid[5] = 9;
    let r = extra.login(Some(TARGET), &[]).await;
    assert_eq!(
        (r.status_class, r.status_detail),
        (3, 2),
        "out of resources"
    );
}
