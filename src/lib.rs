//! Captioner: private image captioning with SmolVLM (Idefics3) on burn.
//!
//! The crate is numerically the Hugging Face reference model: the same preprocessing, prompt
//! tokens and logits as transformers, within float tolerance. It runs on burn's CPU backend
//! (`Device::flex()`), natively on a GPU through wgpu, and in the browser on WebGPU.
//!
//! ```no_run
//! # fn main() -> captioner::Result<()> {
//! use captioner::{Engine, ModelFiles, Request, Flow};
//! let device = burn_tensor::Device::flex();
//! let engine = Engine::load(ModelFiles::from_path("SmolVLM-256M-Instruct".as_ref())?, &device)?;
//! let image = std::fs::read("photo.jpg").expect("readable image");
//! let caption = engine.caption(&[&image], &Request::default(), &mut |_| Flow::Continue)?;
//! println!("{}", caption.text);
//! # Ok(()) }
//! ```

pub mod bench;
pub mod buffers;
pub mod caption_run;
pub mod config;
pub mod convert;
pub mod engine;
pub mod error;
pub mod files;
pub mod generate;
#[cfg(not(target_arch = "wasm32"))]
pub mod heap;
#[cfg(not(target_arch = "wasm32"))]
pub mod jsonl;
pub mod models;
pub mod preprocess;
pub mod prompt;
pub mod quant;
pub mod rows;
#[cfg(target_arch = "wasm32")]
pub mod web;
pub mod weights;
mod workers;

pub use caption_run::{CaptionRun, ImageSource, Progress, RowResult};
pub use engine::{
    Engine, Generation, Preset, Request, DATAFLOW_PROMPT, DATAFLOW_SYSTEM, DEFAULT_PROMPT,
};
pub use error::{Error, Result};
pub use files::{Checkpoint, ModelFiles};
pub use generate::{Flow, SamplingOptions};
pub use preprocess::ImageLayout;
pub use quant::QuantType;
pub use rows::{Outcome, RowOptions};
pub use weights::Precision;
