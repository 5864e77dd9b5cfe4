//! The dirty cache: new data accepted from initiators but not yet applied to the volume, kept
//! until the journal entries holding the data it overwrote are durable.

use crate::storage::{BlockStore, IoOrigin, StorageError};
use bytes::Bytes;
use smallvec::SmallVec;
use std::collections::BTreeMap;

/// Per-block states of a chunk, inline up to 8 blocks (a 4 KiB chunk of 512-byte blocks).
pub(crate) type BlockStates = SmallVec<[u8; 8]>;
/// Journal entries a chunk waits for, inline for the usual single writer.
pub(crate) type Deps = SmallVec<[(u64, u64); 1]>;

/// Per-block state inside a dirty chunk.
pub(crate) const CLEAN: u8 = 0;
pub(crate) const DATA: u8 = 1;
pub(crate) const UNMAPPED: u8 = 2;

/// A dirty chunk's content: a buffer of its own, or the chunk's piece of the data a large write
/// brought (`whole[off..off + len]`), shared with the command rather than copied. A run of
/// chunks that one write covered goes to the volume as one slice of that data.
#[derive(Clone)]
pub(crate) enum ChunkData {
    Owned(Vec<u8>),
    Shared {
        whole: Bytes,
        off: usize,
        len: usize,
    },
}

impl ChunkData {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            ChunkData::Owned(v) => v,
            ChunkData::Shared { whole, off, len } => &whole[*off..*off + *len],
        }
    }

    /// The content to change in place (a shared piece is copied first).
    pub fn make_mut(&mut self) -> &mut [u8] {
        if let ChunkData::Shared { whole, off, len } = self {
            let own = whole[*off..*off + *len].to_vec();
            *self = ChunkData::Owned(own);
        }
        match self {
            ChunkData::Owned(v) => v,
            ChunkData::Shared { .. } => &mut [],
        }
    }
}

pub(crate) struct DirtyChunk {
    /// Full current content of the chunk.
    pub data: ChunkData,
    /// One of CLEAN / DATA / UNMAPPED per block.
    pub state: BlockStates,
    /// Journal entries that must be durable before applying: (port, highest seq).
    pub deps: Deps,
}

impl DirtyChunk {
    pub fn add_dep(&mut self, port: u64, seq: u64) {
        match self.deps.iter_mut().find(|d| d.0 == port) {
            Some(d) => d.1 = d.1.max(seq),
            None => self.deps.push((port, seq)),
        }
    }

    /// Write the changed blocks to the volume: runs of data are written, runs of unmapped
    /// blocks unmapped, untouched blocks skipped.
    pub fn apply(
        &self,
        inner: &dyn BlockStore,
        chunk_lba: u64,
        block_size: usize,
    ) -> Result<(), StorageError> {
        let n = self.state.len();
        let mut i = 0;
        while i < n {
            let s = self.state[i];
            let mut j = i + 1;
            while j < n && self.state[j] == s {
                j += 1;
            }
            let lba = chunk_lba + i as u64;
            match s {
                DATA => inner.write(
                    IoOrigin::default(),
                    lba,
                    &self.data.as_slice()[i * block_size..j * block_size],
                    false,
                )?,
                UNMAPPED => inner.unmap(IoOrigin::default(), lba, (j - i) as u64)?,
                _ => {}
            }
            i = j;
        }
        Ok(())
    }
}

/// Writes of at least this many bytes leave their data shared in the dirty cache (smaller ones
/// are copied, so a small write does not pin a large receive buffer).
pub(crate) const SHARE_MIN: usize = 64 * 1024;

#[derive(Default)]
pub(crate) struct DirtyCache {
    pub chunks: BTreeMap<u64, DirtyChunk>,
    pub bytes: u64,
}
