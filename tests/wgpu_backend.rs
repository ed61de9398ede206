//! The wgpu backend (Vulkan; Mesa's lavapipe in CI) gives the same greedy tokens as the CPU
//! backend on the tiny models, and logits within float tolerance. Runs when
//! `CAPTIONER_TEST_WGPU=1` (scripts/test.sh sets it); a machine without any Vulkan device
//! cannot run it.

mod common;

use burn::tensor::{Device, DeviceKind};
use captioner::{Engine, Flow, ModelFiles, Request, SamplingOptions};
use common::*;

fn caption_tokens(model: &str, device: &Device, image: &str) -> (Vec<u32>, Vec<f32>) {
    let engine = Engine::load(
        ModelFiles::from_path(&fixtures().join(model)).expect("files"),
        device,
    )
    .expect("load");
    let bytes = std::fs::read(fixtures().join("images").join(image)).expect("image");
    let processed = engine.preprocess(&bytes, None).expect("preprocess");
    let layout = captioner::ImageLayout {
        rows: processed.rows,
        cols: processed.cols,
    };
    let ids = engine
        .prompt_ids(None, "Can you describe this image?", &[layout])
        .expect("ids");
    let (logits, _) = engine
        .prefill(&ids, std::slice::from_ref(&processed))
        .expect("prefill");
    let request = Request {
        prompt: "Can you describe this image?".into(),
        sampling: SamplingOptions::greedy(16),
        ..Request::default()
    };
    let generation = engine
        .caption(&[&bytes], &request, &mut |_| Flow::Continue)
        .expect("caption");
    (generation.tokens, tensor_values(logits))
}

#[test]
fn wgpu_matches_cpu_on_tiny_models() {
    if std::env::var("CAPTIONER_TEST_WGPU").as_deref() != Ok("1") {
        eprintln!("skipped: set CAPTIONER_TEST_WGPU=1 to run on the wgpu backend");
        return;
    }
    let gpu = Device::wgpu(DeviceKind::DefaultDevice);
    for (model, image) in [
        ("tiny-a", "small_100x80.png"),
        ("tiny-b", "photo_256x256.webp"),
    ] {
        let (cpu_tokens, cpu_logits) = caption_tokens(model, &Device::flex(), image);
        let (gpu_tokens, gpu_logits) = caption_tokens(model, &gpu, image);
        let diff = max_abs_diff(&cpu_logits, &gpu_logits);
        eprintln!("{model}: wgpu vs cpu last-logit max diff {diff:.2e}, tokens {gpu_tokens:?}");
        assert!(diff <= 1e-3, "{model}: logits differ by {diff}");
        assert_eq!(gpu_tokens, cpu_tokens, "{model}: greedy tokens");
    }
}
