//! SmolVLM (Idefics3): a SigLIP vision tower, a pixel-shuffle connector and a Llama decoder.
//! Image features replace the embeddings of the `<image>` tokens, in order.

pub mod connector;
pub mod vision;

use crate::config::Idefics3Config;
use crate::error::{Error, Result};
use crate::models::llama::{KvCache, Llama};
use crate::preprocess::Tiles;
use crate::weights::Loader;
use burn_tensor::{Int, Tensor, TensorData};
use connector::Connector;
use vision::VisionTower;

#[derive(Debug)]
pub struct SmolVlm {
    vision: VisionTower,
    connector: Connector,
    text: Llama,
    config: Idefics3Config,
}

impl SmolVlm {
    /// Takes the published tensor names (`model.vision_model.*`, `model.connector.*`,
    /// `model.text_model.*`, `lm_head`).
    pub fn load(l: &mut Loader, c: &Idefics3Config) -> Self {
        Self {
            vision: VisionTower::load(l, "model.vision_model", &c.vision),
            connector: Connector::load(
                l,
                "model.connector",
                c.vision.hidden_size,
                c.text.hidden_size,
                c.scale_factor,
            ),
            text: Llama::load(l, "model.text_model", "lm_head", &c.text),
            config: c.clone(),
        }
    }

    pub fn text(&self) -> &Llama {
        &self.text
    }

    pub fn config(&self) -> &Idefics3Config {
        &self.config
    }

    /// Vision tower output (after the post-LayerNorm), `[tiles, patches, vision_hidden]`, for
    /// one preprocessed image.
    pub fn vision_features(&self, image: &Tiles) -> Tensor<3> {
        let (n, h, w) = (image.n_tiles, image.tile_height, image.tile_width);
        let p = self.config.vision.patch_size;
        // A patch is real when any of its pixels is.
        let mut patch_mask = vec![false; n * (h / p) * (w / p)];
        for t in 0..n {
            for y in 0..h - h % p {
                for x in 0..w - w % p {
                    if image.pixel_mask[(t * h + y) * w + x] != 0 {
                        patch_mask[(t * (h / p) + y / p) * (w / p) + x / p] = true;
                    }
                }
            }
        }
        let pixels = Tensor::from_data(
            TensorData::new(image.pixel_values.clone(), [n, 3, h, w]),
            self.text.device(),
        );
        self.vision.forward(pixels, &patch_mask)
    }

    /// Connector output `[tiles, image_seq_len, text_hidden]`: what replaces one image's
    /// `<image>` tokens.
    pub fn image_features(&self, image: &Tiles) -> Tensor<3> {
        self.connector.forward(self.vision_features(image))
    }

    /// Runs the prompt `ids` with `images` (in prompt order) from an empty `cache`: embeds the
    /// tokens, puts each image's features in place of its `<image>` tokens, runs the decoder and
    /// returns the last logits. The image tokens and the images must agree, which is checked
    /// before the vision tower runs.
    pub fn prefill(
        &self,
        ids: &[u32],
        images: &[&Tiles],
        cache: &mut KvCache,
    ) -> Result<Tensor<1>> {
        let slots: Vec<usize> = ids
            .iter()
            .enumerate()
            .filter(|(_, &id)| id == self.config.image_token_id)
            .map(|(i, _)| i)
            .collect();
        let given: usize = images
            .iter()
            .map(|image| image.n_tiles * self.config.image_seq_len())
            .sum();
        if slots.len() != given {
            return Err(Error::Invalid(format!(
                "the prompt has {} image tokens but the images give {given} feature rows",
                slots.len()
            )));
        }
        let embeds = self.text.embed(ids);
        let embeds = if images.is_empty() {
            embeds
        } else {
            let features: Vec<Tensor<2>> = images
                .iter()
                .map(|image| {
                    let f = self.image_features(image);
                    let [n, s, h] = f.dims();
                    f.reshape([n * s, h])
                })
                .collect();
            // One gather over [text embeddings; image features] puts every row in place.
            let [_, len, width] = embeds.dims();
            let mut index: Vec<i64> = (0..len as i64).collect();
            for (k, &slot) in slots.iter().enumerate() {
                index[slot] = (len + k) as i64;
            }
            let mut table = vec![embeds.reshape([len, width])];
            table.extend(features);
            let table = Tensor::cat(table, 0);
            let index = Tensor::<1, Int>::from_data(TensorData::new(index, [len]), &table.device());
            table.select(0, index).reshape([1, len, width])
        };
        let hidden = self.text.forward_embeds(embeds, cache);
        Ok(self.text.last_logits(hidden))
    }
}
