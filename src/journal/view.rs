//! Point-in-time views: the volume as it was at a retained point, read-only.
//!
//! Block `b` at time `T` is the old data of the first journal entry for `b`'s chunk stamped
//! after `T` (that entry saved what `T` saw), else the current content. Nothing is built when
//! a view is created; each read looks its chunks up (one ordered walk of the index per read),
//! and the answer stays right while new writes arrive, since they are all stamped after `T`.

use super::error::Result;
use super::store::{ChunkAt, Shared};
use crate::storage::{Allocation, BlockStore, IoOrigin, StorageError};
use std::sync::Arc;

pub struct JournalView {
    shared: Arc<Shared>,
    ts: u64,
    /// The volume's size at `ts`: a view keeps the size the volume had then.
    num_blocks: u64,
}

impl JournalView {
    pub(crate) fn new(shared: Arc<Shared>, ts: u64) -> Self {
        let num_blocks = shared.sizes.at(ts).min(shared.num_blocks());
        JournalView {
            shared,
            ts,
            num_blocks,
        }
    }

    /// The retained point this view reads (the requested time, or the start of its merged
    /// window).
    pub fn point(&self) -> u64 {
        self.ts
    }

    /// Ports whose journals were invalid between this point and now (from the recorded
    /// invalid intervals and from the port validity bit vectors of merged windows ending after
    /// the point): the view may be incomplete for blocks they wrote.
    pub fn invalid_ports(&self) -> Result<Vec<u64>> {
        self.shared.invalid_ports(self.ts, u64::MAX)
    }

    /// The view is guaranteed complete: no port was invalid from its point on.
    pub fn complete(&self) -> Result<bool> {
        Ok(self.invalid_ports()?.is_empty())
    }

    pub(crate) fn chunk(&self, c: u64) -> Result<ChunkAt> {
        self.shared.chunk_at(c, self.ts)
    }
}

impl BlockStore for JournalView {
    fn block_size(&self) -> u32 {
        self.shared.block_size as u32
    }
    fn num_blocks(&self) -> u64 {
        self.num_blocks
    }
    fn read_only(&self) -> bool {
        true
    }
    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        let s = &self.shared;
        let bs = s.block_size;
        let blocks = (buf.len() / bs) as u64;
        if lba.checked_add(blocks).is_none_or(|e| e > self.num_blocks) {
            return Err(StorageError::OutOfRange { lba, blocks });
        }
        // At most this many chunks per batched lookup.
        const BATCH: u64 = 256;
        let mut b = lba;
        while b < lba + blocks {
            let end = (lba + blocks).min((b / s.bpc + BATCH) * s.bpc);
            let dst = &mut buf[((b - lba) as usize) * bs..((end - lba) as usize) * bs];
            s.read_at(b, dst, self.ts)?;
            b = end;
        }
        Ok(())
    }
    fn write(&self, _: IoOrigin, _: u64, _: &[u8], _: bool) -> Result<(), StorageError> {
        Err(StorageError::ReadOnly)
    }
    fn unmap(&self, _: IoOrigin, _: u64, _: u64) -> Result<(), StorageError> {
        Err(StorageError::ReadOnly)
    }
    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Per chunk: a chunk that was never written then is deallocated, else mapped.
    fn allocation(&self, lba: u64, max_blocks: u64) -> Result<(Allocation, u64), StorageError> {
        let s = &self.shared;
        if lba >= self.num_blocks {
            return Err(StorageError::OutOfRange {
                lba,
                blocks: max_blocks,
            });
        }
        let max = max_blocks.max(1).min(self.num_blocks - lba);
        let status = |c: u64| -> Result<Allocation, StorageError> {
            Ok(match self.chunk(c)? {
                ChunkAt::Unallocated => Allocation::Deallocated,
                ChunkAt::Data(_) => Allocation::Mapped,
            })
        };
        let c = lba / s.bpc;
        let first = status(c)?;
        let mut end = (c + 1) * s.bpc;
        while end < lba + max && status(end / s.bpc)? == first {
            end += s.bpc;
        }
        Ok((first, end.min(lba + max) - lba))
    }
}
