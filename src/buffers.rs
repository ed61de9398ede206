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

/// What a user is told when `name`'s values, `shape`, do not fit in memory as f32.
pub fn no_memory_message(name: &str, shape: &[usize]) -> String {
    let bytes = shape.iter().fold(4u64, |n, &d| n.saturating_mul(d as u64));
    format!(
        "not enough memory to hold {name} as f32 ({} MiB): the model is too large for this \
         machine, or for a browser tab (4 GiB at most); try a quantized precision or a smaller model",
        bytes.div_ceil(1 << 20)
    )
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
