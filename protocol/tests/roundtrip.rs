//! Property tests: encode/decode round trips for every PDU, with and without digests; prefixes
//! of a frame are "need more bytes"; arbitrary input never panics.

use bytes::{Buf, Bytes, BytesMut};
use proptest::prelude::*;
use rewind_protocol::frame::DecodeErrorKind;
use rewind_protocol::*;

fn data(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

fn cfg() -> impl Strategy<Value = FrameConfig> {
    (any::<bool>(), any::<bool>()).prop_map(|(h, d)| FrameConfig {
        header_digest: h,
        data_digest: d,
        max_recv_data_segment: 8192,
    })
}

fn nop_out() -> impl Strategy<Value = Pdu> {
    (any::<(bool, u64, u32, u32, u32, u32)>(), data(300)).prop_map(
        |((immediate, lun, itt, ttt, cmd_sn, exp_stat_sn), data)| {
            Pdu::NopOut(NopOut {
                immediate,
                lun,
                itt,
                ttt,
                cmd_sn,
                exp_stat_sn,
                data,
            })
        },
    )
}

fn nop_in() -> impl Strategy<Value = Pdu> {
    (any::<(u64, u32, u32, u32, u32, u32)>(), data(300)).prop_map(
        |((lun, itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn), data)| {
            Pdu::NopIn(NopIn {
                lun,
                itt,
                ttt,
                stat_sn,
                exp_cmd_sn,
                max_cmd_sn,
                data,
            })
        },
    )
}

fn scsi_command() -> impl Strategy<Value = Pdu> {
    (
        any::<(bool, bool, bool, bool)>(),
        0u8..8,
        any::<(u64, u32, u32, u32, u32)>(),
        proptest::collection::vec(any::<u8>(), 16..=260).prop_map(Bytes::from),
        any::<Option<u32>>(),
        data(300),
    )
        .prop_map(
            |(
                (immediate, final_, read, write),
                attr,
                (lun, itt, expected_data_len, cmd_sn, exp_stat_sn),
                cdb,
                bidi_read_len,
                data,
            )| {
                Pdu::ScsiCommand(ScsiCommand {
                    immediate,
                    final_,
                    read,
                    write,
                    attr: TaskAttr(attr),
                    lun,
                    itt,
                    expected_data_len,
                    cmd_sn,
                    exp_stat_sn,
                    cdb,
                    bidi_read_len,
                    data,
                })
            },
        )
}

fn scsi_response() -> impl Strategy<Value = Pdu> {
    (
        any::<(bool, bool, bool, bool, u8, u8)>(),
        any::<(u32, u32, u32, u32, u32, u32, u32, u32)>(),
        data(300),
    )
        .prop_map(
            |(
                (bidi_overflow, bidi_underflow, overflow, underflow, response, status),
                (
                    itt,
                    snack_tag,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                    exp_data_sn,
                    bidi_residual,
                    residual,
                ),
                data,
            )| {
                Pdu::ScsiResponse(ScsiResponse {
                    bidi_overflow,
                    bidi_underflow,
                    overflow,
                    underflow,
                    response,
                    status,
                    itt,
                    snack_tag,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                    exp_data_sn,
                    bidi_residual,
                    residual,
                    data,
                })
            },
        )
}

fn tmf_request() -> impl Strategy<Value = Pdu> {
    (
        any::<bool>(),
        0u8..128,
        any::<(u64, u32, u32, u32, u32, u32, u32)>(),
    )
        .prop_map(
            |(
                immediate,
                function,
                (lun, itt, rtt, cmd_sn, exp_stat_sn, ref_cmd_sn, exp_data_sn),
            )| {
                Pdu::TaskMgmtRequest(TaskMgmtRequest {
                    immediate,
                    function,
                    lun,
                    itt,
                    referenced_task_tag: rtt,
                    cmd_sn,
                    exp_stat_sn,
                    ref_cmd_sn,
                    exp_data_sn,
                })
            },
        )
}

fn tmf_response() -> impl Strategy<Value = Pdu> {
    any::<(u8, u32, u32, u32, u32)>().prop_map(
        |(response, itt, stat_sn, exp_cmd_sn, max_cmd_sn)| {
            Pdu::TaskMgmtResponse(TaskMgmtResponse {
                response,
                itt,
                stat_sn,
                exp_cmd_sn,
                max_cmd_sn,
            })
        },
    )
}

fn login_request() -> impl Strategy<Value = Pdu> {
    (
        any::<(bool, bool)>(),
        0u8..4,
        0u8..4,
        any::<(u8, u8, [u8; 6], u16, u32, u16, u32, u32)>(),
        data(300),
    )
        .prop_map(
            |(
                (transit, cont),
                csg,
                nsg,
                (version_max, version_min, isid, tsih, itt, cid, cmd_sn, exp_stat_sn),
                data,
            )| {
                Pdu::LoginRequest(LoginRequest {
                    transit,
                    cont,
                    csg,
                    nsg,
                    version_max,
                    version_min,
                    isid,
                    tsih,
                    itt,
                    cid,
                    cmd_sn,
                    exp_stat_sn,
                    data,
                })
            },
        )
}

fn login_response() -> impl Strategy<Value = Pdu> {
    (
        any::<(bool, bool)>(),
        0u8..4,
        0u8..4,
        any::<(u8, u8, [u8; 6], u16, u32)>(),
        any::<(u32, u32, u32, u8, u8)>(),
        data(300),
    )
        .prop_map(
            |(
                (transit, cont),
                csg,
                nsg,
                (version_max, version_active, isid, tsih, itt),
                (stat_sn, exp_cmd_sn, max_cmd_sn, status_class, status_detail),
                data,
            )| {
                Pdu::LoginResponse(LoginResponse {
                    transit,
                    cont,
                    csg,
                    nsg,
                    version_max,
                    version_active,
                    isid,
                    tsih,
                    itt,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                    status_class,
                    status_detail,
                    data,
                })
            },
        )
}

fn text_request() -> impl Strategy<Value = Pdu> {
    (
        any::<(bool, bool, bool, u64, u32, u32, u32, u32)>(),
        data(300),
    )
        .prop_map(
            |((immediate, final_, cont, lun, itt, ttt, cmd_sn, exp_stat_sn), data)| {
                Pdu::TextRequest(TextRequest {
                    immediate,
                    final_,
                    cont,
                    lun,
                    itt,
                    ttt,
                    cmd_sn,
                    exp_stat_sn,
                    data,
                })
            },
        )
}

fn text_response() -> impl Strategy<Value = Pdu> {
    (
        any::<(bool, bool, u64, u32, u32, u32, u32, u32)>(),
        data(300),
    )
        .prop_map(
            |((final_, cont, lun, itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn), data)| {
                Pdu::TextResponse(TextResponse {
                    final_,
                    cont,
                    lun,
                    itt,
                    ttt,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                    data,
                })
            },
        )
}

fn data_out() -> impl Strategy<Value = Pdu> {
    (any::<(bool, u64, u32, u32, u32, u32, u32)>(), data(600)).prop_map(
        |((final_, lun, itt, ttt, exp_stat_sn, data_sn, buffer_offset), data)| {
            Pdu::DataOut(DataOut {
                final_,
                lun,
                itt,
                ttt,
                exp_stat_sn,
                data_sn,
                buffer_offset,
                data,
            })
        },
    )
}

fn data_in() -> impl Strategy<Value = Pdu> {
    (
        any::<(bool, bool, bool, bool, Option<u8>)>(),
        any::<(u64, u32, u32, u32, u32, u32, u32, u32, u32)>(),
        data(600),
    )
        .prop_map(
            |(
                (final_, ack, overflow, underflow, status),
                (lun, itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn, data_sn, buffer_offset, residual),
                data,
            )| {
                // Canonical: status implies F; StatSN only meaningful with status.
                Pdu::DataIn(DataIn {
                    final_: final_ || status.is_some(),
                    ack,
                    overflow,
                    underflow,
                    status,
                    lun,
                    itt,
                    ttt,
                    stat_sn: if status.is_some() { stat_sn } else { 0 },
                    exp_cmd_sn,
                    max_cmd_sn,
                    data_sn,
                    buffer_offset,
                    residual,
                    data,
                })
            },
        )
}

fn logout_request() -> impl Strategy<Value = Pdu> {
    (any::<bool>(), 0u8..128, any::<(u32, u16, u32, u32)>()).prop_map(
        |(immediate, reason, (itt, cid, cmd_sn, exp_stat_sn))| {
            Pdu::LogoutRequest(LogoutRequest {
                immediate,
                reason,
                itt,
                cid,
                cmd_sn,
                exp_stat_sn,
            })
        },
    )
}

fn logout_response() -> impl Strategy<Value = Pdu> {
    any::<(u8, u32, u32, u32, u32, u16, u16)>().prop_map(
        |(response, itt, stat_sn, exp_cmd_sn, max_cmd_sn, time2wait, time2retain)| {
            Pdu::LogoutResponse(LogoutResponse {
                response,
                itt,
                stat_sn,
                exp_cmd_sn,
                max_cmd_sn,
                time2wait,
                time2retain,
            })
        },
    )
}

fn snack() -> impl Strategy<Value = Pdu> {
    (0u8..16, any::<(u64, u32, u32, u32, u32, u32)>()).prop_map(
        |(kind, (lun, itt, ttt, exp_stat_sn, beg_run, run_length))| {
            Pdu::Snack(Snack {
                kind,
                lun,
                itt,
                ttt,
                exp_stat_sn,
                beg_run,
                run_length,
            })
        },
    )
}

fn r2t() -> impl Strategy<Value = Pdu> {
    any::<(u64, u32, u32, u32, u32, u32, u32, u32, u32)>().prop_map(
        |(lun, itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn, r2t_sn, buffer_offset, desired_len)| {
            Pdu::R2t(R2t {
                lun,
                itt,
                ttt,
                stat_sn,
                exp_cmd_sn,
                max_cmd_sn,
                r2t_sn,
                buffer_offset,
                desired_len,
            })
        },
    )
}

fn async_message() -> impl Strategy<Value = Pdu> {
    (
        any::<(u64, u32, u32, u32, u8, u8, u16, u16, u16)>(),
        data(300),
    )
        .prop_map(
            |(
                (lun, stat_sn, exp_cmd_sn, max_cmd_sn, event, vcode, param1, param2, param3),
                data,
            )| {
                Pdu::AsyncMessage(AsyncMessage {
                    lun,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                    event,
                    vcode,
                    param1,
                    param2,
                    param3,
                    data,
                })
            },
        )
}

fn reject() -> impl Strategy<Value = Pdu> {
    (any::<(u8, u32, u32, u32, u32)>(), data(100)).prop_map(
        |((reason, stat_sn, exp_cmd_sn, max_cmd_sn, data_sn_r2t_sn), header)| {
            Pdu::Reject(Reject {
                reason,
                stat_sn,
                exp_cmd_sn,
                max_cmd_sn,
                data_sn_r2t_sn,
                header,
            })
        },
    )
}

fn any_pdu() -> impl Strategy<Value = Pdu> {
    prop_oneof![
        nop_out(),
        scsi_command(),
        tmf_request(),
        login_request(),
        text_request(),
        data_out(),
        logout_request(),
        snack(),
        nop_in(),
        scsi_response(),
        tmf_response(),
        login_response(),
        text_response(),
        data_in(),
        logout_response(),
        r2t(),
        async_message(),
        reject(),
    ]
}

fn wire(pdu: &Pdu, cfg: &FrameConfig) -> BytesMut {
    let mut out = BytesMut::new();
    encode(pdu, cfg, &mut out);
    out
}

/// Whatever decodes re-encodes to a frame that decodes again; after at most one normalising
/// encode, encoding is stable.
fn check_reencode(p: &Pdu, cfg: &FrameConfig) -> Result<(), TestCaseError> {
    let first = wire(p, cfg);
    let mut buf = first.clone();
    let again = decode(&mut buf, cfg).unwrap().unwrap();
    prop_assert!(buf.is_empty());
    prop_assert_eq!(again.opcode(), p.opcode());
    prop_assert_eq!(again.itt(), p.itt());
    prop_assert_eq!(wire(&again, cfg), first);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn round_trip(pdu in any_pdu(), cfg in cfg()) {
        let mut buf = wire(&pdu, &cfg);
        prop_assert_eq!(buf.len() % 4, 0);
        let got = decode(&mut buf, &cfg).unwrap().unwrap();
        prop_assert_eq!(&got, &pdu);
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got.opcode(), pdu.opcode());
        prop_assert_eq!(got.itt(), pdu.itt());
    }

    #[test]
    fn vectored_parts_match(pdu in any_pdu(), cfg in cfg()) {
        let parts = encode_parts(&pdu, &cfg).unwrap();
        let full = wire(&pdu, &cfg);
        prop_assert_eq!(parts.len(), full.len());
        let mut buf = parts.into_buf();
        let joined = buf.copy_to_bytes(buf.remaining());
        prop_assert_eq!(&joined[..], &full[..]);
    }

    #[test]
    fn back_to_back(pdus in proptest::collection::vec(any_pdu(), 1..5), cfg in cfg()) {
        let mut buf = BytesMut::new();
        for p in &pdus {
            encode(p, &cfg, &mut buf);
        }
        for p in &pdus {
            prop_assert_eq!(&decode(&mut buf, &cfg).unwrap().unwrap(), p);
        }
        prop_assert_eq!(decode(&mut buf, &cfg), Ok(None));
    }

    #[test]
    fn prefixes_need_more(pdu in any_pdu(), cfg in cfg()) {
        let full = wire(&pdu, &cfg);
        for n in 0..full.len() {
            let mut buf = BytesMut::from(&full[..n]);
            prop_assert_eq!(decode(&mut buf, &cfg), Ok(None));
            prop_assert_eq!(buf.len(), n);
        }
    }

    #[test]
    fn data_corruption_is_detected(pdu in any_pdu(), pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let cfg = FrameConfig { header_digest: true, data_digest: true, max_recv_data_segment: 8192 };
        let mut buf = wire(&pdu, &cfg);
        let data_len = pdu.data().len();
        let data_start = buf.len() - data_len - (4 - data_len % 4) % 4 - if data_len > 0 { 4 } else { 0 };
        // Corrupt one byte anywhere in the frame.
        let i = pos.index(buf.len());
        buf[i] ^= flip;
        let r = decode(&mut buf, &cfg);
        if i < data_start {
            match r {
                Err(e) => {
                    let ok = matches!(e.kind, DecodeErrorKind::HeaderDigest | DecodeErrorKind::DataSegmentTooLong { .. });
                    prop_assert!(ok, "unexpected error {:?}", e);
                    prop_assert!(!e.consumed);
                }
                // A corrupted length may claim more bytes than there are.
                Ok(None) => {}
                Ok(Some(p)) => prop_assert!(false, "corrupt header accepted: {:?}", p),
            }
        } else {
            let e = r.unwrap_err();
            prop_assert_eq!(e.kind, DecodeErrorKind::DataDigest);
            prop_assert!(e.consumed);
            prop_assert!(buf.is_empty());
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), cfg in cfg(), max in prop_oneof![Just(0u32), Just(512), Just(8192), Just(0xff_ffff)]) {
        let cfg = FrameConfig { max_recv_data_segment: max, ..cfg };
        let mut buf = BytesMut::from(&bytes[..]);
        loop {
            let before = buf.len();
            match decode(&mut buf, &cfg) {
                Ok(Some(p)) => {
                    prop_assert!(buf.len() < before);
                    check_reencode(&p, &cfg)?;
                }
                Ok(None) => break,
                Err(e) if e.consumed => prop_assert!(buf.len() < before),
                Err(_) => break,
            }
        }
    }

    #[test]
    fn random_headers_never_panic(mut header in proptest::array::uniform32(any::<u8>()), tail in proptest::collection::vec(any::<u8>(), 16..1200)) {
        // Mostly-valid framing with random fields: known opcode, small AHS, data length within
        // the buffer, no digests (so that the opcode-specific parsers see the input).
        const OPS: [u8; 18] = [
            0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25,
            0x26, 0x31, 0x32, 0x3f,
        ];
        let cfg = FrameConfig::default();
        header[0] = (header[0] & 0xc0) | OPS[usize::from(header[0] & 0x3f) % OPS.len()];
        header[4] %= 8;
        header[5] = 0;
        header[6] = 0;
        header[7] %= 64;
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(&tail);
        let mut buf = BytesMut::from(&bytes[..]);
        loop {
            match decode(&mut buf, &cfg) {
                Ok(Some(p)) => check_reencode(&p, &cfg)?,
                Err(DecodeError { consumed: true, .. }) => {}
                _ => break,
            }
        }
    }

    #[test]
    fn oversized_data_rejected_from_header_alone(len in 8193u32..0x100_0000) {
        let cfg = FrameConfig::default();
        let pdu = Pdu::DataOut(DataOut { final_: true, lun: 0, itt: 1, ttt: 2, exp_stat_sn: 0, data_sn: 0, buffer_offset: 0, data: Bytes::new() });
        let mut buf = wire(&pdu, &cfg);
        buf[5..8].copy_from_slice(&len.to_be_bytes()[1..]);
        let e = decode(&mut buf, &cfg).unwrap_err();
        prop_assert_eq!(e.kind, DecodeErrorKind::DataSegmentTooLong { len, max: 8192 });
        prop_assert!(!e.consumed);
        prop_assert_eq!(buf.len(), 48);
    }
}
