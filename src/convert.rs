//! A Hugging Face folder to SmolVLM's llama.cpp GGUF pair (`captioner quantize`): the text model
//! (architecture `llama`) and an `mmproj` file (architecture `clip`) holding the SigLIP tower and
//! the Idefics3 connector.
//!
//! [`plan`] lists every tensor of the pair from a config alone (names, shapes, storage types),
//! so sizes are known before any weight is read; a [`PairWriter`] fills the plan, tensor by
//! tensor in any order, and [`PackStream`] feeds it from safetensors bytes as they arrive (the
//! browser packs a download while it streams; [`write_pair`] is the same path on whole files). Names, metadata keys and the Q/K row order follow llama.cpp's converter, so its
//! tools can read the files too; `weights::gguf::pair` reads them back. It sits on top of the
//! weights, the prompt and the image processor, whose settings it writes into the files.
//!
//! What llama.cpp has no key for travels under `captioner.*`: the image processor settings and
//! the generation config, as the JSON they came from.

use crate::config::{Idefics3Config, ModelConfig, Qwen2VlConfig, TextConfig};
use crate::error::{Error, Result};
use crate::files::{Checkpoint, ModelFiles};
use crate::quant::{BlockMatrix, QuantType, BLOCK};
use crate::weights::gguf::names::{self, Dim};
use crate::weights::gguf::pair::{KEY_GENERATION, KEY_PROCESSOR};
use crate::weights::gguf::write::{encode, GgufWriter};
use crate::weights::gguf::{permute_rope_rows, GgmlType, GgufValue};
use crate::weights::Precision;
use serde_json::Value;
use std::collections::HashMap;
use std::ops::Range;

mod stream;
pub use stream::PackStream;

/// Which file of the pair a tensor goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Text,
    Mmproj,
}

/// One tensor of the pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub part: Part,
    pub gguf_name: String,
    pub hf_name: String,
    /// PyTorch order.
    pub shape: Vec<usize>,
    pub ty: GgmlType,
}

impl Planned {
    /// Bytes of the tensor's data in the file (before alignment padding).
    pub fn bytes(&self) -> usize {
        let n: usize = self.shape.iter().product();
        match self.ty {
            // Whole blocks (the plan packs only those): divided first, so no product of the
            // element count overflows a 32-bit usize.
            GgmlType::Q8_0 => n / BLOCK * QuantType::Q8_0.block_bytes(),
            GgmlType::Q4_0 => n / BLOCK * QuantType::Q4_0.block_bytes(),
            GgmlType::F16 => 2 * n,
            _ => 4 * n,
        }
    }
}

/// Every tensor of the model's GGUF file(s) at `precision`, in file order. Vectors stay F32,
/// and so does a matrix whose rows are not whole blocks. The vision patch embedding is F16
/// (exact for a bf16 checkpoint's values but below F16's normal range, |x| < 6.1e-5) and the
/// position table Q8_0, as [`Precision`] holds it: at SmolVLM-256M's size these 2 MB are what
/// bring the default pair under 150 MB. llama.cpp adds the position table to f32 activations
/// and cannot take it packed; `for_llama_cpp` keeps it F32, as its converter does (2.3 MB more).
pub fn plan(config: &ModelConfig, precision: Precision, for_llama_cpp: bool) -> Vec<Planned> {
    let mut out = Vec::new();
    let (text, text_prefix) = match config {
        ModelConfig::Idefics3(c) => (&c.text, "model.text_model"),
        ModelConfig::Llama(c) => (c, "model"),
        // Refused by `PairWriter::new` until the family has its GGUF names (issue 21).
        ModelConfig::Qwen2Vl(c) => (&c.text, "model"),
    };
    let mut add = |part: Part, gguf_name: String, hf_name: String, shape: Vec<usize>| {
        let ty = match shape.as_slice() {
            [_, _] if for_llama_cpp && hf_name.contains(".position_embedding.") => GgmlType::F32,
            [_, _, ..] if hf_name.contains(".patch_embedding.") => GgmlType::F16,
            [_, cols] if BlockMatrix::fits(*cols) => match precision.for_matrix(&hf_name) {
                Some(QuantType::Q8_0) => GgmlType::Q8_0,
                Some(QuantType::Q4_0) => GgmlType::Q4_0,
                None => GgmlType::F32,
            },
            _ => GgmlType::F32,
        };
        out.push(Planned {
            part,
            gguf_name,
            hf_name,
            shape,
            ty,
        });
    };
    text_plan(text, text_prefix, &mut |g, h, s| add(Part::Text, g, h, s));
    if let ModelConfig::Idefics3(c) = config {
        vision_plan(c, &mut |g, h, s| add(Part::Mmproj, g, h, s));
    }
    out
}

type Add<'a> = dyn FnMut(String, String, Vec<usize>) + 'a;

fn text_plan(c: &TextConfig, p: &str, add: &mut Add) {
    let size = |dim: &Dim| match dim {
        Dim::Hidden => c.hidden_size,
        Dim::Query => c.num_attention_heads * c.head_dim,
        Dim::KeyValue => c.num_key_value_heads * c.head_dim,
        Dim::Inner => c.intermediate_size,
    };
    let (gguf, hf) = names::LLAMA_EMBEDDING;
    add(
        gguf.into(),
        format!("{p}.{hf}"),
        vec![c.vocab_size, c.hidden_size],
    );
    for l in 0..c.num_hidden_layers {
        for (g, hf, shape) in names::LLAMA_BLOCK {
            add(
                format!("blk.{l}.{g}.weight"),
                format!("{p}.layers.{l}.{hf}.weight"),
                shape.iter().map(size).collect(),
            );
        }
    }
    let (gguf, hf) = names::LLAMA_FINAL_NORM;
    add(gguf.into(), format!("{p}.{hf}"), vec![c.hidden_size]);
    if !c.tie_word_embeddings {
        let (gguf, hf) = names::LLAMA_HEAD;
        add(gguf.into(), hf.into(), vec![c.vocab_size, c.hidden_size]);
    }
}

/// Adds a tensor outside the blocks, named by its `(GGUF, Hugging Face)` pair.
fn top(add: &mut Add, (gguf, hf): (&str, &str), shape: Vec<usize>) {
    add(gguf.into(), hf.into(), shape);
}

fn vision_plan(c: &Idefics3Config, add: &mut Add) {
    let v = &c.vision;
    let (d, p) = (v.hidden_size, v.patch_size);
    let size = |dim: &Dim| match dim {
        Dim::Inner => v.intermediate_size,
        _ => d,
    };
    top(add, names::CLIP_PATCH_WEIGHT, vec![d, v.num_channels, p, p]);
    top(add, names::CLIP_PATCH_BIAS, vec![d]);
    let positions = v.patches_per_side() * v.patches_per_side();
    top(add, names::CLIP_POSITIONS, vec![positions, d]);
    for l in 0..v.num_hidden_layers {
        let hf_block = format!("{}.encoder.layers.{l}", names::VISION);
        for (g, hf, shape) in names::CLIP_BLOCK {
            let weight: Vec<usize> = shape.iter().map(size).collect();
            let bias = vec![weight[0]];
            add(
                format!("v.blk.{l}.{g}.weight"),
                format!("{hf_block}.{hf}.weight"),
                weight,
            );
            add(
                format!("v.blk.{l}.{g}.bias"),
                format!("{hf_block}.{hf}.bias"),
                bias,
            );
        }
    }
    top(add, names::CLIP_POST_NORM_WEIGHT, vec![d]);
    top(add, names::CLIP_POST_NORM_BIAS, vec![d]);
    top(
        add,
        names::CLIP_PROJECTION,
        vec![c.text.hidden_size, d * c.scale_factor * c.scale_factor],
    );
}

/// The two files' bytes; `mmproj` is `None` for a text-only model.
pub struct Pair {
    pub text: Vec<u8>,
    pub mmproj: Option<Vec<u8>>,
}

/// The pair's file names for model `stem` at `precision`, llama.cpp's way: `stem-Q8_0.gguf`
/// and `mmproj-stem-Q8_0.gguf` (a loader finds the mmproj by that prefix).
pub fn pair_names(stem: &str, precision: Precision) -> (String, String) {
    let kind = precision.name().to_uppercase();
    (
        format!("{stem}-{kind}.gguf"),
        format!("mmproj-{stem}-{kind}.gguf"),
    )
}

/// Writes `files` (a Hugging Face folder with safetensors) as a GGUF pair at `precision`.
pub fn write_pair(
    files: &ModelFiles,
    precision: Precision,
    for_llama_cpp: bool,
    name: &str,
) -> Result<Pair> {
    let Checkpoint::Safetensors(buffers) = &files.checkpoint else {
        return Err(Error::Invalid(
            "quantize reads a Hugging Face folder (config.json and safetensors)".into(),
        ));
    };
    // The browser's path, where a download is converted as it arrives: here each file comes
    // as one piece.
    let mut stream = PackStream::new(files, precision, for_llama_cpp, name)?;
    for buffer in buffers {
        stream.push(buffer)?;
        stream.end_file()?;
    }
    stream.finish()
}

/// A pair of `files`' config, tokenizer and settings whose tensors are random: a synthetic
/// model with a published model's exact shapes, for benchmarks (its captions are noise).
/// Matrices are N(0, 0.02) as in the models' initialisation, norm weights 1, biases 0.
pub fn write_random_pair(
    files: &ModelFiles,
    precision: Precision,
    for_llama_cpp: bool,
    seed: u64,
) -> Result<Pair> {
    let mut state = seed | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut writer = PairWriter::new(files, precision, for_llama_cpp, "synthetic")?;
    for index in 0..writer.planned().len() {
        let t = &writer.planned()[index];
        let n: usize = t.shape.iter().product();
        let norm = t.hf_name.contains("norm");
        let values = if t.shape.len() == 1 {
            vec![if norm { 1.0 } else { 0.0 }; n]
        } else {
            (0..n)
                .map(|_| {
                    // Box-Muller.
                    let (u, v) = (uniform(), uniform());
                    ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos() * 0.02) as f32
                })
                .collect()
        };
        writer.put(index, values)?;
    }
    writer.finish()
}

/// The pair being written. Both files are laid out whole from the plan and the folder's text
/// files up front, since every tensor's size is known; tensors are then put in any order (a
/// download brings them in its file's order, not the plan's) and each is packed straight into
/// its place. So the pack is never held twice, and the bytes are the same whatever the order.
pub struct PairWriter {
    planned: Vec<Planned>,
    by_name: HashMap<String, usize>,
    /// `lm_head.weight` is the embedding table again (tied): a checkpoint may carry it anyway.
    tied_head: bool,
    /// Query and key-value heads, whose rows llama.cpp's RoPE wants in its own order.
    heads: (usize, usize),
    text: Vec<u8>,
    mmproj: Option<Vec<u8>>,
    /// Each planned tensor's bytes in its file.
    places: Vec<Range<usize>>,
    done: Vec<bool>,
}

impl PairWriter {
    /// The pair of `files`' config at `precision`; the checkpoint in `files` is not read.
    pub fn new(
        files: &ModelFiles,
        precision: Precision,
        for_llama_cpp: bool,
        name: &str,
    ) -> Result<Self> {
        let config = ModelConfig::from_json_of(files.config_source, &files.config_json)?;
        if let ModelConfig::Qwen2Vl(_) = config {
            return Err(Error::Invalid(
                "Qwen2-VL and Qwen2.5-VL cannot be converted to GGUF yet; they load from their \
                 safetensors folder"
                    .into(),
            ));
        }
        let raw: Value = serde_json::from_str(&files.config_json)
            .map_err(|e| Error::config("config.json", e.to_string()))?;
        let planned = plan(&config, precision, for_llama_cpp);
        let (text_cfg, text_raw) = match &config {
            ModelConfig::Idefics3(c) => (&c.text, raw.get("text_config").unwrap_or(&raw)),
            ModelConfig::Llama(c) | ModelConfig::Qwen2Vl(Qwen2VlConfig { text: c, .. }) => {
                (c, &raw)
            }
        };

        let file_type = |part: Part| -> u32 {
            let types: Vec<GgmlType> = planned
                .iter()
                .filter(|t| t.part == part)
                .map(|t| t.ty)
                .collect();
            // llama.cpp's `general.file_type`: the "mostly" type.
            if types.contains(&GgmlType::Q4_0) {
                2
            } else if types.contains(&GgmlType::Q8_0) {
                7
            } else {
                0
            }
        };

        let mut text = GgufWriter::new();
        text.metadata("general.architecture", s("llama"));
        text.metadata("general.type", s("model"));
        text.metadata("general.name", s(name));
        text.metadata("general.file_type", GgufValue::U32(file_type(Part::Text)));
        text.metadata("general.quantization_version", GgufValue::U32(2));
        llama_metadata(&mut text, text_cfg);
        tokenizer_metadata(&mut text, files, text_cfg, text_raw)?;
        if let Some(g) = &files.generation_config_json {
            text.metadata(KEY_GENERATION, s(g));
        }

        let mut mmproj = match &config {
            ModelConfig::Idefics3(c) => {
                let mut w = GgufWriter::new();
                w.metadata("general.architecture", s("clip"));
                w.metadata("general.type", s("mmproj"));
                w.metadata("general.name", s(name));
                w.metadata("general.file_type", GgufValue::U32(file_type(Part::Mmproj)));
                clip_metadata(&mut w, c, files)?;
                w.metadata("general.quantization_version", GgufValue::U32(2));
                Some(w)
            }
            // (Refused above.)
            ModelConfig::Llama(_) | ModelConfig::Qwen2Vl(_) => None,
        };
        let mut places = Vec::with_capacity(planned.len());
        for part in [Part::Text, Part::Mmproj] {
            let writer = match part {
                Part::Text => Some(&mut text),
                Part::Mmproj => mmproj.as_mut(),
            };
            let Some(writer) = writer else { continue };
            for t in planned.iter().filter(|t| t.part == part) {
                writer.tensor_later(&t.gguf_name, &t.shape, t.ty, t.bytes());
            }
        }
        // Both files whole, before any weight arrives: a pack too big for memory fails here.
        let frame = |w: GgufWriter| w.into_frame().map_err(|e| Error::Weights(e.to_string()));
        let (text, text_places) = frame(text)?;
        let (mmproj, mmproj_places) = match mmproj.map(frame).transpose()? {
            Some((bytes, places)) => (Some(bytes), places),
            None => (None, Vec::new()),
        };
        let (mut in_text, mut in_mmproj) = (text_places.into_iter(), mmproj_places.into_iter());
        for t in &planned {
            let place = match t.part {
                Part::Text => in_text.next(),
                Part::Mmproj => in_mmproj.next(),
            };
            places.push(place.ok_or_else(|| Error::Invalid("a tensor without a place".into()))?);
        }
        let by_name = planned
            .iter()
            .enumerate()
            .map(|(i, t)| (t.hf_name.clone(), i))
            .collect();
        Ok(Self {
            done: vec![false; planned.len()],
            planned,
            by_name,
            tied_head: text_cfg.tie_word_embeddings,
            heads: (text_cfg.num_attention_heads, text_cfg.num_key_value_heads),
            text,
            mmproj,
            places,
        })
    }

    /// Every tensor the pair holds, in file order.
    pub fn planned(&self) -> &[Planned] {
        &self.planned
    }

    /// Where the checkpoint's tensor `hf_name` goes in [`Self::planned`], if anywhere.
    pub fn index_of(&self, hf_name: &str) -> Option<usize> {
        self.by_name.get(hf_name).copied()
    }

    /// Whether the checkpoint's tensor `hf_name` is one the pair leaves out (a tied head).
    pub fn leaves_out(&self, hf_name: &str) -> bool {
        self.tied_head && hf_name == "lm_head.weight"
    }

    /// Packs planned tensor `index` from its values (f32, PyTorch layout).
    pub fn put(&mut self, index: usize, values: Vec<f32>) -> Result<()> {
        let t = self
            .planned
            .get(index)
            .ok_or_else(|| Error::Invalid(format!("no planned tensor {index}")))?;
        if self.done[index] {
            return Err(Error::Weights(format!("tensor {} given twice", t.hf_name)));
        }
        let heads = match t.gguf_name.rsplit('.').nth(1) {
            Some("attn_q") if t.part == Part::Text => Some(self.heads.0),
            Some("attn_k") if t.part == Part::Text => Some(self.heads.1),
            _ => None,
        };
        let values = match heads {
            Some(n) => permute_rope_rows(values, t.shape[0], n),
            None => values,
        };
        // Packed with the same quantizers as quantizing on load, so both give the same blocks.
        let packed = match t.ty {
            GgmlType::Q8_0 => Some(QuantType::Q8_0),
            GgmlType::Q4_0 => Some(QuantType::Q4_0),
            _ => None,
        };
        let bytes = match (packed, t.shape.as_slice()) {
            (Some(ty), [rows, cols]) if values.len() == rows * cols => {
                BlockMatrix::quantize(ty, *rows, *cols, &values)?.into_bytes()
            }
            _ => encode(&t.gguf_name, &t.shape, &values, t.ty)
                .map_err(|e| Error::Weights(e.to_string()))?,
        };
        let place = self.places[index].clone();
        if bytes.len() != place.len() {
            return Err(Error::Invalid(format!(
                "{} packed to {} bytes, not the {} planned",
                t.hf_name,
                bytes.len(),
                place.len()
            )));
        }
        let file = match t.part {
            Part::Text => &mut self.text,
            Part::Mmproj => self
                .mmproj
                .as_mut()
                .ok_or_else(|| Error::Invalid("no mmproj".into()))?,
        };
        file[place].copy_from_slice(&bytes);
        self.done[index] = true;
        Ok(())
    }

    /// The two files, once every planned tensor is in.
    pub fn finish(self) -> Result<Pair> {
        if let Some(t) = self
            .planned
            .iter()
            .zip(&self.done)
            .find(|(_, done)| !**done)
        {
            return Err(Error::Weights(format!("missing tensor {}", t.0.hf_name)));
        }
        Ok(Pair {
            text: self.text,
            mmproj: self.mmproj,
        })
    }
}

fn s(v: &str) -> GgufValue {
    GgufValue::String(v.to_string())
}

fn u32v(v: usize) -> GgufValue {
    GgufValue::U32(v as u32)
}

fn f32s(values: &[f64]) -> GgufValue {
    GgufValue::Array(values.iter().map(|&v| GgufValue::F32(v as f32)).collect())
}

fn llama_metadata(w: &mut GgufWriter, c: &TextConfig) {
    w.metadata("llama.block_count", u32v(c.num_hidden_layers));
    w.metadata("llama.context_length", u32v(c.max_position_embeddings));
    w.metadata("llama.embedding_length", u32v(c.hidden_size));
    w.metadata("llama.feed_forward_length", u32v(c.intermediate_size));
    w.metadata("llama.attention.head_count", u32v(c.num_attention_heads));
    w.metadata("llama.attention.head_count_kv", u32v(c.num_key_value_heads));
    w.metadata("llama.rope.freq_base", GgufValue::F32(c.rope_theta as f32));
    w.metadata(
        "llama.attention.layer_norm_rms_epsilon",
        GgufValue::F32(c.rms_norm_eps as f32),
    );
    // llama.cpp assumes hidden / heads per head unless told (SmolVLM-256M: 576 / 9 = 64).
    w.metadata("llama.attention.key_length", u32v(c.head_dim));
    w.metadata("llama.attention.value_length", u32v(c.head_dim));
    w.metadata("llama.vocab_size", u32v(c.vocab_size));
    w.metadata("llama.rope.dimension_count", u32v(c.head_dim));
}

/// `tokenizer.ggml.*` from a byte-level BPE `tokenizer.json`, as llama.cpp's converter writes
/// them: one token per id up to the vocabulary size (`[PAD{id}]`, unused, where none), added
/// tokens typed control (special) or user-defined, the merges as `"a b"` strings.
fn tokenizer_metadata(
    w: &mut GgufWriter,
    files: &ModelFiles,
    c: &TextConfig,
    text_raw: &Value,
) -> Result<()> {
    let bad = |detail: &str| Error::config("tokenizer.json", detail);
    let json: Value = serde_json::from_str(
        files
            .tokenizer_json
            .as_deref()
            .ok_or_else(|| Error::MissingFile("tokenizer.json".into()))?,
    )
    .map_err(|e| bad(&e.to_string()))?;
    let model = &json["model"];
    if model["type"] != "BPE" {
        return Err(bad("only byte-level BPE tokenizers can be written to GGUF"));
    }
    let mut tokens: Vec<Option<(String, i32)>> = vec![None; c.vocab_size];
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| bad("model.vocab"))?;
    for (text, id) in vocab {
        let id = id.as_u64().ok_or_else(|| bad("a vocabulary id"))? as usize;
        if let Some(slot) = tokens.get_mut(id) {
            *slot = Some((text.clone(), 1));
        }
    }
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(text)) = (added["id"].as_u64(), added["content"].as_str()) else {
            return Err(bad("an added token without id or content"));
        };
        let ty = if added["special"].as_bool() == Some(true) {
            3
        } else {
            4
        };
        if let Some(slot) = tokens.get_mut(id as usize) {
            *slot = Some((text.to_string(), ty));
        }
    }
    let (texts, types): (Vec<GgufValue>, Vec<GgufValue>) = tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| {
            let (text, ty) = t.unwrap_or_else(|| (format!("[PAD{id}]"), 5));
            (GgufValue::String(text), GgufValue::I32(ty))
        })
        .unzip();
    let merges: Vec<GgufValue> = model["merges"]
        .as_array()
        .ok_or_else(|| bad("model.merges"))?
        .iter()
        .map(|m| match m {
            Value::String(s) => Ok(GgufValue::String(s.clone())),
            Value::Array(pair) => match (pair.first(), pair.get(1)) {
                (Some(Value::String(a)), Some(Value::String(b))) => {
                    Ok(GgufValue::String(format!("{a} {b}")))
                }
                _ => Err(bad("a merge that is not two strings")),
            },
            _ => Err(bad("a merge that is not a string")),
        })
        .collect::<Result<_>>()?;
    w.metadata("tokenizer.ggml.model", s("gpt2"));
    w.metadata("tokenizer.ggml.pre", s("smollm"));
    w.metadata("tokenizer.ggml.tokens", GgufValue::Array(texts));
    w.metadata("tokenizer.ggml.token_type", GgufValue::Array(types));
    w.metadata("tokenizer.ggml.merges", GgufValue::Array(merges));
    // As llama.cpp's converter: the special tokens tokenizer_config.json names (SmolVLM's eos
    // is `<end_of_utterance>`), else the config's ids.
    let tokenizer_config: Value = files
        .tokenizer_config_json
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null);
    let id_of = |text: &str| -> Option<u64> {
        vocab.get(text).and_then(Value::as_u64).or_else(|| {
            json["added_tokens"]
                .as_array()?
                .iter()
                .find(|t| t["content"] == text)?["id"]
                .as_u64()
        })
    };
    for (key, token, id_field) in [
        ("tokenizer.ggml.bos_token_id", "bos_token", "bos_token_id"),
        ("tokenizer.ggml.eos_token_id", "eos_token", "eos_token_id"),
        (
            "tokenizer.ggml.unknown_token_id",
            "unk_token",
            "unk_token_id",
        ),
        (
            "tokenizer.ggml.padding_token_id",
            "pad_token",
            "pad_token_id",
        ),
    ] {
        let named = &tokenizer_config[token];
        let text = named.as_str().or_else(|| named["content"].as_str());
        let id = text
            .and_then(id_of)
            .or_else(|| text_raw[id_field].as_u64())
            .filter(|&id| (id as usize) < c.vocab_size);
        if let Some(id) = id {
            w.metadata(key, GgufValue::U32(id as u32));
        }
    }
    w.metadata("tokenizer.ggml.add_bos_token", GgufValue::Bool(false));
    let template = match &files.chat_template {
        Some(t) => Some(t.clone()),
        None => crate::prompt::find_chat_template(
            files.chat_template_json.as_deref(),
            files.tokenizer_config_json.as_deref(),
        )?,
    };
    if let Some(t) = template {
        w.metadata("tokenizer.chat_template", s(&t));
    }
    Ok(())
}

fn clip_metadata(w: &mut GgufWriter, c: &Idefics3Config, files: &ModelFiles) -> Result<()> {
    let v = &c.vision;
    let processor = crate::preprocess::config::ImageProcessorConfig::from_files(
        files.processor_config_json.as_deref(),
        files.preprocessor_config_json.as_deref(),
    )?
    .ok_or_else(|| Error::MissingFile("preprocessor_config.json".into()))?;
    w.metadata("clip.has_vision_encoder", GgufValue::Bool(true));
    w.metadata("clip.projector_type", s("idefics3"));
    w.metadata("clip.vision.projection_dim", u32v(c.text.hidden_size));
    w.metadata("clip.vision.image_size", u32v(v.image_size));
    w.metadata("clip.vision.patch_size", u32v(v.patch_size));
    w.metadata("clip.vision.embedding_length", u32v(v.hidden_size));
    w.metadata("clip.vision.feed_forward_length", u32v(v.intermediate_size));
    w.metadata("clip.vision.block_count", u32v(v.num_hidden_layers));
    w.metadata(
        "clip.vision.attention.head_count",
        u32v(v.num_attention_heads),
    );
    w.metadata(
        "clip.vision.attention.layer_norm_epsilon",
        GgufValue::F32(v.layer_norm_eps as f32),
    );
    w.metadata("clip.vision.image_mean", f32s(&processor.image_mean));
    w.metadata("clip.vision.image_std", f32s(&processor.image_std));
    w.metadata("clip.vision.projector.scale_factor", u32v(c.scale_factor));
    w.metadata("clip.use_gelu", GgufValue::Bool(true));
    if let Some(edge) = processor.size.longest_edge {
        w.metadata("clip.vision.preproc_image_size", GgufValue::U32(edge));
    }
    w.metadata(KEY_PROCESSOR, s(&processor.to_json().to_string()));
    Ok(())
}

/// Exact tensor bytes of each file of the pair, for a size table.
pub fn planned_bytes(planned: &[Planned]) -> (usize, usize) {
    let sum = |part| {
        planned
            .iter()
            .filter(|t| t.part == part)
            .map(Planned::bytes)
            .sum()
    };
    (sum(Part::Text), sum(Part::Mmproj))
}
