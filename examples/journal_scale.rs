//! The CDP journal at scale: fill a volume's journal with many entries by driving
//! `JournaledStore` directly over a `FileStore`, then measure what an operator waits for.
//!
//! ```text
//! cargo run --release --example journal_scale -- --dir /big/tmp/scale --entries 1000000
//! ```
//!
//! Phases (each prints one `RESULT name value unit` line, plus the resident memory):
//!   fill        N entries of old data (writes of `--write` bytes, one entry per chunk)
//!   disk        journal bytes on disk per byte of old data (segments; segments + index)
//!   view        time to create a view in the middle of the history (what an export does)
//!   read        sequential read throughput of that view vs the live volume
//!   restore     restore_to(middle): MB/s of volume restored
//!   recovery    a child process fills one partial journal and dies without shutdown
//!               (`_exit`); time to open the journal again (replay + index catch-up)
//!   rebuild     the index dropped and rebuilt from the segments (what the first start after
//!               an index layout change does): entries/s
//!   merge       retention merge over the whole index: entries/s
//!
//! Writes go sequentially through the volume, pass after pass; `--random` scatters them
//! instead (each pass a fixed permutation of the volume's write slots), which is what a
//! journal's index costs the most; `--index-compression` sets `[journal] index_compression`.
//!
//! The data directory is laid out like `rewind serve`'s (`volumes/scale/{volume.toml,journal}`
//! with the volume file at `volumes/scale/data.img`), so `integration/bench/scale.sh` can serve
//! it and time `rewind view export` through the daemon; pass `--keep` for that.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rewind::datadir::DataDir;
use rewind::journal::{HumanDuration, JournalConfig, JournaledStore, RetentionPolicy};
use rewind::storage::{BlockStore, FileStore, IoOrigin};

struct Args {
    dir: PathBuf,
    entries: u64,
    chunk: u32,
    block: u32,
    volume: u64,
    write: usize,
    keep: bool,
    fill_only: bool,
    phase_child: bool,
    random: bool,
    index_compression: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        dir: std::env::temp_dir().join("rewind-journal-scale"),
        entries: 1_000_000,
        chunk: 4096,
        block: 512,
        volume: 256 << 20,
        write: 64 << 10,
        keep: false,
        fill_only: false,
        phase_child: false,
        random: false,
        index_compression: false,
    };
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, what: &str| -> u64 {
        let v = v.unwrap_or_else(|| panic!("{what} needs a value"));
        rewind::config::parse_size(&v).unwrap_or_else(|e| panic!("{what}: {e}"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--dir" => a.dir = PathBuf::from(it.next().expect("--dir needs a value")),
            "--entries" => a.entries = num(it.next(), "--entries"),
            "--chunk" => a.chunk = num(it.next(), "--chunk") as u32,
            "--block" => a.block = num(it.next(), "--block") as u32,
            "--volume" => a.volume = num(it.next(), "--volume"),
            "--write" => a.write = num(it.next(), "--write") as usize,
            "--keep" => a.keep = true,
            "--fill-only" => a.fill_only = true,
            "--random" => a.random = true,
            "--index-compression" => a.index_compression = true,
            "--crash-child" => a.phase_child = true,
            "-h" | "--help" => {
                println!(
                    "journal_scale [--dir DIR] [--entries N] [--chunk BYTES] [--block 512|4096] \
                     [--volume BYTES] [--write BYTES] [--random] [--index-compression] [--keep] \
                     [--fill-only]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn result(name: &str, value: f64, unit: &str) {
    let (rss, hwm) = rss_kib();
    println!(
        "RESULT {name} {value:.3} {unit}   (VmRSS {} MiB, VmHWM {} MiB)",
        rss / 1024,
        hwm / 1024
    );
}

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                total += dir_bytes(&e.path());
            } else {
                // Allocated bytes, not the apparent size.
                total += std::os::unix::fs::MetadataExt::blocks(&m) * 512;
            }
        }
    }
    total
}

fn config(a: &Args) -> JournalConfig {
    JournalConfig {
        chunk_size: a.chunk,
        // Merges only when asked (the merge phase); everything is kept until then.
        merge_interval: HumanDuration(Duration::ZERO),
        index_compression: a.index_compression,
        ..JournalConfig::default()
    }
}

/// Content of write number `i`: distinct per write so restores and views have work to do.
fn fill_pattern(buf: &mut [u8], i: u64) {
    for (k, w) in buf.chunks_mut(8).enumerate() {
        let v = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (k as u64);
        w.copy_from_slice(&v.to_le_bytes()[..w.len()]);
    }
}

fn open(a: &Args, jdir: &Path, data: &Path, cfg: JournalConfig) -> (JournaledStore, Duration) {
    let file: Arc<dyn BlockStore> =
        Arc::new(FileStore::open(data, a.block, false).expect("open volume file"));
    let t = Instant::now();
    let j = JournaledStore::open(jdir, file, cfg).expect("open journal");
    (j, t.elapsed())
}

/// Slot `k` of a pass of `n` slots, scattered: `k * step mod n` with a step coprime to `n`
/// near `n` times the golden ratio, so that consecutive writes land far apart and every slot
/// is written once per pass.
fn scatter(k: u64, n: u64) -> u64 {
    let gcd = |mut a: u64, mut b: u64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let mut step = ((n as f64) * 0.618_033_988_7) as u64 | 1;
    while gcd(step, n) != 1 {
        step += 2;
    }
    ((k as u128 * step as u128) % n as u128) as u64
}

/// Write `entries` entries' worth of writes starting at write number `from`.
fn write_entries(j: &JournaledStore, a: &Args, from: u64, entries: u64, port: u64) -> u64 {
    let per_write = (a.write / a.chunk as usize).max(1) as u64;
    let writes_per_pass = a.volume / a.write as u64;
    let blocks_per_write = (a.write / a.block as usize) as u64;
    let mut buf = vec![0u8; a.write];
    let mut done = 0;
    let mut i = from;
    while done < entries {
        fill_pattern(&mut buf, i);
        let slot = if a.random {
            scatter(i % writes_per_pass, writes_per_pass)
        } else {
            i % writes_per_pass
        };
        let lba = slot * blocks_per_write;
        j.write(IoOrigin { port }, lba, &buf, false)
            .expect("journaled write");
        done += per_write;
        i += 1;
    }
    i
}

fn main() {
    let a = parse_args();
    let dd = DataDir::open(&a.dir).expect("data dir");
    let vdir = dd.volume_dir("scale");
    let jdir = vdir.join("journal");
    let data = vdir.join("data.img");
    let cfg = config(&a);

    if a.phase_child {
        // Fill one port's partial journal to just under its capacity, make it durable, and die
        // without any shutdown: the parent measures the recovery.
        // No timed flush: the whole partial journal is still there at the crash.
        let cfg = JournalConfig {
            partial_flush_interval: HumanDuration(Duration::from_secs(3600)),
            ..cfg
        };
        let (j, _) = open(&a, &jdir, &data, cfg.clone());
        let per_write_bytes = (a.write / a.chunk as usize).max(1) as u64 * a.chunk as u64;
        let n = (cfg.partial_capacity / per_write_bytes).saturating_sub(1);
        let per_write = (a.write / a.chunk as usize).max(1) as u64;
        write_entries(&j, &a, 7_000_000_000, n * per_write, 99);
        j.flush().expect("flush");
        println!(
            "child wrote {} entries into one partial journal",
            n * per_write
        );
        // SAFETY: plain process exit; no destructors run, as in a crash.
        unsafe { libc::_exit(0) };
    }

    let _ = std::fs::remove_dir_all(&vdir);
    let meta = dd
        .create("scale", a.volume, a.block, None, false)
        .expect("create volume");
    assert_eq!(dd.data_path(&meta), data);
    // Old data that exists: the whole volume written once, not sparse.
    {
        let f = FileStore::open(&data, a.block, false).expect("open volume file");
        let mut buf = vec![0u8; 1 << 20];
        for m in 0..a.volume >> 20 {
            fill_pattern(&mut buf, u64::MAX - m);
            f.write(
                IoOrigin::default(),
                m * (1 << 20) / a.block as u64,
                &buf,
                false,
            )
            .expect("prefill");
        }
        f.flush().expect("flush");
    }
    println!(
        "volume {} MiB, block {} B, chunk {} B, writes of {} B, {} entries -> {}",
        a.volume >> 20,
        a.block,
        a.chunk,
        a.write,
        a.entries,
        a.dir.display()
    );

    // ---- fill ----
    let (j, _) = open(&a, &jdir, &data, cfg.clone());
    let t = Instant::now();
    let mut next = write_entries(&j, &a, 0, a.entries / 2, 1);
    let mid = j.last_stamp();
    next = write_entries(&j, &a, next, a.entries - a.entries / 2, 1);
    j.flush().expect("flush");
    j.flush_partials().expect("flush partials");
    let secs = t.elapsed().as_secs_f64();
    result("fill_entries_per_s", a.entries as f64 / secs, "entries/s");
    result("fill_seconds", secs, "s");
    let _ = next;
    if a.fill_only {
        drop(j);
        let _ = std::fs::remove_dir_all(&a.dir);
        return;
    }

    // ---- disk ----
    let seg = dir_bytes(&jdir.join("primary")) + dir_bytes(&jdir.join("partial"));
    let index = dir_bytes(&jdir.join("index"));
    let old = a.entries as f64 * a.chunk as f64;
    result(
        "journal_segment_bytes_per_old_byte",
        seg as f64 / old,
        "ratio",
    );
    result(
        "journal_total_bytes_per_old_byte",
        (seg + index) as f64 / old,
        "ratio",
    );
    result(
        "index_bytes_per_entry",
        index as f64 / a.entries as f64,
        "B",
    );

    // `rewind history` reports the entry count (sled `Tree::len`, a full scan).
    let t = Instant::now();
    let n = j.primary_entries();
    result(
        "history_entry_count_ms",
        t.elapsed().as_secs_f64() * 1e3,
        "ms",
    );
    result("primary_entries", n as f64, "entries");

    // ---- view ----
    let mut times = Vec::new();
    for _ in 0..9 {
        let t = Instant::now();
        let v = j.view(mid).expect("view");
        let mut b = vec![0u8; a.block as usize];
        v.read(0, &mut b).expect("first read");
        times.push(t.elapsed());
    }
    times.sort();
    result(
        "view_create_and_first_read_ms",
        times[times.len() / 2].as_secs_f64() * 1e3,
        "ms",
    );

    // ---- read ----
    let view: Arc<dyn BlockStore> = j.view_at(mid).expect("view");
    let chunk = 128 << 10;
    let mut buf = vec![0u8; chunk];
    let read_all = |s: &dyn BlockStore, buf: &mut [u8]| -> f64 {
        let t = Instant::now();
        let step = (chunk / a.block as usize) as u64;
        let mut lba = 0;
        while lba < s.num_blocks() {
            s.read(lba, buf).expect("read");
            lba += step;
        }
        a.volume as f64 / 1e6 / t.elapsed().as_secs_f64()
    };
    let live = read_all(&j, &mut buf);
    let hist = read_all(&*view, &mut buf);
    result("live_read_mb_per_s", live, "MB/s");
    result("view_read_mb_per_s", hist, "MB/s");
    result("view_over_live_read", hist / live, "ratio");
    drop(view);

    // ---- restore ----
    let t = Instant::now();
    let changed = j.restore_to(mid, &mut |_, _| {}).expect("restore");
    let secs = t.elapsed().as_secs_f64();
    result("restore_mb_per_s", a.volume as f64 / 1e6 / secs, "MB/s");
    result("restore_changed_chunks", changed as f64, "chunks");
    drop(j);

    // ---- recovery after a crash with a full partial journal ----
    let exe = std::env::current_exe().expect("exe");
    let mut child_args: Vec<String> = std::env::args().skip(1).collect();
    child_args.push("--crash-child".into());
    let st = std::process::Command::new(exe)
        .args(&child_args)
        .status()
        .expect("crash child");
    assert!(st.success(), "crash child failed");
    let (j, secs) = open(&a, &jdir, &data, cfg.clone());
    result("recovery_open_ms", secs.as_secs_f64() * 1e3, "ms");
    result(
        "recovery_replayed_entries",
        j.recovery_report().replayed_entries as f64,
        "entries",
    );

    // ---- rebuild ----
    let t = Instant::now();
    let r = j.rebuild_index().expect("rebuild");
    let secs = t.elapsed().as_secs_f64();
    result(
        "rebuild_entries_per_s",
        r.records_indexed as f64 / secs,
        "entries/s",
    );
    result("rebuild_seconds", secs, "s");
    drop(j);

    // ---- merge ----
    // Keep every write for 1 s, then one point per minute for a day: everything older than a
    // second collapses to one entry per chunk and minute.
    let mut mcfg = cfg.clone();
    mcfg.retention = RetentionPolicy {
        keep_all: HumanDuration(Duration::from_secs(1)),
        tiers: vec![rewind::journal::RetentionTier {
            every: HumanDuration(Duration::from_secs(60)),
            until: HumanDuration(Duration::from_secs(86_400)),
        }],
    };
    let (j, _) = open(&a, &jdir, &data, mcfg);
    std::thread::sleep(Duration::from_millis(1100));
    let t = Instant::now();
    let report = j.merge().expect("merge");
    let secs = t.elapsed().as_secs_f64();
    result(
        "merge_entries_per_s",
        report.scanned as f64 / secs,
        "entries/s",
    );
    result("merge_scanned", report.scanned as f64, "entries");
    result("merge_dropped", report.dropped as f64, "entries");
    result("merge_seconds", secs, "s");
    drop(j);
    let (rss, hwm) = rss_kib();
    println!(
        "final VmRSS {} MiB, peak VmHWM {} MiB",
        rss / 1024,
        hwm / 1024
    );
    if !a.keep {
        let _ = std::fs::remove_dir_all(&a.dir);
    }
}
