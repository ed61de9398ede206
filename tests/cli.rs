//! The `captioner` program end to end: it prints what the library computes.

mod common;

use burn_tensor::Device;
use captioner::{Engine, Flow, ModelFiles, Request, SamplingOptions};
use common::fixtures;
use std::process::Command;

fn captioner() -> Command {
    Command::new(env!("CARGO_BIN_EXE_captioner"))
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let engine = Engine::load(
        ModelFiles::from_path(&model).expect("files"),
        &Device::flex(),
    )
    .expect("load");
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
    assert!(err.contains("image"), "{err}");
}
