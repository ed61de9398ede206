//! Colour conversion (jdcolor.c), and Pillow's CMYK -> RGB.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Color {
    Gray,
    YCbCr,
    Rgb,
    Cmyk,
    Ycck,
}

/// `build_ycc_rgb_table` (SCALEBITS = 16).
pub(super) struct ColorTables {
    cr_r: [i32; 256],
    cb_b: [i32; 256],
    cr_g: [i32; 256],
    cb_g: [i32; 256],
}

impl ColorTables {
    pub(super) fn new() -> Self {
        const ONE_HALF: i32 = 1 << 15;
        let fix = |x: f64| (x * 65536.0 + 0.5) as i32;
        let mut t = ColorTables {
            cr_r: [0; 256],
            cb_b: [0; 256],
            cr_g: [0; 256],
            cb_g: [0; 256],
        };
        for i in 0..256 {
            let x = i as i32 - 128;
            t.cr_r[i] = (fix(1.40200) * x + ONE_HALF) >> 16;
            t.cb_b[i] = (fix(1.77200) * x + ONE_HALF) >> 16;
            t.cr_g[i] = -fix(0.71414) * x;
            t.cb_g[i] = -fix(0.34414) * x + ONE_HALF;
        }
        t
    }

    /// `ycc_rgb_convert` for one pixel.
    #[inline]
    fn rgb(&self, y: u8, cb: u8, cr: u8) -> [u8; 3] {
        let (y, cb, cr) = (i32::from(y), usize::from(cb), usize::from(cr));
        let clamp = |v: i32| v.clamp(0, 255) as u8;
        [
            clamp(y + self.cr_r[cr]),
            clamp(y + ((self.cb_g[cb] + self.cr_g[cr]) >> 16)),
            clamp(y + self.cb_b[cb]),
        ]
    }
}

/// Pillow's `cmyk2rgb` applied to libjpeg's CMYK output read as "CMYK;I"
/// (every band inverted): `nk - nk * c' / 255` with `c' = 255 - c` and
/// `nk = 255 - k' = k`, using Pillow's rounding `MULDIV255`.
#[inline]
fn pil_cmyk_inverted(c: u8, k: u8) -> u8 {
    let nk = i32::from(k);
    let t = i32::from(255 - c) * nk + 128;
    (nk - (((t >> 8) + t) >> 8)).clamp(0, 255) as u8
}

pub(super) fn convert_row(color: Color, t: &ColorTables, rows: &[Vec<u8>], dst: &mut [u8]) {
    let w = dst.len() / 3;
    match color {
        Color::Gray => {
            for (d, &g) in dst.chunks_exact_mut(3).zip(&rows[0][..w]) {
                d.fill(g);
            }
        }
        Color::Rgb => {
            for (x, d) in dst.chunks_exact_mut(3).enumerate() {
                d.copy_from_slice(&[rows[0][x], rows[1][x], rows[2][x]]);
            }
        }
        Color::YCbCr => {
            for (x, d) in dst.chunks_exact_mut(3).enumerate() {
                d.copy_from_slice(&t.rgb(rows[0][x], rows[1][x], rows[2][x]));
            }
        }
        Color::Cmyk | Color::Ycck => {
            for (x, d) in dst.chunks_exact_mut(3).enumerate() {
                let cmy = if color == Color::Ycck {
                    // ycck_cmyk_convert: MAXJSAMPLE - (YCbCr -> RGB).
                    t.rgb(rows[0][x], rows[1][x], rows[2][x]).map(|v| 255 - v)
                } else {
                    [rows[0][x], rows[1][x], rows[2][x]]
                };
                let k = rows[3][x];
                d.copy_from_slice(&cmy.map(|c| pil_cmyk_inverted(c, k)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::jpeg::idct::idct_islow;

    #[test]
    fn idct_and_color_basics() {
        let quant = [1u16; 64];
        let mut coef = [0i16; 64];
        coef[0] = 80; // DC 80 * 1 -> +10 on every sample
        let mut out = [0u8; 64];
        idct_islow(&coef, &quant, &mut out, 8);
        assert!(out.iter().all(|&v| v == 138));
        let t = ColorTables::new();
        assert_eq!(t.rgb(128, 128, 128), [128, 128, 128]);
        assert_eq!(t.rgb(255, 0, 255), [255, 208, 28]);
        assert_eq!(pil_cmyk_inverted(255, 255), 255);
    }
}
