//! Idefics3 image processor settings, read from the hub JSON files.
//!
//! Two layouts are accepted:
//! * `preprocessor_config.json`: the settings are top-level keys;
//! * transformers-5 `processor_config.json`: the settings sit in an
//!   `image_processor` object next to the processor's own keys.
//!
//! Missing keys (and keys set to `null`) take the defaults of transformers'
//! `Idefics3ImageProcessor` (transformers 5.24.0: class attributes of
//! `Idefics3ImageProcessorPil`); unknown keys are ignored.

use serde::{Deserialize, Deserializer};

use super::resize::ResampleFilter;
use super::PreprocessError;

/// transformers' default `size`: `{"longest_edge": 4 * 364}`.
pub const DEFAULT_LONGEST_EDGE: u32 = 4 * 364;
/// transformers' default `max_image_size`: `{"longest_edge": 364}`.
pub const DEFAULT_MAX_IMAGE_SIZE: u32 = 364;
/// Pillow's code for LANCZOS, transformers' default `resample` here.
pub const PIL_LANCZOS: i64 = 1;

/// The `size` setting. Idefics3 uses `longest_edge`; an exact
/// `height` + `width` pair is also understood by the processor (and used
/// when `longest_edge` is absent).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SizeConfig {
    #[serde(default)]
    pub longest_edge: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    #[serde(default)]
    pub width: Option<u32>,
}

impl SizeConfig {
    pub fn longest_edge(longest_edge: u32) -> Self {
        Self {
            longest_edge: Some(longest_edge),
            height: None,
            width: None,
        }
    }
}

/// The `max_image_size` setting: the side of a square tile.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MaxImageSize {
    pub longest_edge: u32,
}

/// transformers accepts a single number or one value per channel for
/// `image_mean` / `image_std`.
#[derive(Deserialize)]
#[serde(untagged)]
enum PerChannel {
    One(f64),
    Many(Vec<f64>),
}

pub(super) fn de_per_channel<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<f64>>, D::Error> {
    Ok(Option::<PerChannel>::deserialize(d)?.map(|v| match v {
        PerChannel::One(x) => vec![x; 3],
        PerChannel::Many(v) => v,
    }))
}

/// Raw form: every key optional so that `null` and absence both mean
/// "transformers default".
#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    do_resize: Option<bool>,
    #[serde(default)]
    size: Option<SizeConfig>,
    #[serde(default)]
    max_image_size: Option<MaxImageSize>,
    #[serde(default)]
    do_image_splitting: Option<bool>,
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
    do_pad: Option<bool>,
    #[serde(default)]
    do_convert_rgb: Option<bool>,
    #[serde(default)]
    resample: Option<i64>,
}

/// Settings of transformers' `Idefics3ImageProcessor`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessorConfig {
    pub do_resize: bool,
    pub size: SizeConfig,
    pub max_image_size: MaxImageSize,
    pub do_image_splitting: bool,
    pub do_rescale: bool,
    /// Kept in `f64`: transformers multiplies in float64 before casting.
    pub rescale_factor: f64,
    pub do_normalize: bool,
    /// One value per RGB channel (cast to `f32` when normalising, as numpy does).
    pub image_mean: [f64; 3],
    pub image_std: [f64; 3],
    pub do_pad: bool,
    /// The decoder always converts to RGB (see `decode`), which is what this
    /// flag asks for; `false` only matters to transformers for non-RGB inputs,
    /// which the model cannot take anyway.
    pub do_convert_rgb: bool,
    /// Pillow resampling code (1 = LANCZOS).
    pub resample: i64,
}

impl Default for ImageProcessorConfig {
    fn default() -> Self {
        Self {
            do_resize: true,
            size: SizeConfig::longest_edge(DEFAULT_LONGEST_EDGE),
            max_image_size: MaxImageSize {
                longest_edge: DEFAULT_MAX_IMAGE_SIZE,
            },
            do_image_splitting: true,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
            do_pad: true,
            do_convert_rgb: true,
            resample: PIL_LANCZOS,
        }
    }
}

pub(super) fn three(
    name: &str,
    v: Option<Vec<f64>>,
    default: [f64; 3],
) -> Result<[f64; 3], PreprocessError> {
    match v {
        None => Ok(default),
        Some(v) => <[f64; 3]>::try_from(v.as_slice()).map_err(|_| {
            PreprocessError::Config(format!("{name} must have 3 values, got {}", v.len()))
        }),
    }
}

impl ImageProcessorConfig {
    fn from_raw(raw: RawConfig) -> Result<Self, PreprocessError> {
        let d = Self::default();
        let cfg = Self {
            do_resize: raw.do_resize.unwrap_or(d.do_resize),
            size: raw.size.unwrap_or(d.size),
            max_image_size: raw.max_image_size.unwrap_or(d.max_image_size),
            do_image_splitting: raw.do_image_splitting.unwrap_or(d.do_image_splitting),
            do_rescale: raw.do_rescale.unwrap_or(d.do_rescale),
            rescale_factor: raw.rescale_factor.unwrap_or(d.rescale_factor),
            do_normalize: raw.do_normalize.unwrap_or(d.do_normalize),
            image_mean: three("image_mean", raw.image_mean, d.image_mean)?,
            image_std: three("image_std", raw.image_std, d.image_std)?,
            do_pad: raw.do_pad.unwrap_or(d.do_pad),
            do_convert_rgb: raw.do_convert_rgb.unwrap_or(d.do_convert_rgb),
            resample: raw.resample.unwrap_or(d.resample),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the values this implementation relies on.
    pub fn validate(&self) -> Result<(), PreprocessError> {
        if self.max_image_size.longest_edge == 0 {
            return Err(PreprocessError::Config(
                "max_image_size.longest_edge must be positive".into(),
            ));
        }
        if self.do_resize {
            match (self.size.longest_edge, self.size.height, self.size.width) {
                (Some(l), _, _) if l > 0 => {}
                (None, Some(h), Some(w)) if h > 0 && w > 0 => {}
                _ => {
                    return Err(PreprocessError::Config(
                        "size needs a positive longest_edge, or height and width".into(),
                    ))
                }
            }
        }
        // Normalising divides by the std: a zero (or a value too large for an f64) would
        // feed the vision tower infinities and NaNs.
        let finite = self.image_mean.iter().all(|v| v.is_finite())
            && self.image_std.iter().all(|v| v.is_finite() && *v != 0.0)
            && self.rescale_factor.is_finite();
        if !finite {
            return Err(PreprocessError::Config(
                "image_mean, image_std and rescale_factor must be finite numbers, and the std not 0"
                    .into(),
            ));
        }
        self.filter()?;
        Ok(())
    }

    /// The resampling filter named by `resample`.
    pub fn filter(&self) -> Result<ResampleFilter, PreprocessError> {
        ResampleFilter::from_pil_code(self.resample)
            .ok_or(PreprocessError::UnsupportedResample(self.resample))
    }

    /// Parses a hub `preprocessor_config.json` (settings at top level).
    pub fn from_preprocessor_json(text: &str) -> Result<Self, PreprocessError> {
        let raw: RawConfig =
            serde_json::from_str(text).map_err(|e| PreprocessError::Config(e.to_string()))?;
        Self::from_raw(raw)
    }

    /// The settings of a model folder: the `image_processor` of `processor_config.json`
    /// (transformers 5), else `preprocessor_config.json` (the hub layout).
    pub fn from_files(
        processor_json: Option<&str>,
        preprocessor_json: Option<&str>,
    ) -> Result<Option<Self>, PreprocessError> {
        if let Some(cfg) = processor_json
            .map(Self::from_processor_json)
            .transpose()?
            .flatten()
        {
            return Ok(Some(cfg));
        }
        preprocessor_json
            .map(Self::from_preprocessor_json)
            .transpose()
    }

    /// The settings as a `preprocessor_config.json` that [`Self::from_preprocessor_json`]
    /// reads back to the same value.
    pub fn to_json(&self) -> serde_json::Value {
        let mut size = serde_json::Map::new();
        for (key, value) in [
            ("longest_edge", self.size.longest_edge),
            ("height", self.size.height),
            ("width", self.size.width),
        ] {
            if let Some(v) = value {
                size.insert(key.into(), v.into());
            }
        }
        serde_json::json!({
            "image_processor_type": "Idefics3ImageProcessor",
            "do_resize": self.do_resize,
            "size": size,
            "max_image_size": {"longest_edge": self.max_image_size.longest_edge},
            "do_image_splitting": self.do_image_splitting,
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "do_pad": self.do_pad,
            "do_convert_rgb": self.do_convert_rgb,
            "resample": self.resample,
        })
    }

    /// Parses a transformers-5 `processor_config.json`; `Ok(None)` when it
    /// has no (or a `null`) `image_processor` object.
    pub fn from_processor_json(text: &str) -> Result<Option<Self>, PreprocessError> {
        #[derive(Deserialize)]
        struct Outer {
            #[serde(default)]
            image_processor: Option<RawConfig>,
        }
        let outer: Outer =
            serde_json::from_str(text).map_err(|e| PreprocessError::Config(e.to_string()))?;
        outer.image_processor.map(Self::from_raw).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Keys as in HuggingFaceTB/SmolVLM-256M-Instruct preprocessor_config.json.
    const SMOLVLM: &str = r#"{
      "do_convert_rgb": true, "do_image_splitting": true, "do_normalize": true,
      "do_pad": true, "do_rescale": true, "do_resize": true,
      "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "Idefics3ImageProcessor",
      "image_std": [0.5, 0.5, 0.5], "max_image_size": {"longest_edge": 512},
      "processor_class": "Idefics3Processor", "resample": 1,
      "rescale_factor": 0.00392156862745098, "size": {"longest_edge": 2048}
    }"#;

    #[test]
    fn parses_preprocessor_config() {
        let c = ImageProcessorConfig::from_preprocessor_json(SMOLVLM).expect("parse");
        assert_eq!(c.size.longest_edge, Some(2048));
        assert_eq!(c.max_image_size.longest_edge, 512);
        assert_eq!(c.rescale_factor, 1.0 / 255.0);
        assert_eq!(c.filter().ok(), Some(ResampleFilter::Lanczos));
        assert!(c.do_image_splitting && c.do_pad && c.do_convert_rgb);
    }

    #[test]
    fn parses_nested_processor_config() {
        let text = format!(
            r#"{{"image_processor": {SMOLVLM}, "image_seq_len": 64, "processor_class": "Idefics3Processor"}}"#
        );
        let c = ImageProcessorConfig::from_processor_json(&text).expect("parse");
        assert_eq!(c.map(|c| c.max_image_size.longest_edge), Some(512));
        let none = ImageProcessorConfig::from_processor_json(r#"{"image_seq_len": 64}"#);
        assert!(matches!(none, Ok(None)));
    }

    #[test]
    fn defaults_match_transformers() {
        // transformers 5.24.0 Idefics3ImageProcessorPil().to_dict()
        let c = ImageProcessorConfig::from_preprocessor_json(r#"{"size": null}"#).expect("parse");
        assert_eq!(c, ImageProcessorConfig::default());
        assert_eq!(c.size.longest_edge, Some(1456));
        assert_eq!(c.max_image_size.longest_edge, 364);
        assert_eq!(c.resample, 1);
        let scalar =
            ImageProcessorConfig::from_preprocessor_json(r#"{"image_mean": 0.25}"#).expect("parse");
        assert_eq!(scalar.image_mean, [0.25; 3]);
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            r#"{"image_std": [1, 2]}"#,
            r#"{"resample": 0}"#,
            r#"{"max_image_size": {"longest_edge": 0}}"#,
            r#"{"size": {"shortest_edge": 3}}"#,
            "not json",
        ] {
            assert!(
                ImageProcessorConfig::from_preprocessor_json(bad).is_err(),
                "{bad}"
            );
        }
    }
}
