//! Streaming: the per-token callback receives the caption as it grows and can stop it early.

mod common;

use burn_tensor::Device;
use captioner::{Engine, Flow, ModelFiles, Request, SamplingOptions};
use common::fixtures;

#[test]
fn pieces_add_up_to_the_caption_and_stop_works() {
    let engine = Engine::load(
        ModelFiles::from_path(&fixtures().join("tiny-b")).expect("files"),
        &Device::flex(),
    )
    .expect("load");
    let image = std::fs::read(fixtures().join("images/photo_300x500.jpg")).expect("image");
    let request = Request {
        sampling: SamplingOptions::greedy(24),
        ..Request::default()
    };
    let mut pieces = Vec::new();
    let full = engine
        .caption(&[&image], &request, &mut |piece| {
            pieces.push(piece.to_string());
            Flow::Continue
        })
        .expect("caption");
    assert!(pieces.len() > 3, "{pieces:?}");
    assert_eq!(pieces.concat().trim(), full.text);

    let mut seen = 0;
    let stopped = engine
        .caption(&[&image], &request, &mut |_| {
            seen += 1;
            if seen == 3 {
                Flow::Stop
            } else {
                Flow::Continue
            }
        })
        .expect("caption");
    assert!(stopped.tokens.len() < full.tokens.len());
    assert_eq!(stopped.tokens[..], full.tokens[..stopped.tokens.len()]);

    // Two images in one prompt: both are expanded and fed, in order.
    let other = std::fs::read(fixtures().join("images/small_100x80.png")).expect("image");
    let two = engine
        .caption(&[&image, &other], &request, &mut |_| Flow::Continue)
        .expect("two images");
    assert!(two.prompt_tokens > full.prompt_tokens);
}
