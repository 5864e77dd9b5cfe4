//! The secondary side: authenticate the primary, check geometry, answer digest requests, and
//! take updates: buffer the whole update in a file, verify its SHA-256, and only then apply it
//! through the volume's own journal, flush, and bookmark it `repl-<primary µs>`.
//!
//! Crash safety: a verified update is renamed to `pending.update` (with `pending.json`) before
//! it is applied and removed after; a daemon that crashed while applying applies it again at
//! start ([`recover`]), so the volume ends at the shipped point. An update that fails
//! verification is deleted, counted as rejected, and never touches the volume.

use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::buffer::{self, UpdateBuffer};
use super::digest::{self, Digest, Layout};
use super::state::Role;
use super::wire::{Conn, Msg, UpdateKind, WireError};
use super::{auth, journal_of, lock, SecondaryVolume, Service};
use crate::storage::IoOrigin;
use crate::volume::{format_stamp, Registry};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    seq: u64,
    kind: UpdateKind,
    to: u64,
    sha256: String,
    block_size: u32,
    num_blocks: u64,
    extent_bytes: u32,
}

fn pending_paths(sv: &SecondaryVolume) -> (PathBuf, PathBuf) {
    (sv.dir.join("pending.update"), sv.dir.join("pending.json"))
}

pub async fn accept_loop(svc: Arc<Service>, listener: tokio::net::TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = svc.reg.ctx.shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted.and_then(|(s, _)| s.into_std()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "replication accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let svc = svc.clone();
        std::thread::spawn(move || session(&svc, stream));
    }
}

/// Serve one primary connection until it ends.
pub fn session(svc: &Service, stream: TcpStream) {
    if let Err(e) = stream.set_nonblocking(false) {
        tracing::warn!(error = %e, "replication connection setup failed");
        return;
    }
    let mut conn = match Conn::new(stream, svc.liveness) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "replication connection setup failed");
            return;
        }
    };
    let peer = conn.peer();
    let mut volume: Option<Arc<SecondaryVolume>> = None;
    match serve(svc, &mut conn, &mut volume) {
        Ok(()) => tracing::info!(%peer, "replication connection closed"),
        Err(e) => {
            tracing::warn!(%peer, error = %e, "replication connection failed");
            let _ = conn.send(&Msg::Refused { reason: e.clone() }, &[]);
            if let Some(sv) = &volume {
                sv.fail(&e);
            }
        }
    }
    if let Some(sv) = volume {
        lock(&sv.status).connected_from = None;
    }
}

fn refuse(conn: &mut Conn, reason: String) -> Result<(), String> {
    let _ = conn.send(
        &Msg::Refused {
            reason: reason.clone(),
        },
        &[],
    );
    Err(reason)
}

fn wire(e: WireError) -> String {
    e.to_string()
}

fn serve(
    svc: &Service,
    conn: &mut Conn,
    slot: &mut Option<Arc<SecondaryVolume>>,
) -> Result<(), String> {
    let (volume, np) = match conn.recv().map_err(wire)?.msg {
        Msg::Hello { volume, nonce } => (volume, nonce),
        other => return Err(format!("protocol error: expected hello, got {other:?}")),
    };
    let Some(secret) = svc.secret.as_ref() else {
        return refuse(conn, "this daemon has no [replication] secret".into());
    };
    let ns = auth::nonce();
    conn.send(
        &Msg::Challenge {
            nonce: ns.clone(),
            proof: auth::proof(secret, auth::Role::Secondary, &volume, &np, &ns),
        },
        &[],
    )
    .map_err(wire)?;
    match conn.recv().map_err(wire)?.msg {
        Msg::Proof { proof } => {
            if !auth::check(secret, auth::Role::Primary, &volume, &np, &ns, &proof) {
                let e = format!(
                    "authentication failed: the primary at {} did not prove the shared secret",
                    conn.peer()
                );
                if let Some(sv) = svc.secondaries.get(&volume) {
                    sv.fail(&e);
                }
                return refuse(conn, e);
            }
        }
        Msg::Refused { reason } => {
            let e = format!("the primary refused: {reason}");
            if let Some(sv) = svc.secondaries.get(&volume) {
                sv.fail(&e);
            }
            return Err(e);
        }
        other => return Err(format!("protocol error: expected proof, got {other:?}")),
    }
    let Some(sv) = svc.secondaries.get(&volume).cloned() else {
        return refuse(
            conn,
            format!("this daemon does not accept replication for volume {volume:?} (list it in [replication] volumes)"),
        );
    };
    if lock(&sv.state).role == Role::Promoted {
        return refuse(
            conn,
            format!("volume {volume:?} was promoted here and takes no more updates"),
        );
    }
    *slot = Some(sv.clone());
    let (v, _) = journal_of(&svc.reg, &volume)?;
    let layout = match conn.recv().map_err(wire)?.msg {
        Msg::Geometry {
            block_size,
            num_blocks,
            extent_bytes,
            group_extents,
        } => {
            let (bs, nb) = (v.store.block_size(), v.store.num_blocks());
            if block_size != bs || num_blocks != nb {
                return refuse(
                    conn,
                    format!(
                        "geometry mismatch: the primary volume {volume:?} has {num_blocks} blocks of {block_size} bytes, this secondary's has {nb} blocks of {bs} bytes; create it with the same size and block size"
                    ),
                );
            }
            let l = Layout {
                block_size,
                num_blocks,
                extent_bytes,
                group_extents,
            };
            if let Err(e) = l.check() {
                return refuse(conn, e);
            }
            l
        }
        other => return Err(format!("protocol error: expected geometry, got {other:?}")),
    };
    // One session per volume: a newer one (the primary reconnecting) cuts the older one off.
    if let Some(old) = lock(&sv.current).replace(conn.handle().map_err(|e| e.to_string())?) {
        let _ = old.shutdown(std::net::Shutdown::Both);
    }
    let _busy = lock(&sv.busy);
    lock(&sv.status).connected_from = Some(conn.peer());
    let applied = lock(&sv.state).applied;
    conn.send(
        &Msg::Ready {
            block_size: layout.block_size,
            num_blocks: layout.num_blocks,
            applied,
        },
        &[],
    )
    .map_err(wire)?;
    tracing::info!(volume, peer = %conn.peer(), "replication session started");

    let mut digests: Option<Vec<Digest>> = None;
    loop {
        let frame = match conn.recv() {
            Ok(f) => f,
            Err(WireError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        match frame.msg {
            Msg::GroupDigests => {
                let d =
                    digest::extent_digests(v.store.as_ref(), &layout).map_err(|e| e.to_string())?;
                let g = digest::group_digests(&layout, &d);
                digests = Some(d);
                conn.send(
                    &Msg::Digests {
                        count: g.len() as u64,
                    },
                    &digest::pack(&g),
                )
                .map_err(wire)?;
            }
            Msg::ExtentDigests { groups } => {
                if digests.is_none() {
                    digests = Some(
                        digest::extent_digests(v.store.as_ref(), &layout)
                            .map_err(|e| e.to_string())?,
                    );
                }
                let d = digests.as_ref().expect("computed");
                let mut out = Vec::new();
                for g in groups {
                    if g >= layout.groups() {
                        return Err(format!("protocol error: no group {g}"));
                    }
                    out.extend(layout.group(g).map(|e| d[e as usize]));
                }
                conn.send(
                    &Msg::Digests {
                        count: out.len() as u64,
                    },
                    &digest::pack(&out),
                )
                .map_err(wire)?;
            }
            Msg::Ping => conn.send(&Msg::Pong, &[]).map_err(wire)?,
            Msg::UpdateBegin {
                seq,
                kind,
                to,
                extents,
                bytes,
            } => {
                digests = None;
                let pending = Pending {
                    seq,
                    kind,
                    to,
                    sha256: String::new(),
                    block_size: layout.block_size,
                    num_blocks: layout.num_blocks,
                    extent_bytes: layout.extent_bytes,
                };
                receive(svc, &sv, conn, &layout, pending, extents, bytes)?;
                conn.send(&Msg::Applied { seq, to }, &[]).map_err(wire)?;
            }
            other => return Err(format!("protocol error: unexpected {other:?}")),
        }
    }
}

/// Receive an update into the buffer file, verify it, apply it.
fn receive(
    svc: &Service,
    sv: &SecondaryVolume,
    conn: &mut Conn,
    layout: &Layout,
    mut pending: Pending,
    extents: u64,
    bytes: u64,
) -> Result<(), String> {
    let incoming = sv.dir.join("incoming.update");
    let reject = |why: String| {
        let _ = std::fs::remove_file(&incoming);
        let mut st = lock(&sv.status);
        st.rejected += 1;
        let e = format!("update {} rejected, not applied: {why}", pending.seq);
        st.last_error = Some(e.clone());
        st.errors += 1;
        e
    };
    let mut buf = UpdateBuffer::create(&incoming).map_err(|e| e.to_string())?;
    let claimed = loop {
        let frame = match conn.recv() {
            Ok(f) => f,
            Err(e) => return Err(reject(e.to_string())),
        };
        match frame.msg {
            Msg::UpdateData { extents } => {
                let mut at = 0usize;
                for e in extents {
                    if e >= layout.extents() {
                        return Err(reject(format!("extent {e} is beyond the volume")));
                    }
                    let len = layout.extent_len(e);
                    let Some(d) = frame.data.get(at..at + len) else {
                        return Err(reject("data shorter than its extents".into()));
                    };
                    buf.append(e, d).map_err(|e| e.to_string())?;
                    at += len;
                }
                if at != frame.data.len() {
                    return Err(reject("data longer than its extents".into()));
                }
            }
            Msg::UpdateEnd { seq, sha256 } if seq == pending.seq => break sha256,
            other => return Err(reject(format!("unexpected {other:?}"))),
        }
    };
    if buf.extents != extents || buf.bytes != bytes {
        return Err(reject(format!(
            "announced {extents} extents / {bytes} bytes, received {} / {}",
            buf.extents, buf.bytes
        )));
    }
    let (path, _) = buf.finish().map_err(|e| e.to_string())?;
    // Verify what is on disk, as it will be applied.
    if !buffer::verify(&path, &claimed).map_err(|e| e.to_string())? {
        return Err(reject("SHA-256 mismatch".into()));
    }
    pending.sha256 = claimed;
    let (pu, pj) = pending_paths(sv);
    super::state::save(&pj, &pending).map_err(|e| e.to_string())?;
    std::fs::rename(&path, &pu).map_err(|e| e.to_string())?;
    {
        let mut st = lock(&sv.status);
        st.data_bytes_received += bytes;
    }
    apply(&svc.reg, sv, layout, &pending, abort_hook())
}

/// Crash tests only: `REWIND_TEST_ABORT_APPLYING=N` in the secondary's environment makes the
/// process abort after applying `N` extents of an update it received (never while re-applying
/// at start), as a crash while applying would. Unset, it does nothing.
fn abort_hook() -> Option<u64> {
    std::env::var("REWIND_TEST_ABORT_APPLYING")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Apply the verified pending update to the volume, flush, bookmark, record. `abort_after`:
/// see [`abort_hook`].
fn apply(
    reg: &Registry,
    sv: &SecondaryVolume,
    layout: &Layout,
    p: &Pending,
    abort_after: Option<u64>,
) -> Result<(), String> {
    let _apply = lock(&sv.apply);
    if lock(&sv.state).role == Role::Promoted {
        return Err("the volume was promoted; update not applied".into());
    }
    let (v, j) = journal_of(reg, &sv.name)?;
    let (pu, pj) = pending_paths(sv);
    let mut done = 0u64;
    buffer::for_each(&pu, layout, &mut |e, data| {
        if abort_after == Some(done) {
            tracing::error!(volume = %sv.name, seq = p.seq, applied = done, "REWIND_TEST_ABORT_APPLYING: aborting while applying");
            std::process::abort();
        }
        let (lba, _) = layout.extent_range(e);
        v.store
            .write(IoOrigin::default(), lba, data, false)
            .map_err(|e| e.to_string())?;
        done += 1;
        Ok(())
    })?;
    v.store.flush().map_err(|e| e.to_string())?;
    j.bookmark(&format!("repl-{}", p.to))
        .map_err(|e| e.to_string())?;
    let mut st = lock(&sv.state);
    let mut next = st.clone();
    next.applied = Some(p.to);
    next.seq = p.seq;
    sv.save(&next)?;
    *st = next;
    let _ = std::fs::remove_file(&pu);
    let _ = std::fs::remove_file(&pj);
    let mut s = lock(&sv.status);
    s.applied_stamp = Some(p.to);
    s.applied = Some(format_stamp(p.to));
    s.updates_applied += 1;
    Ok(())
}

/// At start: apply again a verified update whose application a crash interrupted.
pub fn recover(reg: &Registry, sv: &SecondaryVolume) -> Result<(), String> {
    let _ = std::fs::remove_file(sv.dir.join("incoming.update"));
    let (pu, pj) = pending_paths(sv);
    let Some(p) = super::state::load::<Pending>(&pj).map_err(|e| e.to_string())? else {
        let _ = std::fs::remove_file(&pu);
        return Ok(());
    };
    let layout = Layout {
        block_size: p.block_size,
        num_blocks: p.num_blocks,
        extent_bytes: p.extent_bytes,
        group_extents: 1,
    };
    if buffer::verify(&pu, &p.sha256).unwrap_or(false) && lock(&sv.state).role == Role::Secondary {
        tracing::warn!(volume = %sv.name, seq = p.seq, "applying an update a crash interrupted");
        apply(reg, sv, &layout, &p, None)
    } else {
        tracing::warn!(volume = %sv.name, seq = p.seq, "dropping an unverifiable pending update; the next resync repairs the volume");
        let _ = std::fs::remove_file(&pu);
        let _ = std::fs::remove_file(&pj);
        Ok(())
    }
}
