//! Qwen2-VL and Qwen2.5-VL: a ViT over each image's own patch grid with a 2 × 2
//! merger ([`vision`]), and the Qwen2 decoder ([`text`]) turned by multimodal rotary positions
//! ([`positions`], [`rope`]). The image processor is `preprocess::qwen2_vl`. Each image's
//! merged features replace the embeddings of its `<|image_pad|>` tokens, in order.
//! Qwen2.5-VL's tower attends within windows ([`windows`]). Built up in steps (issue 21): the
//! tokenizer and chat template and the engine's front ends come next.

pub mod positions;
pub mod rope;
pub mod text;
pub mod vision;
pub mod windows;

use crate::config::Qwen2VlConfig;
use crate::error::{Error, Result};
use crate::models::llama::KvCache;
use crate::weights::Loader;
use burn_tensor::Tensor;
use positions::{mrope_positions, MropePositions};
use text::Qwen2Text;
use vision::VisionTower;

#[derive(Debug)]
pub struct Qwen2Vl {
    vision: VisionTower,
    text: Qwen2Text,
    config: Qwen2VlConfig,
}

/// A prompt run through the model: its cache and where later tokens go.
#[derive(Debug)]
pub struct Prefilled {
    pub cache: KvCache,
    pub positions: MropePositions,
    /// The logits `[vocab]` of the prompt's last position.
    pub logits: Tensor<1>,
}

impl Qwen2Vl {
    /// Takes the published tensor names (`visual.*`, `model.*`, `lm_head`).
    pub fn load(l: &mut Loader, c: &Qwen2VlConfig) -> Result<Self> {
        Ok(Self {
            vision: VisionTower::load(l, "visual", &c.vision),
            text: Qwen2Text::load(l, c)?,
            config: c.clone(),
        })
    }

    pub fn config(&self) -> &Qwen2VlConfig {
        &self.config
    }

    /// Runs a prompt: `ids` with one run of `image_token_id` per image, `patches`
    /// `[n, patch_len]` the images' patches as the processor makes them (in order), `grids`
    /// their `image_grid_thw`.
    pub fn prefill(
        &self,
        ids: &[u32],
        patches: Tensor<2>,
        grids: &[[usize; 3]],
    ) -> Result<Prefilled> {
        let image = self.config.image_token_id;
        let merge = self.vision_merge();
        let positions = mrope_positions(ids, image, grids, merge)?;
        let decoder = self.text.decoder();
        let features = self.vision.forward(patches, grids)?;
        let [n_features, width] = features.dims();
        let pads = ids.iter().filter(|&&t| t == image).count();
        if pads != n_features {
            return Err(Error::Prompt(format!(
                "the prompt has {pads} image tokens for {n_features} image features"
            )));
        }
        // Text runs embedded, image runs taken from the features, in the prompt's order.
        let mut pieces = Vec::new();
        let (mut i, mut used) = (0, 0);
        while i < ids.len() {
            let is_image = ids[i] == image;
            let run = ids[i..]
                .iter()
                .take_while(|&&t| (t == image) == is_image)
                .count();
            pieces.push(if is_image {
                features
                    .clone()
                    .slice([used..used + run, 0..width])
                    .reshape([1, run, width])
            } else {
                decoder.embed(&ids[i..i + run])
            });
            used += if is_image { run } else { 0 };
            i += run;
        }
        let embeds = Tensor::cat(pieces, 1);
        let mut cache = decoder.new_cache();
        let streams = [
            &positions.temporal[..],
            &positions.height[..],
            &positions.width[..],
        ];
        let hidden = self.text.forward(embeds, streams, &mut cache);
        Ok(Prefilled {
            logits: decoder.last_logits(hidden),
            cache,
            positions,
        })
    }

    /// The logits after `token`, the `index`-th token of the sequence (the prompt's length for
    /// the first one generated), appended to `prefilled`'s cache.
    pub fn step(&self, prefilled: &mut Prefilled, token: u32, index: usize) -> Result<Tensor<1>> {
        let at = prefilled.positions.after_prompt(index)?;
        let decoder = self.text.decoder();
        let hidden = self.text.forward(
            decoder.embed(&[token]),
            [&[at], &[at], &[at]],
            &mut prefilled.cache,
        );
        Ok(decoder.last_logits(hidden))
    }

    fn vision_merge(&self) -> usize {
        self.config.vision.spatial_merge_size
    }
}
