//! llama.cpp's tensor names against Hugging Face's, written once: reading a GGUF looks names up
//! here (GGUF → HF) and writing a pair walks the same tables (HF → GGUF), so the two directions
//! cannot disagree.
//!
//! Shapes are given by role ([`Dim`]); the writer turns them into numbers from the config.

/// A dimension of a tensor, by what it measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    /// The model (or vision tower) width.
    Hidden,
    /// All query heads together: `num_attention_heads * head_dim`.
    Query,
    /// All key (or value) heads together: `num_key_value_heads * head_dim`.
    KeyValue,
    /// The MLP's inner width.
    Inner,
}

use Dim::{Hidden, Inner, KeyValue, Query};

/// One tensor of a block: the GGUF part name (`blk.N.<gguf>.weight`), the Hugging Face one
/// (`…layers.N.<hf>.weight`) and the PyTorch shape.
pub type BlockTensor = (&'static str, &'static str, &'static [Dim]);

/// A Llama decoder block, in llama.cpp's file order.
pub const LLAMA_BLOCK: [BlockTensor; 9] = [
    ("attn_norm", "input_layernorm", &[Hidden]),
    ("attn_q", "self_attn.q_proj", &[Query, Hidden]),
    ("attn_k", "self_attn.k_proj", &[KeyValue, Hidden]),
    ("attn_v", "self_attn.v_proj", &[KeyValue, Hidden]),
    ("attn_output", "self_attn.o_proj", &[Hidden, Query]),
    ("ffn_norm", "post_attention_layernorm", &[Hidden]),
    ("ffn_gate", "mlp.gate_proj", &[Inner, Hidden]),
    ("ffn_up", "mlp.up_proj", &[Inner, Hidden]),
    ("ffn_down", "mlp.down_proj", &[Hidden, Inner]),
];

/// The Llama tensors outside the blocks: GGUF name and Hugging Face name below the text
/// model's prefix (`model.` for a Llama, `model.text_model.` inside Idefics3).
pub const LLAMA_EMBEDDING: (&str, &str) = ("token_embd.weight", "embed_tokens.weight");
pub const LLAMA_FINAL_NORM: (&str, &str) = ("output_norm.weight", "norm.weight");
/// The untied head; its Hugging Face name has no prefix.
pub const LLAMA_HEAD: (&str, &str) = ("output.weight", "lm_head.weight");

/// A SigLIP encoder block as llama.cpp's CLIP mmproj names it; every tensor has a weight and a
/// bias (`v.blk.N.<gguf>.{weight,bias}`), the bias shaped as the weight's first dimension.
pub const CLIP_BLOCK: [BlockTensor; 8] = [
    ("attn_q", "self_attn.q_proj", &[Hidden, Hidden]),
    ("attn_k", "self_attn.k_proj", &[Hidden, Hidden]),
    ("attn_v", "self_attn.v_proj", &[Hidden, Hidden]),
    ("attn_out", "self_attn.out_proj", &[Hidden, Hidden]),
    ("ln1", "layer_norm1", &[Hidden]),
    ("ffn_up", "mlp.fc1", &[Inner, Hidden]),
    ("ffn_down", "mlp.fc2", &[Hidden, Inner]),
    ("ln2", "layer_norm2", &[Hidden]),
];

/// The Idefics3 vision tower's prefix in Hugging Face names.
pub const VISION: &str = "model.vision_model";

/// The mmproj tensors outside the blocks: GGUF name and full Hugging Face name.
pub const CLIP_PATCH_WEIGHT: (&str, &str) = (
    "v.patch_embd.weight",
    "model.vision_model.embeddings.patch_embedding.weight",
);
pub const CLIP_PATCH_BIAS: (&str, &str) = (
    "v.patch_embd.bias",
    "model.vision_model.embeddings.patch_embedding.bias",
);
pub const CLIP_POSITIONS: (&str, &str) = (
    "v.position_embd.weight",
    "model.vision_model.embeddings.position_embedding.weight",
);
pub const CLIP_POST_NORM_WEIGHT: (&str, &str) = (
    "v.post_ln.weight",
    "model.vision_model.post_layernorm.weight",
);
pub const CLIP_POST_NORM_BIAS: (&str, &str) =
    ("v.post_ln.bias", "model.vision_model.post_layernorm.bias");
pub const CLIP_PROJECTION: (&str, &str) = (
    "mm.model.fc.weight",
    "model.connector.modality_projection.proj.weight",
);

const CLIP_TOP: [(&str, &str); 6] = [
    CLIP_PATCH_WEIGHT,
    CLIP_PATCH_BIAS,
    CLIP_POSITIONS,
    CLIP_POST_NORM_WEIGHT,
    CLIP_POST_NORM_BIAS,
    CLIP_PROJECTION,
];

/// A block index as llama.cpp writes it: plain decimal ("01" or "+1" are not its spelling),
/// below `layers` when a count is known.
fn layer_index(text: &str, layers: Option<u64>) -> Option<u64> {
    if text.is_empty()
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return None;
    }
    let index: u64 = text.parse().ok()?;
    match layers {
        Some(n) if index >= n => None,
        _ => Some(index),
    }
}

/// The Hugging Face Llama name (`model.…`, or `lm_head.weight`) of a llama.cpp tensor of a
/// model with `layers` blocks.
pub fn llama_hf_name(name: &str, layers: u64) -> Option<String> {
    for (gguf, hf) in [LLAMA_EMBEDDING, LLAMA_FINAL_NORM] {
        if name == gguf {
            return Some(format!("model.{hf}"));
        }
    }
    if name == LLAMA_HEAD.0 {
        return Some(LLAMA_HEAD.1.to_string());
    }
    let (layer, part) = name.strip_prefix("blk.")?.split_once('.')?;
    let index = layer_index(layer, Some(layers))?;
    // Qwen2's q, k and v projections have biases too.
    let (part, kind) = match part.strip_suffix(".weight") {
        Some(part) => (part, "weight"),
        None => (part.strip_suffix(".bias")?, "bias"),
    };
    if kind == "bias" && !["attn_q", "attn_k", "attn_v"].contains(&part) {
        return None;
    }
    let (_, hf, _) = LLAMA_BLOCK.iter().find(|(gguf, _, _)| *gguf == part)?;
    Some(format!("model.layers.{index}.{hf}.{kind}"))
}

/// The Hugging Face name of a tensor of an Idefics3 mmproj.
pub fn clip_hf_name(name: &str) -> Option<String> {
    if let Some((_, hf)) = CLIP_TOP.iter().find(|(gguf, _)| *gguf == name) {
        return Some(hf.to_string());
    }
    let (layer, rest) = name.strip_prefix("v.blk.")?.split_once('.')?;
    let index = layer_index(layer, None)?;
    let (part, kind) = rest.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let (_, hf, _) = CLIP_BLOCK.iter().find(|(gguf, _, _)| *gguf == part)?;
    Some(format!("{VISION}.encoder.layers.{index}.{hf}.{kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_inverts_the_tables_the_writer_walks() {
        for (gguf, hf, _) in LLAMA_BLOCK {
            let name = llama_hf_name(&format!("blk.3.{gguf}.weight"), 4);
            assert_eq!(name, Some(format!("model.layers.3.{hf}.weight")));
        }
        assert_eq!(
            llama_hf_name("token_embd.weight", 1).as_deref(),
            Some("model.embed_tokens.weight")
        );
        assert_eq!(
            llama_hf_name("output.weight", 1).as_deref(),
            Some("lm_head.weight")
        );
        for bad in [
            "blk.4.attn_q.weight",
            "blk.03.attn_q.weight",
            "blk.+1.attn_q.weight",
        ] {
            assert_eq!(llama_hf_name(bad, 4), None, "{bad}");
        }
        for (gguf, hf, _) in CLIP_BLOCK {
            for kind in ["weight", "bias"] {
                let name = clip_hf_name(&format!("v.blk.11.{gguf}.{kind}"));
                assert_eq!(
                    name,
                    Some(format!("{VISION}.encoder.layers.11.{hf}.{kind}"))
                );
            }
        }
        for (gguf, hf) in CLIP_TOP {
            assert_eq!(clip_hf_name(gguf).as_deref(), Some(hf));
        }
        assert_eq!(clip_hf_name("v.blk.1.attn_q.scale"), None);
    }
}
