//! The `captioner` program end to end: it prints what the library computes.

mod common;

use burn_tensor::Device;
use captioner::{Engine, Flow, ModelFiles, Preset, Request, SamplingOptions};
use common::{fixtures, stored_values, wgpu_device};
use std::process::Command;

fn captioner() -> Command {
    Command::new(env!("CARGO_BIN_EXE_captioner"))
}

/// Fails with what the command said unless it succeeded.
fn assert_succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The model folder `model` loaded as the library loads it, on the CPU.
fn library_engine(model: &std::path::Path) -> Engine {
    Engine::load(
        ModelFiles::from_path(model).expect("files"),
        &Device::flex(),
    )
    .expect("load")
}

#[test]
fn caption_prints_the_library_caption() {
    let model = fixtures().join("tiny-b");
    let image = fixtures().join("images/photo_640x480.jpg");
    let out = captioner()
        .args([
            "caption",
            "--temperature",
            "0",
            "--max-tokens",
            "8",
            "--prompt",
            "What is this?",
        ])
        .arg("--model")
        .arg(&model)
        .arg("--image")
        .arg(&image)
        .output()
        .expect("runs");
    assert_succeeded(&out);

    let engine = library_engine(&model);
    let request = Request {
        prompt: "What is this?".into(),
        sampling: SamplingOptions::greedy(8),
        ..Request::default()
    };
    let bytes = std::fs::read(&image).expect("image");
    let expected = engine
        .caption(&[&bytes], &request, &mut |_| Flow::Continue)
        .expect("caption");
    assert!(!expected.tokens.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end_matches('\n'),
        expected.text
    );
}

#[test]
fn the_dataflow_preset_asks_with_dataflows_system_and_user_prompts() {
    let model = fixtures().join("tiny-b");
    let image = fixtures().join("images/photo_640x480.jpg");
    let run = |extra: &[&str]| {
        captioner()
            .args(["caption", "--temperature", "0", "--max-tokens", "8", "-v"])
            .args(extra)
            .arg("--model")
            .arg(&model)
            .arg("--image")
            .arg(&image)
            .output()
            .expect("runs")
    };
    let out = run(&["--preset", "dataflow"]);
    assert_succeeded(&out);

    let engine = library_engine(&model);
    let bytes = std::fs::read(&image).expect("image");
    let caption = |request: &Request| {
        engine
            .caption(&[&bytes], request, &mut |_| Flow::Continue)
            .expect("caption")
    };
    let greedy = Request {
        sampling: SamplingOptions::greedy(8),
        ..Request::default()
    };
    let preset = caption(&greedy.clone().with_preset(Preset::Dataflow));
    // DataFlow's words: its user prompt after the image, its system prompt as a turn of its own.
    let words = caption(&Request {
        prompt: "Please provide a comprehensive description of the image.".into(),
        system: Some(
            "You are a image caption generator. Your task is to generate a concise and \
             informative caption for the given image content."
                .into(),
        ),
        ..greedy.clone()
    });
    assert_eq!(preset.tokens, words.tokens);
    assert_eq!(preset.prompt_tokens, words.prompt_tokens);
    let without_system = caption(&Request {
        system: None,
        ..greedy.clone().with_preset(Preset::Dataflow)
    });
    assert!(preset.prompt_tokens > without_system.prompt_tokens);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end_matches('\n'),
        preset.text
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{} prompt tokens", preset.prompt_tokens)),
        "{stderr}"
    );

    // A preset replaces the prompts: given with either, the command is refused.
    for clash in [&["--prompt", "Hi"][..], &["--system", "Be brief."]] {
        let out = run(&[&["--preset", "dataflow"][..], clash].concat());
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("cannot be used with"), "{stderr}");
    }
}

#[test]
fn sampling_is_reproducible_by_seed() {
    let model = fixtures().join("tiny-a");
    let image = fixtures().join("images/small_100x80.png");
    let run = |seed: &str| {
        let out = captioner()
            .args([
                "caption",
                "--max-tokens",
                "12",
                "--temperature",
                "1.0",
                "--top-p",
                "0.95",
                "--seed",
                seed,
            ])
            .arg("--model")
            .arg(&model)
            .arg("--image")
            .arg(&image)
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(run("7"), run("7"));
    assert_ne!(run("7"), run("8"));
}

#[test]
fn errors_exit_non_zero_with_a_message() {
    let out = captioner()
        .args(["caption", "--model", "/nonexistent", "--image", "x.jpg"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent"), "{err}");

    let out = captioner()
        .arg("caption")
        .arg("--model")
        .arg(fixtures().join("tiny-a"))
        .arg("--image")
        .arg(fixtures().join("images/not_an_image.jpg"))
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // One line that names the file and says the cause once (it was "generation failed", then
    // the cause twice, without the file).
    let cause = "not a recognised image: expected JPEG, PNG, WebP, GIF, BMP, TIFF or ICO data";
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default();
    assert!(
        line.contains("captioning ") && line.contains("not_an_image.jpg"),
        "{err}"
    );
    assert_eq!(err.matches(cause).count(), 1, "{err}");

    // A device is refused unread (it was read to 4.2 GB before an error).
    let out = captioner()
        .arg("caption")
        .arg("--model")
        .arg(fixtures().join("tiny-a"))
        .args(["--image", "/dev/zero"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'/dev/zero' is not a regular file"), "{err}");

    // Every command reads a model's files as files: `quantize --dry-run` too.
    // (--dry-run reads config.json alone.)
    let model = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink("/dev/zero", model.path().join("config.json")).expect("link");
    let out = captioner()
        .args(["quantize", "--type", "q8_0", "--dry-run", "--model"])
        .arg(model.path())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.json") && err.contains("not a regular file"),
        "{err}"
    );

    // The size limit is the user's to set: a 2 MiB file (sparse: no disk used) is refused
    // at 1 MiB and read, to the decoder's own error, at 3.
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("big.jpg");
    std::fs::File::create(&big)
        .and_then(|f| f.set_len(2 << 20))
        .expect("sparse file");
    let with_limit = |mib: &str| {
        let out = captioner()
            .arg("caption")
            .arg("--model")
            .arg(fixtures().join("tiny-a"))
            .arg("--image")
            .arg(&big)
            .args(["--max-image-mib", mib])
            .output()
            .expect("runs");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = with_limit("1");
    assert!(
        err.contains("too large: 2 MiB (the limit is 1 MiB; --max-image-mib sets it)"),
        "{err}"
    );
    let err = with_limit("3");
    assert!(err.contains("not a recognised image"), "{err}");
}

/// The bytes `--verbose` says the weights take on the GPU, for `generate` on tiny-b.
fn device_weights(extra: &[&str]) -> u64 {
    let out = captioner()
        .args([
            "generate",
            "--device",
            "gpu",
            "--verbose",
            "--temperature",
            "0",
        ])
        .args(["--max-tokens", "2", "--prompt", "Hi"])
        .args(extra)
        .arg("--model")
        .arg(fixtures().join("tiny-b"))
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("device weights: "))
        .unwrap_or_else(|| panic!("no device weights line in:\n{stderr}"));
    line.split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a number of bytes")
}

#[test]
fn verbose_says_the_device_weights_and_auto_packs_them() {
    if wgpu_device().is_none() {
        return;
    }
    let f32_bytes = stored_values("tiny-b") * 4;
    let dense = device_weights(&["--precision", "f32"]);
    assert!(
        dense >= f32_bytes - f32_bytes / 20 && dense <= f32_bytes + f32_bytes / 20,
        "f32: {dense} bytes on the device for {f32_bytes} bytes of weights"
    );
    let auto = device_weights(&[]);
    assert!(
        auto * 3 < f32_bytes,
        "auto: {auto} bytes on the device, f32 {f32_bytes}: not packed"
    );
}

#[test]
fn caption_jsonl_captions_rows_with_qwen2_5_vl_as_transformers_generates() {
    // The tiny Qwen2.5-VL folder through the command users run: every row kept, in order, the
    // captions those transformers' model.generate gives (tests/fixtures/qwen2vl/tiny-25).
    let model = fixtures().join("qwen2vl/tiny-25");
    let goldens: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("engine.json")).expect("goldens"))
            .expect("json");
    let caption_of = |case: &str| -> String {
        let cases = goldens["cases"].as_array().expect("cases");
        let c = cases.iter().find(|c| c["case"] == case).expect(case);
        c["text"].as_str().expect("text").to_string()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("rows.jsonl");
    std::fs::write(
        &input,
        "{\"id\": 1, \"image\": [\"photo_640x480.jpg\"]}\n\
         {\"id\": 2, \"image\": [\"missing.jpg\"], \"note\": \"kept\"}\n\
         {\"id\": 3, \"image\": [\"small_100x80.png\", \"gray_200x150.png\"]}\n",
    )
    .expect("rows");
    let run = |extra: &[&str]| -> Vec<serde_json::Value> {
        let output = dir.path().join("out.jsonl");
        let _ = std::fs::remove_file(&output);
        let out = captioner()
            .args(["caption-jsonl", "--temperature", "0", "--max-tokens"])
            .arg(goldens["max_new_tokens"].to_string())
            .arg("--model")
            .arg(&model)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .arg("--image-root")
            .arg(fixtures().join("images"))
            .args(extra)
            .output()
            .expect("runs");
        assert_succeeded(&out);
        std::fs::read_to_string(&output)
            .expect("output")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON row"))
            .collect()
    };

    let rows = run(&[]);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["id"], 1);
    assert_eq!(rows[0]["caption"], caption_of("one image").as_str());
    assert_eq!(
        (rows[1]["id"].clone(), rows[1]["note"].clone()),
        (2.into(), "kept".into())
    );
    assert!(
        rows[1]["caption"].is_null() && rows[1]["error"].is_string(),
        "{}",
        rows[1]
    );
    assert_eq!(rows[2]["id"], 3);

    let rows = run(&["--preset", "dataflow"]);
    assert_eq!(
        rows[2]["caption"],
        caption_of("two images, DataFlow's words").as_str()
    );
}
