//! The files a model is made of, as bytes and strings: a published Hugging Face folder
//! (config, tokenizer, templates, processor settings, safetensors) or one llama.cpp GGUF file.
//! The browser fills a [`ModelFiles`] from downloads; native code from a path.

#[cfg(not(target_arch = "wasm32"))]
use crate::error::Error;
use crate::error::Result;
use crate::weights::gguf::Gguf;

/// Where the weights come from.
pub enum Weights {
    /// One or more safetensors buffers (a sharded checkpoint gives several).
    Safetensors(Vec<Vec<u8>>),
    /// A llama.cpp GGUF file (text model).
    Gguf(Vec<u8>),
}

/// Everything needed to build an [`crate::Engine`].
pub struct ModelFiles {
    pub config_json: String,
    pub weights: Weights,
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
    /// A GGUF text model: config, tokenizer and chat template come from its metadata.
    pub fn from_gguf(bytes: Vec<u8>) -> Result<Self> {
        let gguf = Gguf::parse(&bytes)?;
        let config = gguf.llama_hf_config()?;
        let tokenizer = gguf.hf_tokenizer_json()?;
        // The template refers to bos/eos by text; give it the GGUF's own tokens.
        let token_text = |key: &str| -> Option<String> {
            let id = config.get(key)?.as_u64()? as usize;
            let vocab = tokenizer.get("model")?.get("vocab")?.as_object()?;
            vocab
                .iter()
                .find(|(_, v)| v.as_u64() == Some(id as u64))
                .map(|(k, _)| k.clone())
        };
        let tokenizer_config = serde_json::json!({
            "bos_token": token_text("bos_token_id"),
            "eos_token": token_text("eos_token_id"),
        });
        let chat_template = gguf.chat_template().map(str::to_string);
        Ok(Self {
            config_json: config.to_string(),
            tokenizer_json: Some(tokenizer.to_string()),
            tokenizer_config_json: Some(tokenizer_config.to_string()),
            chat_template,
            chat_template_json: None,
            preprocessor_config_json: None,
            processor_config_json: None,
            generation_config_json: None,
            weights: Weights::Gguf(bytes),
        })
    }

    /// A model folder or a `.gguf` file on disk.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_path(path: &std::path::Path) -> Result<Self> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|source| Error::Io {
                path: p.display().to_string(),
                source,
            })
        };
        if path.is_file() {
            return Self::from_gguf(read(path)?);
        }
        if !path.is_dir() {
            return Err(Error::Io {
                path: path.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such model folder or file",
                ),
            });
        }
        let text = |name: &str| -> Result<Option<String>> {
            let p = path.join(name);
            if !p.exists() {
                return Ok(None);
            }
            let bytes = read(&p)?;
            String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| Error::config(name, "not UTF-8 text"))
        };
        let config_json =
            text("config.json")?.ok_or_else(|| Error::MissingFile("config.json".into()))?;
        let mut shards: Vec<std::path::PathBuf> = std::fs::read_dir(path)
            .map_err(|source| Error::Io {
                path: path.display().to_string(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            // `model.safetensors` or the shards `model-00001-of-00002.safetensors`.
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("model") && n.ends_with(".safetensors"))
            })
            .collect();
        shards.sort();
        let weights = if !shards.is_empty() {
            Weights::Safetensors(shards.iter().map(|p| read(p)).collect::<Result<_>>()?)
        } else {
            let gguf = std::fs::read_dir(path).ok().and_then(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .find(|p| p.extension().is_some_and(|x| x == "gguf"))
            });
            match gguf {
                Some(p) => Weights::Gguf(read(&p)?),
                None => return Err(Error::MissingFile("model.safetensors".into())),
            }
        };
        Ok(Self {
            config_json,
            weights,
            tokenizer_json: text("tokenizer.json")?,
            tokenizer_config_json: text("tokenizer_config.json")?,
            // transformers 5 saves the template as plain Jinja next to the JSON files.
            chat_template: text("chat_template.jinja")?,
            chat_template_json: text("chat_template.json")?,
            preprocessor_config_json: text("preprocessor_config.json")?,
            processor_config_json: text("processor_config.json")?,
            generation_config_json: text("generation_config.json")?,
        })
    }
}
