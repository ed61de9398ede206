//! Model families. One folder per family; shared building blocks in [`nn`].

pub mod bands;
pub mod linear;
/// Our GPU kernel; the browser's threaded build has no GPU (see `webgpu` in Cargo.toml).
#[cfg(any(not(target_arch = "wasm32"), feature = "webgpu"))]
pub mod matvec;
pub mod nn;
pub mod smolvlm;
