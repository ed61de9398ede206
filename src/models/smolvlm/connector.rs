//! The Idefics3 connector: pixel shuffle (space-to-depth) then a linear projection into the text
//! model's width. A 32x32 grid of 768-d patches becomes 8x8 tokens of 768*16 dims at scale 4.

use crate::models::linear::Linear;
use crate::weights::Loader;
use burn_tensor::Tensor;

#[derive(Debug)]
pub struct Connector {
    proj: Linear,
    scale: usize,
}

impl Connector {
    pub fn load(
        l: &mut Loader,
        p: &str,
        vision_hidden: usize,
        text_hidden: usize,
        scale: usize,
    ) -> Self {
        Self {
            proj: Linear::load(
                l,
                &format!("{p}.modality_projection.proj"),
                vision_hidden * scale * scale,
                text_hidden,
                false,
            ),
            scale,
        }
    }

    /// `[tiles, seq, d]` -> `[tiles, seq / s^2, d * s^2]`, in transformers' element order: the
    /// grid is folded along the width first, then along the height.
    pub fn pixel_shuffle(&self, x: Tensor<3>) -> Tensor<3> {
        let [n, seq, d] = x.dims();
        let s = self.scale;
        let side = (seq as f64).sqrt() as usize;
        x.reshape([n, side, side / s, d * s])
            .swap_dims(1, 2)
            .reshape([n, side / s, side / s, d * s * s])
            .swap_dims(1, 2)
            .reshape([n, seq / (s * s), d * s * s])
    }

    pub fn forward(&self, features: Tensor<3>) -> Tensor<3> {
        self.proj.forward(self.pixel_shuffle(features))
    }
}
