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
    let info = tokio::task::spawn_blocking(move || r.export_view("vol0", ts, Some("before")))
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
    let refused = tokio::task::spawn_blocking(move || r.restore("vol0", ts, false))
        .await
        .expect("join");
    assert!(refused.expect_err("busy").contains("log them out first"));
    let r = reg.clone();
    let changed = tokio::task::spawn_blocking(move || r.restore("vol0", ts, true))
        .await
        .expect("join")
        .expect("restore");
    assert!(changed > 0);
    assert_eq!(c.read10(100, 128, 512).await.data, old, "restored");
}
