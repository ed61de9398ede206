//! SmolVLM (Idefics3): a SigLIP vision tower, a pixel-shuffle connector and a Llama decoder.
//! Image features replace the embeddings of the `<image>` tokens, in order.

pub mod connector;
pub mod text;
pub mod vision;

use crate::config::Idefics3Config;
use crate::error::{Error, Result};
use crate::weights::Loader;
use burn::tensor::{Int, Tensor, TensorData};
use connector::Connector;
use text::{KvCache, TextModel};
use vision::VisionTower;

#[derive(Debug)]
pub struct SmolVlm {
    vision: VisionTower,
    connector: Connector,
    text: TextModel,
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
            text: TextModel::load(l, "model.text_model", "lm_head", &c.text),
            config: c.clone(),
        }
    }

    pub fn text(&self) -> &TextModel {
        &self.text
    }

    pub fn config(&self) -> &Idefics3Config {
        &self.config
    }

    /// Vision tower output (after the post-LayerNorm), `[tiles, patches, vision_hidden]`, for
    /// `pixels` `[tiles, 3, H, W]` and the pixel mask `[tiles, H, W]` (non-zero = real pixel).
    pub fn vision_features(&self, pixels: Tensor<4>, pixel_mask: &[u8]) -> Tensor<3> {
        let [n, _, h, w] = pixels.dims();
        let p = self.config.vision.patch_size;
        // A patch is real when any of its pixels is.
        let mut patch_mask = vec![false; n * (h / p) * (w / p)];
        for t in 0..n {
            for y in 0..h - h % p {
                for x in 0..w - w % p {
                    if pixel_mask[(t * h + y) * w + x] != 0 {
                        patch_mask[(t * (h / p) + y / p) * (w / p) + x / p] = true;
                    }
                }
            }
        }
        self.vision.forward(pixels, &patch_mask)
    }

    /// Connector output `[tiles, image_seq_len, text_hidden]`: what replaces `<image>` tokens.
    pub fn image_features(&self, pixels: Tensor<4>, pixel_mask: &[u8]) -> Tensor<3> {
        self.connector
            .forward(self.vision_features(pixels, pixel_mask))
    }

    /// Embeds `ids`, swaps in `image_features` (`[count, text_hidden]`, one row per `<image>`
    /// token, in order), runs the decoder from an empty `cache` and returns the last logits.
    pub fn prefill(
        &self,
        ids: &[u32],
        image_features: Option<Tensor<2>>,
        cache: &mut KvCache,
    ) -> Result<Tensor<1>> {
        let embeds = self.text.embed(ids);
        let slots: Vec<usize> = ids
            .iter()
            .enumerate()
            .filter(|(_, &id)| id == self.config.image_token_id)
            .map(|(i, _)| i)
            .collect();
        let given = image_features.as_ref().map_or(0, |f| f.dims()[0]);
        if slots.len() != given {
            return Err(Error::Invalid(format!(
                "the prompt has {} image tokens but the images give {given} feature rows",
                slots.len()
            )));
        }
        let embeds = match image_features {
            None => embeds,
            Some(features) => {
                // One gather over [text embeddings; image features] puts every row in place.
                let [_, len, width] = embeds.dims();
                let mut index: Vec<i64> = (0..len as i64).collect();
                for (k, &slot) in slots.iter().enumerate() {
                    index[slot] = (len + k) as i64;
                }
                let table = Tensor::cat(vec![embeds.reshape([len, width]), features], 0);
                let index =
                    Tensor::<1, Int>::from_data(TensorData::new(index, [len]), &table.device());
                table.select(0, index).reshape([1, len, width])
            }
        };
        let hidden = self.text.forward_embeds(embeds, cache);
        Ok(self.text.last_logits(hidden))
    }
}
