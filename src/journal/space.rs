//! Free space on the filesystem that holds a journal. The journal gives its oldest history up
//! before it fills the filesystem: the volume (thin files need space for new blocks) and the
//! partial journals need room to take the writes of today, which matter more than the oldest
//! past.

use std::io;
use std::path::PathBuf;

/// Space of one filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsSpace {
    /// Bytes an unprivileged writer can still allocate.
    pub available: u64,
    pub total: u64,
}

impl FsSpace {
    /// Bytes to free so that `percent` of the filesystem is available again (0 if it is), plus
    /// half as much again so that a journal at the edge is not trimmed on every round.
    pub fn shortfall(&self, percent: u8) -> u64 {
        let want = self.total / 100 * u64::from(percent);
        if self.available >= want {
            0
        } else {
            want - self.available + want / 2
        }
    }
}

/// Where the journal asks how much space is left (a fake in tests).
pub trait SpaceProbe: Send + Sync {
    fn space(&self) -> io::Result<FsSpace>;
}

/// The filesystem holding `path` (statvfs).
pub struct FsProbe(pub PathBuf);

impl SpaceProbe for FsProbe {
    fn space(&self) -> io::Result<FsSpace> {
        let s = fs4::statvfs(&self.0)?;
        Ok(FsSpace {
            available: s.available_space(),
            total: s.total_space(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortfall_frees_past_the_threshold() {
        let s = |available| FsSpace {
            available,
            total: 1000,
        };
        assert_eq!(s(500).shortfall(10), 0);
        assert_eq!(s(100).shortfall(10), 0);
        // 10% = 100 wanted, 40 available: 60 missing plus 50 of slack.
        assert_eq!(s(40).shortfall(10), 110);
        assert_eq!(s(0).shortfall(0), 0);
    }

    #[test]
    fn probe_reads_a_real_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsProbe(dir.path().to_path_buf()).space().unwrap();
        assert!(s.total > 0 && s.available <= s.total, "{s:?}");
        assert!(FsProbe(dir.path().join("missing")).space().is_err());
    }
}
