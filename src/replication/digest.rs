//! Extents, groups of extents, and their SHA-256 digests: how the two sites find out which
//! parts of a volume differ without sending the volume.
//!
//! The volume is cut into extents of `extent_bytes` (the last one may be short), and extents
//! into groups of `group_extents`. The secondary sends one digest per group first; only for
//! groups whose digests differ does it send one digest per extent; only extents whose digests
//! differ are shipped. A group digest is the SHA-256 of its extents' digests, so each side
//! reads its volume once.

use sha2::{Digest as _, Sha256};

use crate::storage::{BlockStore, StorageError};

pub type Digest = [u8; 32];

/// Extent size when nothing else is said.
pub const DEFAULT_EXTENT_BYTES: u32 = 64 * 1024;
/// Extents per group.
pub const DEFAULT_GROUP_EXTENTS: u32 = 64;

/// How a volume is cut into extents and groups. Both sites must agree on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub block_size: u32,
    pub num_blocks: u64,
    pub extent_bytes: u32,
    pub group_extents: u32,
}

impl Layout {
    pub fn new(store: &dyn BlockStore, extent_bytes: u32, group_extents: u32) -> Layout {
        Layout {
            block_size: store.block_size(),
            num_blocks: store.num_blocks(),
            extent_bytes,
            group_extents,
        }
    }

    /// Is the layout usable (extents a whole number of blocks, nothing zero)?
    pub fn check(&self) -> Result<(), String> {
        if self.block_size == 0
            || self.extent_bytes == 0
            || self.extent_bytes % self.block_size != 0
            || self.group_extents == 0
            || self.extent_bytes > super::wire::MAX_DATA / 2
        {
            return Err(format!(
                "extent size {} does not fit block size {}",
                self.extent_bytes, self.block_size
            ));
        }
        Ok(())
    }

    pub fn extent_blocks(&self) -> u64 {
        u64::from(self.extent_bytes / self.block_size)
    }

    pub fn extents(&self) -> u64 {
        self.num_blocks.div_ceil(self.extent_blocks())
    }

    pub fn groups(&self) -> u64 {
        self.extents().div_ceil(u64::from(self.group_extents))
    }

    /// First block and block count of extent `e`.
    pub fn extent_range(&self, e: u64) -> (u64, u64) {
        let lba = e * self.extent_blocks();
        (lba, self.extent_blocks().min(self.num_blocks - lba))
    }

    pub fn extent_len(&self, e: u64) -> usize {
        (self.extent_range(e).1 * u64::from(self.block_size)) as usize
    }

    /// The extents of group `g`.
    pub fn group(&self, g: u64) -> std::ops::Range<u64> {
        let n = u64::from(self.group_extents);
        g * n..((g + 1) * n).min(self.extents())
    }
}

pub fn read_extent(store: &dyn BlockStore, l: &Layout, e: u64) -> Result<Vec<u8>, StorageError> {
    let (lba, _) = l.extent_range(e);
    let mut buf = vec![0u8; l.extent_len(e)];
    store.read(lba, &mut buf)?;
    Ok(buf)
}

pub fn digest(data: &[u8]) -> Digest {
    Sha256::digest(data).into()
}

/// The digest of every extent of the volume, in order. Reads the whole volume.
pub fn extent_digests(store: &dyn BlockStore, l: &Layout) -> Result<Vec<Digest>, StorageError> {
    (0..l.extents())
        .map(|e| read_extent(store, l, e).map(|d| digest(&d)))
        .collect()
}

/// Group digests from the extent digests.
pub fn group_digests(l: &Layout, extents: &[Digest]) -> Vec<Digest> {
    (0..l.groups())
        .map(|g| {
            let mut h = Sha256::new();
            for e in l.group(g) {
                h.update(extents[e as usize]);
            }
            h.finalize().into()
        })
        .collect()
}

/// Digests packed for the wire (32 bytes each).
pub fn pack(digests: &[Digest]) -> Vec<u8> {
    digests.iter().flat_map(|d| d.iter().copied()).collect()
}

pub fn unpack(data: &[u8], count: u64) -> Result<Vec<Digest>, String> {
    if data.len() as u64 != count * 32 {
        return Err(format!(
            "expected {count} digests, got {} bytes",
            data.len()
        ));
    }
    Ok(data
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32 bytes"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{IoOrigin, MemStore};

    #[test]
    fn groups_narrow_differences_down_to_extents() {
        let a = MemStore::new(1000, 512);
        let b = MemStore::new(1000, 512);
        let l = Layout::new(&a, 4096, 4);
        assert_eq!(l.extents(), 125);
        assert_eq!(l.groups(), 32);
        assert_eq!(l.extent_range(124), (992, 8));
        b.write(IoOrigin::default(), 999, &[1u8; 512], false)
            .expect("write");
        let (da, db) = (
            extent_digests(&a, &l).expect("read"),
            extent_digests(&b, &l).expect("read"),
        );
        let (ga, gb) = (group_digests(&l, &da), group_digests(&l, &db));
        let groups: Vec<usize> = (0..ga.len()).filter(|&g| ga[g] != gb[g]).collect();
        assert_eq!(groups, vec![31]);
        let extents: Vec<usize> = (0..da.len()).filter(|&e| da[e] != db[e]).collect();
        assert_eq!(extents, vec![124]);
        assert_eq!(unpack(&pack(&da), 125).expect("unpack"), da);
    }
}
