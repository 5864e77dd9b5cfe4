//! Per-volume journal configuration.

use super::error::JournalError;
use super::retention::{HumanDuration, RetentionPolicy};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalConfig {
    /// Journaling on for this volume; when off the volume is used without a `JournaledStore`.
    pub enabled: bool,
    /// Bytes of old data a port's partial journal holds before it is flushed into the primary.
    pub partial_capacity: u64,
    /// Bytes of old data all ports' partial journals of the volume may hold together: past
    /// it, the ports holding the most are flushed into the primary (so many sessions do not
    /// take `partial_capacity` each).
    pub partial_limit: u64,
    /// A partial journal is flushed into the primary at least this often.
    pub partial_flush_interval: HumanDuration,
    /// Primary segment files are closed and a new one started past this size.
    pub segment_size: u64,
    /// Dirty cache size that makes writers wait for the group commit.
    pub dirty_cache_limit: u64,
    /// Background round period: write dirty chunks whose journal entries are durable to the
    /// volume (and commit the partial journals when the dirty cache is full).
    pub commit_interval: HumanDuration,
    /// Journal granularity in bytes (old data is saved per chunk); raised to the block size.
    pub chunk_size: u32,
    /// How often the background merge applies the retention policy (0 = only on request).
    /// After a merge that took `d`, the next one also waits at least `9 d`, so merges of a
    /// big index take at most about a tenth of one CPU.
    pub merge_interval: HumanDuration,
    pub retention: RetentionPolicy,
    /// Most bytes the journal's primary segments may take on disk (0 = no quota). Past it, the
    /// merge drops the oldest history first, and says so.
    pub max_bytes: u64,
    /// Keep at least this share (percent) of the journal's filesystem free: below it, the
    /// oldest history is dropped (as for `max_bytes`) so the volume and today's writes keep
    /// room. 0 turns the guard off.
    pub min_free_percent: u8,
    /// A new index compresses its pages (zstd): about 40 % smaller where writes are scattered
    /// (each index group then holds one entry), for more CPU in the flusher and the merge. An
    /// existing index keeps the setting it was made with.
    pub index_compression: bool,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            enabled: true,
            partial_capacity: 32 << 20,
            partial_limit: 512 << 20,
            partial_flush_interval: HumanDuration(Duration::from_secs(1)),
            segment_size: 256 << 20,
            dirty_cache_limit: 64 << 20,
            commit_interval: HumanDuration(Duration::from_millis(5)),
            chunk_size: 4096,
            merge_interval: HumanDuration(Duration::from_secs(60)),
            retention: RetentionPolicy::default(),
            max_bytes: 0,
            min_free_percent: 10,
            index_compression: false,
        }
    }
}

impl JournalConfig {
    pub fn validate(&self) -> Result<(), JournalError> {
        let bad = |m: &str| Err(JournalError::Config(m.to_string()));
        if self.partial_capacity == 0 {
            return bad("partial_capacity must be positive");
        }
        if self.partial_limit == 0 {
            return bad("partial_limit must be positive");
        }
        if self.segment_size < 1 << 20 {
            return bad("segment_size must be at least 1 MiB");
        }
        if self.dirty_cache_limit == 0 {
            return bad("dirty_cache_limit must be positive");
        }
        if self.commit_interval.0.is_zero() || self.partial_flush_interval.0.is_zero() {
            return bad("commit_interval and partial_flush_interval must be positive");
        }
        if self.min_free_percent > 90 {
            return bad("min_free_percent must be at most 90");
        }
        if !self.chunk_size.is_power_of_two() || self.chunk_size < 512 {
            return bad("chunk_size must be a power of two of at least 512");
        }
        self.retention.validate().map_err(JournalError::Config)
    }

    /// Chunk size for a volume with `block_size`-byte blocks.
    pub fn chunk_bytes(&self, block_size: u32) -> u32 {
        self.chunk_size.max(block_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_valid_and_toml() {
        let c = JournalConfig::default();
        c.validate().unwrap();
        let t = toml::to_string(&c).unwrap();
        let back: JournalConfig = toml::from_str(&t).unwrap();
        assert_eq!(back, c);
        let partial: JournalConfig = toml::from_str("segment_size = 4194304\n").unwrap();
        assert_eq!(partial.segment_size, 4 << 20);
        let mut bad = c.clone();
        bad.chunk_size = 1000;
        assert!(bad.validate().is_err());
    }
}
