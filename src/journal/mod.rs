//! The continuous data protection journal.
//!
//! Every change to a volume is journaled with the data it overwrote (copy on write) before the
//! new data may become durable on the volume, so the volume as it was at any retained moment can
//! be read ([`JournaledStore::view_at`]) or restored ([`JournaledStore::restore_to`]).
//!
//! - [`clock`]: one monotonic microsecond time source for all ports.
//! - [`record`]: the checksummed on-disk record and segment format.
//! - `partial`: one partial journal per port (I_T nexus), flushed into the primary journal.
//! - `port`: a port's partial journal behind its lock, with batch writes made outside it.
//! - `primary`: the primary journal: segment files plus a rebuildable sled index.
//! - `cache`: the dirty cache of new data waiting for its journal entries to be durable.
//! - `hit_cache`: what index walks of point-in-time reads found, for the next reads.
//! - [`changes`]: which extents were written since a point, and the settled stamp (replication).
//! - [`store`]: [`JournaledStore`], the write path, recovery, bookmarks, restore.
//! - [`view`]: point-in-time read-only views.
//! - [`retention`] and [`merge`]: the retention policy and the merge that applies it.
//! - [`space`]: free space of the journal's filesystem (the merge trims history to keep some).
//!
//! See `docs/cdp.md` for the data layout and the ordering of fsyncs.

#![forbid(unsafe_code)]

mod cache;
pub mod changes;
pub mod clock;
mod config;
mod error;
mod hit_cache;
mod index_group;
mod latest_group;
pub mod merge;
mod metalog;
mod partial;
mod port;
mod primary;
pub mod record;
pub mod retention;
mod sizes;
pub mod space;
pub mod store;
pub mod view;

#[cfg(test)]
mod layout_bench;
#[cfg(test)]
mod tests;

pub use changes::ChangeSubscription;
pub use clock::{StampClock, SystemClock, WallClock};
pub use config::JournalConfig;
pub use error::JournalError;
pub use merge::MergeReport;
pub use primary::PrimaryRecovery;
pub use retention::{HumanDuration, RetentionPolicy, RetentionTier};
pub use store::{JournaledStore, RecoveryReport};
pub use view::JournalView;
