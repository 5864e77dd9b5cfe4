//! Replication between two daemons in one process: intervals ship and every shipped point on
//! the secondary reads like the primary at that point; corrupted updates are never applied;
//! wrong secrets and geometries are refused; digest resync moves little; consolidation ships
//! each block once; promotion makes the replica writable.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{start_server_with, Client, Server, TARGET};
use rewind::auth::secrets::Secret;
use rewind::config::{Config, ReplicationConfig, VolumeConfig};
use rewind::replication::state::PrimaryStatus;
use rewind::storage::{BlockStore, IoOrigin};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "correct horse battery staple";
const MIB: u64 = 1 << 20;

fn volume(size_mib: u64) -> VolumeConfig {
    VolumeConfig {
        name: "vol0".into(),
        path: None,
        size: Some(format!("{size_mib}MiB")),
        block_size: 512,
        read_only: false,
        journal: None,
    }
}

async fn secondary(size_mib: u64, secret: &str) -> Server {
    secondary_with(size_mib, secret, |_| {}).await
}

/// A secondary whose configuration `tweak` changes further.
async fn secondary_with(size_mib: u64, secret: &str, tweak: fn(&mut Config)) -> Server {
    let secret = secret.to_string();
    start_server_with(move |c| {
        c.volumes = vec![volume(size_mib)];
        c.replication = Some(ReplicationConfig {
            listen: Some("127.0.0.1:0".into()),
            volumes: vec!["vol0".into()],
            secret: Some(Secret::new(secret)),
            ..Default::default()
        });
        tweak(c);
    })
    .await
}

async fn primary(size_mib: u64, secret: &str) -> Server {
    primary_with(size_mib, secret, |_| {}).await
}

/// A primary whose configuration `tweak` changes further.
async fn primary_with(size_mib: u64, secret: &str, tweak: fn(&mut Config)) -> Server {
    let secret = secret.to_string();
    start_server_with(move |c| {
        c.volumes = vec![volume(size_mib)];
        c.replication = Some(ReplicationConfig {
            secret: Some(Secret::new(secret)),
            ..Default::default()
        });
        tweak(c);
    })
    .await
}

fn repl_addr(s: &Server) -> String {
    s.running
        .replication
        .listen_addr
        .expect("secondary listens")
        .to_string()
}

async fn replicate(p: &Server, to: &str, interval: Duration) {
    let svc = p.running.replication.clone();
    let to = to.to_string();
    tokio::task::spawn_blocking(move || svc.replicate("vol0", &to, interval))
        .await
        .expect("join")
        .expect("replicate");
}

fn pstatus(p: &Server) -> PrimaryStatus {
    p.running
        .replication
        .primary_status()
        .into_iter()
        .find(|s| s.volume == "vol0")
        .expect("pairing")
}

/// Wait until the secondary has the primary's newest write.
async fn caught_up(p: &Server) -> PrimaryStatus {
    let j = p
        .running
        .registry
        .volume("vol0")
        .expect("vol")
        .journal
        .clone()
        .expect("journal");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = pstatus(p);
        if s.shipped_stamp.is_some_and(|t| t >= j.last_stamp()) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "replication did not catch up: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha_of(store: &dyn BlockStore) -> String {
    let mut h = Sha256::new();
    let bs = u64::from(store.block_size());
    let step = MIB / bs;
    let mut lba = 0;
    let mut buf = vec![0u8; MIB as usize];
    while lba < store.num_blocks() {
        let n = step.min(store.num_blocks() - lba);
        let b = &mut buf[..(n * bs) as usize];
        store.read(lba, b).expect("read");
        h.update(&*b);
        lba += n;
    }
    hex::encode(h.finalize())
}

async fn write(c: &mut Client, lba: u32, data: &[u8]) {
    for (i, piece) in data.chunks(64 * 1024).enumerate() {
        let r = c.write10(lba + (i * 128) as u32, piece, 512).await;
        assert_eq!(r.status, 0, "write at {lba}");
    }
}

/// Every `repl-<µs>` bookmark on the secondary: export it as a snapshot and check, by SHA-256
/// through iSCSI, that it reads exactly like the primary's view at that primary time.
async fn check_shipped_points(p: &Server, s: &Server) -> usize {
    let pj = p
        .running
        .registry
        .volume("vol0")
        .expect("vol")
        .journal
        .clone()
        .expect("journal");
    let sreg = s.running.registry.clone();
    let marks = tokio::task::spawn_blocking({
        let sreg = sreg.clone();
        move || {
            let j = sreg
                .volume("vol0")
                .expect("vol")
                .journal
                .clone()
                .expect("journal");
            j.bookmarks().expect("bookmarks")
        }
    })
    .await
    .expect("join");
    let mut checked = 0;
    for (name, sts) in marks {
        let Some(pts) = name
            .strip_prefix("repl-")
            .and_then(|t| t.parse::<u64>().ok())
        else {
            continue;
        };
        let (pj2, sreg2, name2) = (pj.clone(), sreg.clone(), name.clone());
        let (want, target) = tokio::task::spawn_blocking(move || {
            let want = sha_of(pj2.view_at(pts).expect("primary view").as_ref());
            let info = sreg2
                .export_view("vol0", sts, Some(&name2), false)
                .expect("export on the secondary");
            (want, info.target)
        })
        .await
        .expect("join");
        let mut c = Client::connect(s.addr).await;
        c.isid[5] = 0x40 + checked as u8;
        assert_eq!(c.login(Some(&target), &[]).await.status_class, 0);
        let mut h = Sha256::new();
        let blocks = (16 * MIB / 512) as u32;
        let mut lba = 0;
        while lba < blocks {
            let r = c.read10(lba, 2048, 512).await;
            assert_eq!(r.status, 0);
            h.update(&r.data);
            lba += 2048;
        }
        assert_eq!(
            hex::encode(h.finalize()),
            want,
            "snapshot {name} on the secondary differs from the primary at {pts}"
        );
        let sreg2 = sreg.clone();
        tokio::task::spawn_blocking(move || sreg2.remove_view(&target).expect("unexport"))
            .await
            .expect("join");
        checked += 1;
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn intervals_ship_consistent_points_and_promotion_makes_the_replica_writable() {
    let s = secondary(16, SECRET).await;
    let p = primary(16, SECRET).await;
    let mut c = Client::connect(p.addr).await;
    assert_eq!(c.login(Some(TARGET), &[]).await.status_class, 0);
    write(&mut c, 0, &pattern(1, 512 * 1024)).await;
    replicate(&p, &repl_addr(&s), Duration::from_millis(300)).await;
    let first = caught_up(&p).await;
    assert_eq!(
        first.recent[0].kind,
        rewind::replication::wire::UpdateKind::Resync
    );
    for round in 0..3u64 {
        write(
            &mut c,
            (round * 3000) as u32,
            &pattern(10 + round, 300 * 1024),
        )
        .await;
        write(&mut c, 100, &pattern(20 + round, 4096)).await;
        caught_up(&p).await;
    }
    let status = pstatus(&p);
    println!(
        "primary status: {}",
        serde_json::to_string_pretty(&status).unwrap()
    );
    assert!(status.updates >= 4, "resync plus several intervals");
    assert_eq!(status.lag_us, 0);

    // The replica is read-only while it is a secondary.
    let mut r = Client::connect(s.addr).await;
    assert_eq!(r.login(Some(TARGET), &[]).await.status_class, 0);
    let w = r.write10(0, &[0u8; 512], 512).await;
    assert_eq!(
        w.sense_triple(),
        Some((0x7, 0x27, 0x00)),
        "replica is write protected"
    );

    let checked = check_shipped_points(&p, &s).await;
    assert!(
        checked >= 4,
        "only {checked} shipped points on the secondary"
    );

    // Consolidation: many overwrites of the same blocks within one interval ship each once.
    let svc = p.running.replication.clone();
    tokio::task::spawn_blocking(move || svc.stop("vol0"))
        .await
        .expect("join")
        .expect("stop");
    replicate(&p, &repl_addr(&s), Duration::from_secs(3)).await;
    caught_up(&p).await;
    let before = pstatus(&p).updates;
    let mut written = 0;
    for i in 0..40u64 {
        write(&mut c, 0, &pattern(100 + i, 4096)).await; // extent 0
        write(&mut c, 4096, &pattern(200 + i, 8192)).await; // extent 16 (64 KiB extents)
        written += 4096 + 8192;
    }
    let after = caught_up(&p).await;
    let new: Vec<_> = after.recent.iter().filter(|u| u.seq > before).collect();
    let shipped: u64 = new.iter().map(|u| u.data_bytes).sum();
    println!(
        "consolidation: {written} bytes written in {} update(s), {shipped} data bytes shipped: {:?}",
        new.len(),
        new.iter().map(|u| (u.extents, u.data_bytes, u.journal_growth_bytes)).collect::<Vec<_>>()
    );
    assert!(
        new.iter().all(|u| u.extents <= 2),
        "each changed extent is shipped once per update"
    );
    assert!(shipped <= new.len() as u64 * 2 * 65536);
    assert!(shipped < written as u64);
    assert!(check_shipped_points(&p, &s).await >= 5);

    // Failover.
    let svc = p.running.replication.clone();
    tokio::task::spawn_blocking(move || svc.stop("vol0"))
        .await
        .expect("join")
        .expect("stop");
    let ssvc = s.running.replication.clone();
    let promoted = tokio::task::spawn_blocking(move || ssvc.promote("vol0"))
        .await
        .expect("join")
        .expect("promote");
    assert_eq!(promoted["promoted"], true);
    assert!(
        r.closed_within(Duration::from_secs(5)).await,
        "sessions on the read-only target are closed"
    );
    let mut r = Client::connect(s.addr).await;
    assert_eq!(r.login(Some(TARGET), &[]).await.status_class, 0);
    assert_eq!(
        r.write10(0, &[7u8; 512], 512).await.status,
        0,
        "promoted replica takes writes"
    );
    // A promoted replica takes no more updates.
    replicate(&p, &repl_addr(&s), Duration::from_millis(100)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = pstatus(&p);
        if st
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("promoted"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "primary not refused: {st:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP relay that can flip one bit in the primary's traffic.
async fn corrupting_proxy(upstream: String, corrupt: Arc<AtomicBool>) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((down, _)) = l.accept().await {
            let Ok(up) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let (mut dr, mut dw) = down.into_split();
            let (mut ur, mut uw) = up.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut ur, &mut dw).await;
            });
            let corrupt = corrupt.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match dr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if n >= 16 * 1024 && corrupt.swap(false, Ordering::SeqCst) {
                        buf[n / 2] ^= 0x04;
                    }
                    if uw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = uw.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupted_update_is_detected_and_never_applied() {
    let s = secondary(16, SECRET).await;
    let p = primary(16, SECRET).await;
    let corrupt = Arc::new(AtomicBool::new(false));
    let via = corrupting_proxy(repl_addr(&s), corrupt.clone()).await;
    let mut c = Client::connect(p.addr).await;
    assert_eq!(c.login(Some(TARGET), &[]).await.status_class, 0);
    write(&mut c, 0, &pattern(1, 256 * 1024)).await;
    replicate(&p, &via, Duration::from_millis(200)).await;
    caught_up(&p).await;

    corrupt.store(true, Ordering::SeqCst);
    write(&mut c, 8192, &pattern(2, 1024 * 1024)).await;
    let ssvc = s.running.replication.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let rejected = loop {
        let st = ssvc.secondary_status().into_iter().next().expect("volume");
        if st.rejected >= 1 {
            break st;
        }
        assert!(Instant::now() < deadline, "corruption not detected: {st:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("secondary after the corrupted update: {rejected:?}");
    let e = rejected.last_error.expect("error recorded");
    assert!(
        e.contains("rejected, not applied") && e.contains("checksum"),
        "{e}"
    );
    assert!(!corrupt.load(Ordering::SeqCst), "the bit was flipped");

    // The primary reconnects, resyncs by digest and ships again; every point the secondary
    // ever recorded matches the primary.
    caught_up(&p).await;
    assert!(pstatus(&p).errors >= 1);
    assert!(check_shipped_points(&p, &s).await >= 2);
    assert_eq!(volume_sha(&p).await, volume_sha(&s).await);
}

/// A TCP relay that, while `stall` is set, stops forwarding and holds its connections open
/// (a hung peer or a black-holed network): nothing is closed, nothing arrives. A connection
/// that saw a stall never forwards again; connections made after it clears work.
async fn stalling_proxy(upstream: String, stall: Arc<AtomicBool>) -> String {
    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        stall: Arc<AtomicBool>,
    ) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if stall.load(Ordering::SeqCst) {
                // Hold both halves open and never forward again.
                std::future::pending::<()>().await;
            }
            let read = tokio::time::timeout(Duration::from_millis(20), from.read(&mut buf)).await;
            let n = match read {
                Err(_) => continue,
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => n,
            };
            if stall.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    }
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((down, _)) = l.accept().await {
            let Ok(up) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let (dr, dw) = down.into_split();
            let (ur, uw) = up.into_split();
            tokio::spawn(pump(ur, dw, stall.clone()));
            tokio::spawn(pump(dr, uw, stall.clone()));
        }
    });
    addr
}

/// Both sites with a quick keepalive (200 ms) and link timeout (2 s).
fn quick_link(c: &mut Config) {
    if let Some(r) = c.replication.as_mut() {
        r.keepalive = Duration::from_millis(200);
        r.link_timeout = Duration::from_secs(2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_link_is_noticed_at_both_ends_and_the_pairing_reconnects() {
    let s = secondary_with(16, SECRET, quick_link).await;
    let p = primary_with(16, SECRET, quick_link).await;
    let stall = Arc::new(AtomicBool::new(false));
    let via = stalling_proxy(repl_addr(&s), stall.clone()).await;
    let mut c = Client::connect(p.addr).await;
    assert_eq!(c.login(Some(TARGET), &[]).await.status_class, 0);
    write(&mut c, 0, &pattern(1, 256 * 1024)).await;
    // A long interval: the stall must be noticed by the idle link's pings, not by an update.
    replicate(&p, &via, Duration::from_secs(3)).await;
    caught_up(&p).await;
    // Quiet for several keepalives and longer than the timeout: the link stays up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(pstatus(&p).errors, 0, "{:?}", pstatus(&p));
    assert_eq!(pstatus(&p).state, "streaming");

    stall.store(true, Ordering::SeqCst);
    let e = wait_error(&p, "timed out").await;
    println!("primary: {e}");
    let st = secondary_error(&s, "timed out").await;
    println!("secondary: {:?}", st.last_error);
    write(&mut c, 4096, &pattern(2, 512 * 1024)).await;

    stall.store(false, Ordering::SeqCst);
    caught_up(&p).await;
    assert_eq!(volume_sha(&p).await, volume_sha(&s).await);
}

async fn wait_error(p: &Server, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(e) = pstatus(p).last_error.filter(|e| e.contains(needle)) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} error: {:?}",
            pstatus(p)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The secondary's status once it has recorded an error containing `needle` (it may learn of
/// a refused primary a moment after the primary does).
async fn secondary_error(s: &Server, needle: &str) -> rewind::replication::state::SecondaryStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = s.running.replication.secondary_status().remove(0);
        if st.last_error.as_deref().is_some_and(|e| e.contains(needle)) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "the secondary never recorded {needle:?}: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_secret_or_geometry_is_refused() {
    let s = secondary(16, SECRET).await;
    let p = primary(16, "not the right secret at all").await;
    replicate(&p, &repl_addr(&s), Duration::from_millis(100)).await;
    let e = wait_error(&p, "authentication failed").await;
    println!("primary: {e}");
    assert_eq!(pstatus(&p).shipped_stamp, None);
    let st = secondary_error(&s, "authentication").await;
    assert_eq!(st.updates_applied, 0);

    let small = secondary(8, SECRET).await;
    let p2 = primary(16, SECRET).await;
    replicate(&p2, &repl_addr(&small), Duration::from_millis(100)).await;
    let e = wait_error(&p2, "geometry mismatch").await;
    println!("primary: {e}");
    assert!(
        e.contains("32768 blocks") && e.contains("16384 blocks"),
        "{e}"
    );
    let st = secondary_error(&small, "geometry mismatch").await;
    assert_eq!(st.updates_applied, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resync_of_a_replica_differing_in_one_percent_moves_little() {
    const SIZE: u64 = 16;
    let s = secondary(SIZE, SECRET).await;
    let p = primary(SIZE, SECRET).await;
    let mut c = Client::connect(p.addr).await;
    assert_eq!(c.login(Some(TARGET), &[]).await.status_class, 0);
    for i in 0..SIZE {
        write(
            &mut c,
            (i * MIB / 512) as u32,
            &pattern(1000 + i, MIB as usize),
        )
        .await;
    }
    replicate(&p, &repl_addr(&s), Duration::from_millis(200)).await;
    let full = caught_up(&p).await;
    let svc = p.running.replication.clone();
    tokio::task::spawn_blocking(move || svc.stop("vol0"))
        .await
        .expect("join")
        .expect("stop");

    // The replica diverges in 3 of its 256 extents (~1%), as after a crash mid-update.
    let sv = s.running.registry.volume("vol0").expect("vol");
    tokio::task::spawn_blocking(move || {
        for e in [3u64, 77, 200] {
            sv.store
                .write(IoOrigin::default(), e * 128 + 5, &[0xee; 1024], false)
                .expect("write");
        }
    })
    .await
    .expect("join");

    replicate(&p, &repl_addr(&s), Duration::from_millis(200)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let resync = loop {
        let st = pstatus(&p);
        // A new pairing starts with a fresh status: its first update is the resync.
        if let Some(u) = st.recent.first() {
            break u.clone();
        }
        assert!(Instant::now() < deadline, "no resync: {st:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let volume = SIZE * MIB;
    println!(
        "resync: initial sync moved {} bytes; repair moved {} data bytes, {} bytes on the wire ({:.2}% of the {volume}-byte volume), {} extents",
        full.recent[0].wire_bytes,
        resync.data_bytes,
        resync.wire_bytes,
        resync.wire_bytes as f64 * 100.0 / volume as f64,
        resync.extents
    );
    assert_eq!(resync.kind, rewind::replication::wire::UpdateKind::Resync);
    assert_eq!(resync.extents, 3);
    assert!(
        resync.wire_bytes * 100 < volume * 3,
        "resync moved 3% or more"
    );
    assert_eq!(volume_sha(&p).await, volume_sha(&s).await, "repaired");
}

fn volume_sha(s: &Server) -> impl std::future::Future<Output = String> {
    let v = s.running.registry.volume("vol0").expect("vol");
    async move {
        tokio::task::spawn_blocking(move || sha_of(v.store.as_ref()))
            .await
            .expect("join")
    }
}

/// Intervals cost what was written: after writing 4 KiB into each of 8 extents of a 64 MiB
/// volume, the intervals that ship them read and send those 8 extents, not the volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interval_reads_and_ships_what_was_written_not_the_volume() {
    const SIZE: u64 = 64;
    const EXTENT: u64 = 64 * 1024;
    let s = secondary(SIZE, SECRET).await;
    let p = primary(SIZE, SECRET).await;
    let mut c = Client::connect(p.addr).await;
    assert_eq!(c.login(Some(TARGET), &[]).await.status_class, 0);
    write(&mut c, 0, &pattern(1, 1024 * 1024)).await;
    replicate(&p, &repl_addr(&s), Duration::from_millis(200)).await;
    let first = caught_up(&p).await;
    let before = first.updates;
    let volume = SIZE * MIB;
    let extents = [1u64, 100, 333, 500, 777, 900, 1000, 1023];
    for (i, e) in extents.iter().enumerate() {
        let lba = e * EXTENT / 512 + 8;
        write(&mut c, lba as u32, &pattern(50 + i as u64, 4096)).await;
    }
    let after = caught_up(&p).await;
    let new: Vec<_> = after.recent.iter().filter(|u| u.seq > before).collect();
    let shipped: u64 = new.iter().map(|u| u.extents).sum();
    let read: u64 = new.iter().map(|u| u.read_bytes).sum();
    let wire: u64 = new.iter().map(|u| u.wire_bytes).sum();
    println!(
        "{} extents written; {} interval update(s) shipped {shipped} extents, read {read} bytes, {wire} bytes on the wire ({:.2}% of the {volume}-byte volume)",
        extents.len(),
        new.len(),
        wire as f64 * 100.0 / volume as f64
    );
    assert!(!new.is_empty());
    assert!(new
        .iter()
        .all(|u| u.kind == rewind::replication::wire::UpdateKind::Interval));
    assert_eq!(shipped, extents.len() as u64, "each written extent once");
    assert_eq!(
        read,
        extents.len() as u64 * EXTENT,
        "read only what was shipped"
    );
    assert!(
        wire < extents.len() as u64 * EXTENT + 64 * 1024,
        "{wire} bytes on the wire"
    );
    assert_eq!(volume_sha(&p).await, volume_sha(&s).await);
}

fn read_whole(store: &dyn BlockStore) -> Vec<u8> {
    let mut buf = vec![0u8; (store.num_blocks() * u64::from(store.block_size())) as usize];
    store.read(0, &mut buf).expect("read");
    buf
}

/// Every `repl-<µs>` point on the secondary reads like the primary's volume at that point,
/// compared in process through the journals' views (faster than iSCSI for many points).
async fn check_points_by_view(p: &Server, s: &Server) -> usize {
    let (preg, sreg) = (p.running.registry.clone(), s.running.registry.clone());
    tokio::task::spawn_blocking(move || {
        let pj = preg
            .volume("vol0")
            .expect("vol")
            .journal
            .clone()
            .expect("journal");
        let sj = sreg
            .volume("vol0")
            .expect("vol")
            .journal
            .clone()
            .expect("journal");
        let mut checked = 0;
        for (name, sts) in sj.bookmarks().expect("bookmarks") {
            let Some(pts) = name
                .strip_prefix("repl-")
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            let want = read_whole(pj.view_at(pts).expect("primary view").as_ref());
            let got = read_whole(sj.view_at(sts).expect("secondary view").as_ref());
            assert!(
                got == want,
                "point {name} on the secondary differs from the primary"
            );
            checked += 1;
        }
        checked
    })
    .await
    .expect("join")
}

/// Writes racing with the intervals' end points are never lost and never half in: two
/// initiators write at random into the same MiB while updates are cut every 30 ms (as fast as
/// the secondary applies them); every shipped point on the
/// secondary reads exactly like the primary at that point, and the secondary ends equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_racing_with_the_intervals_are_never_lost() {
    let s = secondary(16, SECRET).await;
    let p = primary(16, SECRET).await;
    replicate(&p, &repl_addr(&s), Duration::from_millis(30)).await;
    caught_up(&p).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2u8 {
        let (addr, stop) = (p.addr, stop.clone());
        writers.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            c.isid[5] = 0x10 + w;
            assert_eq!(c.login(Some(TARGET), &[]).await.status_class, 0);
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let seed = (u64::from(w) << 32) | n;
                let blocks = 1 + (seed.wrapping_mul(0x9e37_79b9) % 16) as u32;
                // Within the first MiB (16 extents): small updates, the same extents over and
                // over, many points.
                let lba = (pattern(seed, 4)[0] as u32 * 127 + (n as u32 * 997)) % (2048 - blocks);
                let r = c
                    .write10(lba, &pattern(seed, blocks as usize * 512), 512)
                    .await;
                assert_eq!(r.status, 0);
                n += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            n
        }));
    }
    // At least 3 s of writes, and until six intervals were shipped while they ran (slow
    // machines apply fewer updates per second).
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while pstatus(&p).updates < 7 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut writes = 0;
    for w in writers {
        writes += w.await.expect("writer");
    }
    let st = caught_up(&p).await;
    let points = check_points_by_view(&p, &s).await;
    println!(
        "{writes} writes, {} updates, {points} points checked",
        st.updates
    );
    for u in &st.recent {
        println!("  {:?} {} extents {} ms", u.kind, u.extents, u.millis);
    }
    assert!(writes > 100, "only {writes} writes");
    assert!(points >= 6, "only {points} points");
    assert_eq!(volume_sha(&p).await, volume_sha(&s).await);
}
