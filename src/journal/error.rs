//! Typed errors of the journal engine and their mapping onto [`StorageError`].

use crate::storage::StorageError;

/// Everything that can go wrong inside the CDP journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("journal index error: {0}")]
    Index(#[from] sled::Error),
    #[error("corrupt journal data in {file} at offset {offset}: {reason}")]
    Corrupt {
        file: String,
        offset: u64,
        reason: String,
    },
    #[error(
        "journal segment {file} has format version {version}; this version of rewind reads \
         version {supported} only (move the journal directory away to start a new history)"
    )]
    UnsupportedFormat {
        file: String,
        version: u16,
        supported: u16,
    },
    #[error("invalid journal configuration: {0}")]
    Config(String),
    #[error(
        "journal index {dir} is locked: another process has this journal open, or it is still \
         being closed"
    )]
    IndexLocked { dir: String },
    #[error("volume error: {0}")]
    Volume(#[from] StorageError),
    #[error("partial journal of port {port} is invalid since {since}")]
    PortInvalid { port: u64, since: u64 },
    #[error("history at {ts} has expired (oldest retained point {horizon})")]
    Expired { ts: u64, horizon: u64 },
    #[error("{ts} is before the volume's history begins ({born})")]
    BeforeHistory { ts: u64, born: u64 },
}

impl From<JournalError> for StorageError {
    fn from(e: JournalError) -> Self {
        match e {
            JournalError::Volume(e) => e,
            JournalError::Io(e) => StorageError::Io(e),
            other => StorageError::Io(std::io::Error::other(other.to_string())),
        }
    }
}

pub type Result<T, E = JournalError> = std::result::Result<T, E>;
