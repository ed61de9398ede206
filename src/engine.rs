//! The engine: a loaded model with its tokenizer, chat template and image processor, turning
//! images and words into text.

use crate::config::{
    processor_image_seq_len, GenerationConfig, Idefics3Config, ModelConfig, Qwen2VlConfig,
};
use crate::error::{Error, Result};
use crate::files::{Checkpoint, ModelFiles};
use crate::generate::{decode_loop, Flow, SamplingOptions};
use crate::models::linear::is_cpu;
use crate::models::llama::{KvCache, Llama};
use crate::models::qwen2_vl::Qwen2Vl;
use crate::models::smolvlm::SmolVlm;
use crate::preprocess::qwen2_vl::{Patches, Qwen2VlImageConfig};
use crate::preprocess::{self, ImageProcessorConfig, ProcessedImage, Tiles};
use crate::prompt::{find_chat_template, ContentStyle, ImageLayout, Prompter};
use crate::weights::Precision;
use crate::weights::{Loader, WeightSet};
use burn_tensor::{Device, Tensor};
use image::RgbImage;

/// The default caption request.
pub const DEFAULT_PROMPT: &str = "Describe this image in one or two sentences.";

/// The system prompt of DataFlow's `ImageCaptionGenerate`, word for word (its grammar too).
pub const DATAFLOW_SYSTEM: &str = "You are a image caption generator. Your task is to generate a \
                                   concise and informative caption for the given image content.";
/// The user prompt of DataFlow's `ImageCaptionGenerate`. DataFlow writes it after a literal
/// `<image>\n`, which is the image's place, not text: the image goes first here as well.
pub const DATAFLOW_PROMPT: &str = "Please provide a comprehensive description of the image.";

/// Another tool's words, so that a pipeline moved here asks what it asked before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// DataFlow's `ImageCaptionGenerate`: its system and user prompts. Its sampling
    /// (temperature 0.7, top-p 0.9, 512 new tokens) is the default already.
    Dataflow,
}

impl Preset {
    /// A preset by the name the CLI, the page and the JS API give it (`dataflow`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "dataflow" => Some(Self::Dataflow),
            _ => None,
        }
    }

    pub fn system(self) -> &'static str {
        match self {
            Self::Dataflow => DATAFLOW_SYSTEM,
        }
    }

    pub fn prompt(self) -> &'static str {
        match self {
            Self::Dataflow => DATAFLOW_PROMPT,
        }
    }
}

/// One generation request.
#[derive(Debug, Clone)]
pub struct Request {
    pub prompt: String,
    pub system: Option<String>,
    pub sampling: SamplingOptions,
    /// Overrides SmolVLM's `size.longest_edge` (smaller is faster: fewer tiles); for Qwen2-VL,
    /// holds images to its square in pixels (`max_pixels`).
    pub longest_edge: Option<u32>,
}

impl Request {
    /// The request with a preset's prompts in place of its own.
    pub fn with_preset(self, preset: Preset) -> Self {
        Self {
            prompt: preset.prompt().to_string(),
            system: Some(preset.system().to_string()),
            ..self
        }
    }
}

impl Default for Request {
    fn default() -> Self {
        Self {
            prompt: DEFAULT_PROMPT.to_string(),
            system: None,
            sampling: SamplingOptions::default(),
            longest_edge: None,
        }
    }
}

/// What a generation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The decoded new tokens, special tokens skipped, trimmed.
    pub text: String,
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
}

/// An image of a prompt that could not be decoded or preprocessed.
#[derive(Debug)]
pub struct ImageFailure {
    /// Its place among the prompt's images, from 0.
    pub index: usize,
    pub error: Error,
}

enum Backbone {
    Vlm(Box<SmolVlm>),
    Text(Box<Llama>),
    Qwen2Vl(Box<Qwen2Vl>),
}

impl Backbone {
    /// The model `config` names, from `weights`; every missing, unexpected or mis-shaped tensor
    /// is reported at once.
    fn load(
        config: &ModelConfig,
        weights: WeightSet,
        device: &Device,
        precision: Precision,
    ) -> Result<Self> {
        let mut loader = Loader::with_precision(weights, device, precision);
        let backbone = match config {
            ModelConfig::Idefics3(c) => Backbone::Vlm(Box::new(SmolVlm::load(&mut loader, c))),
            ModelConfig::Llama(c) => {
                Backbone::Text(Box::new(Llama::load(&mut loader, "model", "lm_head", c)))
            }
            ModelConfig::Qwen2Vl(c) => Backbone::Qwen2Vl(Box::new(Qwen2Vl::load(&mut loader, c)?)),
        };
        loader.finish()?;
        Ok(backbone)
    }
}

/// The tokenizer and the model's own chat template.
fn prompter(files: &ModelFiles, config: &ModelConfig) -> Result<Prompter> {
    let tokenizer_json = files
        .tokenizer_json
        .as_deref()
        .ok_or_else(|| Error::MissingFile("tokenizer.json".into()))?;
    let template = match &files.chat_template {
        Some(t) => t.clone(),
        None => find_chat_template(
            files.chat_template_json.as_deref(),
            files.tokenizer_config_json.as_deref(),
        )?
        .ok_or_else(|| {
            Error::MissingFile(
                "chat_template.json (or a chat_template in tokenizer_config.json)".into(),
            )
        })?,
    };
    let style = match config {
        ModelConfig::Idefics3(_) | ModelConfig::Qwen2Vl(_) => ContentStyle::Items,
        ModelConfig::Llama(_) => ContentStyle::Text,
    };
    Prompter::new(
        tokenizer_json,
        template,
        files.tokenizer_config_json.as_deref(),
        style,
    )
}

/// A vision model's image processor, as its folder sets it.
enum ImageProcessor {
    Idefics3(ImageProcessorConfig),
    Qwen2Vl(Qwen2VlImageConfig),
}

/// A vision model's image processor settings, checked against what its vision tower takes.
fn image_processor(files: &ModelFiles, config: &ModelConfig) -> Result<Option<ImageProcessor>> {
    match config {
        ModelConfig::Idefics3(c) => Ok(Some(ImageProcessor::Idefics3(idefics3_processor(
            files, c,
        )?))),
        ModelConfig::Qwen2Vl(c) => Ok(Some(ImageProcessor::Qwen2Vl(qwen2_vl_processor(files, c)?))),
        ModelConfig::Llama(_) => Ok(None),
    }
}

/// Qwen2-VL's processor settings: `processor_config.json`'s `image_processor` (as transformers
/// 5 saves a processor), else `preprocessor_config.json` (the published folders). Its patches
/// must be the vision tower's patches, and its merge the merger's.
fn qwen2_vl_processor(files: &ModelFiles, c: &Qwen2VlConfig) -> Result<Qwen2VlImageConfig> {
    let nested = match files.processor_config_json.as_deref() {
        Some(text) => serde_json::from_str::<serde_json::Value>(text)
            .map_err(|e| Error::config("processor_config.json", e.to_string()))?
            .get("image_processor")
            .map(|v| v.to_string()),
        None => None,
    };
    let (file, text) = match (&nested, files.preprocessor_config_json.as_deref()) {
        (Some(text), _) => ("processor_config.json", text.as_str()),
        (None, Some(text)) => ("preprocessor_config.json", text),
        (None, None) => return Err(Error::MissingFile("preprocessor_config.json".into())),
    };
    let cfg = Qwen2VlImageConfig::from_preprocessor_json(text)
        .map_err(|e| Error::config(file, e.to_string()))?;
    let v = &c.vision;
    for (key, ours, tower) in [
        ("patch_size", cfg.patch_size, v.patch_size),
        (
            "temporal_patch_size",
            cfg.temporal_patch_size,
            v.temporal_patch_size,
        ),
        ("merge_size", cfg.merge_size, v.spatial_merge_size),
    ] {
        if ours as usize != tower {
            return Err(Error::config(
                file,
                format!("{key} is {ours} but the vision tower's is {tower} (config.json: vision_config)"),
            ));
        }
    }
    Ok(cfg)
}

/// Idefics3's processor settings, checked against the model's tokens per tile.
fn idefics3_processor(files: &ModelFiles, c: &Idefics3Config) -> Result<ImageProcessorConfig> {
    let cfg = ImageProcessorConfig::from_files(
        files.processor_config_json.as_deref(),
        files.preprocessor_config_json.as_deref(),
    )?
    .ok_or_else(|| Error::MissingFile("preprocessor_config.json".into()))?;
    // Every tile the processor makes is M x M; the vision tower's position table and the
    // connector's tokens per tile hold for its `image_size` only (a 32 px tile on a 64 px
    // tower read past the position table).
    let tile = cfg.max_image_size.longest_edge as usize;
    if tile != c.vision.image_size {
        let nested = files
            .processor_config_json
            .as_deref()
            .map(ImageProcessorConfig::from_processor_json);
        let source = match nested {
            Some(Ok(Some(_))) => "processor_config.json",
            _ => "preprocessor_config.json",
        };
        return Err(Error::config(
            source,
            format!(
                "max_image_size.longest_edge is {tile} but the vision tower takes tiles of {} px (config.json: vision_config.image_size)",
                c.vision.image_size
            ),
        ));
    }
    if let Some(text) = files.processor_config_json.as_deref() {
        if let Some(n) = processor_image_seq_len(text)? {
            if n != c.image_seq_len() {
                return Err(Error::config(
                    "processor_config.json",
                    format!(
                        "image_seq_len is {n} but the model config gives {} tokens per tile",
                        c.image_seq_len()
                    ),
                ));
            }
        }
    }
    Ok(cfg)
}

/// Tokens that end a generation: `generation_config.json`'s and `config.json`'s end-of-sequence
/// ids, and the turn ends of the chat templates we know.
fn stop_tokens(files: &ModelFiles, prompter: &Prompter) -> Result<Vec<u32>> {
    let generation = match files.generation_config_json.as_deref() {
        Some(text) => GenerationConfig::from_json(text)?,
        None => GenerationConfig::default(),
    };
    let mut stop_tokens = generation.eos_token_ids;
    for id in GenerationConfig::from_model_config_json(&files.config_json)?.eos_token_ids {
        if !stop_tokens.contains(&id) {
            stop_tokens.push(id);
        }
    }
    // SmolVLM ends its turns with <end_of_utterance>, chat models with <|im_end|>.
    for token in ["<end_of_utterance>", "<|im_end|>"] {
        if let Some(id) = prompter.token_id(token) {
            if !stop_tokens.contains(&id) {
                stop_tokens.push(id);
            }
        }
    }
    Ok(stop_tokens)
}

/// Qwen2-VL's prompt names its image pads by text and the model finds them by id: the two
/// must agree, or every caption would fail for want of pads.
fn check_image_token(prompter: &Prompter, config: &ModelConfig) -> Result<()> {
    let ModelConfig::Qwen2Vl(c) = config else {
        return Ok(());
    };
    match prompter.token_id("<|image_pad|>") {
        Some(id) if id == c.image_token_id => Ok(()),
        found => Err(Error::config(
            "tokenizer.json",
            format!(
                "<|image_pad|> is {found:?} but config.json's image_token_id is {}",
                c.image_token_id
            ),
        )),
    }
}

fn other_models_image() -> Error {
    Error::Invalid("the image was preprocessed for another model family".into())
}

/// SmolVLM's tiles of each image.
fn tiles(images: &[ProcessedImage]) -> Result<Vec<&Tiles>> {
    images
        .iter()
        .map(|image| match image {
            ProcessedImage::Tiles(t) => Ok(t),
            ProcessedImage::Patches(_) => Err(other_models_image()),
        })
        .collect()
}

/// Qwen2-VL's patches of each image.
fn patches(images: &[ProcessedImage]) -> Result<Vec<&Patches>> {
    images
        .iter()
        .map(|image| match image {
            ProcessedImage::Patches(p) => Ok(p),
            ProcessedImage::Tiles(_) => Err(other_models_image()),
        })
        .collect()
}

/// A model ready to caption or chat.
pub struct Engine {
    device: Device,
    backbone: Backbone,
    prompter: Prompter,
    image_processor: Option<ImageProcessor>,
    stop_tokens: Vec<u32>,
    config: ModelConfig,
    precision: Precision,
}

impl Engine {
    /// Builds the model on `device` from its files at the default precision (`auto`: as the
    /// files have it on the CPU, float matrices packed as Q8_0 on a GPU). Every inconsistency
    /// between config and weights is reported before anything runs.
    pub fn load(files: ModelFiles, device: &Device) -> Result<Self> {
        Self::load_with(files, device, Precision::Auto)
    }

    /// Like [`Engine::load`], holding the matrices as `precision` says (as it means on
    /// `device`: [`Precision::on`]): a bf16 safetensors folder can be quantized to Q8_0/Q4_0 as
    /// it loads, and a GGUF's blocks stay packed.
    pub fn load_with(mut files: ModelFiles, device: &Device, precision: Precision) -> Result<Self> {
        let precision = precision.on(!is_cpu(device));
        let config = ModelConfig::from_json_of(files.config_source, &files.config_json)?;
        let checkpoint =
            std::mem::replace(&mut files.checkpoint, Checkpoint::Safetensors(Vec::new()));
        let weights = WeightSet::from_files(checkpoint, precision)?;
        let backbone = Backbone::load(&config, weights, device, precision)?;
        let prompter = prompter(&files, &config)?;
        check_image_token(&prompter, &config)?;
        let image_processor = image_processor(&files, &config)?;
        let stop_tokens = stop_tokens(&files, &prompter)?;
        Ok(Self {
            device: device.clone(),
            backbone,
            prompter,
            image_processor,
            stop_tokens,
            config,
            precision,
        })
    }

    /// The precision the weights were loaded at, as it applies on this device (`auto` on a GPU
    /// is [`Precision::Packed`]).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The bytes the GPU's allocator has handed out (weights, and any activations alive);
    /// `None` on the CPU.
    pub fn gpu_bytes_in_use(&self) -> Option<u64> {
        if is_cpu(&self.device) {
            return None;
        }
        self.device.memory_pool_usage().map(|u| u.bytes_in_use)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn prompter(&self) -> &Prompter {
        &self.prompter
    }

    pub fn stop_tokens(&self) -> &[u32] {
        &self.stop_tokens
    }

    pub fn accepts_images(&self) -> bool {
        matches!(self.backbone, Backbone::Vlm(_) | Backbone::Qwen2Vl(_))
    }

    pub(crate) fn text_only() -> Error {
        Error::Invalid("this is a text-only model; it cannot take images".into())
    }

    /// The text decoder (of the VLM, or the whole model for a text-only checkpoint).
    pub fn text_model(&self) -> &Llama {
        match &self.backbone {
            Backbone::Vlm(m) => m.text(),
            Backbone::Text(m) => m,
            Backbone::Qwen2Vl(m) => m.decoder(),
        }
    }

    /// Decodes and preprocesses one encoded image (JPEG, PNG, WebP, GIF, BMP, TIFF, ICO).
    pub fn preprocess(
        &self,
        image_bytes: &[u8],
        longest_edge: Option<u32>,
    ) -> Result<ProcessedImage> {
        self.image_processor.as_ref().ok_or_else(Self::text_only)?;
        let image = preprocess::decode_image(image_bytes)?;
        self.preprocess_pixels(&image, longest_edge)
    }

    /// Preprocesses an image decoded elsewhere (see [`preprocess::rgb_from_rgba`]).
    /// `longest_edge` bounds SmolVLM's resize; for Qwen2-VL, which keeps each image's aspect,
    /// it bounds the pixels to `longest_edge²` (the processor's `max_pixels`).
    pub fn preprocess_pixels(
        &self,
        image: &RgbImage,
        longest_edge: Option<u32>,
    ) -> Result<ProcessedImage> {
        match self.image_processor.as_ref().ok_or_else(Self::text_only)? {
            ImageProcessor::Idefics3(cfg) => Ok(ProcessedImage::Tiles(preprocess::preprocess(
                image,
                cfg,
                longest_edge,
            )?)),
            ImageProcessor::Qwen2Vl(cfg) => Ok(ProcessedImage::Patches(
                preprocess::qwen2_vl::preprocess(image, &cfg.with_pixel_cap(longest_edge))?,
            )),
        }
    }

    /// Preprocesses the images of one prompt, in order; a failure says which image it was.
    pub fn preprocess_all(
        &self,
        images: &[&[u8]],
        longest_edge: Option<u32>,
    ) -> Result<Vec<ProcessedImage>, ImageFailure> {
        images
            .iter()
            .enumerate()
            .map(|(index, bytes)| {
                self.preprocess(bytes, longest_edge)
                    .map_err(|error| ImageFailure { index, error })
            })
            .collect()
    }

    /// The prompt's token ids for a request showing `images` (preprocessed by this engine),
    /// each expanded to the tokens its features take.
    pub fn prompt_ids(
        &self,
        system: Option<&str>,
        prompt: &str,
        images: &[ProcessedImage],
    ) -> Result<Vec<u32>> {
        let rendered = self.prompter.render(system, prompt, images.len())?;
        let text = match &self.config {
            ModelConfig::Idefics3(c) => {
                let layouts: Vec<ImageLayout> = tiles(images)?.iter().map(|t| t.layout()).collect();
                Prompter::expand_images(&rendered, &layouts, c.image_seq_len())?
            }
            ModelConfig::Qwen2Vl(c) => {
                let merge = c.vision.spatial_merge_size as u32;
                let pads: Vec<usize> = patches(images)?.iter().map(|p| p.tokens(merge)).collect();
                Prompter::expand_image_pads(&rendered, &pads)?
            }
            ModelConfig::Llama(_) => rendered,
        };
        self.prompter.encode(&text)
    }

    /// SmolVLM's vision tower output for a preprocessed image, `[tiles, patches, vision_hidden]`.
    pub fn vision_features(&self, image: &ProcessedImage) -> Result<Tensor<3>> {
        match (&self.backbone, image) {
            (Backbone::Vlm(m), ProcessedImage::Tiles(t)) => Ok(m.vision_features(t)),
            _ => Err(Error::Invalid(
                "vision_features is SmolVLM's (its tiles before the connector)".into(),
            )),
        }
    }

    /// The features that take an image's place in the prompt: `[tiles, image_seq_len,
    /// text_hidden]` from SmolVLM's connector, `[1, tokens, text_hidden]` from Qwen2-VL's merger.
    pub fn image_features(&self, image: &ProcessedImage) -> Result<Tensor<3>> {
        match (&self.backbone, image) {
            (Backbone::Vlm(m), ProcessedImage::Tiles(t)) => Ok(m.image_features(t)),
            (Backbone::Qwen2Vl(m), ProcessedImage::Patches(p)) => {
                Ok(m.image_features(p)?.unsqueeze_dim(0))
            }
            (Backbone::Text(_), _) => Err(Self::text_only()),
            _ => Err(other_models_image()),
        }
    }

    /// Runs the prompt (with the images' features in place of their `<image>` tokens) and
    /// returns the logits of its last position and the filled KV cache.
    pub fn prefill(&self, ids: &[u32], images: &[ProcessedImage]) -> Result<(Tensor<1>, KvCache)> {
        let text = self.text_model();
        if let Some(&bad) = ids
            .iter()
            .find(|&&id| id as usize >= text.config().vocab_size)
        {
            return Err(Error::Invalid(format!(
                "token id {bad} is outside the model's vocabulary"
            )));
        }
        let mut cache = text.new_cache();
        let logits = match &self.backbone {
            Backbone::Vlm(vlm) => vlm.prefill(ids, &tiles(images)?, &mut cache)?,
            Backbone::Qwen2Vl(model) => {
                // The cache comes back shifted to where the tokens after the prompt go.
                let prefilled = model.prefill(ids, &patches(images)?)?;
                return Ok((prefilled.logits, prefilled.cache));
            }
            Backbone::Text(_) if !images.is_empty() => return Err(Self::text_only()),
            Backbone::Text(model) => {
                let hidden = model.forward_embeds(model.embed(ids), &mut cache);
                model.last_logits(hidden)
            }
        };
        Ok((logits, cache))
    }

    /// Generates from an already tokenized prompt and preprocessed images. `on_text` receives
    /// each new piece of decoded text as it is produced and may stop the generation.
    pub async fn generate_from(
        &self,
        ids: &[u32],
        images: &[ProcessedImage],
        sampling: &SamplingOptions,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation> {
        sampling.validate()?;
        // Positions past the trained context would be extrapolated RoPE: refuse the prompt, and
        // cut the answer where the context ends.
        let context = self.text_model().config().max_position_embeddings;
        if ids.len() >= context {
            return Err(Error::Invalid(format!(
                "the prompt is {} tokens but the model's context holds {context}; use fewer or smaller images (a lower longest edge)",
                ids.len()
            )));
        }
        let mut sampling = sampling.clone();
        sampling.max_new_tokens = sampling.max_new_tokens.min(context - ids.len());
        let sampling = &sampling;
        let (logits, mut cache) = self.prefill(ids, images)?;
        let tokens = self
            .decode(logits, &mut cache, &self.stop_tokens, sampling, on_text)
            .await?;
        let text = self.prompter.decode(&tokens)?.trim().to_string();
        Ok(Generation {
            text,
            tokens,
            prompt_tokens: ids.len(),
        })
    }

    /// The decode loop as every caption and answer runs it, from a prefilled prompt's `logits`:
    /// sampling, stop tokens (`stop`: the engine's own, or none for a fixed length) and the
    /// text streamed to `on_text`. `captioner bench` times this very function.
    pub async fn decode(
        &self,
        logits: Tensor<1>,
        cache: &mut KvCache,
        stop: &[u32],
        sampling: &SamplingOptions,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Vec<u32>> {
        // The tokenizer's own incremental decoder: each step costs one token's worth of work and
        // holds text back until a byte-level piece completes a character.
        let mut stream = self.prompter.tokenizer().decode_stream(true);
        let mut on_token = |id: u32| match stream.step(id) {
            Ok(Some(piece)) => on_text(&piece),
            _ => Flow::Continue,
        };
        decode_loop(
            self.text_model(),
            logits,
            cache,
            stop,
            sampling,
            &mut on_token,
        )
        .await
    }

    /// Captions one or more images (all shown in one prompt, in order).
    pub async fn caption_async(
        &self,
        images: &[&[u8]],
        request: &Request,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation> {
        if images.is_empty() {
            return Err(Error::Invalid("no image to caption".into()));
        }
        let processed = self
            .preprocess_all(images, request.longest_edge)
            .map_err(|failure| failure.error)?;
        self.caption_processed(
            &processed,
            request.system.as_deref(),
            &request.prompt,
            &request.sampling,
            on_text,
        )
        .await
    }

    /// Captions already preprocessed images (shown together, in order) with `prompt`.
    pub async fn caption_processed(
        &self,
        images: &[ProcessedImage],
        system: Option<&str>,
        prompt: &str,
        sampling: &SamplingOptions,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation> {
        let ids = self.prompt_ids(system, prompt, images)?;
        self.generate_from(&ids, images, sampling, on_text).await
    }

    /// Answers a text prompt (no image) through the chat template.
    pub async fn chat_async(
        &self,
        request: &Request,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation> {
        let ids = self.prompt_ids(request.system.as_deref(), &request.prompt, &[])?;
        self.generate_from(&ids, &[], &request.sampling, on_text)
            .await
    }

    /// Blocking [`Engine::caption_async`] for native callers.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn caption(
        &self,
        images: &[&[u8]],
        request: &Request,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation> {
        pollster::block_on(self.caption_async(images, request, on_text))
    }

    /// Blocking [`Engine::chat_async`] for native callers.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn chat(
        &self,
        request: &Request,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation> {
        pollster::block_on(self.chat_async(request, on_text))
    }
}
