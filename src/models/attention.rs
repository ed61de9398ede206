//! Scaled dot-product attention, one entry point for every model: [`attend`] takes the queries,
//! keys, values and what each query may see ([`Mask`]), and picks the form this backend
//! computes best. Each form computes what the formula does (the tests below hold them to it);
//! the model code never asks which backend it runs on.
//!
//! - CPU: burn-flex's fused attention, which walks the keys in blocks with a running softmax
//!   (flash attention) and applies a causal limit or a key mask itself, so the
//!   `[heads, q_len, kv_len]` scores are never written out (48 MB per vision tile); natively its
//!   rayon spreads the heads over the cores. In the browser's threaded build flex has no
//!   threads, so there the heads go to the kernel's threads in bands (see `bands`). A decode
//!   step (one query, no mask) keeps the grouped matmul below.
//! - GPU: the written-out product with the additive mask, grouped-query heads sharing one
//!   matmul; for a few query rows a broadcast multiply-and-sum instead of a tiled matmul.

use super::bands;
use super::linear::is_cpu;
use burn_tensor::activation::softmax;
use burn_tensor::module::attention as fused_attention;
use burn_tensor::ops::AttentionModuleOptions;
use burn_tensor::{Device, Tensor, TensorData};

/// Which keys each query sees.
#[derive(Debug, Clone, Copy)]
pub enum Mask<'a> {
    /// Every key (a decode step; a vision tile without padding).
    All,
    /// `q_len` new positions after `kv_len - q_len` cached ones, each seeing the keys up to its
    /// own position (made once per forward by the caller).
    Causal(&'a CausalMask),
    /// Additive `[batch, 1, 1, kv_len]`: each batch item (a vision tile) hides its padded keys.
    Keys(&'a Tensor<4>),
}

/// Attention of `q` `[batch, heads, q_len, head_dim]` over `k`/`v`
/// `[batch, kv_heads, kv_len, head_dim]` (query head `h` reads K/V head
/// `h / (heads / kv_heads)`, as transformers' `repeat_kv`), scaled by `1/sqrt(head_dim)`.
pub fn attend(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Mask) -> Tensor<4> {
    let cpu = is_cpu(&q.device());
    match mask {
        Mask::Causal(_) if cpu => fused(q, k, v, None, true),
        Mask::Keys(keys) if cpu => fused(q, k, v, Some(keys), false),
        Mask::All if cpu && q.dims()[2] > 1 => fused(q, k, v, None, false),
        Mask::Keys(keys) => with_key_mask(q, k, v, keys.clone()),
        Mask::Causal(causal) => {
            let additive = causal
                .additive
                .clone()
                .unwrap_or_else(|| causal_mask(causal.start, causal.len, &q.device()));
            grouped(q, k, v, Some(additive))
        }
        Mask::All => in_row_blocks(q, k, v, MAX_SCORES),
    }
}

/// The most scores one written-out product holds (256 MiB of f32). A Qwen2-VL image of the
/// published `max_pixels` attends over some 65,000 patches at once: 16 heads of those written
/// out whole would be 270 GB, where blocks of query rows take this much at a time.
const MAX_SCORES: usize = 64 << 20;

/// [`grouped`] without a mask, its queries in blocks of rows whose scores fit `max_scores`
/// (each row's softmax is its own, so the blocks give the rows the whole product gives).
fn in_row_blocks(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, max_scores: usize) -> Tensor<4> {
    let [b, heads, q_len, head_dim] = q.dims();
    let kv_len = k.dims()[2];
    let rows = (max_scores / (b * heads * kv_len).max(1)).max(1);
    if q_len <= rows {
        return grouped(q, k, v, None);
    }
    let blocks = (0..q_len).step_by(rows).map(|start| {
        let end = (start + rows).min(q_len);
        let block = q.clone().slice([0..b, 0..heads, start..end, 0..head_dim]);
        grouped(block, k.clone(), v.clone(), None)
    });
    Tensor::cat(blocks.collect(), 2)
}

/// A prompt step's causal limit: `len` new positions after `start` cached ones. Its additive
/// form ([`causal_mask`]) is built only where written-out scores need it: the CPU's fused
/// kernel applies the limit itself, and a long prompt's mask is `len × (start + len)` floats.
#[derive(Debug, Clone)]
pub struct CausalMask {
    start: usize,
    len: usize,
    additive: Option<Tensor<2>>,
}

impl CausalMask {
    pub fn new(start: usize, len: usize, device: &Device) -> Self {
        let additive = (!is_cpu(device)).then(|| causal_mask(start, len, device));
        Self {
            start,
            len,
            additive,
        }
    }
}

/// The additive causal mask `[len, start + len]` for `len` new positions after `start` cached
/// ones: position `start + i` sees keys `0..=start + i`.
pub fn causal_mask(start: usize, len: usize, device: &Device) -> Tensor<2> {
    let total = start + len;
    let data: Vec<f32> = (0..len)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j <= start + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_data(TensorData::new(data, [len, total]), device)
}

/// Query rows (query heads sharing a K/V head × new positions) up to which a GPU computes
/// attention without its matmul; see [`grouped`].
const SMALL_ROWS: usize = 8;

/// The written-out product, grouped-query: instead of copying each K/V head
/// `heads / kv_heads` times, the query heads of a group are stacked along the sequence axis so
/// one matmul serves the whole group. `mask` (additive) is `[q_len, kv_len]`, broadcast over
/// batch and heads.
fn grouped(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Option<Tensor<2>>) -> Tensor<4> {
    let [b, heads, q_len, head_dim] = q.dims();
    let kv_heads = k.dims()[1];
    let group = heads / kv_heads;
    let rows = group * q_len;
    let q = q.reshape([b, kv_heads, rows, head_dim]);
    let scale = (head_dim as f64).powf(-0.5);
    // A GPU's tiled matmul pads a few query rows out to whole tiles. For a few rows,
    // broadcast multiply-and-sum does the same arithmetic with the backend's elementwise and
    // reduction kernels (its own effect on lavapipe was not measured apart from the packed
    // matvec's; see BENCHMARKS.md). The CPU keeps its matmul, and with it its numerics.
    let few_rows = rows <= SMALL_ROWS && !is_cpu(&q.device());
    let mut scores = if few_rows {
        // [b, kv, rows, 1, d] · [b, kv, 1, len, d], summed over d.
        (q.unsqueeze_dim::<5>(3) * k.unsqueeze_dim::<5>(2)).sum_dims_squeeze::<4, _>(&[4])
    } else {
        q.matmul(k.swap_dims(2, 3))
    } * scale;
    if let Some(mask) = mask {
        let kv_len = mask.dims()[1];
        let mask = mask
            .reshape([1, 1, 1, q_len, kv_len])
            .repeat_dim(2, group)
            .reshape([1, 1, rows, kv_len]);
        scores = scores + mask;
    }
    let probs = softmax(scores, 3);
    let out = if few_rows {
        // [b, kv, rows, len, 1] · [b, kv, 1, len, d], summed over len.
        (probs.unsqueeze_dim::<5>(4) * v.unsqueeze_dim::<5>(2)).sum_dims_squeeze::<4, _>(&[3])
    } else {
        probs.matmul(v)
    };
    out.reshape([b, heads, q_len, head_dim])
}

/// The written-out product where each batch item masks its own keys (`mask`
/// `[batch, 1, 1, kv_len]`; heads not grouped).
fn with_key_mask(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Tensor<4>) -> Tensor<4> {
    let scale = (q.dims()[3] as f64).powf(-0.5);
    let scores = q.matmul(k.swap_dims(2, 3)) * scale + mask;
    softmax(scores, 3).matmul(v)
}

/// burn-flex's fused attention, with the heads in bands on the kernel's threads in the
/// browser's threaded build.
fn fused(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    keys: Option<&Tensor<4>>,
    is_causal: bool,
) -> Tensor<4> {
    let options = AttentionModuleOptions {
        is_causal,
        ..Default::default() // scale 1/sqrt(head_dim)
    };
    if !bands::BANDED {
        // Flex shares a K/V head among its query heads itself.
        return fused_attention(q, k, v, None, keys.cloned(), options);
    }
    heads_in_bands(q, k, v, keys, options)
}

/// K/V `[b, kv_heads, len, d]` repeated to one head per query head: query head `h` reads K/V
/// head `h / group`, as in transformers' `repeat_kv`.
fn per_query_head(t: Tensor<4>, heads: usize) -> Tensor<4> {
    let [b, kv_heads, len, dim] = t.dims();
    if kv_heads == heads {
        return t;
    }
    t.unsqueeze_dim::<5>(2)
        .repeat_dim(2, heads / kv_heads)
        .reshape([b, heads, len, dim])
}

/// [`fused`] over bands of heads, one band per thread, for the threaded browser build; each
/// band gets its own copy of the K/V heads its query heads share (a few MB for a long prompt),
/// so any split of the heads stands alone.
fn heads_in_bands(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    keys: Option<&Tensor<4>>,
    options: AttentionModuleOptions,
) -> Tensor<4> {
    let [b, heads, q_len, dim] = q.dims();
    let kv_len = k.dims()[2];
    let (k, v) = (per_query_head(k, heads), per_query_head(v, heads));
    bands::in_bands(heads, 1, 1, &|h| {
        let band = |t: &Tensor<4>, len: usize| t.clone().slice([0..b, h.clone(), 0..len, 0..dim]);
        fused_attention(
            band(&q, q_len),
            band(&k, kv_len),
            band(&v, kv_len),
            None,
            keys.cloned(),
            options,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::{
        attend, causal_mask, grouped, heads_in_bands, in_row_blocks, with_key_mask, CausalMask,
        Mask,
    };
    use burn_tensor::ops::AttentionModuleOptions;
    use burn_tensor::{Device, Tensor, TensorData};
    use rand::{Rng, SeedableRng};

    fn random(shape: [usize; 4], rng: &mut rand_chacha::ChaCha8Rng) -> Tensor<4> {
        let n = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
        Tensor::from_data(TensorData::new(values, shape), &Device::flex())
    }

    /// Queries in blocks of rows give the rows of the whole product: blocks of one row, of
    /// several with a short last one, and one block of all.
    #[test]
    fn row_blocks_are_the_whole_product() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let q = random([1, 4, 37, 8], &mut rng);
        let k = random([1, 2, 37, 8], &mut rng);
        let v = random([1, 2, 37, 8], &mut rng);
        let whole = grouped(q.clone(), k.clone(), v.clone(), None);
        for max_scores in [1, 4 * 37 * 5, usize::MAX / 2] {
            let blocks = in_row_blocks(q.clone(), k.clone(), v.clone(), max_scores);
            assert_eq!(blocks.dims(), [1, 4, 37, 8]);
            let diff: f32 = (blocks - whole.clone()).abs().max().into_scalar();
            assert!(
                diff <= 1e-6,
                "blocks under {max_scores} scores: differ by {diff}"
            );
        }
    }

    /// The CPU's fused causal attention, and its banded form for the threaded browser build
    /// (run here on this machine's threads), against the explicit product with the causal mask
    /// the text model builds: grouped heads, a prompt after cached positions, at a length where
    /// flex writes the scores out and one where it takes its flash path.
    #[test]
    fn causal_attention_is_the_masked_formula() {
        let device = Device::flex();
        let (heads, kv_heads, dim, past) = (6, 2, 16, 40);
        let mut seed = 11u64;
        let mut random = |shape: [usize; 4]| {
            let values: Vec<f32> = (0..shape.iter().product::<usize>())
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
                })
                .collect();
            Tensor::<4>::from_data(TensorData::new(values, shape), &device)
        };
        for len in [300, 600] {
            let total = past + len;
            let q = random([1, heads, len, dim]);
            let k = random([1, kv_heads, total, dim]);
            let v = random([1, kv_heads, total, dim]);
            let mask = causal_mask(past, len, &device);
            let reference = grouped(q.clone(), k.clone(), v.clone(), Some(mask.clone()));
            let causal = CausalMask::new(past, len, &device);
            let fused = attend(q.clone(), k.clone(), v.clone(), Mask::Causal(&causal));
            let banded = heads_in_bands(
                q,
                k,
                v,
                None,
                AttentionModuleOptions {
                    is_causal: true,
                    ..Default::default()
                },
            );
            for (name, ours) in [("fused", fused), ("in bands", banded)] {
                let diff: f32 = (ours - reference.clone()).abs().max().into_scalar();
                assert!(
                    diff <= 1e-5,
                    "{name}, {len} new positions: differs by {diff}"
                );
            }
        }
    }

    /// The CPU's fused attention against the formula written out (scores, mask, softmax,
    /// values), at a full tile's 1024 patches, where flex takes its flash path (the tiny
    /// models' goldens only reach its short-sequence one): without a mask, and with the
    /// second tile's last 300 key patches padded.
    #[test]
    fn fused_tile_attention_is_the_formula() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (tiles, heads, len, dim) = (2, 2, 1024, 16);
        let q = random([tiles, heads, len, dim], &mut rng);
        let k = random([tiles, heads, len, dim], &mut rng);
        let v = random([tiles, heads, len, dim], &mut rng);
        let mut mask = vec![0.0f32; tiles * len];
        mask[2 * len - 300..].fill(f32::MIN);
        let mask =
            Tensor::<4>::from_data(TensorData::new(mask, [tiles, 1, 1, len]), &Device::flex());
        let none = Tensor::<4>::zeros([tiles, 1, 1, len], &Device::flex());
        for (mask, reference_mask) in [(None, none), (Some(&mask), mask.clone())] {
            let reference = with_key_mask(q.clone(), k.clone(), v.clone(), reference_mask);
            let which = mask.map_or(Mask::All, Mask::Keys);
            let ours = attend(q.clone(), k.clone(), v.clone(), which);
            let diff: f32 = (ours - reference.clone()).abs().max().into_scalar();
            assert!(
                diff <= 1e-5,
                "masked: {}, differs by {diff}",
                mask.is_some()
            );
            // The threaded browser build's way, run here on this machine's threads.
            let options = AttentionModuleOptions::default();
            let banded = heads_in_bands(q.clone(), k.clone(), v.clone(), mask, options);
            let diff: f32 = (banded - reference).abs().max().into_scalar();
            assert!(
                diff <= 1e-5,
                "in bands, masked: {}, differs by {diff}",
                mask.is_some()
            );
        }
    }
}
