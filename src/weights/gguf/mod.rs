//! A reader for llama.cpp's GGUF files, from bytes in memory (the browser has no filesystem).
//!
//! It turns a GGUF into the pieces a Hugging Face checkpoint folder would hold:
//!
//! * [`Gguf::llama_hf_config`]: the `config.json` of a llama-architecture file;
//! * [`Gguf::llama_hf_tensors`]: every tensor under its Hugging Face Llama name, dequantized to
//!   f32, in PyTorch layout, with llama.cpp's reordering of the Q/K projection rows undone
//!   (or one at a time: [`Gguf::llama_hf_names`] and [`Gguf::llama_hf_tensor`]);
//! * [`Gguf::hf_tokenizer_json`]: a `tokenizer.json` for the embedded byte-level BPE tokenizer;
//! * [`Gguf::chat_template`]: the embedded chat template.
//!
//! Each of these reproduces what transformers does when it loads the same file with
//! `from_pretrained(..., gguf_file=...)`, so that a GGUF model behaves like transformers' reading of it.
//!
//! The container itself (header, metadata values, the tensor table, what can be wrong with a
//! file) is `crate::files::gguf`, re-exported here. On top of it: this file (tensors as f32 or
//! as stored), [`dequant`] (ggml's dequantizers), [`llama`] (the llama.cpp ↔ Hugging Face
//! mapping of a Llama text model), [`names`] (the GGUF ↔ Hugging Face name tables),
//! [`tokenizer`], [`folder`] (a text GGUF as a published folder's files), [`pair`] (a VLM as a text GGUF and an mmproj) and [`write`] (the GGUF writer
//! `captioner quantize` uses).

use super::{HostTensor, StoredTensor};
use crate::quant::{BlockMatrix, QuantType};
use serde_json::Value;
use std::sync::Arc;

mod dequant;
pub mod folder;
mod llama;
pub mod names;
pub mod pair;
mod qwen2_vl_pair;
mod tokenizer;
pub mod write;

pub use crate::files::gguf::*;
pub use dequant::{dequantize, NotDequantized};
pub use llama::{permute_rope_rows, unpermute_rope_rows, TextArch};

/// A named tensor in PyTorch layout: `(name, shape, row-major f32 values)`.
pub type HfTensor = (String, Vec<usize>, Vec<f32>);

/// A size from the metadata no model has (0, or over a bound): refused where it is read, so the
/// message names the GGUF key and not the `config.json` field it would become (the bounds are that file's,
/// `config::limits`).
fn bounded(key: &str, value: u64, max: usize) -> Result<u64> {
    if value == 0 {
        return Err(GgufError::BadValue {
            key: key.to_string(),
            detail: "is 0; it must be positive".into(),
        });
    }
    if value > max as u64 {
        return Err(GgufError::BadValue {
            key: key.to_string(),
            detail: format!(
                "{value} is larger than any model has ({max} at most); is the file damaged?"
            ),
        });
    }
    Ok(value)
}

impl Gguf {
    /// A size the model is built from, at most `max`; `None` when the key is absent.
    pub(crate) fn opt_size(&self, key: &str, max: usize) -> Result<Option<u64>> {
        self.opt_u64(key)?.map(|v| bounded(key, v, max)).transpose()
    }

    /// A size the model is built from, at most `max`, that must be there.
    pub(crate) fn req_size(&self, key: &str, max: usize) -> Result<u64> {
        bounded(key, self.req_u64(key)?, max)
    }

    /// A size that may be stored per layer (all equal), at most `max`.
    pub(crate) fn uniform_size(&self, key: &str, max: usize) -> Result<Option<u64>> {
        self.uniform_u64(key)?
            .map(|v| bounded(key, v, max))
            .transpose()
    }

    /// A tensor dequantized to f32, with its shape in PyTorch order (the reverse of ggml's).
    /// `bytes` must be the buffer the header was parsed from.
    pub fn tensor_f32(&self, bytes: &[u8], name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| GgufError::MissingTensor(name.to_string()))?;
        let data = self.data_of(bytes, info)?;
        let values = dequantize(info.ggml_type, data).map_err(|why| match why {
            NotDequantized::UnsupportedType => GgufError::UnsupportedType {
                name: info.name.clone(),
                ggml_type: info.ggml_type,
                supported: SUPPORTED_TYPES,
            },
            NotDequantized::NoMemory => GgufError::NoMemory {
                name: info.name.clone(),
                shape: info.shape(),
            },
        })?;
        Ok((info.shape(), values))
    }

    /// Tensor `gguf_name` with PyTorch shape: a Q8_0/Q4_0 matrix as its blocks, F32/F16/BF16
    /// exactly, any other type dequantized (to be re-quantized by the loader). With
    /// `rope_heads`, the rows are put back in Hugging Face's order (see
    /// [`unpermute_rope_rows`]).
    pub fn stored(
        &self,
        bytes: &[u8],
        gguf_name: &str,
        rope_heads: Option<usize>,
    ) -> Result<StoredTensor> {
        self.stored_impl(bytes, None, gguf_name, rope_heads)
    }

    /// [`Gguf::stored`] with packed blocks left in `file` (no copy) when no rows move.
    pub fn stored_in(
        &self,
        file: &Arc<Vec<u8>>,
        gguf_name: &str,
        rope_heads: Option<usize>,
    ) -> Result<StoredTensor> {
        self.stored_impl(file, Some(file), gguf_name, rope_heads)
    }

    fn stored_impl(
        &self,
        bytes: &[u8],
        share: Option<&Arc<Vec<u8>>>,
        gguf_name: &str,
        rope_heads: Option<usize>,
    ) -> Result<StoredTensor> {
        let info = self
            .tensor_info(gguf_name)
            .ok_or_else(|| GgufError::BadTensor {
                name: gguf_name.to_string(),
                detail: "not in the file".into(),
            })?;
        let bad = |detail: String| GgufError::BadTensor {
            name: gguf_name.to_string(),
            detail,
        };
        let packed = match info.ggml_type {
            GgmlType::Q8_0 => Some(QuantType::Q8_0),
            GgmlType::Q4_0 => Some(QuantType::Q4_0),
            _ => None,
        };
        let shape = info.shape();
        if let (Some(ty), [rows, cols]) = (packed, shape.as_slice()) {
            let slice = self.data_of(bytes, info)?;
            if let (Some(file), None) = (share, rope_heads) {
                let start = slice.as_ptr() as usize - file.as_ptr() as usize;
                let blocks = BlockMatrix::from_shared(ty, *rows, *cols, file.clone(), start)
                    .map_err(|e| bad(e.to_string()))?;
                return Ok(StoredTensor::Blocks(blocks));
            }
            let mut data = slice.to_vec();
            if let Some(n_head) = rope_heads {
                data = unpermute_rope_rows(data, &[*rows], n_head).map_err(bad)?;
            }
            let blocks =
                BlockMatrix::from_blocks(ty, *rows, *cols, data).map_err(|e| bad(e.to_string()))?;
            return Ok(StoredTensor::Blocks(blocks));
        }
        let exact = matches!(
            info.ggml_type,
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16
        );
        let (shape, mut values) = self.tensor_f32(bytes, gguf_name)?;
        if let Some(n_head) = rope_heads {
            values = unpermute_rope_rows(values, &shape, n_head).map_err(bad)?;
        }
        let tensor = HostTensor::new(shape, values);
        Ok(if exact {
            StoredTensor::Float(tensor)
        } else {
            StoredTensor::Dequantized(tensor)
        })
    }

    /// A `tokenizer.json` (Hugging Face tokenizers format) for the file's embedded tokenizer,
    /// built as transformers builds it from the same file; see the `tokenizer` module.
    pub fn hf_tokenizer_json(&self) -> Result<Value> {
        tokenizer::hf_tokenizer_json(self)
    }
}

#[cfg(test)]
mod tests;
