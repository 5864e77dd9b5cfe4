//! Byte fixtures of PDUs, hand-built from the RFC 7143 section 11 layouts, checked against the
//! decoder field by field and re-encoded byte for byte.

use bytes::{Bytes, BytesMut};
use rewind_protocol::frame::DecodeErrorKind;
use rewind_protocol::opcode::LoginStatus;
use rewind_protocol::text::parse_pairs;
use rewind_protocol::*;

const LOGIN_TEXT: &[u8] = b"InitiatorName=iqn.2004-10.com.ubuntu:01:5d3c7a1e2f\0\
InitiatorAlias=client\0TargetName=iqn.2024-01.org.example:disk0\0SessionType=Normal\0\
HeaderDigest=None\0DataDigest=None\0DefaultTime2Wait=2\0DefaultTime2Retain=0\0\
IFMarker=No\0OFMarker=No\0ErrorRecoveryLevel=0\0InitialR2T=No\0ImmediateData=Yes\0\
MaxBurstLength=16776192\0FirstBurstLength=262144\0MaxOutstandingR2T=1\0\
MaxConnections=1\0DataPDUInOrder=Yes\0DataSequenceInOrder=Yes\0\
MaxRecvDataSegmentLength=262144\0";

/// A first Login Request the way a Linux initiator sends it without authentication:
/// CSG=1 (operational), NSG=3 (full feature), T=1.
fn login_request_bytes() -> Vec<u8> {
    let len = LOGIN_TEXT.len();
    let mut v = vec![
        0x43, // I=1, opcode 0x03
        0x87, // T=1, C=0, CSG=01, NSG=11
        0x00, // Version-max
        0x00, // Version-min
        0x00, // TotalAHSLength
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
        0x00,
        0x02,
        0x3d,
        0x00,
        0x00,
        0x01, // ISID
        0x00,
        0x00, // TSIH
        0x00,
        0x00,
        0x00,
        0x00, // ITT
        0x00,
        0x00, // CID
        0x00,
        0x00, // reserved
        0x00,
        0x00,
        0x00,
        0x01, // CmdSN
        0x00,
        0x00,
        0x00,
        0x00, // ExpStatSN
    ];
    v.extend_from_slice(&[0u8; 16]); // reserved
    assert_eq!(v.len(), 48);
    v.extend_from_slice(LOGIN_TEXT);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

#[test]
fn login_request_fixture() {
    let wire = login_request_bytes();
    let cfg = FrameConfig::default();
    let mut buf = BytesMut::from(&wire[..]);
    let pdu = decode(&mut buf, &cfg).unwrap().unwrap();
    assert!(buf.is_empty());
    let Pdu::LoginRequest(ref l) = pdu else {
        panic!("not a login request: {pdu:?}")
    };
    assert!(l.transit && !l.cont);
    assert_eq!((l.csg, l.nsg), (1, 3));
    assert_eq!((l.version_max, l.version_min), (0, 0));
    assert_eq!(l.isid, [0x00, 0x02, 0x3d, 0x00, 0x00, 0x01]);
    assert_eq!(l.tsih, 0);
    assert_eq!(l.itt, 0);
    assert_eq!(l.cid, 0);
    assert_eq!(l.cmd_sn, 1);
    assert_eq!(l.exp_stat_sn, 0);
    assert_eq!(&l.data[..], LOGIN_TEXT);
    let pairs = parse_pairs(&l.data).unwrap();
    assert_eq!(pairs.len(), 20);
    assert_eq!(pairs[3], ("SessionType".into(), "Normal".into()));
    assert_eq!(pdu.opcode(), Opcode::LOGIN_REQUEST);
    assert!(pdu.immediate());

    let mut out = BytesMut::new();
    encode(&pdu, &cfg, &mut out);
    assert_eq!(&out[..], &wire[..]);
}

#[test]
fn login_response_fixture() {
    let text = b"TargetPortalGroupTag=1\0";
    let mut resp = LoginResponse {
        transit: true,
        cont: false,
        csg: 1,
        nsg: 3,
        version_max: 0,
        version_active: 0,
        isid: [0x00, 0x02, 0x3d, 0x00, 0x00, 0x01],
        tsih: 0x0102,
        itt: 0x1122_3344,
        stat_sn: 0x0a0b_0c0d,
        exp_cmd_sn: 2,
        max_cmd_sn: 33,
        status_class: 0,
        status_detail: 0,
        data: Bytes::from_static(text),
    };
    resp.set_status(LoginStatus::NOT_FOUND);
    assert_eq!(resp.status(), LoginStatus::NOT_FOUND);
    let mut out = BytesMut::new();
    encode(&Pdu::LoginResponse(resp), &FrameConfig::default(), &mut out);
    let mut expect = vec![
        0x23, 0x87, 0x00, 0x00, 0x00, 0x00, 0x00, 23, // opcode, flags, versions, lengths
        0x00, 0x02, 0x3d, 0x00, 0x00, 0x01, 0x01, 0x02, // ISID, TSIH
        0x11, 0x22, 0x33, 0x44, 0, 0, 0, 0, // ITT, reserved
        0x0a, 0x0b, 0x0c, 0x0d, 0, 0, 0, 2, // StatSN, ExpCmdSN
        0, 0, 0, 33, 0x02, 0x03, 0, 0, // MaxCmdSN, Status-Class, Status-Detail
        0, 0, 0, 0, 0, 0, 0, 0,
    ];
    expect.extend_from_slice(text);
    expect.push(0); // pad 23 -> 24
    assert_eq!(&out[..], &expect[..]);
}

/// A SCSI WRITE(10) command with 512 bytes of immediate data and the RFC's CRC example header.
#[test]
fn scsi_command_fixture_and_header_digest() {
    // The header of the CRC example in the iSCSI specification drafts.
    let header: [u8; 48] = [
        0x01, 0xa0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // op 0x01, F|W, no data
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // LUN 0
        0x04, 0x05, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, // ITT, ExpectedDataTransferLength
        0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x04, // CmdSN, ExpStatSN
        0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // CDB: WRITE(10)
        0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    let mut buf = BytesMut::from(&header[..]);
    let cfg = FrameConfig::default();
    let pdu = decode(&mut buf, &cfg).unwrap().unwrap();
    let Pdu::ScsiCommand(ref c) = pdu else {
        panic!("not a command")
    };
    assert!(c.final_ && c.write && !c.read);
    assert_eq!(c.attr, TaskAttr::UNTAGGED);
    assert_eq!(c.itt, 0x0405_0000);
    assert_eq!(c.expected_data_len, 0x0001_0000);
    assert_eq!(c.cmd_sn, 5);
    assert_eq!(c.exp_stat_sn, 4);
    assert_eq!(c.cdb.len(), 16);
    assert_eq!(c.op_code(), 0x2a);
    assert_eq!(c.cdb[8], 0x80);
    assert_eq!(c.bidi_read_len, None);

    // With header digests the same header is followed by its CRC32C, low byte first.
    let hd = FrameConfig {
        header_digest: true,
        ..cfg
    };
    let mut out = BytesMut::new();
    encode(&pdu, &hd, &mut out);
    assert_eq!(&out[..48], &header[..]);
    assert_eq!(
        &out[48..],
        &rewind_protocol::digest::crc32c(&header).to_le_bytes()
    );
    // The wire bytes given for this header in the specification examples.
    assert_eq!(&out[48..], &[0x93, 0x70, 0x51, 0xdb]);
    let mut buf = out.clone();
    assert_eq!(decode(&mut buf, &hd).unwrap().unwrap(), pdu);
    // A bad header digest is not consumed: the stream is out of sync.
    let mut bad = out.clone();
    bad[50] ^= 1;
    let e = decode(&mut bad, &hd).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::HeaderDigest);
    assert!(!e.consumed);
    assert_eq!(e.header, Some(header));
    assert_eq!(bad.len(), 52);
}

#[test]
fn scsi_command_with_extended_cdb_and_bidi_ahs() {
    // 32-byte CDB: 16 in the BHS, 16 in an Extended CDB AHS (AHSLength 17: 20 bytes in all),
    // then a Bidirectional Read Expected Data Transfer Length AHS (8 bytes).
    let cdb: Vec<u8> = (0x80u8..0xa0).collect();
    let mut wire = vec![0u8; 48];
    wire[0] = 0x01;
    wire[1] = 0x80 | 0x40 | 0x20 | 0x01; // F R W, SIMPLE
    wire[4] = 7; // (20 + 8) / 4
    wire[8..16].copy_from_slice(&[0x00, 0x01, 0, 0, 0, 0, 0, 0]);
    wire[16..20].copy_from_slice(&[0, 0, 0, 9]);
    wire[20..24].copy_from_slice(&4096u32.to_be_bytes());
    wire[32..48].copy_from_slice(&cdb[..16]);
    wire.extend_from_slice(&[0x00, 0x11, 0x01, 0x00]);
    wire.extend_from_slice(&cdb[16..]);
    wire.extend_from_slice(&[0x00, 0x05, 0x02, 0x00, 0x00, 0x00, 0x20, 0x00]);
    assert_eq!(wire.len(), 48 + 28);

    let cfg = FrameConfig::default();
    let mut buf = BytesMut::from(&wire[..]);
    let pdu = decode(&mut buf, &cfg).unwrap().unwrap();
    let Pdu::ScsiCommand(ref c) = pdu else {
        panic!("not a command")
    };
    assert_eq!(&c.cdb[..], &cdb[..]);
    assert_eq!(c.bidi_read_len, Some(0x2000));
    assert_eq!(c.attr, TaskAttr::SIMPLE);
    assert_eq!(c.lun, 0x0001_0000_0000_0000);
    assert!(c.read && c.write);
    let mut out = BytesMut::new();
    encode(&pdu, &cfg, &mut out);
    assert_eq!(&out[..], &wire[..]);
}

#[test]
fn malformed_ahs_is_consumed_with_header() {
    let mut wire = vec![0u8; 48];
    wire[0] = 0x01;
    wire[4] = 1;
    // AHS claims 40 bytes of content inside a 4-byte AHS area.
    wire.extend_from_slice(&[0x00, 0x28, 0x01, 0x00]);
    wire.extend_from_slice(&[0x00, 0x00, 0x00, 0x01]); // next PDU starts here (garbage)
    let mut buf = BytesMut::from(&wire[..]);
    let e = decode(&mut buf, &FrameConfig::default()).unwrap_err();
    assert!(matches!(e.kind, DecodeErrorKind::Malformed(_)));
    assert!(e.consumed);
    assert_eq!(buf.len(), 4);
}

#[test]
fn unknown_opcode_is_consumed_with_header() {
    let mut wire = vec![0u8; 48];
    wire[0] = 0x1c; // not an iSCSI opcode
    wire[7] = 5; // 5 data bytes + 3 padding
    wire.extend_from_slice(b"hello\0\0\0");
    wire.extend_from_slice(&login_request_bytes());
    let mut buf = BytesMut::from(&wire[..]);
    let cfg = FrameConfig::default();
    let e = decode(&mut buf, &cfg).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::UnknownOpcode(0x1c));
    assert!(e.consumed);
    let header = e.header.unwrap();
    assert_eq!(header[0], 0x1c);
    // The connection can go on: the next PDU decodes, and a Reject can quote the header.
    assert!(matches!(
        decode(&mut buf, &cfg),
        Ok(Some(Pdu::LoginRequest(_)))
    ));
    let rej = Reject::new(
        rewind_protocol::opcode::RejectReason::COMMAND_NOT_SUPPORTED,
        &header,
    );
    let mut out = BytesMut::new();
    encode(&Pdu::Reject(rej), &cfg, &mut out);
    assert_eq!(out.len(), 96);
    assert_eq!(out[0], 0x3f);
    assert_eq!(out[2], 0x05);
    assert_eq!(&out[16..20], &[0xff; 4]);
    assert_eq!(&out[48..], &header[..]);
}

#[test]
fn data_digest_mismatch_is_consumed() {
    let cfg = FrameConfig {
        header_digest: true,
        data_digest: true,
        max_recv_data_segment: 8192,
    };
    let pdu = Pdu::DataOut(DataOut {
        final_: true,
        lun: 0,
        itt: 7,
        ttt: 0x10,
        exp_stat_sn: 3,
        data_sn: 0,
        buffer_offset: 0,
        data: Bytes::from_static(&[0xab; 13]),
    });
    let mut out = BytesMut::new();
    encode(&pdu, &cfg, &mut out);
    assert_eq!(out.len(), 48 + 4 + 16 + 4);
    // Padding is covered by the data digest.
    let mut bad = out.clone();
    bad[48 + 4 + 14] = 1;
    let e = decode(&mut bad, &cfg).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::DataDigest);
    assert!(e.consumed);
    assert_eq!(e.header.map(|h| h[0]), Some(0x05));
    assert!(bad.is_empty());
    // No data, no data digest.
    let empty = Pdu::NopOut(NopOut {
        immediate: true,
        lun: 0,
        itt: 1,
        ttt: 0xffff_ffff,
        cmd_sn: 1,
        exp_stat_sn: 1,
        data: Bytes::new(),
    });
    let mut out = BytesMut::new();
    encode(&empty, &cfg, &mut out);
    assert_eq!(out.len(), 52);
}

#[test]
fn data_in_with_status_fixture() {
    let pdu = Pdu::DataIn(DataIn {
        final_: true,
        ack: false,
        overflow: false,
        underflow: true,
        status: Some(0),
        lun: 0,
        itt: 0x55,
        ttt: 0xffff_ffff,
        stat_sn: 0x10,
        exp_cmd_sn: 0x11,
        max_cmd_sn: 0x12,
        data_sn: 0,
        buffer_offset: 0,
        residual: 0x200,
        data: Bytes::from_static(&[1, 2, 3, 4]),
    });
    let mut out = BytesMut::new();
    encode(&pdu, &FrameConfig::default(), &mut out);
    assert_eq!(out[0], 0x25);
    assert_eq!(out[1], 0x80 | 0x02 | 0x01);
    assert_eq!(out[3], 0);
    assert_eq!(&out[24..28], &[0, 0, 0, 0x10]);
    assert_eq!(&out[44..48], &[0, 0, 2, 0]);
    // Without S, StatSN is reserved and written as zero.
    let Pdu::DataIn(mut d) = pdu else {
        unreachable!()
    };
    d.status = None;
    d.final_ = false;
    let mut out = BytesMut::new();
    encode(&Pdu::DataIn(d), &FrameConfig::default(), &mut out);
    assert_eq!(out[1], 0x02);
    assert_eq!(&out[24..28], &[0, 0, 0, 0]);
}

#[test]
fn scsi_response_sense() {
    let sense = [0x70, 0, 0x05, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0, 0x24, 0x00];
    let r = ScsiResponse {
        bidi_overflow: false,
        bidi_underflow: false,
        overflow: true,
        underflow: false,
        response: 0,
        status: 0x02,
        itt: 1,
        snack_tag: 0,
        stat_sn: 2,
        exp_cmd_sn: 3,
        max_cmd_sn: 4,
        exp_data_sn: 0,
        bidi_residual: 0,
        residual: 9,
        data: ScsiResponse::sense_segment(&sense),
    };
    assert_eq!(r.sense(), Some(&sense[..]));
    let mut out = BytesMut::new();
    encode(&Pdu::ScsiResponse(r), &FrameConfig::default(), &mut out);
    assert_eq!(&out[..4], &[0x21, 0x84, 0x00, 0x02]);
    assert_eq!(&out[5..8], &[0, 0, 16]);
    assert_eq!(&out[48..50], &[0, 14]);
}
