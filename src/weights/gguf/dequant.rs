//! Dequantization: ggml's reference formulas, with the same f32 operation order as ggml's
//! `dequantize_row_*` and gguf-py's numpy versions, so results are bit-identical.

use super::{GgmlType, QK_K};
use crate::buffers::f32_buffer;
use half::f16;

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Why [`dequantize`] gave no values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotDequantized {
    /// A type this reader cannot dequantize.
    UnsupportedType,
    /// Not the memory for the values: a 4-bit file takes about seven times its bytes as f32,
    /// more than a machine or a browser tab may have.
    NoMemory,
}

/// Dequantizes whole blocks of `ty` (`data.len()` is a multiple of the block size in bytes;
/// the caller checks that).
pub fn dequantize(ty: GgmlType, data: &[u8]) -> Result<Vec<f32>, NotDequantized> {
    let (block, size) = ty.block_layout();
    let (block, size) = (block as usize, size as usize);
    let n_blocks = data.len() / size;
    if !ty.is_supported() {
        return Err(NotDequantized::UnsupportedType);
    }
    let mut out = f32_buffer(n_blocks * block).ok_or(NotDequantized::NoMemory)?;
    let blocks = data.chunks_exact(size);
    match ty {
        GgmlType::F32 => out.extend(blocks.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        GgmlType::F16 => out.extend(blocks.map(|b| f16_at(b, 0))),
        GgmlType::BF16 => out.extend(
            blocks.map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)),
        ),
        GgmlType::Q4_0 => {
            // d: f16, qs[16]: element j in the low nibble of qs[j], element j + 16 in the high.
            for b in blocks {
                let d = f16_at(b, 0);
                let qs = &b[2..18];
                out.extend(qs.iter().map(|&q| d * ((q & 0x0F) as i32 - 8) as f32));
                out.extend(qs.iter().map(|&q| d * ((q >> 4) as i32 - 8) as f32));
            }
        }
        GgmlType::Q4_1 => {
            // d: f16, m: f16, qs[16]; x = d * q + m.
            for b in blocks {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let qs = &b[4..20];
                out.extend(qs.iter().map(|&q| d * (q & 0x0F) as f32 + m));
                out.extend(qs.iter().map(|&q| d * (q >> 4) as f32 + m));
            }
        }
        GgmlType::Q5_0 => {
            // d: f16, qh: u32 (bit i is the fifth bit of element i), qs[16].
            for b in blocks {
                let d = f16_at(b, 0);
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                let qs = &b[6..22];
                for half in 0..2 {
                    for (j, &q) in qs.iter().enumerate() {
                        let i = half * 16 + j;
                        let low = if half == 0 { q & 0x0F } else { q >> 4 };
                        let high = ((qh >> i) & 1) as u8;
                        out.push(d * ((low | (high << 4)) as i32 - 16) as f32);
                    }
                }
            }
        }
        GgmlType::Q5_1 => {
            // d: f16, m: f16, qh: u32, qs[16]; x = d * q + m.
            for b in blocks {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                let qs = &b[8..24];
                for half in 0..2 {
                    for (j, &q) in qs.iter().enumerate() {
                        let i = half * 16 + j;
                        let low = if half == 0 { q & 0x0F } else { q >> 4 };
                        let high = ((qh >> i) & 1) as u8;
                        out.push(d * (low | (high << 4)) as f32 + m);
                    }
                }
            }
        }
        GgmlType::Q8_0 => {
            // d: f16, qs[32]: i8; x = q * d.
            for b in blocks {
                let d = f16_at(b, 0);
                out.extend(b[2..34].iter().map(|&q| (q as i8) as f32 * d));
            }
        }
        GgmlType::Q4_K => {
            // d, dmin: f16; scales[12]: eight 6-bit (scale, min) pairs; qs[128]. Each 64
            // elements use 32 bytes of qs: low nibbles for the first 32, high for the next.
            for b in blocks {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let scales = &b[4..16];
                let qs = &b[16..144];
                for chunk in 0..4 {
                    let q = &qs[chunk * 32..chunk * 32 + 32];
                    for (sub, shift) in [(2 * chunk, 0), (2 * chunk + 1, 4)] {
                        let (sc, m) = k_scale_min(scales, sub);
                        let (d1, m1) = (d * sc as f32, dmin * m as f32);
                        out.extend(q.iter().map(|&v| d1 * ((v >> shift) & 0x0F) as f32 - m1));
                    }
                }
            }
        }
        GgmlType::Q5_K => {
            // As Q4_K, plus qh[32]: bit s of qh[l] is the fifth bit of element l of sub-block s.
            for b in blocks {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let scales = &b[4..16];
                let qh = &b[16..48];
                let qs = &b[48..176];
                for chunk in 0..4 {
                    let q = &qs[chunk * 32..chunk * 32 + 32];
                    for (sub, shift) in [(2 * chunk, 0), (2 * chunk + 1, 4)] {
                        let (sc, m) = k_scale_min(scales, sub);
                        let (d1, m1) = (d * sc as f32, dmin * m as f32);
                        out.extend(q.iter().zip(qh).map(|(&v, &h)| {
                            let value = ((v >> shift) & 0x0F) | (((h >> sub) & 1) << 4);
                            d1 * value as f32 - m1
                        }));
                    }
                }
            }
        }
        GgmlType::Q6_K => {
            // ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16]: i8 (one per 16
            // elements), d: f16 at the end. Each half (128 elements) uses 64 bytes of ql and
            // 32 of qh: element 32k + l (k = 0..4) takes ql[l + 32 (k & 1)] (low nibble for
            // k < 2, high for k >= 2) and bits 2k, 2k+1 of qh[l].
            for b in blocks {
                let d = f16_at(b, 208);
                let scales = &b[192..208];
                for half in 0..2 {
                    let ql = &b[half * 64..half * 64 + 64];
                    let qh = &b[128 + half * 32..128 + half * 32 + 32];
                    for k in 0..4 {
                        let low = &ql[(k & 1) * 32..(k & 1) * 32 + 32];
                        let shift = if k < 2 { 0 } else { 4 };
                        for (l, (&lo, &hi)) in low.iter().zip(qh).enumerate() {
                            let idx = half * 128 + k * 32 + l;
                            let sc = scales[idx / 16] as i8;
                            let q = ((lo >> shift) & 0x0F) | (((hi >> (2 * k)) & 3) << 4);
                            out.push((d * sc as f32) * (q as i32 - 32) as f32);
                        }
                    }
                }
            }
        }
        GgmlType::Q8_K => {
            // d: f32, qs[256]: i8, bsums[16]: i16 (unused here); x = d * q.
            for b in blocks {
                let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                out.extend(b[4..4 + QK_K].iter().map(|&q| d * (q as i8) as f32));
            }
        }
        _ => return Err(NotDequantized::UnsupportedType),
    }
    Ok(out)
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K block, packed in 12 bytes:
/// bytes 0-3 hold the scales of sub-blocks 0-3 (low 6 bits), bytes 4-7 their mins; sub-blocks
/// 4-7 keep their low 4 bits in the nibbles of bytes 8-11 and their top 2 bits in the top bits
/// of bytes 0-7.
fn k_scale_min(s: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}
