//! Where old data should live: as sled values, or in our checksummed append-only segment files
//! with sled holding only their locations (what `primary.rs` does). An `#[ignore]` test that
//! appends the same stream of journal records both ways and prints a table (the figures and the
//! reasons are in `docs/cdp.md`, "Data layout"):
//!
//! ```text
//! cargo test --release --lib journal::layout_bench -- --ignored --nocapture
//! ```
//!
//! Environment: `LAYOUT_BENCH_MB` (old data per run, default 256), `LAYOUT_BENCH_COMMIT`
//! (bytes of old data between two durability calls: the group commit, default 1 MiB),
//! `LAYOUT_BENCH_DIR` (where to write; default the temp directory: use the filesystem the
//! journal would live on).
//!
//! Each run appends one record per write (4 KiB or 64 KiB of old data, chunk-aligned writes
//! scattered over a 1 GiB volume, one port, stamps increasing) in groups of `COMMIT` bytes:
//!
//! - **sled**: a `sled::Batch` per group into one tree, each record (the same checksummed
//!   record bytes as a segment holds) under its index key `(extent, ts, run)`, then
//!   `Db::flush()` (sled's durability call: its log is written and fsynced);
//! - **segments**: `PrimaryJournal::append` per group: the records written to the segment
//!   file, `fdatasync`, then one `sled::Batch` of index keys and locations (sled flushes those
//!   in the background; the index is rebuilt from the segments past what it has made durable).
//!
//! The appends run in a child process that kills itself with SIGKILL right after the last
//! durability call (no clean close); the parent then measures the bytes on disk and the time
//! to open the data again (sled's recovery, and for segments `PrimaryJournal::open`, which
//! also indexes what sled had not flushed), and checks that the last record is there.
//! The page cache survives the kill, as it does for `kill -9` of the daemon.

use super::primary::{index_key, PrimaryJournal, EXTENT_CHUNKS, INDEX_CACHE_BYTES};
use super::record::{encode_entry, no_unallocated, Entry, Status};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const CHUNK: u32 = 4096;
const BLOCK: u32 = 512;
const VOLUME_CHUNKS: u64 = (1 << 30) / CHUNK as u64;
const SEGMENT_SIZE: u64 = 256 << 20;
const CHILD_ENV: &str = "LAYOUT_BENCH_CHILD";
const TEST_NAME: &str = "journal::layout_bench::old_data_layout";

fn env_size(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| crate::config::parse_size(&v).unwrap_or_else(|e| panic!("{name}: {e}")))
        .unwrap_or(default)
}

/// The i-th record of the stream: `payload` bytes of old data.
fn record(i: u64, payload: usize) -> Entry {
    let chunks = payload as u64 / CHUNK as u64;
    let slots = VOLUME_CHUNKS / chunks;
    // A prime stride: scattered, aligned to the write size.
    let c0 = (i.wrapping_mul(7919) % slots) * chunks;
    let mut data = vec![0u8; payload];
    for (k, b) in data.iter_mut().enumerate().step_by(512) {
        *b = (i as u8) ^ (k >> 9) as u8;
    }
    Entry {
        ts: 1_700_000_000_000_000 + i,
        port: 1,
        seq: i,
        lba: c0 * u64::from(CHUNK / BLOCK),
        blocks: (chunks as u32) * (CHUNK / BLOCK),
        chunk_blocks: CHUNK / BLOCK,
        status: Status::Ok,
        unallocated: no_unallocated(chunks as u32),
        merged: false,
        invalid_ports: vec![],
        data,
    }
}

fn key_of(e: &Entry) -> [u8; super::primary::KEY_LEN] {
    let c0 = e.lba / u64::from(CHUNK / BLOCK);
    index_key(c0 / EXTENT_CHUNKS, e.ts, (c0 % EXTENT_CHUNKS) as u8)
}

fn open_sled(dir: &Path) -> sled::Db {
    sled::Config::new()
        .path(dir)
        .cache_capacity(INDEX_CACHE_BYTES)
        .open()
        .expect("open sled")
}

/// Child: append `total` bytes of old data in records of `payload` bytes, a durability call
/// every `commit` bytes; write the elapsed time to `dir/elapsed`, then wait to be killed.
fn child(layout: &str, payload: usize, dir: &Path, total: u64, commit: u64) -> ! {
    let n = total / payload as u64;
    let per_group = (commit / payload as u64).max(1);
    let t0 = Instant::now();
    match layout {
        "sled" => {
            let db = open_sled(&dir.join("sled"));
            let tree = db.open_tree("journal").expect("tree");
            let mut i = 0;
            let mut buf = Vec::new();
            while i < n {
                let mut batch = sled::Batch::default();
                for j in i..(i + per_group).min(n) {
                    let e = record(j, payload);
                    buf.clear();
                    encode_entry(&e, &mut buf);
                    batch.insert(&key_of(&e)[..], &buf[..]);
                }
                tree.apply_batch(batch).expect("apply batch");
                db.flush().expect("sled flush");
                i += per_group;
            }
        }
        "segments" => {
            let (pj, _) =
                PrimaryJournal::open(dir, CHUNK, BLOCK, SEGMENT_SIZE).expect("open primary");
            let mut i = 0;
            while i < n {
                let group: Vec<Entry> = (i..(i + per_group).min(n))
                    .map(|j| record(j, payload))
                    .collect();
                pj.append(&group).expect("append");
                i += per_group;
            }
        }
        other => panic!("unknown layout {other}"),
    }
    let secs = t0.elapsed().as_secs_f64();
    let tmp = dir.join("elapsed.tmp");
    std::fs::write(&tmp, format!("{secs}")).expect("write result");
    std::fs::rename(&tmp, dir.join("elapsed")).expect("rename result");
    // The parent kills this process with SIGKILL: no clean close.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Allocated bytes (st_blocks) under `p`, and the sum of file lengths.
fn disk_usage(p: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut out = (0, 0);
    for e in std::fs::read_dir(p).expect("read_dir") {
        let e = e.expect("entry");
        let m = e.metadata().expect("metadata");
        if m.is_dir() {
            let (a, l) = disk_usage(&e.path());
            out.0 += a;
            out.1 += l;
        } else {
            out.0 += m.blocks() * 512;
            out.1 += m.len();
        }
    }
    out
}

struct Figures {
    mb_s: f64,
    disk_per_byte: f64,
    reopen_ms: f64,
    note: String,
}

fn run(layout: &str, payload: usize, base: &Path, total: u64) -> Figures {
    let dir: PathBuf = base.join(format!("{layout}-{payload}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .args([
            TEST_NAME,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{layout},{payload},{}", dir.display()))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn child");
    while !dir.join("elapsed").exists() {
        if let Some(st) = child.try_wait().expect("try_wait") {
            panic!("child ended before it was killed: {st}");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("wait");
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "child: {status}");
    }
    let secs: f64 = std::fs::read_to_string(dir.join("elapsed"))
        .expect("child result")
        .parse()
        .expect("elapsed");
    std::fs::remove_file(dir.join("elapsed")).expect("rm");
    let n = total / payload as u64;
    let stored = n * payload as u64;
    let (alloc, _len) = disk_usage(&dir);
    let last = record(n - 1, payload);
    let t0 = Instant::now();
    let note = match layout {
        "sled" => {
            let db = open_sled(&dir.join("sled"));
            let tree = db.open_tree("journal").expect("tree");
            let v = tree.get(key_of(&last)).expect("get").expect("last record");
            assert_eq!(v.len(), super::record::entry_record_len(&last));
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            let blobs = dir.join("sled").join("blobs");
            let (blob_alloc, _) = if blobs.exists() {
                disk_usage(&blobs)
            } else {
                (0, 0)
            };
            let blob_files = std::fs::read_dir(&blobs).map_or(0, |d| d.count());
            return Figures {
                mb_s: stored as f64 / secs / 1e6,
                disk_per_byte: alloc as f64 / stored as f64,
                reopen_ms: ms,
                note: format!(
                    "sled {:.0} MB, of which blobs {:.0} MB in {blob_files} files",
                    alloc as f64 / 1e6,
                    blob_alloc as f64 / 1e6
                ),
            };
        }
        _ => {
            let (pj, rec) =
                PrimaryJournal::open(&dir, CHUNK, BLOCK, SEGMENT_SIZE).expect("open primary");
            let hit = pj
                .first_after(last.lba / u64::from(CHUNK / BLOCK), last.ts - 1)
                .expect("lookup")
                .expect("last record indexed");
            assert_eq!(hit.0, (last.ts, last.port, last.seq));
            let (seg_alloc, _) = disk_usage(&dir.join("primary"));
            let (idx_alloc, _) = disk_usage(&dir.join("index"));
            format!(
                "segments {:.0} MB, index {:.1} MB; open indexed {} records sled had not flushed",
                seg_alloc as f64 / 1e6,
                idx_alloc as f64 / 1e6,
                rec.records_indexed
            )
        }
    };
    Figures {
        mb_s: stored as f64 / secs / 1e6,
        disk_per_byte: alloc as f64 / stored as f64,
        reopen_ms: t0.elapsed().as_secs_f64() * 1e3,
        note,
    }
}

#[test]
#[ignore = "a benchmark: cargo test --release --lib journal::layout_bench -- --ignored --nocapture"]
fn old_data_layout() {
    let total = env_size("LAYOUT_BENCH_MB", 256) << 20;
    let commit = env_size("LAYOUT_BENCH_COMMIT", 1 << 20);
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let mut it = spec.splitn(3, ',');
        let (layout, payload, dir) = (
            it.next().expect("layout"),
            it.next().expect("payload").parse().expect("payload"),
            it.next().expect("dir"),
        );
        child(layout, payload, Path::new(dir), total, commit);
    }
    let tmp = match std::env::var("LAYOUT_BENCH_DIR") {
        Ok(d) => tempfile::Builder::new()
            .prefix("layout-bench")
            .tempdir_in(d)
            .expect("tempdir"),
        Err(_) => tempfile::tempdir().expect("tempdir"),
    };
    println!(
        "{} MiB of old data per run, a durability call every {} KiB of it",
        total >> 20,
        commit >> 10
    );
    println!("| old data per record | layout | MB/s | bytes on disk per byte of old data | reopen after SIGKILL | |");
    println!("|---|---|---:|---:|---:|---|");
    for payload in [4096usize, 65536] {
        for layout in ["sled", "segments"] {
            let f = run(layout, payload, tmp.path(), total);
            println!(
                "| {} KiB | {layout} | {:.1} | {:.3} | {:.0} ms | {} |",
                payload >> 10,
                f.mb_s,
                f.disk_per_byte,
                f.reopen_ms,
                f.note
            );
            let _ = std::fs::remove_dir_all(tmp.path().join(format!("{layout}-{payload}")));
        }
    }
}
