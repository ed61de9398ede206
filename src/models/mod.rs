//! Models: layers that load themselves ([`linear`], [`nn`], [`attention`]), the Llama decoder
//! ([`llama`], the whole of a text-only checkpoint) and one folder per vision-language family.

pub mod attention;
pub mod bands;
pub mod linear;
pub mod llama;
/// Our GPU kernel; the browser's threaded build has no GPU (see `webgpu` in Cargo.toml).
#[cfg(any(not(target_arch = "wasm32"), feature = "webgpu"))]
pub mod matvec;
pub mod nn;
pub mod qwen2_vl;
pub mod smolvlm;
