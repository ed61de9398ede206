//! Which form each matrix is held in once loaded: the precision presets and the `mixed`
//! preset's per-name policy. Names are the weights' business, so this lives here and not in
//! `quant`, which knows only blocks.

use super::StoredTensor;
use crate::error::{Error, Result};
use crate::quant::QuantType;
use std::str::FromStr;

/// How a model's matrices are held once loaded. Vectors (norms, biases) and the vision patch
/// embedding (a convolution kernel, rows of 16) always stay f32: they are a fraction of a
/// percent of the weights. The vision position table takes Q8_0 whenever a preset quantizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// As the file has them: floats stay f32 (the reference numbers), Q8_0/Q4_0 blocks stay
    /// packed, and other quantized formats (Q4_1, K-quants, ...) are re-quantized to Q8_0.
    /// On a GPU it means [`Precision::Packed`] (see [`Precision::on`]).
    #[default]
    Auto,
    /// `auto` on a GPU: a file's Q8_0/Q4_0 blocks as they are, every other matrix Q8_0. A GPU
    /// decodes at the speed it reads weights, and Q8_0 is a quarter of f32's bytes while the
    /// closest to it of the packed forms (README, "Quantized models": on SmolLM2-135M every
    /// greedy answer is kept, mean KL 1.4e-3, against 0.34 for `mixed`).
    Packed,
    /// Every matrix in f32 (a quantized file is dequantized).
    F32,
    /// Every matrix in this format, quantized on load unless the file already has it so.
    Uniform(QuantType),
    /// The default package (`captioner quantize --type mixed`): Q4_0, with the few matrices
    /// that buy the most fidelity per byte at Q8_0 (see [`mixed_type`]).
    Mixed,
}

impl Precision {
    /// The packed format for matrix `name` as stored, or `None` for f32. A matrix already in
    /// the chosen format is kept as it is, so a file is never quantized twice.
    pub fn target(self, name: &str, stored: &StoredTensor) -> Option<QuantType> {
        match self {
            Precision::F32 => None,
            Precision::Auto => match stored {
                StoredTensor::Float(_) | StoredTensor::Raw(_) => None,
                StoredTensor::Blocks(b) => Some(b.ty()),
                StoredTensor::Dequantized(_) => Some(QuantType::Q8_0),
            },
            Precision::Packed => match stored {
                StoredTensor::Blocks(b) => Some(b.ty()),
                _ => self.for_matrix(name),
            },
            Precision::Uniform(_) | Precision::Mixed => self.for_matrix(name),
        }
    }

    /// What this precision means on a GPU (`gpu`) or the CPU: `auto` packs a GPU's floats
    /// ([`Precision::Packed`]) and keeps the CPU's as the file has them (the reference numbers);
    /// every other choice is the same everywhere.
    pub fn on(self, gpu: bool) -> Precision {
        match self {
            Precision::Auto if gpu => Precision::Packed,
            p => p,
        }
    }

    /// Whether float matrices are quantized as they load (so a safetensors file is widened to
    /// f32 one tensor at a time, not up front).
    pub fn quantizes_floats(self) -> bool {
        !matches!(self, Precision::Auto | Precision::F32)
    }

    /// The packed format for float matrix `name`, or `None` for f32.
    pub fn for_matrix(self, name: &str) -> Option<QuantType> {
        match self {
            Precision::Auto | Precision::F32 => None,
            _ if name.contains(".position_embedding.") => Some(QuantType::Q8_0),
            Precision::Uniform(ty) => Some(ty),
            Precision::Packed => Some(QuantType::Q8_0),
            Precision::Mixed => Some(mixed_type(name)),
        }
    }

    pub fn name(self) -> String {
        match self {
            Precision::Auto => "auto".into(),
            Precision::Packed => "auto (q8_0)".into(),
            Precision::F32 => "f32".into(),
            Precision::Uniform(ty) => ty.name().into(),
            Precision::Mixed => "mixed".into(),
        }
    }
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Precision::Auto),
            "f32" => Ok(Precision::F32),
            "mixed" => Ok(Precision::Mixed),
            other => other.parse().map(Precision::Uniform).map_err(|_| {
                Error::Invalid(format!(
                    "unknown precision '{other}' (expected auto, f32, q8_0, q4_0 or mixed)"
                ))
            }),
        }
    }
}

/// The `mixed` preset's choice for one matrix, by its Hugging Face name: Q8_0 for the text
/// model's value projections, Q4_0 for everything else.
///
/// Chosen by measurement on real weights (SmolLM2-135M, 134 teacher-forced positions, mean KL
/// to f32 at pure Q4_0: 0.426). Moving one role to Q8_0 gave: `v_proj` 0.325 for 3.3 M
/// weights, `down_proj` 0.268 for 26.5 M, the embedding table (and tied head) 0.349 for
/// 28.3 M; `q_proj`, `o_proj`, `gate_proj` and `up_proj` barely moved it. Per byte `v_proj`
/// wins fivefold, and at SmolVLM-256M's size it is what fits under 150 MB. The vision tower
/// stays at Q4_0: its `v_proj` alone would cost 3.5 MB.
pub fn mixed_type(name: &str) -> QuantType {
    if name.contains("self_attn.v_proj") && !name.contains("vision_model") {
        QuantType::Q8_0
    } else {
        QuantType::Q4_0
    }
}
