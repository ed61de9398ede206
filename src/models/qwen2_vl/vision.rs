//! The family's vision tower: a ViT over the image's own patch grid (no resizing to a fixed
//! tile, no learned positions). Each flattened patch (`[c][t][y][x]`, see
//! `preprocess::qwen2_vl`) is embedded by the 3-D convolution as one matmul; a 2-D rotary
//! embedding turns each head by the patch's row (first half of its frequencies) and column
//! (second half); pre-norm blocks attend within one frame of one image at a time; the merger
//! normalises, joins each 2 × 2 block's four consecutive patches (the processor ordered them
//! so) and maps them to the text model's width. Names under `visual`.
//!
//! Qwen2-VL's blocks use LayerNorm and a QuickGELU MLP. Qwen2.5-VL's use RMSNorm and a SwiGLU
//! MLP, and most of them attend only within windows ([`super::windows`]): the merge units are
//! put in window order after the patch embedding, every block runs in that order (the blocks
//! of `fullatt_block_indexes` still over whole frames), and the merged tokens are put back in
//! the processor's order at the end.

use super::windows::windows;
use crate::config::{Qwen2VlVisionConfig, VisionKind};
use crate::error::{Error, Result};
use crate::models::attention::{attend, Mask};
use crate::models::linear::{Linear, Weight};
use crate::models::nn::{rotary_tables, LayerNorm, RmsNorm, Rope};
use crate::weights::Loader;
use burn_tensor::activation::{gelu, sigmoid, silu};
use burn_tensor::{Device, Int, Tensor, TensorData};

/// transformers' `quick_gelu`: `x · sigmoid(1.702 x)`.
fn quick_gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clone() * sigmoid(x * 1.702)
}

// Two per block: the variants' sizes do not matter, boxing would only add indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Norm {
    Layer(LayerNorm),
    Rms(RmsNorm),
}

impl Norm {
    fn load(l: &mut Loader, name: &str, c: &Qwen2VlVisionConfig) -> Self {
        match c.kind {
            VisionKind::Qwen2Vl => Norm::Layer(LayerNorm::load(l, name, c.embed_dim, 1e-6)),
            VisionKind::Qwen25Vl => Norm::Rms(RmsNorm::load(l, name, c.embed_dim, 1e-6)),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Norm::Layer(n) => n.forward(x),
            Norm::Rms(n) => n.forward(x),
        }
    }
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Mlp {
    QuickGelu {
        fc1: Linear,
        fc2: Linear,
    },
    SwiGlu {
        gate: Linear,
        up: Linear,
        down: Linear,
    },
}

impl Mlp {
    fn load(l: &mut Loader, p: &str, c: &Qwen2VlVisionConfig) -> Self {
        let (d, i) = (c.embed_dim, c.mlp_dim);
        match c.kind {
            VisionKind::Qwen2Vl => Mlp::QuickGelu {
                fc1: Linear::load(l, &format!("{p}.fc1"), d, i, true),
                fc2: Linear::load(l, &format!("{p}.fc2"), i, d, true),
            },
            VisionKind::Qwen25Vl => Mlp::SwiGlu {
                gate: Linear::load(l, &format!("{p}.gate_proj"), d, i, true),
                up: Linear::load(l, &format!("{p}.up_proj"), d, i, true),
                down: Linear::load(l, &format!("{p}.down_proj"), i, d, true),
            },
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Mlp::QuickGelu { fc1, fc2 } => fc2.forward(quick_gelu(fc1.forward(x))),
            Mlp::SwiGlu { gate, up, down } => {
                down.forward(silu(gate.forward(x.clone())) * up.forward(x))
            }
        }
    }
}

#[derive(Debug)]
struct Block {
    norm1: Norm,
    qkv: Linear,
    proj: Linear,
    norm2: Norm,
    mlp: Mlp,
}

impl Block {
    fn load(l: &mut Loader, p: &str, c: &Qwen2VlVisionConfig) -> Self {
        let d = c.embed_dim;
        Self {
            norm1: Norm::load(l, &format!("{p}.norm1"), c),
            qkv: Linear::load(l, &format!("{p}.attn.qkv"), d, 3 * d, true),
            proj: Linear::load(l, &format!("{p}.attn.proj"), d, d, true),
            norm2: Norm::load(l, &format!("{p}.norm2"), c),
            mlp: Mlp::load(l, &format!("{p}.mlp"), c),
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
        h.clone() + self.mlp.forward(self.norm2.forward(h))
    }
}

#[derive(Debug)]
pub struct VisionTower {
    patch_embed: Linear,
    blocks: Vec<Block>,
    ln_q: Norm,
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
            ln_q: Norm::load(l, &format!("{p}.merger.ln_q"), c),
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
        let angles = positions.iter().map(|&(row, col)| {
            [row, col]
                .iter()
                .flat_map(|&p| self.inv_freq.iter().map(move |f| p as f32 * f))
                .collect::<Vec<f32>>()
        });
        rotary_tables(angles, device)
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
        let unit = m * m;
        // One attention segment per frame of each image.
        let frames: Vec<usize> = grids
            .iter()
            .flat_map(|&[t, h, w]| std::iter::repeat_n(h * w, t))
            .collect();
        // Qwen2.5-VL: the merge units in window order, and the windows as segments.
        let windowed = match c.kind {
            VisionKind::Qwen2Vl => None,
            VisionKind::Qwen25Vl => {
                let w = windows(grids, m, c.window_size, c.patch_size).ok_or_else(|| {
                    Error::Invalid(format!(
                        "window_size {} is under one merge unit",
                        c.window_size
                    ))
                })?;
                let cuts: Vec<usize> = w.boundaries.windows(2).map(|b| b[1] - b[0]).collect();
                Some((w.unit_order, cuts))
            }
        };
        let mut positions = self.patch_positions(grids);
        let mut x = self.patch_embed.forward(patches);
        if let Some((order, _)) = &windowed {
            let patch_order: Vec<usize> = order
                .iter()
                .flat_map(|&u| u * unit..(u + 1) * unit)
                .collect();
            positions = patch_order.iter().map(|&i| positions[i]).collect();
            x = x.select(0, indices(&patch_order, &device));
        }
        let rope = self.rotary(&positions, &device);
        for (i, block) in self.blocks.iter().enumerate() {
            let segments = match &windowed {
                Some((_, cuts)) if !c.fullatt_block_indexes.contains(&i) => cuts,
                _ => &frames,
            };
            x = block.forward(x, &rope, c.num_heads, segments);
        }
        let x = self.ln_q.forward(x).reshape([n / unit, c.embed_dim * unit]);
        let merged = self.merger_fc2.forward(gelu(self.merger_fc1.forward(x)));
        Ok(match &windowed {
            // Back to the processor's order: the unit at window position p is order[p].
            Some((order, _)) => {
                let mut back = vec![0; order.len()];
                for (p, &u) in order.iter().enumerate() {
                    back[u] = p;
                }
                merged.select(0, indices(&back, &device))
            }
            None => merged,
        })
    }
}

fn indices(values: &[usize], device: &Device) -> Tensor<1, Int> {
    let values: Vec<i64> = values.iter().map(|&v| v as i64).collect();
    let len = values.len();
    Tensor::from_data(TensorData::new(values, [len]), device)
}
