//! The primary side: connect, authenticate, agree on geometry, resync by digest, then ship one
//! consolidated update per interval.
//!
//! Consolidation: an interval's update holds each extent written since the last shipped point,
//! read once from `view_at(t_end)`. However often a block was overwritten in the interval, only
//! its newest data is shipped, once.
//!
//! Finding the changed extents: the session subscribes to the journal's change tracking
//! ([`JournaledStore::subscribe_changes`]) before the resync's point is chosen, and each
//! interval takes the extents written up to its end point; writes after that point stay marked
//! for the next interval. An interval reads and ships what was written, not the volume. A
//! (re)connection compares the whole volume by digest, as does an interval after more was
//! written than the tracking holds (see `docs/replication.md`).

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use super::digest::{self, Digest, Layout};
use super::state::Shipped;
use super::wire::{Conn, Msg, UpdateKind};
use super::{auth, journal_of, lock, PrimaryTask, Service};
use crate::journal::{ChangeSubscription, JournalView, JournaledStore};
use crate::storage::BlockStore;
use crate::volume::format_stamp;

/// Recent updates kept in the status report.
const RECENT: usize = 16;
/// Data per UpdateData frame.
const BATCH_BYTES: usize = 4 << 20;
/// Changed extents tracked per pairing before falling back to a digest resync (64 GiB of
/// 64 KiB extents; about 40 bytes of memory each).
const MAX_TRACKED_EXTENTS: usize = 1 << 20;

/// Run a pairing until it is stopped: reconnect with backoff after any failure.
pub fn run(svc: &Service, task: &PrimaryTask) {
    let mut backoff = Duration::from_millis(200);
    while !svc.stopped(task) {
        lock(&task.status).state = "connecting".into();
        match session(svc, task) {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(volume = %task.pairing.volume, to = %task.pairing.to, error = %e, "replication failed; retrying");
                {
                    let mut s = lock(&task.status);
                    if s.state == "streaming" {
                        // The link worked until now: try again soon, not after the longest wait.
                        backoff = Duration::from_millis(200);
                    }
                    s.errors += 1;
                    s.last_error = Some(e);
                    s.state = "retrying".into();
                    s.lag_bytes = 0;
                }
                if !svc.nap(task, backoff) {
                    break;
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    lock(&task.status).state = "stopped".into();
}

fn unexpected(m: &Msg) -> String {
    match m {
        Msg::Refused { reason } => format!("the secondary refused: {reason}"),
        other => format!("protocol error: unexpected message {other:?}"),
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The point an update ends at: the newest consistency mark (SYNCHRONIZE CACHE) after the last
/// shipped point if there is one, else the newest settled stamp (every write stamped at or
/// before it has completed, so the view at it is exact).
fn choose_point(j: &JournaledStore, after: Option<u64>) -> Result<u64, String> {
    let settled = j.settled_stamp().max(j.born());
    if let Some(a) = after {
        if let Ok(marks) = j.consistency_marks(a + 1, settled) {
            if let Some(m) = marks.last() {
                return Ok(*m);
            }
        }
    }
    Ok(settled)
}

fn session(svc: &Service, task: &PrimaryTask) -> Result<(), String> {
    let p = &task.pairing;
    let (v, j) = journal_of(&svc.reg, &p.volume)?;
    let secret = svc.secret.as_ref().ok_or("no shared secret configured")?;
    let addr =
        p.to.to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", p.to))?
            .next()
            .ok_or_else(|| format!("cannot resolve {}", p.to))?;
    let stream = TcpStream::connect_timeout(&addr, svc.liveness.timeout)
        .map_err(|e| format!("cannot connect to {}: {e}", p.to))?;
    let mut conn = Conn::new(stream, svc.liveness).map_err(|e| e.to_string())?;
    let io = |e: super::wire::WireError| e.to_string();

    // Authenticate both ways.
    let np = auth::nonce();
    conn.send(
        &Msg::Hello {
            volume: p.volume.clone(),
            nonce: np.clone(),
        },
        &[],
    )
    .map_err(io)?;
    let ns = match conn.recv().map_err(io)?.msg {
        Msg::Challenge { nonce, proof } => {
            if !auth::check(
                secret,
                auth::Role::Secondary,
                &p.volume,
                &np,
                &nonce,
                &proof,
            ) {
                let _ = conn.send(
                    &Msg::Refused {
                        reason: "authentication failed".into(),
                    },
                    &[],
                );
                return Err(
                    "authentication failed: the secondary did not prove the shared secret (check [replication] secret on both sites)"
                        .into(),
                );
            }
            nonce
        }
        other => return Err(unexpected(&other)),
    };
    conn.send(
        &Msg::Proof {
            proof: auth::proof(secret, auth::Role::Primary, &p.volume, &np, &ns),
        },
        &[],
    )
    .map_err(io)?;

    // Geometry, checked by both ends.
    let layout = Layout::new(v.store.as_ref(), svc.extent_bytes, svc.group_extents);
    layout.check()?;
    conn.send(
        &Msg::Geometry {
            block_size: layout.block_size,
            num_blocks: layout.num_blocks,
            extent_bytes: layout.extent_bytes,
            group_extents: layout.group_extents,
        },
        &[],
    )
    .map_err(io)?;
    match conn.recv().map_err(io)?.msg {
        Msg::Ready {
            block_size,
            num_blocks,
            ..
        } => {
            if block_size != layout.block_size || num_blocks != layout.num_blocks {
                let reason = format!(
                    "geometry mismatch: primary {:?} has {} blocks of {} bytes, the secondary {} blocks of {} bytes",
                    p.volume, layout.num_blocks, layout.block_size, num_blocks, block_size
                );
                let _ = conn.send(
                    &Msg::Refused {
                        reason: reason.clone(),
                    },
                    &[],
                );
                return Err(reason);
            }
        }
        other => return Err(unexpected(&other)),
    }

    // Change tracking starts before the resync's point is chosen: every write after that
    // point is marked, and the resync covers every write before it.
    let changes = j.subscribe_changes(layout.extent_blocks(), MAX_TRACKED_EXTENTS);
    lock(&task.status).state = "resyncing".into();
    let t0 = choose_point(&j, None)?;
    let view = j.view(t0).map_err(|e| e.to_string())?;
    let shipped = view.point();
    resync(task, &mut conn, &layout, &view)?;
    // Covered by the resync; writes after its point stay marked.
    let _ = changes.take(shipped);
    lock(&task.status).state = "streaming".into();

    // Intervals: only the extents written since the last shipped point. Between them, an idle
    // link is checked with a ping every keepalive, so a dead secondary is noticed (and the
    // pairing reconnects) without waiting for the next write.
    let mut iv = Intervals {
        changes,
        shipped,
        journal_size: dir_bytes(&svc.reg.dd.volume_dir(&p.volume).join("journal")),
    };
    let interval = Duration::from_millis(p.interval_ms);
    let keepalive = svc.liveness.keepalive;
    let mut due = Instant::now() + interval;
    loop {
        let wait = due.saturating_duration_since(Instant::now()).min(keepalive);
        if !svc.nap(task, wait) {
            return Ok(());
        }
        if Instant::now() >= due {
            due = Instant::now() + interval;
            iv.next(svc, task, &j, &mut conn, &layout)?;
        }
        if conn.quiet_for() >= keepalive {
            ping(&mut conn)?;
        }
    }
}

fn ping(conn: &mut Conn) -> Result<(), String> {
    conn.send(&Msg::Ping, &[]).map_err(|e| e.to_string())?;
    match conn.recv().map_err(|e| e.to_string())?.msg {
        Msg::Pong => Ok(()),
        other => Err(unexpected(&other)),
    }
}

/// The interval side of a session: what has been shipped and what changed since.
struct Intervals {
    changes: ChangeSubscription,
    shipped: u64,
    journal_size: u64,
}

impl Intervals {
    /// Ship what was written since the last shipped point, if anything.
    fn next(
        &mut self,
        svc: &Service,
        task: &PrimaryTask,
        j: &JournaledStore,
        conn: &mut Conn,
        layout: &Layout,
    ) -> Result<(), String> {
        let p = &task.pairing;
        if j.settled_stamp() <= self.shipped {
            return Ok(());
        }
        let t = choose_point(j, Some(self.shipped))?;
        let start = Instant::now();
        let view = j.view(t).map_err(|e| e.to_string())?;
        let t = view.point();
        if t <= self.shipped {
            return Ok(());
        }
        let Some(extents) = self.changes.take(t) else {
            // Too much was written to list it: compare the whole volume instead.
            tracing::info!(volume = %p.volume, "too many changed extents to track; resyncing by digest");
            resync(task, conn, layout, &view)?;
            self.shipped = t;
            return Ok(());
        };
        let size = dir_bytes(&svc.reg.dd.volume_dir(&p.volume).join("journal"));
        let growth = size.saturating_sub(self.journal_size);
        self.journal_size = size;
        let wire0 = conn.wire_bytes();
        ship(
            task,
            conn,
            layout,
            &view,
            UpdateKind::Interval,
            t,
            &extents,
            Cost {
                start,
                wire0,
                read_bytes: 0,
                journal_growth_bytes: growth,
            },
        )?;
        self.shipped = t;
        Ok(())
    }
}

/// Digest resync at the view's point: compare every extent with the secondary's by SHA-256
/// (per group, then per extent) and ship those that differ. Reads the whole volume.
fn resync(
    task: &PrimaryTask,
    conn: &mut Conn,
    layout: &Layout,
    view: &JournalView,
) -> Result<(), String> {
    let start = Instant::now();
    let wire0 = conn.wire_bytes();
    let local = digest::extent_digests(view, layout).map_err(|e| e.to_string())?;
    let remote_groups = ask_digests(conn, &Msg::GroupDigests, layout.groups())?;
    let local_groups = digest::group_digests(layout, &local);
    let groups: Vec<u64> = (0..layout.groups())
        .filter(|&g| local_groups[g as usize] != remote_groups[g as usize])
        .collect();
    let mut differ = Vec::new();
    for batch in groups.chunks(4096) {
        let want: u64 = batch.iter().map(|&g| layout.group(g).count() as u64).sum();
        let remote = ask_digests(
            conn,
            &Msg::ExtentDigests {
                groups: batch.to_vec(),
            },
            want,
        )?;
        let mut i = 0;
        for &g in batch {
            for e in layout.group(g) {
                if remote.get(i) != local.get(e as usize) {
                    differ.push(e);
                }
                i += 1;
            }
        }
    }
    let volume_bytes = layout.num_blocks * u64::from(layout.block_size);
    ship(
        task,
        conn,
        layout,
        view,
        UpdateKind::Resync,
        view.point(),
        &differ,
        Cost {
            start,
            wire0,
            read_bytes: volume_bytes,
            journal_growth_bytes: 0,
        },
    )
}

/// What an update cost beyond the extents it ships.
struct Cost {
    start: Instant,
    /// Wire counters when the update's work began.
    wire0: u64,
    /// Bytes read from the volume before the extents (the digests of a resync).
    read_bytes: u64,
    journal_growth_bytes: u64,
}

fn ask_digests(conn: &mut Conn, ask: &Msg, want: u64) -> Result<Vec<Digest>, String> {
    conn.send(ask, &[]).map_err(|e| e.to_string())?;
    let f = conn.recv().map_err(|e| e.to_string())?;
    match f.msg {
        Msg::Digests { count } if count == want => digest::unpack(&f.data, count),
        other => Err(unexpected(&other)),
    }
}

/// Send one update and wait until the secondary has verified and applied it.
#[allow(clippy::too_many_arguments)]
fn ship(
    task: &PrimaryTask,
    conn: &mut Conn,
    layout: &Layout,
    view: &dyn BlockStore,
    kind: UpdateKind,
    to: u64,
    extents: &[u64],
    cost: Cost,
) -> Result<(), String> {
    let io = |e: super::wire::WireError| e.to_string();
    let seq = task.seq.fetch_add(1, Ordering::SeqCst) + 1;
    let bytes: u64 = extents.iter().map(|&e| layout.extent_len(e) as u64).sum();
    lock(&task.status).lag_bytes = bytes;
    conn.send(
        &Msg::UpdateBegin {
            seq,
            kind,
            to,
            extents: extents.len() as u64,
            bytes,
        },
        &[],
    )
    .map_err(io)?;
    let mut hash = Sha256::new();
    let mut batch = Vec::new();
    let mut data = Vec::new();
    for (i, &e) in extents.iter().enumerate() {
        let d = digest::read_extent(view, layout, e).map_err(|e| e.to_string())?;
        hash.update(e.to_be_bytes());
        hash.update(&d);
        batch.push(e);
        data.extend_from_slice(&d);
        if data.len() >= BATCH_BYTES || i + 1 == extents.len() {
            conn.send(
                &Msg::UpdateData {
                    extents: std::mem::take(&mut batch),
                },
                &data,
            )
            .map_err(io)?;
            data.clear();
        }
    }
    conn.send(
        &Msg::UpdateEnd {
            seq,
            sha256: hex::encode(hash.finalize()),
        },
        &[],
    )
    .map_err(io)?;
    match conn.recv().map_err(io)?.msg {
        Msg::Applied { seq: s, to: t } if s == seq && t == to => {}
        other => return Err(unexpected(&other)),
    }
    let wire_bytes = conn.wire_bytes() - cost.wire0;
    let read_bytes = cost.read_bytes + bytes;
    let shipped = Shipped {
        seq,
        kind,
        point: format_stamp(to),
        stamp: to,
        extents: extents.len() as u64,
        data_bytes: bytes,
        wire_bytes,
        read_bytes,
        journal_growth_bytes: cost.journal_growth_bytes,
        millis: cost.start.elapsed().as_millis() as u64,
    };
    tracing::info!(volume = %task.pairing.volume, ?kind, point = %shipped.point, extents = shipped.extents, data_bytes = bytes, wire_bytes, "update applied on the secondary");
    let mut s = lock(&task.status);
    s.shipped_stamp = Some(to);
    s.shipped = Some(shipped.point.clone());
    s.updates += 1;
    s.data_bytes_sent += bytes;
    s.wire_bytes += wire_bytes;
    s.read_bytes += read_bytes;
    s.lag_bytes = 0;
    s.recent.push(shipped);
    if s.recent.len() > RECENT {
        s.recent.remove(0);
    }
    Ok(())
}
