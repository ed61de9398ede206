//! Qwen2's decoder as Qwen2-VL and Qwen2.5-VL use it: Llama's layers (RMSNorm, grouped-query
//! attention, SwiGLU) with biases on the q, k and v projections, turned by M-RoPE instead of
//! the tokens' indices. Weight names as published: `model.embed_tokens`, `model.layers.N`,
//! `model.norm`, `lm_head` (absent when tied).

use crate::config::Qwen2VlConfig;
use crate::error::Result;
use crate::models::llama::{KvCache, Llama};
use crate::weights::Loader;
use burn_tensor::Tensor;

use super::rope::MRope;

#[derive(Debug)]
pub struct Qwen2Text {
    decoder: Llama,
    mrope: MRope,
}

impl Qwen2Text {
    pub fn load(l: &mut Loader, c: &Qwen2VlConfig) -> Result<Self> {
        Ok(Self {
            decoder: Llama::load(l, "model", "lm_head", &c.text),
            mrope: MRope::new(c.text.head_dim, c.text.rope_theta, c.mrope_section)?,
        })
    }

    /// The decoder: embeddings, the cache, the last position's logits.
    pub fn decoder(&self) -> &Llama {
        &self.decoder
    }

    /// Runs `embeds` `[1, len, hidden]` after the positions in `cache`, the i-th at the
    /// temporal, height and width positions `streams[0][i]`, `streams[1][i]`, `streams[2][i]`
    /// (a prompt's from `positions::mrope_positions`; a decoded token's all the same).
    pub fn forward(
        &self,
        embeds: Tensor<3>,
        streams: [&[u32]; 3],
        cache: &mut KvCache,
    ) -> Tensor<3> {
        let (cos, sin) = self.mrope.tables(streams, &embeds.device());
        self.decoder.forward_rotated(embeds, cache, cos, sin)
    }
}
