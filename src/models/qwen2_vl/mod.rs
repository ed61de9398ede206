//! Qwen2-VL and Qwen2.5-VL: a ViT over each image's own patch grid with a 2 × 2
//! merger ([`vision`]), and the Qwen2 decoder ([`text`]) turned by multimodal rotary positions
//! ([`positions`], [`rope`]). The image processor is `preprocess::qwen2_vl`. Each image's
//! merged features replace the embeddings of its `<|image_pad|>` tokens, in order.
//! Qwen2.5-VL's tower attends within windows ([`windows`]). After the prompt, every token sits
//! at one position on all three streams, where M-RoPE is plain RoPE: the decoder's own cached
//! step decodes, the cache shifted by the prompt's M-RoPE delta.

pub mod positions;
pub mod rope;
pub mod text;
pub mod vision;
pub mod windows;

use crate::config::Qwen2VlConfig;
use crate::error::{Error, Result};
use crate::models::llama::{KvCache, Llama};
use crate::preprocess::qwen2_vl::Patches;
use crate::weights::Loader;
use burn_tensor::{Device, Tensor, TensorData};
use positions::{mrope_positions, MropePositions};
use text::Qwen2Text;
use vision::VisionTower;

#[derive(Debug)]
pub struct Qwen2Vl {
    vision: VisionTower,
    text: Qwen2Text,
    config: Qwen2VlConfig,
}

/// A prompt run through the model: its cache (shifted to where later tokens go) and positions.
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

    /// Runs a prompt: `ids` with one run of `image_token_id` per image, `images` the images'
    /// patches as the processor makes them, in order.
    pub fn prefill(&self, ids: &[u32], images: &[&Patches]) -> Result<Prefilled> {
        if ids.is_empty() {
            return Err(Error::Prompt("the prompt has no tokens".into()));
        }
        let image = self.config.image_token_id;
        let grids: Vec<[usize; 3]> = images.iter().map(|p| p.grid_thw).collect();
        let positions = mrope_positions(ids, image, &grids, self.vision_merge())?;
        let decoder = self.text.decoder();
        let pads = ids.iter().filter(|&&t| t == image).count();
        let features = if images.is_empty() {
            None
        } else {
            let (patches, grids) = stack_patches(images, decoder.device())?;
            Some(self.vision.forward(patches, &grids)?)
        };
        let n_features = features.as_ref().map_or(0, |f| f.dims()[0]);
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
            pieces.push(match (&features, is_image) {
                (Some(features), true) => {
                    let width = features.dims()[1];
                    features
                        .clone()
                        .slice([used..used + run, 0..width])
                        .reshape([1, run, width])
                }
                // Image tokens without features were refused above.
                _ => decoder.embed(&ids[i..i + run]),
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
        cache.set_position_shift(positions.delta);
        Ok(Prefilled {
            logits: decoder.last_logits(hidden),
            cache,
            positions,
        })
    }

    /// The decoder, which decodes each token after the prompt from [`Prefilled::cache`].
    pub fn decoder(&self) -> &Llama {
        self.text.decoder()
    }

    /// The merged features `[tokens, text width]` of one image, as they replace its pads.
    pub fn image_features(&self, image: &Patches) -> Result<Tensor<2>> {
        let (patches, grids) = stack_patches(&[image], self.decoder().device())?;
        self.vision.forward(patches, &grids)
    }

    fn vision_merge(&self) -> usize {
        self.config.vision.spatial_merge_size
    }
}

/// The images' patches as one `[patches, patch_len]` tensor on `device`, in order, and their
/// grids: what [`Qwen2Vl::prefill`] takes.
pub fn stack_patches(images: &[&Patches], device: &Device) -> Result<(Tensor<2>, Vec<[usize; 3]>)> {
    let patch_len = images.first().map_or(1, |p| p.patch_len);
    if patch_len == 0
        || images
            .iter()
            .any(|p| p.patch_len != patch_len || p.values.len() % patch_len != 0)
    {
        return Err(Error::Invalid("the images' patches differ in size".into()));
    }
    let values: Vec<f32> = images
        .iter()
        .flat_map(|p| p.values.iter().copied())
        .collect();
    let rows = values.len() / patch_len;
    let grids = images.iter().map(|p| p.grid_thw).collect();
    let data = TensorData::new(values, [rows, patch_len]);
    Ok((Tensor::from_data(data, device), grids))
}
