//! The Qwen2-VL / Qwen2.5-VL family against transformers (tools/make_qwen2vl_goldens.py).
//! The image processor: the resized size, `image_grid_thw` and every float of `pixel_values`,
//! bit for bit (a SHA-256 of the little-endian f32 bytes; the small cases also stored whole, to
//! show where a difference starts). M-RoPE: the three position streams and the delta of
//! `get_rope_index`, exactly.

mod common;

use captioner::config::Qwen2VlConfig;
use captioner::models::qwen2_vl::positions::mrope_positions;
use captioner::models::qwen2_vl::rope::MRope;
use captioner::models::qwen2_vl::text::Qwen2Text;
use captioner::models::qwen2_vl::vision::VisionTower;
use captioner::models::qwen2_vl::windows::windows;
use captioner::models::qwen2_vl::Qwen2Vl;
use captioner::preprocess::qwen2_vl::{preprocess, smart_resize, Patches, Qwen2VlImageConfig};
use captioner::preprocess::{decode_image, PreprocessError};
use captioner::weights::{Loader, WeightSet};
use common::*;
use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A tiny model folder's config.
fn tiny_config(dir: &std::path::Path) -> Qwen2VlConfig {
    Qwen2VlConfig::from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap())
        .expect("config")
}

/// A tiny model folder's weights.
fn tiny_weights(dir: &std::path::Path) -> WeightSet {
    WeightSet::from_safetensors(&std::fs::read(dir.join("model.safetensors")).unwrap()).unwrap()
}

/// The processor's output for each of the named test images under `settings` (a
/// preprocessor config).
fn processed(images: &serde_json::Value, settings: &serde_json::Value) -> Vec<Patches> {
    let cfg = Qwen2VlImageConfig::from_preprocessor_json(&settings.to_string()).unwrap();
    let images = images.as_array().expect("image names");
    images
        .iter()
        .map(|name| {
            let path = fixtures().join("images").join(name.as_str().unwrap());
            let bytes = std::fs::read(path).unwrap();
            preprocess(&decode_image(&bytes).unwrap(), &cfg).unwrap()
        })
        .collect()
}

/// The processor's patches of the named test images under `settings` (a preprocessor config),
/// one after the other, and their grids.
fn patches_of(
    images: &serde_json::Value,
    settings: &serde_json::Value,
) -> (Vec<f32>, Vec<[usize; 3]>) {
    let (mut values, mut grids) = (Vec::new(), Vec::new());
    for p in processed(images, settings) {
        values.extend(p.values);
        grids.push(p.grid_thw);
    }
    (values, grids)
}

#[test]
fn patches_match_transformers_bit_for_bit() {
    let dir = fixtures().join("qwen2vl").join("preprocess");
    let meta = read_json(dir.join("goldens.json"));
    let whole = read_goldens(dir.join("goldens.safetensors"));
    let cases = meta["cases"].as_array().expect("cases");
    assert!(cases.len() >= 16, "{} cases", cases.len());
    for case in cases {
        let name = case["case"].as_str().expect("case");
        let file = case["image"].as_str().expect("image");
        let bytes = std::fs::read(fixtures().join("images").join(file)).expect("read");
        let cfg = Qwen2VlImageConfig::from_preprocessor_json(&case["settings"].to_string())
            .expect("settings");
        let image = decode_image(&bytes).expect("decode");
        let p = preprocess(&image, &cfg).expect("preprocess");

        let resized: Vec<u64> = serde_json::from_value(case["resized_hw"].clone()).unwrap();
        assert_eq!(
            [u64::from(p.resized.0), u64::from(p.resized.1)],
            resized[..],
            "{name}: resized"
        );
        let thw: Vec<usize> = serde_json::from_value(case["grid_thw"].clone()).unwrap();
        assert_eq!(p.grid_thw[..], thw[..], "{name}: grid");
        let shape: Vec<usize> = serde_json::from_value(case["shape"].clone()).unwrap();
        assert_eq!(
            [p.values.len() / p.patch_len, p.patch_len],
            shape[..],
            "{name}: shape"
        );

        if let Some(theirs) = case["tensor"].as_str().map(|t| whole[t].f32()) {
            let first = p
                .values
                .iter()
                .zip(&theirs)
                .position(|(a, b)| a.to_bits() != b.to_bits());
            if let Some(i) = first {
                panic!(
                    "{name}: value {i} (patch {}, element {}) is {} here, {} in transformers",
                    i / p.patch_len,
                    i % p.patch_len,
                    p.values[i],
                    theirs[i]
                );
            }
        }
        let bytes: Vec<u8> = p.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let ours = hex(&Sha256::digest(&bytes));
        let first: Vec<f32> = serde_json::from_value(case["first"].clone()).unwrap();
        assert_eq!(
            ours,
            case["sha256"].as_str().expect("sha256"),
            "{name}: pixel_values differ (first values here {:?}, in transformers {first:?})",
            &p.values[..8]
        );
    }
}

#[test]
fn aspect_ratios_over_200_are_refused_as_transformers_refuses_them() {
    let meta = read_json(
        fixtures()
            .join("qwen2vl")
            .join("preprocess")
            .join("goldens.json"),
    );
    for refused in meta["aspect_refused"].as_array().expect("refused") {
        let hw: Vec<u64> = serde_json::from_value(refused["source_hw"].clone()).unwrap();
        let err = smart_resize(hw[0], hw[1], 28, 3136, 12_845_056).unwrap_err();
        assert!(
            matches!(err, PreprocessError::AspectRatio { .. }),
            "{hw:?}: {err}"
        );
        assert!(err.to_string().contains("over 200 times"), "{err}");
    }
    let accepted = &meta["aspect_accepted"];
    let hw: Vec<u64> = serde_json::from_value(accepted["source_hw"].clone()).unwrap();
    let want: Vec<u64> = serde_json::from_value(accepted["resized_hw"].clone()).unwrap();
    let got = smart_resize(hw[0], hw[1], 28, 3136, 12_845_056).expect("ratio 200 is taken");
    assert_eq!([got.0, got.1], want[..]);
}

#[test]
fn an_unresized_image_must_fit_the_merge_blocks() {
    let cfg = Qwen2VlImageConfig {
        do_resize: false,
        ..Qwen2VlImageConfig::default()
    };
    let odd = image::RgbImage::new(30, 28);
    assert!(matches!(
        preprocess(&odd, &cfg),
        Err(PreprocessError::InvalidSize { .. })
    ));
    let p = preprocess(&image::RgbImage::new(56, 28), &cfg).expect("56 x 28 fits");
    assert_eq!(p.grid_thw, [1, 2, 4]);
    assert_eq!(p.tokens(cfg.merge_size), 2);
}

#[test]
fn mrope_positions_match_get_rope_index() {
    let meta = read_json(fixtures().join("qwen2vl").join("positions.json"));
    let image = meta["image_token_id"].as_u64().expect("image token") as u32;
    let merge = meta["merge_size"].as_u64().expect("merge") as usize;
    let cases = meta["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 10);
    for case in cases {
        let name = format!("{} / {}", case["family"], case["case"]);
        let tokens: Vec<u32> = serde_json::from_value(case["tokens"].clone()).unwrap();
        let grids: Vec<[usize; 3]> = serde_json::from_value(case["grids"].clone()).unwrap();
        let p = mrope_positions(&tokens, image, &grids, merge).expect(&name);
        for (stream, ours) in [
            ("temporal", &p.temporal),
            ("height", &p.height),
            ("width", &p.width),
        ] {
            let theirs: Vec<u32> = serde_json::from_value(case[stream].clone()).unwrap();
            assert_eq!(ours, &theirs, "{name}: {stream}");
        }
        assert_eq!(p.delta, case["delta"].as_i64().expect("delta"), "{name}");
    }
}

#[test]
fn mrope_tables_match_qwen2vl_rotary_embedding() {
    // The streams of "two images" (positions.json), through both settings rope.safetensors holds.
    let meta = read_json(fixtures().join("qwen2vl").join("positions.json"));
    let case = meta["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["family"] == "qwen2_vl" && c["case"] == "two images")
        .expect("the case");
    let stream = |name: &str| -> Vec<u32> { serde_json::from_value(case[name].clone()).unwrap() };
    let (t, h, w) = (stream("temporal"), stream("height"), stream("width"));
    let golden = read_goldens(fixtures().join("qwen2vl").join("rope.safetensors"));
    let device = burn_tensor::Device::flex();
    for (name, head_dim, section, theta) in [
        ("published", 128, [16, 24, 24], 1e6),
        ("tiny", 16, [2, 3, 3], 1e4),
    ] {
        let rope = MRope::new(head_dim, theta, section).expect(name);
        let (cos, sin) = rope.tables([&t, &h, &w], &device);
        assert_eq!(cos.dims(), [1, 1, t.len(), head_dim]);
        for (what, ours) in [("cos", cos), ("sin", sin)] {
            let theirs = golden[&format!("{name}.{what}")].f32();
            let diff = max_abs_diff(&tensor_values(ours), &theirs);
            // f32 angles of up to some 60 radians: a few ulps of libm against torch.
            assert!(diff <= 2e-6, "{name} {what}: off by {diff}");
        }
    }
    // A section that does not split the head is refused.
    assert!(MRope::new(128, 1e6, [16, 24, 16]).is_err());
}

#[test]
fn the_decoder_matches_transformers_at_mrope_positions() {
    // A tiny random Qwen2-VL (bf16 file, tied head): text tokens at "a tall image"'s streams,
    // then greedy steps at `index + delta`, as transformers ran them on the reloaded model.
    let dir = fixtures().join("qwen2vl").join("tiny-text");
    let config = tiny_config(&dir);
    assert_eq!(config.mrope_section, [2, 3, 3]);
    assert!(config.text.qkv_bias && config.text.tie_word_embeddings);
    let device = burn_tensor::Device::flex();
    let mut loader = Loader::new(tiny_weights(&dir), &device);
    let model = Qwen2Text::load(&mut loader, &config).expect("load");

    let meta = read_json(dir.join("goldens.json"));
    let golden = read_goldens(dir.join("goldens.safetensors"));
    let ids: Vec<u32> = serde_json::from_value(meta["prompt_ids"].clone()).unwrap();
    let positions = read_json(fixtures().join("qwen2vl").join("positions.json"));
    let case = positions["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["family"] == "qwen2_vl" && c["case"] == "a tall image")
        .unwrap();
    let stream = |name: &str| -> Vec<u32> { serde_json::from_value(case[name].clone()).unwrap() };
    let delta = case["delta"].as_i64().unwrap();
    let decoder = model.decoder();
    let vocab = config.text.vocab_size;
    let (t, h, w) = (stream("temporal"), stream("height"), stream("width"));

    // Every prompt position's logits: each prefix's last position, at that prefix's positions.
    let prompt_logits = golden["prompt_logits"].f32();
    assert_eq!(prompt_logits.len(), ids.len() * vocab);
    for k in 1..=ids.len() {
        let hidden = model.forward(
            decoder.embed(&ids[..k]),
            [&t[..k], &h[..k], &w[..k]],
            &mut decoder.new_cache(),
        );
        let ours = tensor_values(decoder.last_logits(hidden));
        let diff = max_abs_diff(&ours, &prompt_logits[(k - 1) * vocab..k * vocab]);
        assert!(
            diff < 1e-4,
            "prompt position {}: logits off by {diff}",
            k - 1
        );
    }

    // Greedy steps with the cache, each token at index + delta on all three streams.
    let want: Vec<u32> = serde_json::from_value(meta["greedy_tokens"].clone()).unwrap();
    let step_logits = golden["step_logits"].f32();
    let mut cache = decoder.new_cache();
    let mut logits =
        decoder.last_logits(model.forward(decoder.embed(&ids), [&t, &h, &w], &mut cache));
    let mut got = Vec::new();
    for step in 0..want.len() {
        let values = tensor_values(logits);
        let diff = max_abs_diff(&values, &step_logits[step * vocab..(step + 1) * vocab]);
        assert!(diff < 1e-4, "step {step}: logits off by {diff}");
        let next = captioner::generate::argmax(&values);
        got.push(next);
        let at = u32::try_from(ids.len() as i64 + step as i64 + delta).unwrap();
        logits = decoder.last_logits(model.forward(
            decoder.embed(&[next]),
            [&[at], &[at], &[at]],
            &mut cache,
        ));
    }
    assert_eq!(got, want);
}

#[test]
fn the_vision_tower_matches_transformers() {
    // The tiny model's tower and merger on two images of different grids (attention kept
    // within each), from the processor's patches.
    let dir = fixtures().join("qwen2vl").join("tiny-text");
    let config = tiny_config(&dir);
    let vision = &config.vision;
    let meta = read_json(dir.join("vision.json"));
    let golden = read_goldens(dir.join("vision.safetensors"));
    let (values, grids) = patches_of(&meta["images"], &meta["settings"]);
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(
        hex(&Sha256::digest(&bytes)),
        meta["pixel_values_sha256"].as_str().unwrap()
    );
    let want_grids: Vec<usize> = golden["image_grid_thw"]
        .values
        .iter()
        .map(|&v| v as usize)
        .collect();
    assert_eq!(grids.concat(), want_grids);

    let device = burn_tensor::Device::flex();
    let mut loader = Loader::new(tiny_weights(&dir), &device);
    let tower = VisionTower::load(&mut loader, "visual", vision);
    let n = values.len() / vision.patch_len();
    let patches = burn_tensor::Tensor::<2>::from_data(
        burn_tensor::TensorData::new(values, [n, vision.patch_len()]),
        &device,
    );
    let merged = tower.forward(patches.clone(), &grids).expect("forward");
    assert_eq!(merged.dims(), [n / 4, config.text.hidden_size]);
    let diff = max_abs_diff(&tensor_values(merged), &golden["merged"].f32());
    assert!(diff < 1e-4, "merged features off by {diff}");

    // Patches that do not make the grids are an error, not a panic.
    assert!(tower.forward(patches, &[[1, 6, 8]]).is_err());
}

#[test]
fn the_whole_model_captions_images_as_transformers_does() {
    // The tiny Qwen2-VL and Qwen2.5-VL on prompts of one image and of two: the processor's
    // patches, the features in place of the pads, M-RoPE positions, then 6 cached greedy steps.
    for folder in ["tiny-text", "tiny-25"] {
        whole_model_matches(folder);
    }
}

fn whole_model_matches(folder: &str) {
    let dir = fixtures().join("qwen2vl").join(folder);
    let config = tiny_config(&dir);
    let device = burn_tensor::Device::flex();
    let mut loader = Loader::new(tiny_weights(&dir), &device);
    let model = Qwen2Vl::load(&mut loader, &config).expect("load");
    loader.finish().expect("every weight used");
    let meta = read_json(dir.join("greedy.json"));
    let golden = read_goldens(dir.join("greedy.safetensors"));
    let vocab = config.text.vocab_size;
    for case in meta["cases"].as_array().unwrap() {
        let name = &format!("{folder} / {}", case["case"].as_str().unwrap());
        let case_name = case["case"].as_str().unwrap();
        let images = processed(&case["images"], &case["settings"]);
        let images: Vec<&Patches> = images.iter().collect();
        let grids: Vec<[usize; 3]> = images.iter().map(|p| p.grid_thw).collect();
        let want_grids: Vec<[usize; 3]> = serde_json::from_value(case["grids"].clone()).unwrap();
        assert_eq!(grids, want_grids, "{name}");
        let ids: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
        let want: Vec<u32> = serde_json::from_value(case["greedy_tokens"].clone()).unwrap();
        let steps = golden[&format!("{case_name}.step_logits")].f32();

        // Decoding goes through the decoder's own step: the cache is shifted to M-RoPE's
        // positions after the prompt.
        let mut run = model.prefill(&ids, &images).expect(name);
        let decoder = model.decoder();
        let mut logits = run.logits.clone();
        let mut got = Vec::new();
        for step in 0..want.len() {
            let values = tensor_values(logits);
            let diff = max_abs_diff(&values, &steps[step * vocab..(step + 1) * vocab]);
            assert!(diff < 1e-4, "{name}, step {step}: logits off by {diff}");
            let next = captioner::generate::argmax(&values);
            got.push(next);
            let hidden = decoder.forward_embeds(decoder.embed(&[next]), &mut run.cache);
            logits = decoder.last_logits(hidden);
        }
        assert_eq!(got, want, "{name}");

        // A prompt whose pads do not match its images is an error.
        let short: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&t| t != config.image_token_id)
            .collect();
        assert!(model.prefill(&short, &images).is_err(), "{name}");
    }
}

#[test]
fn window_order_matches_get_vision_window_index() {
    let meta = read_json(fixtures().join("qwen2vl").join("windows.json"));
    let cases = meta["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for case in cases {
        let grids: Vec<[usize; 3]> = serde_json::from_value(case["grids"].clone()).unwrap();
        let size = |key: &str| case[key].as_u64().unwrap() as usize;
        let w = windows(
            &grids,
            size("merge_size"),
            size("window_size"),
            size("patch_size"),
        )
        .unwrap();
        let order: Vec<usize> = serde_json::from_value(case["window_index"].clone()).unwrap();
        let cuts: Vec<usize> = serde_json::from_value(case["cu_window_seqlens"].clone()).unwrap();
        assert_eq!(w.unit_order, order, "{grids:?}: order");
        assert_eq!(w.boundaries, cuts, "{grids:?}: boundaries");
    }
    assert_eq!(windows(&[[1, 4, 4]], 2, 27, 14), None);
}

#[test]
fn qwen2_5_vl_s_vision_tower_matches_transformers() {
    // A tiny random Qwen2.5-VL: RMSNorm, SwiGLU, windows of 2 x 2 merge units cut at the
    // images' edges, whole-image attention in blocks 1 and 3, the merged tokens put back.
    let dir = fixtures().join("qwen2vl").join("tiny-25");
    let config = tiny_config(&dir);
    let vision = &config.vision;
    assert_eq!(
        (vision.window_size, &vision.fullatt_block_indexes[..]),
        (56, &[1, 3][..])
    );
    let meta = read_json(dir.join("vision.json"));
    let golden = read_goldens(dir.join("vision.safetensors"));
    let (values, grids) = patches_of(&meta["images"], &meta["settings"]);
    let device = burn_tensor::Device::flex();
    let mut loader = Loader::new(tiny_weights(&dir), &device);
    let tower = VisionTower::load(&mut loader, "visual", vision);
    let n = values.len() / vision.patch_len();
    let patches = burn_tensor::Tensor::<2>::from_data(
        burn_tensor::TensorData::new(values, [n, vision.patch_len()]),
        &device,
    );
    let merged = tower.forward(patches, &grids).expect("forward");
    assert_eq!(merged.dims(), [n / 4, config.text.hidden_size]);
    let diff = max_abs_diff(&tensor_values(merged), &golden["merged"].f32());
    assert!(diff < 1e-4, "merged features off by {diff}");
}

/// Qwen2's tokenizer as a Qwen2-VL GGUF holds it: llama.cpp's vocabulary GGUF
/// (`CAPTIONER_QWEN2_VOCAB_GGUF`, from scripts/setup.sh) with the family's tokens written into
/// the `[PADn]` slots the golden script names, then built as transformers builds it.
fn qwen2_vl_tokenizer_json(goldens: &serde_json::Value) -> Option<String> {
    use captioner::weights::gguf::{GgufFile, GgufValue};
    let Ok(path) = std::env::var("CAPTIONER_QWEN2_VOCAB_GGUF") else {
        eprintln!("skipped: CAPTIONER_QWEN2_VOCAB_GGUF is not set (scripts/test.sh sets it)");
        return None;
    };
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(
        hex(&Sha256::digest(&bytes)),
        goldens["vocab_gguf_sha256"].as_str().unwrap(),
        "{path} is not the vocabulary the goldens were made from"
    );
    let mut gguf = GgufFile::parse(bytes).expect("vocabulary GGUF").header;
    for token in goldens["vl_tokens"].as_array().expect("vl_tokens") {
        let id = token["id"].as_u64().unwrap() as usize;
        for (key, value) in gguf.metadata.iter_mut() {
            let GgufValue::Array(values) = value else {
                continue;
            };
            match key.as_str() {
                "tokenizer.ggml.tokens" => {
                    assert_eq!(values[id], GgufValue::String(format!("[PAD{id}]")));
                    values[id] = GgufValue::String(token["text"].as_str().unwrap().into());
                }
                "tokenizer.ggml.token_type" => {
                    values[id] = GgufValue::I32(token["type"].as_i64().unwrap() as i32)
                }
                _ => {}
            }
        }
    }
    Some(
        gguf.hf_tokenizer_json()
            .expect("tokenizer.json")
            .to_string(),
    )
}

#[test]
fn prompts_match_qwen2_vl_processor() {
    use captioner::prompt::{find_chat_template, ContentStyle, Prompter};
    let dir = fixtures().join("qwen2vl");
    let goldens = read_json(dir.join("prompt.json"));
    let Some(tokenizer) = qwen2_vl_tokenizer_json(&goldens) else {
        return;
    };
    let template = std::fs::read_to_string(dir.join("chat_template.json")).unwrap();
    let template = find_chat_template(Some(&template), None).unwrap().unwrap();
    let p = Prompter::new(&tokenizer, template, None, ContentStyle::Items).expect("prompter");

    for (token, id) in goldens["special_ids"].as_object().expect("special ids") {
        assert_eq!(
            p.token_id(token),
            Some(id.as_u64().unwrap() as u32),
            "{token}"
        );
    }
    for case in goldens["encode"].as_array().expect("encode") {
        let text = case["text"].as_str().unwrap();
        let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(p.encode(text).unwrap(), ids, "{text:?}");
    }
    let cfg = Qwen2VlImageConfig::from_preprocessor_json(&goldens["settings"].to_string()).unwrap();
    let cases = goldens["cases"].as_array().expect("cases");
    assert!(cases.len() >= 5);
    for case in cases {
        let name = case["case"].as_str().unwrap();
        let images = case["images"].as_array().unwrap();
        let rendered = p
            .render(
                case["system"].as_str(),
                case["user"].as_str().unwrap(),
                images.len(),
            )
            .expect("render");
        assert_eq!(
            rendered,
            case["rendered"].as_str().unwrap(),
            "{name}: rendered"
        );

        let patches = processed(&case["images"], &goldens["settings"]);
        let grids: Vec<[usize; 3]> = patches.iter().map(|p| p.grid_thw).collect();
        let want: Vec<[usize; 3]> = serde_json::from_value(case["grids"].clone()).unwrap();
        assert_eq!(grids, want, "{name}: grids");
        let pads: Vec<usize> = patches.iter().map(|p| p.tokens(cfg.merge_size)).collect();
        let expanded = Prompter::expand_image_pads(&rendered, &pads).expect("expand");
        let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(p.encode(&expanded).unwrap(), ids, "{name}: ids");
        assert_eq!(
            p.decode(&ids).unwrap(),
            case["decoded_skip_special"].as_str().unwrap(),
            "{name}: decoded"
        );
    }
}

#[test]
fn the_engine_captions_as_transformers_generates() {
    // The tiny models as a user's folder (tokenizer, chat template, processor settings beside
    // the weights), through the engine as `caption` runs it: the processor's ids, then
    // model.generate's greedy tokens and text.
    use captioner::{Engine, ModelFiles, Precision};
    for folder in ["tiny-text", "tiny-25"] {
        let dir = fixtures().join("qwen2vl").join(folder);
        let files = ModelFiles::from_path(&dir).expect("files");
        let engine =
            Engine::load_with(files, &burn_tensor::Device::flex(), Precision::F32).expect("engine");
        assert!(engine.accepts_images());
        let im_end = engine
            .prompter()
            .token_id("<|im_end|>")
            .expect("<|im_end|>");
        assert!(
            engine.stop_tokens().contains(&im_end),
            "the turn's end stops a caption"
        );
        captions_as_goldens(&engine, &dir.join("engine.json"), None);
    }
}

/// An `engine.json` case's image files and its greedy request of `max_new` tokens.
fn case_of(
    case: &serde_json::Value,
    max_new: usize,
    longest_edge: Option<u32>,
) -> (Vec<Vec<u8>>, captioner::Request) {
    let images = case["images"].as_array().expect("images");
    let bytes = images
        .iter()
        .map(|f| std::fs::read(fixtures().join("images").join(f.as_str().unwrap())).unwrap())
        .collect();
    let request = captioner::Request {
        prompt: case["user"].as_str().unwrap().into(),
        system: case["system"].as_str().map(str::to_string),
        sampling: captioner::SamplingOptions::greedy(max_new),
        longest_edge,
    };
    (bytes, request)
}

/// `engine` on every case of an `engine.json` (tools/make_qwen2vl_goldens.py): the processor's
/// prompt ids, then `model.generate`'s greedy tokens and text, with images held to
/// `longest_edge`.
fn captions_as_goldens(
    engine: &captioner::Engine,
    goldens: &std::path::Path,
    longest_edge: Option<u32>,
) {
    use captioner::Flow;
    let goldens = read_json(goldens.to_path_buf());
    let max_new = goldens["max_new_tokens"].as_u64().unwrap() as usize;
    for case in goldens["cases"].as_array().unwrap() {
        let name = case["case"].as_str().unwrap();
        let (bytes, request) = case_of(case, max_new, longest_edge);
        let bytes: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        let images = engine.preprocess_all(&bytes, longest_edge).expect(name);
        let ids = engine
            .prompt_ids(request.system.as_deref(), &request.prompt, &images)
            .expect(name);
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(ids, want, "{name}: prompt ids");
        let generation = engine
            .caption(&bytes, &request, &mut |_| Flow::Continue)
            .expect(name);
        let want: Vec<u32> = serde_json::from_value(case["tokens"].clone()).unwrap();
        assert_eq!(generation.tokens, want, "{name}: tokens");
        assert_eq!(
            generation.text,
            case["text"].as_str().unwrap(),
            "{name}: text"
        );
        assert_eq!(generation.prompt_tokens, ids.len(), "{name}");
    }
}

#[test]
fn a_folder_whose_parts_disagree_is_refused_at_load_with_the_file_named() {
    use captioner::{Engine, ModelFiles};
    let src = fixtures().join("qwen2vl").join("tiny-25");
    let load = |edit: &dyn Fn(&std::path::Path)| -> String {
        let dir = tempfile::tempdir().unwrap();
        for name in captioner::files::TEXT_FILES
            .iter()
            .chain(["model.safetensors"].iter())
        {
            if src.join(name).exists() {
                std::fs::copy(src.join(name), dir.path().join(name)).unwrap();
            }
        }
        edit(dir.path());
        let files = ModelFiles::from_path(dir.path()).expect("files");
        match Engine::load(files, &burn_tensor::Device::flex()) {
            Ok(_) => "loaded".into(),
            Err(e) => e.to_string(),
        }
    };
    let edit_json = |path: std::path::PathBuf, f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&path, v.to_string()).unwrap();
    };
    assert_eq!(load(&|_| {}), "loaded");

    let err = load(&|d| {
        edit_json(d.join("preprocessor_config.json"), &|v| {
            v["patch_size"] = 16.into()
        })
    });
    assert!(
        err.contains("preprocessor_config.json") && err.contains("patch_size is 16"),
        "{err}"
    );
    let err = load(&|d| {
        edit_json(d.join("preprocessor_config.json"), &|v| {
            v["merge_size"] = 3.into()
        })
    });
    assert!(err.contains("merge_size is 3"), "{err}");
    let err = load(&|d| {
        edit_json(d.join("preprocessor_config.json"), &|v| {
            v["max_pixels"] = u64::MAX.into()
        })
    });
    assert!(err.contains("preprocessor_config.json"), "{err}");
    let err = load(&|d| std::fs::remove_file(d.join("preprocessor_config.json")).unwrap());
    assert!(err.contains("preprocessor_config.json"), "{err}");
    // The pads the prompt writes must be the ones the model looks for.
    let err = load(&|d| edit_json(d.join("config.json"), &|v| v["image_token_id"] = 501.into()));
    assert!(
        err.contains("<|image_pad|> is Some(500)") && err.contains("image_token_id is 501"),
        "{err}"
    );
}

#[test]
fn the_pair_llama_cpp_writes_captions_as_the_folder_does() {
    // tiny-text converted by llama.cpp's own converter (tools/make_qwen2vl_llamacpp_pair.sh):
    // the pair's tokenizer, chat template, decoder and mmproj (q, k, v and the per-frame patch
    // kernels joined back) give the folder's ids, tokens and text. The pair does not carry the
    // folder's max_pixels (12544): a longest edge of 112 px asks for the same bound.
    use captioner::{Engine, ModelFiles, Precision};
    let pair = fixtures().join("qwen2vl").join("llamacpp-text");
    let files = ModelFiles::from_path(&pair).expect("pair files");
    let engine =
        Engine::load_with(files, &burn_tensor::Device::flex(), Precision::F32).expect("engine");
    let goldens = fixtures().join("qwen2vl/tiny-text/engine.json");
    captions_as_goldens(&engine, &goldens, Some(112));
}

#[test]
fn qwen2_5_vl_s_llama_cpp_pair_captions_as_its_folder_does() {
    // tiny-25 converted by llama.cpp's converter. Its file keeps no window size (the reader
    // takes the published 112 px; tiny-25's is 56), so the images are held to 56² px here, where
    // both sizes make one window: the pair's RMSNorms, gated MLPs and joined q/k/v and patch
    // kernels must give the folder's logits and tokens. (Its whole-image blocks, read from
    // n_wa_pattern, are checked against the folder's config.)
    use captioner::{Engine, Flow, ModelFiles, Precision};
    let load = |dir: &str| {
        let files = ModelFiles::from_path(&fixtures().join("qwen2vl").join(dir)).expect(dir);
        Engine::load_with(files, &burn_tensor::Device::flex(), Precision::F32).expect(dir)
    };
    let (folder, pair) = (load("tiny-25"), load("llamacpp-25"));
    let vision = |engine: &Engine| match engine.config() {
        captioner::config::ModelConfig::Qwen2Vl(c) => c.vision.clone(),
        _ => panic!("not Qwen2-VL"),
    };
    let (ours, theirs) = (vision(&pair), vision(&folder));
    assert_eq!(ours.fullatt_block_indexes, theirs.fullatt_block_indexes);
    assert_eq!(
        (ours.kind, ours.window_size, theirs.window_size),
        (theirs.kind, 112, 56)
    );
    let goldens = read_json(fixtures().join("qwen2vl/tiny-25/engine.json"));
    for case in goldens["cases"].as_array().unwrap() {
        let name = case["case"].as_str().unwrap();
        let (bytes, request) = case_of(case, 12, Some(56));
        let bytes: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        let run = |engine: &Engine| {
            let images = engine.preprocess_all(&bytes, Some(56)).expect(name);
            let ids = engine
                .prompt_ids(request.system.as_deref(), &request.prompt, &images)
                .expect(name);
            let (logits, _) = engine.prefill(&ids, &images).expect(name);
            let generation = engine
                .caption(&bytes, &request, &mut |_| Flow::Continue)
                .expect(name);
            (ids, tensor_values(logits), generation.tokens)
        };
        let (ids, logits, tokens) = run(&folder);
        let (pair_ids, pair_logits, pair_tokens) = run(&pair);
        assert_eq!(pair_ids, ids, "{name}: prompt ids");
        let diff = max_abs_diff(&pair_logits, &logits);
        assert!(diff <= 1e-5, "{name}: logits differ by {diff}");
        assert_eq!(pair_tokens, tokens, "{name}: tokens");
        assert_eq!(tokens.len(), 12, "{name}");
    }
}
