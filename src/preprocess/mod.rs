//! Image preprocessing identical to transformers' `Idefics3ImageProcessor`
//! PIL path (transformers 5.24.0 `Idefics3ImageProcessorPil`, Pillow 13.0.0),
//! for one image. Qwen2-VL's processor is in [`qwen2_vl`]; both share the
//! decoders ([`decode`]), Pillow's resampling ([`resize`]) and the rescale and
//! normalisation (`Levels`).
//!
//! The sequence, with `L = size.longest_edge` (or the caller's override) and
//! `M = max_image_size.longest_edge`:
//!
//! 1. `do_resize`: LANCZOS-resize so the longest side becomes `L`, up or
//!    down. The other side is `int(L / (w / h))` (landscape or square) or
//!    `int(L * (w / h))` (portrait), in f64 and truncated, then bumped to
//!    the next even number if odd, and at least 1. If a side then exceeds
//!    4096 (transformers' `MAX_IMAGE_SIZE`) it is scaled down to 4096 again
//!    (same truncation, no even rounding).
//! 2. With `do_image_splitting`:
//!    * resize again so both sides are multiples of `M`: the longest side
//!      (width on ties) becomes `ceil(side / M) * M`, the other side is
//!      `int(new_long / aspect)` (or `* aspect`) rounded up to a multiple of
//!      `M`, where `aspect = w / h` of the step-1 image;
//!    * if that image is larger than `M` on any side, it is cut into
//!      `rows = H / M` by `cols = W / M` tiles of `M x M`, row-major, and a
//!      global tile is appended: the same multiple-of-`M` image resized
//!      (LANCZOS, aspect ignored) to `M x M`;
//!    * otherwise (already `M x M`) it is the single tile and
//!      `rows = cols = 0`.
//! 3. Without splitting: one tile, resized to `M x M` (aspect ignored),
//!    `rows = cols = 0`.
//! 4. `do_rescale`: `f32(u8 as f64 * rescale_factor)`; `do_normalize`:
//!    `(x - f32(mean)) / f32(std)` in f32, per channel.
//! 5. `do_pad`: tiles are padded at the bottom/right with zeros to the
//!    largest tile (a no-op for one image: every tile is `M x M`), the mask
//!    is 1 on real pixels.
//!
//! Every resize is Pillow's; a resize to the current size is a copy.
//!
//! `longest_edge` override: it replaces `size.longest_edge` in step 1 only.
//! Below `M`, step 2 scales the result back up to a single `M x M` tile
//! (after a down-then-up resample), so the model sees no extra detail; with
//! `do_resize = false` it has no effect.

pub mod config;
pub mod decode;
mod jpeg;
pub mod qwen2_vl;
pub mod resize;
mod tiff_palette;

use image::RgbImage;

pub use config::{ImageProcessorConfig, MaxImageSize, SizeConfig};
pub use decode::{decode_image, rgb_from_rgba};
pub use resize::{resize_lanczos, resize_pil, ResampleFilter};

/// transformers' `MAX_IMAGE_SIZE` cap applied after the longest-edge resize.
pub const MAX_IMAGE_SIZE: u32 = 4096;

/// The grid an image was cut into: `rows` x `cols` tiles plus a global tile, or (0, 0) for a
/// single unsplit tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLayout {
    pub rows: usize,
    pub cols: usize,
}

/// What can go wrong between image bytes and pixel values.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("no image data: the input is empty")]
    EmptyInput,
    #[error("not a recognised image: expected JPEG, PNG, WebP, GIF, BMP, TIFF or ICO data")]
    UnknownFormat,
    #[error(
        "unsupported image format {0}: only JPEG, PNG, WebP, GIF, BMP, TIFF and ICO are accepted"
    )]
    UnsupportedFormat(String),
    #[error(
        "image too large: {width}x{height} (at most {max} pixels per side and {alloc} MiB decoded)",
        max = decode::MAX_SIDE,
        alloc = decode::MAX_ALLOC >> 20
    )]
    TooLarge { width: u32, height: u32 },
    #[error("image has no pixels ({width}x{height})")]
    EmptyImage { width: u32, height: u32 },
    #[error("the {format} data is truncated (the file ends before the image does)")]
    Truncated { format: &'static str },
    #[error("could not decode the {format} image: {message}")]
    Decode {
        format: &'static str,
        message: String,
    },
    /// A file of a format the decoder reads, in a variant of it that it does not (a palette
    /// TIFF, say).
    #[error("unsupported {format} variant: {message}")]
    UnsupportedVariant {
        format: &'static str,
        message: String,
    },
    /// Pixels another decoder produced (the browser's) that do not make an image.
    #[error("the decoded pixels are not a {width}x{height} RGBA image ({bytes} bytes)")]
    BadPixels {
        width: u32,
        height: u32,
        bytes: usize,
    },
    #[error("invalid image processor config: {0}")]
    Config(String),
    #[error("unsupported resample filter {0}: only Pillow's convolution filters are implemented (LANCZOS 1, BILINEAR 2, BICUBIC 3, BOX 4, HAMMING 5, MKS2013 6, MKS2021 7)")]
    UnsupportedResample(i64),
    #[error("the image is {width}x{height}: its long side is over {max} times its short side, more than the model takes")]
    AspectRatio { width: u64, height: u64, max: f64 },
    #[error("the preprocessing would resize the image to {width}x{height}")]
    InvalidSize { width: u64, height: u64 },
}

impl PreprocessError {
    /// Whether the file is of a kind this program does not read at all, rather than a damaged,
    /// empty or oversized file of a kind it reads: another decoder (the browser's) may read it.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            Self::UnknownFormat | Self::UnsupportedFormat(_) | Self::UnsupportedVariant { .. }
        )
    }
}

impl From<PreprocessError> for crate::Error {
    fn from(e: PreprocessError) -> Self {
        crate::Error::Image(Box::new(e))
    }
}

/// One image as its model takes it.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcessedImage {
    /// SmolVLM (Idefics3): square tiles of the split image and a global view.
    Tiles(Tiles),
    /// Qwen2-VL / Qwen2.5-VL: the patches of one grid at the image's own aspect.
    Patches(qwen2_vl::Patches),
}

/// Idefics3's model input for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Tiles {
    /// `[n_tiles, 3, tile_height, tile_width]`, row-major.
    pub pixel_values: Vec<f32>,
    /// `[n_tiles, tile_height, tile_width]`, 1 = real pixel, 0 = padding
    /// (transformers' `pixel_attention_mask`; all ones for a single image,
    /// and also filled in when `do_pad` is off).
    pub pixel_mask: Vec<u8>,
    pub n_tiles: usize,
    pub tile_height: usize,
    pub tile_width: usize,
    /// Tile grid of the split image; both 0 when the image was not split.
    pub rows: usize,
    pub cols: usize,
}

impl Tiles {
    /// The tile grid, as the prompt's `<image>` expansion needs it.
    pub fn layout(&self) -> ImageLayout {
        ImageLayout {
            rows: self.rows,
            cols: self.cols,
        }
    }
}

/// `(height, width)` after the longest-edge resize of step 1
/// (transformers' `get_resize_output_image_size`).
pub fn longest_edge_size(height: u64, width: u64, longest_edge: u64) -> (u64, u64) {
    // _resize_output_size_rescale_to_max_len(min_len=1)
    let aspect = width as f64 / height as f64;
    let (h, w) = if width >= height {
        let h = (longest_edge as f64 / aspect) as u64;
        (h + h % 2, longest_edge)
    } else {
        let w = (longest_edge as f64 * aspect) as u64;
        (longest_edge, w + w % 2)
    };
    let (h, w) = (h.max(1), w.max(1));
    // _resize_output_size_scale_below_upper_bound(max_len=MAX_IMAGE_SIZE)
    let cap = u64::from(MAX_IMAGE_SIZE);
    let aspect = w as f64 / h as f64;
    let (mut h2, mut w2) = (h, w);
    if w >= h && w > cap {
        w2 = cap;
        h2 = (w2 as f64 / aspect) as u64;
    } else if h > w && h > cap {
        h2 = cap;
        w2 = (h2 as f64 * aspect) as u64;
    }
    (h2.max(1), w2.max(1))
}

/// Python's `math.ceil(a / b) * b` on ints (true division in f64).
fn ceil_to_multiple(a: u64, m: u64) -> u64 {
    ((a as f64 / m as f64).ceil() as u64) * m
}

/// `(height, width)` after `resize_for_vision_encoder` (both multiples of `m`).
pub fn vision_encoder_size(height: u64, width: u64, m: u64) -> (u64, u64) {
    let aspect = width as f64 / height as f64;
    if width >= height {
        let w = ceil_to_multiple(width, m);
        let h = (w as f64 / aspect) as u64;
        (ceil_to_multiple(h, m), w)
    } else {
        let h = ceil_to_multiple(height, m);
        let w = (h as f64 * aspect) as u64;
        (h, ceil_to_multiple(w, m))
    }
}

/// Size after step 1, or the input size when `do_resize` is off.
fn resized_size(
    height: u64,
    width: u64,
    cfg: &ImageProcessorConfig,
    longest_edge: Option<u32>,
) -> Result<(u64, u64), PreprocessError> {
    if !cfg.do_resize {
        return Ok((height, width));
    }
    match (
        longest_edge.or(cfg.size.longest_edge),
        cfg.size.height,
        cfg.size.width,
    ) {
        (Some(l), _, _) if l > 0 => Ok(longest_edge_size(height, width, u64::from(l))),
        (None, Some(h), Some(w)) if h > 0 && w > 0 => Ok((u64::from(h), u64::from(w))),
        _ => Err(PreprocessError::Config(
            "size needs a positive longest_edge, or height and width".into(),
        )),
    }
}

/// Tile grid for an image of `width x height` (after EXIF orientation):
/// `(rows, cols, n_tiles)`, exactly as the pixel path produces it; that is
/// what `Idefics3Processor` uses to expand the image tokens of the prompt.
/// `rows = cols = 0` means a single, unsplit tile. An invalid config gives
/// `(0, 0, 1)` (preprocess reports the error).
///
/// Note: transformers' `get_number_of_image_patches` rounds the short side
/// differently and disagrees with the pixel path when the longest edge is
/// not a multiple of the tile size (800x500 at longest edge 800, tiles 512:
/// it says 1x2, the processor produces 2x2); this follows the processor.
pub fn layout_only(
    width: u32,
    height: u32,
    cfg: &ImageProcessorConfig,
    longest_edge: Option<u32>,
) -> (usize, usize, usize) {
    let m = u64::from(cfg.max_image_size.longest_edge.max(1));
    let (h, w) = match resized_size(
        u64::from(height.max(1)),
        u64::from(width.max(1)),
        cfg,
        longest_edge,
    ) {
        Ok(s) => s,
        Err(_) => return (0, 0, 1),
    };
    if !cfg.do_image_splitting {
        return (0, 0, 1);
    }
    let (h, w) = vision_encoder_size(h, w, m);
    grid(h, w, m)
}

fn grid(h: u64, w: u64, m: u64) -> (usize, usize, usize) {
    if h > m || w > m {
        // transformers: (side - M) // M + 1 on a multiple of M
        let rows = (h.saturating_sub(m) / m + 1) as usize;
        let cols = (w.saturating_sub(m) / m + 1) as usize;
        (rows, cols, rows * cols + 1)
    } else {
        (0, 0, 1)
    }
}

fn resize_to(
    img: &RgbImage,
    height: u64,
    width: u64,
    filter: ResampleFilter,
) -> Result<RgbImage, PreprocessError> {
    let max = u64::from(decode::MAX_SIDE.max(MAX_IMAGE_SIZE)) * 2;
    if height == 0 || width == 0 || height > max || width > max {
        return Err(PreprocessError::InvalidSize { width, height });
    }
    Ok(resize_pil(img, width as u32, height as u32, filter))
}

fn crop(img: &RgbImage, x0: u32, y0: u32, w: u32, h: u32) -> RgbImage {
    let x1 = (x0 + w).min(img.width());
    let y1 = (y0 + h).min(img.height());
    let (cw, ch) = (x1.saturating_sub(x0), y1.saturating_sub(y0));
    let mut data = Vec::with_capacity(cw as usize * ch as usize * 3);
    let stride = img.width() as usize * 3;
    for y in y0..y1 {
        let start = y as usize * stride + x0 as usize * 3;
        data.extend_from_slice(&img.as_raw()[start..start + cw as usize * 3]);
    }
    RgbImage::from_raw(cw, ch, data).unwrap_or_else(|| RgbImage::new(cw, ch))
}

/// What transformers' PIL backend does to an 8-bit sample after resizing: `rescale` multiplies
/// it in f64 and casts to f32, `normalize` subtracts the mean and divides by the std in f32
/// (both cast to f32 first, as numpy does). Shared by every image processor here.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Levels {
    pub rescale: Option<f64>,
    pub normalize: Option<([f64; 3], [f64; 3])>,
}

/// Per channel, per 8-bit value: the float [`Levels`] makes of it. (Every output value is one
/// of these 3 × 256, so a table is both exact and fast.)
pub(crate) fn level_table(levels: Levels) -> [[f32; 256]; 3] {
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, out) in table.iter_mut().enumerate() {
            let mut x = match levels.rescale {
                Some(factor) => (v as f64 * factor) as f32,
                None => v as f32,
            };
            if let Some((mean, std)) = levels.normalize {
                x = (x - mean[c] as f32) / std[c] as f32;
            }
            *out = x;
        }
    }
    lut
}

/// Runs the Idefics3 image processor on one RGB image (already decoded and
/// oriented, see [`decode_image`]). `longest_edge` overrides
/// `size.longest_edge` (see the module docs).
pub fn preprocess(
    img: &RgbImage,
    cfg: &ImageProcessorConfig,
    longest_edge: Option<u32>,
) -> Result<Tiles, PreprocessError> {
    let filter = cfg.filter()?;
    let m = cfg.max_image_size.longest_edge;
    if m == 0 {
        return Err(PreprocessError::Config(
            "max_image_size.longest_edge must be positive".into(),
        ));
    }
    let (w0, h0) = img.dimensions();
    if w0 == 0 || h0 == 0 {
        return Err(PreprocessError::EmptyImage {
            width: w0,
            height: h0,
        });
    }

    // Step 1.
    let (h1, w1) = resized_size(u64::from(h0), u64::from(w0), cfg, longest_edge)?;
    let resized;
    let base: &RgbImage = if cfg.do_resize {
        resized = resize_to(img, h1, w1, filter)?;
        &resized
    } else {
        img
    };

    // Steps 2 / 3.
    let m64 = u64::from(m);
    let (tiles, rows, cols) = if cfg.do_image_splitting {
        let (h2, w2) = vision_encoder_size(u64::from(base.height()), u64::from(base.width()), m64);
        let big = resize_to(base, h2, w2, filter)?;
        let (rows, cols, _) = grid(h2, w2, m64);
        if rows == 0 {
            (vec![big], 0, 0)
        } else {
            let mut tiles = Vec::with_capacity(rows * cols + 1);
            for r in 0..rows as u32 {
                for c in 0..cols as u32 {
                    tiles.push(crop(&big, c * m, r * m, m, m));
                }
            }
            tiles.push(resize_to(&big, m64, m64, filter)?);
            (tiles, rows, cols)
        }
    } else {
        (vec![resize_to(base, m64, m64, filter)?], 0, 0)
    };

    // Steps 4 / 5.
    let tile_h = tiles.iter().map(|t| t.height()).max().unwrap_or(0) as usize;
    let tile_w = tiles.iter().map(|t| t.width()).max().unwrap_or(0) as usize;
    let plane = tile_h * tile_w;
    let n = tiles.len();
    let mut pixel_values = vec![0f32; n * 3 * plane];
    let mut pixel_mask = vec![0u8; n * plane];

    let lut = level_table(Levels {
        rescale: cfg.do_rescale.then_some(cfg.rescale_factor),
        normalize: cfg.do_normalize.then_some((cfg.image_mean, cfg.image_std)),
    });

    for (t, tile) in tiles.iter().enumerate() {
        let (tw, th) = (tile.width() as usize, tile.height() as usize);
        let raw = tile.as_raw();
        let values = &mut pixel_values[t * 3 * plane..(t + 1) * 3 * plane];
        let mask = &mut pixel_mask[t * plane..(t + 1) * plane];
        for y in 0..th {
            for x in 0..tw {
                let src = (y * tw + x) * 3;
                let dst = y * tile_w + x;
                for c in 0..3 {
                    values[c * plane + dst] = lut[c][usize::from(raw[src + c])];
                }
                mask[dst] = 1;
            }
        }
    }

    Ok(Tiles {
        pixel_values,
        pixel_mask,
        n_tiles: n,
        tile_height: tile_h,
        tile_width: tile_w,
        rows,
        cols,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smolvlm() -> ImageProcessorConfig {
        ImageProcessorConfig {
            size: SizeConfig::longest_edge(2048),
            max_image_size: MaxImageSize { longest_edge: 512 },
            ..ImageProcessorConfig::default()
        }
    }

    #[test]
    fn layout_matches_transformers() {
        // (width, height, longest_edge override) -> (rows, cols, n_tiles).
        // Produced by transformers 5.24.0 Idefics3ImageProcessorPil (Pillow
        // 13.0.0) with size 2048 / max_image_size 512, return_row_col_info=True,
        // the override passed as size={"longest_edge": L}; n_tiles is
        // pixel_values.shape[1].
        let cfg = smolvlm();
        type Case = ((u32, u32, Option<u32>), (usize, usize, usize));
        let cases: &[Case] = &[
            ((1, 1, None), (4, 4, 17)),
            ((1, 1, Some(384)), (0, 0, 1)),
            ((1, 1, Some(1024)), (2, 2, 5)),
            ((1, 1, Some(4608)), (8, 8, 65)),
            ((100, 80, None), (4, 4, 17)),
            ((100, 80, Some(1024)), (2, 2, 5)),
            ((100, 80, Some(4608)), (7, 8, 57)),
            ((512, 512, None), (4, 4, 17)),
            ((513, 512, Some(384)), (0, 0, 1)),
            ((640, 480, None), (3, 4, 13)),
            ((640, 480, Some(1024)), (2, 2, 5)),
            ((640, 480, Some(4608)), (6, 8, 49)),
            ((480, 640, None), (4, 3, 13)),
            ((480, 640, Some(4608)), (8, 6, 49)),
            ((4000, 3000, None), (3, 4, 13)),
            ((5000, 3, None), (1, 4, 5)),
            ((5000, 3, Some(1024)), (1, 2, 3)),
            ((3, 5000, None), (4, 1, 5)),
            ((3, 5000, Some(4608)), (8, 1, 9)),
            ((1920, 1080, None), (3, 4, 13)),
            ((1920, 1080, Some(4608)), (5, 8, 41)),
            ((333, 777, None), (4, 2, 9)),
            ((333, 777, Some(1024)), (2, 1, 3)),
            ((1537, 1024, Some(384)), (0, 0, 1)),
            ((800, 500, Some(800)), (2, 2, 5)),
            ((1000, 700, Some(1000)), (2, 2, 5)),
        ];
        for &((w, h, l), want) in cases {
            assert_eq!(layout_only(w, h, &cfg, l), want, "{w}x{h} {l:?}");
        }
        // transformers defaults (size 1456, tiles 364), same source.
        let d = ImageProcessorConfig::default();
        for &((w, h), want) in &[
            ((1, 1), (4, 4, 17)),
            ((100, 80), (4, 4, 17)),
            ((640, 480), (3, 4, 13)),
            ((3, 5000), (4, 1, 5)),
            ((1920, 1080), (3, 4, 13)),
        ] {
            assert_eq!(layout_only(w, h, &d, None), want, "{w}x{h}");
        }
        // No splitting: always one tile.
        let nosplit = ImageProcessorConfig {
            do_image_splitting: false,
            ..smolvlm()
        };
        assert_eq!(layout_only(4000, 3000, &nosplit, None), (0, 0, 1));
    }

    #[test]
    fn sizes_follow_transformers_rounding() {
        // 640x480 -> longest edge 2048: 2048 x int(2048 / (640/480)) = 1536.
        assert_eq!(longest_edge_size(480, 640, 2048), (1536, 2048));
        // Odd results are bumped to even: 100x80 -> 2048 x 1638 (1638.4).
        assert_eq!(longest_edge_size(80, 100, 2048), (1638, 2048));
        assert_eq!(longest_edge_size(777, 333, 2048), (2048, 878));
        // Tiny images are upscaled, the short side never drops below 1.
        assert_eq!(longest_edge_size(3, 5000, 2048), (2, 2048));
        assert_eq!(longest_edge_size(1, 10000, 2048), (1, 2048));
        // Above MAX_IMAGE_SIZE the result is capped to 4096.
        assert_eq!(longest_edge_size(200, 300, 5000), (2731, 4096));
        // (all of the above: transformers 5.24.0 _resize_output_size_* helpers)
        // Multiples of the tile size, the long side decides the short one.
        assert_eq!(vision_encoder_size(1638, 2048, 512), (2048, 2048));
        assert_eq!(vision_encoder_size(600, 800, 512), (1024, 1024));
        assert_eq!(vision_encoder_size(2048, 878, 512), (2048, 1024));
    }

    #[test]
    fn tiles_are_row_major_crops_plus_global() {
        let cfg = ImageProcessorConfig {
            size: SizeConfig::longest_edge(8),
            max_image_size: MaxImageSize { longest_edge: 4 },
            do_rescale: false,
            do_normalize: false,
            ..ImageProcessorConfig::default()
        };
        // 8 x 4 image, already at the target sizes: no resampling happens.
        let img = RgbImage::from_fn(8, 4, |x, y| image::Rgb([(x + 10 * y) as u8, 0, 0]));
        let out = preprocess(&img, &cfg, None).expect("preprocess");
        assert_eq!((out.rows, out.cols, out.n_tiles), (1, 2, 3));
        assert_eq!((out.tile_height, out.tile_width), (4, 4));
        assert_eq!(layout_only(8, 4, &cfg, None), (1, 2, 3));
        let red = |t: usize, x: usize, y: usize| out.pixel_values[t * 48 + y * 4 + x];
        assert_eq!(red(0, 0, 0), 0.0);
        assert_eq!(red(1, 0, 0), 4.0);
        assert_eq!(red(1, 3, 2), 27.0);
        assert!(out.pixel_mask.iter().all(|&m| m == 1));
        assert_eq!(out.pixel_values.len(), 3 * 3 * 16);
    }

    #[test]
    fn normalisation_is_float32_like_numpy() {
        let cfg = ImageProcessorConfig {
            size: SizeConfig::longest_edge(4),
            max_image_size: MaxImageSize { longest_edge: 4 },
            ..ImageProcessorConfig::default()
        };
        let img = RgbImage::from_pixel(4, 4, image::Rgb([0, 255, 128]));
        let out = preprocess(&img, &cfg, None).expect("preprocess");
        assert_eq!((out.rows, out.cols, out.n_tiles), (0, 0, 1));
        assert_eq!(out.pixel_values[0], -1.0);
        assert_eq!(out.pixel_values[16], 1.0);
        let x = (128f64 / 255.0) as f32;
        assert_eq!(out.pixel_values[32], (x - 0.5) / 0.5);
    }

    #[test]
    fn small_override_gives_one_tile() {
        let cfg = smolvlm();
        assert_eq!(layout_only(1000, 800, &cfg, Some(384)), (0, 0, 1));
        let img = RgbImage::from_pixel(100, 80, image::Rgb([7, 7, 7]));
        let out = preprocess(&img, &cfg, Some(384)).expect("preprocess");
        assert_eq!(
            (out.n_tiles, out.tile_height, out.tile_width),
            (1, 512, 512)
        );
    }
}
