//! A volume backed by a regular file (sparse, thin) or a block device.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{check_range, Allocation, BlockStore, IoOrigin, StorageError};

/// Blocks stored at `lba * block_size` in a file or block device.
pub struct FileStore {
    file: File,
    block_size: u32,
    /// Grows with `grow`; never shrinks.
    num_blocks: AtomicU64,
    read_only: bool,
    block_device: bool,
    /// The file may have holes. False for a file found fully allocated at open (its blocks
    /// cover its length) until something is unmapped: then `allocation` needs no `lseek`
    /// (two syscalls per journaled write that also contend for the inode lock with the
    /// volume's writes; on tmpfs each walks the whole page cache of the file).
    may_have_holes: AtomicBool,
}

fn invalid(msg: &str) -> StorageError {
    StorageError::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        msg.to_string(),
    ))
}

fn check_block_size(block_size: u32) -> Result<(), StorageError> {
    if block_size < 512 || !block_size.is_power_of_two() || block_size > 65536 {
        return Err(invalid(
            "block size must be a power of two between 512 and 65536",
        ));
    }
    Ok(())
}

impl FileStore {
    /// Open an existing file or block device. Its size (rounded down to whole blocks) is the
    /// volume size.
    pub fn open(
        path: impl AsRef<Path>,
        block_size: u32,
        read_only: bool,
    ) -> Result<Self, StorageError> {
        check_block_size(block_size)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path.as_ref())?;
        let meta = file.metadata()?;
        let block_device = meta.file_type().is_block_device();
        let size = if block_device {
            file.seek(SeekFrom::End(0))?
        } else {
            meta.len()
        };
        // Allocated blocks (512-byte units) covering the whole length: no holes. A file with a
        // hole smaller than its own metadata blocks would pass too; its hole then reads as
        // mapped zeros, which is what it holds.
        let full = std::os::unix::fs::MetadataExt::blocks(&meta).saturating_mul(512) >= size;
        Ok(FileStore {
            file,
            block_size,
            num_blocks: AtomicU64::new(size / block_size as u64),
            read_only,
            block_device,
            may_have_holes: AtomicBool::new(!full),
        })
    }

    /// Create (or truncate) a sparse file of `size_bytes` (rounded down to whole blocks).
    pub fn create(
        path: impl AsRef<Path>,
        size_bytes: u64,
        block_size: u32,
    ) -> Result<Self, StorageError> {
        check_block_size(block_size)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path.as_ref())?;
        let num_blocks = size_bytes / block_size as u64;
        file.set_len(num_blocks * block_size as u64)?;
        Ok(FileStore {
            file,
            block_size,
            num_blocks: AtomicU64::new(num_blocks),
            read_only: false,
            block_device: false,
            may_have_holes: AtomicBool::new(true),
        })
    }

    fn byte_span(&self, lba: u64, len: usize) -> Result<u64, StorageError> {
        let bs = self.block_size as usize;
        if len % bs != 0 {
            return Err(invalid("length is not a whole number of blocks"));
        }
        check_range(lba, (len / bs) as u64, self.num_blocks())?;
        Ok(lba * self.block_size as u64)
    }

    /// `lseek(fd, offset, whence)`; `None` when there is no such offset (ENXIO).
    fn seek_data_hole(
        &self,
        offset: u64,
        whence: libc::c_int,
    ) -> Result<Option<u64>, StorageError> {
        // SAFETY: plain syscall on a file descriptor we own; no memory is passed.
        let r = unsafe { libc::lseek(self.file.as_raw_fd(), offset as libc::off_t, whence) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                return Ok(None);
            }
            return Err(e.into());
        }
        Ok(Some(r as u64))
    }

    fn zero_fill(&self, lba: u64, blocks: u64) -> Result<(), StorageError> {
        let bs = self.block_size as u64;
        let chunk_blocks = (1 << 20) / bs;
        let zeros = vec![0u8; (chunk_blocks * bs) as usize];
        let mut done = 0;
        while done < blocks {
            let n = (blocks - done).min(chunk_blocks);
            self.file
                .write_all_at(&zeros[..(n * bs) as usize], (lba + done) * bs)?;
            done += n;
        }
        Ok(())
    }
}

impl BlockStore for FileStore {
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
        let off = self.byte_span(lba, buf.len())?;
        self.file.read_exact_at(buf, off)?;
        Ok(())
    }

    fn write(
        &self,
        _origin: IoOrigin,
        lba: u64,
        data: &[u8],
        fua: bool,
    ) -> Result<(), StorageError> {
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        let off = self.byte_span(lba, data.len())?;
        self.file.write_all_at(data, off).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOSPC) {
                StorageError::NoSpace
            } else {
                e.into()
            }
        })?;
        if fua {
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn unmap(&self, _origin: IoOrigin, lba: u64, blocks: u64) -> Result<(), StorageError> {
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        check_range(lba, blocks, self.num_blocks())?;
        if blocks == 0 {
            return Ok(());
        }
        let bs = self.block_size as u64;
        self.may_have_holes.store(true, Ordering::SeqCst);
        // SAFETY: plain syscall on a file descriptor we own; no memory is passed.
        let r = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                (lba * bs) as libc::off_t,
                (blocks * bs) as libc::off_t,
            )
        };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                // No hole punching here: deallocated blocks must still read as zeros.
                Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) => {
                    return self.zero_fill(lba, blocks)
                }
                _ => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.file.sync_data()?;
        Ok(())
    }

    fn allocation(&self, lba: u64, max_blocks: u64) -> Result<(Allocation, u64), StorageError> {
        let num_blocks = self.num_blocks();
        if lba >= num_blocks {
            return Err(StorageError::OutOfRange { lba, blocks: 1 });
        }
        let bs = self.block_size as u64;
        let end = lba.saturating_add(max_blocks.max(1)).min(num_blocks);
        let limit = end - lba;
        if self.block_device || !self.may_have_holes.load(Ordering::SeqCst) {
            return Ok((Allocation::Mapped, limit));
        }
        let off = lba * bs;
        let data = match self.seek_data_hole(off, libc::SEEK_DATA) {
            Ok(d) => d,
            // Filesystem without SEEK_DATA support: everything counts as mapped.
            Err(_) => return Ok((Allocation::Mapped, limit)),
        };
        match data {
            None => Ok((Allocation::Deallocated, limit)),
            Some(d) if d / bs > lba => Ok((Allocation::Deallocated, (d / bs - lba).min(limit))),
            Some(d) => {
                // Data in the block at `lba`: mapped up to the next hole (partial blocks count
                // as mapped).
                let hole = self
                    .seek_data_hole(d.max(off), libc::SEEK_HOLE)?
                    .unwrap_or(num_blocks * bs);
                let hole_block = hole.div_ceil(bs).max(lba + 1);
                Ok((Allocation::Mapped, (hole_block - lba).min(limit)))
            }
        }
    }

    /// A regular file is extended (sparse, so the new blocks are unallocated) and its new
    /// length made durable. A block device must have been grown first with its own tools; this
    /// then checks it is big enough.
    fn grow(&self, num_blocks: u64) -> Result<(), StorageError> {
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        super::check_growth(self.num_blocks(), num_blocks)?;
        let bs = u64::from(self.block_size);
        let bytes = num_blocks
            .checked_mul(bs)
            .ok_or_else(|| invalid("size overflows"))?;
        if self.block_device {
            let have = (&self.file).seek(SeekFrom::End(0))?;
            if have < bytes {
                return Err(StorageError::CannotResize(format!(
                    "the block device holds {have} bytes, fewer than the {bytes} asked for: grow the device first"
                )));
            }
        } else {
            self.file.set_len(bytes)?;
            self.file.sync_all()?;
            self.may_have_holes.store(true, Ordering::SeqCst);
        }
        self.num_blocks.store(num_blocks, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_sparse_and_refuses_to_shrink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v");
        let s = FileStore::create(&path, 8 * 4096, 4096).unwrap();
        s.write(IoOrigin::default(), 7, &[7u8; 4096], false)
            .unwrap();
        assert!(matches!(
            s.read(8, &mut [0u8; 4096]),
            Err(StorageError::OutOfRange { .. })
        ));
        s.grow(16).unwrap();
        assert_eq!(s.num_blocks(), 16);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 16 * 4096);
        let mut b = [1u8; 4096];
        s.read(15, &mut b).unwrap();
        assert_eq!(b, [0u8; 4096]);
        s.read(7, &mut b).unwrap();
        assert_eq!(b, [7u8; 4096]);
        assert_eq!(s.allocation(8, 8).unwrap(), (Allocation::Deallocated, 8));
        s.write(IoOrigin::default(), 15, &[9u8; 4096], false)
            .unwrap();
        assert!(matches!(s.grow(10), Err(StorageError::CannotResize(_))));
        assert_eq!(s.num_blocks(), 16);
        let reopened = FileStore::open(&path, 4096, false).unwrap();
        assert_eq!(reopened.num_blocks(), 16);
    }

    #[test]
    fn a_fully_written_file_is_mapped_until_something_is_unmapped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vol");
        let bs = 4096u32;
        std::fs::write(&path, vec![7u8; 256 * bs as usize]).unwrap();
        let s = FileStore::open(&path, bs, false).unwrap();
        assert!(!s.may_have_holes.load(Ordering::SeqCst));
        assert_eq!(s.allocation(0, 1024).unwrap(), (Allocation::Mapped, 256));
        s.unmap(IoOrigin::default(), 64, 32).unwrap();
        assert!(s.may_have_holes.load(Ordering::SeqCst));
        // (The test directory's filesystem punches holes: ext4, xfs, btrfs and tmpfs do.)
        assert_eq!(s.allocation(0, 1024).unwrap(), (Allocation::Mapped, 64));
        assert_eq!(
            s.allocation(64, 1024).unwrap(),
            (Allocation::Deallocated, 32)
        );
        assert_eq!(s.allocation(96, 1024).unwrap(), (Allocation::Mapped, 160));
        let mut buf = vec![1u8; 32 * bs as usize];
        s.read(64, &mut buf).unwrap();
        assert!(buf.iter().all(|b| *b == 0));
        // Reopened with the hole: found at once.
        drop(s);
        let s = FileStore::open(&path, bs, false).unwrap();
        assert!(s.may_have_holes.load(Ordering::SeqCst));
        assert_eq!(s.allocation(64, 1).unwrap(), (Allocation::Deallocated, 1));
    }

    #[test]
    fn sparse_file_allocation_and_punch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vol");
        let bs = 4096u32;
        let s = FileStore::create(&path, 1024 * bs as u64, bs).unwrap();
        assert_eq!(s.num_blocks(), 1024);
        let o = IoOrigin::default();
        let (st, n) = s.allocation(0, 2048).unwrap();
        assert_eq!((st, n), (Allocation::Deallocated, 1024));
        s.write(o, 256, &vec![1u8; 16 * bs as usize], true).unwrap();
        let (st, n) = s.allocation(0, 2048).unwrap();
        assert_eq!(st, Allocation::Deallocated);
        assert_eq!(n, 256);
        let (st, n) = s.allocation(256, 2048).unwrap();
        assert_eq!(st, Allocation::Mapped);
        assert!(n >= 16);
        s.unmap(o, 256, 16).unwrap();
        let mut b = vec![9u8; bs as usize];
        s.read(260, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 0));
        let (st, _) = s.allocation(256, 16).unwrap();
        assert_eq!(st, Allocation::Deallocated);
        drop(s);
        let r = FileStore::open(&path, bs, true).unwrap();
        assert!(r.read_only());
        assert!(r.write(o, 0, &vec![0u8; bs as usize], false).is_err());
        assert!(r.read(1023, &mut b).is_ok());
        assert!(r.read(1024, &mut b).is_err());
    }
}
