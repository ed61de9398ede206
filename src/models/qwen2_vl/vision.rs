//! Qwen2-VL's vision tower: a ViT over the image's own patch grid (no resizing to a fixed
//! tile, no learned positions). Each flattened patch (`[c][t][y][x]`, see
//! `preprocess::qwen2_vl`) is embedded by the 3-D convolution as one matmul; a 2-D rotary
//! embedding turns each head by the patch's row (first half of its frequencies) and column
//! (second half); pre-LayerNorm blocks attend within one frame of one image at a time (QuickGELU
//! MLP); the merger normalises, joins each 2 × 2 block's four consecutive patches (the
//! processor ordered them so) and maps them to the text model's width. Names under `visual`.

use crate::config::Qwen2VlVisionConfig;
use crate::error::{Error, Result};
use crate::models::attention::{attend, Mask};
use crate::models::linear::{Linear, Weight};
use crate::models::nn::{LayerNorm, Rope};
use crate::weights::Loader;
use burn_tensor::activation::{gelu, sigmoid};
use burn_tensor::{Device, Tensor, TensorData};

/// transformers' `quick_gelu`: `x · sigmoid(1.702 x)`.
fn quick_gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clone() * sigmoid(x * 1.702)
}

#[derive(Debug)]
struct Block {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Block {
    fn load(l: &mut Loader, p: &str, c: &Qwen2VlVisionConfig) -> Self {
        let d = c.embed_dim;
        Self {
            norm1: LayerNorm::load(l, &format!("{p}.norm1"), d, 1e-6),
            qkv: Linear::load(l, &format!("{p}.attn.qkv"), d, 3 * d, true),
            proj: Linear::load(l, &format!("{p}.attn.proj"), d, d, true),
            norm2: LayerNorm::load(l, &format!("{p}.norm2"), d, 1e-6),
            fc1: Linear::load(l, &format!("{p}.mlp.fc1"), d, c.mlp_dim, true),
            fc2: Linear::load(l, &format!("{p}.mlp.fc2"), c.mlp_dim, d, true),
        }
    }

    /// `x` `[patches, embed]`; attention within each of `segments` (consecutive row counts).
    fn forward(
        &self,
        x: Tensor<2>,
        rope: &(Tensor<4>, Tensor<4>),
        heads: usize,
        segments: &[usize],
    ) -> Tensor<2> {
        let [n, d] = x.dims();
        let hd = d / heads;
        // [n, 3·d] -> three [1, heads, n, hd]
        let qkv = self.qkv.forward(self.norm1.forward(x.clone()));
        let part = |i: usize| {
            qkv.clone()
                .slice([0..n, i * d..(i + 1) * d])
                .reshape([1, n, heads, hd])
                .swap_dims(1, 2)
        };
        let q = Rope::apply(part(0), &rope.0, &rope.1);
        let k = Rope::apply(part(1), &rope.0, &rope.1);
        let v = part(2);
        let mut outs = Vec::with_capacity(segments.len());
        let mut start = 0;
        for &len in segments {
            let range = start..start + len;
            let take = |t: &Tensor<4>| t.clone().slice([0..1, 0..heads, range.clone(), 0..hd]);
            outs.push(attend(take(&q), take(&k), take(&v), Mask::All));
            start += len;
        }
        let out = Tensor::cat(outs, 2).swap_dims(1, 2).reshape([n, d]);
        let h = x + self.proj.forward(out);
        let mlp = self
            .fc2
            .forward(quick_gelu(self.fc1.forward(self.norm2.forward(h.clone()))));
        h + mlp
    }
}

#[derive(Debug)]
pub struct VisionTower {
    patch_embed: Linear,
    blocks: Vec<Block>,
    ln_q: LayerNorm,
    merger_fc1: Linear,
    merger_fc2: Linear,
    /// `head_dim / 4` inverse frequencies, shared by the row and the column.
    inv_freq: Vec<f32>,
    config: Qwen2VlVisionConfig,
}

impl VisionTower {
    pub fn load(l: &mut Loader, p: &str, c: &Qwen2VlVisionConfig) -> Self {
        let name = format!("{p}.patch_embed.proj.weight");
        let conv = l.host(
            &name,
            &[
                c.embed_dim,
                c.in_channels,
                c.temporal_patch_size,
                c.patch_size,
                c.patch_size,
            ],
        );
        let conv = conv.reshaped(vec![c.embed_dim, c.patch_len()]);
        let merged = c.embed_dim * c.spatial_merge_size * c.spatial_merge_size;
        let head_dim = c.embed_dim / c.num_heads;
        Self {
            // Read once per patch: kept f32, as SmolVLM's patch embedding.
            patch_embed: Linear::new(Weight::dense_loaded(l, &name, &conv), None),
            blocks: (0..c.depth)
                .map(|i| Block::load(l, &format!("{p}.blocks.{i}"), c))
                .collect(),
            ln_q: LayerNorm::load(l, &format!("{p}.merger.ln_q"), c.embed_dim, 1e-6),
            merger_fc1: Linear::load(l, &format!("{p}.merger.mlp.0"), merged, merged, true),
            merger_fc2: Linear::load(l, &format!("{p}.merger.mlp.2"), merged, c.hidden_size, true),
            // The axial rotary embedding is the plain one over half a head.
            inv_freq: Rope::new(head_dim / 2, c.rope_theta).inv_freq().to_vec(),
            config: c.clone(),
        }
    }

    /// The row and column of each patch in the processor's order (merge blocks row-major,
    /// then row-major within a block), every frame alike, for images of `grids`.
    fn patch_positions(&self, grids: &[[usize; 3]]) -> Vec<(usize, usize)> {
        let m = self.config.spatial_merge_size;
        let mut out = Vec::new();
        for &[t, h, w] in grids {
            for _ in 0..t {
                for by in 0..h / m {
                    for bx in 0..w / m {
                        for iy in 0..m {
                            for ix in 0..m {
                                out.push((by * m + iy, bx * m + ix));
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// `cos` and `sin` `[1, 1, patches, head_dim]`: a head's first quarter turns by the row,
    /// its second by the column, repeated for the rotated half.
    fn rotary(&self, positions: &[(usize, usize)], device: &Device) -> (Tensor<4>, Tensor<4>) {
        let quarter = self.inv_freq.len();
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for &(row, col) in positions {
            let angles: Vec<f32> = [row, col]
                .iter()
                .flat_map(|&p| self.inv_freq.iter().map(move |f| p as f32 * f))
                .collect();
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos()));
                sin.extend(angles.iter().map(|a| a.sin()));
            }
        }
        let shape = [1, 1, positions.len(), 4 * quarter];
        (
            Tensor::from_data(TensorData::new(cos, shape), device),
            Tensor::from_data(TensorData::new(sin, shape), device),
        )
    }

    /// `patches` `[n, patch_len]` of the images whose grids are `grids` (in patches, before
    /// merging) -> `[n / merge², hidden]`, the embeddings that replace the images' pad tokens.
    pub fn forward(&self, patches: Tensor<2>, grids: &[[usize; 3]]) -> Result<Tensor<2>> {
        let c = &self.config;
        let m = c.spatial_merge_size;
        let [n, len] = patches.dims();
        let expected: usize = grids.iter().map(|[t, h, w]| t * h * w).sum();
        if len != c.patch_len()
            || n != expected
            || grids.iter().any(|g| g[1] % m != 0 || g[2] % m != 0)
        {
            return Err(Error::Invalid(format!(
                "{n} patches of {len} values do not make images of grids {grids:?} for patches of {}",
                c.patch_len()
            )));
        }
        let device = patches.device();
        let rope = self.rotary(&self.patch_positions(grids), &device);
        // One attention segment per frame of each image.
        let segments: Vec<usize> = grids
            .iter()
            .flat_map(|&[t, h, w]| std::iter::repeat_n(h * w, t))
            .collect();
        let mut x = self.patch_embed.forward(patches);
        for block in &self.blocks {
            x = block.forward(x, &rope, c.num_heads, &segments);
        }
        let x = self
            .ln_q
            .forward(x)
            .reshape([n / (m * m), c.embed_dim * m * m]);
        Ok(self.merger_fc2.forward(gelu(self.merger_fc1.forward(x))))
    }
}
