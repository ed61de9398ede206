//! The tiny random-weight SmolVLM models against transformers' goldens (tools/make_goldens.py):
//! prompt ids, preprocessing, vision features, connector output, last logits and 20 greedy
//! tokens, on the CPU backend. Tolerance: 1e-4 absolute on features and logits (f32 both sides,
//! same bf16-rounded weights).

mod common;

use burn_tensor::Device;
use captioner::generate::{decode_loop, Flow, SamplingOptions};
use captioner::preprocess::{ProcessedImage, Tiles};
use captioner::{Engine, ModelFiles};
use common::*;

const TOL: f32 = 1e-4;

fn engine(model: &str, device: &Device) -> Engine {
    let files = ModelFiles::from_path(&fixtures().join(model)).expect("model files");
    Engine::load(files, device).expect("model loads")
}

/// The golden pixels as the engine's preprocessed image, so model stages are compared on
/// exactly the reference inputs.
fn golden_image(
    g: &std::collections::HashMap<String, Golden>,
    case: &str,
    rows: usize,
    cols: usize,
) -> ProcessedImage {
    let pixels = &g[&format!("{case}.pixel_values")];
    let mask = &g[&format!("{case}.pixel_attention_mask")];
    ProcessedImage::Tiles(Tiles {
        pixel_values: pixels.f32(),
        pixel_mask: mask.u8(),
        n_tiles: pixels.shape[0],
        tile_height: pixels.shape[2],
        tile_width: pixels.shape[3],
        rows,
        cols,
    })
}

fn check_model(model: &str) {
    let device = Device::flex();
    let engine = engine(model, &device);
    let meta = read_json(fixtures().join(model).join("goldens.json"));
    let g = read_goldens(fixtures().join(model).join("goldens.safetensors"));
    let mut report = Vec::new();
    for case in meta["cases"].as_array().expect("cases") {
        let name = case["case"].as_str().expect("case name");
        let prompt = case["messages"][0]["content"]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["type"] == "text"))
            .and_then(|i| i["text"].as_str())
            .expect("prompt text");
        let expected_ids = g[&format!("{name}.input_ids")].u32();

        let images: Vec<ProcessedImage> = match case["image"].as_str() {
            None => Vec::new(),
            Some(file) => {
                // Preprocessing from the image file must reproduce the reference pixels.
                let bytes = std::fs::read(fixtures().join("images").join(file)).expect("image");
                let ProcessedImage::Tiles(ours) =
                    engine.preprocess(&bytes, None).expect("preprocess")
                else {
                    panic!("{model}/{name}: not SmolVLM's tiles")
                };
                let theirs = &g[&format!("{name}.pixel_values")];
                assert_eq!(ours.n_tiles, theirs.shape[0], "{model}/{name}: tile count");
                let diff = max_abs_diff(&ours.pixel_values, &theirs.f32());
                assert!(
                    diff <= 1e-6,
                    "{model}/{name}: pixel values differ by {diff}"
                );
                vec![golden_image(&g, name, ours.rows, ours.cols)]
            }
        };
        let ids = engine
            .prompt_ids(None, prompt, &images)
            .expect("prompt ids");
        assert_eq!(ids, expected_ids, "{model}/{name}: prompt ids");

        if let Some(image) = images.first() {
            let vision = tensor_values(engine.vision_features(image).expect("vision"));
            let d_vision = max_abs_diff(&vision, &g[&format!("{name}.vision_out")].f32());
            assert!(
                d_vision <= TOL,
                "{model}/{name}: vision features differ by {d_vision}"
            );
            let connector = tensor_values(engine.image_features(image).expect("connector"));
            let d_conn = max_abs_diff(&connector, &g[&format!("{name}.connector_out")].f32());
            assert!(
                d_conn <= TOL,
                "{model}/{name}: connector output differs by {d_conn}"
            );
            report.push(format!(
                "{name}: vision {d_vision:.2e}, connector {d_conn:.2e}"
            ));
        }

        let (logits, mut cache) = engine.prefill(&ids, &images).expect("prefill");
        let d_logits = max_abs_diff(
            &tensor_values(logits.clone()),
            &g[&format!("{name}.logits_last")].f32(),
        );
        assert!(
            d_logits <= TOL,
            "{model}/{name}: last logits differ by {d_logits}"
        );

        // Greedy, without stopping at end tokens, as the goldens were made.
        let expected = g[&format!("{name}.greedy_tokens")].u32();
        let tokens = pollster::block_on(decode_loop(
            engine.text_model(),
            logits,
            &mut cache,
            &[],
            &SamplingOptions::greedy(expected.len()),
            &mut |_| Flow::Continue,
        ))
        .expect("decode");
        assert_eq!(tokens, expected, "{model}/{name}: greedy tokens");
        report.push(format!(
            "{name}: logits {d_logits:.2e}, {} greedy tokens equal",
            tokens.len()
        ));
    }
    eprintln!("{model}: {}", report.join("; "));
}

#[test]
fn tiny_a_matches_transformers() {
    check_model("tiny-a");
}

#[test]
fn tiny_b_matches_transformers() {
    check_model("tiny-b");
}
