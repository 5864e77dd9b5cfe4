//! The target over a real TCP socket: login, discovery, and malformed input that must get a
//! Reject or a clean close, never a panic, while other sessions keep working.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{start_server, Client, TARGET};
use rewind_protocol::opcode::RejectReason;
use rewind_protocol::text::parse_pairs;
use rewind_protocol::Pdu;

async fn healthy(addr: std::net::SocketAddr) -> Client {
    let mut c = Client::connect(addr).await;
    let r = c.login(Some(TARGET), &[]).await;
    assert_eq!((r.status_class, r.status_detail), (0, 0), "login succeeds");
    c
}

async fn ping(c: &mut Client) {
    let itt = c.send_ping(b"ping").await;
    match c.recv().await {
        Some(Pdu::NopIn(n)) => {
            assert_eq!(n.itt, itt);
            assert_eq!(&n.data[..], b"ping");
        }
        other => panic!("expected NOP-In, got {other:?}"),
    }
}

#[tokio::test]
async fn discovery_lists_the_default_target() {
    let s = start_server().await;
    let mut c = Client::connect(s.addr).await;
    let r = c.login(None, &[]).await;
    assert_eq!((r.status_class, r.status_detail), (0, 0), "login succeeds");
    assert_eq!((r.transit, r.nsg), (true, 3), "full feature phase");
    // The test client offers these in discovery too; RFC 7143 section 13 marks them irrelevant.
    let answers = parse_pairs(&r.data).expect("login answer parses");
    for key in [
        "InitialR2T",
        "ImmediateData",
        "MaxBurstLength",
        "FirstBurstLength",
    ] {
        assert_eq!(
            answer_to(&answers, key),
            Some("Irrelevant"),
            "{key}: {answers:?}"
        );
    }
    let targets = c.send_targets().await;
    assert!(
        targets
            .iter()
            .any(|(k, v)| k == "TargetName" && v == TARGET),
        "{targets:?}"
    );
    let portal = format!("{},1", s.addr);
    assert!(
        targets
            .iter()
            .any(|(k, v)| k == "TargetAddress" && *v == portal),
        "{targets:?}"
    );
}

#[tokio::test]
async fn unknown_target_is_not_found() {
    let s = start_server().await;
    let mut c = Client::connect(s.addr).await;
    let r = c.login(Some("iqn.2026-11.dev.rewind:nope"), &[]).await;
    assert_eq!((r.status_class, r.status_detail), (2, 3));
    assert!(c.closed_within(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn garbage_before_login_closes_only_that_connection() {
    let s = start_server().await;
    let mut good = healthy(s.addr).await;
    let mut bad = Client::connect(s.addr).await;
    bad.send_raw(&[0xde; 200]).await.expect("send garbage");
    assert!(
        bad.closed_within(Duration::from_secs(5)).await,
        "garbage gets the connection closed"
    );
    ping(&mut good).await;
}

#[tokio::test]
async fn lying_data_length_is_refused_before_allocation() {
    let s = start_server().await;
    let mut good = healthy(s.addr).await;
    let mut bad = Client::connect(s.addr).await;
    bad.isid[5] = 0x99; // another initiator port, so this is not a reinstatement
    assert_eq!(bad.login(Some(TARGET), &[]).await.status_class, 0);
    // A NOP-Out whose DataSegmentLength claims 16 MiB - 1, far beyond MaxRecvDataSegmentLength.
    let mut bhs = [0u8; 48];
    bhs[0] = 0x40;
    bhs[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    bhs[16..20].copy_from_slice(&7u32.to_be_bytes());
    bhs[20..24].copy_from_slice(&0xffff_ffffu32.to_be_bytes());
    bad.send_raw(&bhs).await.expect("send");
    assert!(bad.closed_within(Duration::from_secs(5)).await);
    ping(&mut good).await;
}

#[tokio::test]
async fn unknown_opcode_gets_a_reject() {
    let s = start_server().await;
    let mut c = healthy(s.addr).await;
    let mut bhs = [0u8; 48];
    bhs[0] = 0x1c; // not an initiator opcode
    bhs[16..20].copy_from_slice(&9u32.to_be_bytes());
    c.send_raw(&bhs).await.expect("send");
    match c.recv().await {
        Some(Pdu::Reject(r)) => {
            assert_eq!(r.reason, RejectReason::COMMAND_NOT_SUPPORTED);
            assert_eq!(&r.header[..], &bhs[..], "the Reject quotes the header");
        }
        other => panic!("expected Reject, got {other:?}"),
    }
    ping(&mut c).await;
}

#[tokio::test]
async fn truncated_pdu_then_close_leaves_target_serving() {
    let s = start_server().await;
    let mut bad = Client::connect(s.addr).await;
    bad.send_raw(&[0x43, 0x87, 0, 0, 0, 0]).await.expect("send");
    drop(bad);
    let mut good = healthy(s.addr).await;
    ping(&mut good).await;
}

#[tokio::test]
async fn login_pdu_in_full_feature_phase_is_rejected() {
    let s = start_server().await;
    let mut c = healthy(s.addr).await;
    let req = Pdu::LoginRequest(rewind_protocol::LoginRequest {
        transit: false,
        cont: false,
        csg: 1,
        nsg: 0,
        version_max: 0,
        version_min: 0,
        isid: c.isid,
        tsih: c.tsih,
        itt: 99,
        cid: 0,
        cmd_sn: c.cmd_sn,
        exp_stat_sn: c.exp_stat_sn,
        data: Bytes::new(),
    });
    c.send(&req).await;
    match c.recv().await {
        Some(Pdu::Reject(r)) => assert_eq!(r.reason, RejectReason::PROTOCOL_ERROR),
        other => panic!("expected Reject, got {other:?}"),
    }
    ping(&mut c).await;
}

/// The target's answer to key `k` in a login or text response's pairs.
fn answer_to<'a>(answers: &'a [(String, String)], k: &str) -> Option<&'a str> {
    answers
        .iter()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn out_of_range_offers_are_rejected_and_the_login_goes_on() {
    let s = start_server().await;
    let mut c = Client::connect(s.addr).await;
    // The test client offers FirstBurstLength before these, so its answer waits for them.
    let r = c
        .login(
            Some(TARGET),
            &[
                ("MaxBurstLength", "12"),
                ("DefaultTime2Wait", "0x100000000"),
                ("InitialR2T", "Yes"),
                ("ImmediateData", "No"),
            ],
        )
        .await;
    assert_eq!((r.status_class, r.status_detail), (0, 0), "login succeeds");
    assert_eq!((r.transit, r.nsg), (true, 3), "full feature phase");
    let answers = parse_pairs(&r.data).expect("login answer parses");
    let answer = |k: &str| answer_to(&answers, k);
    assert_eq!(answer("MaxBurstLength"), Some("Reject"));
    assert_eq!(answer("DefaultTime2Wait"), Some("Reject"));
    assert_eq!(answer("FirstBurstLength"), Some("Irrelevant"));
    assert_eq!(answer("InitialR2T"), Some("Yes"));
    assert_eq!(answer("ImmediateData"), Some("No"));
    ping(&mut c).await;
}

#[tokio::test]
async fn first_burst_length_is_answered_within_max_burst_length() {
    let s = start_server().await;
    let mut c = Client::connect(s.addr).await;
    // The test client offers FirstBurstLength=262144; the extra key goes after it.
    let r = c.login(Some(TARGET), &[("MaxBurstLength", "65536")]).await;
    assert_eq!((r.status_class, r.status_detail), (0, 0), "login succeeds");
    let answers = parse_pairs(&r.data).expect("login answer parses");
    let answer = |k: &str| answer_to(&answers, k);
    assert_eq!(answer("MaxBurstLength"), Some("65536"));
    assert_eq!(answer("FirstBurstLength"), Some("65536"));
    ping(&mut c).await;
}

#[tokio::test]
async fn header_digests_are_negotiated_and_used() {
    let s = start_server().await;
    let mut c = Client::connect(s.addr).await;
    let r = c
        .login(
            Some(TARGET),
            &[("HeaderDigest", "CRC32C,None"), ("DataDigest", "CRC32C")],
        )
        .await;
    assert_eq!(r.status_class, 0);
    assert!(c.cfg.header_digest && c.cfg.data_digest);
    ping(&mut c).await;
}

#[tokio::test]
async fn session_reinstatement_replaces_the_old_session() {
    let s = start_server().await;
    let mut old = healthy(s.addr).await;
    let mut new = healthy(s.addr).await; // same initiator name and ISID
    assert!(
        old.closed_within(Duration::from_secs(5)).await,
        "the old session is closed"
    );
    ping(&mut new).await;
    assert_eq!(s.running.ctx.sessions.len(), 1);
}

#[tokio::test]
async fn volumes_with_4096_byte_blocks() {
    let s = common::start_server_with(|c| {
        c.volumes.push(rewind::config::VolumeConfig {
            name: "big".into(),
            path: None,
            size: Some("64MiB".into()),
            block_size: 4096,
            read_only: false,
            journal: None,
        })
    })
    .await;
    let mut c = Client::connect(s.addr).await;
    assert_eq!(
        c.login(Some("iqn.2026-11.dev.rewind:big"), &[])
            .await
            .status_class,
        0
    );
    // READ CAPACITY (16): last LBA and block length.
    let mut cdb = [0u8; 16];
    cdb[0] = 0x9e;
    cdb[1] = 0x10;
    cdb[13] = 32;
    let r = c.scsi(&cdb, 32, &[]).await;
    assert_eq!(r.status, 0);
    assert_eq!(
        u64::from_be_bytes(r.data[0..8].try_into().expect("8 bytes")),
        (64 << 20) / 4096 - 1
    );
    assert_eq!(
        u32::from_be_bytes(r.data[8..12].try_into().expect("4 bytes")),
        4096
    );
    let data: Vec<u8> = (0..3 * 4096).map(|i| (i % 251) as u8).collect();
    assert_eq!(c.write10(5, &data, 4096).await.status, 0);
    assert_eq!(c.read10(5, 3, 4096).await.data, data);
}
