//! SmolVLM as llama.cpp publishes it: a GGUF *pair*, the text model (architecture `llama`) and
//! an `mmproj` file (architecture `clip`) holding the SigLIP tower and the Idefics3 connector.
//!
//! [`pair_files`] turns a pair into [`ModelFiles`] and [`read_pair_weights`] its tensors into
//! Hugging Face's names; `crate::convert` writes pairs. What llama.cpp has no key for travels
//! under `captioner.*`: the image processor settings and the generation config, as the JSON
//! they came from.

use super::folder::TextFiles;
use super::names;
use super::qwen2_vl_pair;
use super::{Gguf, GgufError, GgufValue};
use crate::config::limits;
use crate::error::{Error, Result};
use crate::files::gguf::GgufFile;
use crate::files::{Checkpoint, ModelFiles};
use crate::weights::WeightSet;
use serde_json::{json, Map, Value};

/// Metadata keys of this crate's own (llama.cpp ignores them).
pub const KEY_PROCESSOR: &str = "captioner.processor_config";
pub const KEY_GENERATION: &str = "captioner.generation_config";

/// What the mmproj's own metadata or tensors get wrong, said to be the mmproj's.
fn in_mmproj(e: impl Into<Error>) -> Error {
    Error::InFile {
        file: "the mmproj".into(),
        source: Box::new(e.into()),
    }
}

/// The model a GGUF pair holds, as [`ModelFiles`]: the text file's config and tokenizer, the
/// vision config from the mmproj, and the image processor from `captioner.processor_config`
/// (or, for a llama.cpp file, from its `clip.vision.*` keys with Idefics3's defaults).
pub fn pair_files(text: GgufFile, mmproj: GgufFile) -> Result<ModelFiles> {
    let parts = text.header.text_files()?;
    let g = &mmproj.header;
    let req = |key: &str, max: usize| g.req_size(key, max).map_err(in_mmproj);
    let projector = g.get("clip.projector_type").and_then(GgufValue::as_str);
    if let Some(kind) = projector.and_then(qwen2_vl_pair::kind_of) {
        return qwen2_vl_pair::pair_files(parts, kind, text, mmproj);
    }
    if projector != Some("idefics3") {
        return Err(Error::Invalid(format!(
            "the mmproj file is not an Idefics3/SmolVLM or Qwen2-VL projector (clip.projector_type is {})",
            match projector {
                Some(kind) => format!("{kind:?}"),
                None => "missing".into(),
            }
        )));
    }
    let eps = g
        .opt_f64("clip.vision.attention.layer_norm_epsilon")
        .map_err(in_mmproj)?
        .unwrap_or(1e-6);
    let tokenizer = &parts.tokenizer;
    let image_token_id = tokenizer["model"]["vocab"]["<image>"]
        .as_u64()
        .or_else(|| {
            tokenizer["added_tokens"]
                .as_array()?
                .iter()
                .find(|t| t["content"] == "<image>")?["id"]
                .as_u64()
        })
        .ok_or_else(|| Error::Invalid("the text model's vocabulary has no <image> token".into()))?;
    let mut config = Map::new();
    config.insert("model_type".into(), json!("idefics3"));
    config.insert("image_token_id".into(), json!(image_token_id));
    config.insert(
        "scale_factor".into(),
        json!(g
            .opt_size("clip.vision.projector.scale_factor", limits::IMAGE_SIDE)
            .map_err(in_mmproj)?
            .unwrap_or(2)),
    );
    config.insert(
        "tie_word_embeddings".into(),
        parts.config["tie_word_embeddings"].clone(),
    );
    config.insert(
        "vision_config".into(),
        json!({
            "model_type": "idefics3_vision",
            "hidden_act": "gelu_pytorch_tanh",
            "hidden_size": req("clip.vision.embedding_length", limits::WIDTH)?,
            "intermediate_size": req("clip.vision.feed_forward_length", limits::WIDTH)?,
            "num_hidden_layers": req("clip.vision.block_count", limits::LAYERS)?,
            "num_attention_heads": req("clip.vision.attention.head_count", limits::HEADS)?,
            "image_size": req("clip.vision.image_size", limits::IMAGE_SIDE)?,
            "patch_size": req("clip.vision.patch_size", limits::IMAGE_SIDE)?,
            "num_channels": 3,
            "layer_norm_eps": eps,
        }),
    );
    let preprocessor_config = Some(match g.get(KEY_PROCESSOR).and_then(GgufValue::as_str) {
        Some(json) => json.to_string(),
        None => {
            let floats = |key: &str| -> Result<Option<Vec<f64>>> {
                let Some(items) = g.get(key).and_then(GgufValue::as_array) else {
                    return Ok(None);
                };
                let finite = |v: &GgufValue| {
                    v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
                        in_mmproj(GgufError::BadValue {
                            key: key.into(),
                            detail: "holds something other than finite numbers".into(),
                        })
                    })
                };
                items
                    .iter()
                    .map(finite)
                    .collect::<Result<Vec<_>>>()
                    .map(Some)
            };
            let tile = req("clip.vision.image_size", limits::IMAGE_SIDE)?;
            let longest = g
                .opt_size("clip.vision.preproc_image_size", limits::IMAGE_SIDE)
                .map_err(in_mmproj)?
                .unwrap_or(tile * 4);
            json!({
                "image_processor_type": "Idefics3ImageProcessor",
                "do_resize": true,
                "size": {"longest_edge": longest},
                "max_image_size": {"longest_edge": tile},
                "do_image_splitting": true,
                "image_mean": floats("clip.vision.image_mean")?.unwrap_or(vec![0.5; 3]),
                "image_std": floats("clip.vision.image_std")?.unwrap_or(vec![0.5; 3]),
            })
            .to_string()
        }
    });
    let generation_config = text
        .header
        .get(KEY_GENERATION)
        .and_then(GgufValue::as_str)
        .map(str::to_string);
    config.insert("text_config".into(), parts.config);
    let parts = TextFiles {
        config: Value::Object(config),
        ..parts
    };
    let mut files = parts.into_model_files(Checkpoint::GgufPair { text, mmproj });
    files.config_source = "the GGUF pair's metadata (read as a config.json)";
    files.preprocessor_config_json = preprocessor_config;
    files.generation_config_json = generation_config;
    Ok(files)
}

/// The tensors of a pair under Hugging Face names: text tensors un-permuted, packed blocks kept
/// packed.
pub fn read_pair_weights(text: &GgufFile, mmproj: &GgufFile, set: &mut WeightSet) -> Result<()> {
    let qwen = mmproj
        .header
        .get("clip.projector_type")
        .and_then(GgufValue::as_str)
        .and_then(qwen2_vl_pair::kind_of);
    let g = &text.header;
    for (gguf_name, _) in g.llama_hf_names()? {
        let (name, stored) = g.llama_hf_stored_in(&text.bytes, &gguf_name)?;
        // Idefics3 nests its decoder; Qwen2-VL's is the model's own.
        let name = match name.strip_prefix("model.") {
            Some(rest) if qwen.is_none() => format!("model.text_model.{rest}"),
            _ => name,
        };
        set.insert_stored(name, stored);
    }
    if let Some(family) = qwen {
        return qwen2_vl_pair::read_vision_weights(mmproj, family, set);
    }
    let g = &mmproj.header;
    for (gguf_name, hf_name) in vision_names(g).map_err(in_mmproj)? {
        let stored = g
            .stored_in(&mmproj.bytes, &gguf_name, None)
            .map_err(in_mmproj)?;
        set.insert_stored(hf_name, stored);
    }
    Ok(())
}

/// `(GGUF name, Hugging Face name)` of every tensor of an Idefics3 mmproj.
fn vision_names(g: &Gguf) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for name in g.tensor_names() {
        match names::clip_hf_name(name) {
            Some(hf) => out.push((name.to_string(), hf)),
            None => unknown.push(name.to_string()),
        }
    }
    if !unknown.is_empty() {
        return Err(GgufError::UnknownTensors {
            architecture: "clip (idefics3)".into(),
            names: unknown,
        }
        .into());
    }
    Ok(out)
}
