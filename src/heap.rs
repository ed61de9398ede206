//! How a native program asks the C allocator to keep the memory it frees.
//!
//! The CPU backend allocates a fresh buffer for every tensor op. For an image of many tiles
//! those buffers are large (SmolVLM-256M's MLP over 13 tiles: 160 MB), and glibc serves any
//! block over 32 MB with its own `mmap` and returns it with `munmap` when freed, so every op
//! paid page faults to have the kernel hand out and zero fresh pages, again and again: on a
//! many-tile image that was a large share of the run in system time (the figures are in
//! BENCHMARKS.md, "The allocator"). With [`keep_freed_memory`], large blocks come from the heap
//! like small ones and freed memory stays with the process for the next op: the process keeps
//! its high-water mark (a higher peak RSS, measured there too) instead of giving pages back
//! between ops.
//!
//! A process-wide policy, so the library never sets it itself: the `captioner` program does,
//! first thing. In the browser the question does not arise: WebAssembly memory only grows, and
//! Rust's allocator there reuses what is freed.

/// Turns off glibc's `mmap` for large blocks and its trimming of the heap's top. Returns
/// whether the allocator took both settings (`false` off glibc, where there is nothing to do).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes glibc's allocation policy and may be called at any
        // time; blocks already mapped are still freed correctly. When the heap cannot grow
        // (another mapping in the way), glibc still falls back to `mmap` for it.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
