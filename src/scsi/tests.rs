//! Logical unit tests driving `LogicalUnit::execute`.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::storage::{self, BlockStore, FileStore, MemStore};

fn config(thin: bool, read_only: bool) -> LuConfig {
    LuConfig {
        name: "vol0".into(),
        serial: "SER0001".into(),
        naa_id: 0x5001_4050_0000_0001,
        vendor: "REWIND".into(),
        product: "rewind disk".into(),
        revision: "0001".into(),
        read_only,
        thin,
    }
}

fn lu_with(blocks: u64, bs: u32, thin: bool, read_only: bool) -> LogicalUnit {
    LogicalUnit::new(
        config(thin, read_only),
        storage::shared(MemStore::new(blocks, bs)),
    )
}

fn lu() -> LogicalUnit {
    lu_with(1024, 512, true, false)
}

fn nexus(id: u64) -> Arc<Nexus> {
    Arc::new(Nexus {
        id,
        initiator_port: format!("iqn.2024-01.test:init{id},i,0x23d000000001"),
        target_port: "iqn.2024-01.test:target,t,0x0001".into(),
        relative_port: 1,
    })
}

fn req_on(n: u64, cdb: &[u8], data: &[u8]) -> ScsiRequest {
    ScsiRequest {
        nexus: nexus(n),
        cdb: Bytes::copy_from_slice(cdb),
        data_out: Bytes::copy_from_slice(data),
        expected_in_len: 65536,
        expected_out_len: data.len() as u32,
        task_attr: 0,
    }
}

fn run(lu: &LogicalUnit, cdb: &[u8], data: &[u8]) -> ScsiOutcome {
    lu.execute(&req_on(1, cdb, data))
}

/// (sense key, asc, ascq) of a fixed-format CHECK CONDITION.
fn sense_of(o: &ScsiOutcome) -> (u8, u8, u8) {
    assert_eq!(o.status, 0x02, "expected CHECK CONDITION: {o:?}");
    let s = o.sense.as_ref().expect("sense");
    if s[0] & 0x7F == 0x72 {
        (s[1], s[2], s[3])
    } else {
        (s[2] & 0x0F, s[12], s[13])
    }
}

fn good(o: &ScsiOutcome) {
    assert_eq!(o.status, 0, "expected GOOD: {o:?}");
}

fn cdb10(op: u8, flags: u8, lba: u32, len: u16) -> Vec<u8> {
    let mut c = vec![op, flags];
    c.extend_from_slice(&lba.to_be_bytes());
    c.push(0);
    c.extend_from_slice(&len.to_be_bytes());
    c.push(0);
    c
}

fn cdb16(op: u8, flags: u8, lba: u64, len: u32) -> Vec<u8> {
    let mut c = vec![op, flags];
    c.extend_from_slice(&lba.to_be_bytes());
    c.extend_from_slice(&len.to_be_bytes());
    c.extend_from_slice(&[0, 0]);
    c
}

#[test]
fn inquiry_standard_and_vpd() {
    let lu = lu();
    let o = run(&lu, &[0x12, 0, 0, 0, 255, 0], &[]);
    good(&o);
    let d = &o.data_in;
    assert_eq!(d[0], 0);
    assert_eq!(d[2], 6);
    assert_eq!(d[3] & 0x10, 0x10);
    assert_eq!(d[7] & 0x02, 0x02);
    assert_eq!(&d[8..14], b"REWIND");
    assert_eq!(d[4] as usize + 5, d.len());
    // Allocation length truncates.
    let o = run(&lu, &[0x12, 0, 0, 0, 5, 0], &[]);
    assert_eq!(o.data_in.len(), 5);
    // EVPD=0 with a page code.
    let o = run(&lu, &[0x12, 0, 0x80, 0, 255, 0], &[]);
    assert_eq!(sense_of(&o), (5, 0x24, 0));
    // Supported pages, each fetchable.
    let o = run(&lu, &[0x12, 1, 0, 0, 255, 0], &[]);
    good(&o);
    let pages = o.data_in[4..].to_vec();
    assert!(pages.contains(&0x83) && pages.contains(&0xB2));
    for p in pages {
        let o = run(&lu, &[0x12, 1, p, 0, 255, 0], &[]);
        good(&o);
        assert_eq!(o.data_in[1], p);
        let len = u16::from_be_bytes([o.data_in[2], o.data_in[3]]) as usize;
        assert_eq!(len + 4, o.data_in.len());
    }
    let o = run(&lu, &[0x12, 1, 0x80, 0, 255, 0], &[]);
    assert_eq!(&o.data_in[4..], b"SER0001");
    let o = run(&lu, &[0x12, 1, 0x83, 0, 255, 0], &[]);
    let d = &o.data_in;
    assert_eq!(&d[4..8], &[0x01, 0x03, 0, 8]);
    assert_eq!(d[8] >> 4, 5);
    let o = run(&lu, &[0x12, 1, 0xB2, 0, 255, 0], &[]);
    assert_eq!(o.data_in[5] & 0xE4, 0xE4);
    assert_eq!(o.data_in[6] & 0x07, 2);
    let o = run(&lu, &[0x12, 1, 0xB1, 0, 255, 0], &[]);
    assert_eq!(&o.data_in[4..6], &[0, 1]);
    let o = run(&lu, &[0x12, 1, 0x99, 0, 255, 0], &[]);
    assert_eq!(sense_of(&o), (5, 0x24, 0));
}

#[test]
fn read_capacity() {
    let lu = lu_with(1000, 4096, true, false);
    let o = run(&lu, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
    good(&o);
    assert_eq!(&o.data_in[..], &[0, 0, 0x03, 0xE7, 0, 0, 0x10, 0]);
    let o = run(&lu, &cdb16(0x9E, 0x10, 0, 32), &[]);
    good(&o);
    assert_eq!(o.data_in.len(), 32);
    assert_eq!(&o.data_in[..8], &999u64.to_be_bytes());
    assert_eq!(o.data_in[14] & 0xC0, 0xC0);
    let o = run(&lu, &cdb16(0x9E, 0x11, 0, 32), &[]);
    assert_eq!(sense_of(&o), (5, 0x24, 0));
}

#[test]
fn read_write_all_sizes() {
    for bs in [512u32, 4096] {
        let lu = lu_with(256, bs, false, false);
        let b = bs as usize;
        let data: Vec<u8> = (0..2 * b).map(|i| i as u8).collect();
        good(&run(&lu, &cdb10(0x2A, 0x08, 10, 2), &data));
        let o = run(&lu, &cdb10(0x28, 0, 10, 2), &[]);
        good(&o);
        assert_eq!(&o.data_in[..], &data[..]);
        // READ(6), READ(12), READ(16).
        let o = run(&lu, &[0x08, 0, 0, 10, 2, 0], &[]);
        assert_eq!(&o.data_in[..], &data[..]);
        let o = run(&lu, &[0xA8, 0, 0, 0, 0, 10, 0, 0, 0, 2, 0, 0], &[]);
        assert_eq!(&o.data_in[..], &data[..]);
        let o = run(&lu, &cdb16(0x88, 0, 10, 2), &[]);
        assert_eq!(&o.data_in[..], &data[..]);
        // WRITE(6) with transfer length 0 meaning 256 blocks.
        let o = run(&lu, &[0x0A, 0, 0, 0, 0, 0], &vec![1u8; 256 * b]);
        good(&o);
        assert_eq!(o.data_out_wanted as usize, 256 * b);
        // Out of range.
        let o = run(&lu, &cdb10(0x28, 0, 255, 2), &[]);
        assert_eq!(sense_of(&o), (5, 0x21, 0));
        let o = run(&lu, &cdb16(0x8A, 0, u64::MAX, 1), &vec![0; b]);
        assert_eq!(sense_of(&o), (5, 0x21, 0));
        let o = run(&lu, &cdb16(0x88, 0, 257, 0), &[]);
        assert_eq!(sense_of(&o), (5, 0x21, 0));
        good(&run(&lu, &cdb16(0x88, 0, 256, 0), &[]));
        // RDPROTECT / WRPROTECT unsupported.
        let o = run(&lu, &cdb10(0x28, 0x20, 0, 1), &[]);
        assert_eq!(sense_of(&o), (5, 0x24, 0));
        let o = run(&lu, &cdb10(0x2A, 0x40, 0, 1), &vec![0; b]);
        assert_eq!(sense_of(&o), (5, 0x24, 0));
        // DPO, FUA, FUA_NV accepted.
        good(&run(&lu, &cdb10(0x28, 0x1A, 0, 1), &[]));
        // Huge transfer is refused, not allocated.
        let o = run(&lu, &cdb16(0x88, 0, 0, u32::MAX), &[]);
        assert_eq!(sense_of(&o), (5, 0x21, 0));
    }
}

#[test]
fn short_data_out_writes_whole_blocks_only() {
    let lu = lu();
    good(&run(&lu, &cdb10(0x2A, 0, 0, 2), &[b'a'; 1024]));
    let o = run(&lu, &cdb10(0x2A, 0, 0, 2), &[b'b'; 512]);
    good(&o);
    assert_eq!(o.data_out_wanted, 1024);
    let o = run(&lu, &cdb10(0x28, 0, 0, 2), &[]);
    assert!(o.data_in[..512].iter().all(|&x| x == b'b'));
    assert!(o.data_in[512..].iter().all(|&x| x == b'a'));
    // No data at all: nothing written, still GOOD.
    good(&run(&lu, &cdb10(0x2A, 0, 0, 1), &[]));
    // More data than asked: only the asked blocks.
    good(&run(&lu, &cdb10(0x2A, 0, 0, 1), &[b'c'; 1024]));
    let o = run(&lu, &cdb10(0x28, 0, 0, 2), &[]);
    assert!(o.data_in[512..].iter().all(|&x| x == b'a'));
}

#[test]
fn read_only_lu() {
    let lu = lu_with(64, 512, true, true);
    let o = run(&lu, &cdb10(0x2A, 0, 0, 1), &[0; 512]);
    assert_eq!(sense_of(&o), (7, 0x27, 0));
    let o = run(&lu, &cdb16(0x93, 0x08, 0, 1), &[0; 512]);
    assert_eq!(sense_of(&o), (7, 0x27, 0));
    good(&run(&lu, &cdb10(0x28, 0, 0, 1), &[]));
    let o = run(&lu, &[0x1A, 0, 0x3F, 0, 255, 0], &[]);
    assert_eq!(o.data_in[2] & 0x80, 0x80);
}

#[test]
fn verify_and_miscompare() {
    let lu = lu();
    let mut data = vec![7u8; 1024];
    good(&run(&lu, &cdb10(0x2A, 0, 4, 2), &data));
    good(&run(&lu, &cdb10(0x2F, 0, 4, 2), &[]));
    good(&run(&lu, &cdb10(0x2F, 0x02, 4, 2), &data));
    data[700] = 0;
    let o = run(&lu, &cdb10(0x2F, 0x02, 4, 2), &data);
    assert_eq!(sense_of(&o), (0x0E, 0x1D, 0));
    let s = o.sense.unwrap();
    assert_eq!(s[0] & 0x80, 0x80);
    assert_eq!(&s[3..7], &700u32.to_be_bytes());
    let o = run(&lu, &cdb10(0x2F, 0x04, 4, 2), &data);
    assert_eq!(sense_of(&o), (5, 0x24, 0));
    let o = run(&lu, &cdb10(0x2F, 0, 1023, 2), &[]);
    assert_eq!(sense_of(&o), (5, 0x21, 0));
    // BYTCHK=3: one block compared against each.
    good(&run(&lu, &cdb16(0x8F, 0x06, 4, 2), &[7u8; 512]));
}

#[test]
fn compare_and_write() {
    let lu = lu();
    good(&run(&lu, &cdb10(0x2A, 0, 8, 1), &[1u8; 512]));
    let mut c = cdb16(0x89, 0, 8, 0);
    c[13] = 1;
    let mut data = vec![1u8; 512];
    data.extend_from_slice(&[2u8; 512]);
    let o = run(&lu, &c, &data);
    good(&o);
    assert_eq!(o.data_out_wanted, 1024);
    let o = run(&lu, &cdb10(0x28, 0, 8, 1), &[]);
    assert!(o.data_in.iter().all(|&x| x == 2));
    // Mismatch at byte 5: nothing written.
    let mut data = vec![2u8; 512];
    data[5] = 9;
    data.extend_from_slice(&[3u8; 512]);
    let o = run(&lu, &c, &data);
    assert_eq!(sense_of(&o), (0x0E, 0x1D, 0));
    assert_eq!(&o.sense.as_ref().unwrap()[3..7], &5u32.to_be_bytes());
    let o = run(&lu, &cdb10(0x28, 0, 8, 1), &[]);
    assert!(o.data_in.iter().all(|&x| x == 2));
    // Data-Out of the wrong size fails and writes nothing.
    assert_eq!(sense_of(&run(&lu, &c, &[2u8; 2048])), (5, 0x0E, 0x03));
    assert_eq!(sense_of(&run(&lu, &c, &[2u8; 512])), (5, 0x0E, 0x03));
    // Beyond end / too long.
    let mut c2 = cdb16(0x89, 0, 1023, 0);
    c2[13] = 2;
    assert_eq!(sense_of(&run(&lu, &c2, &[0; 2048])), (5, 0x21, 0));
    // NUMBER OF LOGICAL BLOCKS zero with Data-Out (a length of 256 that did not fit).
    let c0 = cdb16(0x89, 0, 8, 0);
    assert_eq!(sense_of(&run(&lu, &c0, &[0u8; 1024])), (5, 0x24, 0));
    good(&run(&lu, &c0, &[]));
    // ORWRITE.
    good(&run(&lu, &cdb16(0x8B, 0, 8, 1), &[0x40u8; 512]));
    let o = run(&lu, &cdb10(0x28, 0, 8, 1), &[]);
    assert!(o.data_in.iter().all(|&x| x == 0x42));
}

#[test]
fn mode_pages() {
    let lu = lu();
    for pc in 0..3u8 {
        let o = run(&lu, &[0x1A, 0, (pc << 6) | 0x3F, 0, 255, 0], &[]);
        good(&o);
        assert_eq!(o.data_in[0] as usize + 1, o.data_in.len());
        assert_eq!(o.data_in[3], 8);
    }
    let o = run(&lu, &[0x1A, 0, 0xC0 | 0x08, 0, 255, 0], &[]);
    assert_eq!(sense_of(&o), (5, 0x39, 0));
    let o = run(&lu, &[0x1A, 0, 0x33, 0, 255, 0], &[]);
    assert_eq!(sense_of(&o), (5, 0x24, 0));
    // MODE SENSE(10) with LLBAA: long block descriptor.
    let o = run(&lu, &[0x5A, 0x10, 0x08, 0, 0, 0, 0, 1, 0, 0], &[]);
    good(&o);
    assert_eq!(o.data_in[4] & 1, 1);
    assert_eq!(u16::from_be_bytes([o.data_in[6], o.data_in[7]]), 16);
    // DBD: no descriptor.
    let o = run(&lu, &[0x1A, 0x08, 0x08, 0, 255, 0], &[]);
    assert_eq!(o.data_in[3], 0);
    assert_eq!(o.data_in[4], 0x08);
    assert_eq!(o.data_in[6] & 0x04, 0x04);
    // Turn WCE off with MODE SELECT(6): header + caching page from sense.
    let mut params = vec![0u8, 0, 0, 0];
    let mut page = o.data_in[4..].to_vec();
    page[2] &= !0x04;
    params.extend_from_slice(&page);
    good(&run(
        &lu,
        &[0x15, 0x10, 0, 0, params.len() as u8, 0],
        &params,
    ));
    let o = run(&lu, &[0x1A, 0x08, 0x08, 0, 255, 0], &[]);
    assert_eq!(o.data_in[6] & 0x04, 0);
    // Another nexus sees MODE PARAMETERS CHANGED once.
    let other = lu.execute(&req_on(2, &[0, 0, 0, 0, 0, 0], &[]));
    good(&other);
    let mut p2 = params.clone();
    p2[6] |= 0x04;
    good(&run(&lu, &[0x15, 0x10, 0, 0, p2.len() as u8, 0], &p2));
    let o2 = lu.execute(&req_on(2, &[0, 0, 0, 0, 0, 0], &[]));
    assert_eq!(sense_of(&o2), (6, 0x2A, 0x01));
    good(&lu.execute(&req_on(2, &[0, 0, 0, 0, 0, 0], &[])));
    // Changing a non-changeable bit fails.
    let mut bad = params.clone();
    bad[7] = 0xFF;
    let o = run(&lu, &[0x15, 0x10, 0, 0, bad.len() as u8, 0], &bad);
    assert_eq!(sense_of(&o), (5, 0x26, 0));
    // SP=1: saving not supported.
    let o = run(&lu, &[0x15, 0x11, 0, 0, params.len() as u8, 0], &params);
    assert_eq!(sense_of(&o), (5, 0x24, 0));
    // D_SENSE switches to descriptor format sense data.
    let o = run(&lu, &[0x1A, 0x08, 0x0A, 0, 255, 0], &[]);
    let mut ctl = vec![0u8; 4];
    let mut page = o.data_in[4..].to_vec();
    page[2] |= 0x04;
    ctl.extend_from_slice(&page);
    good(&run(&lu, &[0x15, 0x10, 0, 0, ctl.len() as u8, 0], &ctl));
    let o = run(&lu, &[0xFF, 0, 0, 0, 0, 0], &[]);
    assert_eq!(o.sense.as_ref().unwrap()[0], 0x72);
    assert_eq!(sense_of(&o), (5, 0x20, 0));
}

#[test]
fn unit_attention_after_reset() {
    let lu = lu();
    good(&run(&lu, &[0, 0, 0, 0, 0, 0], &[]));
    lu.reset(ResetKind::LogicalUnit);
    // INQUIRY and REPORT LUNS neither report nor clear it.
    good(&run(&lu, &[0x12, 0, 0, 0, 36, 0], &[]));
    let o = run(&lu, &[0, 0, 0, 0, 0, 0], &[]);
    assert_eq!(sense_of(&o), (6, 0x29, 0x03));
    good(&run(&lu, &[0, 0, 0, 0, 0, 0], &[]));
    // REQUEST SENSE returns and clears it.
    lu.reset(ResetKind::TargetWarm);
    let o = run(&lu, &[0x03, 0, 0, 0, 18, 0], &[]);
    good(&o);
    assert_eq!((o.data_in[2], o.data_in[12], o.data_in[13]), (6, 0x29, 0));
    let o = run(&lu, &[0x03, 0, 0, 0, 18, 0], &[]);
    assert_eq!((o.data_in[2], o.data_in[12]), (0, 0));
    // A nexus that went away loses its state.
    lu.reset(ResetKind::TargetCold);
    lu.nexus_gone(1);
    good(&run(&lu, &[0, 0, 0, 0, 0, 0], &[]));
}

/// Growing the medium: every nexus that knew the LU gets CAPACITY DATA HAS CHANGED once, and
/// READ CAPACITY then reports the new size; blocks past the new end stay out of range.
#[test]
fn unit_attention_after_capacity_change() {
    let lu = lu();
    good(&lu.execute(&req_on(1, &[0, 0, 0, 0, 0, 0], &[])));
    good(&lu.execute(&req_on(2, &[0, 0, 0, 0, 0, 0], &[])));
    lu.grow(2048).unwrap();
    for n in [1, 2] {
        let o = lu.execute(&req_on(n, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]));
        assert_eq!(sense_of(&o), (6, 0x2A, 0x09), "nexus {n}");
        let o = lu.execute(&req_on(n, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]));
        good(&o);
        assert_eq!(o.data_in[..4], 2047u32.to_be_bytes());
    }
    good(&run(&lu, &cdb10(0x28, 0, 2047, 1), &[]));
    assert_eq!(
        sense_of(&run(&lu, &cdb10(0x28, 0, 2048, 1), &[])),
        (5, 0x21, 0)
    );
    // Shrinking is refused and changes nothing; growing to the same size raises no UA.
    assert!(lu.grow(1024).is_err());
    lu.grow(2048).unwrap();
    good(&run(&lu, &[0, 0, 0, 0, 0, 0], &[]));
    let sense = LogicalUnit::capacity_changed_sense();
    assert_eq!(
        (sense[0], sense[2], sense[12], sense[13]),
        (0x70, 6, 0x2A, 0x09)
    );
    // A read-only LU does not grow.
    let ro = lu_with(1024, 512, true, true);
    assert!(ro.grow(2048).is_err());
}

fn prout(sa: u8, rtype: u8, key: u64, sa_key: u64) -> (Vec<u8>, Vec<u8>) {
    let cdb = vec![0x5F, sa, rtype, 0, 0, 0, 0, 0, 24, 0];
    let mut p = vec![0u8; 24];
    p[..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    (cdb, p)
}

fn pr(lu: &LogicalUnit, n: u64, sa: u8, rtype: u8, key: u64, sa_key: u64) -> ScsiOutcome {
    let (c, p) = prout(sa, rtype, key, sa_key);
    lu.execute(&req_on(n, &c, &p))
}

#[test]
fn persistent_reservations() {
    let lu = lu();
    let read = cdb10(0x28, 0, 0, 1);
    let write = cdb10(0x2A, 0, 0, 1);
    let blk = vec![0u8; 512];
    good(&pr(&lu, 1, 0, 0, 0, 0xA));
    good(&pr(&lu, 2, 0, 0, 0, 0xB));
    // Wrong key on re-register: conflict.
    assert_eq!(pr(&lu, 1, 0, 0, 0x99, 0xC).status, 0x18);
    // READ KEYS.
    let o = run(&lu, &[0x5E, 0, 0, 0, 0, 0, 0, 1, 0, 0], &[]);
    good(&o);
    assert_eq!(&o.data_in[4..8], &16u32.to_be_bytes());
    // Write exclusive held by 1.
    good(&pr(&lu, 1, 1, 1, 0xA, 0));
    good(&lu.execute(&req_on(2, &read, &[])));
    assert_eq!(lu.execute(&req_on(2, &write, &blk)).status, 0x18);
    assert_eq!(lu.execute(&req_on(3, &write, &blk)).status, 0x18);
    good(&lu.execute(&req_on(1, &write, &blk)));
    // Reserving again with another type conflicts; release with wrong type is invalid.
    assert_eq!(pr(&lu, 2, 1, 1, 0xB, 0).status, 0x18);
    assert_eq!(sense_of(&pr(&lu, 1, 2, 3, 0xA, 0)), (5, 0x26, 0x04));
    // READ RESERVATION.
    let o = run(&lu, &[0x5E, 1, 0, 0, 0, 0, 0, 1, 0, 0], &[]);
    assert_eq!(&o.data_in[8..16], &0xAu64.to_be_bytes());
    assert_eq!(o.data_in[21], 1);
    // Preempt by 2: 1's registration goes, 2 holds exclusive access.
    good(&pr(&lu, 2, 4, 3, 0xB, 0xA));
    let o = lu.execute(&req_on(1, &read, &[]));
    assert_eq!(sense_of(&o), (6, 0x2A, 0x05));
    assert_eq!(lu.execute(&req_on(1, &read, &[])).status, 0x18);
    good(&lu.execute(&req_on(2, &read, &[])));
    // SPC-2 RESERVE conflicts with persistent reservations.
    assert_eq!(
        lu.execute(&req_on(2, &[0x16, 0, 0, 0, 0, 0], &[])).status,
        0x18
    );
    // Registrants-only: every registrant may write.
    good(&pr(&lu, 2, 2, 3, 0xB, 0));
    good(&pr(&lu, 1, 0, 0, 0, 0xA));
    good(&pr(&lu, 2, 1, 5, 0xB, 0));
    good(&lu.execute(&req_on(1, &write, &blk)));
    assert_eq!(lu.execute(&req_on(3, &write, &blk)).status, 0x18);
    good(&lu.execute(&req_on(3, &read, &[])));
    // READ FULL STATUS.
    let o = run(&lu, &[0x5E, 3, 0, 0, 0, 0, 0, 4, 0, 0], &[]);
    good(&o);
    assert!(o.data_in.len() > 8 + 2 * 24);
    // REPORT CAPABILITIES.
    let o = run(&lu, &[0x5E, 2, 0, 0, 0, 0, 0, 0, 8, 0], &[]);
    assert_eq!(o.data_in.len(), 8);
    // CLEAR.
    good(&pr(&lu, 2, 3, 0, 0xB, 0));
    let o = lu.execute(&req_on(1, &read, &[]));
    assert_eq!(sense_of(&o), (6, 0x2A, 0x03));
    good(&lu.execute(&req_on(3, &write, &blk)));
    // Bad parameter list length.
    let (mut c, p) = prout(0, 0, 0, 1);
    c[8] = 20;
    assert_eq!(sense_of(&lu.execute(&req_on(1, &c, &p))), (5, 0x1A, 0));
}

#[test]
fn spc2_reserve_release() {
    let lu = lu();
    let rd = cdb10(0x28, 0, 0, 1);
    good(&lu.execute(&req_on(1, &[0x16, 0, 0, 0, 0, 0], &[])));
    assert_eq!(lu.execute(&req_on(2, &rd, &[])).status, 0x18);
    good(&lu.execute(&req_on(2, &[0x12, 0, 0, 0, 36, 0], &[])));
    good(&lu.execute(&req_on(2, &[0x17, 0, 0, 0, 0, 0], &[])));
    assert_eq!(lu.execute(&req_on(2, &rd, &[])).status, 0x18);
    let o = lu.execute(&req_on(2, &[0x5E, 0, 0, 0, 0, 0, 0, 1, 0, 0], &[]));
    assert_eq!(o.status, 0x18);
    good(&lu.execute(&req_on(1, &[0x17, 0, 0, 0, 0, 0], &[])));
    good(&lu.execute(&req_on(2, &rd, &[])));
    good(&lu.execute(&req_on(2, &[0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[])));
    lu.nexus_gone(2);
    good(&lu.execute(&req_on(1, &rd, &[])));
}

fn unmap_params(list: &[(u64, u32)]) -> Vec<u8> {
    let mut p = vec![0u8; 8];
    let bd = (list.len() * 16) as u16;
    p[0..2].copy_from_slice(&(bd + 6).to_be_bytes());
    p[2..4].copy_from_slice(&bd.to_be_bytes());
    for &(lba, n) in list {
        p.extend_from_slice(&lba.to_be_bytes());
        p.extend_from_slice(&n.to_be_bytes());
        p.extend_from_slice(&[0; 4]);
    }
    p
}

fn provisioning_on(lu: &LogicalUnit) {
    let bs = lu.block_size() as usize;
    good(&run(lu, &cdb10(0x2A, 0, 0, 64), &vec![b'a'; 64 * bs]));
    let p = unmap_params(&[(8, 8), (32, 1)]);
    let mut c = cdb10(0x42, 0, 0, p.len() as u16);
    c[2..6].fill(0);
    good(&run(lu, &c, &p));
    let o = run(lu, &cdb10(0x28, 0, 8, 8), &[]);
    assert!(o.data_in.iter().all(|&x| x == 0));
    let o = run(lu, &cdb16(0x9E, 0x12, 0, 1024), &[]);
    good(&o);
    let d = &o.data_in;
    let first = |i: usize| {
        let o = 8 + i * 16;
        (
            u64::from_be_bytes(d[o..o + 8].try_into().unwrap()),
            u32::from_be_bytes(d[o + 8..o + 12].try_into().unwrap()),
            d[o + 12],
        )
    };
    assert_eq!(first(0), (0, 8, 0));
    assert_eq!(first(1), (8, 8, 1));
    assert_eq!(first(2).2, 0);
    // Zero-length and header-only lists are fine; short lists are not.
    good(&run(lu, &cdb10(0x42, 0, 0, 0), &[]));
    good(&run(lu, &cdb10(0x42, 0, 0, 8), &unmap_params(&[])));
    let o = run(lu, &cdb10(0x42, 0, 0, 4), &[0; 4]);
    assert_eq!(sense_of(&o), (5, 0x1A, 0));
    let nb = lu.num_blocks();
    good(&run(lu, &cdb10(0x42, 0, 0, 24), &unmap_params(&[(nb, 0)])));
    let o = run(lu, &cdb10(0x42, 0, 0, 24), &unmap_params(&[(nb - 1, 2)]));
    assert_eq!(sense_of(&o), (5, 0x21, 0));
    // WRITE SAME with UNMAP and zero data deallocates; with data it writes.
    good(&run(lu, &cdb10(0x41, 0x08, 40, 4), &vec![0; bs]));
    let o = run(lu, &cdb16(0x9E, 0x12, 40, 64), &[]);
    assert_eq!(o.data_in[8 + 12], 1);
    good(&run(lu, &cdb16(0x93, 0, 40, 4), &vec![b'z'; bs]));
    let o = run(lu, &cdb10(0x28, 0, 40, 4), &[]);
    assert!(o.data_in.iter().all(|&x| x == b'z'));
    good(&run(lu, &cdb16(0x93, 0x09, 40, 4), &[]));
    let o = run(lu, &cdb10(0x28, 0, 40, 4), &[]);
    assert!(o.data_in.iter().all(|&x| x == 0));
    // UNMAP deallocates whatever the block holds (the LBAs then read as zeros).
    good(&run(lu, &cdb10(0x41, 0x08, 40, 4), &vec![b'q'; bs]));
    let o = run(lu, &cdb10(0x28, 0, 40, 4), &[]);
    assert!(o.data_in.iter().all(|&x| x == 0));
    // Data-Out must be exactly one block.
    let o = run(lu, &cdb10(0x41, 0x08, 40, 4), &vec![0; bs / 2]);
    assert_eq!(sense_of(&o), (5, 0x0E, 0x03));
    let o = run(lu, &cdb10(0x41, 0, 40, 4), &vec![0; 2 * bs]);
    assert_eq!(sense_of(&o), (5, 0x0E, 0x03));
    // ANCHOR unsupported.
    let o = run(lu, &cdb10(0x41, 0x10, 0, 1), &vec![0; bs]);
    assert_eq!(sense_of(&o), (5, 0x24, 0));
    // Zero blocks (WSNZ clear): from the LBA to the end of the medium.
    good(&run(lu, &cdb10(0x41, 0, nb as u32 - 3, 0), &vec![b'e'; bs]));
    let o = run(lu, &cdb10(0x28, 0, nb as u32 - 4, 4), &[]);
    assert!(o.data_in[..bs].iter().all(|&x| x != b'e'));
    assert!(o.data_in[bs..].iter().all(|&x| x == b'e'));
    let o = run(lu, &cdb10(0x41, 0, nb as u32, 1), &vec![0; bs]);
    assert_eq!(sense_of(&o), (5, 0x21, 0));
    let o = run(lu, &cdb10(0x41, 0, nb as u32, 0), &vec![0; bs]);
    assert_eq!(sense_of(&o), (5, 0x21, 0));
    let o = run(lu, &cdb16(0x93, 0, u64::MAX, 0), &vec![0; bs]);
    assert_eq!(sense_of(&o), (5, 0x21, 0));
}

#[test]
fn provisioning_mem() {
    provisioning_on(&lu());
}

#[test]
fn provisioning_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::create(dir.path().join("v"), 1024 * 4096, 4096).unwrap();
    let lu = LogicalUnit::new(config(true, false), storage::shared(store));
    provisioning_on(&lu);
}

#[test]
fn unmap_not_offered_when_thick() {
    let lu = lu_with(64, 512, false, false);
    let o = run(&lu, &cdb10(0x42, 0, 0, 24), &unmap_params(&[(0, 1)]));
    assert_eq!(sense_of(&o), (5, 0x20, 0));
    let o = run(&lu, &[0xA3, 0x0C, 0x01, 0x42, 0, 0, 0, 0, 1, 0, 0, 0], &[]);
    assert_eq!(o.data_in[1] & 0x07, 1);
}

#[test]
fn report_supported_opcodes() {
    let lu = lu();
    let o = run(&lu, &[0xA3, 0x0C, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0], &[]);
    good(&o);
    let len = u32::from_be_bytes(o.data_in[..4].try_into().unwrap()) as usize;
    assert_eq!(len % 8, 0);
    assert_eq!(len / 8, supported_commands().count());
    // Every listed command exists (not INVALID OPCODE).
    for d in o.data_in[4..].chunks(8) {
        let mut cdb = vec![0u8; d[7] as usize];
        cdb[0] = d[0];
        if d[5] & 1 != 0 {
            cdb[1] = d[3];
        }
        let r = run(&lu, &cdb, &[]);
        if r.status == 2 {
            assert_ne!(sense_of(&r), (5, 0x20, 0), "{:02x}", d[0]);
        }
    }
    // With timeouts.
    let o = run(&lu, &[0xA3, 0x0C, 0x80, 0, 0, 0, 0, 1, 0, 0, 0, 0], &[]);
    let len = u32::from_be_bytes(o.data_in[..4].try_into().unwrap()) as usize;
    assert_eq!(len / 20, supported_commands().count());
    // One command.
    let o = run(&lu, &[0xA3, 0x0C, 0x01, 0x28, 0, 0, 0, 0, 1, 0, 0, 0], &[]);
    good(&o);
    assert_eq!(o.data_in[1] & 7, 3);
    assert_eq!(&o.data_in[2..4], &[0, 10]);
    assert_eq!(o.data_in[4], 0x28);
    let o = run(
        &lu,
        &[0xA3, 0x0C, 0x02, 0x9E, 0, 0x10, 0, 0, 1, 0, 0, 0],
        &[],
    );
    assert_eq!(o.data_in[1] & 7, 3);
    let o = run(&lu, &[0xA3, 0x0C, 0x01, 0x9E, 0, 0, 0, 0, 1, 0, 0, 0], &[]);
    assert_eq!(sense_of(&o), (5, 0x24, 0));
    let o = run(&lu, &[0xA3, 0x0C, 0x01, 0xC0, 0, 0, 0, 0, 1, 0, 0, 0], &[]);
    assert_eq!(o.data_in[1] & 7, 1);
    let o = run(&lu, &[0xA3, 0x0D, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0], &[]);
    good(&o);
}

#[test]
fn extended_copy_within_lu() {
    let lu = lu();
    good(&run(&lu, &cdb10(0x2A, 0, 0, 4), &[b'x'; 2048]));
    let naa = lu.naa_bytes();
    let mut p = vec![0u8; 16];
    p[0] = 7; // list id
    p[3] = 32; // one target descriptor
    p[11] = 28; // one segment descriptor
    let mut td = vec![0u8; 32];
    td[0] = 0xE4;
    td[4] = 0x01;
    td[5] = 0x03;
    td[7] = 8;
    td[8..16].copy_from_slice(&naa);
    td[29..32].copy_from_slice(&[0, 2, 0]);
    p.extend(td);
    let mut sd = vec![0u8; 28];
    sd[0] = 0x02;
    sd[3] = 0x18;
    sd[11] = 4;
    sd[12..20].copy_from_slice(&0u64.to_be_bytes());
    sd[20..28].copy_from_slice(&100u64.to_be_bytes());
    p.extend(sd);
    let mut c = vec![
        0x83,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        p.len() as u8,
        0,
        0,
    ];
    good(&run(&lu, &c, &p));
    let o = run(&lu, &cdb10(0x28, 0, 100, 4), &[]);
    assert!(o.data_in.iter().all(|&x| x == b'x'));
    let o = run(
        &lu,
        &[0x84, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        &[],
    );
    good(&o);
    assert_eq!(o.data_in[4], 1);
    let o = run(
        &lu,
        &[0x84, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        &[],
    );
    good(&o);
    assert_eq!(o.data_in[43], 2);
    // Unknown target: copy aborted.
    p[16 + 8] ^= 0xFF;
    let o = run(&lu, &c, &p);
    assert_eq!(sense_of(&o), (0x0A, 0x0D, 0x02));
    // Unsupported descriptor types.
    p[16] = 0xE0;
    assert_eq!(sense_of(&run(&lu, &c, &p)), (5, 0x26, 0x07));
    p[16] = 0xE4;
    p[48] = 0x0A;
    assert_eq!(sense_of(&run(&lu, &c, &p)), (5, 0x26, 0x09));
    p[48] = 0x02;
    // Segment naming a missing target descriptor, or running past the end: copy aborted.
    p[16 + 8] ^= 0xFF;
    good(&run(&lu, &c, &p));
    p[32 + 16 + 7] = 1;
    assert_eq!(sense_of(&run(&lu, &c, &p)), (0x0A, 0x0D, 0x02));
    p[32 + 16 + 7] = 0;
    p[32 + 16 + 20..32 + 16 + 28].copy_from_slice(&1022u64.to_be_bytes());
    assert_eq!(sense_of(&run(&lu, &c, &p)), (0x0A, 0, 0));
    // A descriptor list longer than the maximum is a parameter list length error, even
    // when it also holds too many descriptors.
    let mut big = vec![0u8; 16];
    big[2..4].copy_from_slice(&(17u16 * 32).to_be_bytes());
    big[8..12].copy_from_slice(&(65u32 * 28).to_be_bytes());
    big.resize(16 + 17 * 32 + 65 * 28, 0);
    let mut cb = c.clone();
    cb[10..14].copy_from_slice(&(big.len() as u32).to_be_bytes());
    assert_eq!(sense_of(&run(&lu, &cb, &big)), (5, 0x1A, 0));
    c[13] = 10;
    assert_eq!(sense_of(&run(&lu, &c, &p[..10])), (5, 0x1A, 0));
}

#[test]
fn lun_helpers() {
    let r = req_on(1, &[0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], &[]);
    let o = report_luns(&[0, 1, 300], &r);
    good(&o);
    assert_eq!(&o.data_in[..4], &24u32.to_be_bytes());
    assert_eq!(&o.data_in[16..18], &[0, 1]);
    assert_eq!(&o.data_in[24..26], &[0x41, 0x2C]);
    let r = req_on(1, &[0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0], &[]);
    assert_eq!(sense_of(&report_luns(&[0], &r)), (5, 0x24, 0));
    let o = no_such_lun(&req_on(1, &[0x12, 0, 0, 0, 36, 0], &[]));
    good(&o);
    assert_eq!(o.data_in[0], 0x7F);
    let o = no_such_lun(&req_on(1, &cdb10(0x28, 0, 0, 1), &[]));
    assert_eq!(sense_of(&o), (5, 0x25, 0));
    let o = no_such_lun(&req_on(1, &[0x03, 0, 0, 0, 18, 0], &[]));
    good(&o);
    assert_eq!((o.data_in[2], o.data_in[12]), (5, 0x25));
}

#[test]
fn misc_commands() {
    let lu = lu();
    good(&run(&lu, &[0x1B, 0, 0, 0, 1, 0], &[]));
    good(&run(&lu, &[0x1E, 0, 0, 0, 1, 0], &[]));
    good(&run(&lu, &cdb10(0x35, 0, 0, 0), &[]));
    good(&run(&lu, &cdb16(0x91, 0x02, 0, 10), &[]));
    good(&run(&lu, &cdb10(0x34, 0, 0, 10), &[]));
    assert_eq!(
        sense_of(&run(&lu, &cdb16(0x90, 0, 1024, 1), &[])),
        (5, 0x21, 0)
    );
    let o = run(&lu, &[0x37, 0, 0x18, 0, 0, 0, 0, 0, 4, 0], &[]);
    good(&o);
    assert_eq!(o.data_in.len(), 4);
    let o = run(&lu, &[0xB7, 0x18, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0], &[]);
    assert_eq!(o.data_in.len(), 8);
    assert_eq!(
        sense_of(&run(&lu, &[0xC5, 0, 0, 0, 0, 0], &[])),
        (5, 0x20, 0)
    );
    assert_eq!(sense_of(&run(&lu, &[], &[])), (5, 0x20, 0));
    // Short CDB, NACA, padded CDB.
    assert_eq!(sense_of(&run(&lu, &[0x28, 0, 0], &[])), (5, 0x24, 0));
    assert_eq!(sense_of(&run(&lu, &[0, 0, 0, 0, 0, 4], &[])), (5, 0x24, 0));
    let mut padded = vec![0x08, 0, 0, 0, 1, 0];
    padded.resize(16, 0);
    let o = run(&lu, &padded, &[]);
    good(&o);
    assert_eq!(o.data_in.len(), 512);
}

#[test]
fn caw_is_atomic_against_writes() {
    let lu = Arc::new(lu());
    good(&run(&lu, &cdb10(0x2A, 0, 0, 1), &[0u8; 512]));
    let mut handles = Vec::new();
    for t in 0..4u64 {
        let lu = lu.clone();
        handles.push(std::thread::spawn(move || {
            let mut ok = 0;
            for _ in 0..200 {
                // Read current counter, CAW it to +1.
                let cur = lu.execute(&req_on(t + 1, &cdb10(0x28, 0, 0, 1), &[]));
                let mut data = cur.data_in.to_vec();
                let mut next = data.clone();
                next[0] = next[0].wrapping_add(1);
                data.extend_from_slice(&next);
                let mut c = cdb16(0x89, 0, 0, 0);
                c[13] = 1;
                if lu.execute(&req_on(t + 1, &c, &data)).status == 0 {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let total: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let o = run(&lu, &cdb10(0x28, 0, 0, 1), &[]);
    assert_eq!(o.data_in[0] as u32, total % 256);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    #[test]
    fn random_cdbs_never_panic(
        op in prop::sample::select(
            supported_commands().map(|c| c.0).chain([0u8, 0xFF, 0x7F, 0x3B]).collect::<Vec<u8>>()
        ),
        rest in prop::collection::vec(any::<u8>(), 0..16),
        data in prop::collection::vec(any::<u8>(), 0..600),
        nexus_id in 1u64..4,
    ) {
        let lu = lu_with(64, 512, true, false);
        let mut cdb = vec![op];
        cdb.extend(rest);
        let o = lu.execute(&req_on(nexus_id, &cdb, &data));
        if o.status == 0x02 {
            prop_assert!(o.sense.is_some());
        }
    }
}

#[test]
fn store_is_easy_to_share() {
    let s: Arc<dyn BlockStore> = storage::shared(MemStore::new(8, 512));
    let lu = LogicalUnit::new(config(true, false), s);
    assert_eq!(lu.num_blocks(), 8);
    assert_eq!(lu.block_size(), 512);
    assert!(!lu.read_only());
}

fn write_atomic_cdb(flags: u8, lba: u64, len: u16) -> Vec<u8> {
    let mut c = vec![0x9C, flags];
    c.extend_from_slice(&lba.to_be_bytes());
    c.extend_from_slice(&[0, 0]);
    c.extend_from_slice(&len.to_be_bytes());
    c.extend_from_slice(&[0, 0]);
    c
}

#[test]
fn write_atomic() {
    let lu = lu();
    let o = run(&lu, &write_atomic_cdb(0x18, 10, 2), &[b'w'; 1024]);
    good(&o);
    assert_eq!(o.data_out_wanted, 1024);
    let o = run(&lu, &cdb10(0x28, 0, 10, 2), &[]);
    assert!(o.data_in.iter().all(|&x| x == b'w'));
    // Zero blocks: nothing to do, but the LBA is still checked.
    good(&run(&lu, &write_atomic_cdb(0, 0, 0), &[]));
    let o = run(&lu, &write_atomic_cdb(0, 1025, 0), &[]);
    assert_eq!(sense_of(&o), (5, 0x21, 0));
    let o = run(&lu, &write_atomic_cdb(0, 1023, 2), &[0; 1024]);
    assert_eq!(sense_of(&o), (5, 0x21, 0));
    // Short Data-Out: nothing is written.
    let o = run(&lu, &write_atomic_cdb(0, 10, 2), &[b'x'; 700]);
    assert_eq!(sense_of(&o), (5, 0x0E, 0x03));
    let o = run(&lu, &cdb10(0x28, 0, 10, 2), &[]);
    assert!(o.data_in.iter().all(|&x| x == b'w'));
    // Longer than MAXIMUM ATOMIC TRANSFER LENGTH; WRPROTECT; reserved bytes 10-11.
    let big = lu_with(1 << 16, 512, true, false);
    let n = (super::inquiry::MAX_ATOMIC_BYTES / 512) as u16 + 1;
    let o = run(&big, &write_atomic_cdb(0, 0, n), &vec![0; n as usize * 512]);
    assert_eq!(sense_of(&o), (5, 0x24, 0));
    let o = run(&lu, &write_atomic_cdb(0x20, 0, 1), &[0; 512]);
    assert_eq!(sense_of(&o), (5, 0x24, 0));
    let mut c = write_atomic_cdb(0, 0, 1);
    c[11] = 1;
    assert_eq!(sense_of(&run(&lu, &c, &[0; 512])), (5, 0x24, 0));
    // Read-only.
    let ro = lu_with(64, 512, true, true);
    let o = run(&ro, &write_atomic_cdb(0, 0, 1), &[0; 512]);
    assert_eq!(sense_of(&o), (7, 0x27, 0));
    // Advertised in the Block Limits page and REPORT SUPPORTED OPERATION CODES.
    let o = run(&lu, &[0x12, 1, 0xB0, 0, 255, 0], &[]);
    let max_atomic = u32::from_be_bytes(o.data_in[44..48].try_into().unwrap());
    let max_xfer = u32::from_be_bytes(o.data_in[8..12].try_into().unwrap());
    assert!(max_atomic >= 1 && max_atomic <= max_xfer);
    assert_eq!(o.data_in[4] & 0x01, 0, "WSNZ clear");
    let o = run(&lu, &[0xA3, 0x0C, 0x01, 0x9C, 0, 0, 0, 0, 1, 0, 0, 0], &[]);
    assert_eq!(o.data_in[1] & 0x07, 3);
    assert_eq!(o.data_in[5] & 0x18, 0x18);
}

fn sanitize_cdb(sa: u8, plen: u16) -> Vec<u8> {
    let mut c = vec![0x48, sa, 0, 0, 0, 0, 0, 0, 0, 0];
    c[7..9].copy_from_slice(&plen.to_be_bytes());
    c
}

fn overwrite_params(first: u8, pattern: &[u8]) -> Vec<u8> {
    let mut p = vec![first, 0];
    p.extend_from_slice(&(pattern.len() as u16).to_be_bytes());
    p.extend_from_slice(pattern);
    p
}

#[test]
fn sanitize_overwrite_and_block_erase() {
    let lu = lu_with(64, 512, true, false);
    good(&run(&lu, &cdb10(0x2A, 0, 0, 4), &[b'a'; 2048]));
    // OVERWRITE with a short pattern fills every block with it.
    let p = overwrite_params(0x01, &[1, 2, 3, 4]);
    good(&run(&lu, &sanitize_cdb(0x01, p.len() as u16), &p));
    let o = run(&lu, &cdb10(0x28, 0, 0, 64), &[]);
    assert!(o.data_in.chunks(4).all(|c| c == [1, 2, 3, 4]));
    // INVERT with an even count leaves the inverted pattern.
    let p = overwrite_params(0x80 | 0x02, &[0x0F]);
    good(&run(&lu, &sanitize_cdb(0x81, p.len() as u16), &p));
    let o = run(&lu, &cdb10(0x28, 0, 63, 1), &[]);
    assert!(o.data_in.iter().all(|&x| x == 0xF0));
    // Parameter list checks.
    for len in 0..5u16 {
        let o = run(&lu, &sanitize_cdb(0x01, len), &p[..len as usize]);
        assert_eq!(sense_of(&o), (5, 0x24, 0));
    }
    let o = run(&lu, &sanitize_cdb(0x01, 517), &[0; 517]);
    assert_eq!(sense_of(&o), (5, 0x24, 0));
    let bad = overwrite_params(0x00, &[1]);
    assert_eq!(sense_of(&run(&lu, &sanitize_cdb(0x01, 5), &bad)).1, 0x26);
    let bad = overwrite_params(0x01, &[]);
    let mut bad = bad.clone();
    bad.push(0);
    assert_eq!(sense_of(&run(&lu, &sanitize_cdb(0x01, 5), &bad)).1, 0x26);
    let mut bad = overwrite_params(0x01, &[0; 8]);
    bad[2..4].copy_from_slice(&600u16.to_be_bytes());
    assert_eq!(sense_of(&run(&lu, &sanitize_cdb(0x01, 12), &bad)).1, 0x26);
    // BLOCK ERASE deallocates everything; it takes no parameter list.
    good(&run(&lu, &sanitize_cdb(0x02, 0), &[]));
    let o = run(&lu, &cdb16(0x9E, 0x12, 0, 64), &[]);
    good(&o);
    assert_eq!(&o.data_in[16..20], &64u32.to_be_bytes());
    assert_eq!(o.data_in[20], 1);
    let o = run(&lu, &cdb10(0x28, 0, 0, 64), &[]);
    assert!(o.data_in.iter().all(|&x| x == 0));
    let o = run(&lu, &sanitize_cdb(0x02, 8), &[0; 8]);
    assert_eq!(sense_of(&o), (5, 0x24, 0));
    // EXIT FAILURE MODE takes no parameter list; CRYPTO ERASE and reserved bits are invalid.
    good(&run(&lu, &sanitize_cdb(0x1F, 0), &[]));
    assert_eq!(
        sense_of(&run(&lu, &sanitize_cdb(0x1F, 8), &[0; 8])),
        (5, 0x24, 0)
    );
    assert_eq!(
        sense_of(&run(&lu, &sanitize_cdb(0x03, 0), &[])),
        (5, 0x24, 0)
    );
    assert_eq!(
        sense_of(&run(&lu, &sanitize_cdb(0x42, 0), &[])),
        (5, 0x24, 0)
    );
    let mut c = sanitize_cdb(0x02, 0);
    c[3] = 1;
    assert_eq!(sense_of(&run(&lu, &c, &[])), (5, 0x24, 0));
    // Read-only logical units refuse it.
    let ro = lu_with(64, 512, true, true);
    assert_eq!(
        sense_of(&run(&ro, &sanitize_cdb(0x02, 0), &[])),
        (7, 0x27, 0)
    );
    // BLOCK ERASE is only offered by thin logical units.
    let thick = lu_with(64, 512, false, false);
    assert_eq!(
        sense_of(&run(&thick, &sanitize_cdb(0x02, 0), &[])),
        (5, 0x24, 0)
    );
    let o = run(
        &thick,
        &[0xA3, 0x0C, 0x02, 0x48, 0, 0x02, 0, 0, 1, 0, 0, 0],
        &[],
    );
    assert_eq!(o.data_in[1] & 0x07, 1);
    let o = run(
        &lu,
        &[0xA3, 0x0C, 0x02, 0x48, 0, 0x02, 0, 0, 1, 0, 0, 0],
        &[],
    );
    assert_eq!(o.data_in[1] & 0x07, 3);
}

#[test]
fn sanitize_in_progress_and_failure_mode() {
    let lu = lu();
    lu.state().sanitizing = true;
    assert_eq!(
        sense_of(&run(&lu, &[0, 0, 0, 0, 0, 0], &[])),
        (2, 0x04, 0x1B)
    );
    assert_eq!(
        sense_of(&run(&lu, &cdb10(0x28, 0, 0, 1), &[])),
        (2, 0x04, 0x1B)
    );
    good(&run(&lu, &[0x12, 0, 0, 0, 36, 0], &[]));
    lu.state().sanitizing = false;
    lu.state().sanitize_failed = true;
    assert_eq!(
        sense_of(&run(&lu, &cdb10(0x28, 0, 0, 1), &[])),
        (3, 0x31, 0x03)
    );
    good(&run(&lu, &[0, 0, 0, 0, 0, 0], &[]));
    good(&run(&lu, &sanitize_cdb(0x1F, 0), &[]));
    good(&run(&lu, &cdb10(0x28, 0, 0, 1), &[]));
}

#[test]
fn software_write_protect() {
    let lu = lu();
    good(&lu.execute(&req_on(2, &[0, 0, 0, 0, 0, 0], &[])));
    // Control page: SWP is changeable.
    let o = run(&lu, &[0x1A, 0x08, 0x4A, 0, 255, 0], &[]);
    assert_eq!(o.data_in[4 + 4] & 0x08, 0x08);
    let o = run(&lu, &[0x1A, 0x08, 0x0A, 0, 255, 0], &[]);
    let mut p = o.data_in.to_vec();
    p[0] = 0;
    p[2] = 0;
    p[4 + 4] |= 0x08;
    good(&run(&lu, &[0x15, 0x10, 0, 0, p.len() as u8, 0], &p));
    let o = run(&lu, &cdb10(0x2A, 0, 0, 1), &[0; 512]);
    assert_eq!(sense_of(&o), (7, 0x27, 0));
    let o = run(&lu, &[0x1A, 0x08, 0x0A, 0, 255, 0], &[]);
    assert_eq!(o.data_in[2] & 0x80, 0x80);
    // Another nexus is told the mode parameters changed.
    let o = lu.execute(&req_on(2, &[0, 0, 0, 0, 0, 0], &[]));
    assert_eq!(sense_of(&o), (6, 0x2A, 0x01));
    p[4 + 4] &= !0x08;
    good(&run(&lu, &[0x15, 0x10, 0, 0, p.len() as u8, 0], &p));
    good(&run(&lu, &cdb10(0x2A, 0, 0, 1), &[0; 512]));
}
