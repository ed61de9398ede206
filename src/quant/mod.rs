//! Block-quantized matrices in ggml's Q8_0 and Q4_0 formats, kept packed.
//!
//! A [`BlockMatrix`] holds a `[rows, cols]` weight (PyTorch's `[out, in]`) as the very bytes a
//! GGUF file stores: each row is `cols / 32` blocks, a block an f16 scale `d` then 32 codes.
//! - Q8_0: 34 bytes, `x = d * q` with `q` an i8.
//! - Q4_0: 18 bytes, `x = d * (q - 8)` with `q` a nibble; byte `j` holds element `j` in its low
//!   nibble and element `j + 16` in its high one.
//!
//! The same bytes serve three ways, none of which makes an f32 copy of the model:
//! - on the CPU, [`BlockMatrix::matmul`] reads the blocks directly (decode-sized inputs), and a
//!   larger input dequantizes one layer at a time into the backend's f32 matmul;
//! - on wgpu/WebGPU, [`BlockMatrix::to_burn`] repacks them losslessly into burn's packed `u32`
//!   quantized tensors (Q8F/Q4F, one f16 scale per block of 32), whose matmul streams the packed
//!   weights;
//! - embedding rows are dequantized on lookup.

pub mod reference;

use crate::error::{Error, Result};
use burn_tensor::quantization::{QuantScheme, QuantStore, QuantValue, ScaleDtype};
use burn_tensor::{DType, TensorData};
use half::{f16, slice::HalfFloatSliceExt};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

/// Elements per block in both formats.
pub const BLOCK: usize = 32;

/// The packed formats a weight can be held in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantType {
    Q8_0,
    Q4_0,
}

impl QuantType {
    /// The burn quantization scheme a GPU holds these blocks in ([`BlockMatrix::to_burn`]):
    /// codes packed into u32 words, one f32 scale per [`BLOCK`] elements of a row.
    pub fn burn_scheme(self) -> QuantScheme {
        let value = match self {
            QuantType::Q8_0 => QuantValue::Q8F,
            QuantType::Q4_0 => QuantValue::Q4F,
        };
        QuantScheme::default()
            .with_value(value)
            .with_store(QuantStore::PackedU32(0))
            .per_block([1, BLOCK as u8], ScaleDtype::F32)
    }

    /// Bytes per block of [`BLOCK`] elements.
    pub fn block_bytes(self) -> usize {
        match self {
            QuantType::Q8_0 => 2 + BLOCK,
            QuantType::Q4_0 => 2 + BLOCK / 2,
        }
    }

    /// Bytes of a `[rows, cols]` matrix (`cols` a multiple of [`BLOCK`]).
    pub fn bytes_for(self, rows: usize, cols: usize) -> usize {
        rows * cols / BLOCK * self.block_bytes()
    }

    pub fn name(self) -> &'static str {
        match self {
            QuantType::Q8_0 => "q8_0",
            QuantType::Q4_0 => "q4_0",
        }
    }
}

/// Quantizes whole blocks on the calling thread: Q8_0 with llama.cpp's reference quantizer (see
/// [`reference`]), Q4_0 with [`quantize_q4_0_fitted`].
pub fn quantize_blocks(ty: QuantType, x: &[f32]) -> Vec<u8> {
    match ty {
        QuantType::Q8_0 => reference::quantize_q8_0(x),
        QuantType::Q4_0 => quantize_q4_0_fitted(x),
    }
}

impl fmt::Display for QuantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for QuantType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "q8_0" | "q8" => Ok(QuantType::Q8_0),
            "q4_0" | "q4" => Ok(QuantType::Q4_0),
            other => Err(Error::Invalid(format!(
                "unknown quantization type '{other}' (expected q8_0 or q4_0)"
            ))),
        }
    }
}

/// A `[rows, cols]` matrix as ggml blocks, row-major, blocks along `cols`.
#[derive(Clone)]
pub struct BlockMatrix {
    ty: QuantType,
    rows: usize,
    cols: usize,
    data: Data,
}

/// Where the blocks live: their own buffer, or a range of a whole file's bytes (a GGUF read
/// into memory), so loading a file does not copy its weights.
#[derive(Clone)]
enum Data {
    Owned(Vec<u8>),
    Shared { file: Arc<Vec<u8>>, start: usize },
}

impl PartialEq for BlockMatrix {
    fn eq(&self, other: &Self) -> bool {
        (self.ty, self.rows, self.cols) == (other.ty, other.rows, other.cols)
            && self.bytes() == other.bytes()
    }
}

impl fmt::Debug for BlockMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockMatrix({} [{}, {}])", self.ty, self.rows, self.cols)
    }
}

impl BlockMatrix {
    /// Whether a matrix with `cols` columns can be held in blocks at all.
    pub fn fits(cols: usize) -> bool {
        cols > 0 && cols % BLOCK == 0
    }

    /// Wraps blocks read from a file, checking their length.
    pub fn from_blocks(ty: QuantType, rows: usize, cols: usize, bytes: Vec<u8>) -> Result<Self> {
        if !Self::fits(cols) {
            return Err(Error::Weights(format!(
                "a {ty} matrix needs a multiple of {BLOCK} columns, not {cols}"
            )));
        }
        let want = ty.bytes_for(rows, cols);
        if bytes.len() != want {
            return Err(Error::Weights(format!(
                "a {ty} [{rows}, {cols}] matrix takes {want} bytes, got {}",
                bytes.len()
            )));
        }
        Ok(Self {
            ty,
            rows,
            cols,
            data: Data::Owned(bytes),
        })
    }

    /// Blocks at `start..` of `file`, without copying them.
    pub fn from_shared(
        ty: QuantType,
        rows: usize,
        cols: usize,
        file: Arc<Vec<u8>>,
        start: usize,
    ) -> Result<Self> {
        if !Self::fits(cols) {
            return Err(Error::Weights(format!(
                "a {ty} matrix needs a multiple of {BLOCK} columns, not {cols}"
            )));
        }
        let len = ty.bytes_for(rows, cols);
        if start.checked_add(len).is_none_or(|end| end > file.len()) {
            return Err(Error::Weights(format!(
                "a {ty} [{rows}, {cols}] matrix at byte {start} runs past the end of the file"
            )));
        }
        Ok(Self {
            ty,
            rows,
            cols,
            data: Data::Shared { file, start },
        })
    }

    /// The same blocks in a buffer of their own (so a shared file can be freed).
    pub fn into_owned(self) -> Self {
        match self.data {
            Data::Owned(_) => self,
            Data::Shared { .. } => Self {
                data: Data::Owned(self.bytes().to_vec()),
                ..self
            },
        }
    }

    /// Quantizes `data` (`[rows, cols]`, row-major) with llama.cpp's reference quantizer.
    pub fn quantize(ty: QuantType, rows: usize, cols: usize, data: &[f32]) -> Result<Self> {
        debug_assert_eq!(data.len(), rows * cols);
        // Fitting Q4_0 scales tries 20 candidates per block: worth every core when loading.
        let threads = threads_for(data.len()).min(rows.max(1));
        let chunk = rows.div_ceil(threads).max(1) * cols;
        let parts = parallel_map(data.chunks(chunk.max(1)).collect(), |rows| {
            quantize_blocks(ty, rows)
        });
        Self::from_blocks(ty, rows, cols, parts.concat())
    }

    pub fn ty(&self) -> QuantType {
        self.ty
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The packed blocks in a buffer of their own (no copy when they have one already).
    pub fn into_bytes(self) -> Vec<u8> {
        match self.data {
            Data::Owned(bytes) => bytes,
            Data::Shared { .. } => self.bytes().to_vec(),
        }
    }

    /// The packed blocks, exactly as GGUF stores them.
    pub fn bytes(&self) -> &[u8] {
        match &self.data {
            Data::Owned(bytes) => bytes,
            Data::Shared { file, start } => {
                &file[*start..*start + self.ty.bytes_for(self.rows, self.cols)]
            }
        }
    }

    fn row_bytes(&self) -> usize {
        self.cols / BLOCK * self.ty.block_bytes()
    }

    fn row_blocks(&self, r: usize) -> &[u8] {
        let n = self.row_bytes();
        &self.bytes()[r * n..(r + 1) * n]
    }

    /// Row `r` as f32, into `out` (`cols` long).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let size = self.ty.block_bytes();
        for (block, out) in self
            .row_blocks(r)
            .chunks_exact(size)
            .zip(out.chunks_exact_mut(BLOCK))
        {
            let d = scale(block);
            let codes = unpack(self.ty, block);
            for (o, q) in out.iter_mut().zip(codes) {
                *o = d * q;
            }
        }
    }

    /// The whole matrix as f32 (one layer at a time; never the whole model).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        self.dequantize_into(&mut out);
        out
    }

    /// [`BlockMatrix::dequantize`], or `None` when there is not the memory for it.
    pub fn try_dequantize(&self) -> Option<Vec<f32>> {
        let mut out = crate::buffers::f32_buffer(self.rows * self.cols)?;
        out.resize(self.rows * self.cols, 0.0);
        self.dequantize_into(&mut out);
        Some(out)
    }

    fn dequantize_into(&self, out: &mut [f32]) {
        for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row(r, row);
        }
    }

    /// `x · Wᵀ` for `x` `[m, cols]` (row-major): `[m, rows]`, read straight from the blocks.
    ///
    /// The scale multiplies each block's partial sums, as ggml's dot products do; see
    /// [`kernel`] for the loop. Rows are shared out over the CPU's threads natively (wasm has
    /// one).
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        debug_assert_eq!(x.len(), m * self.cols);
        // Work in row-major `[rows, m]`, transposed into `y` at the end, so each thread owns a
        // contiguous slice of output and of blocks.
        let mut out = vec![0.0f32; self.rows * m];
        let row_bytes = self.row_bytes();
        let bytes = self.bytes();
        let run = |first: usize, out: &mut [f32]| {
            let rows = out.len() / m;
            let blocks = &bytes[first * row_bytes..(first + rows) * row_bytes];
            kernel::dot_rows(self.ty, blocks, x, m, self.cols, out);
        };
        let threads = threads_for(self.rows * self.cols * m);
        if threads == 1 {
            run(0, &mut out);
        } else {
            // A few chunks per thread, so a thread that is slowed down does not hold up the rest.
            let per = self.rows.div_ceil(threads * 4).max(16);
            parallel_chunks(&mut out, per * m, |k, chunk| run(k * per, chunk));
        }
        if m == 1 {
            return out;
        }
        let mut y = vec![0.0f32; m * self.rows];
        for (c, row) in out.chunks_exact(m).enumerate() {
            for (r, v) in row.iter().enumerate() {
                y[r * self.rows + c] = *v;
            }
        }
        y
    }

    /// burn's packed form of the same numbers: Q8F/Q4F codes in `u32` words along `cols`
    /// (element `i` of a word in bits `i * bits..`), then one scale per block. Lossless:
    /// Q4_0's `q - 8` is exactly Q4F's range `[-8, 7]`, Q8_0's `q` is Q8F's, and an f16 scale
    /// widens to f32 exactly.
    ///
    /// The scales are stored as f32: burn's quantized matmul with f16 scales needs the
    /// `shader-f16` feature, which many WebGPU devices (SwiftShader among them) lack. That
    /// costs 2 bytes per 32 weights.
    pub fn to_burn(&self) -> TensorData {
        let scheme = self.ty.burn_scheme();
        let n_blocks = self.rows * self.cols / BLOCK;
        let size = self.ty.block_bytes();
        let value_bytes = match self.ty {
            QuantType::Q8_0 => BLOCK,
            QuantType::Q4_0 => BLOCK / 2,
        };
        let mut bytes = Vec::with_capacity(n_blocks * size);
        for block in self.bytes().chunks_exact(size) {
            match self.ty {
                // An i8 code is already its byte of a little-endian word.
                QuantType::Q8_0 => bytes.extend_from_slice(&block[2..]),
                QuantType::Q4_0 => {
                    // Elements 0..16 are the low nibbles, 16..32 the high ones; burn wants
                    // elements in order, two per byte, low nibble first, as two's complement
                    // (`q - 8` in 4 bits is `q ^ 8`).
                    let qs = &block[2..];
                    let nib = |i: usize| {
                        let q = if i < 16 {
                            qs[i] & 0x0F
                        } else {
                            qs[i - 16] >> 4
                        };
                        q ^ 8
                    };
                    for j in 0..BLOCK / 2 {
                        bytes.push(nib(2 * j) | (nib(2 * j + 1) << 4));
                    }
                }
            }
        }
        debug_assert_eq!(bytes.len(), n_blocks * value_bytes);
        for block in self.bytes().chunks_exact(size) {
            bytes.extend_from_slice(&scale(block).to_le_bytes());
        }
        TensorData::from_bytes_vec(bytes, [self.rows, self.cols], DType::QFloat(scheme))
    }
}

/// Q4_0 blocks whose scale is fitted to the block rather than set by its largest value.
///
/// llama.cpp's reference maps the largest magnitude exactly to -8, which wastes a level on
/// one value and rounds the 31 others coarsely. Here, as in llama.cpp's own `make_qx_quants`,
/// a few candidate scales around that one are tried; for each, the codes are rounded and the
/// least-squares scale for those codes computed; the block keeps the pair with the smallest
/// squared error. Same format, so every reader reads it; never worse than the reference,
/// which is among the candidates.
pub fn quantize_q4_0_fitted(x: &[f32]) -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        /// The same loop with AVX2's 4-wide f64 and 8-wide f32 vectors.
        #[target_feature(enable = "avx2")]
        fn with_avx2(x: &[f32]) -> Vec<u8> {
            fitted_blocks(x)
        }
        // SAFETY: the CPU has AVX2, checked above.
        return unsafe { with_avx2(x) };
    }
    fitted_blocks(x)
}

#[inline(always)]
fn fitted_blocks(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / BLOCK * QuantType::Q4_0.block_bytes());
    for block in x.chunks_exact(BLOCK) {
        let block: &[f32; BLOCK] = block.try_into().expect("chunks_exact gives whole blocks");
        let d = fitted_q4_0_scale(block);
        push_q4_0_block(&mut out, block, d);
    }
    out
}

/// Appends one Q4_0 block: the scale `d`, then the block's codes at that scale.
fn push_q4_0_block(out: &mut Vec<u8>, block: &[f32], d: f16) {
    out.extend_from_slice(&d.to_le_bytes());
    let id = if d.to_f32() != 0.0 {
        1.0 / d.to_f32()
    } else {
        0.0
    };
    let q = |v: f32| (code4(v, id) + 8) as u8;
    for j in 0..BLOCK / 2 {
        out.push(q(block[j]) | (q(block[j + BLOCK / 2]) << 4));
    }
}

/// The scale [`quantize_q4_0_fitted`] keeps for one block.
///
/// Written for speed, as it fits 20 candidates per block: the block is widened to f64 once,
/// each candidate's codes and sums are computed over whole arrays in fixed lanes, which the
/// compiler turns into SIMD, and the candidates' scales go through f16 together. (The first
/// version summed each candidate in one chain of dependent f64 adds and was many times slower
/// than Q8_0; `benches/kernel.rs` times both formats, BENCHMARKS.md "fitting Q4_0 scales".)
/// Every product `v·q` is exact in f64, so only the order of the adds differs from a plain
/// loop; that order is fixed, so the result does not depend on the machine, and a test holds
/// it to the plain loop's bytes.
#[inline(always)]
fn fitted_q4_0_scale(block: &[f32; BLOCK]) -> f16 {
    let max = reference::largest_magnitude(block);
    let reference = max / -8.0;
    // The reference pair first: its own codes and its scale as stored.
    let d_ref = f16::from_f32(reference).to_f32();
    if reference == 0.0 {
        return f16::from_f32(d_ref);
    }
    let wide: [f64; BLOCK] = block.map(f64::from);
    let xx: f64 = wide.iter().map(|v| v * v).sum();
    // The squared error of codes `q` at scale `d` is Σx² − 2d·Σxq + d²·Σq²: one pass over the
    // block per candidate gives both sums (in f64, so near-equal candidates rank right).
    // Candidate 0 is the reference pair (its codes, its scale as stored); then the steps.
    const CANDIDATES: usize = 20;
    let mut sums = [(0f64, 0f64); CANDIDATES];
    sums[0] = code_sums(block, &wide, 1.0 / reference);
    for (c, step) in (1..CANDIDATES).zip(-9..=9) {
        sums[c] = code_sums(block, &wide, -(8.0 + 0.1 * step as f32) / max);
    }
    // Each step's least-squares scale, rounded to f16 as it will be stored: all at once, so
    // the f16 conversions run as one SIMD pass instead of a call per candidate.
    let mut fitted = [0f32; CANDIDATES];
    for (d, &(xq, qq)) in fitted.iter_mut().zip(&sums) {
        *d = (xq / qq) as f32;
    }
    let mut halves = [f16::ZERO; CANDIDATES];
    halves.convert_from_f32_slice(&fitted);
    halves.convert_to_f32_slice(&mut fitted);
    fitted[0] = d_ref;
    let error = |d: f32, (xq, qq): (f64, f64)| {
        let d = f64::from(d);
        xx - 2.0 * d * xq + d * d * qq
    };
    let mut best = (error(d_ref, sums[0]), d_ref);
    for (&d, &(xq, qq)) in fitted.iter().zip(&sums).skip(1) {
        if qq == 0.0 {
            continue;
        }
        let err = error(d, (xq, qq));
        if err < best.0 {
            best = (err, d);
        }
    }
    f16::from_f32(best.1)
}

/// `(Σ x·q, Σ q²)` over a block for the codes `q` at inverse scale `inv`, in eight fixed lanes.
/// A function, not a closure, so that it is inlined into the AVX2 copy of the loop and gets
/// its lanes.
#[inline(always)]
fn code_sums(block: &[f32; BLOCK], wide: &[f64; BLOCK], inv: f32) -> (f64, f64) {
    let mut q = [0f64; BLOCK];
    for (q, &v) in q.iter_mut().zip(block) {
        // `code4`, in a form that vectorizes: `max`/`min` map NaN to 0 where `clamp` keeps
        // it for the cast to map to 0, so the code is the same, and a value known to lie in
        // [0, 15] needs none of the saturating cast's checks.
        #[allow(clippy::manual_clamp)] // `clamp` would keep a NaN; this must map it to 0.
        let c = (v * inv + 8.5).max(0.0).min(15.0);
        // SAFETY: `c` is finite and in [0, 15], so it fits an i32.
        *q = f64::from(unsafe { c.to_int_unchecked::<i32>() } - 8);
    }
    const LANES: usize = 8;
    let (mut xq, mut qq) = ([0f64; LANES], [0f64; LANES]);
    for (x, q) in wide.chunks_exact(LANES).zip(q.chunks_exact(LANES)) {
        for l in 0..LANES {
            xq[l] += x[l] * q[l];
            qq[l] += q[l] * q[l];
        }
    }
    let total = |s: [f64; LANES]| ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
    (total(xq), total(qq))
}

/// The 4-bit code of `v` at inverse scale `inv`, rounded half up and clamped to `[-8, 7]`, as
/// llama.cpp's reference does it (`trunc(x + 8.5)`): a float-to-int cast, where `round()`
/// would be a library call per value on baseline x86-64.
#[inline]
fn code4(v: f32, inv: f32) -> i32 {
    (v * inv + 8.5).clamp(0.0, 15.0) as i32 - 8
}

fn scale(block: &[u8]) -> f32 {
    kernel::f16_to_f32(u16::from_le_bytes([block[0], block[1]]))
}

/// The 32 codes of a block, as the integers the scale multiplies.
fn unpack(ty: QuantType, block: &[u8]) -> impl Iterator<Item = f32> + '_ {
    let qs = &block[2..];
    (0..BLOCK).map(move |i| match ty {
        QuantType::Q8_0 => qs[i] as i8 as f32,
        QuantType::Q4_0 => {
            let q = if i < 16 {
                qs[i] & 0x0F
            } else {
                qs[i - 16] >> 4
            };
            (q as i32 - 8) as f32
        }
    })
}

/// How many threads a product of `work` multiply-adds is worth.
fn threads_for(work: usize) -> usize {
    if work >= 1 << 16 {
        crate::workers::threads()
    } else {
        1
    }
}

/// Runs `f(k, chunk)` on each `len`-long chunk of `out`, on the kernel's helper threads (see
/// [`crate::workers`]).
fn parallel_chunks(out: &mut [f32], len: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    struct Out(*mut f32);
    // SAFETY: each item writes its own chunk; the chunks do not overlap.
    unsafe impl Sync for Out {}
    let total = out.len();
    let base = Out(out.as_mut_ptr());
    let base = &base;
    crate::workers::for_each(total.div_ceil(len), &|k| {
        let start = k * len;
        let end = (start + len).min(total);
        // SAFETY: `start..end` lies in `out` and is this item's alone; `out` is borrowed
        // mutably until `for_each` returns, which is after every item has finished.
        let chunk = unsafe { std::slice::from_raw_parts_mut(base.0.add(start), end - start) };
        f(k, chunk);
    });
}

/// `f` of each item, in order, on the kernel's helper threads.
fn parallel_map<'a, T: Send>(
    items: Vec<&'a [f32]>,
    f: impl Fn(&'a [f32]) -> T + Sync + Send,
) -> Vec<T> {
    let results: Vec<Mutex<Option<T>>> = items.iter().map(|_| Mutex::new(None)).collect();
    crate::workers::for_each(items.len(), &|i| {
        let value = f(items[i]);
        *results[i].lock().unwrap_or_else(PoisonError::into_inner) = Some(value);
    });
    results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .expect("for_each runs every item")
        })
        .collect()
}

/// The CPU's block dot products. One loop, compiled twice: for the baseline target, and with
/// AVX2 and FMA where the CPU has them (checked at run time), which gives eight-wide fused
/// multiply-adds. Each block's 32 codes are widened to f32 once per input row, multiplied with
/// the input in eight lanes, and the lanes are scaled by the block's scale and accumulated; the
/// lanes are summed once per output.
mod kernel {
    use super::{QuantType, BLOCK};

    pub fn dot_rows(
        ty: QuantType,
        blocks: &[u8],
        x: &[f32],
        m: usize,
        cols: usize,
        out: &mut [f32],
    ) {
        match ty {
            QuantType::Q8_0 => dot_rows_on_this_cpu::<false>(blocks, x, m, cols, out),
            QuantType::Q4_0 => dot_rows_on_this_cpu::<true>(blocks, x, m, cols, out),
        }
    }

    fn dot_rows_on_this_cpu<const Q4: bool>(
        blocks: &[u8],
        x: &[f32],
        m: usize,
        cols: usize,
        out: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
        {
            // SAFETY: the CPU has AVX2, FMA and F16C, checked just above.
            unsafe { dot_rows_avx2::<Q4>(blocks, x, m, cols, out) };
            return;
        }
        dot_rows_with::<Q4, false>(blocks, x, m, cols, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_rows_avx2<const Q4: bool>(
        blocks: &[u8],
        x: &[f32],
        m: usize,
        cols: usize,
        out: &mut [f32],
    ) {
        dot_rows_with::<Q4, true>(blocks, x, m, cols, out)
    }

    /// `out[i * m + r]` = row `i` of the blocks · row `r` of `x`.
    #[inline(always)]
    fn dot_rows_with<const Q4: bool, const FMA: bool>(
        blocks: &[u8],
        x: &[f32],
        m: usize,
        cols: usize,
        out: &mut [f32],
    ) {
        let size = if Q4 { 2 + BLOCK / 2 } else { 2 + BLOCK };
        let row_bytes = cols / BLOCK * size;
        let madd = |a: f32, b: f32, c: f32| if FMA { a.mul_add(b, c) } else { a * b + c };
        for (row, out) in blocks.chunks_exact(row_bytes).zip(out.chunks_exact_mut(m)) {
            for (r, o) in out.iter_mut().enumerate() {
                let xr = &x[r * cols..(r + 1) * cols];
                let mut acc = [0f32; 8];
                for (block, xb) in row.chunks_exact(size).zip(xr.chunks_exact(BLOCK)) {
                    let d = scale::<FMA>(u16::from_le_bytes([block[0], block[1]]));
                    let mut codes = [0f32; BLOCK];
                    if Q4 {
                        for j in 0..BLOCK / 2 {
                            codes[j] = ((block[2 + j] & 0x0F) as i32 - 8) as f32;
                            codes[j + BLOCK / 2] = ((block[2 + j] >> 4) as i32 - 8) as f32;
                        }
                    } else {
                        for j in 0..BLOCK {
                            codes[j] = block[2 + j] as i8 as f32;
                        }
                    }
                    let mut part = [0f32; 8];
                    for (c, xs) in codes.chunks_exact(8).zip(xb.chunks_exact(8)) {
                        for l in 0..8 {
                            part[l] = madd(c[l], xs[l], part[l]);
                        }
                    }
                    for l in 0..8 {
                        acc[l] = madd(d, part[l], acc[l]);
                    }
                }
                *o = acc.iter().sum();
            }
        }
    }

    /// A block's f16 scale as f32. In the AVX2 build (`FAST`) that is one F16C instruction;
    /// converting in bit arithmetic was a third of the loop's instructions. Both are exact, so
    /// both builds give the same bits.
    #[inline(always)]
    fn scale<const FAST: bool>(bits: u16) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if FAST {
            use std::arch::x86_64::{_mm_cvtph_ps, _mm_cvtsi32_si128, _mm_cvtss_f32};
            // SAFETY: `FAST` is only set in `dot_rows_avx2`, which requires F16C.
            return unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits)))) };
        }
        f16_to_f32(bits)
    }

    /// [`scale`] as the AVX2 build runs it, for the tests.
    #[cfg(all(test, target_arch = "x86_64"))]
    #[target_feature(enable = "f16c")]
    pub unsafe fn scale_f16c(bits: u16) -> f32 {
        scale::<true>(bits)
    }

    /// An f16's value as f32, exactly: bit arithmetic for normal numbers (every scale but zero
    /// in practice), the `half` crate for the rest. (`half` alone is a library call per block
    /// on a CPU without F16C in the baseline target.)
    #[inline(always)]
    pub fn f16_to_f32(bits: u16) -> f32 {
        let exp = (bits >> 10) & 0x1F;
        if exp == 0 || exp == 0x1F {
            return half::f16::from_bits(bits).to_f32();
        }
        let sign = u32::from(bits & 0x8000) << 16;
        let mantissa = u32::from(bits & 0x3FF) << 13;
        f32::from_bits(sign | ((u32::from(exp) + 112) << 23) | mantissa)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_scales_widen_exactly() {
        #[cfg(target_arch = "x86_64")]
        let f16c = std::is_x86_feature_detected!("f16c");
        for bits in 0..=u16::MAX {
            let reference = f16::from_bits(bits).to_f32();
            let same = |ours: f32| {
                assert!(
                    ours.to_bits() == reference.to_bits() || (ours.is_nan() && reference.is_nan()),
                    "{bits:#06x}: {ours} vs {reference}"
                );
            };
            same(kernel::f16_to_f32(bits));
            #[cfg(target_arch = "x86_64")]
            if f16c {
                // SAFETY: the CPU has F16C, checked above.
                same(unsafe { kernel::scale_f16c(bits) });
            }
        }
    }
    use crate::weights::gguf::{dequantize, GgmlType};

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 0.2
            })
            .collect()
    }

    fn ggml(ty: QuantType) -> GgmlType {
        match ty {
            QuantType::Q8_0 => GgmlType::Q8_0,
            QuantType::Q4_0 => GgmlType::Q4_0,
        }
    }

    #[test]
    fn dequantize_equals_the_gguf_reader() {
        for ty in [QuantType::Q8_0, QuantType::Q4_0] {
            let m = BlockMatrix::quantize(ty, 5, 96, &values(5 * 96, 1)).unwrap();
            let reference = dequantize(ggml(ty), m.bytes()).unwrap();
            assert_eq!(m.dequantize(), reference, "{ty}");
        }
    }

    #[test]
    fn matmul_reads_blocks_like_a_dense_product() {
        for ty in [QuantType::Q8_0, QuantType::Q4_0] {
            for m_rows in [1, 3] {
                // Big enough to take the threaded path.
                let (rows, cols) = (300, 256);
                let w = BlockMatrix::quantize(ty, rows, cols, &values(rows * cols, 2)).unwrap();
                let x = values(m_rows * cols, 3);
                let dense = w.dequantize();
                let y = w.matmul(&x, m_rows);
                for r in 0..m_rows {
                    for c in 0..rows {
                        let want: f64 = (0..cols)
                            .map(|i| x[r * cols + i] as f64 * dense[c * cols + i] as f64)
                            .sum();
                        let got = y[r * rows + c] as f64;
                        assert!((got - want).abs() < 1e-5, "{ty} [{r},{c}]: {got} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn burn_repacking_is_lossless() {
        use burn_tensor::{Device, Tensor};
        for ty in [QuantType::Q8_0, QuantType::Q4_0] {
            let w = BlockMatrix::quantize(ty, 4, 64, &values(4 * 64, 4)).unwrap();
            let t = Tensor::<2>::from_data(w.to_burn(), &Device::flex());
            let back: Vec<f32> = t.dequantize().into_data().try_to_vec::<f32>().unwrap();
            assert_eq!(back, w.dequantize(), "{ty}");
        }
    }

    /// [`quantize_q4_0_fitted`]'s choice of scale as first written: one plain loop per
    /// candidate, sums in order. The fast version must choose the same scale for every block
    /// (both write the block with `push_q4_0_block`).
    fn fitted_as_first_written(x: &[f32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(x.len() / BLOCK * QuantType::Q4_0.block_bytes());
        for block in x.chunks_exact(BLOCK) {
            let max = reference::largest_magnitude(block);
            let reference = max / -8.0;
            // The squared error of codes `q` at scale `d` is Σx² − 2d·Σxq + d²·Σq²: one pass over
            // the block per candidate gives both sums (in f64, so near-equal candidates rank right).
            let xx: f64 = block.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            let sums = |inv: f32| {
                block.iter().fold((0f64, 0f64), |(xq, qq), &v| {
                    let q = f64::from(code4(v, inv));
                    (xq + f64::from(v) * q, qq + q * q)
                })
            };
            let error = |d: f32, (xq, qq): (f64, f64)| {
                let d = f64::from(d);
                xx - 2.0 * d * xq + d * d * qq
            };
            // The reference pair first: its own codes and its scale as stored.
            let d_ref = f16::from_f32(reference).to_f32();
            let mut best = (f64::INFINITY, d_ref);
            if reference != 0.0 {
                best.0 = error(d_ref, sums(1.0 / reference));
                for step in -9..=9 {
                    let (xq, qq) = sums(-(8.0 + 0.1 * step as f32) / max);
                    if qq == 0.0 {
                        continue;
                    }
                    let d = f16::from_f32((xq / qq) as f32).to_f32();
                    let err = error(d, (xq, qq));
                    if err < best.0 {
                        best = (err, d);
                    }
                }
            }
            push_q4_0_block(&mut out, block, f16::from_f32(best.1));
        }
        out
    }

    #[test]
    fn fast_fitted_q4_0_matches_the_plain_loop() {
        // Uniform values, a heavy-tailed spread (an outlier per block, as real weights have),
        // tiny and huge magnitudes, constant blocks and zeros.
        let mut x = values(BLOCK * 40_000, 21);
        let heavy = values(BLOCK * 20_000, 22);
        x.extend(heavy.iter().enumerate().map(|(i, v)| {
            if i % 29 == 3 {
                v * 40.0
            } else {
                v * v * v * 100.0
            }
        }));
        x.extend(values(BLOCK * 1_000, 23).iter().map(|v| v * 1e-30));
        x.extend(values(BLOCK * 1_000, 24).iter().map(|v| v * 1e30));
        x.extend([0.25f32; BLOCK]);
        x.extend([-3.0f32; BLOCK]);
        x.extend([0f32; BLOCK]);
        assert_eq!(quantize_q4_0_fitted(&x), fitted_as_first_written(&x));
    }

    #[test]
    fn fitted_q4_0_is_never_worse_than_the_reference() {
        let x = values(64 * 256, 9);
        let reference = dequantize(GgmlType::Q4_0, &reference::quantize_q4_0(&x)).unwrap();
        let fitted = dequantize(GgmlType::Q4_0, &quantize_q4_0_fitted(&x)).unwrap();
        let sse = |y: &[f32], range: std::ops::Range<usize>| -> f64 {
            range.map(|i| ((x[i] - y[i]) as f64).powi(2)).sum()
        };
        for b in 0..x.len() / BLOCK {
            let r = b * BLOCK..(b + 1) * BLOCK;
            assert!(
                sse(&fitted, r.clone()) <= sse(&reference, r) * (1.0 + 1e-6),
                "block {b}"
            );
        }
        let (f, r) = (sse(&fitted, 0..x.len()), sse(&reference, 0..x.len()));
        eprintln!(
            "Q4_0 squared error: fitted {f:.4e}, reference {r:.4e} ({:.1} %)",
            100.0 * f / r
        );
        assert!(f < 0.95 * r, "fitting gains little: {f} vs {r}");
    }

    #[test]
    fn wrong_sizes_are_errors() {
        assert!(BlockMatrix::from_blocks(QuantType::Q8_0, 2, 48, vec![0; 100]).is_err());
        assert!(BlockMatrix::from_blocks(QuantType::Q4_0, 2, 64, vec![0; 71]).is_err());
        assert!(BlockMatrix::from_blocks(QuantType::Q4_0, 2, 64, vec![0; 72]).is_ok());
        assert!("q5_k".parse::<QuantType>().is_err());
        assert_eq!("Q4_0".parse::<QuantType>().unwrap(), QuantType::Q4_0);
    }
}
