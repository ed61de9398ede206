//! The CPU block kernel alone: one decode step's matrix-vector products (`m = 1`) at the text
//! model's shapes, Q8_0 and Q4_0, as `BlockMatrix::matmul` runs them (on the helper threads
//! natively). Whole-model figures come from `captioner bench`; this one isolates the kernel, so
//! a change to it shows without the noise of loading and of the other ops.
//!
//! `cargo bench --bench kernel` prints µs per product, the weight bytes read per second and
//! multiply-adds per second; then how fast each format quantizes an f32 matrix, which is what
//! loading a file in any other format (Q4_1, K-quants, f16) at q8_0/q4_0 costs per weight. Under `cargo test` (no `--bench` argument) it runs a few products
//! and checks them against the dequantized weights, so the harness cannot rot.

use std::hint::black_box;
use std::time::Instant;

use captioner::quant::BlockMatrix;
use captioner::QuantType;

/// `(name, rows, cols)`: SmolLM2-135M's and SmolVLM-256M's text model (hidden 576,
/// intermediate 1536, 3 KV heads of 64), and SmolVLM-500M's (hidden 960, intermediate 2560).
const SHAPES: [(&str, usize, usize); 5] = [
    ("k/v_proj 576", 192, 576),
    ("q/o_proj 576", 576, 576),
    ("gate/up 576", 1536, 576),
    ("down 1536", 576, 1536),
    ("gate/up 960", 2560, 960),
];

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
        })
        .collect()
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (warmup, runs) = if bench { (200, 2000) } else { (1, 3) };
    println!(
        "{:<14} {:>6} {:>10} {:>12} {:>10}",
        "shape", "type", "µs/product", "weights GB/s", "GMAC/s"
    );
    for (name, rows, cols) in SHAPES {
        let weights = values(rows * cols, rows as u64);
        let x = values(cols, 7);
        for ty in [QuantType::Q8_0, QuantType::Q4_0] {
            let matrix = BlockMatrix::quantize(ty, rows, cols, &weights).expect("whole blocks");
            if !bench {
                check(&matrix, &x);
            }
            for _ in 0..warmup {
                black_box(matrix.matmul(black_box(&x), 1));
            }
            let median = median_seconds(runs, || {
                black_box(matrix.matmul(black_box(&x), 1));
            });
            println!(
                "{name:<14} {:>6} {:>10.2} {:>12.2} {:>10.2}",
                ty.name(),
                median * 1e6,
                matrix.bytes().len() as f64 / median / 1e9,
                (rows * cols) as f64 / median / 1e9
            );
        }
    }
    quantize_speed(bench);
}

/// Quantizing one `gate/up 576` matrix on one thread (loading spreads matrices' rows over the
/// helper threads; this is the per-thread rate).
fn quantize_speed(bench: bool) {
    let (rows, cols) = (1536, 576);
    let weights = values(rows * cols, 11);
    let runs = if bench { 20 } else { 1 };
    println!(
        "\n{:<14} {:>6} {:>10} {:>12}",
        "quantize", "type", "ms/matrix", "M weights/s"
    );
    for ty in [QuantType::Q8_0, QuantType::Q4_0] {
        let median = median_seconds(runs, || {
            black_box(captioner::quant::quantize_blocks(ty, black_box(&weights)));
        });
        println!(
            "{:<14} {:>6} {:>10.2} {:>12.1}",
            "gate/up 576",
            ty.name(),
            median * 1e3,
            (rows * cols) as f64 / median / 1e6
        );
    }
}

/// The median wall time of `runs` calls of `f`, in seconds.
fn median_seconds(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut samples: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// The kernel's product equals the product with the dequantized weights (up to f32 rounding).
fn check(matrix: &BlockMatrix, x: &[f32]) {
    let dense = matrix.dequantize();
    let y = matrix.matmul(x, 1);
    for (r, got) in y.iter().enumerate() {
        let row = &dense[r * matrix.cols()..(r + 1) * matrix.cols()];
        let want: f32 = row.iter().zip(x).map(|(w, v)| w * v).sum();
        assert!(
            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
            "row {r}: {got} vs {want}"
        );
    }
}
