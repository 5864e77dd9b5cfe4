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
use crate::datadir::{DataDir, VolumeMeta};
use crate::target::{Target, TargetContext};

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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok { data: serde_json::Value },
    Error { message: String },
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub portals: Vec<String>,
    pub targets: Vec<TargetInfo>,
    pub sessions: Vec<SessionInfo>,
    pub volumes: Vec<VolumeMeta>,
}

pub fn status(ctx: &TargetContext, dd: &DataDir) -> Status {
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
    }
}

fn handle(ctx: &TargetContext, dd: &DataDir, req: Request) -> Result<serde_json::Value, String> {
    match req {
        Request::Status => serde_json::to_value(status(ctx, dd)).map_err(|e| e.to_string()),
        Request::VolumeList => {
            serde_json::to_value(dd.list().map_err(|e| e.to_string())?).map_err(|e| e.to_string())
        }
        Request::VolumeCreate {
            name,
            size,
            block_size,
            read_only,
        } => {
            let meta = dd
                .create(&name, size, block_size, None, read_only)
                .map_err(|e| e.to_string())?;
            let lu = crate::daemon::open_lu(dd, &meta).map_err(|e| format!("{e:#}"))?;
            let target = default_target_name(&name);
            let mut luns = std::collections::BTreeMap::new();
            luns.insert(0, lu);
            ctx.add_target(Target {
                name: target.clone(),
                alias: Some(name.clone()),
                luns,
            });
            info!(volume = %name, %target, "volume created and served");
            Ok(serde_json::json!({ "volume": meta, "target": target }))
        }
    }
}

/// Serve the admin socket until shutdown.
pub async fn serve(ctx: Arc<TargetContext>, dd: DataDir) -> std::io::Result<()> {
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
        let ctx = ctx.clone();
        let dd = dd.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut lines = BufReader::new(rd).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let response = match serde_json::from_str::<Request>(&line) {
                    Ok(req) => {
                        let ctx = ctx.clone();
                        let dd = dd.clone();
                        match tokio::task::spawn_blocking(move || handle(&ctx, &dd, req)).await {
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
    use std::io::{BufRead, Write};
    let path = data.join("rewind.sock");
    let mut stream = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => s,
        Err(_) => return Err(ClientError::NotRunning),
    };
    let mut text = serde_json::to_string(req).map_err(|e| ClientError::Daemon(e.to_string()))?;
    text.push('\n');
    stream.write_all(text.as_bytes())?;
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line)?;
    match serde_json::from_str::<Response>(&line) {
        Ok(Response::Ok { data }) => Ok(data),
        Ok(Response::Error { message }) => Err(ClientError::Daemon(message)),
        Err(e) => Err(ClientError::Daemon(format!(
            "unreadable answer from the daemon: {e}"
        ))),
    }
}
