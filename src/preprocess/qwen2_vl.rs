//! Qwen2-VL's image processor, which Qwen2.5-VL uses too: transformers 5.24.0
//! `Qwen2VLImageProcessorPil` (Pillow 13.0.0), for one image, bit for bit.
//!
//! 1. `smart_resize`: both sides become multiples of `factor = patch_size × merge_size` (28),
//!    rounded to the nearest (half to even, as Python's `round`); if the area then exceeds
//!    `max_pixels` both sides are scaled by `1 / sqrt(h·w / max_pixels)` and floored to the
//!    factor (at least one factor), if it falls below `min_pixels` scaled by `sqrt(min_pixels /
//!    (h·w))` and ceiled. An aspect ratio over 200 is refused.
//! 2. Pillow's resize to that size (BICUBIC unless `resample` says otherwise), then the
//!    shared rescale and normalisation (`Levels` in `preprocess`; CLIP mean and std by default).
//! 3. The patches: the image is cut into `patch_size`² patches, ordered by 2 × 2 merge block
//!    (row-major over blocks, then row-major within a block), each flattened channel-first and
//!    repeated `temporal_patch_size` times along time: `[c][t][y][x]`, `3 · t · p²` floats. The
//!    grid is `(1, h / p, w / p)`.

use image::RgbImage;
use serde::Deserialize;

use super::config::{de_per_channel, three};
use super::resize::{resize_pil, ResampleFilter};
use super::{level_table, Levels, PreprocessError};

/// OpenAI CLIP's per-channel mean and std, transformers' `OPENAI_CLIP_MEAN` / `_STD`.
pub const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
pub const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// The most pixels an image may have once resized: four times the published folders'
/// `max_pixels` (12,845,056, i.e. 16,384 merged tokens of 28 × 28). The bound keeps a
/// preprocessor file or an unresized image from asking for more memory than any of these
/// models can take in one image (65,536 image tokens).
pub const MAX_RESIZED_PIXELS: u64 = 4 * 12_845_056;

/// The aspect ratio `smart_resize` refuses above (long side / short side).
pub const MAX_ASPECT_RATIO: f64 = 200.0;

/// Settings of `Qwen2VLImageProcessor`, as a model folder's `preprocessor_config.json` gives
/// them. Missing keys take the class defaults of transformers 5.24.0.
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen2VlImageConfig {
    pub do_resize: bool,
    /// `min_pixels`, or `size.shortest_edge` (the newer name for the same bound).
    pub min_pixels: u64,
    /// `max_pixels`, or `size.longest_edge`.
    pub max_pixels: u64,
    pub patch_size: u32,
    pub temporal_patch_size: u32,
    pub merge_size: u32,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f64; 3],
    pub image_std: [f64; 3],
    /// Pillow resampling code (3 = BICUBIC).
    pub resample: i64,
}

impl Default for Qwen2VlImageConfig {
    fn default() -> Self {
        Self {
            do_resize: true,
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            patch_size: 14,
            temporal_patch_size: 2,
            merge_size: 2,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
            resample: 3,
        }
    }
}

#[derive(Deserialize)]
struct RawSize {
    #[serde(default)]
    shortest_edge: Option<u64>,
    #[serde(default)]
    longest_edge: Option<u64>,
}

/// Every key optional: absent and `null` both mean the default.
#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    do_resize: Option<bool>,
    #[serde(default)]
    size: Option<RawSize>,
    #[serde(default)]
    min_pixels: Option<u64>,
    #[serde(default)]
    max_pixels: Option<u64>,
    #[serde(default)]
    patch_size: Option<u32>,
    #[serde(default)]
    temporal_patch_size: Option<u32>,
    #[serde(default)]
    merge_size: Option<u32>,
    #[serde(default)]
    do_rescale: Option<bool>,
    #[serde(default)]
    rescale_factor: Option<f64>,
    #[serde(default)]
    do_normalize: Option<bool>,
    #[serde(default, deserialize_with = "de_per_channel")]
    image_mean: Option<Vec<f64>>,
    #[serde(default, deserialize_with = "de_per_channel")]
    image_std: Option<Vec<f64>>,
    #[serde(default)]
    resample: Option<i64>,
}

impl Qwen2VlImageConfig {
    /// Parses a `preprocessor_config.json`. As in transformers, `min_pixels` and `max_pixels`
    /// win over `size`'s `shortest_edge` and `longest_edge`.
    pub fn from_preprocessor_json(text: &str) -> Result<Self, PreprocessError> {
        let raw: RawConfig =
            serde_json::from_str(text).map_err(|e| PreprocessError::Config(e.to_string()))?;
        let d = Self::default();
        let (size_min, size_max) = match raw.size {
            Some(size) => (size.shortest_edge, size.longest_edge),
            None => (None, None),
        };
        let cfg = Self {
            do_resize: raw.do_resize.unwrap_or(d.do_resize),
            min_pixels: raw.min_pixels.or(size_min).unwrap_or(d.min_pixels),
            max_pixels: raw.max_pixels.or(size_max).unwrap_or(d.max_pixels),
            patch_size: raw.patch_size.unwrap_or(d.patch_size),
            temporal_patch_size: raw.temporal_patch_size.unwrap_or(d.temporal_patch_size),
            merge_size: raw.merge_size.unwrap_or(d.merge_size),
            do_rescale: raw.do_rescale.unwrap_or(d.do_rescale),
            rescale_factor: raw.rescale_factor.unwrap_or(d.rescale_factor),
            do_normalize: raw.do_normalize.unwrap_or(d.do_normalize),
            image_mean: three("image_mean", raw.image_mean, d.image_mean)?,
            image_std: three("image_std", raw.image_std, d.image_std)?,
            resample: raw.resample.unwrap_or(d.resample),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what the processing relies on; the bounds keep a file from asking for absurd
    /// allocations.
    pub fn validate(&self) -> Result<(), PreprocessError> {
        let bad = |m: String| Err(PreprocessError::Config(m));
        if !(1..=64).contains(&self.patch_size) {
            return bad(format!(
                "patch_size {} is not within 1..=64",
                self.patch_size
            ));
        }
        if !(1..=8).contains(&self.merge_size) {
            return bad(format!(
                "merge_size {} is not within 1..=8",
                self.merge_size
            ));
        }
        if !(1..=16).contains(&self.temporal_patch_size) {
            return bad(format!(
                "temporal_patch_size {} is not within 1..=16",
                self.temporal_patch_size
            ));
        }
        // transformers refuses a zero bound too (`size` must have both edges).
        for (name, v) in [
            ("min_pixels", self.min_pixels),
            ("max_pixels", self.max_pixels),
        ] {
            if !(1..=MAX_RESIZED_PIXELS).contains(&v) {
                return bad(format!("{name} {v} is not within 1..={MAX_RESIZED_PIXELS}"));
            }
        }
        if !(self.rescale_factor.is_finite() && self.image_mean.iter().all(|v| v.is_finite())) {
            return bad("rescale_factor and image_mean must be finite".into());
        }
        if !self.image_std.iter().all(|v| v.is_finite() && *v != 0.0) {
            return bad("image_std must be finite and non-zero".into());
        }
        self.filter()?;
        Ok(())
    }

    /// The resampling filter named by `resample`.
    pub fn filter(&self) -> Result<ResampleFilter, PreprocessError> {
        ResampleFilter::from_pil_code(self.resample)
            .ok_or(PreprocessError::UnsupportedResample(self.resample))
    }

    /// These settings with images held to `longest_edge²` pixels (`max_pixels`; at least one
    /// merged patch), each keeping its aspect as `smart_resize` does: the bound on work that
    /// SmolVLM's longest edge gives. (An image taken unresized, `do_resize` false, keeps its size.)
    pub fn with_pixel_cap(&self, longest_edge: Option<u32>) -> Self {
        let mut cfg = self.clone();
        if let Some(edge) = longest_edge {
            let cap = u64::from(edge).pow(2).max(u64::from(self.factor()).pow(2));
            cfg.max_pixels = cfg.max_pixels.min(cap);
            cfg.min_pixels = cfg.min_pixels.min(cfg.max_pixels);
        }
        cfg
    }

    /// The side both resized sides are a multiple of.
    pub fn factor(&self) -> u32 {
        self.patch_size * self.merge_size
    }

    /// Floats in one flattened patch: `3 · temporal_patch_size · patch_size²`.
    pub fn patch_len(&self) -> usize {
        3 * self.temporal_patch_size as usize * (self.patch_size as usize).pow(2)
    }
}

/// transformers' `smart_resize`: the `(height, width)` an image of `height × width` is resized
/// to, in the same f64 operations in the same order.
pub fn smart_resize(
    height: u64,
    width: u64,
    factor: u64,
    min_pixels: u64,
    max_pixels: u64,
) -> Result<(u64, u64), PreprocessError> {
    let (long, short) = (height.max(width), height.min(width));
    if short == 0 || factor == 0 {
        return Err(PreprocessError::EmptyImage {
            width: width.try_into().unwrap_or(u32::MAX),
            height: height.try_into().unwrap_or(u32::MAX),
        });
    }
    let ratio = long as f64 / short as f64;
    if ratio > MAX_ASPECT_RATIO {
        return Err(PreprocessError::AspectRatio {
            width,
            height,
            max: MAX_ASPECT_RATIO,
        });
    }
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    // Python's round() on a float: half to even.
    let mut h_bar = (h / f).round_ties_even() * f;
    let mut w_bar = (w / f).round_ties_even() * f;
    if h_bar * w_bar > max_pixels as f64 {
        let beta = ((height * width) as f64 / max_pixels as f64).sqrt();
        h_bar = f.max((h / beta / f).floor() * f);
        w_bar = f.max((w / beta / f).floor() * f);
    } else if h_bar * w_bar < min_pixels as f64 {
        let beta = (min_pixels as f64 / (height * width) as f64).sqrt();
        h_bar = (h * beta / f).ceil() * f;
        w_bar = (w * beta / f).ceil() * f;
    }
    Ok((h_bar as u64, w_bar as u64))
}

/// One image as the vision tower takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Patches {
    /// `grid_thw[1] · grid_thw[2]` patches of `patch_len` floats each, in transformers' order.
    pub values: Vec<f32>,
    /// `image_grid_thw`: temporal, height and width in patches (`t` is 1 for an image).
    pub grid_thw: [usize; 3],
    pub patch_len: usize,
    /// The size the image was resized to, `(height, width)`.
    pub resized: (u32, u32),
}

impl Patches {
    /// Tokens the image takes in the prompt once merged: `t · h · w / merge_size²`.
    pub fn tokens(&self, merge_size: u32) -> usize {
        let [t, h, w] = self.grid_thw;
        t * h * w / (merge_size as usize).pow(2)
    }
}

/// Runs the processor on one RGB image (decoded, oriented and composited over white by
/// [`super::decode_image`]).
pub fn preprocess(img: &RgbImage, cfg: &Qwen2VlImageConfig) -> Result<Patches, PreprocessError> {
    cfg.validate()?;
    let filter = cfg.filter()?;
    let (w0, h0) = img.dimensions();
    let factor = cfg.factor();
    let (h, w) = if cfg.do_resize {
        smart_resize(
            u64::from(h0),
            u64::from(w0),
            u64::from(factor),
            cfg.min_pixels,
            cfg.max_pixels,
        )?
    } else {
        (u64::from(h0), u64::from(w0))
    };
    // Bounded before anything is allocated; without resizing the image must already fit
    // the merge blocks (transformers' reshape fails otherwise).
    let fits = h > 0
        && w > 0
        && h % u64::from(factor) == 0
        && w % u64::from(factor) == 0
        && h * w <= MAX_RESIZED_PIXELS;
    if !fits {
        return Err(PreprocessError::InvalidSize {
            width: w,
            height: h,
        });
    }
    let (h, w) = (h as u32, w as u32);
    let resized;
    let image = if (w, h) == (w0, h0) {
        img
    } else {
        resized = resize_pil(img, w, h, filter);
        &resized
    };

    let lut = level_table(Levels {
        rescale: cfg.do_rescale.then_some(cfg.rescale_factor),
        normalize: cfg.do_normalize.then_some((cfg.image_mean, cfg.image_std)),
    });
    let p = cfg.patch_size as usize;
    let m = cfg.merge_size as usize;
    let t = cfg.temporal_patch_size as usize;
    let (grid_h, grid_w) = (h as usize / p, w as usize / p);
    let patch_len = cfg.patch_len();
    let mut values = Vec::with_capacity(grid_h * grid_w * patch_len);
    let raw = image.as_raw();
    let stride = w as usize * 3;
    for block_y in 0..grid_h / m {
        for block_x in 0..grid_w / m {
            for in_y in 0..m {
                for in_x in 0..m {
                    let (y0, x0) = ((block_y * m + in_y) * p, (block_x * m + in_x) * p);
                    for (c, table) in lut.iter().enumerate() {
                        // One frame of this channel, then its copies along time.
                        let start = values.len();
                        for y in y0..y0 + p {
                            let row = &raw[y * stride + x0 * 3..y * stride + (x0 + p) * 3];
                            values.extend(row.chunks_exact(3).map(|px| table[usize::from(px[c])]));
                        }
                        for _ in 1..t {
                            values.extend_from_within(start..start + p * p);
                        }
                    }
                }
            }
        }
    }
    Ok(Patches {
        values,
        grid_thw: [1, grid_h, grid_w],
        patch_len,
        resized: (h, w),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published() -> Qwen2VlImageConfig {
        Qwen2VlImageConfig {
            max_pixels: 12_845_056,
            ..Qwen2VlImageConfig::default()
        }
    }

    #[test]
    fn a_longest_edge_caps_the_pixels_and_keeps_the_aspect() {
        let cfg = published();
        assert_eq!(cfg.with_pixel_cap(None), cfg);
        let img = RgbImage::new(640, 480);
        let capped = preprocess(&img, &cfg.with_pixel_cap(Some(100))).unwrap();
        let (h, w) = capped.resized;
        assert!(u64::from(h) * u64::from(w) <= 100 * 100, "{h} x {w}");
        assert_eq!(
            (h, w),
            (84, 112),
            "the aspect kept, in whole merged patches"
        );
        // An edge under one merged patch still gives one; one above the folder's bound changes
        // nothing.
        let tiny = preprocess(&img, &cfg.with_pixel_cap(Some(0))).unwrap();
        assert_eq!(tiny.grid_thw, [1, 2, 2]);
        assert_eq!(cfg.with_pixel_cap(Some(100_000)), cfg);
    }

    #[test]
    fn a_published_preprocessor_config_reads_either_way() {
        // Qwen2-VL-2B-Instruct's file, and the newer `size` spelling of its bounds.
        let old = r#"{"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14,
            "temporal_patch_size": 2, "merge_size": 2,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2VLProcessor"}"#;
        let new = r#"{"size": {"shortest_edge": 3136, "longest_edge": 12845056}}"#;
        for text in [old, new] {
            assert_eq!(
                Qwen2VlImageConfig::from_preprocessor_json(text).unwrap(),
                published()
            );
        }
        // min_pixels and max_pixels win over `size`.
        let both = r#"{"size": {"shortest_edge": 1, "longest_edge": 2}, "min_pixels": 3136, "max_pixels": 12845056}"#;
        assert_eq!(
            Qwen2VlImageConfig::from_preprocessor_json(both).unwrap(),
            published()
        );
    }

    #[test]
    fn a_config_asking_for_too_much_is_refused() {
        for text in [
            r#"{"max_pixels": 0}"#,
            r#"{"max_pixels": 1000000000000}"#,
            r#"{"min_pixels": 1000000000000}"#,
            r#"{"patch_size": 0}"#,
            r#"{"patch_size": 100000}"#,
            r#"{"merge_size": 0}"#,
            r#"{"temporal_patch_size": 4000000000}"#,
            r#"{"image_std": [1, 0, 1]}"#,
            r#"{"image_mean": [1, 2]}"#,
            r#"{"resample": 0}"#,
        ] {
            let err = Qwen2VlImageConfig::from_preprocessor_json(text).unwrap_err();
            assert!(
                matches!(
                    err,
                    PreprocessError::Config(_) | PreprocessError::UnsupportedResample(_)
                ),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn smart_resize_rounds_as_python_does() {
        // 14 px is half a factor: Python's round(0.5) is 0, round(1.5) is 2.
        assert_eq!(smart_resize(406, 280, 28, 1, u64::MAX).unwrap(), (392, 280));
        assert_eq!(smart_resize(42, 280, 28, 1, u64::MAX).unwrap(), (56, 280));
        // A side that rounds to zero is raised by min_pixels.
        assert_eq!(smart_resize(1, 1, 28, 3136, 12_845_056).unwrap(), (56, 56));
    }
}
