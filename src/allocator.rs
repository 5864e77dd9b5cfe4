//! The daemon's memory allocator: mimalloc, set up for a long-running I/O server.
//!
//! Buffers of the write path are allocated on the command threads and freed on the journal's
//! flusher thread. With mimalloc's default purging, the pages they free go back to the kernel
//! within a second and are faulted in (and zeroed) again for the next writes: about 30000
//! page faults in a run of 150000 4 KiB journaled writes. The daemon keeps its freed memory
//! instead; how much it may hold is bounded by its buffers' settings (`docs/cdp.md`,
//! "Memory"). `MIMALLOC_PURGE_DELAY` in the environment still decides, if set.

/// mimalloc instead of glibc's allocator: the I/O path allocates and frees buffers and index
/// nodes on several threads, and glibc's allocator took about 13 % of the daemon's CPU at
/// 4 KiB journaled writes, mimalloc about 7 % (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3 (the crate does not name it): milliseconds before
/// freed memory is returned to the kernel, -1 for never.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keep freed memory (see the module doc), unless `MIMALLOC_PURGE_DELAY` says otherwise. Call
/// first thing in `main`, before other threads start.
pub fn tune() {
    // SAFETY: sets an option value; mimalloc reads options without locks, so this runs
    // before any other thread exists (the caller's contract).
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, -1) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Option 15 is the purge delay: mimalloc 3's default for it is 1000 ms (no other option
    /// of that version defaults to 1000), and the environment variable sets the same option.
    #[test]
    fn option_15_is_the_purge_delay() {
        // SAFETY: reads an option value.
        let v = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        match std::env::var("MIMALLOC_PURGE_DELAY") {
            Ok(set) => assert_eq!(set.parse::<libc::c_long>().ok(), Some(v)),
            Err(_) => assert_eq!(v, 1000),
        }
    }
}
