//! Long products cut into bands, one per thread, for the browser's threaded build.
//!
//! Natively burn-flex spreads its `gemm` and its attention over the cores with rayon. In the
//! threaded browser build flex has no rayon (the rayon pool's threads are the CPU kernel's
//! helpers for good, `src/workers.rs`), so a vision tile's or a prefill's products would run on
//! one thread of several. There they are cut here into bands of rows (or of heads), each band
//! computed by flex on one of the kernel's threads, and the results joined.

use burn_tensor::Tensor;
use std::ops::Range;
use std::sync::Mutex;

/// Whether this build cuts products into bands: only the browser's threaded one.
pub const BANDED: bool = cfg!(all(target_arch = "wasm32", feature = "threads"));

/// Rows below which a band is not worth a thread's wake-up.
pub const MIN_BAND: usize = 32;

/// `f` over `0..n` cut into at most one band per thread (and none shorter than `min_band`),
/// the bands' results joined along `dim`, in order.
pub fn in_bands<const D: usize>(
    n: usize,
    min_band: usize,
    dim: usize,
    f: &(dyn Fn(Range<usize>) -> Tensor<D> + Sync),
) -> Tensor<D> {
    let bands = crate::workers::threads().min(n / min_band.max(1)).max(1);
    if bands == 1 {
        return f(0..n);
    }
    let per_band = n.div_ceil(bands);
    let ranges: Vec<Range<usize>> = (0..n)
        .step_by(per_band)
        .map(|start| start..(start + per_band).min(n))
        .collect();
    let results: Vec<Mutex<Option<Tensor<D>>>> = ranges.iter().map(|_| Mutex::new(None)).collect();
    crate::workers::for_each(ranges.len(), &|i| {
        let band = f(ranges[i].clone());
        if let Ok(mut slot) = results[i].lock() {
            *slot = Some(band);
        }
    });
    let parts: Vec<Tensor<D>> = results
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .ok()
                .flatten()
                .expect("every band ran (for_each runs each item once, or panics)")
        })
        .collect();
    Tensor::cat(parts, dim)
}

#[cfg(test)]
mod tests {
    use super::in_bands;
    use burn_tensor::{Device, Tensor, TensorData};

    /// A product cut into row bands is the product, whatever the thread count cuts it into
    /// (on this machine's helpers; in the browser, Web Workers run the same code).
    #[test]
    fn banded_product_is_the_product() {
        let device = Device::flex();
        let (m, k, n) = (203, 48, 40);
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let w: Vec<f32> = (0..k * n)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
            .collect();
        let x = Tensor::<2>::from_data(TensorData::new(x, [m, k]), &device);
        let w = Tensor::<2>::from_data(TensorData::new(w, [k, n]), &device);
        let whole = x.clone().matmul(w.clone());
        for min_band in [1, 7, 32, 1000] {
            let banded = in_bands(m, min_band, 0, &|rows| {
                x.clone().slice(rows).matmul(w.clone())
            });
            assert_eq!(banded.dims(), [m, n]);
            let diff: f32 = (banded - whole.clone()).abs().max().into_scalar();
            assert!(diff == 0.0, "min band {min_band}: differs by {diff}");
        }
    }
}
