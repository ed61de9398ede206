//! The wgpu backend (Vulkan; Mesa's lavapipe in CI) gives the same greedy tokens as the CPU
//! backend on the tiny models, and logits within float tolerance; its default precision packs
//! the weights, and a tied table is held once. Runs when
//! `CAPTIONER_TEST_WGPU=1` (scripts/test.sh sets it); a machine without any Vulkan device
//! cannot run it.

mod common;

use burn_tensor::Device;
use captioner::quant::QuantType;
use captioner::weights::Precision;
use captioner::{Engine, ModelFiles};
use common::*;
use std::sync::Mutex;

/// The tests here share one device whose allocator one of them reads: they take turns.
static DEVICE: Mutex<()> = Mutex::new(());

fn load_at(model: &str, device: &Device, precision: Precision) -> Engine {
    Engine::load_with(
        ModelFiles::from_path(&fixtures().join(model)).expect("files"),
        device,
        precision,
    )
    .expect("load")
}

fn load(model: &str, device: &Device) -> Engine {
    load_at(model, device, Precision::F32)
}

fn gpu_bytes(device: &Device) -> u64 {
    device
        .memory_pool_usage()
        .expect("a GPU allocator")
        .bytes_in_use
}

#[test]
fn auto_packs_weights_on_wgpu_and_a_tied_table_is_held_once() {
    let Some(gpu) = wgpu_device() else {
        return;
    };
    let _turn = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let image = "photo_256x256.webp";
    // tiny-b ties its head to a 49280 x 32 table, 94 % of its values: were the f32 table held
    // twice (rows for lookup, transposed for the head), the GPU would hold 1.9x the file.
    let f32_bytes = stored_values("tiny-b") * 4;
    let before = gpu_bytes(&gpu);
    let dense = load("tiny-b", &gpu);
    let dense_bytes = gpu_bytes(&gpu) - before;
    eprintln!("tiny-b f32 on wgpu: {dense_bytes} bytes for {f32_bytes} bytes of values");
    assert!(
        dense_bytes <= f32_bytes + f32_bytes / 20,
        "the f32 model takes {dense_bytes} bytes on the GPU for {f32_bytes} of weights"
    );
    assert_eq!(dense.precision(), Precision::F32);
    drop(dense);

    // `auto` is Q8_0 on a GPU: the same tokens as the CPU at q8_0, in about a quarter of the
    // bytes (the table's packed rows stay on the host; the tied head is its one GPU copy).
    let before = gpu_bytes(&gpu);
    let auto = Engine::load(
        ModelFiles::from_path(&fixtures().join("tiny-b")).expect("files"),
        &gpu,
    )
    .expect("load");
    let auto_bytes = gpu_bytes(&gpu) - before;
    eprintln!("tiny-b auto on wgpu: {auto_bytes} bytes");
    assert_eq!(auto.precision(), Precision::Packed);
    assert!(
        auto_bytes * 3 < f32_bytes,
        "auto holds {auto_bytes} bytes on the GPU, f32 {f32_bytes}: not packed"
    );
    let cpu = load_at(
        "tiny-b",
        &Device::flex(),
        Precision::Uniform(QuantType::Q8_0),
    );
    let (cpu_tokens, _) = caption_tokens(&cpu, image, 16);
    let (gpu_tokens, _) = caption_tokens(&auto, image, 16);
    assert_eq!(gpu_tokens, cpu_tokens, "auto on wgpu vs q8_0 on the CPU");
}

#[test]
fn wgpu_matches_cpu_on_tiny_models() {
    let Some(gpu) = wgpu_device() else {
        return;
    };
    let _turn = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
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
