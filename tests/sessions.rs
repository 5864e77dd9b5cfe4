//! Session mechanics over real sockets: several connections in one session sharing the CmdSN
//! window, NOP-In pings to idle initiators and dropping dead ones, login timeouts and the
//! session cap.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{start_server_with, Client, TARGET};
use rewind_protocol::{NopOut, Pdu};

/// `volume resize` while an initiator is logged in: it gets a SCSI asynchronous event
/// carrying CAPACITY DATA HAS CHANGED, then the unit attention on its next command, and READ
/// CAPACITY (16) reports the new size; shrinking is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_a_volume_tells_logged_in_initiators() {
    use rewind::admin::Request;
    let s = start_server_with(|_| {}).await;
    let mut c = Client::connect(s.addr).await;
    assert_eq!(c.login(Some(TARGET), &[]).await.status_class, 0);
    let rc16 = [0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0];
    let r = c.scsi(&rc16, 32, &[]).await;
    assert_eq!(r.status, 0);
    let last = |d: &[u8]| u64::from_be_bytes(d[..8].try_into().expect("8 bytes"));
    let before = last(&r.data) + 1;
    let grown = (before + 2048) * 512;

    let v = s
        .admin(Request::VolumeResize {
            name: "vol0".into(),
            size: grown,
        })
        .await
        .expect("resize");
    assert_eq!(v["size_before"].as_u64(), Some(before * 512));
    match c.recv_timeout(Duration::from_secs(5)).await {
        Some(Pdu::AsyncMessage(m)) => {
            assert_eq!((m.event, m.lun), (0, 0));
            let n = u16::from_be_bytes([m.data[0], m.data[1]]) as usize;
            let sense = &m.data[2..2 + n];
            assert_eq!((sense[2] & 0x0F, sense[12], sense[13]), (6, 0x2A, 0x09));
        }
        other => panic!("expected an asynchronous event, got {other:?}"),
    }
    let r = c.scsi(&rc16, 32, &[]).await;
    assert_eq!(r.sense_triple(), Some((6, 0x2A, 0x09)), "unit attention");
    let r = c.scsi(&rc16, 32, &[]).await;
    assert_eq!((r.status, last(&r.data) + 1), (0, grown / 512));
    // The new blocks are there (and read as zeros); the end moved.
    let r = c.read10((grown / 512 - 1) as u32, 1, 512).await;
    assert_eq!(r.status, 0);
    assert!(r.data.iter().all(|&b| b == 0));
    assert_eq!(
        c.read10((grown / 512) as u32, 1, 512).await.sense_triple(),
        Some((5, 0x21, 0))
    );

    let e = s
        .admin(Request::VolumeResize {
            name: "vol0".into(),
            size: before * 512,
        })
        .await
        .expect_err("shrinking is refused");
    assert!(e.contains("only grow"), "{e}");
    let e = s
        .admin(Request::VolumeResize {
            name: "vol0".into(),
            size: grown + 100,
        })
        .await
        .expect_err("not whole blocks");
    assert!(e.contains("multiple"), "{e}");
    let meta = rewind::datadir::DataDir::open(s.dir.path())
        .and_then(|d| d.load("vol0"))
        .expect("volume.toml");
    assert_eq!(meta.size, grown, "volume.toml records the new size");
}

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
