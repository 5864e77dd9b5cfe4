//! A private writable overlay over a read-only store: writes land in memory and are discarded
//! with the overlay, so a "test failover" view can be written without touching the volume or
//! its journal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Allocation, BlockStore, IoOrigin, StorageError};

/// Written blocks by LBA; `None` = unmapped in the overlay (reads zeros).
pub struct OverlayStore {
    base: Arc<dyn BlockStore>,
    blocks: Mutex<HashMap<u64, Option<Box<[u8]>>>>,
    /// The most bytes the overlay may hold; beyond it writes fail with NoSpace.
    limit: u64,
}

impl OverlayStore {
    pub fn new(base: Arc<dyn BlockStore>, limit: u64) -> OverlayStore {
        OverlayStore {
            base,
            blocks: Mutex::new(HashMap::new()),
            limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Option<Box<[u8]>>>> {
        self.blocks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self, lba: u64, blocks: u64) -> Result<(), StorageError> {
        super::check_range(lba, blocks, self.base.num_blocks())
    }

    /// Bytes the overlay holds.
    pub fn bytes(&self) -> u64 {
        self.lock().len() as u64 * u64::from(self.base.block_size())
    }
}

impl BlockStore for OverlayStore {
    fn block_size(&self) -> u32 {
        self.base.block_size()
    }

    fn num_blocks(&self) -> u64 {
        self.base.num_blocks()
    }

    fn read_only(&self) -> bool {
        false
    }

    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        let bs = self.block_size() as usize;
        let blocks = (buf.len() / bs) as u64;
        self.check(lba, blocks)?;
        self.base.read(lba, buf)?;
        let map = self.lock();
        if map.is_empty() {
            return Ok(());
        }
        for (i, dst) in buf.chunks_exact_mut(bs).enumerate() {
            match map.get(&(lba + i as u64)) {
                Some(Some(b)) => dst.copy_from_slice(b),
                Some(None) => dst.fill(0),
                None => {}
            }
        }
        Ok(())
    }

    fn write(
        &self,
        _origin: IoOrigin,
        lba: u64,
        data: &[u8],
        _fua: bool,
    ) -> Result<(), StorageError> {
        let bs = self.block_size() as usize;
        let blocks = (data.len() / bs) as u64;
        self.check(lba, blocks)?;
        let mut map = self.lock();
        let new_blocks = (0..blocks)
            .filter(|i| !map.contains_key(&(lba + i)))
            .count() as u64;
        if (map.len() as u64 + new_blocks) * bs as u64 > self.limit {
            return Err(StorageError::NoSpace);
        }
        for (i, src) in data.chunks_exact(bs).enumerate() {
            map.insert(lba + i as u64, Some(src.into()));
        }
        Ok(())
    }

    fn unmap(&self, _origin: IoOrigin, lba: u64, blocks: u64) -> Result<(), StorageError> {
        self.check(lba, blocks)?;
        let mut map = self.lock();
        for b in lba..lba + blocks {
            map.insert(b, None);
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn allocation(&self, lba: u64, max_blocks: u64) -> Result<(Allocation, u64), StorageError> {
        let map = self.lock();
        match map.get(&lba) {
            Some(Some(_)) => Ok((Allocation::Mapped, 1)),
            Some(None) => Ok((Allocation::Deallocated, 1)),
            None => {
                let (a, n) = self.base.allocation(lba, max_blocks)?;
                // Stop the run at the first block the overlay changed.
                let run = (1..n).find(|i| map.contains_key(&(lba + i))).unwrap_or(n);
                Ok((a, run))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStore;

    #[test]
    fn overlay_writes_never_reach_the_base() {
        let base = MemStore::new(16, 512);
        base.write(IoOrigin::default(), 0, &[7u8; 512 * 16], false)
            .expect("seed");
        let base: Arc<dyn BlockStore> = Arc::new(base);
        let o = OverlayStore::new(base.clone(), 4 * 512);
        o.write(IoOrigin::default(), 2, &[9u8; 1024], false)
            .expect("write");
        o.unmap(IoOrigin::default(), 5, 1).expect("unmap");
        let mut buf = vec![0u8; 512 * 16];
        o.read(0, &mut buf).expect("read");
        assert_eq!(buf[2 * 512], 9);
        assert_eq!(buf[3 * 512], 9);
        assert_eq!(buf[5 * 512], 0);
        assert_eq!(buf[6 * 512], 7);
        base.read(0, &mut buf).expect("base read");
        assert!(buf.iter().all(|b| *b == 7), "the base is untouched");
        assert!(matches!(
            o.write(IoOrigin::default(), 8, &[1u8; 1024], false),
            Err(StorageError::NoSpace)
        ));
        assert!(matches!(
            o.read(15, &mut vec![0u8; 1024]),
            Err(StorageError::OutOfRange { .. })
        ));
    }
}
