//! A fault-injecting [`BlockStore`] for tests: wraps any store and fails chosen operations on
//! demand (EIO on read, on write or on flush, short writes, ENOSPC, or everything after N
//! operations). Faults are switched at run time through a [`FaultControl`] shared with the test.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::{Allocation, BlockStore, IoOrigin, StorageError};

/// The switches. All off by default: the store then passes everything through.
#[derive(Debug, Default)]
pub struct FaultControl {
    /// Reads fail with EIO.
    pub read_eio: AtomicBool,
    /// Writes (and unmaps) fail with EIO; nothing is written.
    pub write_eio: AtomicBool,
    /// Writes of more than one block store only the first half of the blocks, then fail with
    /// EIO (a torn write as a device would report it).
    pub short_write: AtomicBool,
    /// Writes (and unmaps) fail with [`StorageError::NoSpace`]; nothing is written.
    pub no_space: AtomicBool,
    /// Flushes fail with EIO.
    pub flush_eio: AtomicBool,
    /// Operations (reads, writes, unmaps, flushes) left before every operation fails with EIO;
    /// `u64::MAX` = never.
    fail_after: AtomicU64,
    /// Operations seen.
    pub ops: AtomicU64,
    /// Faults injected.
    pub injected: AtomicU64,
}

impl FaultControl {
    pub fn new() -> Arc<Self> {
        let c = FaultControl::default();
        c.fail_after.store(u64::MAX, Ordering::SeqCst);
        Arc::new(c)
    }

    /// Let `n` more operations through, then fail every one with EIO until `clear`.
    pub fn fail_after(&self, n: u64) {
        self.fail_after.store(n, Ordering::SeqCst);
    }

    /// Switch every fault off.
    pub fn clear(&self) {
        for f in [
            &self.read_eio,
            &self.write_eio,
            &self.short_write,
            &self.no_space,
            &self.flush_eio,
        ] {
            f.store(false, Ordering::SeqCst);
        }
        self.fail_after.store(u64::MAX, Ordering::SeqCst);
    }

    pub fn set(flag: &AtomicBool, on: bool) {
        flag.store(on, Ordering::SeqCst);
    }

    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// Count one operation; true if the fail-after budget is used up.
    fn spent(&self) -> bool {
        self.ops.fetch_add(1, Ordering::SeqCst);
        self.fail_after
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                u64::MAX | 0 => None,
                n => Some(n - 1),
            })
            .is_err_and(|n| n == 0)
    }

    fn eio(&self, what: &str) -> StorageError {
        self.injected.fetch_add(1, Ordering::SeqCst);
        tracing::debug!("injected fault: EIO on {what}");
        StorageError::Io(std::io::Error::from_raw_os_error(libc::EIO))
    }
}

/// A [`BlockStore`] that fails on demand. Allocation queries are never failed (they are
/// metadata, answered by the inner store).
pub struct FaultyStore {
    inner: Arc<dyn BlockStore>,
    control: Arc<FaultControl>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn BlockStore>) -> (Self, Arc<FaultControl>) {
        let control = FaultControl::new();
        (
            FaultyStore {
                inner,
                control: control.clone(),
            },
            control,
        )
    }

    pub fn control(&self) -> Arc<FaultControl> {
        self.control.clone()
    }

    fn write_fault(&self) -> Option<StorageError> {
        let c = &self.control;
        if c.spent() || c.write_eio.load(Ordering::SeqCst) {
            return Some(c.eio("write"));
        }
        if c.no_space.load(Ordering::SeqCst) {
            c.injected.fetch_add(1, Ordering::SeqCst);
            return Some(StorageError::NoSpace);
        }
        None
    }
}

impl BlockStore for FaultyStore {
    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }
    fn num_blocks(&self) -> u64 {
        self.inner.num_blocks()
    }
    fn grow(&self, num_blocks: u64) -> Result<(), StorageError> {
        self.inner.grow(num_blocks)
    }
    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        let c = &self.control;
        if c.spent() || c.read_eio.load(Ordering::SeqCst) {
            return Err(c.eio("read"));
        }
        self.inner.read(lba, buf)
    }
    fn write(
        &self,
        origin: IoOrigin,
        lba: u64,
        data: &[u8],
        fua: bool,
    ) -> Result<(), StorageError> {
        if let Some(e) = self.write_fault() {
            return Err(e);
        }
        let bs = self.inner.block_size() as usize;
        let blocks = data.len() / bs.max(1);
        if self.control.short_write.load(Ordering::SeqCst) && blocks > 1 {
            let half = blocks / 2;
            self.inner.write(origin, lba, &data[..half * bs], fua)?;
            return Err(self.control.eio("short write"));
        }
        self.inner.write(origin, lba, data, fua)
    }
    fn unmap(&self, origin: IoOrigin, lba: u64, blocks: u64) -> Result<(), StorageError> {
        if let Some(e) = self.write_fault() {
            return Err(e);
        }
        self.inner.unmap(origin, lba, blocks)
    }
    fn flush(&self) -> Result<(), StorageError> {
        let c = &self.control;
        if c.spent() || c.flush_eio.load(Ordering::SeqCst) {
            return Err(c.eio("flush"));
        }
        self.inner.flush()
    }
    fn allocation(&self, lba: u64, max_blocks: u64) -> Result<(Allocation, u64), StorageError> {
        self.inner.allocation(lba, max_blocks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStore;

    #[test]
    fn switches_and_fail_after() {
        let (s, c) = FaultyStore::new(Arc::new(MemStore::new(64, 512)));
        let o = IoOrigin::default();
        s.write(o, 0, &[1u8; 1024], false).unwrap();
        FaultControl::set(&c.read_eio, true);
        assert!(s.read(0, &mut [0u8; 512]).is_err());
        c.clear();
        FaultControl::set(&c.no_space, true);
        assert!(matches!(
            s.write(o, 0, &[2u8; 512], false),
            Err(StorageError::NoSpace)
        ));
        c.clear();
        FaultControl::set(&c.short_write, true);
        assert!(s.write(o, 0, &[3u8; 2048], false).is_err());
        c.clear();
        let mut b = [0u8; 2048];
        s.read(0, &mut b).unwrap();
        assert_eq!(&b[..1024], &[3u8; 1024][..], "first half written");
        assert_eq!(&b[1024..], &[0u8; 1024][..], "second half not");
        c.fail_after(2);
        s.read(0, &mut b).unwrap();
        s.flush().unwrap();
        assert!(s.read(0, &mut b).is_err());
        assert!(s.flush().is_err());
        c.clear();
        s.read(0, &mut b).unwrap();
        assert_eq!(c.injected(), 5);
    }
}
