//! Building blocks shared by the vision tower and the text decoder, written to compute exactly
//! what their PyTorch counterparts compute (same operation order where it matters for floats).

use super::linear::is_cpu;
use crate::weights::Loader;
use burn_tensor::activation::gelu_approximate;
use burn_tensor::{Device, Tensor, TensorData};

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

    /// The inverse frequency of each rotated pair, `head_dim / 2` of them.
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// `cos` and `sin` tables for positions `start..start + len`, shaped `[1, 1, len, head_dim]`.
    pub fn tables(&self, start: usize, len: usize, device: &Device) -> (Tensor<4>, Tensor<4>) {
        let angles = (start..start + len).map(|pos| {
            self.inv_freq
                .iter()
                .map(|f| pos as f32 * f)
                .collect::<Vec<f32>>()
        });
        rotary_tables(angles, device)
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

/// `cos` and `sin` tables `[1, 1, tokens, 2 · pairs]` from each token's angles (one per rotated
/// pair, as f32 position × f32 inverse frequency, the way transformers computes them), each
/// repeated for the second half of the head as "rotate half" wants.
pub fn rotary_tables(
    angles: impl ExactSizeIterator<Item = Vec<f32>>,
    device: &Device,
) -> (Tensor<4>, Tensor<4>) {
    let tokens = angles.len();
    let (mut cos, mut sin, mut pairs) = (Vec::new(), Vec::new(), 0);
    for token in angles {
        pairs = token.len();
        for _ in 0..2 {
            cos.extend(token.iter().map(|a| a.cos()));
            sin.extend(token.iter().map(|a| a.sin()));
        }
    }
    let shape = [1, 1, tokens, pairs * 2];
    (
        Tensor::from_data(TensorData::new(cos, shape), device),
        Tensor::from_data(TensorData::new(sin, shape), device),
    )
}

/// PyTorch's `gelu_pytorch_tanh`: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
///
/// On the CPU it is one pass over the values on every core, as `x * sigmoid(2 z)` (the same
/// function: `(1 + tanh z) / 2 = sigmoid(2 z)`), with one `exp` per value. Burn's
/// `gelu_approximate` is eight tensor operations, each a fresh 12 MB buffer in the vision
/// tower's MLP, with a `powf` and a `tanh` from libm per value (its share of the vision tower's
/// time: BENCHMARKS.md, "What closed the vision gap"). Other backends keep it.
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

#[cfg(test)]
mod tests {
    use super::gelu_tanh;
    use burn_tensor::activation::gelu_approximate;
    use burn_tensor::{Device, Tensor, TensorData};

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
}
