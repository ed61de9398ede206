//! Qwen2-VL and Qwen2.5-VL as llama.cpp writes them: a GGUF pair, the Qwen2 decoder
//! (architecture `qwen2vl`) and an `mmproj` (architecture `clip`, projector `qwen2vl_merger` or
//! `qwen2.5vl_merger`) holding the vision tower and the patch merger.
//!
//! llama.cpp splits what Hugging Face keeps whole, and this puts it back: each block's q, k and
//! v (Hugging Face's one `attn.qkv`), and the 3-D patch embedding, written as one 2-D kernel per
//! frame (`v.patch_embd.weight`, `.weight.1`). What the mmproj does not say takes the published
//! models' values: merges of 2 × 2, windows of 112 px (Qwen2.5-VL), the vision rotary base
//! 10,000, and the processor's `min_pixels` / `max_pixels` of the published folders (llama.cpp
//! uses limits of its own there). Qwen2-VL's `clip.vision.feed_forward_length` holds the
//! merger's width, not the MLP's, so the MLP's comes from its tensors.

use super::folder::TextFiles;
use super::{Gguf, GgufError};
use crate::config::limits;
use crate::error::{Error, Result};
use crate::files::gguf::GgufFile;
use crate::files::{Checkpoint, ModelFiles};
use crate::weights::{HostTensor, StoredTensor, WeightSet};
use serde_json::{json, Value};

/// The Hugging Face name of the vision tower.
const VISUAL: &str = "visual";
/// The published folders' processor bounds (`preprocessor_config.json`).
const MIN_PIXELS: u64 = 3136;
const MAX_PIXELS: u64 = 12_845_056;
/// Qwen2.5-VL's window, in pixels, as published (llama.cpp does not store it).
const WINDOW_SIZE: u64 = 112;

/// Which of the family an mmproj holds, by its `clip.projector_type`.
pub fn kind_of(projector: &str) -> Option<&'static str> {
    match projector {
        "qwen2vl_merger" => Some("qwen2_vl"),
        "qwen2.5vl_merger" => Some("qwen2_5_vl"),
        _ => None,
    }
}

fn in_mmproj(e: impl Into<Error>) -> Error {
    Error::InFile {
        file: "the mmproj".into(),
        source: Box::new(e.into()),
    }
}

/// The id of `token` in a tokenizer.json value (its vocabulary or its added tokens).
fn token_id(tokenizer: &Value, token: &str) -> Result<u64> {
    tokenizer["model"]["vocab"][token]
        .as_u64()
        .or_else(|| {
            tokenizer["added_tokens"]
                .as_array()?
                .iter()
                .find(|t| t["content"] == token)?["id"]
                .as_u64()
        })
        .ok_or_else(|| Error::Invalid(format!("the text model's vocabulary has no {token}")))
}

/// The model of a Qwen2-VL / Qwen2.5-VL pair (`kind` from [`kind_of`]) as [`ModelFiles`]: the
/// text file's config and tokenizer, the vision config from the mmproj, the processor as the
/// published folders set it (with the mmproj's mean and std).
pub(super) fn pair_files(
    parts: TextFiles,
    kind: &str,
    text: GgufFile,
    mmproj: GgufFile,
) -> Result<ModelFiles> {
    let g = &mmproj.header;
    let req = |key: &str, max: usize| g.req_size(key, max).map_err(in_mmproj);
    let embed = req("clip.vision.embedding_length", limits::WIDTH)?;
    let depth = req("clip.vision.block_count", limits::LAYERS)?;
    let heads = req("clip.vision.attention.head_count", limits::HEADS)?;
    let patch = req("clip.vision.patch_size", limits::IMAGE_SIDE)?;
    let out = req("clip.vision.projection_dim", limits::WIDTH)?;
    // The MLP's inner width, from its first block (see the module docs).
    let mlp = g
        .tensor_info("v.blk.0.ffn_up.weight")
        .and_then(|t| t.dims.get(1).copied())
        .ok_or_else(|| in_mmproj(GgufError::MissingTensor("v.blk.0.ffn_up.weight".into())))?;
    let frames = if g.tensor_info("v.patch_embd.weight.1").is_some() {
        2
    } else {
        1
    };
    let mut vision = json!({
        "depth": depth,
        "num_heads": heads,
        "in_channels": 3,
        "patch_size": patch,
        "spatial_merge_size": 2,
        "temporal_patch_size": frames,
    });
    if kind == "qwen2_vl" {
        if embed == 0 {
            return Err(in_mmproj(GgufError::BadValue {
                key: "clip.vision.embedding_length".into(),
                detail: "is 0".into(),
            }));
        }
        vision["embed_dim"] = json!(embed);
        vision["hidden_size"] = json!(out);
        vision["mlp_ratio"] = json!(mlp as f64 / embed as f64);
        vision["hidden_act"] = json!("quick_gelu");
    } else {
        // Every n-th block attends to the whole image (n = clip.vision.n_wa_pattern).
        let every = req("clip.vision.n_wa_pattern", limits::LAYERS)?.max(1);
        let full: Vec<u64> = (1..=depth)
            .filter(|i| i % every == 0)
            .map(|i| i - 1)
            .collect();
        vision["hidden_size"] = json!(embed);
        vision["intermediate_size"] = json!(mlp);
        vision["out_hidden_size"] = json!(out);
        vision["hidden_act"] = json!("silu");
        vision["window_size"] = json!(WINDOW_SIZE);
        vision["fullatt_block_indexes"] = json!(full);
    }
    let tokenizer = &parts.tokenizer;
    let config = json!({
        "model_type": kind,
        "tie_word_embeddings": parts.config["tie_word_embeddings"].clone(),
        "image_token_id": token_id(tokenizer, "<|image_pad|>")?,
        "vision_start_token_id": token_id(tokenizer, "<|vision_start|>")?,
        "vision_end_token_id": token_id(tokenizer, "<|vision_end|>")?,
        "text_config": parts.config.clone(),
        "vision_config": vision,
    });
    let floats = |key: &str| -> Option<Vec<f64>> {
        g.get(key)?
            .as_array()?
            .iter()
            .map(|v| v.as_f64().filter(|x| x.is_finite()))
            .collect()
    };
    let mut processor = json!({
        "min_pixels": MIN_PIXELS,
        "max_pixels": MAX_PIXELS,
        "patch_size": patch,
        "temporal_patch_size": frames,
        "merge_size": 2,
    });
    for key in ["image_mean", "image_std"] {
        if let Some(v) = floats(&format!("clip.vision.{key}")) {
            processor[key] = json!(v);
        }
    }
    let parts = TextFiles { config, ..parts };
    let mut files = parts.into_model_files(Checkpoint::GgufPair { text, mmproj });
    files.config_source = "the GGUF pair's metadata (read as a config.json)";
    files.preprocessor_config_json = Some(processor.to_string());
    Ok(files)
}

/// The mmproj's tensors (of `family`, from [`kind_of`]) under Hugging Face's names, q/k/v and
/// the patch kernels joined.
pub(super) fn read_vision_weights(
    mmproj: &GgufFile,
    family: &str,
    set: &mut WeightSet,
) -> Result<()> {
    let g = &mmproj.header;
    let floats = |name: &str| g.tensor_f32(&mmproj.bytes, name).map_err(in_mmproj);
    let mut unknown = Vec::new();
    for name in g.tensor_names() {
        if let Some(hf) = direct_name(name, family) {
            let stored = g.stored_in(&mmproj.bytes, name, None).map_err(in_mmproj)?;
            set.insert_stored(hf, stored);
        } else if let Some(rest) = name.strip_prefix("v.blk.") {
            // q, k and v: joined under the q's name, the k's and v's taken with it.
            let Some((block, part)) = rest.split_once('.') else {
                unknown.push(name.to_string());
                continue;
            };
            let Some(kind) = part.strip_prefix("attn_q.") else {
                if !(part.starts_with("attn_k.") || part.starts_with("attn_v.")) {
                    unknown.push(name.to_string());
                }
                continue;
            };
            let (mut shape, mut values) = floats(name)?;
            for which in ["k", "v"] {
                let (s, v) = floats(&format!("v.blk.{block}.attn_{which}.{kind}"))?;
                if s != shape {
                    return Err(in_mmproj(GgufError::BadTensor {
                        name: format!("v.blk.{block}.attn_{which}.{kind}"),
                        detail: format!("shaped {s:?}, the q's {shape:?}"),
                    }));
                }
                values.extend(v);
            }
            match shape.first_mut() {
                Some(rows) => *rows *= 3,
                None => return Err(Error::Invalid(format!("{name} has no dimensions"))),
            }
            let hf = format!("{VISUAL}.blocks.{block}.attn.qkv.{kind}");
            set.insert_stored(hf, StoredTensor::Float(HostTensor::new(shape, values)));
        } else if name == "v.patch_embd.weight" {
            set.insert_stored(
                format!("{VISUAL}.patch_embed.proj.weight"),
                StoredTensor::Float(patch_kernel(g, &mmproj.bytes)?),
            );
        } else if name != "v.patch_embd.weight.1" {
            unknown.push(name.to_string());
        }
    }
    if !unknown.is_empty() {
        return Err(in_mmproj(GgufError::UnknownTensors {
            architecture: "clip (qwen2vl)".into(),
            names: unknown,
        }));
    }
    Ok(())
}

/// The Hugging Face name of an mmproj tensor of `family` that maps one to one.
fn direct_name(name: &str, family: &str) -> Option<String> {
    let top = match name {
        "v.post_ln.weight" => Some("merger.ln_q.weight"),
        "v.post_ln.bias" => Some("merger.ln_q.bias"),
        "mm.0.weight" => Some("merger.mlp.0.weight"),
        "mm.0.bias" => Some("merger.mlp.0.bias"),
        "mm.2.weight" => Some("merger.mlp.2.weight"),
        "mm.2.bias" => Some("merger.mlp.2.bias"),
        _ => None,
    };
    if let Some(top) = top {
        return Some(format!("{VISUAL}.{top}"));
    }
    let (block, part) = name.strip_prefix("v.blk.")?.split_once('.')?;
    if block.is_empty() || !block.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (role, kind) = part.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let hf = match role {
        "attn_out" => "attn.proj",
        "ln1" => "norm1",
        "ln2" => "norm2",
        // Qwen2-VL's MLP is fc1/fc2; Qwen2.5-VL's is gated.
        "ffn_gate" if family == "qwen2_5_vl" => "mlp.gate_proj",
        "ffn_up" if family == "qwen2_vl" => "mlp.fc1",
        "ffn_down" if family == "qwen2_vl" => "mlp.fc2",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("{VISUAL}.blocks.{block}.{hf}.{kind}"))
}

/// The 3-D patch embedding `[embed, 3, frames, patch, patch]` from llama.cpp's one 2-D kernel
/// per frame (`[embed, 3, patch, patch]` each).
fn patch_kernel(g: &Gguf, bytes: &[u8]) -> Result<HostTensor> {
    let (shape, first) = g
        .tensor_f32(bytes, "v.patch_embd.weight")
        .map_err(in_mmproj)?;
    let mut frames = vec![first];
    if g.tensor_info("v.patch_embd.weight.1").is_some() {
        let (second_shape, second) = g
            .tensor_f32(bytes, "v.patch_embd.weight.1")
            .map_err(in_mmproj)?;
        if second_shape != shape {
            return Err(Error::Invalid(
                "the mmproj's two patch kernels differ in shape".into(),
            ));
        }
        frames.push(second);
    }
    let [embed, channels, ph, pw] = shape[..] else {
        return Err(Error::Invalid(format!(
            "the mmproj's patch kernel has shape {shape:?}, not [embed, 3, patch, patch]"
        )));
    };
    let plane = ph * pw;
    let n = frames.len();
    let mut out = vec![0f32; embed * channels * n * plane];
    for o in 0..embed * channels {
        for (t, frame) in frames.iter().enumerate() {
            let to = (o * n + t) * plane;
            out[to..to + plane].copy_from_slice(&frame[o * plane..(o + 1) * plane]);
        }
    }
    Ok(HostTensor::new(vec![embed, channels, n, ph, pw], out))
}
