//! Synthetic models: a published model's exact shapes and processor settings with random
//! weights (`convert::write_random_pair`), and a photo-like test image. Benchmark figures
//! depend on shapes, not on values, so these stand in for a download.

use crate::convert::write_random_pair;
use crate::error::{Error, Result};
use crate::files::gguf::GgufFile;
use crate::files::ModelFiles;
use crate::weights::gguf::pair::pair_files;
use crate::weights::Precision;

/// A model's shapes: its `config.json` and the processor settings that go with it.
#[derive(Debug, Clone)]
pub struct Shape {
    pub name: String,
    pub config_json: String,
    /// `None`: keep the tokenizer folder's own.
    pub preprocessor_config_json: Option<String>,
    pub processor_config_json: Option<String>,
}

macro_rules! published {
    ($name:literal) => {
        Shape {
            name: $name.into(),
            config_json: include_str!(concat!("shapes/", $name, "/config.json")).into(),
            preprocessor_config_json: Some(
                include_str!(concat!("shapes/", $name, "/preprocessor_config.json")).into(),
            ),
            processor_config_json: Some(
                include_str!(concat!("shapes/", $name, "/processor_config.json")).into(),
            ),
        }
    };
}

impl Shape {
    /// The published models whose shapes are built in.
    pub const NAMES: [&'static str; 2] = ["smolvlm-256m", "smolvlm-500m"];

    /// `smolvlm-256m` or `smolvlm-500m`.
    pub fn published(name: &str) -> Option<Self> {
        match name {
            "smolvlm-256m" => Some(published!("smolvlm-256m")),
            "smolvlm-500m" => Some(published!("smolvlm-500m")),
            _ => None,
        }
    }

    /// Any `config.json`'s shapes, with the tokenizer folder's processor settings.
    pub fn from_config(name: &str, config_json: String) -> Self {
        Self {
            name: name.into(),
            config_json,
            preprocessor_config_json: None,
            processor_config_json: None,
        }
    }
}

/// A model of `shape` with random weights, as a GGUF pair in memory, and the precision it is
/// built at, which loading it at keeps every matrix as built: `precision` as given (`f32`,
/// `q8_0`, `q4_0`, `mixed`, or what `auto` means on a GPU), except `auto` on the CPU, which
/// builds it f32 (random weights have no form of their own to keep). The tokenizer and chat
/// template come from `tokenizer_from` (any model folder with the same vocabulary, e.g.
/// `tests/fixtures/tiny-b` for SmolVLM).
pub fn synthetic_model(
    shape: &Shape,
    mut tokenizer_from: ModelFiles,
    precision: Precision,
    seed: u64,
) -> Result<(ModelFiles, Precision)> {
    let precision = match precision {
        Precision::Auto => Precision::F32,
        p => p,
    };
    tokenizer_from.config_json = shape.config_json.clone();
    if let Some(p) = &shape.preprocessor_config_json {
        tokenizer_from.preprocessor_config_json = Some(p.clone());
    }
    if let Some(p) = &shape.processor_config_json {
        tokenizer_from.processor_config_json = Some(p.clone());
    }
    let pair = write_random_pair(&tokenizer_from, precision, false, seed)?;
    let files = match pair.mmproj {
        Some(mmproj) => pair_files(GgufFile::parse(pair.text)?, GgufFile::parse(mmproj)?),
        None => ModelFiles::from_gguf(pair.text),
    }?;
    Ok((files, precision))
}

/// A `width`×`height` PNG with smooth gradients and fine texture, like a photo for the
/// decoder and resizer (a flat image would flatter both).
pub fn test_image(width: u32, height: u32) -> Result<Vec<u8>> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
        let texture = ((x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503)) >> 7) % 32;
        image::Rgb([
            (fx * 200.0) as u8 + texture as u8,
            (fy * 200.0) as u8 + (31 - texture) as u8,
            ((fx + fy) * 100.0) as u8 + (texture / 2) as u8,
        ])
    });
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| Error::Invalid(format!("encoding the test image: {e}")))?;
    Ok(png)
}
