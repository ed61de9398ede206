//! Shared helpers for the integration tests: fixture paths and golden tensors.
#![allow(dead_code)]

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The number of values in the fixture `model`'s `model.safetensors` (a tied head is stored
/// once, as its table).
pub fn stored_values(model: &str) -> u64 {
    let path = fixtures().join(model).join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = SafeTensors::deserialize(&bytes).expect("a safetensors file");
    file.tensors()
        .iter()
        .map(|(_, t)| t.shape().iter().product::<usize>() as u64)
        .sum()
}

pub fn read_json(path: PathBuf) -> Value {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A golden tensor, widened to f64 whatever its stored dtype.
#[derive(Debug, Clone)]
pub struct Golden {
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

impl Golden {
    pub fn f32(&self) -> Vec<f32> {
        self.values.iter().map(|&v| v as f32).collect()
    }
    pub fn u32(&self) -> Vec<u32> {
        self.values.iter().map(|&v| v as u32).collect()
    }
    pub fn u8(&self) -> Vec<u8> {
        self.values.iter().map(|&v| v as u8).collect()
    }
}

pub fn read_goldens(path: PathBuf) -> HashMap<String, Golden> {
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = SafeTensors::deserialize(&bytes).expect("golden safetensors");
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            let raw = view.data();
            let values: Vec<f64> = match view.dtype() {
                Dtype::F32 => raw
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
                    .collect(),
                Dtype::I64 => raw
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as f64)
                    .collect(),
                Dtype::U8 => raw.iter().map(|&b| b as f64).collect(),
                other => panic!("unexpected golden dtype {other:?} for {name}"),
            };
            (
                name,
                Golden {
                    shape: view.shape().to_vec(),
                    values,
                },
            )
        })
        .collect()
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn tensor_values<const D: usize>(t: burn_tensor::Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().expect("f32 tensor")
}

/// Greedy caption tokens of `image` (a fixture image's name) with the default prompt, and the
/// logits after the prompt.
pub fn caption_tokens(
    engine: &captioner::Engine,
    image: &str,
    tokens: usize,
) -> (Vec<u32>, Vec<f32>) {
    use captioner::{Flow, Request, SamplingOptions};
    let prompt = "Can you describe this image?";
    let bytes = std::fs::read(fixtures().join("images").join(image)).expect("image");
    let processed = engine.preprocess(&bytes, None).expect("preprocess");
    let ids = engine
        .prompt_ids(None, prompt, std::slice::from_ref(&processed))
        .expect("ids");
    let (logits, _) = engine
        .prefill(&ids, std::slice::from_ref(&processed))
        .expect("prefill");
    let request = Request {
        prompt: prompt.into(),
        sampling: SamplingOptions::greedy(tokens),
        ..Request::default()
    };
    let generation = engine
        .caption(&[&bytes], &request, &mut |_| Flow::Continue)
        .expect("caption");
    (generation.tokens, tensor_values(logits))
}

/// The wgpu device (Vulkan; lavapipe in CI) when `CAPTIONER_TEST_WGPU=1` (scripts/test.sh sets
/// it), else `None` after saying the test is skipped: a machine without a Vulkan device cannot
/// run these tests.
pub fn wgpu_device() -> Option<burn_tensor::Device> {
    if std::env::var("CAPTIONER_TEST_WGPU").as_deref() != Ok("1") {
        eprintln!("skipped: set CAPTIONER_TEST_WGPU=1 to run on the wgpu backend");
        return None;
    }
    Some(burn_tensor::Device::wgpu(
        burn_tensor::DeviceKind::DefaultDevice,
    ))
}
