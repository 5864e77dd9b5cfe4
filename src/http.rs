//! The optional HTTP admin listener (`rewind serve --http 127.0.0.1:9260`, off by default):
//!
//! - `GET /metrics`: [`crate::metrics`] in the Prometheus text format
//! - `GET /healthz`: `ok` (200) while serving, 503 once shutdown has begun
//! - `GET /api/v1/status`: what the admin socket's `status` answers ([`crate::admin::status`])
//! - `GET /api/v1/volumes`: the volumes
//! - `POST /api/v1/volumes` `{"name", "size", "block_size", "read_only"}`: create a thin volume
//!   and serve it at once, like `rewind volume create` (size: bytes, or text such as `"10GiB"`)
//! - history, bookmarks, snapshots, restore, merge: as the CLI commands of the same names
//! - replication: `PUT`/`DELETE /api/v1/volumes/{volume}/replication` (`rewind replicate`,
//!   `rewind replicate --stop`), `POST /api/v1/volumes/{volume}/promote` (`rewind promote`),
//!   `GET /api/v1/replication` (the replication part of `rewind status`)
//!
//! It has no authentication: bind it to loopback or a management network. See docs/api.md.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Json, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde::Deserialize;
use tracing::{info, warn};

use crate::admin::{self, Request};
use crate::volume::Registry;

#[derive(Clone)]
struct AppState {
    reg: Arc<Registry>,
}

/// The admin API's routes.
pub fn router(reg: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/v1/status", get(status))
        .route("/api/v1/volumes", get(volume_list).post(volume_create))
        .route("/api/v1/volumes/{volume}/history", get(history))
        .route("/api/v1/volumes/{volume}/resize", post(volume_resize))
        .route("/api/v1/volumes/{volume}/bookmarks", post(bookmark))
        .route("/api/v1/volumes/{volume}/restore", post(restore))
        .route("/api/v1/volumes/{volume}/merge", post(merge))
        .route(
            "/api/v1/volumes/{volume}/replication",
            axum::routing::put(replicate).delete(replicate_stop),
        )
        .route("/api/v1/volumes/{volume}/promote", post(promote))
        .route("/api/v1/replication", get(replication_status))
        .route(
            "/api/v1/snapshots",
            get(snapshot_list).post(snapshot_export),
        )
        .route("/api/v1/snapshots/{target}", delete(snapshot_unexport))
        .with_state(AppState { reg })
}

/// Bind `addr` and serve the API until the target shuts down; returns the bound address.
pub async fn spawn(reg: Arc<Registry>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let shutdown = reg.ctx.shutdown.clone();
    let app = router(reg);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            warn!(error = %e, "HTTP admin listener failed");
        }
    });
    info!(http = %bound, "HTTP admin API listening (/metrics, /healthz, /api/v1)");
    Ok(bound)
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// Run an admin request on the blocking pool (it touches the data directory).
async fn call(st: AppState, req: Request) -> Result<serde_json::Value, Response> {
    tokio::task::spawn_blocking(move || admin::handle(&st.reg, req, &mut |_, _| {}))
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|message| error(StatusCode::BAD_REQUEST, message))
}

async fn metrics(State(st): State<AppState>) -> Response {
    // Sampling the journal directories touches the disk: off the runtime.
    let render = tokio::task::spawn_blocking(move || crate::metrics::global().scrape(&st.reg));
    match render.await {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn healthz(State(st): State<AppState>) -> Response {
    if st.reg.ctx.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn status(State(st): State<AppState>) -> Response {
    match call(st, Request::Status).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

async fn volume_list(State(st): State<AppState>) -> Response {
    match call(st, Request::VolumeList).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

/// A size in bytes, or text like `"10GiB"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateVolume {
    name: String,
    size: Size,
    #[serde(default = "default_block_size")]
    block_size: u32,
    #[serde(default)]
    read_only: bool,
}

fn default_block_size() -> u32 {
    512
}

async fn volume_create(State(st): State<AppState>, body: axum::body::Bytes) -> Response {
    // Any content type: `curl -d '{...}'` sends form encoding by default.
    let body: CreateVolume = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")),
    };
    let size = match body.size.bytes() {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let req = Request::VolumeCreate {
        name: body.name,
        size,
        block_size: body.block_size,
        read_only: body.read_only,
    };
    match call(st, req).await {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(r) => r,
    }
}

impl Size {
    fn bytes(self) -> Result<u64, String> {
        match self {
            Size::Bytes(n) => Ok(n),
            Size::Text(t) => crate::config::parse_size(&t).map_err(|e| format!("size: {e:#}")),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResizeBody {
    size: Size,
}

async fn volume_resize(
    State(st): State<AppState>,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    match body::<ResizeBody>(&bytes).and_then(|b| b.size.bytes()) {
        Ok(size) => answer(st, Request::VolumeResize { name, size }).await,
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// Run an admin request and answer with its JSON.
async fn answer(st: AppState, req: Request) -> Response {
    match call(st, req).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("bad request body: {e}"))
}

async fn history(State(st): State<AppState>, Path(volume): Path<String>) -> Response {
    answer(st, Request::History { volume }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BookmarkBody {
    name: String,
}

async fn bookmark(
    State(st): State<AppState>,
    Path(volume): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    match body::<BookmarkBody>(&bytes) {
        Ok(b) => {
            answer(
                st,
                Request::Bookmark {
                    volume,
                    name: b.name,
                },
            )
            .await
        }
        Err(m) => error(StatusCode::BAD_REQUEST, m),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    /// WHEN: RFC 3339 time, an age ("15m ago") or "@bookmark".
    to: String,
    #[serde(default)]
    force: bool,
}

async fn restore(
    State(st): State<AppState>,
    Path(volume): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    match body::<RestoreBody>(&bytes) {
        Ok(b) => {
            answer(
                st,
                Request::Restore {
                    volume,
                    when: b.to,
                    force: b.force,
                },
            )
            .await
        }
        Err(m) => error(StatusCode::BAD_REQUEST, m),
    }
}

async fn merge(State(st): State<AppState>, Path(volume): Path<String>) -> Response {
    answer(st, Request::Merge { volume }).await
}

async fn snapshot_list(State(st): State<AppState>) -> Response {
    answer(st, Request::SnapshotList).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotBody {
    volume: String,
    /// WHEN: RFC 3339 time, an age ("15m ago") or "@bookmark".
    at: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    writable: bool,
}

async fn snapshot_export(State(st): State<AppState>, bytes: axum::body::Bytes) -> Response {
    match body::<SnapshotBody>(&bytes) {
        Ok(b) => {
            answer(
                st,
                Request::SnapshotExport {
                    volume: b.volume,
                    when: b.at,
                    name: b.name,
                    writable: b.writable,
                },
            )
            .await
        }
        Err(m) => error(StatusCode::BAD_REQUEST, m),
    }
}

async fn snapshot_unexport(State(st): State<AppState>, Path(target): Path<String>) -> Response {
    answer(st, Request::SnapshotUnexport { target }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicateBody {
    /// The secondary's replication listener, HOST:PORT.
    to: String,
    /// How often a consistent point is shipped, e.g. `"30s"` (the CLI's `--interval`).
    #[serde(default)]
    interval: Option<String>,
}

/// The replication request of a `PUT .../replication` body, checked as the CLI checks its flags.
fn replicate_request(volume: String, b: ReplicateBody) -> Result<Request, String> {
    let to = b.to.trim().to_string();
    if to.is_empty() {
        return Err("to: give the secondary's replication listener as HOST:PORT".into());
    }
    let text = b.interval.unwrap_or_else(|| "30s".into());
    let interval = humantime::parse_duration(text.trim()).map_err(|e| {
        format!("interval {text:?}: {e} (give a duration such as \"30s\" or \"5m\")")
    })?;
    Ok(Request::Replicate {
        volume,
        to,
        interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
    })
}

async fn replicate(
    State(st): State<AppState>,
    Path(volume): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    match body::<ReplicateBody>(&bytes).and_then(|b| replicate_request(volume, b)) {
        Ok(req) => answer(st, req).await,
        Err(m) => error(StatusCode::BAD_REQUEST, m),
    }
}

async fn replicate_stop(State(st): State<AppState>, Path(volume): Path<String>) -> Response {
    answer(st, Request::ReplicateStop { volume }).await
}

async fn promote(State(st): State<AppState>, Path(volume): Path<String>) -> Response {
    answer(st, Request::Promote { volume }).await
}

async fn replication_status(State(st): State<AppState>) -> Response {
    answer(st, Request::ReplicationStatus).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Request, String> {
        body::<ReplicateBody>(json.as_bytes()).and_then(|b| replicate_request("db".into(), b))
    }

    #[test]
    fn replicate_body_defaults_and_checks() {
        match parse(r#"{"to":"dr:3262"}"#) {
            Ok(Request::Replicate {
                volume,
                to,
                interval_ms,
            }) => assert_eq!(
                (volume.as_str(), to.as_str(), interval_ms),
                ("db", "dr:3262", 30_000)
            ),
            other => panic!("{other:?}"),
        }
        match parse(r#"{"to":"dr:3262","interval":"2m"}"#) {
            Ok(Request::Replicate { interval_ms, .. }) => assert_eq!(interval_ms, 120_000),
            other => panic!("{other:?}"),
        }
        let e = parse(r#"{"to":"dr:3262","interval":"soon"}"#).unwrap_err();
        assert!(e.contains("interval") && e.contains("30s"), "{e}");
        let e = parse(r#"{"to":" "}"#).unwrap_err();
        assert!(e.contains("HOST:PORT"), "{e}");
        let e = parse(r#"{"interval":"1s"}"#).unwrap_err();
        assert!(e.contains("missing field `to`"), "{e}");
        let e = parse(r#"{"to":"dr:3262","stop":true}"#).unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
    }
}
