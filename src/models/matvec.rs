//! A packed-weight matrix × few-vectors product on a GPU, in one pass over the blocks.
//!
//! burn's quantized matmul is a tiled GEMM: it tiles the rows of `x`, so with the one row a
//! decoded token has, most of every tile is padding. Here each output element is one dot
//! product between a row of `x` and a row of the packed weight, computed by `lanes` units of a
//! cube: each unit walks every `lanes`-th 32-bit word of the weight row, unpacks its codes,
//! scales them by their block's scale and multiplies by `x`; the units' partial sums then meet
//! in shared memory. A cube holds `rows` such groups, one per output column. WebGPU has no
//! subgroup operations in wgpu, so the reduction is the plain shared-memory tree.
//!
//! On lavapipe it made a short prefill much faster and a decode step only slightly (both
//! kernels run there as CPU code); the figures are in BENCHMARKS.md, "A fused packed-weight
//! kernel for a few rows". The decode gain it is for needs a real GPU to measure.
//!
//! The weight layout is the one [`crate::quant::BlockMatrix::to_burn`] writes: codes packed
//! little-endian into u32 words in element order (8 four-bit or 4 eight-bit two's complement
//! codes per word), then one f32 scale per block of 32 along each row.

use crate::quant::{QuantType, BLOCK};
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_dispatch::{backends::Cube, BackendTensor, DispatchTensorKind};
use burn_tensor::{DType, Tensor};
use cubecl::prelude::{CubeCount, CubeDim};
use std::sync::atomic::{AtomicBool, Ordering};

/// The most rows of `x` this path takes; longer inputs (prefill, vision tiles) are real GEMMs
/// and go through burn's tiled matmul.
pub const MAX_ROWS: usize = 8;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns this path on or off for the whole process (on by default). Off, packed products go
/// through burn's quantized matmul whatever their size: benchmarks compare the two this way.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// How a cube is cut up: `lanes` units per dot product, `rows` dot products per cube.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub lanes: u32,
    pub rows: u32,
}

impl Split {
    /// 64 units per cube: two output columns of 32 units, a warp's width on most GPUs.
    pub const GPU: Split = Split { lanes: 32, rows: 2 };

    /// This split for rows of `words` 32-bit words: never more lanes than the power of two at
    /// or above `words`, the units saved going to more rows per cube. The lanes left out would
    /// only add zeros at the top of the reduction tree, so the sums are the same bit for bit;
    /// what changes is the number of cubes and of barrier rounds, which a software adapter
    /// pays for one by one. (On SwiftShader, a decode step of the 32-wide test model tiny-b,
    /// whose head has 49,280 rows of 8 words at Q8_0 and 4 at Q4_0, took about 0.95 s with 32
    /// lanes and 0.2–0.3 s (Q8_0) or 0.12 s (Q4_0) fitted; 0.10 s in f32. BENCHMARKS.md, "Lanes
    /// fitted to short rows".)
    pub fn fitted(self, words: usize) -> Split {
        let most = u32::try_from(words.max(1).next_power_of_two()).unwrap_or(u32::MAX);
        if self.lanes <= most {
            return self;
        }
        Split {
            lanes: most,
            rows: self.rows * (self.lanes / most),
        }
    }
}

/// The kernel, in a module of its own: cubecl's prelude has its own `Tensor`.
mod kernel {
    use cubecl::prelude::*;

    #[cube(launch_unchecked)]
    pub fn block_matvec(
        x: &Tensor<f32>,
        codes: &Tensor<u32>,
        scales: &Tensor<f32>,
        out: &mut Tensor<f32>,
        n: u32,
        #[comptime] k: usize,
        #[comptime] four_bit: bool,
        #[comptime] lanes: usize,
        #[comptime] rows: usize,
    ) {
        let per_word = comptime!(if four_bit { 8usize } else { 4usize });
        let words = comptime!(k / per_word);
        let words_per_block = comptime!(32 / per_word);
        let blocks = comptime!(k / 32);

        let lane = UNIT_POS_X as usize;
        let col = (CUBE_POS_X * CUBE_DIM_Y + UNIT_POS_Y) as usize;
        let row = CUBE_POS_Y as usize;
        // Every unit reaches the barriers below, in bounds or not.
        let live = col < n as usize;

        let mut acc = 0.0f32;
        if live {
            let mut w = lane;
            while w < words {
                let code = codes[col * words + w];
                let scale = scales[col * blocks + w / words_per_block];
                let base = row * k + w * per_word;
                let mut dot = 0.0f32;
                let mut rest = code;
                #[unroll]
                for j in 0..per_word {
                    let q = if four_bit {
                        // A two's complement nibble c is (c ^ 8) - 8.
                        f32::cast_from((rest & 15u32) ^ 8u32) - 8.0
                    } else {
                        f32::cast_from((rest & 255u32) ^ 128u32) - 128.0
                    };
                    rest >>= comptime!(if four_bit { 4u32 } else { 8u32 });
                    dot += q * x[base + j];
                }
                acc += scale * dot;
                w += lanes;
            }
        }

        let mut partial = Shared::<[f32]>::new_slice(comptime!(lanes * rows));
        let slot = UNIT_POS_Y as usize * lanes;
        partial[slot + lane] = acc;
        sync_cube();
        let mut half = CUBE_DIM_X / 2;
        while half > 0 {
            if UNIT_POS_X < half {
                let other = partial[slot + lane + half as usize];
                partial[slot + lane] += other;
            }
            sync_cube();
            half /= 2;
        }
        if live && lane == 0 {
            out[row * n as usize + col] = partial[slot];
        }
    }
}

/// `x · Wᵀ` for `x` `[m, k]` (m ≤ [`MAX_ROWS`]) and a packed `W` `[n, k]` on a cubecl device,
/// or `None` (and nothing consumed) when this path does not apply: another backend, another
/// storage, more rows, or `k` not a whole number of blocks.
pub fn matvec(x: &Tensor<2>, w: &Tensor<2>, split: Split) -> Option<Tensor<2>> {
    let [m, k] = x.dims();
    let [n, k_w] = w.dims();
    let applies = ENABLED.load(Ordering::Relaxed)
        && (1..=MAX_ROWS).contains(&m)
        && k == k_w
        && k % BLOCK == 0
        // The partial sums are halved down a tree.
        && split.lanes.is_power_of_two();
    if !applies {
        return None;
    }
    // Only the layout `BlockMatrix::to_burn` writes, which the kernel reads.
    let four_bit = match w.dtype() {
        DType::QFloat(scheme) if scheme == QuantType::Q4_0.burn_scheme() => true,
        DType::QFloat(scheme) if scheme == QuantType::Q8_0.burn_scheme() => false,
        _ => return None,
    };
    let split = split.fitted(k / if four_bit { 8 } else { 4 });
    let x = cube_float(x)?;
    let w = cube_quantized(w)?;
    let (codes, scales) = w.quantized_handles()?;
    if codes.meta.is_tiled() || scales.meta.is_tiled() || !x.is_contiguous() {
        return None;
    }

    let out = empty_device_dtype(
        x.client.clone(),
        x.device.clone(),
        [m, n].into(),
        DType::F32,
    );
    let cube_dim = CubeDim::new_2d(split.lanes, split.rows);
    let cubes_x = (n as u32).div_ceil(split.rows);
    let cube_count = CubeCount::Static(cubes_x, m as u32, 1);
    // SAFETY: every index the kernel forms is in bounds: `col < n` is checked, `w < k / per
    // word`, and the scale index `< n · k / 32`, which are the sizes of the bindings.
    unsafe {
        kernel::block_matvec::launch_unchecked(
            &x.client,
            cube_count,
            cube_dim,
            x.clone().into_tensor_arg(),
            codes.into_tensor_arg(),
            scales.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            n as u32,
            k,
            four_bit,
            split.lanes as usize,
            split.rows as usize,
        );
    }
    Some(Tensor::from_primitive::<Cube>(out))
}

fn cube_float(x: &Tensor<2>) -> Option<CubeTensor> {
    match x.clone().into_dispatch().kind {
        DispatchTensorKind::Cube(BackendTensor::Float(t)) if t.dtype == DType::F32 => Some(t),
        _ => None,
    }
}

fn cube_quantized(w: &Tensor<2>) -> Option<CubeTensor> {
    match w.clone().into_dispatch().kind {
        DispatchTensorKind::Cube(BackendTensor::Quantized(t)) => Some(t),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::BlockMatrix;
    use burn_tensor::{Device, DeviceKind, TensorData};

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7919 + seed * 104_729) % 1999) as f32 - 999.0) / 999.0)
            .collect()
    }

    /// Against the CPU block kernel on the same blocks, for both code widths, rows of `x` from
    /// one to [`MAX_ROWS`], an output width no cube split divides, rows shorter than one word
    /// per lane and rows of many words per lane, and several cube splits.
    #[test]
    fn matches_the_cpu_block_kernel() {
        if std::env::var("CAPTIONER_TEST_WGPU").as_deref() != Ok("1") {
            eprintln!("skipped: set CAPTIONER_TEST_WGPU=1 to run on the wgpu backend");
            return;
        }
        let gpu = Device::wgpu(DeviceKind::DefaultDevice);
        let splits = [
            Split::GPU,
            Split { lanes: 1, rows: 64 },
            Split { lanes: 8, rows: 8 },
        ];
        for ty in [QuantType::Q8_0, QuantType::Q4_0] {
            // (32 and 96 wide: rows of fewer words than `Split::GPU` has lanes.)
            for (n, k) in [(41, 32), (41, 96), (7, 1536)] {
                let blocks = BlockMatrix::quantize(ty, n, k, &values(n * k, 1)).unwrap();
                let w = Tensor::<2>::from_data(blocks.to_burn(), &gpu);
                for m in [1, 3, MAX_ROWS] {
                    let x = values(m * k, 2);
                    let expected = blocks.matmul(&x, m);
                    let x = Tensor::<2>::from_data(TensorData::new(x, [m, k]), &gpu);
                    for split in splits {
                        let y = matvec(&x, &w, split).expect("the matvec path applies");
                        assert_eq!(y.dims(), [m, n]);
                        let y: Vec<f32> = y.into_data().try_to_vec().unwrap();
                        for (i, (a, b)) in y.iter().zip(&expected).enumerate() {
                            assert!(
                                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                                "{ty} {n}x{k} m={m} {split:?}: [{i}] {a} vs {b}"
                            );
                        }
                    }
                }
                let long = Tensor::<2>::zeros([MAX_ROWS + 1, k], &gpu);
                assert!(matvec(&long, &w, Split::GPU).is_none());
                let x = Tensor::<2>::zeros([1, k], &gpu);
                assert!(matvec(&x, &w, Split { lanes: 3, rows: 2 }).is_none());
            }
        }
    }

    #[test]
    fn a_split_fits_rows_of_few_words() {
        // A q8_0 row 32 wide is 8 words; q4_0's, 4.
        assert_eq!(Split::GPU.fitted(8), Split { lanes: 8, rows: 8 });
        assert_eq!(Split::GPU.fitted(4), Split { lanes: 4, rows: 16 });
        // 12 words: the next power of two.
        assert_eq!(Split::GPU.fitted(12), Split { lanes: 16, rows: 4 });
        assert_eq!(Split::GPU.fitted(1), Split { lanes: 1, rows: 64 });
        // Rows as wide as the lanes or wider keep the split.
        assert_eq!(Split::GPU.fitted(32), Split::GPU);
        assert_eq!(Split::GPU.fitted(144), Split::GPU);
        let narrow = Split { lanes: 8, rows: 8 };
        assert_eq!(narrow.fitted(12), narrow);
    }
}
