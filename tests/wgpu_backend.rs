//! The wgpu backend (Vulkan; Mesa's lavapipe in CI) gives the same greedy tokens as the CPU
//! backend on the tiny models, and logits within float tolerance. Runs when
//! `CAPTIONER_TEST_WGPU=1` (scripts/test.sh sets it); a machine without any Vulkan device
//! cannot run it.

mod common;

use burn_tensor::Device;
use captioner::{Engine, ModelFiles};
use common::*;

fn load(model: &str, device: &Device) -> Engine {
    Engine::load(
        ModelFiles::from_path(&fixtures().join(model)).expect("files"),
        device,
    )
    .expect("load")
}

#[test]
fn wgpu_matches_cpu_on_tiny_models() {
    let Some(gpu) = wgpu_device() else {
        return;
    };
    for (model, image) in [
        ("tiny-a", "small_100x80.png"),
        ("tiny-b", "photo_256x256.webp"),
    ] {
        let (cpu_tokens, cpu_logits) = caption_tokens(&load(model, &Device::flex()), image, 16);
        let (gpu_tokens, gpu_logits) = caption_tokens(&load(model, &gpu), image, 16);
        let diff = max_abs_diff(&cpu_logits, &gpu_logits);
        eprintln!("{model}: wgpu vs cpu last-logit max diff {diff:.2e}, tokens {gpu_tokens:?}");
        assert!(diff <= 1e-3, "{model}: logits differ by {diff}");
        assert_eq!(gpu_tokens, cpu_tokens, "{model}: greedy tokens");
    }
}
