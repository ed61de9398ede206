//! The SigLIP vision tower of Idefics3: non-overlapping patch embedding, learned positions,
//! pre-LayerNorm transformer blocks with bidirectional attention and a gelu-tanh MLP, and a
//! final LayerNorm. Names under `model.vision_model`.

use crate::config::VisionConfig;
use crate::models::attention::{attend, Mask};
use crate::models::linear::{Linear, Weight};
use crate::models::nn::{gelu_tanh, LayerNorm};
use crate::weights::Loader;
use burn_tensor::{Int, Tensor, TensorData};

#[derive(Debug)]
pub struct Embeddings {
    /// The stride-`p` convolution as a matmul over flattened `(channel, y, x)` patches.
    patch_embedding: Linear,
    position_embedding: Tensor<2>,
    patch_size: usize,
    patches_per_side: usize,
}

impl Embeddings {
    fn load(l: &mut Loader, p: &str, c: &VisionConfig) -> Self {
        let (d, ps) = (c.hidden_size, c.patch_size);
        let name = format!("{p}.patch_embedding.weight");
        let conv = l.host(&name, &[d, c.num_channels, ps, ps]);
        let conv = conv.reshaped(vec![d, c.num_channels * ps * ps]);
        let bias = l.tensor(&format!("{p}.patch_embedding.bias"), [d]);
        let positions = c.patches_per_side() * c.patches_per_side();
        Self {
            // Tiny and read once per patch: kept f32.
            patch_embedding: Linear::new(Weight::dense_loaded(l, &name, &conv), Some(bias)),
            position_embedding: l.table(&format!("{p}.position_embedding.weight"), [positions, d]),
            patch_size: ps,
            patches_per_side: c.patches_per_side(),
        }
    }

    /// `pixels` `[tiles, 3, H, W]` -> `[tiles, patches, hidden]`, `position_ids` `[tiles * patches]`.
    fn forward(&self, pixels: Tensor<4>, position_ids: &[i64]) -> Tensor<3> {
        let [n, ch, h, w] = pixels.dims();
        let p = self.patch_size;
        let (nh, nw) = (h / p, w / p);
        let patches = pixels
            .reshape([n, ch, nh, p, nw, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([n, nh * nw, ch * p * p]);
        let embeds = self.patch_embedding.forward(patches);
        let ids = Tensor::<1, Int>::from_data(
            TensorData::new(position_ids.to_vec(), [position_ids.len()]),
            &embeds.device(),
        );
        let d = embeds.dims()[2];
        embeds
            + self
                .position_embedding
                .clone()
                .select(0, ids)
                .reshape([n, nh * nw, d])
    }
}

/// Position ids of one tile's patches, from its patch mask (`true` = real content), as
/// Idefics3 computes them: the real patches' fractional coordinates are bucketed onto the full
/// `patches_per_side` grid, so a partly padded tile still spans the whole table; padded patches
/// get 0. The float arithmetic follows torch (`arange` steps in f64, compared in f32).
pub fn position_ids(mask: &[bool], rows: usize, cols: usize, patches_per_side: usize) -> Vec<i64> {
    let real_rows = (0..rows).filter(|&r| mask[r * cols]).count();
    let real_cols = (0..cols).filter(|&c| mask[c]).count();
    let step = 1.0 / patches_per_side as f64;
    let boundaries: Vec<f32> = (1..patches_per_side)
        .map(|k| (k as f64 * step) as f32)
        .collect();
    let bucket = |n: usize| -> Vec<i64> {
        let frac = 1.0 / n as f64;
        (0..n)
            .map(|i| {
                let x = (i as f64 * frac) as f32;
                boundaries.iter().filter(|&&b| b <= x).count() as i64
            })
            .collect()
    };
    let (bh, bw) = (bucket(real_rows.max(1)), bucket(real_cols.max(1)));
    let mut ids = vec![0i64; rows * cols];
    let mut real = bh
        .iter()
        .flat_map(|&h| bw.iter().map(move |&w| h * patches_per_side as i64 + w));
    for (id, &m) in ids.iter_mut().zip(mask) {
        if m {
            *id = real.next().unwrap_or(0);
        }
    }
    ids
}

#[derive(Debug)]
pub struct SelfAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
}

impl SelfAttention {
    fn load(l: &mut Loader, p: &str, c: &VisionConfig) -> Self {
        let d = c.hidden_size;
        Self {
            q_proj: Linear::load(l, &format!("{p}.q_proj"), d, d, true),
            k_proj: Linear::load(l, &format!("{p}.k_proj"), d, d, true),
            v_proj: Linear::load(l, &format!("{p}.v_proj"), d, d, true),
            out_proj: Linear::load(l, &format!("{p}.out_proj"), d, d, true),
            heads: c.num_attention_heads,
        }
    }

    fn forward(&self, x: Tensor<3>, mask: Option<&Tensor<4>>) -> Tensor<3> {
        let [n, len, d] = x.dims();
        let hd = d / self.heads;
        let split = |t: Tensor<3>| t.reshape([n, len, self.heads, hd]).swap_dims(1, 2);
        let q = split(self.q_proj.forward(x.clone()));
        let k = split(self.k_proj.forward(x.clone()));
        let v = split(self.v_proj.forward(x));
        // Bidirectional within each tile; `mask` hides padded key patches.
        let out = attend(q, k, v, mask.map_or(Mask::All, Mask::Keys));
        self.out_proj
            .forward(out.swap_dims(1, 2).reshape([n, len, d]))
    }
}

#[derive(Debug)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

#[derive(Debug)]
pub struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: SelfAttention,
    layer_norm2: LayerNorm,
    mlp: Mlp,
}

impl EncoderLayer {
    fn load(l: &mut Loader, p: &str, c: &VisionConfig) -> Self {
        let (d, i, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps);
        Self {
            layer_norm1: LayerNorm::load(l, &format!("{p}.layer_norm1"), d, eps),
            self_attn: SelfAttention::load(l, &format!("{p}.self_attn"), c),
            layer_norm2: LayerNorm::load(l, &format!("{p}.layer_norm2"), d, eps),
            mlp: Mlp {
                fc1: Linear::load(l, &format!("{p}.mlp.fc1"), d, i, true),
                fc2: Linear::load(l, &format!("{p}.mlp.fc2"), i, d, true),
            },
        }
    }

    fn forward(&self, x: Tensor<3>, mask: Option<&Tensor<4>>) -> Tensor<3> {
        let h = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x), mask);
        let mlp = self.mlp.fc2.forward(gelu_tanh(
            self.mlp.fc1.forward(self.layer_norm2.forward(h.clone())),
        ));
        h + mlp
    }
}

#[derive(Debug)]
pub struct VisionTower {
    embeddings: Embeddings,
    layers: Vec<EncoderLayer>,
    post_layernorm: LayerNorm,
}

impl VisionTower {
    pub fn load(l: &mut Loader, p: &str, c: &VisionConfig) -> Self {
        Self {
            embeddings: Embeddings::load(l, &format!("{p}.embeddings"), c),
            layers: (0..c.num_hidden_layers)
                .map(|i| EncoderLayer::load(l, &format!("{p}.encoder.layers.{i}"), c))
                .collect(),
            post_layernorm: LayerNorm::load(
                l,
                &format!("{p}.post_layernorm"),
                c.hidden_size,
                c.layer_norm_eps,
            ),
        }
    }

    /// `pixels` `[tiles, 3, H, W]` and the per-patch mask `[tiles * patches]` (row-major per
    /// tile) -> features `[tiles, patches, hidden]`.
    pub fn forward(&self, pixels: Tensor<4>, patch_mask: &[bool]) -> Tensor<3> {
        let [n, _, h, w] = pixels.dims();
        let p = self.embeddings.patch_size;
        let (rows, cols) = (h / p, w / p);
        let per_tile = rows * cols;
        let position_ids: Vec<i64> = patch_mask
            .chunks(per_tile)
            .flat_map(|m| position_ids(m, rows, cols, self.embeddings.patches_per_side))
            .collect();
        let device = pixels.device();
        let mut x = self.embeddings.forward(pixels, &position_ids);
        // Keys of padded patches are masked out, as transformers does when any patch is padding.
        let mask = (!patch_mask.iter().all(|&m| m)).then(|| {
            let data: Vec<f32> = patch_mask
                .iter()
                .map(|&m| if m { 0.0 } else { f32::MIN })
                .collect();
            Tensor::<4>::from_data(TensorData::new(data, [n, 1, 1, per_tile]), &device)
        });
        for layer in &self.layers {
            x = layer.forward(x, mask.as_ref());
        }
        self.post_layernorm.forward(x)
    }
}

#[cfg(test)]
mod tests {
    use super::position_ids;

    #[test]
    fn full_tile_positions_are_the_identity() {
        for side in [4, 8, 32] {
            let ids = position_ids(&vec![true; side * side], side, side, side);
            assert_eq!(ids, (0..(side * side) as i64).collect::<Vec<_>>());
        }
    }

    #[test]
    fn padded_tile_positions_are_bucketed() {
        // 4x4 grid with only the top-left 2x2 real: rows/cols 0,1 map to buckets 0 and 2.
        let mut mask = vec![false; 16];
        for r in 0..2 {
            for c in 0..2 {
                mask[r * 4 + c] = true;
            }
        }
        let ids = position_ids(&mask, 4, 4, 4);
        assert_eq!(&ids[0..2], &[0, 2]);
        assert_eq!(&ids[4..6], &[8, 10]);
        assert!(ids.iter().enumerate().all(|(i, &id)| mask[i] || id == 0));
    }
}
