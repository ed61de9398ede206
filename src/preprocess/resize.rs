//! Pillow-exact convolution resampling for 8-bit RGB images.
//!
//! This reproduces what `PIL.Image.resize(size, filter)` computes for an
//! 8-bit image whose box is the whole source (libImaging `ImagingResample`,
//! checked against Pillow 13.0.0), bit for bit:
//!
//! * the resize is separable and a pass only runs when that axis changes
//!   size;
//! * pass order (new in Pillow 13): the vertical pass runs first when the
//!   height shrinks by more than twice as many pixels as the width does
//!   (`in_h - out_h > 0 && in_h - out_h > 2 * (in_w - out_w)`), otherwise
//!   the horizontal pass runs first. Each pass writes a rounded, clamped
//!   8-bit image, so the order changes the result. When the horizontal pass
//!   runs first it only processes the source rows the vertical pass reads;
//! * for every output index the filter is centred at
//!   `in0 + (i + 0.5) * scale` (all in `f64`, `scale = in_len / out_len`),
//!   and, when shrinking, the filter is stretched by `scale` (its support
//!   grows and its argument is multiplied by `1 / scale`);
//! * the taps cover the source indices `[trunc(center - support + 0.5),
//!   trunc(center + support + 0.5))`, clamped to the image;
//! * the taps are divided by their sum, then turned into signed fixed point
//!   with 22 fractional bits, rounding half away from zero;
//! * each output sample starts at `1 << 21` (the rounding half), accumulates
//!   `sample * tap` in 32-bit integers, is shifted right by 22 and clamped
//!   to `0..=255`.
//!
//! Only the whole-image box is supported (that is all `Image.resize` uses
//! when no `box` is given).

use image::RgbImage;

/// Fractional bits of the fixed point taps (Pillow: 32 - 8 - 2).
const PRECISION_BITS: u32 = 22;

/// The convolution filters Pillow offers for `Image.resize` (the ones that go
/// through `ImagingResample`; NEAREST and the MKS filters are not here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResampleFilter {
    /// `Image.BOX` (4)
    Box,
    /// `Image.BILINEAR` (2)
    Bilinear,
    /// `Image.HAMMING` (5)
    Hamming,
    /// `Image.BICUBIC` (3)
    Bicubic,
    /// `Image.LANCZOS` (1)
    Lanczos,
    /// `Image.MKS2013` (6, Magic Kernel Sharp 2013; Pillow 13)
    Mks2013,
    /// `Image.MKS2021` (7, Magic Kernel Sharp 2021; Pillow 13)
    Mks2021,
}

impl ResampleFilter {
    /// Maps Pillow's integer resampling codes (as stored in transformers
    /// configs under `resample`) to a filter; `None` for NEAREST (0) and
    /// anything that does not go through the convolution resampler.
    pub fn from_pil_code(code: i64) -> Option<Self> {
        match code {
            1 => Some(Self::Lanczos),
            2 => Some(Self::Bilinear),
            3 => Some(Self::Bicubic),
            4 => Some(Self::Box),
            5 => Some(Self::Hamming),
            6 => Some(Self::Mks2013),
            7 => Some(Self::Mks2021),
            _ => None,
        }
    }

    /// Half-width of the filter at scale 1.
    fn support(self) -> f64 {
        match self {
            Self::Box => 0.5,
            Self::Bilinear | Self::Hamming => 1.0,
            Self::Bicubic => 2.0,
            Self::Lanczos => 3.0,
            Self::Mks2013 => 2.5,
            Self::Mks2021 => 4.5,
        }
    }

    fn eval(self, x: f64) -> f64 {
        match self {
            Self::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Self::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Self::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let px = x * std::f64::consts::PI;
                    // Pillow writes the window constants as C `float`
                    // literals, so they are the f32 values widened.
                    px.sin() / px * (0.54f32 as f64 + 0.46f32 as f64 * px.cos())
                }
            }
            Self::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Self::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
            Self::Mks2013 => {
                let x = x.abs();
                if x < 0.5 {
                    17.0 / 16.0 - 7.0 / 4.0 * (x * x)
                } else if x < 1.5 {
                    (1.0 - x) * (7.0 / 4.0 - x)
                } else if x < 2.5 {
                    let d = x - 5.0 / 2.0;
                    -1.0 / 8.0 * (d * d)
                } else {
                    0.0
                }
            }
            Self::Mks2021 => {
                let x = x.abs();
                if x < 0.5 {
                    577.0 / 576.0 - 239.0 / 144.0 * (x * x)
                } else if x < 1.5 {
                    35.0 / 36.0 * (x - 1.0) * (x - 239.0 / 140.0)
                } else if x < 2.5 {
                    1.0 / 6.0 * (x - 2.0) * (65.0 / 24.0 - x)
                } else if x < 3.5 {
                    1.0 / 36.0 * (x - 3.0) * (x - 15.0 / 4.0)
                } else if x < 4.5 {
                    let d = x - 9.0 / 2.0;
                    -1.0 / 288.0 * (d * d)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let px = x * std::f64::consts::PI;
        px.sin() / px
    }
}

/// Fixed point taps for one axis.
struct Taps {
    /// Per output index: first source index and number of taps.
    bounds: Vec<(usize, usize)>,
    /// `ksize` taps per output index (unused ones are zero).
    weights: Vec<i32>,
    ksize: usize,
}

impl Taps {
    fn of(&self, out_index: usize) -> (usize, &[i32]) {
        let (start, count) = self.bounds[out_index];
        let base = out_index * self.ksize;
        (start, &self.weights[base..base + count])
    }
}

/// Computes the taps for resampling `in_size` samples (box `in0..in1`) to
/// `out_size` samples. `in_size` and `out_size` are both at least 1.
fn compute_taps(
    in_size: usize,
    in0: f32,
    in1: f32,
    out_size: usize,
    filter: ResampleFilter,
) -> Taps {
    // `in1 - in0` is a float subtraction in Pillow, widened afterwards.
    let scale = f64::from(in1 - in0) / out_size as f64;
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let support = filter.support() * filterscale;
    let ksize = (support.ceil() as usize) * 2 + 1;
    let inv = 1.0 / filterscale;

    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut tmp = vec![0f64; ksize];
    let one = f64::from(1u32 << PRECISION_BITS);

    for (xx, row) in weights.chunks_exact_mut(ksize).enumerate() {
        let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
        // C casts to int, which truncates toward zero (the start can be
        // slightly negative and is clamped right after).
        let lo = ((center - support + 0.5) as i64).max(0);
        let hi = ((center + support + 0.5) as i64).min(in_size as i64);
        let count = ((hi - lo).max(0) as usize).min(ksize);
        let lo = lo as usize;

        let mut sum = 0.0f64;
        for (x, t) in tmp.iter_mut().take(count).enumerate() {
            let w = filter.eval(((x + lo) as f64 - center + 0.5) * inv);
            *t = w;
            sum += w;
        }
        for (t, out) in tmp.iter().take(count).zip(row.iter_mut()) {
            let k = if sum != 0.0 { *t / sum } else { *t };
            *out = if k < 0.0 {
                (-0.5 + k * one) as i32
            } else {
                (0.5 + k * one) as i32
            };
        }
        bounds.push((lo, count));
    }
    Taps {
        bounds,
        weights,
        ksize,
    }
}

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Horizontal pass over the source rows `row0..row0 + rows`.
fn pass_horizontal(
    src: &[u8],
    src_w: usize,
    row0: usize,
    rows: usize,
    taps: &Taps,
    out_w: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; out_w * rows * 3];
    for (y, out_row) in out.chunks_exact_mut(out_w * 3).enumerate() {
        let src_row = &src[(row0 + y) * src_w * 3..(row0 + y + 1) * src_w * 3];
        for (xx, px) in out_row.chunks_exact_mut(3).enumerate() {
            let (start, k) = taps.of(xx);
            let (mut r, mut g, mut b) = (HALF, HALF, HALF);
            for (i, &w) in k.iter().enumerate() {
                let p = &src_row[(start + i) * 3..(start + i) * 3 + 3];
                r = r.wrapping_add(i32::from(p[0]).wrapping_mul(w));
                g = g.wrapping_add(i32::from(p[1]).wrapping_mul(w));
                b = b.wrapping_add(i32::from(p[2]).wrapping_mul(w));
            }
            px[0] = clip8(r);
            px[1] = clip8(g);
            px[2] = clip8(b);
        }
    }
    out
}

/// Vertical pass; `row_shift` is subtracted from the taps' start rows (the
/// intermediate image only holds the rows that are needed).
fn pass_vertical(src: &[u8], w: usize, taps: &Taps, row_shift: usize, out_h: usize) -> Vec<u8> {
    let stride = w * 3;
    let mut out = vec![0u8; stride * out_h];
    let mut acc = vec![0i32; stride];
    for (yy, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let (start, k) = taps.of(yy);
        let start = start - row_shift;
        acc.fill(HALF);
        for (i, &wgt) in k.iter().enumerate() {
            let src_row = &src[(start + i) * stride..(start + i + 1) * stride];
            for (a, &s) in acc.iter_mut().zip(src_row) {
                *a = a.wrapping_add(i32::from(s).wrapping_mul(wgt));
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

/// Resizes like Pillow's `Image.resize((width, height), filter)` on an RGB
/// image. Same size gives a copy; a zero target size gives an empty image
/// (Pillow raises there); an empty source gives a black image of the target
/// size.
pub fn resize_pil(img: &RgbImage, width: u32, height: u32, filter: ResampleFilter) -> RgbImage {
    let (in_w, in_h) = img.dimensions();
    if (in_w, in_h) == (width, height) {
        return img.clone();
    }
    if width == 0 || height == 0 || in_w == 0 || in_h == 0 {
        return RgbImage::new(width, height);
    }
    let (in_w, in_h, out_w, out_h) = (
        in_w as usize,
        in_h as usize,
        width as usize,
        height as usize,
    );
    let need_h = out_w != in_w;
    let need_v = out_h != in_h;
    let src = img.as_raw();

    let shrink_h = in_h as i64 - out_h as i64;
    let shrink_w = in_w as i64 - out_w as i64;
    let vertical_first = shrink_h > 0 && shrink_h > shrink_w * 2;

    let data = if vertical_first {
        // need_v holds (the height shrinks).
        let vtaps = compute_taps(in_h, 0.0, in_h as f32, out_h, filter);
        let tall = pass_vertical(src, in_w, &vtaps, 0, out_h);
        if need_h {
            let htaps = compute_taps(in_w, 0.0, in_w as f32, out_w, filter);
            pass_horizontal(&tall, in_w, 0, out_h, &htaps, out_w)
        } else {
            tall
        }
    } else {
        let vtaps = compute_taps(in_h, 0.0, in_h as f32, out_h, filter);
        let first_row = vtaps.bounds[0].0;
        let (last_start, last_count) = vtaps.bounds[out_h - 1];
        let last_row = last_start + last_count;

        let mut cur_w = in_w;
        let mut row_shift = 0;
        let mut temp: Option<Vec<u8>> = None;
        if need_h {
            let htaps = compute_taps(in_w, 0.0, in_w as f32, out_w, filter);
            temp = Some(pass_horizontal(
                src,
                in_w,
                first_row,
                last_row - first_row,
                &htaps,
                out_w,
            ));
            cur_w = out_w;
            row_shift = first_row;
        }
        if need_v {
            let input: &[u8] = temp.as_deref().unwrap_or(src);
            pass_vertical(input, cur_w, &vtaps, row_shift, out_h)
        } else {
            // Only the horizontal pass ran; with an unchanged height the
            // needed rows are all of them.
            temp.unwrap_or_else(|| src.clone())
        }
    };
    // The buffer length is exactly width * height * 3 by construction.
    RgbImage::from_raw(width, height, data).unwrap_or_else(|| RgbImage::new(width, height))
}

/// Pillow's `Image.resize((width, height), Image.LANCZOS)` on 8-bit RGB.
pub fn resize_lanczos(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    resize_pil(img, width, height, ResampleFilter::Lanczos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 37 + y * 11) as u8,
                (x * x + 3 * y) as u8,
                ((x ^ y) * 29) as u8,
            ])
        })
    }

    #[test]
    fn same_size_is_copy() {
        let img = pattern(13, 7);
        assert_eq!(resize_lanczos(&img, 13, 7), img);
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([200, 3, 77]));
        for &(w, h) in &[(1, 1), (5, 9), (100, 61), (37, 50), (80, 23), (12, 12)] {
            let out = resize_lanczos(&img, w, h);
            assert_eq!(out.dimensions(), (w, h));
            assert!(out.pixels().all(|p| p.0 == [200, 3, 77]), "{w}x{h}");
        }
    }

    #[test]
    fn taps_sum_to_one_in_fixed_point() {
        for &(i, o) in &[(10usize, 3usize), (3, 10), (1000, 7), (7, 1), (512, 512)] {
            let t = compute_taps(i, 0.0, i as f32, o, ResampleFilter::Lanczos);
            for xx in 0..o {
                let (_, k) = t.of(xx);
                let s: i64 = k.iter().map(|&v| i64::from(v)).sum();
                // rounding each tap separately leaves a few units of slack
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= k.len() as i64,
                    "{i}->{o}: {s}"
                );
            }
        }
    }

    #[test]
    fn degenerate_sizes() {
        let img = pattern(4, 4);
        assert_eq!(resize_lanczos(&img, 0, 3).dimensions(), (0, 3));
        let one = resize_lanczos(&img, 1, 1);
        assert_eq!(one.dimensions(), (1, 1));
        let up = resize_lanczos(&RgbImage::from_pixel(1, 1, image::Rgb([9, 8, 7])), 5, 3);
        assert!(up.pixels().all(|p| p.0 == [9, 8, 7]));
    }

    #[test]
    fn pillow_reference_values() {
        // Pillow 13.0.0: Image.fromarray(pattern(9, 5)).resize((4, 3), Image.LANCZOS)
        // and .resize((14, 6), Image.LANCZOS), first and last pixel.
        let img = pattern(9, 5);
        let small = resize_lanczos(&img, 4, 3);
        let big = resize_lanczos(&img, 14, 6);
        let got = [
            small.get_pixel(0, 0).0,
            small.get_pixel(3, 2).0,
            big.get_pixel(0, 0).0,
            big.get_pixel(13, 5).0,
        ];
        assert_eq!(got, PILLOW_PATTERN_REF);
    }

    const PILLOW_PATTERN_REF: [[u8; 3]; 4] = [[26, 2, 20], [61, 65, 92], [0, 0, 0], [87, 77, 93]];
}
