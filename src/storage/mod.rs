//! Backing stores: where a volume's blocks live. Everything above (SCSI, the CDP journal) goes
//! through the [`BlockStore`] trait, so a journaling wrapper or a fault-injecting store can stand in.
//!
//! CONTRACT (implemented by the SCSI/storage work): `file::FileStore` over a regular file
//! (thin: sparse, UNMAP punches holes, `SEEK_DATA`/`SEEK_HOLE` answer allocation status) or a
//! block device.

use thiserror::Error;

/// Who is doing the I/O: the journal keys its partial journals by `port` (the I_T nexus).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IoOrigin {
    /// Unique id of the I_T nexus (initiator port) for the lifetime of the process; 0 = internal.
    pub port: u64,
}

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("no space left for allocation")]
    NoSpace,
    #[error("range {lba}+{blocks} is beyond the end of the volume")]
    OutOfRange { lba: u64, blocks: u64 },
    #[error("volume is read-only")]
    ReadOnly,
    #[error("{0}")]
    CannotResize(String),
}

/// Allocation status of a run of blocks (GET LBA STATUS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    Mapped,
    Deallocated,
}

/// A volume's block storage. All calls are blocking; callers run them off the async runtime.
/// Offsets and lengths are in logical blocks of `block_size()` bytes.
pub trait BlockStore: Send + Sync {
    fn block_size(&self) -> u32;
    fn num_blocks(&self) -> u64;
    fn read_only(&self) -> bool;
    /// Read `buf.len() / block_size` blocks starting at `lba`.
    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), StorageError>;
    /// Write whole blocks. With `fua`, the data is durable when this returns.
    fn write(&self, origin: IoOrigin, lba: u64, data: &[u8], fua: bool)
        -> Result<(), StorageError>;
    /// The same as [`write`](Self::write) with the data as shared bytes: a store that keeps
    /// written data for later (the journal's dirty cache) may hold on to them instead of
    /// copying.
    fn write_shared(
        &self,
        origin: IoOrigin,
        lba: u64,
        data: bytes::Bytes,
        fua: bool,
    ) -> Result<(), StorageError> {
        self.write(origin, lba, &data, fua)
    }
    /// Deallocate blocks (thin provisioning); they then read as zeros.
    fn unmap(&self, origin: IoOrigin, lba: u64, blocks: u64) -> Result<(), StorageError>;
    /// Make every completed write durable (SYNCHRONIZE CACHE).
    fn flush(&self) -> Result<(), StorageError>;
    /// Allocation status of the run starting at `lba`: the status and how many blocks share it
    /// (at most `max_blocks`).
    fn allocation(&self, lba: u64, max_blocks: u64) -> Result<(Allocation, u64), StorageError>;
    /// Grow to `num_blocks` blocks; the new blocks read as zeros and are unallocated. Volumes
    /// only grow (shrinking would throw data and its history away). Stores of a fixed size
    /// (point-in-time views, overlays) refuse.
    fn grow(&self, num_blocks: u64) -> Result<(), StorageError> {
        let _ = num_blocks;
        Err(StorageError::CannotResize(
            "this store has a fixed size".into(),
        ))
    }
}

/// Check a growth request against the current size.
pub(crate) fn check_growth(current: u64, wanted: u64) -> Result<(), StorageError> {
    if wanted < current {
        return Err(StorageError::CannotResize(format!(
            "a volume can only grow: {wanted} blocks is less than its {current}"
        )));
    }
    Ok(())
}

pub mod faulty;
pub mod file;
pub mod mem;
pub mod overlay;

pub use faulty::{FaultControl, FaultyStore};
pub use file::FileStore;
pub use mem::MemStore;

/// Wrap a concrete store for sharing between logical units and sessions.
pub fn shared<S: BlockStore + 'static>(store: S) -> std::sync::Arc<dyn BlockStore> {
    std::sync::Arc::new(store)
}

/// Check that `blocks` blocks at `lba` lie within a volume of `num_blocks` blocks.
pub(crate) fn check_range(lba: u64, blocks: u64, num_blocks: u64) -> Result<(), StorageError> {
    match lba.checked_add(blocks) {
        Some(end) if end <= num_blocks => Ok(()),
        _ => Err(StorageError::OutOfRange { lba, blocks }),
    }
}
