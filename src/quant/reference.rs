//! llama.cpp's reference quantizers for Q8_0 and Q4_0, bit for bit (`tests/quant_golden.rs`
//! checks them against gguf-py): what `captioner quantize` writes, and the Q8_0 of quantizing
//! on load.

use half::f16;

use super::BLOCK;

/// Q8_0 (llama.cpp `quantize_row_q8_0_ref`): per block of 32, `d = max|x| / 127` stored as f16,
/// and `q = round(x / d)` as i8.
pub fn quantize_q8_0(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / BLOCK * 34);
    for block in x.chunks_exact(BLOCK) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|v| (v * id).round() as i8 as u8));
    }
    out
}

/// Q4_0 (llama.cpp `quantize_row_q4_0_ref`): per block of 32, `d = m / -8` where `m` is the
/// value of largest magnitude (so it maps exactly to -8), and `q = min(15, trunc(x / d + 8.5))`;
/// element `j` goes in the low nibble of byte `j`, element `j + 16` in its high nibble.
pub fn quantize_q4_0(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / BLOCK * 18);
    for block in x.chunks_exact(BLOCK) {
        let max = largest_magnitude(block);
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        let q = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
        for j in 0..BLOCK / 2 {
            out.push(q(block[j]) | (q(block[j + BLOCK / 2]) << 4));
        }
    }
    out
}

/// The value of largest magnitude (the first, on a tie), with its sign.
pub fn largest_magnitude(block: &[f32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in block {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}
