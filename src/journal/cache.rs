//! The dirty cache: new data accepted from initiators but not yet applied to the volume, kept
//! until the journal entries holding the data it overwrote are durable.

use crate::storage::{BlockStore, IoOrigin, StorageError};
use bytes::Bytes;
use smallvec::SmallVec;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

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
    /// Every journal entry this chunk waits for is durable (`synced`: the highest durable seq
    /// per port).
    pub fn ready(&self, synced: &HashMap<u64, u64>) -> bool {
        self.deps
            .iter()
            .all(|(port, seq)| synced.get(port).is_some_and(|s| s >= seq))
    }

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
    /// Per port, in seq order: the writes whose chunks wait for that port's entries, as
    /// `(seq, first chunk, last chunk)`, so that the chunks that may have become ready are
    /// found without a walk over the whole cache.
    waiting: HashMap<u64, VecDeque<(u64, u64, u64)>>,
    /// Chunks taken from `waiting` whose application failed: looked at again next time.
    retry: BTreeSet<u64>,
}

impl DirtyCache {
    /// Chunks `c0..=c1` now wait for entry `seq` of `port` too (their `add_dep`).
    pub fn wait_for(&mut self, port: u64, seq: u64, c0: u64, c1: u64) {
        self.waiting
            .entry(port)
            .or_default()
            .push_back((seq, c0, c1));
    }

    /// The chunks whose entries are all durable (`synced`: the highest durable seq per
    /// port), in ascending order. The writes they came from leave `waiting`: a chunk that is
    /// not ready yet still waits for another entry, which brings it back once durable.
    pub fn take_ready(&mut self, synced: &HashMap<u64, u64>) -> Vec<u64> {
        let mut maybe = std::mem::take(&mut self.retry);
        for (port, writes) in self.waiting.iter_mut() {
            let durable = synced.get(port).copied().unwrap_or(0);
            while let Some(&(seq, c0, c1)) = writes.front() {
                if seq > durable {
                    break;
                }
                writes.pop_front();
                maybe.extend(c0..=c1);
            }
        }
        maybe
            .into_iter()
            .filter(|c| self.chunks.get(c).is_some_and(|d| d.ready(synced)))
            .collect()
    }

    /// Chunks taken by `take_ready` that could not be applied: offered again next time.
    pub fn retry(&mut self, chunks: impl IntoIterator<Item = u64>) {
        self.retry.extend(chunks);
    }

    /// Forget everything (a crash in tests).
    #[cfg(test)]
    pub fn clear(&mut self) {
        *self = DirtyCache::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(deps: &[(u64, u64)]) -> DirtyChunk {
        DirtyChunk {
            data: ChunkData::Owned(vec![0; 4096]),
            state: smallvec::smallvec![DATA; 8],
            deps: deps.iter().copied().collect(),
        }
    }

    /// Writes `(port, seq, c0, c1)` into `cache`, as the write path records them.
    fn write(cache: &mut DirtyCache, port: u64, seq: u64, c0: u64, c1: u64) {
        for c in c0..=c1 {
            cache
                .chunks
                .entry(c)
                .or_insert_with(|| chunk(&[]))
                .add_dep(port, seq);
        }
        cache.wait_for(port, seq, c0, c1);
    }

    fn synced(pairs: &[(u64, u64)]) -> HashMap<u64, u64> {
        pairs.iter().copied().collect()
    }

    /// A chunk is ready once every port it waits for has its entry durable, whichever port
    /// gets there last; a chunk written again meanwhile waits for the new entry.
    #[test]
    fn chunks_are_ready_once_all_their_entries_are_durable() {
        let mut cache = DirtyCache::default();
        write(&mut cache, 1, 1, 0, 3);
        write(&mut cache, 2, 1, 2, 5);
        write(&mut cache, 1, 2, 0, 0);
        assert_eq!(
            cache.take_ready(&synced(&[(1, 0), (2, 0)])),
            Vec::<u64>::new()
        );
        // Port 1's first write durable: chunks 1 (only port 1, seq 1); 0 waits for seq 2 and
        // 2, 3 for port 2.
        assert_eq!(cache.take_ready(&synced(&[(1, 1), (2, 0)])), vec![1]);
        cache.chunks.remove(&1);
        // Port 2 durable: 2..=5 (port 1's seq 1 is durable already).
        assert_eq!(
            cache.take_ready(&synced(&[(1, 1), (2, 1)])),
            vec![2, 3, 4, 5]
        );
        for c in 2..=5 {
            cache.chunks.remove(&c);
        }
        assert_eq!(cache.take_ready(&synced(&[(1, 2), (2, 1)])), vec![0]);
        cache.chunks.remove(&0);
        assert!(cache.chunks.is_empty());
        assert!(cache.take_ready(&synced(&[(1, 9), (2, 9)])).is_empty());
    }

    /// Chunks whose application failed come back with the next call, if still ready.
    #[test]
    fn failed_chunks_are_offered_again() {
        let mut cache = DirtyCache::default();
        write(&mut cache, 1, 1, 10, 12);
        let all = synced(&[(1, 1)]);
        assert_eq!(cache.take_ready(&all), vec![10, 11, 12]);
        assert!(cache.take_ready(&all).is_empty(), "taken once");
        cache.retry([11, 12]);
        cache.chunks.remove(&12);
        assert_eq!(
            cache.take_ready(&all),
            vec![11],
            "a chunk applied since is gone"
        );
    }
}
