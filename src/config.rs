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
    /// The q, k and v projections carry biases (Qwen2; not the output projection).
    pub qkv_bias: bool,
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
    /// Qwen2-VL or Qwen2.5-VL (`model_type` `qwen2_vl`, `qwen2_5_vl`).
    Qwen2Vl(Qwen2VlConfig),
}

impl ModelConfig {
    /// Parses a `config.json` text.
    pub fn from_json(text: &str) -> Result<Self> {
        Self::from_json_of(CONFIG, text)
    }

    /// Parses the `config.json` text of `source`, which errors name (a GGUF's is made from its
    /// metadata: see [`crate::ModelFiles::config_source`]).
    pub fn from_json_of(source: &str, text: &str) -> Result<Self> {
        let root = parse_object(source, text)?;
        let fields = Fields::root(source, &root);
        match fields.str("model_type")? {
            "idefics3" => Ok(ModelConfig::Idefics3(Idefics3Config::from_fields(&fields)?)),
            "llama" => Ok(ModelConfig::Llama(TextConfig::from_fields(&fields, None)?)),
            "qwen2_vl" | "qwen2_5_vl" => Ok(ModelConfig::Qwen2Vl(Qwen2VlConfig::from_fields(
                &fields,
            )?)),
            other => Err(fields.error(
                "model_type",
                format!(
                    "unsupported model_type `{other}` (supported: idefics3, llama, qwen2_vl, qwen2_5_vl)"
                ),
            )),
        }
    }

    pub fn text(&self) -> &TextConfig {
        match self {
            ModelConfig::Idefics3(c) => &c.text,
            ModelConfig::Llama(c) => c,
            ModelConfig::Qwen2Vl(c) => &c.text,
        }
    }
}

const CONFIG: &str = "config.json";

/// The largest value each kind of size in a config may take. Published checkpoints are far
/// inside them (the largest Llamas: 126 layers, `hidden_size` 16,384, `intermediate_size`
/// 53,248, `head_dim` 128; Gemma's vocabulary 262,144; SigLIP's largest tiles 896 px). A number
/// past its bound is a damaged or hostile file. Refusing it while parsing keeps every later
/// product of sizes well inside a 64-bit `usize`, and nothing is allocated from a size before
/// the weights' own shapes have been checked against it (a config that claims 2^31 layers used
/// to ask for a 13 TB vector of layers before a single tensor was looked at).
pub mod limits {
    /// `num_hidden_layers`, text and vision.
    pub const LAYERS: usize = 1 << 10;
    /// `num_attention_heads`, `num_key_value_heads`.
    pub const HEADS: usize = 1 << 10;
    /// `head_dim`.
    pub const HEAD_DIM: usize = 1 << 12;
    /// `hidden_size`, `intermediate_size`.
    pub const WIDTH: usize = 1 << 18;
    /// `vocab_size`.
    pub const VOCAB: usize = 1 << 22;
    /// `max_position_embeddings` (written to a GGUF as a `u32`).
    pub const CONTEXT: usize = 1 << 30;
    /// The vision tower's `image_size` and `patch_size`, in pixels.
    pub const IMAGE_SIDE: usize = 1 << 14;
}

impl Idefics3Config {
    fn from_fields(root: &Fields) -> Result<Self> {
        let vision = VisionConfig::from_fields(&root.child("vision_config")?)?;
        // The top-level flag governs tying for the conditional-generation model; the nested
        // one is the fallback (transformers reads it the same way).
        let tie = root.opt_bool("tie_word_embeddings")?;
        let text = TextConfig::from_fields(&root.child("text_config")?, tie)?;
        let scale_factor = root.usize_or("scale_factor", 2, limits::IMAGE_SIDE)?;
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
        root.check_addressable(
            "scale_factor",
            &[
                text.hidden_size,
                vision.hidden_size,
                scale_factor,
                scale_factor,
            ],
        )?;
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
            hidden_size: f.usize_or("hidden_size", 768, limits::WIDTH)?,
            intermediate_size: f.usize_or("intermediate_size", 3072, limits::WIDTH)?,
            num_hidden_layers: f.usize_or("num_hidden_layers", 12, limits::LAYERS)?,
            num_attention_heads: f.usize_or("num_attention_heads", 12, limits::HEADS)?,
            // (any count but 3 is refused below, with its own message)
            num_channels: f.usize_or("num_channels", 3, usize::MAX)?,
            image_size: f.usize_or("image_size", 224, limits::IMAGE_SIDE)?,
            patch_size: f.usize_or("patch_size", 32, limits::IMAGE_SIDE)?,
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
        let positions = c.patches_per_side() * c.patches_per_side();
        f.check_addressable("image_size", &[positions, c.hidden_size])?;
        f.check_addressable(
            "patch_size",
            &[c.hidden_size, 3, c.patch_size, c.patch_size],
        )?;
        f.check_addressable("intermediate_size", &[c.intermediate_size, c.hidden_size])?;
        Ok(c)
    }
}

/// The decoders this crate implements, which differ in a few settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextFamily {
    Llama,
    /// Qwen2's decoder inside Qwen2-VL / Qwen2.5-VL: q/k/v biases, M-RoPE.
    Qwen2,
}

impl TextConfig {
    fn from_fields(f: &Fields, tie_override: Option<bool>) -> Result<Self> {
        Self::from_fields_as(f, tie_override, TextFamily::Llama)
    }

    fn from_fields_as(f: &Fields, tie_override: Option<bool>, family: TextFamily) -> Result<Self> {
        if let Some(kind) = f.opt_str("model_type")? {
            let known: &[&str] = match family {
                TextFamily::Llama => &["llama"],
                TextFamily::Qwen2 => {
                    &["qwen2_vl", "qwen2_5_vl", "qwen2_vl_text", "qwen2_5_vl_text"]
                }
            };
            if !known.contains(&kind) {
                return Err(f.error("model_type", format!("unsupported text model `{kind}`")));
            }
        }
        if f.opt_bool("use_sliding_window")? == Some(true) {
            return Err(f.error(
                "use_sliding_window",
                "sliding-window attention is not supported",
            ));
        }
        if let Some(act) = f.opt_str("hidden_act")? {
            if act != "silu" {
                return Err(f.error("hidden_act", format!("unsupported activation `{act}`")));
            }
        }
        let hidden_size = f.usize("hidden_size", limits::WIDTH)?;
        let num_attention_heads = f.usize("num_attention_heads", limits::HEADS)?;
        let num_key_value_heads =
            f.usize_or("num_key_value_heads", num_attention_heads, limits::HEADS)?;
        let head_dim = match f.opt_usize("head_dim")? {
            Some(_) => f.usize("head_dim", limits::HEAD_DIM)?,
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
            vocab_size: f.usize("vocab_size", limits::VOCAB)?,
            hidden_size,
            intermediate_size: f.usize("intermediate_size", limits::WIDTH)?,
            num_hidden_layers: f.usize("num_hidden_layers", limits::LAYERS)?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: f.f64_or("rms_norm_eps", 1e-6)?,
            rope_theta: match family {
                TextFamily::Llama => rope_theta(f)?,
                TextFamily::Qwen2 => mrope(f)?.0,
            },
            max_position_embeddings: f.usize_or(
                "max_position_embeddings",
                2048,
                limits::CONTEXT,
            )?,
            tie_word_embeddings: match tie_override {
                Some(t) => t,
                None => f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            },
            qkv_bias: family == TextFamily::Qwen2,
        };
        f.check_addressable("vocab_size", &[c.vocab_size, c.hidden_size])?;
        f.check_addressable("intermediate_size", &[c.intermediate_size, c.hidden_size])?;
        f.check_addressable(
            "head_dim",
            &[c.num_attention_heads, c.head_dim, c.hidden_size],
        )?;
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

/// M-RoPE's base frequency and its split of the rotary pairs into the temporal, height and
/// width sections: `rope_parameters` (transformers 5) or the published folders' `rope_theta`
/// and `rope_scaling` (`{"type": "mrope", "mrope_section": [16, 24, 24]}`).
fn mrope(f: &Fields) -> Result<(f64, [usize; 3])> {
    let (params, theta) = match f.opt_child("rope_parameters")? {
        Some(p) => {
            let theta = p.f64_or("rope_theta", 1_000_000.0)?;
            (p, theta)
        }
        None => (
            f.child("rope_scaling")?,
            f.f64_or("rope_theta", 1_000_000.0)?,
        ),
    };
    for key in ["rope_type", "type"] {
        if let Some(kind) = params.opt_str(key)? {
            if !["default", "mrope"].contains(&kind) {
                return Err(params.error(key, format!("unsupported RoPE type `{kind}`")));
            }
        }
    }
    let section = params.ids("mrope_section")?;
    let section: [u32; 3] = section
        .try_into()
        .map_err(|_| params.error("mrope_section", "expected three numbers"))?;
    let section = section.map(|n| n as usize);
    for n in section {
        params.check_size("mrope_section", n, limits::HEAD_DIM)?;
    }
    Ok((theta, section))
}

/// Which of the family's vision towers a checkpoint has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionKind {
    /// Qwen2-VL: LayerNorm, a QuickGELU MLP, attention over whole images.
    Qwen2Vl,
    /// Qwen2.5-VL: RMSNorm, a SwiGLU MLP, attention within windows except in
    /// `fullatt_block_indexes`.
    Qwen25Vl,
}

/// The family's vision tower (`vision_config`, `model_type` `qwen2_vl_vision` or
/// `qwen2_5_vl_vision`), under one set of names: Qwen2.5-VL's `hidden_size` is the tower's
/// width (`embed_dim` here) and its `out_hidden_size` the merger's output (`hidden_size`).
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen2VlVisionConfig {
    pub kind: VisionKind,
    /// Qwen2.5-VL's window side in pixels; 0 for Qwen2-VL.
    pub window_size: usize,
    /// The blocks that attend over whole images where the others use windows.
    pub fullatt_block_indexes: Vec<usize>,
    pub depth: usize,
    pub embed_dim: usize,
    /// The merger's output: the text model's width.
    pub hidden_size: usize,
    /// The MLP's width, `int(embed_dim * mlp_ratio)`.
    pub mlp_dim: usize,
    pub num_heads: usize,
    pub in_channels: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub spatial_merge_size: usize,
    pub rope_theta: f64,
}

impl Qwen2VlVisionConfig {
    fn from_fields(f: &Fields, kind: VisionKind) -> Result<Self> {
        let (names, act): (&[&str], &str) = match kind {
            VisionKind::Qwen2Vl => (&["qwen2_vl_vision", "qwen2_vl"], "quick_gelu"),
            VisionKind::Qwen25Vl => (&["qwen2_5_vl_vision", "qwen2_5_vl"], "silu"),
        };
        if let Some(model) = f.opt_str("model_type")? {
            if !names.contains(&model) {
                return Err(f.error("model_type", format!("unsupported vision tower `{model}`")));
            }
        }
        if let Some(a) = f.opt_str("hidden_act")? {
            if a != act {
                return Err(f.error("hidden_act", format!("unsupported activation `{a}`")));
            }
        }
        let (embed_key, out_key) = match kind {
            VisionKind::Qwen2Vl => ("embed_dim", "hidden_size"),
            VisionKind::Qwen25Vl => ("hidden_size", "out_hidden_size"),
        };
        let embed_dim = f.usize(embed_key, limits::WIDTH)?;
        let num_heads = f.usize("num_heads", limits::HEADS)?;
        f.check_divides("num_heads", num_heads, embed_key, embed_dim)?;
        // The 2-D rotary embedding has head_dim / 4 frequencies per axis.
        if (embed_dim / num_heads) % 4 != 0 {
            return Err(f.error(
                "num_heads",
                "the head width must be a multiple of 4 for the 2-D rotary embedding",
            ));
        }
        let mlp_dim = match kind {
            VisionKind::Qwen2Vl => {
                let ratio = f.f64_or("mlp_ratio", 4.0)?;
                let dim = embed_dim as f64 * ratio;
                if !(1.0..=limits::WIDTH as f64).contains(&dim) {
                    return Err(f.error("mlp_ratio", format!("{ratio} makes an MLP of {dim}")));
                }
                dim as usize
            }
            VisionKind::Qwen25Vl => f.usize("intermediate_size", limits::WIDTH)?,
        };
        let depth = f.usize("depth", limits::LAYERS)?;
        let (window_size, fullatt_block_indexes) = match kind {
            VisionKind::Qwen2Vl => (0, Vec::new()),
            VisionKind::Qwen25Vl => {
                let full: Vec<usize> = f
                    .ids("fullatt_block_indexes")?
                    .into_iter()
                    .map(|i| i as usize)
                    .collect();
                if let Some(&bad) = full.iter().find(|&&i| i >= depth) {
                    return Err(f.error("fullatt_block_indexes", format!("block {bad} of {depth}")));
                }
                (f.usize_or("window_size", 112, limits::IMAGE_SIDE)?, full)
            }
        };
        let in_channels = match f.opt_usize("in_channels")? {
            Some(_) => f.usize("in_channels", 4)?,
            None => f.usize_or("in_chans", 3, 4)?,
        };
        let theta = match f.opt_child("rope_parameters")? {
            Some(p) => p.f64_or("rope_theta", 10_000.0)?,
            None => 10_000.0,
        };
        let c = Self {
            kind,
            window_size,
            fullatt_block_indexes,
            depth,
            embed_dim,
            hidden_size: f.usize(out_key, limits::WIDTH)?,
            mlp_dim,
            num_heads,
            in_channels,
            patch_size: f.usize_or("patch_size", 14, limits::IMAGE_SIDE)?,
            temporal_patch_size: f.usize_or("temporal_patch_size", 2, 16)?,
            spatial_merge_size: f.usize_or("spatial_merge_size", 2, 8)?,
            rope_theta: theta,
        };
        f.check_addressable(
            "embed_dim",
            &[
                c.embed_dim,
                c.in_channels,
                c.temporal_patch_size,
                c.patch_size,
                c.patch_size,
            ],
        )?;
        f.check_addressable(
            "hidden_size",
            &[
                c.hidden_size,
                c.embed_dim,
                c.spatial_merge_size,
                c.spatial_merge_size,
            ],
        )?;
        Ok(c)
    }

    /// The width of one flattened patch: `in_channels · temporal_patch_size · patch_size²`.
    pub fn patch_len(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }
}

/// A Qwen2-VL or Qwen2.5-VL checkpoint (`model_type` `qwen2_vl`, `qwen2_5_vl`).
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen2VlConfig {
    pub vision: Qwen2VlVisionConfig,
    pub text: TextConfig,
    /// Rotary pairs per position stream: temporal, height, width (summing to `head_dim / 2`).
    pub mrope_section: [usize; 3],
    pub image_token_id: u32,
    pub vision_start_token_id: u32,
    pub vision_end_token_id: u32,
}

impl Qwen2VlConfig {
    /// Parses a `config.json`: the text model's fields at the top (the published folders) or
    /// in `text_config` (written by transformers 5).
    pub fn from_json(text: &str) -> Result<Self> {
        let root = parse_object(CONFIG, text)?;
        Self::from_fields(&Fields::root(CONFIG, &root))
    }

    fn from_fields(f: &Fields) -> Result<Self> {
        let kind = f.str("model_type")?;
        if !["qwen2_vl", "qwen2_5_vl"].contains(&kind) {
            return Err(f.error(
                "model_type",
                format!("`{kind}` is not Qwen2-VL or Qwen2.5-VL"),
            ));
        }
        let nested = f.opt_child("text_config")?;
        let t = nested.as_ref().unwrap_or(f);
        let tie = f.opt_bool("tie_word_embeddings")?;
        let text = TextConfig::from_fields_as(t, tie, TextFamily::Qwen2)?;
        let (_, mrope_section) = mrope(t)?;
        if mrope_section.iter().sum::<usize>() * 2 != text.head_dim {
            return Err(t.error(
                "mrope_section",
                format!(
                    "{mrope_section:?} does not split a head of {} into its pairs",
                    text.head_dim
                ),
            ));
        }
        let id = |key: &str, default: u32| -> Result<u32> { Ok(f.opt_id(key)?.unwrap_or(default)) };
        let vision_kind = match kind {
            "qwen2_vl" => VisionKind::Qwen2Vl,
            _ => VisionKind::Qwen25Vl,
        };
        let vision = Qwen2VlVisionConfig::from_fields(&f.child("vision_config")?, vision_kind)?;
        if vision.hidden_size != text.hidden_size {
            return Err(f.error(
                "vision_config",
                format!(
                    "the merger's output {} is not the text model's width {}",
                    vision.hidden_size, text.hidden_size
                ),
            ));
        }
        Ok(Self {
            vision,
            mrope_section,
            image_token_id: id("image_token_id", 151_655)?,
            vision_start_token_id: id("vision_start_token_id", 151_652)?,
            vision_end_token_id: id("vision_end_token_id", 151_653)?,
            text,
        })
    }
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

    /// A size: at least 1 and at most `max` (see [`limits`]).
    fn usize(&self, key: &str, max: usize) -> Result<usize> {
        let v = self
            .opt_usize(key)?
            .ok_or_else(|| self.error(key, "missing"))?;
        self.check_size(key, v, max)
    }

    fn usize_or(&self, key: &str, default: usize, max: usize) -> Result<usize> {
        match self.opt_usize(key)? {
            Some(v) => self.check_size(key, v, max),
            None => Ok(default),
        }
    }

    fn check_size(&self, key: &str, v: usize, max: usize) -> Result<usize> {
        if v == 0 {
            return Err(self.error(key, "must be positive"));
        }
        if v > max {
            return Err(self.error(
                key,
                format!("{v} is larger than any model has ({max} at most); is the file damaged?"),
            ));
        }
        Ok(v)
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

    /// A weight of shape `dims` (which `key` sizes) must be addressable here in f32: within a
    /// 32-bit `usize` in the browser. After this, no product of these sizes overflows.
    fn check_addressable(&self, key: &str, dims: &[usize]) -> Result<()> {
        let bytes = dims
            .iter()
            .try_fold(std::mem::size_of::<f32>(), |n, &d| n.checked_mul(d));
        match bytes {
            Some(b) if b <= isize::MAX as usize => Ok(()),
            _ => Err(self.error(
                key,
                format!("makes a weight of {dims:?} values, more than this build can address"),
            )),
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

    /// The sizes the hostile-file tries used, each past its bound: an error naming the field
    /// (they aborted on a 13 TB allocation, or panicked on an overflow, in the loader).
    #[test]
    fn sizes_no_model_has_are_errors() {
        let edit = |section: &str, key: &str, value: u64| {
            let mut v: Value = serde_json::from_str(&smolvlm_like("")).unwrap();
            let target = if section.is_empty() {
                &mut v
            } else {
                &mut v[section]
            };
            target[key] = value.into();
            ModelConfig::from_json(&v.to_string()).map(|_| ())
        };
        for (section, key, value) in [
            ("text_config", "num_hidden_layers", 1u64 << 31),
            ("text_config", "num_hidden_layers", 1 << 63),
            ("text_config", "head_dim", 1 << 40),
            ("text_config", "hidden_size", 1 << 40),
            ("text_config", "vocab_size", 1 << 63),
            ("text_config", "max_position_embeddings", 1 << 50),
            ("vision_config", "num_hidden_layers", 1 << 31),
            ("vision_config", "image_size", 1 << 40),
            ("vision_config", "intermediate_size", 1 << 40),
        ] {
            let err = edit(section, key, value).unwrap_err().to_string();
            let field = format!("{section}.{key}: {value} is larger than any model has");
            assert!(err.contains(&field), "{field}: {err}");
        }
        // Within every bound, a weight the sizes imply may still be too big to address in a
        // 32-bit build (the browser's); natively only a product past 64 bits is.
        let obj = Map::new();
        let f = Fields::root(CONFIG, &obj);
        let err = f
            .check_addressable("patch_size", &[1 << 40, 1 << 40])
            .unwrap_err();
        assert!(
            err.to_string().contains("patch_size: makes a weight of"),
            "{err}"
        );
        assert!(f.check_addressable("patch_size", &[768, 3, 16, 16]).is_ok());
        // The bounds themselves are sizes some model could have.
        assert!(edit("text_config", "num_hidden_layers", limits::LAYERS as u64).is_ok());
        assert!(edit("text_config", "vocab_size", limits::VOCAB as u64).is_ok());
    }

    #[test]
    fn reads_qwen2_vl_as_published_and_as_transformers_5_writes_it() {
        // Qwen2-VL-2B-Instruct's text fields (the vision_config is not read yet).
        let published = r#"{"architectures": ["Qwen2VLForConditionalGeneration"],
            "model_type": "qwen2_vl", "hidden_size": 1536, "intermediate_size": 8960,
            "num_attention_heads": 12, "num_hidden_layers": 28, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "vocab_size": 151936,
            "tie_word_embeddings": true, "max_position_embeddings": 32768,
            "use_sliding_window": false, "sliding_window": 32768, "hidden_act": "silu",
            "vision_start_token_id": 151652, "vision_end_token_id": 151653,
            "image_token_id": 151655, "video_token_id": 151656,
            "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
            "vision_config": {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16,
            "in_chans": 3, "hidden_size": 1536, "patch_size": 14, "spatial_merge_size": 2,
            "spatial_patch_size": 14, "temporal_patch_size": 2}}"#;
        let c = Qwen2VlConfig::from_json(published).unwrap();
        assert_eq!(c.text.head_dim, 128);
        assert_eq!(c.mrope_section, [16, 24, 24]);
        assert!(c.text.qkv_bias && c.text.tie_word_embeddings);
        assert_eq!((c.text.rope_theta, c.image_token_id), (1e6, 151_655));
        // The same as transformers 5 saves it: text fields nested, rope_parameters.
        let v = &c.vision;
        assert_eq!((v.mlp_dim, v.patch_len(), v.num_heads), (5120, 1176, 16));
        let nested = r#"{"model_type": "qwen2_vl", "tie_word_embeddings": true,
            "vision_config": {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16,
            "in_channels": 3, "hidden_size": 1536, "patch_size": 14, "spatial_merge_size": 2,
            "temporal_patch_size": 2, "hidden_act": "quick_gelu",
            "rope_parameters": {"rope_theta": 10000.0, "rope_type": "axial"}},
            "image_token_id": 151655, "text_config": {"model_type": "qwen2_vl_text",
            "hidden_size": 1536, "intermediate_size": 8960, "num_attention_heads": 12,
            "num_hidden_layers": 28, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
            "vocab_size": 151936, "max_position_embeddings": 32768,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0,
            "mrope_section": [16, 24, 24]}}}"#;
        assert_eq!(Qwen2VlConfig::from_json(nested).unwrap(), c);
        // Sections that do not split the head, sliding windows and other RoPE kinds are refused.
        for (from, to) in [
            ("[16, 24, 24]", "[16, 24, 16]"),
            (
                r#""use_sliding_window": false"#,
                r#""use_sliding_window": true"#,
            ),
            (r#""type": "mrope""#, r#""type": "yarn""#),
            (r#""model_type": "qwen2_vl""#, r#""model_type": "qwen3_vl""#),
        ] {
            assert!(
                Qwen2VlConfig::from_json(&published.replace(from, to)).is_err(),
                "{to}"
            );
        }
    }

    #[test]
    fn reads_qwen2_5_vl_as_published() {
        // Qwen2.5-VL-3B-Instruct's shapes: the tower's width is `hidden_size` there, its output
        // `out_hidden_size`, and most blocks attend within windows.
        let published = r#"{"model_type": "qwen2_5_vl", "hidden_size": 2048,
            "intermediate_size": 11008, "num_attention_heads": 16, "num_hidden_layers": 36,
            "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
            "vocab_size": 151936, "tie_word_embeddings": true, "hidden_act": "silu",
            "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
            "vision_config": {"depth": 32, "hidden_act": "silu", "hidden_size": 1280,
            "intermediate_size": 3420, "num_heads": 16, "in_chans": 3, "out_hidden_size": 2048,
            "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
            "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2}}"#;
        let c = Qwen2VlConfig::from_json(published).unwrap();
        let v = &c.vision;
        assert_eq!(v.kind, VisionKind::Qwen25Vl);
        assert_eq!((v.embed_dim, v.hidden_size, v.mlp_dim), (1280, 2048, 3420));
        assert_eq!(
            (v.window_size, &v.fullatt_block_indexes[..]),
            (112, &[7, 15, 23, 31][..])
        );
        assert_eq!(c.text.head_dim, 128);
        // A full-attention block past the last is refused, as is a merger unlike the text width.
        for (from, to) in [
            ("[7, 15, 23, 31]", "[7, 15, 23, 32]"),
            (r#""out_hidden_size": 2048"#, r#""out_hidden_size": 1024"#),
        ] {
            assert!(
                Qwen2VlConfig::from_json(&published.replace(from, to)).is_err(),
                "{to}"
            );
        }
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
        let err = ModelConfig::from_json(r#"{"model_type":"gemma3"}"#).unwrap_err();
        assert!(err.to_string().contains("model_type"), "{err}");
        assert!(err.to_string().contains("gemma3"), "{err}");

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
