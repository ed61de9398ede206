//! Buffers sized by what a file says, allocated fallibly.
//!
//! Weights are widened to f32 (or unpacked from ggml blocks) in buffers as large as the file's
//! tensors. A model too large for the machine, or for a browser tab's 4 GiB of wasm memory,
//! must be an error that says so, where `Vec`'s infallible allocation would abort the process
//! (and, in the browser, kill the tab).

/// An empty buffer with room for `len` f32s, or `None` when the memory is not there.
pub fn f32_buffer(len: usize) -> Option<Vec<f32>> {
    #[cfg(test)]
    if len > budget::left() {
        return None;
    }
    let mut buffer = Vec::new();
    buffer.try_reserve_exact(len).ok()?;
    Some(buffer)
}

/// For tests: the most f32s one buffer may hold on this thread, to exercise the failure path
/// without exhausting the machine.
#[cfg(test)]
pub mod budget {
    use std::cell::Cell;

    thread_local!(static LEFT: Cell<usize> = const { Cell::new(usize::MAX) });

    pub fn left() -> usize {
        LEFT.with(Cell::get)
    }

    /// Sets the limit until the returned guard is dropped.
    pub fn limit(len: usize) -> impl Drop {
        struct Restore(usize);
        impl Drop for Restore {
            fn drop(&mut self) {
                LEFT.with(|l| l.set(self.0));
            }
        }
        let before = left();
        LEFT.with(|l| l.set(len));
        Restore(before)
    }
}
