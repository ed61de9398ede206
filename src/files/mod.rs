//! The files a model is made of, as bytes and strings: a published Hugging Face folder
//! (config, tokenizer, templates, processor settings, safetensors) or one llama.cpp GGUF file.
//! The browser fills a [`ModelFiles`] from downloads; native code from a path. A GGUF's header
//! is parsed once, as it is read ([`gguf`], the container format). Reading a model by name or
//! path (`ModelFiles::from_named`, `from_path`, `from_gguf`) turns GGUF metadata into a
//! folder's files, which takes knowing what the keys mean: that is `weights::model_files`.

pub mod gguf;

use gguf::GgufFile;

/// The weight files: where the tensors come from.
pub enum Checkpoint {
    /// One or more safetensors buffers (a sharded checkpoint gives several).
    Safetensors(Vec<Vec<u8>>),
    /// A llama.cpp GGUF file (text model), its header parsed.
    Gguf(GgufFile),
    /// A vision-language model as llama.cpp's GGUF pair: the text model and its `mmproj`.
    GgufPair { text: GgufFile, mmproj: GgufFile },
}

/// Everything needed to build an [`crate::Engine`].
pub struct ModelFiles {
    pub config_json: String,
    /// What `config_json` was read from, as errors about it say: a GGUF's is made from its
    /// metadata, so a bad value there is not blamed on a `config.json` the user never had.
    pub config_source: &'static str,
    pub checkpoint: Checkpoint,
    pub tokenizer_json: Option<String>,
    pub tokenizer_config_json: Option<String>,
    /// The chat template's text, or a `chat_template.json` / `tokenizer_config.json` to find it in.
    pub chat_template: Option<String>,
    pub chat_template_json: Option<String>,
    pub preprocessor_config_json: Option<String>,
    pub processor_config_json: Option<String>,
    pub generation_config_json: Option<String>,
}

impl ModelFiles {
    /// Bytes of the weight files (what a download mostly is).
    pub fn weights_bytes(&self) -> usize {
        match &self.checkpoint {
            Checkpoint::Safetensors(buffers) => buffers.iter().map(Vec::len).sum(),
            Checkpoint::Gguf(bytes) => bytes.len(),
            Checkpoint::GgufPair { text, mmproj } => text.len() + mmproj.len(),
        }
    }
}

/// The text files of a published model folder that a model may use.
pub const TEXT_FILES: [&str; 8] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "processor_config.json",
    "generation_config.json",
];

/// `model.safetensors` or a shard such as `model-00001-of-00002.safetensors`.
pub fn is_weights_shard(name: &str) -> bool {
    name.starts_with("model") && name.ends_with(".safetensors")
}

/// The bytes of the regular file at `path`; anything else (a device, FIFO or socket) is an
/// error before it is opened. `fs::read` sizes its buffer from the file's length and reports
/// a buffer it cannot get as an error, not an abort.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_regular(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a folder, where a file belongs",
        ));
    }
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a device, pipe or socket); a model's files must be files",
        ));
    }
    std::fs::read(path)
}
