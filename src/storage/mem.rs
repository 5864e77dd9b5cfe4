//! In-memory block store, for tests and scratch volumes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use super::{check_range, Allocation, BlockStore, IoOrigin, StorageError};

/// A volume held in memory. Unmapped blocks read as zeros; allocation is tracked per block.
pub struct MemStore {
    block_size: u32,
    num_blocks: AtomicU64,
    read_only: bool,
    inner: RwLock<Inner>,
}

struct Inner {
    data: Vec<u8>,
    mapped: Vec<bool>,
}

impl MemStore {
    /// A zero-filled, fully deallocated volume of `num_blocks` blocks of `block_size` bytes.
    pub fn new(num_blocks: u64, block_size: u32) -> Self {
        let len = (num_blocks as usize).saturating_mul(block_size as usize);
        MemStore {
            block_size,
            num_blocks: AtomicU64::new(num_blocks),
            read_only: false,
            inner: RwLock::new(Inner {
                data: vec![0; len],
                mapped: vec![false; num_blocks as usize],
            }),
        }
    }

    /// Same store, but refusing writes.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    fn span(&self, lba: u64, len: usize) -> Result<(usize, usize), StorageError> {
        let bs = self.block_size as usize;
        if bs == 0 || len % bs != 0 {
            return Err(StorageError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "length is not a whole number of blocks",
            )));
        }
        let blocks = (len / bs) as u64;
        check_range(lba, blocks, self.num_blocks())?;
        let start = lba as usize * bs;
        Ok((start, start + len))
    }
}

impl BlockStore for MemStore {
    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn num_blocks(&self) -> u64 {
        self.num_blocks.load(Ordering::Acquire)
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        let (s, e) = self.span(lba, buf.len())?;
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        buf.copy_from_slice(&inner.data[s..e]);
        Ok(())
    }

    fn write(
        &self,
        _origin: IoOrigin,
        lba: u64,
        data: &[u8],
        _fua: bool,
    ) -> Result<(), StorageError> {
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        let (s, e) = self.span(lba, data.len())?;
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.data[s..e].copy_from_slice(data);
        let blocks = data.len() / self.block_size as usize;
        for m in &mut inner.mapped[lba as usize..lba as usize + blocks] {
            *m = true;
        }
        Ok(())
    }

    fn unmap(&self, _origin: IoOrigin, lba: u64, blocks: u64) -> Result<(), StorageError> {
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        check_range(lba, blocks, self.num_blocks())?;
        let bs = self.block_size as usize;
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let (s, e) = (lba as usize * bs, (lba + blocks) as usize * bs);
        inner.data[s..e].fill(0);
        for m in &mut inner.mapped[lba as usize..(lba + blocks) as usize] {
            *m = false;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn allocation(&self, lba: u64, max_blocks: u64) -> Result<(Allocation, u64), StorageError> {
        if lba >= self.num_blocks() {
            return Err(StorageError::OutOfRange { lba, blocks: 1 });
        }
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let first = inner.mapped[lba as usize];
        let end = lba.saturating_add(max_blocks.max(1)).min(self.num_blocks());
        let run = inner.mapped[lba as usize..end as usize]
            .iter()
            .take_while(|&&m| m == first)
            .count() as u64;
        let status = if first {
            Allocation::Mapped
        } else {
            Allocation::Deallocated
        };
        Ok((status, run))
    }

    fn grow(&self, num_blocks: u64) -> Result<(), StorageError> {
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        super::check_growth(self.num_blocks(), num_blocks)?;
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let len = (num_blocks as usize).saturating_mul(self.block_size as usize);
        inner.data.resize(len, 0);
        inner.mapped.resize(num_blocks as usize, false);
        self.num_blocks.store(num_blocks, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_unmap() {
        let s = MemStore::new(16, 512);
        let o = IoOrigin::default();
        s.write(o, 2, &[7u8; 1024], false).unwrap();
        let mut b = vec![0u8; 512];
        s.read(3, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 7));
        assert_eq!(s.allocation(0, 100).unwrap(), (Allocation::Deallocated, 2));
        assert_eq!(s.allocation(2, 100).unwrap(), (Allocation::Mapped, 2));
        s.unmap(o, 3, 1).unwrap();
        s.read(3, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 0));
        assert!(s.write(o, 15, &[0u8; 1024], false).is_err());
    }
}
