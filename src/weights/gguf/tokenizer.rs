//! The `tokenizer.json` equivalent of a GGUF's embedded tokenizer.
//!
//! A GGUF stores its tokenizer as metadata under llama.cpp's names (`tokenizer.ggml.*`). This
//! rebuilds the Hugging Face tokenizers document that transformers ends up with when it loads
//! the same file (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`, transformers 5.x), so
//! that the ids agree with transformers', not merely with llama.cpp's own tokenizer.
//!
//! Only byte-level BPE (`tokenizer.ggml.model == "gpt2"`) is supported. What transformers builds
//! for it, and what is reproduced here step by step:
//!
//! 1. The model: BPE over the file's tokens and merges, no unknown token, no dropout. A token
//!    spelled outside the byte-level alphabet is re-spelled byte by byte in it; if two tokens
//!    end up with the same spelling, the later one keeps it.
//! 2. Pre-tokenizer `ByteLevel` (GPT-2's split regex, no prefix space), or, for the
//!    `tokenizer.ggml.pre` values transformers knows a split for (llama3, qwen2, ...), that
//!    regex in a `Split` followed by `ByteLevel` without its own regex. Decoder `ByteLevel`.
//!    No normalizer.
//! 3. Added tokens, in the order transformers adds them, each with the id the tokenizers
//!    library gives it (the vocabulary id when the text is in the vocabulary, else the next
//!    free id) and the flags of the last addition:
//!    * `<|endoftext|>` as special (GPT2Tokenizer's default unk/bos/eos);
//!    * every CONTROL token (type 3) whose text is within the byte-level alphabet, as special
//!      (others are llama.cpp mislabels that transformers skips);
//!    * every USER_DEFINED token (type 4) present in the vocabulary, as a plain added token;
//!    * the tokens named by the bos/eos/unk/padding ids, as special, when not already added.
//! 4. Post-processor: `TemplateProcessing` adding bos/eos around a sequence as
//!    `tokenizer.ggml.add_bos_token` / `add_eos_token` say (both default to false here).

use super::{Gguf, GgufError, GgufValue, Result};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};

/// Token types of `tokenizer.ggml.token_type` (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Split regexes transformers uses for these `tokenizer.ggml.pre` names instead of GPT-2's.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split regex for a `tokenizer.ggml.pre` value, when transformers has one.
fn pre_tokenizer_split(pre: &str) -> Option<&'static str> {
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => LLAMA3_SPLIT,
        "tekken" => TEKKEN_SPLIT,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => QWEN2_SPLIT,
        "qwen35" => QWEN35_SPLIT,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => GPT4O_SPLIT,
        _ => return None,
    })
}

/// GPT-2's byte-to-character table: printable Latin-1 bytes stand for themselves, the other
/// 68 bytes (controls, space, 0x7f-0xa0, 0xad) map to U+0100 onwards, in byte order.
pub fn byte_level_alphabet() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for (byte, slot) in table.iter_mut().enumerate() {
        let b = byte as u32;
        let printable =
            (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        let code = if printable {
            b
        } else {
            next += 1;
            next - 1
        };
        // All codes are below U+0144, so valid chars.
        *slot = char::from_u32(code).unwrap_or('\0');
    }
    table
}

/// An entry of `added_tokens`, with the flags tokenizers serializes.
#[derive(Debug, Clone, PartialEq)]
struct AddedToken {
    content: String,
    special: bool,
}

/// The added-token bookkeeping of the tokenizers library, reduced to what the GGUF path
/// exercises: ids come from the added tokens, then the model vocabulary, then the next free id
/// past both; adding a token with the same text but other flags replaces the entry.
struct AddedVocab<'a> {
    vocab: &'a HashMap<String, u32>,
    by_id: BTreeMap<u32, AddedToken>,
    by_content: HashMap<String, u32>,
}

impl AddedVocab<'_> {
    fn contains(&self, content: &str) -> bool {
        self.by_content.contains_key(content)
    }

    fn token_to_id(&self, content: &str) -> Option<u32> {
        self.by_content
            .get(content)
            .or_else(|| self.vocab.get(content))
            .copied()
    }

    fn next_id(&self) -> u32 {
        let model_size = self.vocab.len() as u32;
        match self.by_id.keys().next_back() {
            Some(&max) if max >= model_size || model_size == 0 => max + 1,
            _ => model_size,
        }
    }

    fn add(&mut self, token: AddedToken) {
        if token.content.is_empty() || self.by_id.values().any(|t| *t == token) {
            return;
        }
        let id = match self.token_to_id(&token.content) {
            Some(id) => id,
            None => self.next_id(),
        };
        self.by_content.insert(token.content.clone(), id);
        self.by_id.insert(id, token);
    }
}

fn special(content: &str) -> AddedToken {
    AddedToken {
        content: content.to_string(),
        special: true,
    }
}

/// Reads a string array, with errors naming the key.
fn string_array<'g>(g: &'g Gguf, key: &str) -> Result<Option<Vec<&'g str>>> {
    let Some(value) = g.get(key) else {
        return Ok(None);
    };
    let wrong = || Gguf::wrong_type(key, "an array of strings", value);
    let items = value.as_array().ok_or_else(wrong)?;
    items
        .iter()
        .map(|v| v.as_str().ok_or_else(wrong))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

pub(super) fn hf_tokenizer_json(g: &Gguf) -> Result<Value> {
    let model = g.req_str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(GgufError::Unsupported(format!(
            "tokenizer.ggml.model is {model:?}; only byte-level BPE (\"gpt2\") tokenizers can be converted"
        )));
    }
    let tokens = string_array(g, "tokenizer.ggml.tokens")?
        .ok_or_else(|| GgufError::MissingKey("tokenizer.ggml.tokens".into()))?;
    let merges = string_array(g, "tokenizer.ggml.merges")?.ok_or_else(|| {
        GgufError::Unsupported(
            "tokenizer.ggml.merges is missing; a byte-level BPE tokenizer needs its merges".into(),
        )
    })?;
    let token_types: Vec<i64> = match g.get("tokenizer.ggml.token_type") {
        None => Vec::new(),
        Some(value) => {
            let wrong =
                || Gguf::wrong_type("tokenizer.ggml.token_type", "an array of integers", value);
            let items = value.as_array().ok_or_else(wrong)?;
            items
                .iter()
                .map(|v| v.as_i64().ok_or_else(wrong))
                .collect::<Result<_>>()?
        }
    };
    // The token a special-token id names, as transformers looks it up (an id past the end is an
    // error there too).
    let named = |key: &str| -> Result<Option<&str>> {
        match g.opt_u64(key)? {
            None => Ok(None),
            Some(id) => match usize::try_from(id).ok().and_then(|i| tokens.get(i)) {
                Some(t) => Ok(Some(*t)),
                None => Err(GgufError::BadValue {
                    key: key.to_string(),
                    detail: format!("id {id} is outside the {} tokens", tokens.len()),
                }),
            },
        }
    };
    let bos = named("tokenizer.ggml.bos_token_id")?;
    let eos = named("tokenizer.ggml.eos_token_id")?;
    let unk = named("tokenizer.ggml.unknown_token_id")?;
    let pad = named("tokenizer.ggml.padding_token_id")?;
    let add_bos = g.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false) && bos.is_some();
    let add_eos = g.opt_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false) && eos.is_some();
    let pre = match g.get("tokenizer.ggml.pre") {
        None => None,
        Some(GgufValue::String(s)) => Some(s.as_str()),
        Some(other) => return Err(Gguf::wrong_type("tokenizer.ggml.pre", "a string", other)),
    };

    // 1. The vocabulary, in the byte-level alphabet.
    let alphabet = byte_level_alphabet();
    // The alphabet is U+0021..U+0143 minus a few, so a table over that range decides membership.
    let mut member = [false; 0x144];
    for c in alphabet {
        member[c as usize] = true;
    }
    let in_alphabet = |c: char| member.get(c as usize).copied().unwrap_or(false);
    let mut vocab: HashMap<String, u32> = HashMap::with_capacity(tokens.len());
    for (id, token) in tokens.iter().enumerate() {
        let id = u32::try_from(id).map_err(|_| GgufError::BadValue {
            key: "tokenizer.ggml.tokens".into(),
            detail: "more than 2^32 tokens".into(),
        })?;
        let key = if token.chars().all(in_alphabet) {
            (*token).to_string()
        } else {
            token.bytes().map(|b| alphabet[b as usize]).collect()
        };
        vocab.insert(key, id);
    }
    let mut merge_pairs = Vec::with_capacity(merges.len());
    for (i, merge) in merges.iter().enumerate() {
        let mut parts = merge.split(' ');
        let (Some(left), Some(right), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(GgufError::BadValue {
                key: "tokenizer.ggml.merges".into(),
                detail: format!("merge {i} ({merge:?}) is not two tokens separated by one space"),
            });
        };
        for piece in [left, right, &format!("{left}{right}")] {
            if !vocab.contains_key(piece) {
                return Err(GgufError::BadValue {
                    key: "tokenizer.ggml.merges".into(),
                    detail: format!(
                        "merge {i} ({merge:?}) involves {piece:?}, which is not a token"
                    ),
                });
            }
        }
        merge_pairs.push(json!([left, right]));
    }

    // 3. Added tokens, in transformers' order.
    let mut added = AddedVocab {
        vocab: &vocab,
        by_id: BTreeMap::new(),
        by_content: HashMap::new(),
    };
    added.add(special("<|endoftext|>"));
    let typed = || tokens.iter().zip(token_types.iter().copied());
    for (token, _) in typed().filter(|&(_, ty)| ty == TOKEN_TYPE_CONTROL) {
        if token.chars().all(in_alphabet) {
            added.add(special(token));
        }
    }
    for (token, _) in typed().filter(|&(_, ty)| ty == TOKEN_TYPE_USER_DEFINED) {
        if added.token_to_id(token).is_some() {
            added.add(AddedToken {
                content: (*token).to_string(),
                special: false,
            });
        }
    }
    for token in [bos, eos, unk, pad].into_iter().flatten() {
        if !added.contains(token) {
            added.add(special(token));
        }
    }

    // 4. The post-processor.
    let post_processor =
        template_processing(&added, bos.filter(|_| add_bos), eos.filter(|_| add_eos));

    let added_tokens: Vec<Value> = added
        .by_id
        .iter()
        .map(|(id, t)| {
            json!({
                "id": id,
                "content": t.content,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": t.special,
            })
        })
        .collect();

    // 2. Pre-tokenizer and decoder.
    let pre_tokenizer = match pre.and_then(pre_tokenizer_split) {
        None => byte_level(false, true),
        Some(regex) => json!({
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
                byte_level(false, false),
            ],
        }),
    };

    let mut by_id: Vec<(&String, u32)> = vocab.iter().map(|(k, &v)| (k, v)).collect();
    by_id.sort_unstable_by_key(|&(_, id)| id);
    let mut vocab_json = Map::with_capacity(by_id.len());
    for (token, id) in by_id {
        vocab_json.insert(token.clone(), json!(id));
    }

    let mut root = Map::new();
    root.insert("version".into(), json!("1.0"));
    root.insert("truncation".into(), Value::Null);
    root.insert("padding".into(), Value::Null);
    root.insert("added_tokens".into(), Value::Array(added_tokens));
    root.insert("normalizer".into(), Value::Null);
    root.insert("pre_tokenizer".into(), pre_tokenizer);
    root.insert("post_processor".into(), post_processor);
    root.insert("decoder".into(), byte_level(true, true));
    root.insert(
        "model".into(),
        json!({
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": Value::Object(vocab_json),
            "merges": merge_pairs,
        }),
    );
    Ok(Value::Object(root))
}

fn byte_level(add_prefix_space: bool, use_regex: bool) -> Value {
    json!({
        "type": "ByteLevel",
        "add_prefix_space": add_prefix_space,
        "trim_offsets": true,
        "use_regex": use_regex,
    })
}

/// transformers' `update_post_processor`: `[bos] $A [eos]` for one sequence and
/// `[bos] $A [eos] [bos] $B [eos]` for a pair, the second with type id 1.
fn template_processing(added: &AddedVocab, bos: Option<&str>, eos: Option<&str>) -> Value {
    let piece_special =
        |t: &str, type_id: u32| json!({"SpecialToken": {"id": t, "type_id": type_id}});
    let piece_seq = |s: &str, type_id: u32| json!({"Sequence": {"id": s, "type_id": type_id}});
    let sequence = |s: &str, type_id: u32| {
        let mut v = Vec::new();
        if let Some(b) = bos {
            v.push(piece_special(b, type_id));
        }
        v.push(piece_seq(s, type_id));
        if let Some(e) = eos {
            v.push(piece_special(e, type_id));
        }
        v
    };
    let single = sequence("A", 0);
    let mut pair = single.clone();
    pair.extend(sequence("B", 1));
    let mut specials = Map::new();
    for t in [bos, eos].into_iter().flatten() {
        // Named tokens were all added above, so they have ids.
        let id = added.token_to_id(t).unwrap_or(0);
        specials.insert(t.to_string(), json!({"id": t, "ids": [id], "tokens": [t]}));
    }
    json!({
        "type": "TemplateProcessing",
        "single": single,
        "pair": pair,
        "special_tokens": specials,
    })
}
