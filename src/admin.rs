//! The admin socket: `DIR/rewind.sock`, one JSON request per line, one JSON response per line.
//! `rewind --data DIR <subcommand>` talks to the running daemon through it, so volumes can be
//! created and status read while `serve` runs.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};

use crate::config::default_target_name;
use crate::datadir::VolumeMeta;
use crate::volume::{format_stamp, Registry};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    VolumeList,
    VolumeCreate {
        name: String,
        size: u64,
        block_size: u32,
        read_only: bool,
    },
    /// Grow a volume to `size` bytes while it is served.
    VolumeResize {
        name: String,
        size: u64,
    },
    History {
        volume: String,
    },
    Bookmark {
        volume: String,
        name: String,
    },
    /// `when`: an RFC 3339 time, an age ("15m ago"), or "@bookmark".
    SnapshotExport {
        volume: String,
        when: String,
        name: Option<String>,
        writable: bool,
    },
    SnapshotList,
    SnapshotUnexport {
        target: String,
    },
    Restore {
        volume: String,
        when: String,
        force: bool,
    },
    Merge {
        volume: String,
    },
    /// Start (or change) replicating a volume to a secondary at `to` (HOST:PORT).
    Replicate {
        volume: String,
        to: String,
        interval_ms: u64,
    },
    /// Stop replicating a volume.
    ReplicateStop {
        volume: String,
    },
    /// Make a replication secondary's volume writable (failover).
    Promote {
        volume: String,
    },
    /// Replication status: pairings (primary) and accepted volumes (secondary).
    ReplicationStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok {
        data: serde_json::Value,
    },
    Error {
        message: String,
    },
    /// Sent (any number of times) before the final answer of a long request.
    Progress {
        done: u64,
        total: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionInfo {
    pub tsih: u16,
    pub initiator: String,
    pub isid: String,
    pub target: Option<String>,
    pub connections: usize,
    pub tasks: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetInfo {
    pub name: String,
    pub luns: Vec<u64>,
}

/// A journaled volume's CDP facts, as `/metrics` has them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalStatus {
    pub volume: String,
    /// The oldest point it can be rewound to (RFC 3339).
    pub oldest: String,
    pub journal_bytes: u64,
    /// Age of the oldest journal entry not yet durable.
    pub flush_lag_seconds: f64,
    /// How long a merge has been due under the retention policy.
    pub merge_lag_seconds: f64,
    /// Ports whose journal is invalid now (points after their failure may be incomplete).
    pub invalid_ports: Vec<u64>,
}

/// Commands and bytes since the daemon started, as `/metrics` counts them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IoTotals {
    pub commands_read: u64,
    pub commands_write: u64,
    pub commands_other: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub portals: Vec<String>,
    pub targets: Vec<TargetInfo>,
    pub sessions: Vec<SessionInfo>,
    pub volumes: Vec<VolumeMeta>,
    /// Replication facts: lag, last shipped point, bytes, errors (absent from older daemons).
    #[serde(default)]
    pub replication: serde_json::Value,
    /// Per journaled volume (absent from older daemons).
    #[serde(default)]
    pub journals: Vec<JournalStatus>,
    #[serde(default)]
    pub io: IoTotals,
}

pub fn status(reg: &Registry) -> Status {
    let ctx = &reg.ctx;
    let dd = &reg.dd;
    let sessions = ctx
        .sessions
        .all()
        .iter()
        .map(|s| SessionInfo {
            tsih: s.tsih,
            initiator: s.initiator_name.clone(),
            isid: crate::target::session::isid_hex(&s.isid),
            target: s.target_name().map(str::to_string),
            connections: crate::target::session::lock(&s.connections).len(),
            tasks: crate::target::session::lock(&s.tasks).len(),
        })
        .collect();
    Status {
        version: env!("CARGO_PKG_VERSION").into(),
        portals: ctx
            .portals
            .read()
            .map(|p| p.iter().map(|a| a.to_string()).collect())
            .unwrap_or_default(),
        targets: ctx
            .targets()
            .iter()
            .map(|t| TargetInfo {
                name: t.name.clone(),
                luns: t.lun_list(),
            })
            .collect(),
        sessions,
        volumes: dd.list().unwrap_or_default(),
        replication: crate::replication::for_registry(reg)
            .map(|r| r.status())
            .unwrap_or_default(),
        journals: journal_status(reg),
        io: crate::metrics::global().io_totals(),
    }
}

fn journal_status(reg: &Registry) -> Vec<JournalStatus> {
    let now = crate::volume::now_micros();
    let mut out: Vec<JournalStatus> = reg
        .volumes()
        .iter()
        .filter_map(|v| {
            let j = v.journal.as_ref()?;
            let name = v.meta.name.clone();
            Some(JournalStatus {
                oldest: crate::volume::format_stamp(j.oldest_point()),
                journal_bytes: crate::volume::dir_bytes(&reg.dd.volume_dir(&name).join("journal")),
                flush_lag_seconds: j.flush_lag(now).as_secs_f64(),
                merge_lag_seconds: j.merge_lag(now).as_secs_f64(),
                invalid_ports: j
                    .port_validity()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(_, valid)| !valid)
                    .map(|(p, _)| p)
                    .collect(),
                volume: name,
            })
        })
        .collect();
    out.sort_by(|a, b| a.volume.cmp(&b.volume));
    out
}

fn to_json<T: Serialize>(v: T) -> Result<serde_json::Value, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

/// Carry out one request. Blocking (journal and file I/O): run it off the async runtime.
pub fn handle(
    reg: &Registry,
    req: Request,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<serde_json::Value, String> {
    match req {
        Request::Status => to_json(status(reg)),
        Request::VolumeList => to_json(reg.dd.list().map_err(|e| e.to_string())?),
        Request::VolumeCreate {
            name,
            size,
            block_size,
            read_only,
        } => {
            let meta = reg
                .dd
                .create(&name, size, block_size, None, read_only)
                .map_err(|e| e.to_string())?;
            let v = reg.open_volume(&meta).map_err(|e| format!("{e:#}"))?;
            reg.add_default_target(&v);
            let target = default_target_name(&name);
            info!(volume = %name, %target, "volume created and served");
            Ok(serde_json::json!({ "volume": meta, "target": target }))
        }
        Request::VolumeResize { name, size } => {
            if let Ok(r) = crate::replication::for_registry(reg) {
                let facts = r.volume_facts(&name);
                if !facts["primary"].is_null() || !facts["secondary"].is_null() {
                    return Err(format!(
                        "volume {name:?} is replicated; stop replication on both sites, grow both volumes to the same size, then start it again"
                    ));
                }
            }
            let before = reg.grow_volume(&name, size)?;
            Ok(serde_json::json!({ "volume": name, "size_before": before, "size": size }))
        }
        Request::History { volume } => {
            let mut h = reg.history(&volume)?;
            if let Ok(r) = crate::replication::for_registry(reg) {
                h["replication"] = r.volume_facts(&volume);
            }
            Ok(h)
        }
        Request::Bookmark { volume, name } => {
            crate::config::check_volume_name(&name)
                .map_err(|e| e.to_string().replace("volume name", "bookmark name"))?;
            let ts = reg.bookmark(&volume, &name)?;
            Ok(
                serde_json::json!({ "volume": volume, "bookmark": name, "stamp": ts, "time": format_stamp(ts) }),
            )
        }
        Request::SnapshotExport {
            volume,
            when,
            name,
            writable,
        } => {
            let ts = reg.resolve_when(&volume, &when)?;
            to_json(reg.export_view(&volume, ts, name.as_deref(), writable)?)
        }
        Request::SnapshotList => to_json(reg.views()),
        Request::SnapshotUnexport { target } => to_json(reg.remove_view(&target)?),
        Request::Restore {
            volume,
            when,
            force,
        } => {
            let ts = reg.resolve_when(&volume, &when)?;
            let changed = reg.restore(&volume, ts, force, progress)?;
            Ok(serde_json::json!({
                "volume": volume,
                "restored_to": format_stamp(ts),
                "chunks_changed": changed,
            }))
        }
        Request::Merge { volume } => {
            Ok(serde_json::json!({ "volume": volume, "report": reg.merge(&volume)? }))
        }
        Request::Replicate {
            volume,
            to,
            interval_ms,
        } => crate::replication::for_registry(reg)?.replicate(
            &volume,
            &to,
            std::time::Duration::from_millis(interval_ms),
        ),
        Request::ReplicateStop { volume } => crate::replication::for_registry(reg)?.stop(&volume),
        Request::Promote { volume } => crate::replication::for_registry(reg)?.promote(&volume),
        Request::ReplicationStatus => Ok(crate::replication::for_registry(reg)?.status()),
    }
}

/// Serve the admin socket until shutdown.
pub async fn serve(reg: Arc<Registry>) -> std::io::Result<()> {
    let ctx = reg.ctx.clone();
    let dd = reg.dd.clone();
    let path = dd.socket_path();
    if path.exists() {
        // A stale socket from a daemon that died; a live one would answer.
        if UnixStream::connect(&path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another rewind daemon is serving {}", dd.root().display()),
            ));
        }
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    loop {
        let (stream, _) = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            a = listener.accept() => a?,
        };
        let reg = reg.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut lines = BufReader::new(rd).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let response = match serde_json::from_str::<Request>(&line) {
                    Ok(req) => {
                        let reg = reg.clone();
                        // Progress reports travel on a channel while the request runs.
                        let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
                        let job = tokio::task::spawn_blocking(move || {
                            let mut last = std::time::Instant::now();
                            let mut report = |done: u64, total: u64| {
                                if last.elapsed() >= std::time::Duration::from_millis(200)
                                    || done == total
                                {
                                    last = std::time::Instant::now();
                                    let _ = ptx.send((done, total));
                                }
                            };
                            handle(&reg, req, &mut report)
                        });
                        while let Some((done, total)) = prx.recv().await {
                            let mut text =
                                serde_json::to_string(&Response::Progress { done, total })
                                    .unwrap_or_default();
                            text.push('\n');
                            if wr.write_all(text.as_bytes()).await.is_err() {
                                break;
                            }
                        }
                        match job.await {
                            Ok(Ok(data)) => Response::Ok { data },
                            Ok(Err(message)) => Response::Error { message },
                            Err(e) => Response::Error {
                                message: e.to_string(),
                            },
                        }
                    }
                    Err(e) => Response::Error {
                        message: format!("bad request: {e}"),
                    },
                };
                let mut text = serde_json::to_string(&response).unwrap_or_else(|_| "{}".into());
                text.push('\n');
                if wr.write_all(text.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
    if let Err(e) = std::fs::remove_file(&path) {
        warn!(error = %e, "could not remove the admin socket");
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no rewind daemon is running on this data directory")]
    NotRunning,
    #[error("admin socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Daemon(String),
}

/// Send one request to the daemon serving `data` (blocking; for the CLI).
pub fn call(data: &Path, req: &Request) -> Result<serde_json::Value, ClientError> {
    call_with_progress(data, req, &mut |_, _| {})
}

/// As `call`, reporting the daemon's progress messages as they come.
pub fn call_with_progress(
    data: &Path,
    req: &Request,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<serde_json::Value, ClientError> {
    use std::io::{BufRead, Write};
    let path = data.join("rewind.sock");
    let mut stream = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => s,
        Err(_) => return Err(ClientError::NotRunning),
    };
    let mut text = serde_json::to_string(req).map_err(|e| ClientError::Daemon(e.to_string()))?;
    text.push('\n');
    stream.write_all(text.as_bytes())?;
    let mut reader = std::io::BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(ClientError::Daemon(
                "the daemon closed the connection without an answer".into(),
            ));
        }
        match serde_json::from_str::<Response>(&line) {
            Ok(Response::Progress { done, total }) => progress(done, total),
            Ok(Response::Ok { data }) => return Ok(data),
            Ok(Response::Error { message }) => return Err(ClientError::Daemon(message)),
            Err(e) => {
                return Err(ClientError::Daemon(format!(
                    "unreadable answer from the daemon: {e}"
                )))
            }
        }
    }
}
