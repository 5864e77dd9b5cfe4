//! Arbitrary bytes through the framer under several connection configurations. Whatever
//! decodes must re-encode into a frame that decodes again; encoding may normalise a few fields
//! once (see the `pdu` module), after which encode/decode is an exact round trip.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rewind_protocol::{decode, encode, FrameConfig};

const CONFIGS: [FrameConfig; 5] = [
    FrameConfig {
        header_digest: false,
        data_digest: false,
        max_recv_data_segment: 8192,
    },
    FrameConfig {
        header_digest: true,
        data_digest: true,
        max_recv_data_segment: 8192,
    },
    FrameConfig {
        header_digest: true,
        data_digest: false,
        max_recv_data_segment: 262_144,
    },
    FrameConfig {
        header_digest: false,
        data_digest: true,
        max_recv_data_segment: 0,
    },
    FrameConfig {
        header_digest: false,
        data_digest: false,
        max_recv_data_segment: 0x00ff_ffff,
    },
];

fuzz_target!(|data: &[u8]| {
    for cfg in &CONFIGS {
        let mut buf = BytesMut::from(data);
        loop {
            let before = buf.len();
            match decode(&mut buf, cfg) {
                Ok(Some(pdu)) => {
                    assert!(buf.len() < before);
                    let mut first = BytesMut::new();
                    encode(&pdu, cfg, &mut first);
                    let wire = first.clone();
                    let again = decode(&mut first, cfg)
                        .expect("re-encoded PDU decodes")
                        .expect("re-encoded PDU is whole");
                    assert!(first.is_empty());
                    assert_eq!(again.opcode(), pdu.opcode());
                    let mut second = BytesMut::new();
                    encode(&again, cfg, &mut second);
                    assert_eq!(second, wire);
                }
                Ok(None) => break,
                Err(e) if e.consumed => assert!(buf.len() < before),
                Err(_) => break,
            }
        }
    }
});
