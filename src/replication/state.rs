//! What replication keeps on disk and reports.
//!
//! - Primary: `DIR/replication.json`, the pairings (`rewind replicate`), resumed at start.
//! - Secondary: `DIR/volumes/NAME/replication/state.json`, the role (secondary or promoted)
//!   and the primary time of the last update applied.
//!
//! Files are written to a temporary name and renamed, so a crash leaves the old or the new one.

use std::path::Path;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// A volume replicated from this daemon to a secondary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pairing {
    pub volume: String,
    /// HOST:PORT of the secondary's replication listener.
    pub to: String,
    pub interval_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Takes updates from a primary; served read-only.
    #[default]
    Secondary,
    /// Failed over: writable, refuses updates.
    Promoted,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondaryState {
    pub role: Role,
    /// Primary time (µs) of the last update applied completely.
    pub applied: Option<u64>,
    pub seq: u64,
}

/// One shipped update, for the status report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shipped {
    pub seq: u64,
    pub kind: super::wire::UpdateKind,
    /// The primary point the secondary is at after it (RFC 3339 and µs).
    pub point: String,
    pub stamp: u64,
    pub extents: u64,
    /// Block data shipped.
    pub data_bytes: u64,
    /// Everything sent and received for it on the wire (digests, framing included).
    pub wire_bytes: u64,
    /// Bytes the primary read from its volume for it: the extents shipped, plus the whole
    /// volume for a resync's digests.
    #[serde(default)]
    pub read_bytes: u64,
    /// Growth of the primary's journal over the interval: about the bytes written, rounded
    /// up to journal chunks (0 when a merge shrank the journal meanwhile).
    pub journal_growth_bytes: u64,
    pub millis: u64,
}

/// A primary's view of one pairing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PrimaryStatus {
    pub volume: String,
    pub to: String,
    pub interval_ms: u64,
    /// connecting, resyncing, streaming, retrying, stopped
    pub state: String,
    /// The last consistent point the secondary confirmed (µs), if any.
    pub shipped_stamp: Option<u64>,
    pub shipped: Option<String>,
    /// How long the newest unshipped write has been waiting (0 when caught up), µs.
    pub lag_us: u64,
    /// Data bytes of the update being shipped (0 when none is).
    pub lag_bytes: u64,
    pub updates: u64,
    pub data_bytes_sent: u64,
    pub wire_bytes: u64,
    /// Bytes read from the volume to find and ship updates.
    #[serde(default)]
    pub read_bytes: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    /// The newest updates, oldest first.
    pub recent: Vec<Shipped>,
}

/// A secondary's view of one volume it accepts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SecondaryStatus {
    pub volume: String,
    pub role: Role,
    pub applied_stamp: Option<u64>,
    pub applied: Option<String>,
    pub connected_from: Option<String>,
    pub updates_applied: u64,
    pub data_bytes_received: u64,
    /// Updates refused because they failed verification.
    pub rejected: u64,
    pub errors: u64,
    pub last_error: Option<String>,
}

pub fn load<T: DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn save<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, &bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}
