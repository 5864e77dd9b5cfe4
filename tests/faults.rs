//! Storage faults as an initiator sees them: a `FaultyStore` under the SCSI layer, with and
//! without the CDP journal in between. Each test would fail if its property broke:
//! - a failing read/write/flush gives CHECK CONDITION with the SBC sense for it (MEDIUM ERROR
//!   03/11/00 read, 03/0C/00 write; DATA PROTECT 07/27/07 SPACE ALLOCATION FAILED on ENOSPC);
//! - nothing panics, whatever fails;
//! - once the fault clears, writes succeed again and read back;
//! - through the journal, a failed command leaves no trace, acknowledged data survives a volume
//!   failure (it stays in the dirty cache until the volume takes it), and a journal append
//!   failure marks the port invalid.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rewind::journal::record::{scan_segment, Record, Status};
use rewind::journal::{JournalConfig, JournaledStore};
use rewind::scsi::{LogicalUnit, LuConfig, Nexus, ScsiOutcome, ScsiRequest};
use rewind::storage::{BlockStore, FaultControl, FaultyStore, MemStore};

const BS: usize = 512;
const BLOCKS: u64 = 2048; // 1 MiB
const READ_ERROR: (u8, u8, u8) = (0x03, 0x11, 0x00);
const WRITE_ERROR: (u8, u8, u8) = (0x03, 0x0C, 0x00);
const NO_SPACE: (u8, u8, u8) = (0x07, 0x27, 0x07);

fn lu_config() -> LuConfig {
    LuConfig {
        name: "faulty".into(),
        serial: "FAULTY01".into(),
        naa_id: 0x5001_4050_0000_00fa,
        vendor: "REWIND".into(),
        product: "rewind disk".into(),
        revision: "0001".into(),
        read_only: false,
        thin: true,
    }
}

struct Rig {
    lu: LogicalUnit,
    faults: Arc<FaultControl>,
    /// The volume under the fault layer (what is really on "disk").
    disk: Arc<MemStore>,
    journal: Option<Arc<JournaledStore>>,
    _dir: Option<tempfile::TempDir>,
}

/// LU -> FaultyStore -> MemStore.
fn plain() -> Rig {
    let disk = Arc::new(MemStore::new(BLOCKS, BS as u32));
    let (faulty, faults) = FaultyStore::new(disk.clone());
    Rig {
        lu: LogicalUnit::new(lu_config(), Arc::new(faulty)),
        faults,
        disk,
        journal: None,
        _dir: None,
    }
}

fn journal_cfg() -> JournalConfig {
    JournalConfig {
        // Keep the partial journals in place during a test (no background primary flush).
        partial_flush_interval: rewind::journal::HumanDuration(Duration::from_secs(3600)),
        merge_interval: rewind::journal::HumanDuration(Duration::ZERO),
        ..JournalConfig::default()
    }
}

/// LU -> JournaledStore -> FaultyStore -> MemStore.
fn journaled() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(MemStore::new(BLOCKS, BS as u32));
    let (faulty, faults) = FaultyStore::new(disk.clone());
    let j = Arc::new(JournaledStore::open(dir.path(), Arc::new(faulty), journal_cfg()).unwrap());
    Rig {
        lu: LogicalUnit::new(lu_config(), j.clone()),
        faults,
        disk,
        journal: Some(j),
        _dir: Some(dir),
    }
}

fn nexus(id: u64) -> Arc<Nexus> {
    Arc::new(Nexus {
        id,
        initiator_port: format!("iqn.2026-11.dev.rewind.test:faults{id},i,0x800000000001"),
        target_port: "iqn.2026-11.dev.rewind:faulty,t,0x0001".into(),
        relative_port: 1,
    })
}

impl Rig {
    /// Run one command from nexus 1; a pending UNIT ATTENTION (power on) is taken first.
    fn exec(&self, cdb: &[u8], data: &[u8], read_len: u32) -> ScsiOutcome {
        for _ in 0..3 {
            let o = self.lu.execute(&ScsiRequest {
                nexus: nexus(1),
                cdb: Bytes::copy_from_slice(cdb),
                data_out: Bytes::copy_from_slice(data),
                expected_in_len: read_len,
                expected_out_len: data.len() as u32,
                task_attr: 0,
            });
            if o.status == 2 && sense(&o).0 == 0x06 {
                continue;
            }
            return o;
        }
        panic!("unit attention does not clear");
    }
    fn read(&self, lba: u32, blocks: u16) -> ScsiOutcome {
        self.exec(&cdb10(0x28, lba, blocks), &[], blocks as u32 * BS as u32)
    }
    fn write(&self, lba: u32, data: &[u8]) -> ScsiOutcome {
        self.exec(&cdb10(0x2a, lba, (data.len() / BS) as u16), data, 0)
    }
    fn write_fua(&self, lba: u32, data: &[u8]) -> ScsiOutcome {
        let mut c = cdb10(0x2a, lba, (data.len() / BS) as u16);
        c[1] = 0x08;
        self.exec(&c, data, 0)
    }
    fn sync(&self) -> ScsiOutcome {
        self.exec(&cdb10(0x35, 0, 0), &[], 0)
    }
    fn unmap(&self, lba: u64, blocks: u32) -> ScsiOutcome {
        let mut p = vec![0u8; 24];
        p[0..2].copy_from_slice(&22u16.to_be_bytes());
        p[2..4].copy_from_slice(&16u16.to_be_bytes());
        p[8..16].copy_from_slice(&lba.to_be_bytes());
        p[16..20].copy_from_slice(&blocks.to_be_bytes());
        let mut c = vec![0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0];
        c[7..9].copy_from_slice(&24u16.to_be_bytes());
        self.exec(&c, &p, 0)
    }
    fn disk_bytes(&self, lba: u64, blocks: usize) -> Vec<u8> {
        let mut b = vec![0u8; blocks * BS];
        self.disk.read(lba, &mut b).unwrap();
        b
    }
}

fn cdb10(op: u8, lba: u32, blocks: u16) -> Vec<u8> {
    let mut c = vec![op, 0];
    c.extend_from_slice(&lba.to_be_bytes());
    c.push(0);
    c.extend_from_slice(&blocks.to_be_bytes());
    c.push(0);
    c
}

fn sense(o: &ScsiOutcome) -> (u8, u8, u8) {
    let s = o
        .sense
        .as_ref()
        .expect("CHECK CONDITION carries sense data");
    if s[0] & 0x7f == 0x72 {
        (s[1] & 0x0f, s[2], s[3])
    } else {
        (s[2] & 0x0f, s[12], s[13])
    }
}

#[track_caller]
fn good(o: &ScsiOutcome) {
    assert_eq!(o.status, 0, "expected GOOD, got {o:?}");
}

#[track_caller]
fn check(o: &ScsiOutcome, want: (u8, u8, u8)) {
    assert_eq!(o.status, 2, "expected CHECK CONDITION, got {o:?}");
    assert_eq!(sense(o), want, "sense key/ASC/ASCQ");
}

fn on(flag: &std::sync::atomic::AtomicBool) {
    FaultControl::set(flag, true);
}

fn pattern(seed: u8, blocks: usize) -> Vec<u8> {
    (0..blocks * BS)
        .map(|i| seed.wrapping_add((i / BS) as u8))
        .collect()
}

// ---- straight over the faulty store ------------------------------------------------------

#[test]
fn read_eio_is_medium_error_and_recovers() {
    let r = plain();
    good(&r.write(8, &pattern(1, 4)));
    on(&r.faults.read_eio);
    check(&r.read(8, 4), READ_ERROR);
    r.faults.clear();
    let o = r.read(8, 4);
    good(&o);
    assert_eq!(&o.data_in[..], &pattern(1, 4)[..]);
}

#[test]
fn write_eio_is_medium_error_and_recovers() {
    let r = plain();
    on(&r.faults.write_eio);
    check(&r.write(16, &pattern(2, 8)), WRITE_ERROR);
    assert_eq!(r.disk_bytes(16, 8), vec![0u8; 8 * BS], "nothing written");
    r.faults.clear();
    good(&r.write(16, &pattern(2, 8)));
    assert_eq!(&r.read(16, 8).data_in[..], &pattern(2, 8)[..]);
}

#[test]
fn enospc_is_space_allocation_failed() {
    let r = plain();
    on(&r.faults.no_space);
    check(&r.write(0, &pattern(3, 2)), NO_SPACE);
    check(&r.unmap(0, 8), NO_SPACE);
    r.faults.clear();
    good(&r.write(0, &pattern(3, 2)));
    assert_eq!(&r.read(0, 2).data_in[..], &pattern(3, 2)[..]);
}

#[test]
fn short_write_and_flush_failure_are_write_errors() {
    let r = plain();
    on(&r.faults.short_write);
    check(&r.write(32, &pattern(4, 8)), WRITE_ERROR);
    r.faults.clear();
    on(&r.faults.flush_eio);
    check(&r.sync(), WRITE_ERROR);
    r.faults.clear();
    good(&r.sync());
    good(&r.write(32, &pattern(5, 8)));
    assert_eq!(&r.read(32, 8).data_in[..], &pattern(5, 8)[..]);
}

#[test]
fn fail_after_n_never_panics_and_recovers() {
    let r = plain();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for n in 0..40 {
        r.faults.fail_after(n);
        for _ in 0..8 {
            let lba = rng.gen_range(0..BLOCKS as u32 - 16);
            let o = match rng.gen_range(0..4) {
                0 => r.read(lba, 8),
                1 => r.write(lba, &pattern(n as u8, 8)),
                2 => r.sync(),
                _ => r.unmap(lba as u64, 8),
            };
            assert!(o.status == 0 || o.status == 2, "{o:?}");
            if o.status == 2 {
                let s = sense(&o);
                assert!(
                    s == READ_ERROR || s == WRITE_ERROR,
                    "unexpected sense {s:?}"
                );
            }
        }
        r.faults.clear();
    }
    good(&r.write(100, &pattern(9, 4)));
    assert_eq!(&r.read(100, 4).data_in[..], &pattern(9, 4)[..]);
}

// ---- through the journal -----------------------------------------------------------------

#[test]
fn journaled_read_eio_and_failed_write_leave_no_trace() {
    let r = journaled();
    good(&r.write_fua(0, &pattern(1, 8)));
    let before = r.journal.as_ref().unwrap().last_stamp();
    // The journal reads the old data off the volume first: that read fails, so the write fails
    // as a write error and changes nothing.
    on(&r.faults.read_eio);
    check(&r.read(0, 8), READ_ERROR);
    check(&r.write(0, &pattern(7, 8)), WRITE_ERROR);
    r.faults.clear();
    assert_eq!(&r.read(0, 8).data_in[..], &pattern(1, 8)[..]);
    good(&r.sync());
    assert_eq!(r.disk_bytes(0, 8), pattern(1, 8));
    // The view just before the failed write still reads the acknowledged data.
    let view = r.journal.as_ref().unwrap().view_at(before).unwrap();
    let mut b = vec![0u8; 8 * BS];
    view.read(0, &mut b).unwrap();
    assert_eq!(b, pattern(1, 8));
}

#[test]
fn journaled_volume_write_failure_keeps_acknowledged_data() {
    let r = journaled();
    for (fault, want) in [
        (&r.faults.write_eio, WRITE_ERROR),
        (&r.faults.short_write, WRITE_ERROR),
        (&r.faults.no_space, NO_SPACE),
    ] {
        good(&r.sync());
        let seed = r.disk_bytes(64, 1)[0].wrapping_add(10);
        let old = r.disk_bytes(64, 16);
        on(fault);
        // Write-back: the journaled write is acknowledged from the dirty cache...
        good(&r.write(64, &pattern(seed, 16)));
        // ...and reads see it, while the volume cannot take it.
        assert_eq!(&r.read(64, 16).data_in[..], &pattern(seed, 16)[..]);
        // SYNCHRONIZE CACHE reports the volume's failure with the right sense.
        check(&r.sync(), want);
        // A short write may have torn the volume's copy; the journal holds the old data and
        // the dirty cache the new, so the initiator still reads the new data.
        assert_eq!(&r.read(64, 16).data_in[..], &pattern(seed, 16)[..]);
        if !r
            .faults
            .short_write
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            assert_eq!(r.disk_bytes(64, 16), old, "volume unchanged while failing");
        }
        r.faults.clear();
        good(&r.sync());
        assert_eq!(
            r.disk_bytes(64, 16),
            pattern(seed, 16),
            "applied once the fault cleared"
        );
    }
}

#[test]
fn journaled_fua_write_on_failing_volume_is_write_error_then_recovers() {
    let r = journaled();
    on(&r.faults.flush_eio);
    check(&r.write_fua(200, &pattern(3, 8)), WRITE_ERROR);
    r.faults.clear();
    good(&r.write_fua(200, &pattern(4, 8)));
    assert_eq!(r.disk_bytes(200, 8), pattern(4, 8));
}

/// The three-phase status the journal writes for each write: `Pending` with the old data,
/// then the outcome the initiator got. A write acknowledged GOOD ends `Ok`, even if the volume
/// later fails to take it (write-back: SYNCHRONIZE CACHE reports that, and the data stays
/// cached until the volume takes it). A FUA write whose write-through fails (EIO, ENOSPC) gets
/// CHECK CONDITION and its entry ends `Failed`, with the command's range; the failures stay
/// on record once the entries move into the primary journal.
#[test]
fn journaled_status_records_the_outcome_the_initiator_got() {
    let r = journaled();
    let j = r.journal.as_ref().unwrap();
    on(&r.faults.write_eio);
    good(&r.write(300, &pattern(5, 8)));
    check(&r.sync(), WRITE_ERROR);
    check(&r.write_fua(400, &pattern(6, 8)), WRITE_ERROR);
    let t_eio = j.last_stamp();
    r.faults.clear();
    on(&r.faults.no_space);
    check(&r.write_fua(500, &pattern(7, 4)), NO_SPACE);
    r.faults.clear();
    good(&r.sync());
    good(&r.write_fua(600, &pattern(8, 8)));
    // An outcome known after its entry was written goes out with the next background round.
    let dir = r._dir.as_ref().unwrap().path().join("partial");
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut statuses = partial_statuses(&dir);
    while !statuses.contains(&(4, Status::Ok)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        statuses = partial_statuses(&dir);
    }
    for (seq, want) in [
        (1, Status::Ok),
        (2, Status::Failed),
        (3, Status::Failed),
        (4, Status::Ok),
    ] {
        assert!(statuses.contains(&(seq, want)), "{seq}: {statuses:?}");
    }
    let failed = |j: &JournaledStore| -> Vec<(u64, u64, u64)> {
        j.failed_writes(0, u64::MAX)
            .unwrap()
            .iter()
            .map(|u| (u.port, u.lba, u.blocks))
            .collect()
    };
    assert_eq!(failed(j), vec![(1, 400, 8), (1, 500, 4)]);
    assert_eq!(j.failed_writes(0, t_eio).unwrap().len(), 1);
    j.flush_partials().unwrap();
    assert_eq!(failed(j), vec![(1, 400, 8), (1, 500, 4)], "in the primary");
    // Reads stay exact: the failed writes' data was accepted into the cache and reached the
    // volume once the fault cleared (SCSI leaves a failed write's blocks indeterminate).
    assert_eq!(&r.read(400, 8).data_in[..], &pattern(6, 8)[..]);
    assert_eq!(r.disk_bytes(400, 8), pattern(6, 8));
}

fn partial_statuses(dir: &Path) -> Vec<(u64, Status)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let buf = std::fs::read(&p).unwrap();
        let (_, scan) = scan_segment(&buf, "partial").unwrap();
        for s in scan.records {
            match s.record {
                Record::Status(u) => out.push((u.seq, u.status)),
                // An entry written after its outcome was known carries it.
                Record::Entry(e) if e.status != Status::Pending => out.push((e.seq, e.status)),
                Record::Entry(_) => {}
                Record::Window(_) => panic!("a partial journal holds no merged windows"),
            }
        }
    }
    out
}

/// Random commands against random faults through the journal: every command answers GOOD or
/// CHECK CONDITION with a medium/space sense, a failed command leaves no trace, and once the
/// faults clear and SYNCHRONIZE CACHE succeeds, the volume holds exactly the acknowledged data.
#[test]
fn journaled_random_faults_model() {
    let r = journaled();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let region = 256u32; // blocks
    let mut model = vec![0u8; region as usize * BS];
    for round in 0..300u32 {
        match rng.gen_range(0..10) {
            0 => on(&r.faults.read_eio),
            1 => on(&r.faults.write_eio),
            2 => on(&r.faults.short_write),
            3 => on(&r.faults.no_space),
            4 => on(&r.faults.flush_eio),
            5 => r.faults.fail_after(rng.gen_range(0..6)),
            _ => r.faults.clear(),
        }
        let lba = rng.gen_range(0..region - 16);
        let n = rng.gen_range(1..=16u16);
        let o = match rng.gen_range(0..4) {
            0 | 1 => {
                let data = pattern(round as u8, n as usize);
                let o = r.write(lba, &data);
                if o.status == 0 {
                    let s = lba as usize * BS;
                    model[s..s + data.len()].copy_from_slice(&data);
                }
                o
            }
            2 => {
                let o = r.read(lba, n);
                if o.status == 0 {
                    let s = lba as usize * BS;
                    assert_eq!(
                        &o.data_in[..],
                        &model[s..s + n as usize * BS],
                        "round {round}"
                    );
                }
                o
            }
            _ => r.sync(),
        };
        if o.status != 0 {
            let s = sense(&o);
            assert!(
                [READ_ERROR, WRITE_ERROR, NO_SPACE].contains(&s),
                "round {round}: {s:?}"
            );
        }
    }
    r.faults.clear();
    good(&r.sync());
    assert_eq!(r.disk_bytes(0, region as usize), model);
    assert_eq!(&r.read(0, region as u16).data_in[..], &model[..]);
}

// ---- journal-side failure ----------------------------------------------------------------

/// A journal that cannot be written: writes are still acknowledged (their old data is held in
/// memory and their new data in the dirty cache, write-back), but the group commit that
/// SYNCHRONIZE CACHE asks for fails (MEDIUM ERROR) when neither the port's partial file nor
/// the primary journal takes the entries, and the port is marked invalid from its oldest entry
/// not yet durable. Once the journal can be written again the sync succeeds, the volume gets
/// the data and the port is resynchronised. The journal has no I/O trait to inject faults
/// into, so the child process (this test binary re-run with `journal_write_child`) lowers
/// RLIMIT_FSIZE: writes past the limit fail with EFBIG, even for root.
#[test]
fn journal_write_failure_marks_port_invalid() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "journal_write_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("REWIND_FAULTS_CHILD", "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("CHILD-OK"), "child did not run:\n{text}");
}

/// The largest file under `dir`, recursively.
fn largest_file(dir: &Path) -> u64 {
    let mut max = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        max = max.max(if md.is_dir() {
            largest_file(&e.path())
        } else {
            md.len()
        });
    }
    max
}

fn set_fsize(limit: u64) {
    let lim = libc::rlimit {
        rlim_cur: limit as libc::rlim_t,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &lim) }, 0);
}

#[test]
#[ignore = "run by journal_write_failure_marks_port_invalid in a child process"]
fn journal_write_child() {
    if std::env::var_os("REWIND_FAULTS_CHILD").is_none() {
        return;
    }
    // SAFETY: ignoring SIGXFSZ so that the write returns EFBIG instead of killing us.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let r = journaled();
    good(&r.write(0, &pattern(1, 8)));
    good(&r.sync());
    let j = r.journal.as_ref().unwrap();
    let t0 = j.last_stamp();
    assert!(j.invalid_ports(0, u64::MAX).unwrap().is_empty());
    // No journal file may grow by a 4 KiB record any more.
    set_fsize(largest_file(r._dir.as_ref().unwrap().path()) + 64);
    good(&r.write(0, &pattern(2, 8)));
    let o = r.sync();
    set_fsize(libc::RLIM_INFINITY);
    check(&o, WRITE_ERROR);
    let invalid = j.invalid_ports(t0, u64::MAX).unwrap();
    assert_eq!(
        invalid,
        vec![1],
        "nexus 1's port is invalid after the failed journal write"
    );
    assert!(j.invalid_ports(0, t0).unwrap().is_empty(), "not before it");
    assert_eq!(
        j.port_validity().unwrap(),
        vec![(1, false)],
        "/metrics shows the port invalid"
    );
    // The acknowledged write reads back; the volume has not got it (its old data is not
    // durable in the journal).
    assert_eq!(&r.read(0, 8).data_in[..], &pattern(2, 8)[..]);
    assert_eq!(r.disk_bytes(0, 8), pattern(1, 8));
    // With the journal writable again the sync goes through.
    good(&r.sync());
    assert!(
        r.disk_bytes(0, 8) == pattern(2, 8),
        "the volume has the write"
    );
    let t_resync = j.last_stamp();
    good(&r.write(0, &pattern(3, 8)));
    assert_eq!(
        j.invalid_ports(t0, t_resync).unwrap(),
        vec![1],
        "the failure interval stays on record"
    );
    assert!(
        j.invalid_ports(t_resync + 1, u64::MAX).unwrap().is_empty(),
        "after the resynchronisation the port is valid again"
    );
    assert_eq!(j.port_validity().unwrap(), vec![(1, true)]);
    // Every point stays readable: the view before the failure has the first write.
    let mut b = vec![0u8; 8 * BS];
    j.view_at(t0).unwrap().read(0, &mut b).unwrap();
    assert_eq!(b, pattern(1, 8), "the view at the last good point");
    good(&r.sync());
    assert_eq!(r.disk_bytes(0, 8), pattern(3, 8));
    // The files of the flushes that failed went once a flush took their entries: the port
    // has its current file only (a restart would otherwise replay them again).
    assert_eq!(
        partial_files(r._dir.as_ref().unwrap().path()).len(),
        1,
        "partial files left: {:?}",
        partial_files(r._dir.as_ref().unwrap().path())
    );
    println!("CHILD-OK");
}

/// The partial journal files under `dir`.
fn partial_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(partial_files(&path));
        } else if path.parent().and_then(|p| p.file_name()) == Some("partial".as_ref())
            && path.extension().is_some_and(|x| x == "seg")
        {
            out.push(path);
        }
    }
    out
}
