//! Linear layers and embedding tables whose weights may be f32 or packed blocks.
//!
//! Where a packed weight lives depends on the backend: on a GPU it is a burn quantized tensor
//! (a few rows of `x` go through our [`super::matvec`] kernel, more through burn's quantized
//! matmul), on the CPU it stays in host memory as ggml blocks and [`BlockMatrix::matmul`] reads
//! them. Neither keeps an f32 copy.

use super::bands;
use crate::quant::BlockMatrix;
use crate::weights::{transpose, HostTensor, Loader, StoredTensor};
use burn_tensor::{Device, Int, Tensor, TensorData};
use std::sync::Arc;

/// Inputs with at most this many rows go through the block kernel on the CPU; a longer input
/// (prefill, vision tiles) dequantizes the layer once and uses the backend's f32 matmul, which
/// is far faster per element than re-reading blocks for hundreds of rows.
const CPU_BLOCK_ROWS: usize = 8;

/// The largest buffer a WebGPU device binds to a shader unless asked for more
/// (`maxStorageBufferBindingSize`'s default): an f32 table past it is split.
pub const MAX_BINDING_BYTES: usize = 128 << 20;

/// A weight `y = x · Wᵀ` multiplies by.
#[derive(Debug, Clone)]
pub enum Weight {
    /// f32, `[in, out]` (transposed once at load), as column blocks that each fit one GPU
    /// binding (one block on the CPU, and for all but the largest tables).
    Dense(Vec<Tensor<2>>),
    /// A burn quantized tensor `[out, in]` on a GPU backend.
    Packed(Box<Tensor<2>>),
    /// ggml blocks `[out, in]` in host memory, for the CPU backend.
    Blocks(Arc<BlockMatrix>),
}

impl Weight {
    /// The weight `name`, `[out, in]` (PyTorch layout), on the device in the form it will be
    /// multiplied in (the loader's precision picks it).
    pub fn load(l: &mut Loader, name: &str, d_out: usize, d_in: usize) -> Self {
        match l.matrix(name, d_out, d_in) {
            StoredTensor::Blocks(b) => Weight::packed(b, l.device()),
            other => Weight::dense_loaded(l, name, &other.into_host()),
        }
    }

    /// From a PyTorch-layout `[out, in]` host tensor; `None` when there is not the memory to
    /// transpose it.
    pub fn dense(host: &HostTensor, device: &Device) -> Option<Self> {
        let limit = if is_cpu(device) {
            usize::MAX
        } else {
            MAX_BINDING_BYTES
        };
        Self::dense_split(host, device, limit)
    }

    /// [`Weight::dense`] for the loader's tensor `name`: when there is not the memory, the
    /// loader notes it (its `finish` says so) and a placeholder stands in.
    pub fn dense_loaded(l: &mut Loader, name: &str, host: &HostTensor) -> Self {
        Weight::dense(host, l.device()).unwrap_or_else(|| {
            let placeholder = l.no_memory_for(name, &host.shape);
            Weight::Dense(vec![placeholder.to_device(l.device())])
        })
    }

    /// [`Weight::dense`] with the `[in, out]` matrix cut into column blocks of at most
    /// `max_bytes` each.
    pub fn dense_split(host: &HostTensor, device: &Device, max_bytes: usize) -> Option<Self> {
        let (rows, cols) = (host.shape[0], host.shape[1]);
        let per_block = (max_bytes / (4 * cols.max(1))).max(1);
        if per_block >= rows {
            return Some(Weight::Dense(vec![host.transposed()?.to_device(device)]));
        }
        // Rows of `[out, in]` are the columns of `[in, out]`: each block is a run of them.
        let blocks = host
            .data
            .chunks(per_block * cols)
            .map(|chunk| Some(transpose(chunk, chunk.len() / cols, cols)?.to_device(device)))
            .collect::<Option<_>>()?;
        Some(Weight::Dense(blocks))
    }

    pub fn packed(blocks: BlockMatrix, device: &Device) -> Self {
        Self::packed_shared(Arc::new(blocks), device)
    }

    /// A packed weight that may share its blocks with an embedding table (CPU only; a GPU gets
    /// its own quantized tensor).
    pub fn packed_shared(blocks: Arc<BlockMatrix>, device: &Device) -> Self {
        if is_cpu(device) {
            Weight::Blocks(blocks)
        } else {
            Weight::Packed(Box::new(Tensor::from_data(blocks.to_burn(), device)))
        }
    }

    fn out_features(&self) -> usize {
        match self {
            Weight::Dense(blocks) => blocks.iter().map(|w| w.dims()[1]).sum(),
            Weight::Packed(w) => w.dims()[0],
            Weight::Blocks(b) => b.rows(),
        }
    }

    /// `x` `[m, in]` -> `[m, out]`.
    fn matmul(&self, x: Tensor<2>) -> Tensor<2> {
        if bands::BANDED && x.dims()[0] >= 2 * bands::MIN_BAND {
            // The threaded browser build: bands of rows on every thread (see `bands`).
            return self.matmul_banded(x, bands::MIN_BAND);
        }
        self.matmul_whole(x)
    }

    /// [`Weight::matmul`] in bands of at least `min_band` rows, one per thread. A packed
    /// weight is dequantized once for all the bands.
    fn matmul_banded(&self, x: Tensor<2>, min_band: usize) -> Tensor<2> {
        let dequantized;
        let weight = match self {
            Weight::Blocks(b) => {
                let w = TensorData::new(b.dequantize(), [b.rows(), b.cols()]);
                dequantized =
                    Weight::Dense(vec![Tensor::<2>::from_data(w, &x.device()).transpose()]);
                &dequantized
            }
            _ => self,
        };
        bands::in_bands(x.dims()[0], min_band, 0, &|rows| {
            weight.matmul_whole(x.clone().slice(rows))
        })
    }

    /// [`Weight::matmul`] in one piece.
    fn matmul_whole(&self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Weight::Dense(blocks) => match blocks.as_slice() {
                [w] => x.matmul(w.clone()),
                _ => Tensor::cat(
                    blocks.iter().map(|w| x.clone().matmul(w.clone())).collect(),
                    1,
                ),
            },
            Weight::Packed(w) => match gpu_matvec(&x, w) {
                Some(y) => y,
                None => x.matmul(w.as_ref().clone().transpose()),
            },
            Weight::Blocks(b) => {
                let [m, k] = x.dims();
                let device = x.device();
                if m <= CPU_BLOCK_ROWS {
                    // The CPU backend computes eagerly, so this read is immediate (also in wasm).
                    let values: Vec<f32> = x
                        .into_data()
                        .convert::<f32>()
                        .try_into_vec::<f32>()
                        .expect("an f32 activation tensor");
                    let y = b.matmul(&values, m);
                    Tensor::from_data(TensorData::new(y, [m, b.rows()]), &device)
                } else {
                    let w = Tensor::<2>::from_data(
                        TensorData::new(b.dequantize(), [b.rows(), k]),
                        &device,
                    );
                    x.matmul(w.transpose())
                }
            }
        }
    }
}

/// Our fused kernel for a packed weight times a few rows ([`super::matvec`]), where the build
/// has a GPU; `None` leaves the product to burn.
#[cfg(any(not(target_arch = "wasm32"), feature = "webgpu"))]
fn gpu_matvec(x: &Tensor<2>, w: &Tensor<2>) -> Option<Tensor<2>> {
    super::matvec::matvec(x, w, super::matvec::Split::GPU)
}

#[cfg(not(any(not(target_arch = "wasm32"), feature = "webgpu")))]
fn gpu_matvec(_: &Tensor<2>, _: &Tensor<2>) -> Option<Tensor<2>> {
    None
}

/// Whether `device` is burn's CPU backend.
pub fn is_cpu(device: &Device) -> bool {
    *device == Device::flex()
}

/// PyTorch's `nn.Linear`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Weight,
    bias: Option<Tensor<1>>,
}

impl Linear {
    pub fn new(weight: Weight, bias: Option<Tensor<1>>) -> Self {
        Self { weight, bias }
    }

    /// The layer `prefix` (`weight` `[out, in]`, optional `bias`).
    pub fn load(l: &mut Loader, prefix: &str, d_in: usize, d_out: usize, bias: bool) -> Self {
        let weight = Weight::load(l, &format!("{prefix}.weight"), d_out, d_in);
        let bias = bias.then(|| l.tensor(&format!("{prefix}.bias"), [d_out]));
        Linear::new(weight, bias)
    }

    /// Applies the layer over the last dimension of `x`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dims = x.dims();
        let k = dims[D - 1];
        let m = dims[..D - 1].iter().product();
        let mut y = self.weight.matmul(x.reshape([m, k]));
        if let Some(bias) = &self.bias {
            y = y + bias.clone().unsqueeze::<2>();
        }
        let mut out = dims;
        out[D - 1] = self.weight.out_features();
        y.reshape(out)
    }
}

/// A token embedding table `[vocab, dim]`.
#[derive(Debug, Clone)]
// One per model: the size of the handle does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Embedding {
    Dense(Tensor<2>),
    /// The tied LM head's own f32 tensor, `[dim, vocab]`: a token's row is a column of it, so
    /// the table is not held a second time.
    Columns(Tensor<2>),
    /// f32 rows in host memory, copied on lookup: a table too large for one GPU binding.
    Host(Arc<HostTensor>),
    /// Packed rows, dequantized on lookup (host memory, on every backend).
    Blocks(Arc<BlockMatrix>),
}

impl Embedding {
    /// The table `name`, `[vocab, dim]`, and, when the LM head is `tied` to it, that head:
    /// one copy of the weights serves both wherever the head's form allows it.
    pub fn load(
        l: &mut Loader,
        name: &str,
        vocab: usize,
        dim: usize,
        tied: bool,
    ) -> (Self, Option<Weight>) {
        let device = l.device().clone();
        match l.matrix(name, vocab, dim) {
            StoredTensor::Blocks(b) => {
                // On a GPU the table is the only thing left on the host: give it a buffer of
                // its own so the file it was read from can be freed.
                let b = if is_cpu(&device) { b } else { b.into_owned() };
                let b = Arc::new(b);
                let head = tied.then(|| Weight::packed_shared(b.clone(), &device));
                (Embedding::Blocks(b), head)
            }
            other => {
                let host = other.into_host();
                let too_big = host.data.len() * 4 > MAX_BINDING_BYTES && !is_cpu(&device);
                match (tied, too_big) {
                    (false, false) => (Embedding::Dense(host.to_device(&device)), None),
                    (false, true) => (Embedding::Host(Arc::new(host)), None),
                    // The head is split over bindings; the rows stay on the host.
                    (true, true) => {
                        let head = Weight::dense_loaded(l, name, &host);
                        (Embedding::Host(Arc::new(host)), Some(head))
                    }
                    // One binding holds it: the head's `[dim, vocab]` tensor is the table too.
                    (true, false) => {
                        let head = match host.transposed() {
                            Some(head) => head,
                            None => l.no_memory_for(name, &host.shape),
                        };
                        let head = head.to_device(&device);
                        (
                            Embedding::Columns(head.clone()),
                            Some(Weight::Dense(vec![head])),
                        )
                    }
                }
            }
        }
    }

    /// Rows `ids`, `[len, dim]`.
    pub fn lookup(&self, ids: &[u32], device: &Device) -> Tensor<2> {
        let len = ids.len();
        match self {
            Embedding::Dense(table) => table.clone().select(0, id_tensor(ids, device)),
            Embedding::Columns(head) => head.clone().select(1, id_tensor(ids, device)).transpose(),
            Embedding::Host(table) => {
                let dim = table.shape[1];
                let mut rows = Vec::with_capacity(len * dim);
                for &id in ids {
                    let start = id as usize * dim;
                    rows.extend_from_slice(&table.data[start..start + dim]);
                }
                Tensor::from_data(TensorData::new(rows, [len, dim]), device)
            }
            Embedding::Blocks(b) => {
                let dim = b.cols();
                let mut rows = vec![0.0f32; len * dim];
                for (&id, row) in ids.iter().zip(rows.chunks_exact_mut(dim)) {
                    // Ids come from the tokenizer, which only makes ids of this vocabulary.
                    b.dequantize_row(id as usize, row);
                }
                Tensor::from_data(TensorData::new(rows, [len, dim]), device)
            }
        }
    }
}

fn id_tensor(ids: &[u32], device: &Device) -> Tensor<1, Int> {
    let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    let len = ids.len();
    Tensor::from_data(TensorData::new(ids, [len]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::QuantType;
    use crate::weights::Precision;

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }

    /// An f32 weight is transposed at load beside its own copy: when that memory is not there,
    /// the load is an error naming the weight, not an abort (a tied head's table included).
    #[test]
    fn a_weight_there_is_no_memory_to_transpose_fails_the_load_by_name() {
        let device = Device::flex();
        let (out, inp) = (10, 6);
        for table in [false, true] {
            let mut w = crate::weights::WeightSet::new();
            w.insert(
                "w".into(),
                HostTensor::new(vec![out, inp], vec![0.5; out * inp]),
            );
            let mut l = Loader::with_precision(w, &device, Precision::F32);
            let less = crate::buffers::budget::limit(out * inp - 1);
            if table {
                let _ = Embedding::load(&mut l, "w", out, inp, true);
            } else {
                let _ = Weight::load(&mut l, "w", out, inp);
            }
            drop(less);
            let err = l.finish().unwrap_err().to_string();
            assert!(
                err.starts_with("not enough memory to hold w as f32"),
                "table {table}: {err}"
            );
        }
    }

    #[test]
    fn split_dense_weight_matches_one_block() {
        let device = Device::flex();
        let (out, inp) = (10, 6);
        let w: Vec<f32> = (0..out * inp).map(|i| (i as f32 * 0.37).sin()).collect();
        let whole = Linear::new(
            Weight::dense(&HostTensor::new(vec![out, inp], w.clone()), &device).unwrap(),
            None,
        );
        // Blocks of 3 output columns (3 * 6 * 4 bytes), the last one of 1.
        let split =
            Weight::dense_split(&HostTensor::new(vec![out, inp], w), &device, 3 * inp * 4).unwrap();
        assert!(matches!(&split, Weight::Dense(blocks) if blocks.len() == 4));
        let split = Linear::new(split, None);
        let x = Tensor::<3>::from_data(
            TensorData::new(
                (0..2 * inp).map(|i| i as f32 - 5.0).collect::<Vec<_>>(),
                [1, 2, inp],
            ),
            &device,
        );
        let a: Vec<f32> = whole
            .forward(x.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let b: Vec<f32> = split.forward(x).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn block_linear_matches_dense_on_both_paths() {
        let device = Device::flex();
        let (out, inp) = (40, 64);
        let w: Vec<f32> = (0..out * inp)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 500.0)
            .collect();
        let blocks = BlockMatrix::quantize(QuantType::Q4_0, out, inp, &w).unwrap();
        let dense = Linear::new(
            Weight::dense(
                &HostTensor::new(vec![out, inp], blocks.dequantize()),
                &device,
            )
            .unwrap(),
            None,
        );
        let packed = Linear::new(Weight::packed(blocks, &device), None);
        // 2 rows use the block kernel, 24 the dequantize-and-matmul path.
        for m in [2, 24] {
            let x: Vec<f32> = (0..m * inp)
                .map(|i| ((i * 13 % 29) as f32 - 14.0) / 14.0)
                .collect();
            let x = Tensor::<3>::from_data(TensorData::new(x, [1, m, inp]), &device);
            let a: Vec<f32> = dense
                .forward(x.clone())
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            let b: Vec<f32> = packed.forward(x).into_data().try_to_vec::<f32>().unwrap();
            let diff = max_abs_diff(&a, &b);
            assert!(diff < 1e-5, "m = {m}: {diff}");
        }
    }

    /// The browser's threaded build cuts long products into row bands: they must add up to
    /// the product itself, for an f32 and a packed weight.
    #[test]
    fn banded_products_are_the_product() {
        let device = Device::flex();
        let (out, inp, m) = (24, 64, 37);
        let w: Vec<f32> = (0..out * inp)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 500.0)
            .collect();
        let blocks = BlockMatrix::quantize(QuantType::Q8_0, out, inp, &w).unwrap();
        let x: Vec<f32> = (0..m * inp)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 14.0)
            .collect();
        let x = Tensor::<2>::from_data(TensorData::new(x, [m, inp]), &device);
        for weight in [
            Weight::dense(&HostTensor::new(vec![out, inp], w.clone()), &device).unwrap(),
            Weight::packed(blocks, &device),
        ] {
            let whole: Vec<f32> = weight
                .matmul_whole(x.clone())
                .into_data()
                .try_to_vec()
                .unwrap();
            let banded = weight.matmul_banded(x.clone(), 5);
            assert_eq!(banded.dims(), [m, out]);
            let banded: Vec<f32> = banded.into_data().try_to_vec().unwrap();
            let diff = max_abs_diff(&whole, &banded);
            assert!(diff < 1e-5, "{weight:?}: {diff}");
        }
    }
}
