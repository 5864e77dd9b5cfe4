//! The journal append path: `JournaledStore::write` of 4 KiB (and 128 KiB) over data that was already
//! written (so every write saves its old data), over a MemStore and over a FileStore in a
//! temporary directory, against the bare store as the baseline.
//!
//! `cargo bench --bench journal`

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rewind::journal::{JournalConfig, JournaledStore};
use rewind::storage::{BlockStore, FileStore, IoOrigin, MemStore};

const BLOCK: u32 = 512;
const VOLUME: u64 = 64 << 20;

fn prefill(s: &dyn BlockStore) {
    let buf = vec![0x11u8; 1 << 20];
    let step = (1 << 20) / BLOCK as u64;
    let mut lba = 0;
    while lba < s.num_blocks() {
        s.write(IoOrigin::default(), lba, &buf, false)
            .expect("prefill");
        lba += step;
    }
}

/// Writes of `size` bytes scattered over the volume (wrapping), as one initiator port.
fn bench_writes(c: &mut Criterion, group: &str, name: &str, store: &dyn BlockStore, size: usize) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(size as u64));
    let buf = vec![0x77u8; size];
    let per = (size / BLOCK as usize) as u64;
    let slots = store.num_blocks() / per;
    let mut i = 0u64;
    g.bench_function(name, |b| {
        b.iter(|| {
            let lba = (i % slots) * per;
            i = i.wrapping_add(7919); // a prime stride: scattered, each chunk revisited
            store
                .write(IoOrigin { port: 1 }, black_box(lba), &buf, false)
                .expect("write");
        })
    });
    g.finish();
}

fn journal(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Merging never runs during the benchmark.
    let cfg = JournalConfig {
        merge_interval: rewind::journal::HumanDuration(std::time::Duration::ZERO),
        ..JournalConfig::default()
    };

    let mem: Arc<dyn BlockStore> = Arc::new(MemStore::new(VOLUME / BLOCK as u64, BLOCK));
    prefill(&*mem);
    bench_writes(c, "write_4k_mem", "bare", &*mem, 4096);
    let j =
        JournaledStore::open(&tmp.path().join("mem-journal"), mem, cfg.clone()).expect("journal");
    bench_writes(c, "write_4k_mem", "journaled", &j, 4096);
    drop(j);

    let path = tmp.path().join("vol.img");
    let file: Arc<dyn BlockStore> =
        Arc::new(FileStore::create(&path, VOLUME, BLOCK).expect("file store"));
    prefill(&*file);
    file.flush().expect("flush");
    bench_writes(c, "write_4k_file", "bare", &*file, 4096);
    bench_writes(c, "write_128k_file", "bare", &*file, 128 << 10);
    let j = JournaledStore::open(&tmp.path().join("file-journal"), file, cfg).expect("journal");
    bench_writes(c, "write_4k_file", "journaled", &j, 4096);
    bench_writes(c, "write_128k_file", "journaled", &j, 128 << 10);
    drop(j);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = journal
}
criterion_main!(benches);
