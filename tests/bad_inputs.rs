//! Bad model folders and bad images give errors that say what is wrong, never a panic.

mod common;

use burn_tensor::Device;
use captioner::{Engine, Error, Flow, ModelFiles, Request, SamplingOptions};
use common::fixtures;
use std::path::Path;

/// A scratch copy of a fixture model that a test may break.
fn copy_model(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(fixtures().join(name)).expect("fixture") {
        let path = entry.expect("entry").path();
        let file = path.file_name().expect("name");
        if file.to_string_lossy().starts_with("goldens") {
            continue;
        }
        std::fs::copy(&path, dir.path().join(file)).expect("copy");
    }
    dir
}

fn load(dir: &Path) -> Result<Engine, Error> {
    Engine::load(ModelFiles::from_path(dir)?, &Device::flex())
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
    edit(&mut v);
    std::fs::write(path, v.to_string()).expect("write");
}

#[test]
fn missing_files_are_named() {
    for (file, expect) in [
        ("tokenizer.json", "tokenizer.json"),
        ("config.json", "config.json"),
        ("model.safetensors", "model.safetensors"),
        ("preprocessor_config.json", "preprocessor_config.json"),
    ] {
        let dir = copy_model("tiny-b");
        std::fs::remove_file(dir.path().join(file)).expect("remove");
        let err = load(dir.path())
            .err()
            .unwrap_or_else(|| panic!("loads without {file}"));
        assert!(err.to_string().contains(expect), "without {file}: {err}");
    }
    let err = load(Path::new("/nonexistent/model"))
        .err()
        .expect("no folder");
    assert!(err.to_string().contains("/nonexistent/model"), "{err}");
}

#[test]
fn truncated_weights_are_an_error() {
    let dir = copy_model("tiny-a");
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).expect("read");
    for cut in [0, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).expect("write");
        let err = load(dir.path())
            .err()
            .unwrap_or_else(|| panic!("loads cut at {cut}"));
        assert!(matches!(err, Error::Safetensors(_)), "cut at {cut}: {err}");
    }
}

#[test]
fn shapes_that_disagree_with_the_config_are_listed() {
    let dir = copy_model("tiny-a");
    edit_json(&dir.path().join("config.json"), |c| {
        c["text_config"]["intermediate_size"] = 48.into();
    });
    let err = load(dir.path())
        .err()
        .expect("wrong shapes load")
        .to_string();
    assert!(err.contains("wrong shapes"), "{err}");
    assert!(
        err.contains("model.text_model.layers.0.mlp.gate_proj.weight"),
        "{err}"
    );
    assert!(err.contains("expected [48, 32]"), "{err}");

    let dir = copy_model("tiny-a");
    edit_json(&dir.path().join("config.json"), |c| {
        c["text_config"]["num_hidden_layers"] = 1.into();
    });
    let err = load(dir.path())
        .err()
        .expect("extra layer loads")
        .to_string();
    assert!(
        err.contains("unexpected tensors: model.text_model.layers.1."),
        "{err}"
    );

    let dir = copy_model("tiny-a");
    edit_json(&dir.path().join("config.json"), |c| {
        c["vision_config"]["num_hidden_layers"] = 3.into();
    });
    let err = load(dir.path())
        .err()
        .expect("missing layer loads")
        .to_string();
    assert!(
        err.contains("missing tensors: model.vision_model.encoder.layers.2."),
        "{err}"
    );
}

/// Sizes no model has: the loader used to build a vector of 2^31 layers (an abort on a 13 TB
/// allocation), a RoPE table of 2^39 frequencies, or overflow multiplying a tile's patches.
/// Now the config is refused, naming the field, before anything is allocated from it.
#[test]
fn sizes_past_any_model_are_refused_before_loading() {
    for (section, key, value) in [
        ("text_config", "num_hidden_layers", 1u64 << 31),
        ("text_config", "num_hidden_layers", 1 << 63),
        ("text_config", "head_dim", 1 << 40),
        ("vision_config", "num_hidden_layers", 1 << 31),
        ("vision_config", "image_size", 1 << 40),
    ] {
        let dir = copy_model("tiny-b");
        edit_json(&dir.path().join("config.json"), |c| {
            c[section][key] = value.into();
        });
        let err = load(dir.path()).err().expect("loads").to_string();
        let field = format!("config.json: {section}.{key}: {value} is larger than any model has");
        assert!(err.contains(&field), "{err}");
    }
}

/// Tiles of another size than the vision tower's read past its position table (a panic in
/// burn's gather): the processor and the model must agree on the tile.
#[test]
fn a_tile_size_the_vision_tower_does_not_take_is_refused() {
    let dir = copy_model("tiny-b");
    edit_json(&dir.path().join("preprocessor_config.json"), |c| {
        c["max_image_size"]["longest_edge"] = 32.into();
    });
    let err = load(dir.path()).err().expect("loads").to_string();
    assert!(
        err.contains("preprocessor_config.json: max_image_size.longest_edge is 32 but the vision tower takes tiles of 64 px"),
        "{err}"
    );
}

/// A model file that is not a regular file is refused by name: a FIFO would block the load
/// for ever and `/dev/zero` would be read until memory ran out (here `/dev/null`, which
/// neither does, so that the test fails rather than hangs if the check goes).
#[cfg(unix)]
#[test]
fn a_model_file_that_is_a_device_is_refused() {
    let dir = copy_model("tiny-b");
    let tokenizer = dir.path().join("tokenizer.json");
    std::fs::remove_file(&tokenizer).expect("remove");
    std::os::unix::fs::symlink("/dev/null", &tokenizer).expect("symlink");
    let err = load(dir.path()).err().expect("loads").to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("not a regular file"),
        "{err}"
    );
}

/// A damaged mmproj, cut anywhere or with sizes no model has, is named in the error (it was
/// "two .gguf files must be a text model and its mmproj", whatever the damage), and two text
/// models are told apart.
#[test]
fn a_damaged_mmproj_is_named() {
    let pair = fixtures().join("llamacpp-pair");
    let text = std::fs::read(pair.join("tiny-b-Q8_0.gguf")).expect("text");
    let mmproj = std::fs::read(pair.join("mmproj-tiny-b-Q8_0.gguf")).expect("mmproj");
    let named = |mmproj: Vec<u8>| {
        ModelFiles::from_named([
            ("tiny-b-Q8_0.gguf".to_string(), text.clone()),
            ("mmproj-tiny-b-Q8_0.gguf".to_string(), mmproj),
        ])
        .and_then(|files| Engine::load(files, &Device::flex()))
    };
    assert!(named(mmproj.clone()).is_ok(), "the whole pair loads");
    for cut in [0, 4, 24, 100, 1000, mmproj.len() / 2, mmproj.len() - 1] {
        let err = named(mmproj[..cut].to_vec())
            .err()
            .unwrap_or_else(|| panic!("loads cut at {cut}"))
            .to_string();
        assert!(err.contains("mmproj"), "cut at {cut}: {err}");
        assert!(!err.contains("must be a text model"), "cut at {cut}: {err}");
    }
    // A size no vision tower has, or none at all, names the mmproj and its GGUF key.
    for (key, value, says) in [
        (
            "clip.vision.embedding_length",
            u32::MAX,
            "4294967295 is larger than any model has",
        ),
        ("clip.vision.patch_size", 0, "is 0; it must be positive"),
    ] {
        let marker = [key.as_bytes(), &4u32.to_le_bytes()].concat();
        let at = mmproj
            .windows(marker.len())
            .position(|w| w == marker)
            .unwrap_or_else(|| panic!("{key} is a u32 in the mmproj"))
            + marker.len();
        let mut patched = mmproj.clone();
        patched[at..at + 4].copy_from_slice(&value.to_le_bytes());
        let err = named(patched).err().expect("refused").to_string();
        assert!(
            err.starts_with("mmproj-tiny-b-Q8_0.gguf: ")
                && err.contains(&format!("{key:?}: {says}")),
            "{err}"
        );
    }
    let err = ModelFiles::from_named([
        ("a.gguf".to_string(), text.clone()),
        ("b.gguf".to_string(), text.clone()),
    ])
    .err()
    .expect("two text models")
    .to_string();
    assert!(err.contains("a.gguf is llama, b.gguf is llama"), "{err}");
}

/// A safetensors file holding `tensors` (name, shape), zeros as f32.
fn safetensors_with(tensors: &[(&str, Vec<usize>)]) -> Vec<u8> {
    let datas: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            (name.to_string(), shape.clone(), vec![0u8; n * 4])
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = datas
        .iter()
        .map(|(name, shape, bytes)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .expect("view");
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize(views, None).expect("serialize")
}

#[test]
fn a_checkpoint_with_no_tensors_or_a_stray_one_is_an_error() {
    // Both panicked in the vision patch embedding (the missing tensor's placeholder reshaped),
    // as a text-only checkpoint in a vision model's folder did.
    for tensors in [
        vec![],
        vec![("model.text_model.norm.weight", vec![32])],
        vec![(
            "model.vision_model.embeddings.patch_embedding.weight",
            vec![1, 2],
        )],
    ] {
        let dir = copy_model("tiny-a");
        std::fs::write(
            dir.path().join("model.safetensors"),
            safetensors_with(&tensors),
        )
        .expect("write");
        let err = load(dir.path()).err().expect("loads").to_string();
        assert!(err.contains("missing tensors: "), "{tensors:?}: {err}");
    }
}

#[test]
fn unknown_model_type_is_named() {
    let dir = copy_model("tiny-a");
    edit_json(&dir.path().join("config.json"), |c| {
        c["model_type"] = "gemma3".into();
    });
    let err = load(dir.path()).err().expect("loads").to_string();
    assert!(
        err.contains("model_type") && err.contains("gemma3"),
        "{err}"
    );
}

#[test]
fn bad_images_give_errors_through_the_engine() {
    let engine = load(&fixtures().join("tiny-a")).expect("loads");
    let request = Request {
        sampling: SamplingOptions::greedy(4),
        ..Request::default()
    };
    for file in [
        "truncated.jpg",
        "empty.jpg",
        "not_an_image.jpg",
        "huge_header.png",
    ] {
        let bytes = std::fs::read(fixtures().join("images").join(file)).expect("read");
        let err = engine
            .caption(&[&bytes], &request, &mut |_| Flow::Continue)
            .expect_err(file);
        assert!(matches!(err, Error::Image(_)), "{file}: {err}");
    }
    // A 1x1 image is tiny but valid.
    let one = std::fs::read(fixtures().join("images/one_by_one.png")).expect("read");
    let caption = engine
        .caption(&[&one], &request, &mut |_| Flow::Continue)
        .expect("1x1 captions");
    assert!(caption.tokens.len() <= 4);
}
