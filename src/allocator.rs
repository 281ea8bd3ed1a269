//! Keeping the heap small on a board with little memory: glibc's malloc is tuned at start and
//! asked to give freed pages back after connections close.
//!
//! Measured (`benches/footprint.rs`): after 1,000 idle connections closed, RSS stayed 12.8 MiB
//! above idle. glibc only trims the top of each heap, so blocks freed below a long-lived one
//! (handshake buffers between connections' buffers) stay resident, and every thread that
//! allocates gets an arena of its own. One or two arenas, fixed trim and mmap thresholds (the
//! dynamic ones grow up to 32 MiB after one large free) and `malloc_trim`, which also returns
//! whole free pages inside an arena, bring it back. Hand-written because it is four libc calls;
//! a different allocator crate (mimalloc, jemalloc) would add a C build for the ARM targets
//! and, for jemalloc, a larger idle baseline. Other C libraries (musl) get nothing here.

/// Tunes malloc before any thread starts: at most two arenas (the runtime thread and the
/// storage threads), and allocations of 128 KiB or more mapped and unmapped on their own.
pub fn tune() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets malloc parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 10);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

/// Gives the free pages of every arena back to the kernel. Walks the free lists under each
/// arena's lock (about a millisecond for a heap of a few MiB), so it runs on a blocking thread
/// and only after many connections went away.
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim is thread-safe and has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
