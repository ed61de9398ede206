//! The SmolVLM tokenizer and chat template against transformers (tests/fixtures/tokenizer):
//! ids, decoding with special tokens skipped, template renders, and the image token layout.

mod common;

use captioner::prompt::{find_chat_template, image_tokens, ContentStyle, ImageLayout, Prompter};
use common::*;

fn prompter() -> Prompter {
    let dir = fixtures().join("tokenizer");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect(f);
    let template = find_chat_template(Some(&read("chat_template.json")), None)
        .expect("template json")
        .expect("a template");
    Prompter::new(
        &read("tokenizer.json"),
        template,
        Some(&read("tokenizer_config.json")),
        ContentStyle::Items,
    )
    .expect("prompter")
}

#[test]
fn tokenizer_matches_transformers() {
    let p = prompter();
    let goldens = read_json(fixtures().join("tokenizer/goldens.json"));
    for (token, id) in goldens["special_ids"].as_object().expect("special ids") {
        assert_eq!(
            p.token_id(token),
            Some(id.as_u64().expect("id") as u32),
            "{token}"
        );
    }
    for case in goldens["encode"].as_array().expect("encode") {
        let text = case["text"].as_str().expect("text");
        let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).expect("ids");
        assert_eq!(p.encode(text).expect("encode"), ids, "{text:?}");
        assert_eq!(
            p.decode(&ids).expect("decode"),
            case["decoded_skip_special"].as_str().expect("decoded"),
            "{text:?}"
        );
    }
}

#[test]
fn chat_template_renders_like_transformers() {
    let p = prompter();
    let goldens = read_json(fixtures().join("tokenizer/goldens.json"));
    let renders = goldens["chat_template_renders"]
        .as_array()
        .expect("renders");
    assert!(renders.len() >= 4);
    for case in renders {
        let add = case["add_generation_prompt"].as_bool().expect("flag");
        let ours = p.render_messages(&case["messages"], add).expect("render");
        assert_eq!(ours, case["rendered"].as_str().expect("rendered"));
    }
    // The single-exchange helper the engine uses, with and without a system prompt.
    assert_eq!(
        p.render(None, "Can you describe this image?", 1)
            .expect("render"),
        "<|im_start|>User:<image>Can you describe this image?<end_of_utterance>\nAssistant:"
    );
    assert_eq!(
        p.render(Some("You are terse."), "Hi", 0).expect("render"),
        "<|im_start|>System: You are terse.<end_of_utterance>\nUser: Hi<end_of_utterance>\nAssistant:"
    );
}

#[test]
fn split_image_layout_tokenizes_to_the_published_ids() {
    // 2x2 tiles + global, 3 image tokens each: the row/col and global tokens are single ids and
    // the newline after the last row merges with the one before the global tile.
    let p = prompter();
    let text = image_tokens(ImageLayout { rows: 2, cols: 2 }, 3);
    let ids = p.encode(&text).expect("encode");
    let (fake, image, global) = (49189, 49190, 49152);
    let row_col = |r: u32, c: u32| 49152 + (r - 1) * 6 + c;
    let tile = |r, c| vec![fake, row_col(r, c), image, image, image];
    let mut expected = Vec::new();
    expected.extend(tile(1, 1));
    expected.extend(tile(1, 2));
    expected.push(p.encode("\n").expect("nl")[0]);
    expected.extend(tile(2, 1));
    expected.extend(tile(2, 2));
    expected.push(p.encode("\n\n").expect("nlnl")[0]);
    expected.extend([fake, global, image, image, image, fake]);
    assert_eq!(ids, expected);
}
