//! Continuous data protection through the wire: what an initiator wrote before a bookmark is
//! what a view at that bookmark reads, while the live volume has moved on; a restore brings it
//! back.

mod common;

use common::{start_server, Client, TARGET};

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_reads_the_past_and_restore_brings_it_back() {
    let s = start_server().await;
    let reg = s.running.registry.clone();
    let mut c = Client::connect(s.addr).await;
    assert_eq!(c.login(Some(TARGET), &[]).await.status_class, 0);

    let old = pattern(1, 64 * 1024);
    assert_eq!(c.write10(100, &old, 512).await.status, 0);
    let r = reg.clone();
    let ts = tokio::task::spawn_blocking(move || r.bookmark("vol0", "before"))
        .await
        .expect("join")
        .expect("bookmark");
    let new = pattern(2, 64 * 1024);
    assert_eq!(c.write10(100, &new, 512).await.status, 0);
    assert_eq!(
        c.read10(100, 128, 512).await.data,
        new,
        "the live volume has the new data"
    );

    let r = reg.clone();
    let info =
        tokio::task::spawn_blocking(move || r.export_view("vol0", ts, Some("before"), false))
            .await
            .expect("join")
            .expect("export");
    assert_eq!(info.point, ts);
    let mut v = Client::connect(s.addr).await;
    v.isid[5] = 0x77;
    assert_eq!(v.login(Some(&info.target), &[]).await.status_class, 0);
    assert_eq!(
        v.read10(100, 128, 512).await.data,
        old,
        "the view reads the data as it was"
    );
    let w = v.write10(100, &new[..512], 512).await;
    assert_eq!(
        w.sense_triple(),
        Some((0x7, 0x27, 0x00)),
        "views are write protected"
    );

    // Restore under a logged-in initiator needs force.
    let r = reg.clone();
    let refused = tokio::task::spawn_blocking(move || r.restore("vol0", ts, false, &mut |_, _| {}))
        .await
        .expect("join");
    assert!(refused.expect_err("busy").contains("log them out first"));
    // --force logs the initiator out first; after a new login it reads the old data.
    let r = reg.clone();
    let changed = tokio::task::spawn_blocking(move || r.restore("vol0", ts, true, &mut |_, _| {}))
        .await
        .expect("join")
        .expect("restore");
    assert!(changed > 0);
    assert!(
        c.closed_within(std::time::Duration::from_secs(5)).await,
        "forced restore logs initiators out"
    );
    let mut c = Client::connect(s.addr).await;
    assert_eq!(c.login(Some(TARGET), &[]).await.status_class, 0);
    assert_eq!(c.read10(100, 128, 512).await.data, old, "restored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writable_snapshot_keeps_the_volume_untouched_and_snapshots_survive_restart() {
    let s = start_server().await;
    let reg = s.running.registry.clone();
    let mut c = Client::connect(s.addr).await;
    assert_eq!(c.login(Some(TARGET), &[]).await.status_class, 0);
    let old = pattern(3, 8192);
    assert_eq!(c.write10(10, &old, 512).await.status, 0);
    let r = reg.clone();
    let ts = tokio::task::spawn_blocking(move || r.bookmark("vol0", "b"))
        .await
        .expect("join")
        .expect("bookmark");
    let r = reg.clone();
    let w = tokio::task::spawn_blocking(move || {
        r.resolve_when("vol0", "@b")
            .and_then(|t| r.export_view("vol0", t, None, true))
    })
    .await
    .expect("join")
    .expect("writable export");
    assert_eq!(w.point, ts);
    assert!(
        w.target.starts_with("iqn.2026-11.dev.rewind:vol0.at."),
        "{}",
        w.target
    );
    let mut v = Client::connect(s.addr).await;
    v.isid[5] = 0x55;
    assert_eq!(v.login(Some(&w.target), &[]).await.status_class, 0);
    let scratch = pattern(9, 4096);
    assert_eq!(
        v.write10(10, &scratch, 512).await.status,
        0,
        "writable snapshot takes writes"
    );
    assert_eq!(v.read10(10, 8, 512).await.data, scratch);
    assert_eq!(
        c.read10(10, 16, 512).await.data,
        old,
        "the volume never sees the overlay's writes"
    );

    // Stop the daemon and start it again on the same data directory: the snapshot is back.
    let dir = s.dir;
    s.running.ctx.shutdown.cancel();
    s.running.task.abort();
    s.running.registry.close();
    drop(c);
    drop(v);
    drop(reg);
    // Everything of the first daemon goes, as when its process exits: a journal still open in
    // it keeps its index locked, and the restarted daemon would wait for it and then refuse.
    drop(s.running);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let config = rewind::config::Config {
        listen: vec!["127.0.0.1:0".into()],
        ..Default::default()
    };
    let again = rewind::daemon::start(dir.path(), &config)
        .await
        .expect("restart");
    let views = again.registry.views();
    assert!(
        views.iter().any(|x| x.target == w.target && x.writable),
        "{views:?}"
    );
    let mut v = Client::connect(again.addrs[0]).await;
    assert_eq!(v.login(Some(&w.target), &[]).await.status_class, 0);
    assert_eq!(
        v.read10(10, 16, 512).await.data,
        old,
        "after a restart the overlay starts empty"
    );
}

#[tokio::test]
async fn journal_can_be_switched_off_per_volume() {
    let s = common::start_server_with(|c| {
        c.volumes.push(rewind::config::VolumeConfig {
            name: "plain".into(),
            path: None,
            size: Some("16MiB".into()),
            block_size: 512,
            read_only: false,
            journal: Some(false),
        });
        c.volumes.push(rewind::config::VolumeConfig {
            name: "kept".into(),
            path: None,
            size: Some("16MiB".into()),
            block_size: 512,
            read_only: false,
            journal: None,
        });
    })
    .await;
    let reg = s.running.registry.clone();
    let plain = reg.volume("plain").expect("plain volume");
    assert!(
        plain.journal.is_none(),
        "journal = false leaves the volume unjournaled"
    );
    assert!(
        reg.volume("kept").expect("kept").journal.is_some(),
        "other volumes keep CDP"
    );
    let err = reg
        .bookmark("plain", "x")
        .expect_err("no history without a journal");
    assert!(err.contains("not journaled"), "{err}");
}
