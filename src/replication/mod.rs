//! Replication to a second site (asynchronous, interval based).
//!
//! A primary daemon ships a journaled volume to a secondary daemon over rewind's own TCP
//! protocol. On every connection the two sides first compare SHA-256 digests (per group of
//! extents, then per extent) and the primary sends only the extents that differ: this is the
//! initial sync and the repair after a crash at either end. Then, at the end of each interval,
//! the primary reads the volume as it was at a consistent point (`view_at`), ships only the
//! extents that changed since the previous point (newest data only, each once), and the
//! secondary buffers the whole update in a file, verifies its SHA-256, applies it through its
//! own journal and bookmarks it with the primary's time (`repl-<µs>`). See
//! `docs/replication.md`.
//!
//! - [`wire`]: framing, checksums, messages. [`auth`]: HMAC-SHA256 challenge/response.
//! - [`digest`]: extents, groups, digests. [`buffer`]: the secondary's update file.
//! - [`shipper`]: the primary side. [`receiver`]: the secondary side.
//! - [`state`]: persisted pairings and roles, status reports. [`serving`]: read-only serving.

pub mod auth;
pub mod buffer;
pub mod digest;
pub mod receiver;
pub mod serving;
pub mod shipper;
pub mod state;
pub mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;

use crate::auth::secrets::Secret;
use crate::config::Config;
use crate::journal::JournaledStore;
use crate::volume::{format_stamp, now_micros, Registry, Volume};
use state::{Pairing, PrimaryStatus, Role, SecondaryState, SecondaryStatus};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A volume this daemon replicates to a secondary.
pub struct PrimaryTask {
    pub pairing: Pairing,
    stop: AtomicBool,
    seq: AtomicU64,
    pub status: Mutex<PrimaryStatus>,
}

/// A volume this daemon accepts updates for.
pub struct SecondaryVolume {
    pub name: String,
    dir: PathBuf,
    pub state: Mutex<SecondaryState>,
    pub status: Mutex<SecondaryStatus>,
    /// Held by the one session feeding this volume.
    busy: Mutex<()>,
    /// Held while an update is applied (and by promotion).
    apply: Mutex<()>,
    /// The current session's socket, so a newer session can cut it off.
    current: Mutex<Option<std::net::TcpStream>>,
}

impl SecondaryVolume {
    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn save(&self, s: &SecondaryState) -> Result<(), String> {
        state::save(&self.state_path(), s).map_err(|e| format!("saving replication state: {e}"))
    }

    fn fail(&self, e: &str) {
        let mut st = lock(&self.status);
        st.errors += 1;
        st.last_error = Some(e.to_string());
    }
}

/// Replication in one daemon: its pairings (primary side) and accepted volumes (secondary).
pub struct Service {
    pub reg: Arc<Registry>,
    secret: Option<Secret>,
    /// Where the secondary listener is bound (None: not a secondary).
    pub listen_addr: Option<SocketAddr>,
    pub extent_bytes: u32,
    pub group_extents: u32,
    /// Keepalive and timeout of every link.
    pub liveness: wire::Liveness,
    primaries: Mutex<BTreeMap<String, Arc<PrimaryTask>>>,
    secondaries: BTreeMap<String, Arc<SecondaryVolume>>,
}

type Services = Mutex<Vec<(PathBuf, Arc<Service>)>>;
static SERVICES: Services = Mutex::new(Vec::new());

/// The replication service of the daemon that runs `reg` (the admin socket finds it here).
pub fn for_registry(reg: &Registry) -> Result<Arc<Service>, String> {
    lock(&SERVICES)
        .iter()
        .rev()
        .find(|(root, _)| root == reg.dd.root())
        .map(|(_, s)| s.clone())
        .ok_or_else(|| "replication is not running in this daemon".to_string())
}

fn journal_of(reg: &Registry, volume: &str) -> Result<(Arc<Volume>, Arc<JournaledStore>), String> {
    let v = reg
        .volume(volume)
        .ok_or_else(|| format!("no volume named {volume:?} (see `rewind volume list`)"))?;
    let j = v.journal.clone().ok_or_else(|| {
        format!("volume {volume:?} is not journaled; replication needs its journal")
    })?;
    Ok((v, j))
}

impl Service {
    /// Start replication for a daemon: the secondary listener (if configured), the accepted
    /// volumes (served read-only unless promoted; an update interrupted by a crash is applied
    /// again from its verified buffer), and the saved pairings.
    pub async fn start(reg: Arc<Registry>, config: &Config) -> anyhow::Result<Arc<Service>> {
        let rc = config.replication.clone().unwrap_or_default();
        let secret = match &config.replication {
            Some(r) => {
                let (s, warnings) = r.load_secret()?;
                for w in warnings {
                    tracing::warn!("replication: {w}");
                }
                Some(s)
            }
            None => None,
        };
        let mut secondaries = BTreeMap::new();
        for name in &rc.volumes {
            let (v, _) = journal_of(&reg, name).map_err(anyhow::Error::msg)?;
            let dir = reg.dd.volume_dir(name).join("replication");
            let st: SecondaryState = state::load(&dir.join("state.json"))
                .with_context(|| format!("replication state of {name}"))?
                .unwrap_or_default();
            if st.role == Role::Secondary {
                serving::read_only(&reg, &v);
            }
            let sv = Arc::new(SecondaryVolume {
                name: name.clone(),
                dir,
                status: Mutex::new(SecondaryStatus {
                    volume: name.clone(),
                    role: st.role,
                    applied_stamp: st.applied,
                    applied: st.applied.map(format_stamp),
                    ..Default::default()
                }),
                state: Mutex::new(st),
                busy: Mutex::new(()),
                apply: Mutex::new(()),
                current: Mutex::new(None),
            });
            let (r2, sv2) = (reg.clone(), sv.clone());
            tokio::task::spawn_blocking(move || receiver::recover(&r2, &sv2))
                .await?
                .map_err(anyhow::Error::msg)?;
            secondaries.insert(name.clone(), sv);
        }
        let listener = match &rc.listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen for replication on {addr}"))?,
            ),
            None => None,
        };
        let svc = Arc::new(Service {
            reg: reg.clone(),
            secret,
            listen_addr: listener.as_ref().and_then(|l| l.local_addr().ok()),
            extent_bytes: digest::DEFAULT_EXTENT_BYTES,
            group_extents: digest::DEFAULT_GROUP_EXTENTS,
            liveness: wire::Liveness {
                keepalive: rc.keepalive,
                timeout: rc.link_timeout,
            },
            primaries: Mutex::new(BTreeMap::new()),
            secondaries,
        });
        if let Some(l) = listener {
            tracing::info!(addr = ?svc.listen_addr, "accepting replication");
            tokio::spawn(receiver::accept_loop(svc.clone(), l));
        }
        {
            let mut all = lock(&SERVICES);
            all.retain(|(root, _)| root != reg.dd.root());
            all.push((reg.dd.root().to_path_buf(), svc.clone()));
        }
        let saved: Vec<Pairing> = state::load(&svc.pairings_path())?.unwrap_or_default();
        for p in saved {
            if let Err(e) = svc.spawn_primary(p.clone()) {
                tracing::warn!(volume = %p.volume, error = %e, "replication pairing not resumed");
            }
        }
        Ok(svc)
    }

    fn pairings_path(&self) -> PathBuf {
        self.reg.dd.root().join("replication.json")
    }

    fn save_pairings(&self) -> Result<(), String> {
        let list: Vec<Pairing> = lock(&self.primaries)
            .values()
            .map(|t| t.pairing.clone())
            .collect();
        state::save(&self.pairings_path(), &list).map_err(|e| format!("saving pairings: {e}"))
    }

    fn stopped(&self, t: &PrimaryTask) -> bool {
        t.stop.load(Ordering::SeqCst) || self.reg.ctx.shutdown.is_cancelled()
    }

    /// Sleep up to `d`, waking early when the task is stopped. False if stopped.
    fn nap(&self, t: &PrimaryTask, d: Duration) -> bool {
        let end = std::time::Instant::now() + d;
        while std::time::Instant::now() < end {
            if self.stopped(t) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20).min(d));
        }
        !self.stopped(t)
    }

    fn spawn_primary(self: &Arc<Self>, p: Pairing) -> Result<(), String> {
        journal_of(&self.reg, &p.volume)?;
        if self.secret.is_none() {
            return Err(
                "no shared secret: give both sites a [replication] section with secret_file".into(),
            );
        }
        let task = Arc::new(PrimaryTask {
            status: Mutex::new(PrimaryStatus {
                volume: p.volume.clone(),
                to: p.to.clone(),
                interval_ms: p.interval_ms,
                state: "connecting".into(),
                ..Default::default()
            }),
            pairing: p.clone(),
            stop: AtomicBool::new(false),
            seq: AtomicU64::new(0),
        });
        if let Some(old) = lock(&self.primaries).insert(p.volume.clone(), task.clone()) {
            old.stop.store(true, Ordering::SeqCst);
        }
        let svc = self.clone();
        std::thread::Builder::new()
            .name(format!("repl-{}", p.volume))
            .spawn(move || shipper::run(&svc, &task))
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// `rewind replicate VOL --to HOST:PORT --interval D`: start (or change) a pairing.
    pub fn replicate(
        self: &Arc<Self>,
        volume: &str,
        to: &str,
        interval: Duration,
    ) -> Result<serde_json::Value, String> {
        if self.secondaries.contains_key(volume) {
            let role = lock(&self.secondaries[volume].state).role;
            if role == Role::Secondary {
                return Err(format!(
                    "{volume:?} is a replication secondary here; promote it first"
                ));
            }
        }
        if interval < Duration::from_millis(10) {
            return Err("the interval must be at least 10ms".into());
        }
        let p = Pairing {
            volume: volume.to_string(),
            to: to.to_string(),
            interval_ms: interval.as_millis() as u64,
        };
        self.spawn_primary(p.clone())?;
        self.save_pairings()?;
        tracing::info!(volume, to, ?interval, "replication started");
        Ok(serde_json::to_value(p).unwrap_or_default())
    }

    /// Stop replicating `volume` (the secondary keeps what it has).
    pub fn stop(&self, volume: &str) -> Result<serde_json::Value, String> {
        let t = lock(&self.primaries)
            .remove(volume)
            .ok_or_else(|| format!("{volume:?} is not being replicated"))?;
        t.stop.store(true, Ordering::SeqCst);
        self.save_pairings()?;
        Ok(serde_json::json!({ "volume": volume, "stopped": true }))
    }

    /// Fail over: make the secondary's volume writable; it refuses updates from then on.
    pub fn promote(&self, volume: &str) -> Result<serde_json::Value, String> {
        let sv = self
            .secondaries
            .get(volume)
            .ok_or_else(|| format!("{volume:?} is not a replication secondary on this daemon"))?;
        let _apply = lock(&sv.apply);
        let mut st = lock(&sv.state);
        if st.role == Role::Promoted {
            return Err(format!("{volume:?} is already promoted"));
        }
        let mut next = st.clone();
        next.role = Role::Promoted;
        sv.save(&next)?;
        *st = next;
        lock(&sv.status).role = Role::Promoted;
        if let Some(s) = lock(&sv.current).take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        let (v, _) = journal_of(&self.reg, volume)?;
        serving::writable(&self.reg, &v);
        tracing::warn!(volume, applied = ?st.applied.map(format_stamp), "replica promoted: now writable");
        Ok(serde_json::json!({
            "volume": volume,
            "promoted": true,
            "at": st.applied.map(format_stamp),
            "at_stamp": st.applied,
        }))
    }

    pub fn primary_status(&self) -> Vec<PrimaryStatus> {
        let now = now_micros();
        lock(&self.primaries)
            .values()
            .map(|t| {
                let mut s = lock(&t.status).clone();
                if let Ok((_, j)) = journal_of(&self.reg, &s.volume) {
                    s.lag_us = match s.shipped_stamp {
                        Some(p) if j.last_stamp() > p => now.saturating_sub(p),
                        Some(_) => 0,
                        None => now.saturating_sub(j.born()),
                    };
                }
                s
            })
            .collect()
    }

    pub fn secondary_status(&self) -> Vec<SecondaryStatus> {
        self.secondaries
            .values()
            .map(|sv| lock(&sv.status).clone())
            .collect()
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "listen": self.listen_addr.map(|a| a.to_string()),
            "primary": self.primary_status(),
            "secondary": self.secondary_status(),
        })
    }

    /// Replication facts of one volume (for `history`).
    pub fn volume_facts(&self, volume: &str) -> serde_json::Value {
        let p = self
            .primary_status()
            .into_iter()
            .find(|s| s.volume == volume);
        let s = self
            .secondaries
            .get(volume)
            .map(|sv| lock(&sv.status).clone());
        serde_json::json!({ "primary": p, "secondary": s })
    }
}
