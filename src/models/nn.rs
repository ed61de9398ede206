//! Building blocks shared by the vision tower and the text decoder, written to compute exactly
//! what their PyTorch counterparts compute (same operation order where it matters for floats).

use super::bands;
use super::linear::is_cpu;
use crate::weights::Loader;
use burn::tensor::activation::{gelu_approximate, softmax};
use burn::tensor::module::attention as fused_attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor, TensorData};

/// Llama's RMSNorm: `weight * x / sqrt(mean(x^2) + eps)`.
#[derive(Debug)]
pub struct RmsNorm {
    pub weight: Tensor<1>,
    pub eps: f64,
}

impl RmsNorm {
    pub fn load(l: &mut Loader, name: &str, dim: usize, eps: f64) -> Self {
        Self {
            weight: l.tensor(&format!("{name}.weight"), [dim]),
            eps,
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let variance = x.clone().square().mean_dim(D - 1);
        let normed = x * (variance + self.eps).sqrt().recip();
        normed * self.weight.clone().unsqueeze::<D>()
    }
}

/// PyTorch's LayerNorm over the last dimension (biased variance), with weight and bias.
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor<1>,
    pub bias: Tensor<1>,
    pub eps: f64,
}

impl LayerNorm {
    pub fn load(l: &mut Loader, name: &str, dim: usize, eps: f64) -> Self {
        Self {
            weight: l.tensor(&format!("{name}.weight"), [dim]),
            bias: l.tensor(&format!("{name}.bias"), [dim]),
            eps,
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let mean = x.clone().mean_dim(D - 1);
        let centered = x - mean;
        let variance = centered.clone().square().mean_dim(D - 1);
        let normed = centered / (variance + self.eps).sqrt();
        normed * self.weight.clone().unsqueeze::<D>() + self.bias.clone().unsqueeze::<D>()
    }
}

/// Rotary position embedding in Hugging Face's "rotate half" form: the first and second halves
/// of each head are the two coordinates of a rotated pair (not adjacent elements, as in burn's
/// built-in `RotaryEncoding`).
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f64) -> Self {
        // Same arithmetic as transformers: exponents 2i/d in f32, base ** exponent in f32.
        let inv_freq = (0..head_dim / 2)
            .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
            .collect();
        Self { inv_freq }
    }

    /// `cos` and `sin` tables for positions `start..start + len`, shaped `[1, 1, len, head_dim]`.
    pub fn tables(&self, start: usize, len: usize, device: &Device) -> (Tensor<4>, Tensor<4>) {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(len * half * 2);
        let mut sin = Vec::with_capacity(len * half * 2);
        for pos in start..start + len {
            let angles: Vec<f32> = self.inv_freq.iter().map(|f| pos as f32 * f).collect();
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos()));
                sin.extend(angles.iter().map(|a| a.sin()));
            }
        }
        let shape = [1, 1, len, half * 2];
        (
            Tensor::from_data(TensorData::new(cos, shape), device),
            Tensor::from_data(TensorData::new(sin, shape), device),
        )
    }

    /// Rotates `x` `[batch, heads, seq, head_dim]` by the given tables.
    pub fn apply(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
        let [b, h, s, d] = x.dims();
        let first = x.clone().slice([0..b, 0..h, 0..s, 0..d / 2]);
        let second = x.clone().slice([0..b, 0..h, 0..s, d / 2..d]);
        let rotated = Tensor::cat(vec![second.neg(), first], 3);
        x * cos.clone() + rotated * sin.clone()
    }
}

/// PyTorch's `gelu_pytorch_tanh`: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
///
/// On the CPU it is one pass over the values on every core, as `x * sigmoid(2 z)` (the same
/// function: `(1 + tanh z) / 2 = sigmoid(2 z)`), with one `exp` per value. Burn's
/// `gelu_approximate` is eight tensor operations, each a fresh 12 MB buffer in the vision
/// tower's MLP, with a `powf` and a `tanh` from libm per value: it was a sixth of the vision
/// tower's time. Other backends keep it.
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !is_cpu(&x.device()) {
        return gelu_approximate(x);
    }
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let (shape, device) = (x.shape(), x.device());
    let mut values: Vec<f32> = x
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("an f32 activation tensor");
    // A few chunks per thread, so a slow thread does not hold the others up.
    let per_chunk = values
        .len()
        .div_ceil(4 * crate::workers::threads())
        .max(4096);
    let chunks: Vec<std::sync::Mutex<&mut [f32]>> = values
        .chunks_mut(per_chunk)
        .map(std::sync::Mutex::new)
        .collect();
    crate::workers::for_each(chunks.len(), &|i| {
        if let Ok(mut chunk) = chunks[i].lock() {
            for v in chunk.iter_mut() {
                let x = *v;
                let z = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
                *v = x / (1.0 + (-2.0 * z).exp());
            }
        }
    });
    drop(chunks);
    Tensor::from_data(TensorData::new(values, shape), &device)
}

/// Query rows (query heads sharing a K/V head × new positions) up to which a GPU computes
/// attention without its matmul; see [`attention`].
const SMALL_ROWS: usize = 8;

/// Scaled dot-product attention with grouped-query sharing.
///
/// `q` is `[batch, heads, q_len, head_dim]`, `k`/`v` are `[batch, kv_heads, kv_len, head_dim]`.
/// Instead of copying each K/V head `heads / kv_heads` times, the query heads of a group are
/// stacked along the sequence axis so one matmul serves the whole group. `mask` (additive) is
/// `[q_len, kv_len]`, broadcast over batch and heads.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Option<Tensor<2>>) -> Tensor<4> {
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

/// [`attention`] for a prompt on the CPU: `q_len` new positions after `kv_len - q_len` cached
/// ones, each seeing the keys up to its own position (the mask [`attention`] would be given).
///
/// burn-flex's fused attention walks the keys in blocks with a running softmax (flash
/// attention) and applies the causal limit itself, so the `[heads, q_len, kv_len]` scores are
/// never written out; natively its rayon spreads the heads over the cores. In the browser's
/// threaded build flex has no threads, and the explicit product ran on one, so there the query
/// heads go to the kernel's threads in bands; each band gets its own copy of the K/V heads its
/// query heads share (a few MB for a long prompt), so any split of the heads stands alone.
pub fn causal_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let options = AttentionModuleOptions {
        is_causal: true,
        ..Default::default() // scale 1/sqrt(head_dim)
    };
    if !bands::BANDED {
        return fused_attention(q, k, v, None, None, options);
    }
    causal_heads_in_bands(q, k, v, options)
}

fn causal_heads_in_bands(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    options: AttentionModuleOptions,
) -> Tensor<4> {
    let [b, heads, q_len, dim] = q.dims();
    let [_, kv_heads, kv_len, _] = k.dims();
    let group = heads / kv_heads;
    // Query head `h` reads K/V head `h / group`, as in transformers' `repeat_kv`.
    let per_query_head = |t: Tensor<4>| {
        t.unsqueeze_dim::<5>(2)
            .repeat_dim(2, group)
            .reshape([b, heads, kv_len, dim])
    };
    let (k, v) = (per_query_head(k), per_query_head(v));
    bands::in_bands(heads, 1, 1, &|h| {
        let band = |t: &Tensor<4>, len: usize| t.clone().slice([0..b, h.clone(), 0..len, 0..dim]);
        fused_attention(
            band(&q, q_len),
            band(&k, kv_len),
            band(&v, kv_len),
            None,
            None,
            options,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::{attention, causal_attention, causal_heads_in_bands, causal_mask, gelu_tanh};
    use burn::tensor::activation::gelu_approximate;
    use burn::tensor::{Device, Tensor, TensorData};

    /// The CPU's one-pass gelu against burn's, written as PyTorch writes it, over values
    /// from -12 to 12 (past where tanh saturates) and the extremes.
    #[test]
    fn cpu_gelu_tanh_is_burns() {
        let mut values: Vec<f32> = (-12_000..=12_000).map(|i| i as f32 / 1000.0).collect();
        values.extend([-1e30, -100.0, 100.0, 1e30]);
        let n = values.len();
        let x = Tensor::<1>::from_data(TensorData::new(values.clone(), [n]), &Device::flex());
        let ours: Vec<f32> = gelu_tanh(x.clone())
            .into_data()
            .try_into_vec()
            .expect("f32");
        let burns: Vec<f32> = gelu_approximate(x).into_data().try_into_vec().expect("f32");
        for ((x, a), b) in values.iter().zip(&ours).zip(&burns) {
            let tolerance = 1e-6 * x.abs().max(1.0);
            assert!((a - b).abs() <= tolerance, "gelu({x}): {a} vs burn's {b}");
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
            let reference = attention(q.clone(), k.clone(), v.clone(), Some(mask));
            let fused = causal_attention(q.clone(), k.clone(), v.clone());
            let banded = causal_heads_in_bands(
                q,
                k,
                v,
                super::AttentionModuleOptions {
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
}
