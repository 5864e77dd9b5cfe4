//! Store-level tests: write path, views, restore, recovery, and a model test of the journal
//! against an oracle of the volume's content over time.

use super::clock::tests::FakeWall;
use super::*;
use crate::storage::{Allocation, BlockStore, IoOrigin, StorageError};
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BS: usize = 512;

/// An in-memory thin volume.
pub(crate) struct MemStore {
    blocks: u64,
    state: Mutex<(Vec<u8>, Vec<bool>)>,
    pub fail_writes: AtomicBool,
    /// The longest read asked of it, in bytes.
    pub max_read: std::sync::atomic::AtomicUsize,
}

impl MemStore {
    pub fn new(blocks: u64) -> Arc<Self> {
        Arc::new(MemStore {
            blocks,
            state: Mutex::new((vec![0; blocks as usize * BS], vec![false; blocks as usize])),
            fail_writes: AtomicBool::new(false),
            max_read: Default::default(),
        })
    }
    pub fn snapshot(&self) -> Vec<u8> {
        self.state.lock().unwrap().0.clone()
    }
}

impl BlockStore for MemStore {
    fn block_size(&self) -> u32 {
        BS as u32
    }
    fn num_blocks(&self) -> u64 {
        self.blocks
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        self.max_read.fetch_max(buf.len(), Ordering::SeqCst);
        let s = self.state.lock().unwrap();
        let o = lba as usize * BS;
        buf.copy_from_slice(&s.0[o..o + buf.len()]);
        Ok(())
    }
    fn write(&self, _: IoOrigin, lba: u64, data: &[u8], _: bool) -> Result<(), StorageError> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected").into());
        }
        let mut s = self.state.lock().unwrap();
        let o = lba as usize * BS;
        s.0[o..o + data.len()].copy_from_slice(data);
        for b in lba..lba + (data.len() / BS) as u64 {
            s.1[b as usize] = true;
        }
        Ok(())
    }
    fn unmap(&self, _: IoOrigin, lba: u64, blocks: u64) -> Result<(), StorageError> {
        let mut s = self.state.lock().unwrap();
        let o = lba as usize * BS;
        s.0[o..o + blocks as usize * BS].fill(0);
        for b in lba..lba + blocks {
            s.1[b as usize] = false;
        }
        Ok(())
    }
    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
    fn allocation(&self, lba: u64, max: u64) -> Result<(Allocation, u64), StorageError> {
        let s = self.state.lock().unwrap();
        let first = s.1[lba as usize];
        let mut n = 1;
        while n < max && lba + n < self.blocks && s.1[(lba + n) as usize] == first {
            n += 1;
        }
        Ok((
            if first {
                Allocation::Mapped
            } else {
                Allocation::Deallocated
            },
            n,
        ))
    }
}

fn ms(v: u64) -> HumanDuration {
    HumanDuration(Duration::from_millis(v))
}

fn test_cfg() -> JournalConfig {
    JournalConfig {
        partial_capacity: 64 << 10,
        partial_flush_interval: ms(20),
        segment_size: 1 << 20,
        dirty_cache_limit: 256 << 10,
        commit_interval: ms(2),
        merge_interval: ms(0),
        retention: RetentionPolicy {
            keep_all: ms(10),
            tiers: vec![
                RetentionTier {
                    every: ms(2),
                    until: ms(100),
                },
                RetentionTier {
                    every: ms(10),
                    until: ms(400),
                },
            ],
        },
        // Tests must not depend on how full the disk they run on is.
        min_free_percent: 0,
        ..JournalConfig::default()
    }
}

fn read_all(s: &dyn BlockStore) -> Vec<u8> {
    let mut b = vec![0u8; s.num_blocks() as usize * BS];
    s.read(0, &mut b).unwrap();
    b
}

fn port(p: u64) -> IoOrigin {
    IoOrigin { port: p }
}

#[test]
fn write_read_view_restore() {
    let dir = tempfile::tempdir().unwrap();
    let vol = MemStore::new(64);
    let wall = FakeWall::new(1_000_000_000);
    let js =
        JournaledStore::open_with_clock(dir.path(), vol.clone(), test_cfg(), wall.clone()).unwrap();
    js.write(port(1), 3, &[1u8; BS * 2], false).unwrap();
    let t1 = js.last_stamp();
    wall.advance(1000);
    js.write(port(2), 4, &[2u8; BS * 10], false).unwrap();
    let t2 = js.last_stamp();
    wall.advance(1000);
    js.unmap(port(1), 0, 8).unwrap();
    let now = read_all(&js);
    assert_eq!(now[3 * BS], 0, "unmapped");
    assert_eq!(now[4 * BS], 0);
    assert_eq!(now[8 * BS], 2);

    let v0 = js.view_at(t1 - 1).unwrap();
    assert_eq!(read_all(&*v0), vec![0u8; 64 * BS]);
    assert_eq!(v0.allocation(0, 64).unwrap(), (Allocation::Deallocated, 64));
    let v1 = js.view_at(t1).unwrap();
    let d1 = read_all(&*v1);
    assert_eq!(&d1[3 * BS..5 * BS], &[1u8; 2 * BS][..]);
    assert_eq!(d1[5 * BS], 0);
    let v2 = js.view_at(t2).unwrap();
    let d2 = read_all(&*v2);
    assert_eq!(d2[3 * BS], 1);
    assert_eq!(d2[4 * BS], 2);
    assert!(v2.write(port(1), 0, &[0; BS], false).is_err());

    js.flush().unwrap();
    assert_eq!(
        vol.snapshot(),
        now,
        "volume has the data after SYNCHRONIZE CACHE"
    );
    // Views stay right after the partial journals went to the primary.
    js.flush_partials().unwrap();
    assert_eq!(read_all(&*js.view_at(t2).unwrap()), d2);

    let mut calls = 0;
    let changed = js.restore_to(t1, &mut |_, _| calls += 1).unwrap();
    assert!(changed > 0 && calls > 0);
    assert_eq!(read_all(&js), d1);
    // The restore is journaled too: the state just before it is still reachable.
    assert_eq!(read_all(&*js.view_at(t2).unwrap()), d2);
}

/// A restore over several batches: runs of changed chunks are written back, chunks that were
/// unallocated at the point are unmapped again, unchanged chunks are left alone.
#[test]
fn restore_writes_back_changed_runs_and_unmaps_what_was_unallocated() {
    let dir = tempfile::tempdir().unwrap();
    // 4096 blocks of 512 bytes = 512 chunks of 4 KiB: two restore batches of 256 chunks.
    let blocks = 4096u64;
    let vol = MemStore::new(blocks);
    let js = JournaledStore::open(dir.path(), vol.clone(), test_cfg()).unwrap();
    // At t1: chunks 0..300 hold data, 300..512 were never written.
    js.write(port(1), 0, &vec![0x11; 300 * 8 * BS], false)
        .unwrap();
    let t1 = js.last_stamp();
    let at_t1 = read_all(&js);
    // Afterwards: chunks 250..260 (across the batch boundary) rewritten, 10..12 unmapped,
    // 400..402 written, 100 rewritten with the same bytes.
    js.write(port(1), 250 * 8, &vec![0x22; 10 * 8 * BS], false)
        .unwrap();
    js.unmap(port(2), 10 * 8, 2 * 8).unwrap();
    js.write(port(2), 400 * 8, &vec![0x33; 2 * 8 * BS], false)
        .unwrap();
    js.write(port(1), 100 * 8, &vec![0x11; 8 * BS], false)
        .unwrap();
    let t2 = js.last_stamp();
    let at_t2 = read_all(&js);
    let mut calls = Vec::new();
    let changed = js
        .restore_to(t1, &mut |done, total| calls.push((done, total)))
        .unwrap();
    assert_eq!(changed, 10 + 2 + 2, "changed chunks");
    assert_eq!(calls, vec![(256, 512), (512, 512)]);
    assert!(read_all(&js) == at_t1, "the volume reads as at t1");
    assert_eq!(
        vol.allocation(400 * 8, 2 * 8).unwrap(),
        (Allocation::Deallocated, 2 * 8),
        "unallocated at t1: unmapped again"
    );
    assert_eq!(vol.allocation(10 * 8, 16).unwrap().0, Allocation::Mapped);
    // The restore is journaled: the state before it is still there, and a second restore to
    // t1 changes nothing.
    assert!(
        read_all(&*js.view_at(t2).unwrap()) == at_t2,
        "t2 is still there"
    );
    assert_eq!(js.restore_to(t1, &mut |_, _| {}).unwrap(), 0);
}

/// A volume grows: views of earlier times keep the old size and content, the new blocks are
/// journaled like the rest, a restore to before the growth deallocates them again, and the
/// sizes survive a reopen.
#[test]
fn growth_keeps_views_at_their_size() {
    let dir = tempfile::tempdir().unwrap();
    let vol = Arc::new(crate::storage::MemStore::new(64, BS as u32));
    let js = JournaledStore::open(dir.path(), vol.clone(), test_cfg()).unwrap();
    js.write(port(1), 0, &vec![0x11; 64 * BS], false).unwrap();
    let before = js.last_stamp();
    let at_before = read_all(&js);
    js.grow(128).unwrap();
    assert_eq!((js.num_blocks(), vol.num_blocks()), (128, 128));
    assert!(read_all(&js)[64 * BS..].iter().all(|&b| b == 0));
    js.write(port(1), 64, &vec![0x22; 64 * BS], false).unwrap();
    js.write(port(2), 0, &vec![0x33; 8 * BS], false).unwrap();
    let after = js.last_stamp();
    let at_after = read_all(&js);

    let old = js.view_at(before).unwrap();
    assert_eq!(old.num_blocks(), 64);
    assert!(read_all(&*old) == at_before);
    assert!(matches!(
        old.read(64, &mut [0u8; BS]),
        Err(StorageError::OutOfRange { .. })
    ));
    assert_eq!(js.view_at(after).unwrap().num_blocks(), 128);
    assert!(js.grow(100).is_err(), "a volume cannot shrink");

    js.restore_to(before, &mut |_, _| {}).unwrap();
    assert_eq!(js.num_blocks(), 128, "a restore does not shrink the volume");
    let now = read_all(&js);
    assert!(now[..64 * BS] == at_before[..]);
    assert!(now[64 * BS..].iter().all(|&b| b == 0));
    assert_eq!(
        js.allocation(64, 64).unwrap(),
        (Allocation::Deallocated, 64),
        "blocks that did not exist at the point are deallocated"
    );
    assert!(read_all(&*js.view_at(after).unwrap()) == at_after);
    drop(old);
    drop(js);

    let js = JournaledStore::open(dir.path(), vol.clone(), test_cfg()).unwrap();
    assert_eq!(js.view_at(before).unwrap().num_blocks(), 64);
    assert!(read_all(&*js.view_at(after).unwrap()) == at_after);
}

#[test]
fn crash_keeps_volume_behind_journal() {
    let dir = tempfile::tempdir().unwrap();
    let vol = MemStore::new(64);
    let wall = FakeWall::new(1_000_000_000);
    let mut cfg = test_cfg();
    cfg.commit_interval = ms(60_000); // no background commit during the test
    let js = JournaledStore::open_with_clock(dir.path(), vol.clone(), cfg.clone(), wall.clone())
        .unwrap();
    js.write(port(1), 0, &[7u8; BS * 16], true).unwrap();
    assert_eq!(vol.snapshot()[0], 7, "FUA write reached the volume");
    let t_sync = js.last_stamp();
    wall.advance(10);
    js.write(port(1), 8, &[9u8; BS * 8], false).unwrap();
    assert_eq!(read_all(&js)[8 * BS], 9);
    assert_eq!(
        vol.snapshot()[8 * BS],
        7,
        "not durable before the journal commit"
    );
    // The background round writes the entry to the partial file, not yet the new data.
    js.write_partials();
    js.crash();
    let js = JournaledStore::open_with_clock(dir.path(), vol.clone(), cfg, wall.clone()).unwrap();
    assert_eq!(js.recovery_report().replayed_entries, 3);
    let v = read_all(&*js.view_at(t_sync).unwrap());
    assert_eq!(&v[..16 * BS], &[7u8; 16 * BS][..]);
    assert!(js.last_stamp() > t_sync);
}

#[test]
fn failing_volume_returns_error_and_keeps_data_cached() {
    let dir = tempfile::tempdir().unwrap();
    let vol = MemStore::new(32);
    let js = JournaledStore::open(dir.path(), vol.clone(), test_cfg()).unwrap();
    vol.fail_writes.store(true, Ordering::SeqCst);
    js.write(port(1), 0, &[3u8; BS], false).unwrap();
    assert!(js.flush().is_err());
    assert_eq!(read_all(&js)[0], 3);
    vol.fail_writes.store(false, Ordering::SeqCst);
    js.flush().unwrap();
    assert_eq!(vol.snapshot()[0], 3);
}

#[test]
fn bookmarks_and_consistency_marks() {
    let dir = tempfile::tempdir().unwrap();
    let vol = MemStore::new(32);
    {
        let js = JournaledStore::open(dir.path(), vol.clone(), test_cfg()).unwrap();
        js.write(port(1), 0, &[1u8; BS], false).unwrap();
        js.flush().unwrap();
        let t = js.bookmark("before-upgrade").unwrap();
        assert_eq!(
            js.bookmarks().unwrap(),
            vec![("before-upgrade".to_string(), t)]
        );
        assert_eq!(js.consistency_marks(0, u64::MAX).unwrap().len(), 1);
        js.flush().unwrap();
        assert_eq!(
            js.consistency_marks(0, u64::MAX).unwrap().len(),
            1,
            "no new writes"
        );
    }
    let js = JournaledStore::open(dir.path(), vol, test_cfg()).unwrap();
    assert_eq!(js.bookmarks().unwrap().len(), 1);
    assert!(js.delete_bookmark("before-upgrade").unwrap());
    assert!(js.bookmarks().unwrap().is_empty());
}

/// A journal reopened while its index is still locked (sled's flush thread lets go of a closed
/// index a moment later; here another handle holds it) waits for the lock instead of taking
/// the index for unreadable, throwing it away and the bookmarks with it.
#[test]
fn reopening_waits_for_the_index_lock_and_keeps_bookmarks() {
    let dir = tempfile::tempdir().unwrap();
    let vol = MemStore::new(32);
    {
        let js = JournaledStore::open(dir.path(), vol.clone(), test_cfg()).unwrap();
        js.write(port(1), 0, &[1u8; BS], false).unwrap();
        js.bookmark("kept").unwrap();
    }
    let held = loop {
        // Wait until the closed journal has let go, then hold the index ourselves.
        match sled::Config::new().path(dir.path().join("index")).open() {
            Ok(db) => break db,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
    });
    let js = JournaledStore::open(dir.path(), vol, test_cfg()).unwrap();
    release.join().unwrap();
    assert_eq!(js.bookmarks().unwrap().len(), 1, "the bookmark survived");
    assert!(!js.recovery_report().primary.rebuilt, "the index was kept");
}

/// `index_compression` applies to a new index. An index made with the other setting (sled
/// cannot change it in an existing database) is opened as it is: not taken for a damaged one
/// and rebuilt, which would throw its bookmarks away.
#[test]
fn an_index_keeps_the_compression_it_was_made_with() {
    let compressed = |d: &std::path::Path| {
        // sled's `conf`: `key: value` lines, then a checksum
        let conf = std::fs::read(d.join("index").join("conf")).unwrap();
        let conf = String::from_utf8_lossy(&conf);
        assert!(conf.contains("use_compression: "), "sled's conf: {conf}");
        conf.contains("use_compression: true")
    };
    let with = |on: bool| JournalConfig {
        index_compression: on,
        ..test_cfg()
    };
    for made_with in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let vol = MemStore::new(32);
        let open = |cfg: JournalConfig| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                match JournaledStore::open(dir.path(), vol.clone(), cfg.clone()) {
                    Ok(js) => break js,
                    Err(JournalError::IndexLocked { .. })
                        if std::time::Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        };
        let js = open(with(made_with));
        js.write(port(1), 0, &[1u8; BS], false).unwrap();
        let ts = js.bookmark("kept").unwrap();
        js.write(port(1), 0, &[2u8; BS], false).unwrap();
        js.flush().unwrap();
        drop(js);
        assert_eq!(compressed(dir.path()), made_with, "a new index");
        let js = open(with(!made_with));
        assert!(!js.recovery_report().primary.rebuilt, "the index was kept");
        assert_eq!(js.bookmarks().unwrap(), vec![("kept".to_string(), ts)]);
        let mut b = [0u8; BS];
        js.view_at(ts).unwrap().read(0, &mut b).unwrap();
        assert_eq!(b, [1u8; BS], "the history is still found");
        js.write(port(1), 0, &[3u8; BS], false).unwrap();
        js.flush().unwrap();
        drop(js);
        assert_eq!(compressed(dir.path()), made_with, "kept its setting");
    }
}

/// A journal from before `meta.log` (its metadata in sled only) seeds the log from sled at
/// open; a damaged tail of the log is cut off and reported.
#[test]
fn metadata_log_is_seeded_from_sled_and_survives_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let vol = MemStore::new(32);
    let open = || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match JournaledStore::open(dir.path(), vol.clone(), test_cfg()) {
                Ok(js) => break js,
                Err(JournalError::IndexLocked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("{e}"),
            }
        }
    };
    let js = open();
    js.write(port(1), 0, &[1u8; BS], false).unwrap();
    let ts = js.bookmark("old").unwrap();
    drop(js);
    std::fs::remove_file(dir.path().join("meta.log")).unwrap();
    let js = open();
    assert_eq!(js.bookmarks().unwrap(), vec![("old".to_string(), ts)]);
    assert!(dir.path().join("meta.log").exists(), "seeded");
    drop(js);
    let mut log = std::fs::read(dir.path().join("meta.log")).unwrap();
    log.extend_from_slice(&[0xde, 0xad, 0xbe]);
    std::fs::write(dir.path().join("meta.log"), log).unwrap();
    let js = open();
    assert_eq!(js.recovery_report().metadata_tail_cut, 3);
    assert_eq!(js.bookmarks().unwrap(), vec![("old".to_string(), ts)]);
}

#[test]
fn concurrent_ports_and_views() {
    let dir = tempfile::tempdir().unwrap();
    let vol = MemStore::new(256);
    let js = Arc::new(JournaledStore::open(dir.path(), vol.clone(), test_cfg()).unwrap());
    let t0 = js.last_stamp();
    let base = read_all(&*js);
    let handles: Vec<_> = (0..4u64)
        .map(|p| {
            let js = js.clone();
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(p);
                for _ in 0..200 {
                    let lba = rng.gen_range(0..250);
                    let n = rng.gen_range(1..6);
                    js.write(
                        port(p + 1),
                        lba,
                        &vec![p as u8 + 1; BS * n],
                        rng.gen_bool(0.1),
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    // A view taken before the writes reads the same while they run.
    let v = js.view_at(t0).unwrap();
    for _ in 0..20 {
        assert_eq!(read_all(&*v), base);
    }
    for h in handles {
        h.join().unwrap();
    }
    js.flush().unwrap();
    assert_eq!(read_all(&*v), base);
    assert_eq!(vol.snapshot(), read_all(&*js));
}

#[test]
fn view_creation_is_cheap() {
    let dir = tempfile::tempdir().unwrap();
    let vol = MemStore::new(1024);
    let js = JournaledStore::open(dir.path(), vol, test_cfg()).unwrap();
    for i in 0..2000u64 {
        js.write(port(1), (i * 7) % 1020, &[i as u8; BS * 4], false)
            .unwrap();
    }
    js.flush_partials().unwrap();
    let t = std::time::Instant::now();
    let born = js.born();
    for k in 0..100 {
        let _ = js.view_at(born + k * 1000).unwrap();
    }
    assert!(
        matches!(
            js.view_at(born - 1),
            Err(JournalError::BeforeHistory { .. })
        ),
        "no view before history begins"
    );
    assert!(t.elapsed() < Duration::from_millis(50));
}

/// Model test: random writes and unmaps from several ports with a fake clock, merges, clean
/// restarts, crashes after a flush and restores; every retained point must read as the oracle
/// says.
#[test]
fn model_with_merge_and_restarts() {
    for seed in 0..3u64 {
        model_run(seed, 400, true);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 6, ..Default::default() })]
    /// The same model, with the seed and length of the run chosen by proptest.
    #[test]
    fn model_proptest(seed in proptest::prelude::any::<u64>(), steps in 200usize..400) {
        model_run(seed, steps, false);
    }
}

/// `strict`: also insist that the run exercised merged windows and restores (true for the
/// fixed seeds, which are known to).
fn model_run(seed: u64, steps: usize, strict: bool) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let blocks = 128u64;
    let vol = MemStore::new(blocks);
    let wall = FakeWall::new(10_000_000_000);
    let cfg = test_cfg();
    let open = |w: &Arc<FakeWall>| {
        JournaledStore::open_with_clock(dir.path(), vol.clone(), cfg.clone(), w.clone()).unwrap()
    };
    let mut js = Some(open(&wall));
    // Oracle: (stamp, volume content after the op). A restore is many writes with stamps of
    // their own; its entry carries the stamp of its last one, and the points inside it are
    // not modelled (`restores` lists them, so the check skips `t - 1` there).
    let mut history: Vec<(u64, Vec<u8>)> = vec![(0, vec![0u8; blocks as usize * BS])];
    let mut restores: Vec<(u64, u64)> = Vec::new();
    let mut cur = vec![0u8; blocks as usize * BS];
    let state_at = |h: &Vec<(u64, Vec<u8>)>, t: u64| -> Vec<u8> {
        h.iter().rev().find(|(ts, _)| *ts <= t).unwrap().1.clone()
    };
    let mut dropped_total = 0;
    let mut rounded = 0;
    for step in 0..steps {
        let s = js.as_ref().unwrap();
        wall.advance(rng.gen_range(0..3000));
        match rng.gen_range(0..100) {
            0..=69 => {
                let lba = rng.gen_range(0..blocks);
                let n = rng.gen_range(1..=(blocks - lba).min(20));
                let byte: u8 = rng.gen_range(1..=255);
                let data: Vec<u8> = (0..n as usize * BS).map(|i| byte ^ (i as u8)).collect();
                s.write(port(rng.gen_range(1..4)), lba, &data, rng.gen_bool(0.05))
                    .unwrap();
                cur[lba as usize * BS..(lba + n) as usize * BS].copy_from_slice(&data);
                history.push((s.last_stamp(), cur.clone()));
            }
            70..=79 => {
                let lba = rng.gen_range(0..blocks);
                let n = rng.gen_range(1..=(blocks - lba).min(20));
                s.unmap(port(rng.gen_range(1..4)), lba, n).unwrap();
                cur[lba as usize * BS..(lba + n) as usize * BS].fill(0);
                history.push((s.last_stamp(), cur.clone()));
            }
            80..=86 => {
                dropped_total += s.merge().unwrap().dropped;
            }
            87..=92 => {
                drop(js.take());
                js = Some(open(&wall));
            }
            93..=95 => {
                // Crash right after SYNCHRONIZE CACHE: nothing acknowledged is lost.
                s.flush().unwrap();
                js.take().unwrap().crash();
                js = Some(open(&wall));
            }
            96..=97 if history.len() > 2 => {
                // Roll back to an earlier point: the volume then reads as it did there, and the
                // restore is itself journaled (later views see it as writes).
                let pick = history[rng.gen_range(1..history.len())].0;
                let target = pick.saturating_sub(rng.gen_range(0..2));
                // Points inside an earlier restore are not modelled.
                let modelled = !restores.iter().any(|(a, b)| *a < target && target < *b);
                match s.view(target) {
                    _ if !modelled => {}
                    Err(JournalError::Expired { .. }) | Err(JournalError::BeforeHistory { .. }) => {
                    }
                    Err(e) => panic!("{e}"),
                    Ok(v)
                        if restores
                            .iter()
                            .any(|(a, b)| *a < v.point() && v.point() < *b) => {}
                    Ok(v) => {
                        let then = state_at(&history, v.point());
                        let before = s.last_stamp();
                        s.restore_to(target, &mut |_, _| {}).unwrap();
                        assert!(
                            read_all(s) == then,
                            "seed {seed} step {step}: restored content"
                        );
                        cur = then;
                        restores.push((before, s.last_stamp()));
                        history.push((s.last_stamp(), cur.clone()));
                    }
                }
            }
            _ => {
                let s = js.as_ref().unwrap();
                assert_eq!(read_all(s), cur, "seed {seed} step {step}: current content");
            }
        }
    }
    let s = js.as_ref().unwrap();
    let report = s.merge().unwrap();
    assert!(
        !strict || report.dropped > 0 || dropped_total > 0,
        "seed {seed}: merge dropped nothing"
    );
    assert_eq!(read_all(s), cur);
    // Every op's stamp, one µs before, and window boundaries in between.
    let first = history[1].0;
    let last = history.last().unwrap().0;
    let inside_restore = |t: u64| restores.iter().any(|(a, b)| *a < t && t < *b);
    let mut points: Vec<u64> = history[1..]
        .iter()
        .flat_map(|(t, _)| [*t - 1, *t])
        .filter(|t| !inside_restore(*t))
        .collect();
    let mut b = first - first % 2000;
    while b <= last {
        if !inside_restore(b) {
            points.push(b);
        }
        b += 2000;
    }
    let mut checked = 0;
    for t in points {
        match s.view(t) {
            Err(JournalError::Expired { .. }) => continue,
            Err(e) => panic!("{e}"),
            Ok(v) => {
                let p = v.point();
                assert!(p <= t);
                rounded += (p != t) as u32;
                if inside_restore(p) {
                    continue;
                }
                assert!(
                    read_all(&v) == state_at(&history, p),
                    "seed {seed}: view at {t} (point {p})"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "checked {checked}");
    assert!(
        !strict || rounded > 0,
        "seed {seed}: no view fell in a merged window"
    );
    assert!(
        !strict || !restores.is_empty(),
        "seed {seed}: no restore was exercised"
    );
    // The index survives being rebuilt from the segment files.
    s.rebuild_index().unwrap();
    let v = s.view(last - 5000).unwrap();
    assert!(read_all(&v) == state_at(&history, v.point()) || inside_restore(v.point()));
}

/// Memory held by partial journals is bounded: a writer that outruns the flusher flushes its
/// own port at twice `partial_capacity`, and a flush leaves nothing behind.
#[test]
fn partial_journal_memory_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let vol = MemStore::new(2048);
    let cfg = JournalConfig {
        // The background flusher never flushes by age during the test.
        partial_flush_interval: ms(3_600_000),
        ..test_cfg()
    };
    let cap = cfg.partial_capacity;
    let j = JournaledStore::open(dir.path(), vol, cfg).unwrap();
    let buf = vec![0x5au8; 16 << 10];
    let blocks = (buf.len() / BS) as u64;
    let mut peak = 0;
    for i in 0..400u64 {
        j.write(port(1), (i * blocks) % 2048, &buf, false).unwrap();
        peak = peak.max(j.partial_bytes());
    }
    // Each entry is accounted as its data plus 64 bytes of overhead.
    let per_write = buf.len() as u64 + 4 * 64;
    assert!(
        peak <= 2 * cap + per_write,
        "partial journals held {peak} bytes, bound {}",
        2 * cap + per_write
    );
    j.flush_partials().unwrap();
    assert_eq!(j.partial_bytes(), 0);
}

/// The volume's ports together hold at most about `partial_limit`: many sessions, each below
/// `partial_capacity`, do not take that much each; the ports holding the most are flushed.
#[test]
fn partial_journals_of_many_ports_are_bounded_together() {
    let dir = tempfile::tempdir().unwrap();
    let vol = MemStore::new(2048);
    let cfg = JournalConfig {
        partial_flush_interval: ms(3_600_000),
        partial_capacity: 1 << 20,
        partial_limit: 128 << 10,
        ..test_cfg()
    };
    let limit = cfg.partial_limit;
    let j = JournaledStore::open(dir.path(), vol, cfg).unwrap();
    let buf = vec![0x3cu8; 16 << 10];
    let blocks = (buf.len() / BS) as u64;
    let mut peak = 0;
    for i in 0..400u64 {
        j.write(port(1 + i % 8), (i * blocks) % 2048, &buf, false)
            .unwrap();
        peak = peak.max(j.partial_bytes());
    }
    let per_write = buf.len() as u64 + 4 * 64;
    assert!(
        peak <= limit + per_write,
        "partial journals held {peak} bytes, bound {}",
        limit + per_write
    );
    // Nothing was lost on the way: the history holds every write's old data.
    j.flush_partials().unwrap();
    assert_eq!(j.partial_bytes(), 0);
    assert_eq!(j.primary_entries(), 400 * 4);
}

/// Eight rounds of 16 KiB writes over the whole volume (contents from `mul`, the clock moving
/// 50 µs per write), each ended by SYNCHRONIZE CACHE; returns (stamp, content) after each round.
fn overwrite_in_rounds(
    js: &JournaledStore,
    wall: &FakeWall,
    blocks: u64,
    mul: u8,
) -> Vec<(u64, Vec<u8>)> {
    let chunk = 16 << 10;
    let mut marks = Vec::new();
    for round in 0..8u8 {
        for i in 0..(blocks * BS as u64 / chunk) {
            wall.advance(50);
            let data = vec![round.wrapping_mul(mul).wrapping_add(i as u8); chunk as usize];
            js.write(port(1), i * (chunk / BS as u64), &data, false)
                .unwrap();
        }
        js.flush().unwrap();
        marks.push((js.last_stamp(), read_all(js)));
    }
    marks
}

/// Bytes of the primary journal's segment files in journal directory `dir`.
fn primary_segment_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir.join("primary"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        // The background merge may delete a segment between the listing and this look.
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// A journal over `max_bytes` drops its oldest history first: after the merge the segments fit
/// the quota, points before the cut are expired, and later points still read right.
#[test]
fn quota_drops_the_oldest_history_first() {
    let dir = tempfile::tempdir().unwrap();
    let blocks = 2048u64;
    let vol = MemStore::new(blocks);
    let wall = FakeWall::new(10_000_000_000);
    let cfg = JournalConfig {
        // Retention alone would keep everything for a day.
        retention: RetentionPolicy {
            keep_all: HumanDuration(Duration::from_secs(86_400)),
            tiers: Vec::new(),
        },
        max_bytes: 3 << 20,
        ..test_cfg()
    };
    let js = JournaledStore::open_with_clock(dir.path(), vol.clone(), cfg, wall.clone()).unwrap();
    let marks = overwrite_in_rounds(&js, &wall, blocks, 31);
    js.flush_partials().unwrap();
    let seg_bytes = primary_segment_bytes;
    let before = seg_bytes(dir.path());
    assert!(
        before > 3 << 20,
        "the test must overflow the quota ({before} bytes)"
    );
    let report = js.merge().unwrap();
    let cut = report.quota_horizon.expect("over quota: a cut");
    let after = seg_bytes(dir.path());
    assert!(
        after <= 3 << 20,
        "after the merge {after} bytes, quota {}",
        3 << 20
    );
    assert!(
        matches!(js.view(marks[0].0), Err(JournalError::Expired { .. })),
        "the oldest point went first"
    );
    let mut kept = 0;
    for (t, content) in &marks {
        if *t > cut {
            assert!(
                read_all(&*js.view_at(*t).unwrap()) == *content,
                "point {t} after the cut {cut}"
            );
            kept += 1;
        }
    }
    assert!(kept >= 1, "the newest history is kept");
    assert_eq!(read_all(&js), marks.last().unwrap().1);
}

/// A probe that reports whatever free space the test sets.
struct FakeSpace(Mutex<space::FsSpace>);

impl space::SpaceProbe for FakeSpace {
    fn space(&self) -> std::io::Result<space::FsSpace> {
        Ok(*self.0.lock().unwrap())
    }
}

/// When the journal's filesystem runs short of free space (no quota set), the background
/// flusher notices by itself and the merge gives up the oldest history, whole segments, until
/// the threshold is met again with some slack; later points still read right.
#[test]
fn a_filesystem_short_of_space_trims_the_oldest_history() {
    let dir = tempfile::tempdir().unwrap();
    let blocks = 2048u64;
    let vol = MemStore::new(blocks);
    let wall = FakeWall::new(10_000_000_000);
    let cfg = JournalConfig {
        retention: RetentionPolicy {
            keep_all: HumanDuration(Duration::from_secs(86_400)),
            tiers: Vec::new(),
        },
        min_free_percent: 10,
        ..test_cfg()
    };
    let js = JournaledStore::open_with_clock(dir.path(), vol.clone(), cfg, wall.clone()).unwrap();
    // Plenty of room while writing: nothing is trimmed.
    let fake = Arc::new(FakeSpace(Mutex::new(space::FsSpace {
        available: 1 << 40,
        total: 2 << 40,
    })));
    js.set_space_probe(fake.clone());
    let marks = overwrite_in_rounds(&js, &wall, blocks, 37);
    js.flush_partials().unwrap();
    let seg_bytes = || primary_segment_bytes(dir.path());
    let before = seg_bytes();
    assert!(before > 4 << 20, "enough history to trim ({before} bytes)");
    assert!(js.merge().unwrap().quota_horizon.is_none(), "room enough");
    // Now the filesystem is 40 MiB with 3 MiB free (10% wanted): 1 MiB short plus 2 MiB of
    // slack must go. The background flusher does it without being asked.
    *fake.0.lock().unwrap() = space::FsSpace {
        available: 3 << 20,
        total: 40 << 20,
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while js.oldest_point() <= marks[0].0 || seg_bytes() + (3 << 20) > before {
        assert!(
            std::time::Instant::now() < deadline,
            "the flusher never trimmed the journal"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(matches!(
        js.view(marks[0].0),
        Err(JournalError::Expired { .. })
    ));
    let newest = marks.last().unwrap();
    assert_eq!(read_all(&*js.view_at(newest.0).unwrap()), newest.1);
    assert_eq!(read_all(&js), newest.1);
}

/// A crash right after a segment file was created, before its header was written, leaves an
/// empty or short file: opening the journal recovers (the file holds nothing) instead of
/// refusing to start.
#[test]
fn segments_torn_before_their_header_are_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let vol = MemStore::new(64);
    {
        let js = JournaledStore::open(dir.path(), vol.clone(), test_cfg()).unwrap();
        js.write(port(1), 0, &[7u8; BS * 8], true).unwrap();
        js.flush_partials().unwrap();
    }
    // A partial journal file and a new primary segment, both cut before their headers.
    std::fs::write(
        dir.path()
            .join("partial")
            .join("00000000000000f4-0000000000000000.seg"),
        b"",
    )
    .unwrap();
    std::fs::write(
        dir.path()
            .join("primary")
            .join(format!("{:016x}.seg", 9999u64)),
        b"RWND",
    )
    .unwrap();
    let js = JournaledStore::open(dir.path(), vol.clone(), test_cfg())
        .expect("opens after a torn creation");
    assert_eq!(&read_all(&js)[..8 * BS], &[7u8; 8 * BS][..]);
    js.write(port(1), 8, &[9u8; BS], true).unwrap();
    assert_eq!(read_all(&js)[8 * BS], 9);
}

/// Entry records (not status records) in every segment file of `dir`.
fn entry_records(dir: &std::path::Path) -> Vec<record::Entry> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let (_, scan) = record::scan_segment(&std::fs::read(&f).unwrap(), "t").unwrap();
        for s in scan.records {
            if let record::Record::Entry(e) = s.record {
                out.push(e);
            }
        }
    }
    out
}

fn prefill(vol: &MemStore, blocks: u64) -> Vec<u8> {
    let content: Vec<u8> = (0..blocks as usize * BS).map(|i| (i / BS) as u8).collect();
    vol.write(IoOrigin::default(), 0, &content, false).unwrap();
    content
}

/// A write over several chunks is one record in the partial journal and in the primary; a
/// crash that tears the last such record loses only that write, and the earlier one is
/// replayed whole.
#[test]
fn multi_chunk_write_is_one_record_and_survives_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let vol = MemStore::new(64);
    let before = prefill(&vol, 64);
    let wall = FakeWall::new(1_000_000_000);
    let mut cfg = test_cfg();
    cfg.commit_interval = ms(60_000);
    cfg.partial_flush_interval = ms(60_000);
    let js = JournaledStore::open_with_clock(dir.path(), vol.clone(), cfg.clone(), wall.clone())
        .unwrap();
    // Blocks 4..44: chunks 0..=5, partly covering the first and the last.
    js.write(port(1), 4, &[0xaa; 40 * BS], true).unwrap();
    let t1 = js.last_stamp();
    wall.advance(10);
    js.write(port(1), 8, &[0xbb; 24 * BS], false).unwrap();
    js.write_partials();
    let partial = entry_records(&dir.path().join("partial"));
    assert_eq!(partial.len(), 2, "one record per write");
    assert_eq!((partial[0].chunks(), partial[0].lba), (6, 0));
    assert_eq!(partial[0].data, before[..48 * BS]);
    assert_eq!(partial[1].chunks(), 3);
    js.crash();
    // Tear the second write's record (and its status record after it).
    let file = std::fs::read_dir(dir.path().join("partial"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .next()
        .unwrap();
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len - 200)
        .unwrap();
    let js = JournaledStore::open_with_clock(dir.path(), vol.clone(), cfg, wall.clone()).unwrap();
    assert_eq!(js.recovery_report().replayed_entries, 6);
    assert_eq!(js.primary_entries(), 6);
    let primary = entry_records(&dir.path().join("primary"));
    assert_eq!(primary.len(), 1);
    assert_eq!(primary[0].chunks(), 6);
    assert_eq!(read_all(&*js.view_at(t1 - 1).unwrap()), before);
    let mut now = before.clone();
    now[4 * BS..44 * BS].fill(0xaa);
    assert_eq!(
        read_all(&js),
        now,
        "the torn write never reached the volume"
    );
    assert_eq!(read_all(&*js.view_at(t1).unwrap()), now);
}

/// A write larger than `MAX_RECORD_SPAN` is journaled as a few bounded records, all with the
/// write's stamp.
#[test]
fn huge_write_is_split_into_bounded_records() {
    let dir = tempfile::tempdir().unwrap();
    let blocks = 4096u64;
    let vol = MemStore::new(blocks);
    let before = prefill(&vol, blocks);
    let js = JournaledStore::open(dir.path(), vol.clone(), test_cfg()).unwrap();
    let len = 600 << 10;
    js.write(port(1), 16, &vec![5u8; len], false).unwrap();
    let t = js.last_stamp();
    js.flush_partials().unwrap();
    let es = entry_records(&dir.path().join("primary"));
    let span = record::MAX_RECORD_SPAN as usize;
    assert_eq!(es.len(), len.div_ceil(span));
    assert!(es.iter().all(|e| e.ts == t && e.seq == es[0].seq));
    assert!(es.iter().all(|e| e.data.len() <= span));
    assert_eq!(
        es.iter().map(|e| u64::from(e.chunks())).sum::<u64>(),
        js.primary_entries() as u64
    );
    assert_eq!(read_all(&*js.view_at(t - 1).unwrap()), before);
}

/// The merge drops one chunk's key of a multi-chunk record and keeps another: the segment
/// holding the record stays, and views still read the live chunk from it.
#[test]
fn merge_keeps_a_record_alive_for_one_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let blocks = 4096u64;
    let vol = MemStore::new(blocks);
    let before = prefill(&vol, blocks);
    // All writes below fall into one 2 ms window of the first tier.
    let wall = FakeWall::new(10_000_000_001);
    let js =
        JournaledStore::open_with_clock(dir.path(), vol.clone(), test_cfg(), wall.clone()).unwrap();
    let t0 = js.last_stamp();
    let chunk = |c: u64, byte: u8| (c * 8, vec![byte; 8 * BS]);
    let put = |c: u64, byte: u8| {
        let (lba, d) = chunk(c, byte);
        js.write(port(1), lba, &d, false).unwrap();
    };
    put(0, 0x22); // E0: the earliest entry for chunk 0 in the window
    put(101, 0x01); // the earliest for chunks 101 and 103
    put(103, 0x01);
    js.flush_partials().unwrap();
    for i in 0..300 {
        put(100, i as u8); // fills segment 1 and spills into segment 2
    }
    js.flush_partials().unwrap();
    // E1 over chunks 0 and 1: its chunk 0 is not the earliest in the window, its chunk 1 is.
    js.write(port(1), 0, &[0x33; 16 * BS], false).unwrap();
    let t1 = js.last_stamp();
    js.flush_partials().unwrap();
    for i in 0..300 {
        put(101, i as u8); // fills segment 2, later entries go to segment 3
    }
    js.flush_partials().unwrap();
    for i in 0..300 {
        put(103, i as u8); // fills segment 3 (nothing live in it), then segment 4
    }
    js.flush_partials().unwrap();
    let e1_seg = {
        let mut segs: Vec<_> = std::fs::read_dir(dir.path().join("primary"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        segs.sort();
        assert!(segs.len() >= 4, "{segs:?}");
        segs.into_iter()
            .find(|p| {
                let (_, scan) = record::scan_segment(&std::fs::read(p).unwrap(), "t").unwrap();
                scan.records.iter().any(|s| {
                    matches!(&s.record, record::Record::Entry(e) if e.ts == t1 && e.chunks() == 2)
                })
            })
            .expect("E1's segment")
    };
    assert!(t1 - t0 < 2000, "one window");
    wall.advance(50_000);
    let report = js.merge().unwrap();
    // 299 + 300 + 300 later versions of chunks 100, 101, 103; E1 stays whole (one index key
    // for chunks 0 and 1, and it is the earliest for chunk 1).
    assert_eq!(report.dropped, 899, "{report:?}");
    assert!(!report.segments_deleted.is_empty(), "{report:?}");
    assert!(e1_seg.exists(), "E1's chunk 1 is live: its segment stays");
    // Every point in the window reads as the window start.
    assert_eq!(read_all(&*js.view_at(t1).unwrap()), before);
    assert_eq!(
        js.primary_entries(),
        6,
        "E0, E1 (both chunks: one key), one each of 100, 101, 103"
    );
}

/// Writers that found their port over the back-pressure limit queue on the flush lock; the
/// first one's flush brings the port under the limit, and the others must not flush again
/// (each would rotate and copy a file of a few entries, with an fsync of the primary).
#[test]
fn writers_queued_behind_a_backpressure_flush_do_not_flush_again() {
    let dir = tempfile::tempdir().unwrap();
    let blocks = 1024u64;
    let vol = MemStore::new(blocks);
    prefill(&vol, blocks);
    let cfg = JournalConfig {
        partial_capacity: 1 << 30,
        partial_flush_interval: ms(3_600_000),
        ..test_cfg()
    };
    let js = JournaledStore::open(dir.path(), vol, cfg).unwrap();
    for c in 0..4u64 {
        js.write(port(1), c * 8, &vec![7; 8 * BS], false).unwrap();
    }
    let held = js.partial_bytes();
    assert!(held >= 4 * 8 * BS as u64, "{held}");
    let in_primary = js.primary_entries();
    // Under the limit by the time the lock is taken: nothing moves.
    js.backpressure_flush(held + 1).unwrap();
    assert_eq!(js.partial_bytes(), held);
    assert_eq!(js.primary_entries(), in_primary);
    // Still at the limit: the port is flushed.
    js.backpressure_flush(held).unwrap();
    assert_eq!(js.partial_bytes(), 0);
    assert!(js.primary_entries() > in_primary);
}

/// The background round decides a port is due before it takes the flush lock. If a writer's
/// back-pressure flush holds the lock meanwhile and moves the entries, the round must ask
/// again once the lock is its: flushing the few entries written since would rotate and copy a
/// small file, with an fsync of the primary.
#[test]
fn the_background_round_does_not_flush_a_port_a_backpressure_flush_just_emptied() {
    let dir = tempfile::tempdir().unwrap();
    let blocks = 1024u64;
    let vol = MemStore::new(blocks);
    prefill(&vol, blocks);
    let cfg = JournalConfig {
        partial_flush_interval: ms(3_600_000),
        // The flusher runs only when a write wakes it (its port over `partial_capacity`).
        commit_interval: ms(3_600_000),
        dirty_cache_limit: 1 << 30,
        ..test_cfg()
    };
    let cap = cfg.partial_capacity;
    let js = JournaledStore::open(dir.path(), vol, cfg).unwrap();
    let held = js.hold_flush_lock();
    // Over the capacity (not twice over, where the writer would flush itself): the last write
    // wakes the flusher, whose round finds the port due and waits for the lock.
    let mut c = 0u64;
    while js.partial_bytes() < cap {
        js.write(port(1), c * 8, &vec![7; 8 * BS], false).unwrap();
        c += 1;
    }
    std::thread::sleep(Duration::from_millis(200));
    // A back-pressure flush while the round waits, then one more write.
    js.backpressure_flush_held(&held, cap).unwrap();
    assert_eq!(js.partial_bytes(), 0);
    let in_primary = js.primary_entries();
    js.write(port(1), c * 8, &vec![8; 8 * BS], false).unwrap();
    let after_write = js.partial_bytes();
    assert!(after_write > 0 && after_write < cap, "{after_write}");
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        js.partial_bytes(),
        after_write,
        "the round flushed the port again after the back-pressure flush"
    );
    assert_eq!(js.primary_entries(), in_primary);
}

/// A merge walks the index without holding up flushes: while its walk is paused, writes go
/// on and partial journals flush into the primary, into segments made during the merge. The
/// merge then deletes only segments it walked, so the history written meanwhile stays exact.
#[test]
fn writes_and_flushes_go_on_during_a_merge_walk() {
    use std::sync::mpsc;
    let dir = tempfile::tempdir().unwrap();
    let blocks = 4096u64;
    let vol = MemStore::new(blocks);
    prefill(&vol, blocks);
    let wall = FakeWall::new(10_000_000_001);
    let js =
        JournaledStore::open_with_clock(dir.path(), vol.clone(), test_cfg(), wall.clone()).unwrap();
    // History for the merge to thin out: 600 versions of chunks 500 and 501 in one 2 ms
    // window, spread over many segments. Their keys sort after those of the writes made
    // during the merge (lower chunks), so the walk, paused at its first key, never sees those.
    for i in 0..600u32 {
        js.write(
            port(1),
            (500 + u64::from(i % 2)) * 8,
            &vec![i as u8; 8 * BS],
            false,
        )
        .unwrap();
    }
    js.flush_partials().unwrap();
    wall.advance(50_000);
    let (started_tx, started) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    js.set_merge_walk_hook(move || {
        started_tx.send(()).unwrap();
        go_rx.recv().unwrap();
    });
    std::thread::scope(|s| {
        let merge = s.spawn(|| js.merge());
        started
            .recv_timeout(Duration::from_secs(20))
            .expect("the merge walks the index");
        // Meanwhile: 300 writes of port 2 (1.2 MiB of old data, more than a segment) and a
        // flush of every partial journal into the primary.
        let before = read_all(&js);
        let t_before = js.last_stamp();
        let (done_tx, done) = mpsc::channel();
        let js = &js;
        s.spawn(move || {
            for c in 100..400u64 {
                js.write(port(2), c * 8, &vec![0xee; 8 * BS], false)
                    .unwrap();
            }
            js.flush_partials().unwrap();
            done_tx.send(()).unwrap();
        });
        let went_on = done.recv_timeout(Duration::from_secs(20)).is_ok();
        go.send(()).unwrap();
        assert!(went_on, "writes and flushes waited for the merge's walk");
        let report = merge.join().unwrap().unwrap();
        assert!(report.dropped >= 598, "{report:?}");
        assert!(!report.segments_deleted.is_empty(), "{report:?}");
        // The history written during the merge is whole: its segments were not deleted.
        assert_eq!(read_all(&*js.view_at(t_before).unwrap()), before);
        let mut after = before.clone();
        after[100 * 8 * BS..400 * 8 * BS].fill(0xee);
        assert_eq!(read_all(js), after);
        assert_eq!(js.primary_entries(), js.index_walk_len(), "running count");
    });
}

/// Replication's use of change tracking, without the network: a mirror that only ever copies
/// the extents `take` lists, read from the view at a settled point, equals that view after
/// every round and equals the volume at the end, while four ports write and unmap at random.
/// A write lost between rounds (taken but not yet visible, or dropped because it raced with
/// the point) would leave the mirror behind.
#[test]
fn a_mirror_fed_by_change_tracking_misses_no_write() {
    const BLOCKS: u64 = 4096;
    const EXTENT: u64 = 16;
    let dir = tempfile::tempdir().unwrap();
    let vol = MemStore::new(BLOCKS);
    let cfg = JournalConfig {
        retention: RetentionPolicy {
            keep_all: ms(600_000),
            tiers: Vec::new(),
        },
        ..test_cfg()
    };
    let js = Arc::new(JournaledStore::open(dir.path(), vol, cfg).unwrap());
    let changes = js.subscribe_changes(EXTENT, 1 << 20);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4u64)
        .map(|p| {
            let (js, stop) = (js.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(100 + p);
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let blocks = rng.gen_range(1..40);
                    let lba = rng.gen_range(0..BLOCKS - blocks);
                    if rng.gen_bool(0.05) {
                        js.unmap(port(p + 1), lba, blocks).unwrap();
                    } else {
                        let data: Vec<u8> = (0..blocks as usize * BS).map(|_| rng.gen()).collect();
                        js.write(port(p + 1), lba, &data, false).unwrap();
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut mirror = vec![0u8; BLOCKS as usize * BS];
    let copy = |point: u64, mirror: &mut Vec<u8>| -> usize {
        let view = js.view(point).unwrap();
        assert_eq!(view.point(), point);
        let extents = changes.take(point).expect("tracked");
        for &e in &extents {
            let o = (e * EXTENT) as usize * BS;
            view.read(e * EXTENT, &mut mirror[o..o + EXTENT as usize * BS])
                .unwrap();
        }
        assert!(*mirror == read_all(&view), "the mirror differs at {point}");
        extents.len()
    };
    let mut rounds = 0;
    let mut copied = 0;
    let deadline = std::time::Instant::now() + Duration::from_millis(1500);
    while rounds < 5 || std::time::Instant::now() < deadline {
        copied += copy(js.settled_stamp(), &mut mirror);
        rounds += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let writes: u64 = writers.into_iter().map(|h| h.join().unwrap()).sum();
    copied += copy(js.settled_stamp(), &mut mirror);
    assert!(
        mirror == read_all(&*js),
        "the mirror differs from the volume"
    );
    assert!(writes > 50, "{writes} writes in {rounds} rounds");
    assert_eq!(changes.take(js.settled_stamp()), Some(vec![]));
    println!("{writes} writes, {rounds} rounds, {copied} extents copied");
}

/// An UNMAP of the whole volume (WRITE SAME with UNMAP) is journaled in bounded pieces: the
/// old data read at once stays at 16 MiB on a 64 MiB volume, a view before it still reads the
/// old content, and the volume reads as zeros after it.
#[test]
fn a_whole_volume_unmap_is_journaled_in_bounded_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let blocks = (64u64 << 20) / BS as u64;
    let vol = MemStore::new(blocks);
    let js = JournaledStore::open(dir.path(), vol.clone(), test_cfg()).unwrap();
    let mib = vec![0x5au8; 1 << 20];
    for i in 0..64u64 {
        js.write(port(1), i * (1 << 20) / BS as u64, &mib, false)
            .unwrap();
    }
    js.flush().unwrap();
    let before = js.last_stamp();
    vol.max_read.store(0, Ordering::SeqCst);
    js.unmap(port(1), 0, blocks).unwrap();
    js.flush().unwrap();
    let most = vol.max_read.load(Ordering::SeqCst);
    assert!(most <= 16 << 20, "one read of {most} bytes of old data");
    assert!(most > 0, "the unmap read old data");
    let mut b = vec![0u8; 1 << 20];
    js.view_at(before)
        .unwrap()
        .read(blocks / 2, &mut b)
        .unwrap();
    assert!(b.iter().all(|x| *x == 0x5a), "the view before the unmap");
    js.read(blocks / 2, &mut b).unwrap();
    assert!(b.iter().all(|x| *x == 0), "the volume after it");
    assert_eq!(
        js.allocation(0, blocks).unwrap(),
        (Allocation::Deallocated, blocks)
    );
}

/// Repeats `concurrent_ports_and_views` with fresh journals: a view read while four ports write
/// the same chunks must never show a write made after its point. The partial journals are
/// scanned one port after another; a scan that missed an entry appended behind it but found a
/// later one for the same chunk in another port returned that later entry's old data (seen
/// about once in 40 runs under load before `entries_after` looked such hits up again).
#[test]
fn views_stay_exact_while_ports_race() {
    for iter in 0..40u64 {
        let dir = tempfile::tempdir().unwrap();
        let vol = MemStore::new(256);
        let js = Arc::new(JournaledStore::open(dir.path(), vol.clone(), test_cfg()).unwrap());
        let t0 = js.last_stamp();
        let base = read_all(&*js);
        let handles: Vec<_> = (0..4u64)
            .map(|p| {
                let js = js.clone();
                std::thread::spawn(move || {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(p + iter * 10);
                    for _ in 0..200 {
                        let lba = rng.gen_range(0..250);
                        let n = rng.gen_range(1..6);
                        let data = vec![p as u8 + 1; BS * n];
                        js.write(port(p + 1), lba, &data, rng.gen_bool(0.1))
                            .unwrap();
                    }
                })
            })
            .collect();
        let v = js.view_at(t0).unwrap();
        for _ in 0..20 {
            let got = read_all(&*v);
            if let Some(i) = got.iter().zip(&base).position(|(a, b)| a != b) {
                panic!(
                    "run {iter}: block {} of the view at {t0} reads {} (written later)",
                    i / BS,
                    got[i]
                );
            }
        }
        for h in handles {
            h.join().unwrap();
        }
    }
}

/// The gauges `/metrics` samples: the flush lag is the age of the oldest entry not yet durable
/// (zero once a SYNCHRONIZE CACHE made it durable); the merge lag is how long a merge has been
/// due under the retention policy (zero again after one); the port that wrote is valid.
#[test]
fn flush_and_merge_lag_and_port_validity() {
    let dir = tempfile::tempdir().unwrap();
    let vol = MemStore::new(64);
    let wall = FakeWall::new(10_000_000_000);
    let cfg = JournalConfig {
        // Nothing moves in the background: only the calls below make entries durable.
        partial_flush_interval: ms(3_600_000),
        partial_capacity: 64 << 20,
        ..test_cfg()
    };
    let js = JournaledStore::open_with_clock(dir.path(), vol, cfg.clone(), wall.clone()).unwrap();
    let born = js.born();
    assert_eq!(
        js.flush_lag(born + 1_000),
        Duration::ZERO,
        "nothing journaled"
    );
    assert!(js.port_validity().unwrap().is_empty());

    js.write(port(7), 0, &[1u8; BS], false).unwrap();
    let ts = js.last_stamp();
    assert_eq!(
        js.flush_lag(ts + 250_000),
        Duration::from_millis(250),
        "the entry waits for a commit or a flush"
    );
    js.flush().unwrap();
    assert_eq!(js.flush_lag(ts + 250_000), Duration::ZERO, "durable");
    assert_eq!(js.port_validity().unwrap(), vec![(7, true)]);

    // test_cfg keeps history for 400 ms: a merge is due once the horizon passes the oldest point.
    let due = cfg.retention.merge_due(js.oldest_point());
    assert!(
        due > born && due <= born + 420_000,
        "due {due}, born {born}"
    );
    assert_eq!(js.merge_lag(due), Duration::ZERO);
    assert_eq!(js.merge_lag(due + 1_500_000), Duration::from_millis(1_500));
    wall.set(due + 1_500_000);
    js.merge().unwrap();
    assert!(
        js.oldest_point() > born,
        "the merge dropped the oldest history"
    );
    assert_eq!(js.merge_lag(due + 1_500_000), Duration::ZERO, "merged");
}

/// Three-phase status: a write whose FUA write-through fails ends `Failed` (the caller gets
/// the error), with its own range; writes that succeed end `Ok`. The outcome survives the
/// move into the primary journal, an index rebuild, a restart, and a crash before the move.
/// Views stay exact around the failed write: before it they read the old data its entry
/// holds; after it, what the volume and the dirty cache really held (the failed write's data
/// stays cached and reaches the volume once the fault clears).
#[test]
fn a_failed_fua_write_ends_failed_and_views_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let vol = MemStore::new(64);
    let wall = FakeWall::new(10_000_000_000);
    let cfg = JournalConfig {
        partial_flush_interval: ms(3_600_000),
        partial_capacity: 64 << 20,
        ..test_cfg()
    };
    let open = || {
        JournaledStore::open_with_clock(dir.path(), vol.clone(), cfg.clone(), wall.clone()).unwrap()
    };
    let js = open();
    js.write(port(1), 0, &[1u8; 8 * BS], true).unwrap();
    let t_ok = js.last_stamp();
    vol.fail_writes.store(true, Ordering::SeqCst);
    // 3 blocks inside chunk 0: the entry covers the whole chunk, the outcome says 1+3.
    assert!(js.write(port(1), 1, &[2u8; 3 * BS], true).is_err());
    let t_failed = js.last_stamp();
    js.write(port(2), 16, &[3u8; 8 * BS], false).unwrap();
    let failed = js.failed_writes(0, u64::MAX).unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let f = failed[0];
    assert_eq!(
        (f.ts, f.port, f.status, f.lba, f.blocks),
        (t_failed, 1, record::Status::Failed, 1, 3)
    );
    assert!(js.failed_writes(0, t_failed - 1).unwrap().is_empty());
    // Exact reads: before the failed write its old data, after it what reads returned.
    let mut then = [1u8; 8 * BS].to_vec();
    assert_eq!(
        &read_all(&*js.view_at(t_failed - 1).unwrap())[..8 * BS],
        &then[..]
    );
    then[BS..4 * BS].fill(2);
    assert_eq!(
        &read_all(&*js.view_at(t_failed).unwrap())[..8 * BS],
        &then[..]
    );
    assert_eq!(&read_all(&js)[..8 * BS], &then[..]);
    vol.fail_writes.store(false, Ordering::SeqCst);
    js.flush().unwrap();
    assert_eq!(
        &vol.snapshot()[..8 * BS],
        &then[..],
        "applied once the fault cleared"
    );
    // Into the primary journal: the entry went with its outcome, the others are Ok.
    js.flush_partials().unwrap();
    assert_eq!(js.failed_writes(0, u64::MAX).unwrap(), failed);
    let statuses: Vec<_> = entry_records(&dir.path().join("primary"))
        .into_iter()
        .map(|e| (e.ts, e.status))
        .collect();
    assert!(
        statuses.contains(&(t_ok, record::Status::Ok)),
        "{statuses:?}"
    );
    assert!(statuses.contains(&(t_failed, record::Status::Failed)));
    assert_eq!(
        statuses
            .iter()
            .filter(|(_, s)| *s != record::Status::Ok)
            .count(),
        1,
        "{statuses:?}"
    );
    js.rebuild_index().unwrap();
    assert_eq!(js.failed_writes(0, u64::MAX).unwrap(), failed, "rebuilt");
    drop(js);
    let js = open();
    assert_eq!(js.failed_writes(0, u64::MAX).unwrap(), failed, "reopened");
    // A failure recorded only in a partial journal when the process dies is replayed.
    vol.fail_writes.store(true, Ordering::SeqCst);
    assert!(js.write(port(3), 40, &[4u8; 8 * BS], true).is_err());
    let t2 = js.last_stamp();
    js.crash();
    vol.fail_writes.store(false, Ordering::SeqCst);
    let js = open();
    let failed = js.failed_writes(0, u64::MAX).unwrap();
    assert_eq!(
        failed.iter().map(|u| (u.ts, u.lba)).collect::<Vec<_>>(),
        vec![(t_failed, 1), (t2, 40)]
    );
    // The view before the lost write reads the data its entry saved.
    assert_eq!(
        &read_all(&*js.view_at(t2 - 1).unwrap())[40 * BS..48 * BS],
        &[0u8; 8 * BS][..]
    );
}

/// A merged window carries the port validity of its window: a port invalid during window A
/// makes a view at any point in A say it is not guaranteed complete, also after the merge and
/// after the sled database (with the port-validity intervals) is lost and the index rebuilt
/// from the segments; a view in a later window B, where every port was valid, is complete.
#[test]
fn merged_windows_carry_port_validity() {
    let dir = tempfile::tempdir().unwrap();
    let vol = MemStore::new(64);
    // Windows of the first tier are 2 ms: A = (10_000_000_000, +2000], B 5 ms later.
    let wall = FakeWall::new(10_000_000_001);
    let cfg = test_cfg();
    let open = || {
        JournaledStore::open_with_clock(dir.path(), vol.clone(), cfg.clone(), wall.clone()).unwrap()
    };
    let js = open();
    js.write(port(1), 0, &[1u8; 8 * BS], false).unwrap();
    let t_a = js.last_stamp();
    js.set_port_invalid(2, Some(js.last_stamp()));
    js.write(port(2), 8, &[2u8; 8 * BS], false).unwrap();
    js.write(port(1), 0, &[3u8; 8 * BS], false).unwrap();
    js.flush_partials().unwrap(); // resynchronises port 2 (still inside window A)
    assert!(js.last_stamp() - t_a < 1000, "all in window A");
    wall.advance(5_000);
    js.write(port(1), 16, &[4u8; 8 * BS], false).unwrap();
    js.write(port(2), 24, &[5u8; 8 * BS], false).unwrap();
    let t_b = js.last_stamp();
    js.flush().unwrap();
    js.flush_partials().unwrap();
    wall.advance(50_000);
    let report = js.merge().unwrap();
    assert_eq!(
        (report.windows_recorded, report.windows_incomplete),
        (2, 1),
        "{report:?}"
    );
    // Bookmarks (one deleted), a consistency mark, the merge's rounding state and the
    // validity intervals live in sled and in `meta.log`: they must survive losing sled.
    js.bookmark("keep").unwrap();
    js.bookmark("gone").unwrap();
    assert!(js.delete_bookmark("gone").unwrap());
    js.flush().unwrap();
    let meta_of = |js: &JournaledStore| {
        (
            js.bookmarks().unwrap(),
            js.consistency_marks(0, u64::MAX).unwrap(),
            js.invalid_ports(0, u64::MAX).unwrap(),
            js.view(t_a).unwrap().point(),
            js.view(t_b).unwrap().point(),
        )
    };
    let meta = meta_of(&js);
    assert_eq!(meta.0.len(), 1);
    assert!(!meta.1.is_empty() && !meta.2.is_empty());
    let check = |js: &JournaledStore, what: &str| {
        let a = js.view(t_a).unwrap();
        assert_eq!(a.invalid_ports().unwrap(), vec![2], "{what}: view in A");
        assert!(!a.complete().unwrap());
        let b = js.view(t_b).unwrap();
        assert!(b.complete().unwrap(), "{what}: view in B");
        assert_eq!(js.incomplete_windows(0).unwrap().len(), 1, "{what}");
    };
    assert_ne!(js.view(t_a).unwrap().point(), t_a, "A is merged");
    assert_ne!(js.view(t_b).unwrap().point(), t_b, "B is merged");
    check(&js, "after the merge");
    drop(js);
    check(&open(), "after a restart");
    // Lose the sled database: the index is rebuilt from the segments, the rest from meta.log.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::remove_dir_all(dir.path().join("index")).is_err() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let js = open();
    assert!(
        js.recovery_report().primary.records_indexed > 0,
        "indexed anew"
    );
    check(&js, "after the index was rebuilt");
    assert_eq!(
        meta_of(&js),
        meta,
        "metadata back from meta.log, views still rounded"
    );
    // Merging again keeps what the windows recorded.
    wall.advance(1_000);
    js.merge().unwrap();
    check(&js, "after a second merge");
}

/// Header kinds of the primary journal's segment files, in segment order.
fn primary_segment_kinds(dir: &std::path::Path) -> Vec<record::SegmentKind> {
    let mut paths: Vec<_> = std::fs::read_dir(dir.join("primary"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let b = std::fs::read(p).unwrap();
            record::SegmentHeader::decode(&b[..record::SEGMENT_HEADER_LEN])
                .unwrap()
                .kind
        })
        .collect()
}

/// A full partial journal file becomes a primary segment as it is, so old data is written to
/// disk once: the segments hold about the old data's bytes, not twice. Every point in time
/// reads back exactly through the adopted segments, after a reopen, and after the index is
/// thrown away and rebuilt from them; `rewind verify` accepts them.
#[test]
fn full_partial_files_are_adopted_as_primary_segments() {
    let dir = tempfile::tempdir().unwrap();
    let blocks = 2048u64;
    let vol = MemStore::new(blocks);
    let wall = FakeWall::new(10_000_000_000);
    let cfg = JournalConfig {
        // No background flush by age: files rotate when full (adopted) or when asked.
        partial_flush_interval: ms(3_600_000),
        ..test_cfg()
    };
    let open = || {
        JournaledStore::open_with_clock(dir.path(), vol.clone(), cfg.clone(), wall.clone()).unwrap()
    };
    let js = open();
    let marks = overwrite_in_rounds(&js, &wall, blocks, 37);
    js.flush_partials().unwrap();
    let kinds = primary_segment_kinds(dir.path());
    let adopted = kinds
        .iter()
        .filter(|k| **k == record::SegmentKind::Partial)
        .count();
    assert!(adopted >= 8, "full partial files adopted: {kinds:?}");
    // 8 rounds over 1 MiB: 7 MiB of old data that is not zeros (the first round's old data
    // is zeros, journaled too), each byte once plus record heads.
    let bytes = primary_segment_bytes(dir.path());
    let old = 8 * blocks * BS as u64;
    assert!(
        bytes < old + old / 20,
        "segments hold {bytes} bytes for {old} bytes of old data"
    );
    let check = |js: &JournaledStore, when: &str| {
        for (t, content) in &marks[..marks.len() - 1] {
            assert!(
                read_all(&*js.view_at(*t).unwrap()) == *content,
                "point {t} {when}"
            );
        }
        assert_eq!(read_all(js), marks.last().unwrap().1, "live volume {when}");
    };
    check(&js, "after adoption");
    drop(js);
    let js = open();
    check(&js, "after a reopen");
    drop(js);
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let js = open();
    assert!(js.recovery_report().primary.records_indexed > 0);
    check(&js, "after the index was rebuilt");
    drop(js);
    let report = crate::verify::check_journal(dir.path(), BS as u32).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// A view read over a run of small writes made one after the other reads their records, which
/// lie back to back in a segment, with one `pread`: what it returns is exact, and a record
/// damaged on disk still fails the reads that need it (each record's head and chunks are
/// verified as when read alone) and no read that does not.
#[test]
fn back_to_back_small_records_are_read_together_and_still_verified() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = 64u64;
    let blocks = chunks * 8;
    let vol = MemStore::new(blocks);
    let old: Vec<u8> = (0..blocks as usize * BS)
        .map(|i| (i / 4096) as u8 ^ 0x5a)
        .collect();
    vol.write(IoOrigin::default(), 0, &old, false).unwrap();
    let js = JournaledStore::open(dir.path(), vol.clone(), test_cfg()).unwrap();
    let t0 = js.last_stamp();
    for c in 0..chunks {
        js.write(port(1), c * 8, &[0xc3u8; 4096], false).unwrap();
    }
    js.flush_partials().unwrap();
    let view = js.view_at(t0).unwrap();
    let mut got = vec![0u8; old.len()];
    view.read(0, &mut got).unwrap();
    assert!(got == old, "the view reads the old data back");
    drop(view);
    drop(js);
    // Damage one byte of chunk 40's old data where it lies in a primary segment.
    let needle = vec![40u8 ^ 0x5a; 4096];
    let mut damaged = false;
    for e in std::fs::read_dir(dir.path().join("primary")).unwrap() {
        let path = e.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(4096).position(|w| w == &needle[..]) {
            bytes[at + 100] ^= 1;
            std::fs::write(&path, &bytes).unwrap();
            damaged = true;
        }
    }
    assert!(damaged, "chunk 40's old data found in a segment");
    let js = JournaledStore::open(dir.path(), vol.clone(), test_cfg()).unwrap();
    let view = js.view_at(t0).unwrap();
    let mut all = vec![0u8; old.len()];
    let err = view
        .read(0, &mut all)
        .expect_err("a read over the damaged record fails");
    assert!(err.to_string().contains("corrupt"), "{err}");
    let mut before = vec![0u8; 40 * 4096];
    view.read(0, &mut before).unwrap();
    assert!(before == old[..40 * 4096], "reads before it are exact");
    let mut after = vec![0u8; 23 * 4096];
    view.read(41 * 8, &mut after).unwrap();
    assert!(after == old[41 * 4096..], "reads after it are exact");
}

/// Large writes leave their data shared in the dirty cache (pieces of the command's buffer,
/// no copy) and go to the volume as slices of it; smaller writes over those chunks copy them
/// first, and a write that covers a shared chunk whole replaces it. Through all of it, the
/// current content, every point in time, and the volume after a sync are exact.
#[test]
fn large_writes_share_their_data_and_stay_exact() {
    use bytes::Bytes;
    let dir = tempfile::tempdir().unwrap();
    let blocks = 1024u64; // 512 KiB
    let vol = MemStore::new(blocks);
    let mut cur = prefill(&vol, blocks);
    let wall = FakeWall::new(1_000_000_000);
    let mut cfg = test_cfg();
    cfg.commit_interval = ms(60_000); // the dirty cache keeps everything until the sync
    cfg.partial_flush_interval = ms(60_000);
    cfg.dirty_cache_limit = 64 << 20;
    cfg.partial_capacity = 64 << 20;
    let js = JournaledStore::open_with_clock(dir.path(), vol.clone(), cfg, wall.clone()).unwrap();
    let mut history = vec![(js.last_stamp(), cur.clone())];
    let mut step = |lba: u64, n: u64, byte: u8, shared: bool, cur: &mut Vec<u8>| {
        wall.advance(10);
        let data: Vec<u8> = (0..n as usize * BS).map(|i| byte ^ (i / 7) as u8).collect();
        if shared {
            assert!(data.len() >= super::cache::SHARE_MIN);
            js.write_shared(port(1), lba, Bytes::from(data.clone()), false)
                .unwrap();
        } else {
            js.write(port(1), lba, &data, false).unwrap();
        }
        cur[lba as usize * BS..(lba + n) as usize * BS].copy_from_slice(&data);
        history.push((js.last_stamp(), cur.clone()));
    };
    // 128 KiB at chunk 0, and 100 KiB starting inside a chunk (edges partly covered).
    step(0, 256, 0x11, true, &mut cur);
    step(300, 200, 0x22, true, &mut cur);
    // A small write inside a shared chunk, one across two pieces of different writes.
    step(10, 3, 0x33, false, &mut cur);
    step(254, 50, 0x44, false, &mut cur);
    // A large write over shared chunks of the first one (they are replaced whole).
    step(64, 160, 0x55, true, &mut cur);
    assert!(read_all(&js) == cur, "current content");
    // Chunks 0..8 and 28..31 of the first write, 38..62 of the second, 8..28 of the last,
    // less the ones the small writes changed (1, 31, 32..37 were not pieces).
    assert_eq!(js.shared_chunks(), 8 - 1 + 3 + 24 + 20);
    assert!(
        vol.snapshot() != cur,
        "nothing reached the volume before the sync"
    );
    for (ts, want) in &history {
        assert!(
            read_all(&*js.view_at(*ts).unwrap()) == *want,
            "view at {ts}"
        );
    }
    js.flush().unwrap();
    assert!(vol.snapshot() == cur, "the volume after the sync");
    for (ts, want) in &history {
        assert!(
            read_all(&*js.view_at(*ts).unwrap()) == *want,
            "view at {ts} after the sync"
        );
    }
}
