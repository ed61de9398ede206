//! `heap::keep_freed_memory`: after it, a block far over glibc's 32 MB `mmap` ceiling comes from
//! the heap, and once freed it stays with the process for the next one.
//!
//! A test binary of its own without the test harness (`harness = false` in Cargo.toml): the
//! checks run on the main thread, where the `captioner` program runs its model (glibc's other
//! threads' arenas still map blocks over 64 MB apart), and no other test's allocations move the
//! allocator's counters between them.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn main() {
    const BIG: usize = 96 << 20;
    // SAFETY: `mallinfo2` only reads the allocator's counters.
    let info = || unsafe { libc::mallinfo2() };

    // Without the setting, glibc maps such a block on its own (the behaviour the setting is for).
    let before = info();
    let block = std::hint::black_box(vec![1u8; BIG]);
    assert!(
        info().hblkhd >= before.hblkhd + BIG,
        "glibc mapped it apart"
    );
    drop(block);

    assert!(captioner::heap::keep_freed_memory());
    let before = info();
    let block = std::hint::black_box(vec![1u8; BIG]);
    let during = info();
    assert_eq!(during.hblkhd, before.hblkhd, "no mapping of its own");
    assert!(during.arena >= before.arena + BIG, "from the heap");
    drop(block);
    let after = info();
    assert!(
        after.arena >= before.arena + BIG,
        "the heap was not trimmed"
    );
    assert!(after.fordblks >= BIG, "the freed block is kept for reuse");
    println!(
        "heap: a freed {} MB block stays with the process",
        BIG >> 20
    );
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn main() {
    assert!(!captioner::heap::keep_freed_memory());
}
