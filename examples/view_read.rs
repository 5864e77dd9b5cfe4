//! Point-in-time view reads against live reads of the same volume, in process (no iSCSI):
//! sequential 4 KiB, sequential 128 KiB and random 4 KiB reads, where every chunk of the view
//! has history (old data in the primary journal, in records of `--write`-byte writes).
//!
//! ```text
//! cargo run --release --example view_read -- [--volume 64MiB] [--write 128KiB] [--chunk 4KiB]
//!     [--block 512] [--passes 3] [--dir DIR] [--only seq_4k|seq_128k|rand_4k]
//! ```
//!
//! The volume is written once (the view's point is taken after that), then once more with
//! writes of `--write` bytes, and the partial journals are flushed into the primary. Each
//! pattern reads the whole volume's size once per pass, live then view; the best pass of each
//! is reported (`RESULT name value unit` lines, plus the view/live ratio). Reads are served
//! from the page cache after the first pass: this measures the read path's CPU cost.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rewind::journal::{HumanDuration, JournalConfig, JournaledStore};
use rewind::storage::{BlockStore, FileStore, IoOrigin};

struct Args {
    dir: Option<PathBuf>,
    volume: u64,
    write: usize,
    chunk: u32,
    block: u32,
    passes: u32,
    only: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        dir: None,
        volume: 64 << 20,
        write: 128 << 10,
        chunk: 4096,
        block: 512,
        passes: 3,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, what: &str| -> u64 {
        let v = v.unwrap_or_else(|| panic!("{what} needs a value"));
        rewind::config::parse_size(&v).unwrap_or_else(|e| panic!("{what}: {e}"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--dir" => a.dir = Some(PathBuf::from(it.next().expect("--dir needs a value"))),
            "--volume" => a.volume = num(it.next(), "--volume"),
            "--write" => a.write = num(it.next(), "--write") as usize,
            "--chunk" => a.chunk = num(it.next(), "--chunk") as u32,
            "--block" => a.block = num(it.next(), "--block") as u32,
            "--passes" => a.passes = num(it.next(), "--passes") as u32,
            "--only" => a.only = Some(it.next().expect("--only needs a pattern name")),
            "--bench" => {} // passed by `cargo bench`-style runners
            "-h" | "--help" => {
                println!(
                    "view_read [--dir DIR] [--volume BYTES] [--write BYTES] [--chunk BYTES] \
                     [--block 512|4096] [--passes N] [--only seq_4k|seq_128k|rand_4k]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn fill_pattern(buf: &mut [u8], i: u64) {
    for (k, w) in buf.chunks_mut(8).enumerate() {
        let v = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (k as u64);
        w.copy_from_slice(&v.to_le_bytes()[..w.len()]);
    }
}

/// A small xorshift: the same random offsets for the live and the view run.
fn offsets(n: u64, slots: u64, seed: u64) -> Vec<u64> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % slots
        })
        .collect()
}

fn main() {
    let a = parse_args();
    let tmp =
        tempfile::tempdir_in(a.dir.clone().unwrap_or_else(std::env::temp_dir)).expect("temp dir");
    let data = tmp.path().join("data.img");
    let file = FileStore::create(&data, a.volume, a.block).expect("volume file");
    let file: Arc<dyn BlockStore> = Arc::new(file);
    let cfg = JournalConfig {
        chunk_size: a.chunk,
        merge_interval: HumanDuration(std::time::Duration::ZERO),
        ..JournalConfig::default()
    };
    let j = JournaledStore::open(&tmp.path().join("journal"), file, cfg).expect("journal");
    let bpw = (a.write / a.block as usize) as u64;
    let writes = a.volume / a.write as u64;
    let mut buf = vec![0u8; a.write];
    let mut mid = 0;
    for pass in 0..2u64 {
        for w in 0..writes {
            fill_pattern(&mut buf, pass * writes + w);
            j.write(IoOrigin { port: 1 }, w * bpw, &buf, false)
                .expect("write");
        }
        j.flush().expect("flush");
        if pass == 0 {
            // The view's point: after the first pass, so that every chunk's state then is
            // old data in a record of the second pass.
            mid = j.last_stamp();
        }
    }
    j.flush_partials().expect("flush partials");
    let view: Arc<dyn BlockStore> = j.view_at(mid).expect("view");
    println!(
        "volume {} MiB, block {} B, chunk {} B, history in records of {} B writes",
        a.volume >> 20,
        a.block,
        a.chunk,
        a.write
    );
    let bs = a.block as u64;
    let run = |s: &dyn BlockStore, size: usize, random: bool| -> f64 {
        let blocks = size as u64 / bs;
        let n = a.volume / size as u64;
        let at = if random {
            offsets(n, a.volume / size as u64, 0x5eed)
        } else {
            (0..n).collect()
        };
        let mut b = vec![0u8; size];
        let mut best = 0f64;
        for _ in 0..a.passes {
            let t = Instant::now();
            for &i in &at {
                s.read(i * blocks, &mut b).expect("read");
            }
            best = best.max(a.volume as f64 / 1e6 / t.elapsed().as_secs_f64());
        }
        best
    };
    // Same content check: the view holds the first pass's data.
    {
        let mut b = vec![0u8; a.write];
        let mut want = vec![0u8; a.write];
        for w in [0, writes / 2, writes - 1] {
            view.read(w * bpw, &mut b).expect("read");
            fill_pattern(&mut want, w);
            assert!(b == want, "view content at write {w}");
        }
    }
    for (name, size, random) in [
        ("seq_4k", 4096usize, false),
        ("seq_128k", 128 << 10, false),
        ("rand_4k", 4096, true),
    ] {
        if a.only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let live = run(&j, size, random);
        let hist = run(&*view, size, random);
        println!("RESULT {name}_live_mb_per_s {live:.1} MB/s");
        println!("RESULT {name}_view_mb_per_s {hist:.1} MB/s");
        println!("RESULT {name}_view_over_live {:.2} ratio", hist / live);
    }
    drop(view);
    drop(j);
}
