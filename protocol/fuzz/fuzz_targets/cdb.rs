//! The SCSI command decoder and executor: any CDB with any Data-Out, on a small in-memory LU,
//! must produce a status (never panic). The input is split into a CDB (first byte = its
//! length, up to 32) and the Data-Out that follows.
#![no_main]

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rewind::scsi::{LogicalUnit, LuConfig, Nexus, ScsiRequest};
use rewind::storage::{shared, MemStore};

fn lu() -> &'static LogicalUnit {
    static LU: OnceLock<LogicalUnit> = OnceLock::new();
    LU.get_or_init(|| {
        let config = LuConfig {
            name: "fuzz".into(),
            serial: "0123456789abcdef".into(),
            naa_id: 0x0123_4567_89ab_cdef,
            vendor: "REWIND".into(),
            product: "fuzz".into(),
            revision: "0001".into(),
            read_only: false,
            thin: true,
        };
        LogicalUnit::new(config, shared(MemStore::new(2048, 512)))
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&len, rest)) = input.split_first() else { return };
    let len = usize::from(len % 33).min(rest.len());
    let (cdb, data) = rest.split_at(len);
    let req = ScsiRequest {
        nexus: Arc::new(Nexus {
            id: 1,
            initiator_port: "iqn.2026-11.dev.rewind.fuzz:i,i,0x000000000001".into(),
            target_port: "iqn.2026-11.dev.rewind:fuzz,t,0x0001".into(),
            relative_port: 1,
        }),
        cdb: Bytes::copy_from_slice(cdb),
        data_out: Bytes::copy_from_slice(data),
        expected_in_len: 65536,
        expected_out_len: data.len() as u32,
        task_attr: 1,
    };
    let outcome = lu().execute(&req);
    // A status always comes back; CHECK CONDITION carries sense data.
    assert!(outcome.status != 0x02 || outcome.sense.is_some());
});
