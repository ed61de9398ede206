//! A llama-architecture GGUF as Hugging Face's Llama: its `config.json`, tensor names and
//! Q/K row order, as transformers reads the same file.

use super::names::llama_hf_name;
use super::{Gguf, GgufError, GgufValue, HfTensor, Result};
use crate::config::limits;
use crate::weights::StoredTensor;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The decoder architectures read here: Llama, and Qwen2-VL's Qwen2 decoder (`qwen2vl`: biases
/// on q, k and v, M-RoPE, and rows as Hugging Face has them, since ggml's NeoX-style RoPE
/// rotates halves as Hugging Face does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextArch {
    Llama,
    Qwen2Vl,
}

impl TextArch {
    /// The prefix of its metadata keys.
    fn key(self, name: &str) -> String {
        match self {
            TextArch::Llama => format!("llama.{name}"),
            TextArch::Qwen2Vl => format!("qwen2vl.{name}"),
        }
    }
}

impl Gguf {
    /// The file's decoder architecture, if it is one read here.
    pub fn text_arch(&self) -> Result<TextArch> {
        match self.architecture()? {
            "llama" => Ok(TextArch::Llama),
            "qwen2vl" => Ok(TextArch::Qwen2Vl),
            other => Err(GgufError::Unsupported(format!(
                "general.architecture is {other:?}; only \"llama\" and \"qwen2vl\" are supported"
            ))),
        }
    }

    /// The Hugging Face `config.json` equivalent of a llama-architecture GGUF, with the values
    /// transformers derives from the same file (floats stored as float32 are widened exactly,
    /// as Python reads them: `rms_norm_eps` 1e-5 comes out as 9.999999747378752e-06).
    pub fn llama_hf_config(&self) -> Result<Value> {
        let arch = self.text_arch()?;
        let k = |name: &str| arch.key(name);
        let hidden = self.req_size(&k("embedding_length"), limits::WIDTH)?;
        let heads = self.req_size(&k("attention.head_count"), limits::HEADS)?;
        let kv_heads = self
            .uniform_size(&k("attention.head_count_kv"), limits::HEADS)?
            .unwrap_or(heads);
        let layers = self.req_size(&k("block_count"), limits::LAYERS)?;
        let intermediate = self
            .uniform_size(&k("feed_forward_length"), limits::WIDTH)?
            .ok_or_else(|| GgufError::MissingKey(k("feed_forward_length")))?;
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(GgufError::BadValue {
                key: k("attention.head_count_kv"),
                detail: format!("{kv_heads} KV heads do not divide {heads} attention heads"),
            });
        }
        // transformers takes head_dim from the RoPE width (right for Llama, where RoPE covers
        // the whole head); LlamaConfig's default is hidden_size / heads.
        let head_dim = match self.opt_size(&k("rope.dimension_count"), limits::HEAD_DIM)? {
            Some(d) => d,
            None => match self.opt_size(&k("attention.key_length"), limits::HEAD_DIM)? {
                Some(d) => d,
                None => hidden / heads,
            },
        };
        // As transformers: the metadata count, else the number of tokens.
        let vocab_size = match self.opt_size(&k("vocab_size"), limits::VOCAB)? {
            Some(v) => v,
            None => match self
                .get("tokenizer.ggml.tokens")
                .and_then(GgufValue::as_array)
            {
                Some(tokens) => tokens.len() as u64,
                None => self
                    .tensor_info("token_embd.weight")
                    .and_then(|t| t.dims.get(1).copied())
                    .ok_or_else(|| GgufError::MissingKey(k("vocab_size")))?,
            },
        };
        let mut c = Map::new();
        c.insert("model_type".into(), json!("llama"));
        c.insert("architectures".into(), json!(["LlamaForCausalLM"]));
        c.insert("hidden_size".into(), json!(hidden));
        c.insert("intermediate_size".into(), json!(intermediate));
        c.insert("num_hidden_layers".into(), json!(layers));
        c.insert("num_attention_heads".into(), json!(heads));
        c.insert("num_key_value_heads".into(), json!(kv_heads));
        c.insert("head_dim".into(), json!(head_dim));
        c.insert("hidden_act".into(), json!("silu"));
        // LlamaConfig's defaults where the file is silent.
        let eps = self
            .opt_f64(&k("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-6);
        c.insert("rms_norm_eps".into(), json!(eps));
        let theta = self.opt_f64(&k("rope.freq_base"))?.unwrap_or(10_000.0);
        c.insert("rope_theta".into(), json!(theta));
        let max_pos = self
            .opt_size(&k("context_length"), limits::CONTEXT)?
            .unwrap_or(2048);
        c.insert("max_position_embeddings".into(), json!(max_pos));
        c.insert("vocab_size".into(), json!(vocab_size));
        c.insert("attention_bias".into(), json!(false));
        c.insert("mlp_bias".into(), json!(false));
        // llama.cpp writes `output.weight` only when it differs from the embedding.
        let tied = self.tensor_info("output.weight").is_none();
        c.insert("tie_word_embeddings".into(), json!(tied));
        for (key, name) in [
            ("tokenizer.ggml.bos_token_id", "bos_token_id"),
            ("tokenizer.ggml.eos_token_id", "eos_token_id"),
            ("tokenizer.ggml.padding_token_id", "pad_token_id"),
        ] {
            if let Some(id) = self.opt_u64(key)? {
                c.insert(name.into(), json!(id));
            }
        }
        c.insert("torch_dtype".into(), json!("float32"));
        if arch == TextArch::Qwen2Vl {
            // Qwen2-VL's text config as transformers 5 writes it: M-RoPE's sections (llama.cpp
            // keeps a fourth, unused) under rope_parameters.
            let sections = self
                .get(&k("rope.dimension_sections"))
                .and_then(GgufValue::as_array)
                .ok_or_else(|| GgufError::MissingKey(k("rope.dimension_sections")))?;
            let sections: Vec<u64> = sections
                .iter()
                .take(3)
                .filter_map(GgufValue::as_u64)
                .collect();
            c.insert("model_type".into(), json!("qwen2_vl_text"));
            c.insert(
                "architectures".into(),
                json!(["Qwen2VLForConditionalGeneration"]),
            );
            c.insert(
                "rope_parameters".into(),
                json!({"rope_type": "default", "rope_theta": theta, "mrope_section": sections}),
            );
        }
        Ok(Value::Object(c))
    }

    /// Every tensor of a llama-architecture GGUF under its Hugging Face name, dequantized to
    /// f32, with PyTorch shapes, in file order. The Q and K projections get their rows put back
    /// in Hugging Face's order (see [`unpermute_rope_rows`]). Unknown tensor names are an error
    /// listing all of them.
    ///
    /// This holds the whole model in f32 at once; to convert one tensor at a time, walk
    /// [`Gguf::llama_hf_names`] and call [`Gguf::llama_hf_tensor`].
    pub fn llama_hf_tensors(&self, bytes: &[u8]) -> Result<Vec<HfTensor>> {
        self.llama_hf_names()?
            .iter()
            .map(|(gguf_name, _)| self.llama_hf_tensor(bytes, gguf_name))
            .collect()
    }

    /// `(GGUF name, Hugging Face name)` of every tensor of a llama-architecture GGUF, in file
    /// order; an error listing the tensors that have no Hugging Face Llama counterpart.
    pub fn llama_hf_names(&self) -> Result<Vec<(String, String)>> {
        let layers = self.req_size(&self.text_arch()?.key("block_count"), limits::LAYERS)?;
        let mut names = Vec::with_capacity(self.tensors.len());
        let mut unknown = Vec::new();
        for t in &self.tensors {
            match llama_hf_name(&t.name, layers) {
                Some(hf) => names.push((t.name.clone(), hf)),
                None => unknown.push(t.name.clone()),
            }
        }
        if !unknown.is_empty() {
            return Err(GgufError::UnknownTensors {
                architecture: "llama".into(),
                names: unknown,
            });
        }
        Ok(names)
    }

    /// One tensor of a llama-architecture GGUF, by its GGUF name, as [`Gguf::llama_hf_tensors`]
    /// returns it.
    pub fn llama_hf_tensor(&self, bytes: &[u8], gguf_name: &str) -> Result<HfTensor> {
        let layers = self.req_size(&self.text_arch()?.key("block_count"), limits::LAYERS)?;
        let Some(hf_name) = llama_hf_name(gguf_name, layers) else {
            return Err(GgufError::UnknownTensors {
                architecture: "llama".into(),
                names: vec![gguf_name.to_string()],
            });
        };
        let (shape, mut values) = self.tensor_f32(bytes, gguf_name)?;
        if let Some(n_head) = self.rope_heads(gguf_name)? {
            values = unpermute_rope_rows(values, &shape, n_head).map_err(|detail| {
                GgufError::BadTensor {
                    name: gguf_name.to_string(),
                    detail,
                }
            })?;
        }
        Ok((hf_name, shape, values))
    }

    /// Like [`Gguf::llama_hf_tensor`], but a Q8_0 or Q4_0 matrix comes back as its packed
    /// blocks, untouched (rows un-permuted whole), instead of as f32.
    pub fn llama_hf_stored(&self, bytes: &[u8], gguf_name: &str) -> Result<(String, StoredTensor)> {
        let (hf_name, heads) = self.llama_name_and_heads(gguf_name)?;
        Ok((hf_name, self.stored_impl(bytes, None, gguf_name, heads)?))
    }

    /// [`Gguf::llama_hf_stored`] with the blocks left in `file` (no copy) where their rows are
    /// in order already.
    pub fn llama_hf_stored_in(
        &self,
        file: &Arc<Vec<u8>>,
        gguf_name: &str,
    ) -> Result<(String, StoredTensor)> {
        let (hf_name, heads) = self.llama_name_and_heads(gguf_name)?;
        let stored = self.stored_impl(file, Some(file), gguf_name, heads)?;
        Ok((hf_name, stored))
    }

    /// The Hugging Face name of a llama tensor and the head count its rows were permuted by.
    fn llama_name_and_heads(&self, gguf_name: &str) -> Result<(String, Option<usize>)> {
        let layers = self.req_size(&self.text_arch()?.key("block_count"), limits::LAYERS)?;
        let hf_name =
            llama_hf_name(gguf_name, layers).ok_or_else(|| GgufError::UnknownTensors {
                architecture: "llama".into(),
                names: vec![gguf_name.to_string()],
            })?;
        Ok((hf_name, self.rope_heads(gguf_name)?))
    }

    /// The head count whose RoPE permutation llama.cpp applied to this tensor's rows, if any.
    fn rope_heads(&self, gguf_name: &str) -> Result<Option<usize>> {
        if self.text_arch()? == TextArch::Qwen2Vl {
            return Ok(None);
        }
        let heads = if gguf_name.ends_with(".attn_q.weight") {
            Some(self.req_size("llama.attention.head_count", limits::HEADS)?)
        } else if gguf_name.ends_with(".attn_k.weight") {
            match self.uniform_size("llama.attention.head_count_kv", limits::HEADS)? {
                Some(kv) => Some(kv),
                None => Some(self.req_size("llama.attention.head_count", limits::HEADS)?),
            }
        } else {
            None
        };
        heads
            .map(|n| {
                usize::try_from(n).map_err(|_| GgufError::BadTensor {
                    name: gguf_name.to_string(),
                    detail: "absurd head count".into(),
                })
            })
            .transpose()
    }
}

/// Undoes llama.cpp's reordering of a Q or K projection.
///
/// ggml's RoPE rotates adjacent pairs of a head's dimensions (0,1), (2,3), ..., while Hugging
/// Face's Llama rotates the two halves against each other (d, d + head_dim/2). llama.cpp's
/// converter therefore interleaves the output rows of each head: its row `2d + j` is Hugging
/// Face's row `j * head_dim/2 + d` (j = 0, 1). This puts them back, as transformers' GGUF loader
/// does, with `head_dim = rows / n_head`.
pub fn unpermute_rope_rows<T: Copy>(
    mut values: Vec<T>,
    shape: &[usize],
    n_head: usize,
) -> std::result::Result<Vec<T>, String> {
    let rows = shape.first().copied().unwrap_or(0);
    let pairs = n_head.checked_mul(2).filter(|&p| p > 0);
    if pairs.is_none_or(|p| rows % p != 0) {
        return Err(format!(
            "{rows} rows cannot be split into {n_head} heads of an even size"
        ));
    }
    move_rope_rows(&mut values, rows, n_head, Order::HuggingFace);
    Ok(values)
}

/// Which order [`move_rope_rows`] puts a head's rows in.
#[derive(Clone, Copy, PartialEq)]
enum Order {
    /// Hugging Face's: the two halves of each head one after the other.
    HuggingFace,
    /// llama.cpp's: the two halves interleaved.
    LlamaCpp,
}

/// Moves the rows of each of `n_head` heads from one order to the other, in place. A row is
/// `cols` values, or, for a quantized tensor, the bytes of its blocks: rows move whole, so
/// packed blocks need no dequantization. In place because the tensor may be as large as the
/// memory left: one head's rows are copied aside at a time.
fn move_rope_rows<T: Copy>(values: &mut [T], rows: usize, n_head: usize, to: Order) {
    let cols = values.len().checked_div(rows).unwrap_or(0);
    let head_dim = rows.checked_div(n_head).unwrap_or(0);
    let half = head_dim / 2;
    let head_len = head_dim * cols;
    if head_len == 0 {
        return;
    }
    let mut aside = Vec::with_capacity(head_len);
    for head in values.chunks_exact_mut(head_len) {
        aside.clear();
        aside.extend_from_slice(head);
        for j in 0..2 {
            for d in 0..half {
                let interleaved = (2 * d + j) * cols;
                let halves = (j * half + d) * cols;
                let (src, dst) = match to {
                    Order::HuggingFace => (interleaved, halves),
                    Order::LlamaCpp => (halves, interleaved),
                };
                head[dst..dst + cols].copy_from_slice(&aside[src..src + cols]);
            }
        }
    }
}

/// llama.cpp's row order for a Q or K projection (`convert_hf_to_gguf.py`'s `permute`): within
/// each head, Hugging Face's two halves are interleaved. The inverse of
/// [`unpermute_rope_rows`].
pub fn permute_rope_rows(mut values: Vec<f32>, rows: usize, n_head: usize) -> Vec<f32> {
    move_rope_rows(&mut values, rows, n_head, Order::LlamaCpp);
    values
}
