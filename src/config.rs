//! Model configuration, read from the files of a published model folder.
//!
//! The structs mirror the checkpoint's `config.json` (field names as published). Parsing goes
//! through [`Fields`], which names the exact field (`text_config.num_key_value_heads`) when
//! something is missing, mistyped or inconsistent.

use crate::error::{Error, Result};
use serde_json::{Map, Value};

/// The Llama text decoder (SmolLM2 in SmolVLM; also a standalone text model).
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
}

/// The SigLIP vision tower ("idefics3_vision").
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub layer_norm_eps: f64,
}

impl VisionConfig {
    /// Patches along one side of a tile (32 for SmolVLM's 512 px tiles of 16 px patches).
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// A whole Idefics3 / SmolVLM checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Idefics3Config {
    pub vision: VisionConfig,
    pub text: TextConfig,
    pub scale_factor: usize,
    pub image_token_id: u32,
}

impl Idefics3Config {
    /// Tokens one tile becomes after the pixel-shuffle connector (64 for SmolVLM).
    pub fn image_seq_len(&self) -> usize {
        let side = self.vision.patches_per_side() / self.scale_factor;
        side * side
    }
}

/// What a `config.json` describes.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    /// A vision-language model: image + text in, text out.
    Idefics3(Idefics3Config),
    /// A text-only Llama model (e.g. SmolLM2, or a GGUF text model).
    Llama(TextConfig),
}

impl ModelConfig {
    /// Parses a `config.json` text.
    pub fn from_json(text: &str) -> Result<Self> {
        let root = parse_object(CONFIG, text)?;
        let fields = Fields::root(CONFIG, &root);
        match fields.str("model_type")? {
            "idefics3" => Ok(ModelConfig::Idefics3(Idefics3Config::from_fields(&fields)?)),
            "llama" => Ok(ModelConfig::Llama(TextConfig::from_fields(&fields, None)?)),
            other => Err(fields.error(
                "model_type",
                format!("unsupported model_type `{other}` (supported: idefics3, llama)"),
            )),
        }
    }

    pub fn text(&self) -> &TextConfig {
        match self {
            ModelConfig::Idefics3(c) => &c.text,
            ModelConfig::Llama(c) => c,
        }
    }
}

const CONFIG: &str = "config.json";

impl Idefics3Config {
    fn from_fields(root: &Fields) -> Result<Self> {
        let vision = VisionConfig::from_fields(&root.child("vision_config")?)?;
        // The top-level flag governs tying for the conditional-generation model; the nested
        // one is the fallback (transformers reads it the same way).
        let tie = root.opt_bool("tie_word_embeddings")?;
        let text = TextConfig::from_fields(&root.child("text_config")?, tie)?;
        let scale_factor = root.usize_or("scale_factor", 2)?;
        let image_token_id = root
            .opt_id("image_token_id")?
            .ok_or_else(|| root.error("image_token_id", "missing"))?;
        if scale_factor == 0 || vision.patches_per_side() % scale_factor != 0 {
            return Err(root.error(
                "scale_factor",
                format!(
                    "{scale_factor} does not divide the {} patches per side of a tile",
                    vision.patches_per_side()
                ),
            ));
        }
        if image_token_id as usize >= text.vocab_size {
            return Err(root.error(
                "image_token_id",
                format!(
                    "{image_token_id} is outside the vocabulary ({})",
                    text.vocab_size
                ),
            ));
        }
        Ok(Self {
            vision,
            text,
            scale_factor,
            image_token_id,
        })
    }
}

impl VisionConfig {
    fn from_fields(f: &Fields) -> Result<Self> {
        if let Some(kind) = f.opt_str("model_type")? {
            if kind != "idefics3_vision" && kind != "siglip_vision_model" {
                return Err(f.error("model_type", format!("unsupported vision model `{kind}`")));
            }
        }
        if let Some(act) = f.opt_str("hidden_act")? {
            if act != "gelu_pytorch_tanh" {
                return Err(f.error("hidden_act", format!("unsupported activation `{act}`")));
            }
        }
        let c = Self {
            hidden_size: f.usize_or("hidden_size", 768)?,
            intermediate_size: f.usize_or("intermediate_size", 3072)?,
            num_hidden_layers: f.usize_or("num_hidden_layers", 12)?,
            num_attention_heads: f.usize_or("num_attention_heads", 12)?,
            num_channels: f.usize_or("num_channels", 3)?,
            image_size: f.usize_or("image_size", 224)?,
            patch_size: f.usize_or("patch_size", 32)?,
            layer_norm_eps: f.f64_or("layer_norm_eps", 1e-6)?,
        };
        f.check_divides(
            "num_attention_heads",
            c.num_attention_heads,
            "hidden_size",
            c.hidden_size,
        )?;
        f.check_divides("patch_size", c.patch_size, "image_size", c.image_size)?;
        if c.num_channels != 3 {
            return Err(f.error("num_channels", "only RGB (3 channels) is supported"));
        }
        Ok(c)
    }
}

impl TextConfig {
    fn from_fields(f: &Fields, tie_override: Option<bool>) -> Result<Self> {
        if let Some(kind) = f.opt_str("model_type")? {
            if kind != "llama" {
                return Err(f.error("model_type", format!("unsupported text model `{kind}`")));
            }
        }
        if let Some(act) = f.opt_str("hidden_act")? {
            if act != "silu" {
                return Err(f.error("hidden_act", format!("unsupported activation `{act}`")));
            }
        }
        let hidden_size = f.usize("hidden_size")?;
        let num_attention_heads = f.usize("num_attention_heads")?;
        let num_key_value_heads = f.usize_or("num_key_value_heads", num_attention_heads)?;
        let head_dim = match f.opt_usize("head_dim")? {
            Some(d) => d,
            None => {
                f.check_divides(
                    "num_attention_heads",
                    num_attention_heads,
                    "hidden_size",
                    hidden_size,
                )?;
                hidden_size / num_attention_heads
            }
        };
        f.check_divides(
            "num_key_value_heads",
            num_key_value_heads,
            "num_attention_heads",
            num_attention_heads,
        )?;
        if head_dim % 2 != 0 {
            return Err(f.error("head_dim", format!("{head_dim} must be even for RoPE")));
        }
        let c = Self {
            vocab_size: f.usize("vocab_size")?,
            hidden_size,
            intermediate_size: f.usize("intermediate_size")?,
            num_hidden_layers: f.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: f.f64_or("rms_norm_eps", 1e-6)?,
            rope_theta: rope_theta(f)?,
            max_position_embeddings: f.usize_or("max_position_embeddings", 2048)?,
            tie_word_embeddings: match tie_override {
                Some(t) => t,
                None => f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            },
        };
        Ok(c)
    }
}

/// RoPE base frequency: `rope_theta` (hub configs) or `rope_parameters.rope_theta` (written by
/// transformers 5). Only the plain ("default") RoPE is implemented, so scaled variants are
/// refused rather than silently computed wrong.
fn rope_theta(f: &Fields) -> Result<f64> {
    if let Some(params) = f.opt_child("rope_parameters")? {
        if let Some(kind) = params.opt_str("rope_type")? {
            if kind != "default" {
                return Err(params.error("rope_type", format!("unsupported RoPE type `{kind}`")));
            }
        }
        return params.f64_or("rope_theta", 10_000.0);
    }
    if let Some(scaling) = f.obj.get("rope_scaling") {
        if !scaling.is_null() {
            return Err(f.error("rope_scaling", "scaled RoPE is not supported"));
        }
    }
    f.f64_or("rope_theta", 10_000.0)
}

/// `generation_config.json`: only what generation needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationConfig {
    pub eos_token_ids: Vec<u32>,
    pub bos_token_id: Option<u32>,
}

impl GenerationConfig {
    pub fn from_json(text: &str) -> Result<Self> {
        const FILE: &str = "generation_config.json";
        let root = parse_object(FILE, text)?;
        let f = Fields::root(FILE, &root);
        Ok(Self {
            eos_token_ids: f.ids("eos_token_id")?,
            bos_token_id: f.opt_id("bos_token_id")?,
        })
    }

    /// End tokens named in a `config.json` (top level or text_config), used when a folder has
    /// no generation_config.json.
    pub fn from_model_config_json(text: &str) -> Result<Self> {
        let root = parse_object(CONFIG, text)?;
        let f = Fields::root(CONFIG, &root);
        let mut eos = f.ids("eos_token_id")?;
        if let Some(t) = f.opt_child("text_config")? {
            for id in t.ids("eos_token_id")? {
                if !eos.contains(&id) {
                    eos.push(id);
                }
            }
        }
        Ok(Self {
            eos_token_ids: eos,
            bos_token_id: f.opt_id("bos_token_id")?,
        })
    }
}

/// `processor_config.json` may pin `image_seq_len`; it must agree with the model's shapes.
pub fn processor_image_seq_len(text: &str) -> Result<Option<usize>> {
    const FILE: &str = "processor_config.json";
    let root = parse_object(FILE, text)?;
    Fields::root(FILE, &root).opt_usize("image_seq_len")
}

pub(crate) fn parse_object(file: &str, text: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::config(file, "expected a JSON object")),
        Err(e) => Err(Error::config(file, format!("not valid JSON: {e}"))),
    }
}

/// Typed access to one JSON object, with errors that carry the file and the dotted field path.
pub(crate) struct Fields<'a> {
    file: &'a str,
    prefix: String,
    obj: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub(crate) fn root(file: &'a str, obj: &'a Map<String, Value>) -> Self {
        Self {
            file,
            prefix: String::new(),
            obj,
        }
    }

    fn path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub(crate) fn error(&self, key: &str, message: impl std::fmt::Display) -> Error {
        Error::config(self.file, format!("{}: {message}", self.path(key)))
    }

    fn opt_child(&self, key: &str) -> Result<Option<Fields<'a>>> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(obj)) => Ok(Some(Fields {
                file: self.file,
                prefix: format!("{}.", self.path(key)),
                obj,
            })),
            Some(_) => Err(self.error(key, "expected an object")),
        }
    }

    fn child(&self, key: &str) -> Result<Fields<'a>> {
        self.opt_child(key)?
            .ok_or_else(|| self.error(key, "missing"))
    }

    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.error(key, "expected a string")),
        }
    }

    fn str(&self, key: &str) -> Result<&'a str> {
        self.opt_str(key)?.ok_or_else(|| self.error(key, "missing"))
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    self.error(key, format!("expected a non-negative integer, got {v}"))
                }),
        }
    }

    fn usize(&self, key: &str) -> Result<usize> {
        let v = self
            .opt_usize(key)?
            .ok_or_else(|| self.error(key, "missing"))?;
        if v == 0 {
            return Err(self.error(key, "must be positive"));
        }
        Ok(v)
    }

    fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        match self.opt_usize(key)? {
            Some(0) => Err(self.error(key, "must be positive")),
            Some(v) => Ok(v),
            None => Ok(default),
        }
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite() && *x > 0.0)
                .ok_or_else(|| self.error(key, format!("expected a positive number, got {v}"))),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.error(key, "expected true or false")),
        }
    }

    /// One token id: a number that does not fit a `u32` is an error, never cut down to one
    /// that happens to be in the vocabulary.
    fn opt_id(&self, key: &str) -> Result<Option<u32>> {
        self.opt_usize(key)?
            .map(|v| {
                u32::try_from(v)
                    .map_err(|_| self.error(key, format!("{v} is too large for a token id")))
            })
            .transpose()
    }

    /// A token id or a list of them (`eos_token_id` takes both forms).
    fn ids(&self, key: &str) -> Result<Vec<u32>> {
        let as_id = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| as_id(v).ok_or_else(|| self.error(key, "expected token ids")))
                .collect(),
            Some(v) => as_id(v)
                .map(|id| vec![id])
                .ok_or_else(|| self.error(key, "expected a token id")),
        }
    }

    fn check_divides(
        &self,
        small_key: &str,
        small: usize,
        big_key: &str,
        big: usize,
    ) -> Result<()> {
        if small == 0 || big % small != 0 {
            return Err(self.error(
                small_key,
                format!("{small} does not divide {} ({big})", self.path(big_key)),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smolvlm_like(text_extra: &str) -> String {
        format!(
            r#"{{"model_type":"idefics3","image_token_id":49190,"scale_factor":4,
            "vision_config":{{"hidden_size":768,"intermediate_size":3072,"num_hidden_layers":12,
              "num_attention_heads":12,"image_size":512,"patch_size":16}},
            "text_config":{{"hidden_size":576,"intermediate_size":1536,"num_hidden_layers":30,
              "num_attention_heads":9,"num_key_value_heads":3,"rms_norm_eps":1e-5,
              "vocab_size":49280{text_extra}}}}}"#
        )
    }

    #[test]
    fn token_ids_that_do_not_fit_are_errors_not_wrapped() {
        // 2^32 + 49190 was read as 49190, the real image token.
        let wrapped = smolvlm_like("").replace("49190", "4295016486");
        let err = ModelConfig::from_json(&wrapped).unwrap_err().to_string();
        assert!(
            err.contains("image_token_id: 4295016486 is too large for a token id"),
            "{err}"
        );
        let err = GenerationConfig::from_json(r#"{"bos_token_id": 4294967297}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bos_token_id: 4294967297 is too large"),
            "{err}"
        );
        let ok =
            GenerationConfig::from_json(r#"{"bos_token_id": 1, "eos_token_id": [2]}"#).unwrap();
        assert_eq!((ok.bos_token_id, ok.eos_token_ids), (Some(1), vec![2]));
    }

    #[test]
    fn reads_both_rope_styles() {
        let a = ModelConfig::from_json(&smolvlm_like(r#","rope_theta":100000"#)).unwrap();
        let b = ModelConfig::from_json(&smolvlm_like(
            r#","rope_parameters":{"rope_theta":100000,"rope_type":"default"}"#,
        ))
        .unwrap();
        assert_eq!(a, b);
        let ModelConfig::Idefics3(c) = a else {
            panic!("not idefics3")
        };
        assert_eq!(c.text.rope_theta, 100000.0);
        assert_eq!(c.text.head_dim, 64);
        assert_eq!(c.image_seq_len(), 64);
    }

    #[test]
    fn errors_name_the_field() {
        let err = ModelConfig::from_json(r#"{"model_type":"qwen2_vl"}"#).unwrap_err();
        assert!(err.to_string().contains("model_type"), "{err}");
        assert!(err.to_string().contains("qwen2_vl"), "{err}");

        let bad_gqa =
            smolvlm_like(r#","num_key_value_heads":4"#).replace(r#""num_key_value_heads":3,"#, "");
        let err = ModelConfig::from_json(&bad_gqa).unwrap_err().to_string();
        assert!(err.contains("text_config.num_key_value_heads"), "{err}");

        let no_hidden = smolvlm_like("").replace(r#""hidden_size":576,"#, "");
        let err = ModelConfig::from_json(&no_hidden).unwrap_err().to_string();
        assert!(err.contains("text_config.hidden_size: missing"), "{err}");

        let bad_scale = smolvlm_like("").replace(r#""scale_factor":4"#, r#""scale_factor":5"#);
        let err = ModelConfig::from_json(&bad_scale).unwrap_err().to_string();
        assert!(err.contains("scale_factor"), "{err}");

        let scaled = smolvlm_like(r#","rope_parameters":{"rope_theta":1e4,"rope_type":"yarn"}"#);
        let err = ModelConfig::from_json(&scaled).unwrap_err().to_string();
        assert!(err.contains("rope_parameters.rope_type"), "{err}");

        assert!(ModelConfig::from_json("not json").is_err());
    }

    #[test]
    fn eos_ids_accept_int_or_list() {
        let g =
            GenerationConfig::from_json(r#"{"eos_token_id":[2,49279],"bos_token_id":1}"#).unwrap();
        assert_eq!(g.eos_token_ids, vec![2, 49279]);
        let g = GenerationConfig::from_json(r#"{"eos_token_id":2}"#).unwrap();
        assert_eq!(g.eos_token_ids, vec![2]);
    }
}
