//! A GGUF text model read as the files of a published Hugging Face folder: `config.json`,
//! `tokenizer.json`, the bos/eos of `tokenizer_config.json` and the chat template, all from its
//! metadata, so that everything after loading sees one kind of model folder. (A pair adds the
//! vision half: `pair::pair_files`.)

use super::{Gguf, Result};
use crate::files::gguf::GgufFile;
use crate::files::{Checkpoint, ModelFiles};
use serde_json::Value;

/// What a text GGUF's metadata gives, as JSON values (a pair still adds to the config).
pub(super) struct TextFiles {
    pub config: Value,
    pub tokenizer: Value,
    pub tokenizer_config: Value,
    pub chat_template: Option<String>,
}

impl Gguf {
    pub(super) fn text_files(&self) -> Result<TextFiles> {
        let config = self.llama_hf_config()?;
        let tokenizer = self.hf_tokenizer_json()?;
        // The template refers to bos/eos by text; give it the GGUF's own tokens.
        let token_text = |key: &str| -> Option<String> {
            let id = config.get(key)?.as_u64()?;
            let vocab = tokenizer.get("model")?.get("vocab")?.as_object()?;
            vocab
                .iter()
                .find(|(_, v)| v.as_u64() == Some(id))
                .map(|(k, _)| k.clone())
        };
        let tokenizer_config = serde_json::json!({
            "bos_token": token_text("bos_token_id"),
            "eos_token": token_text("eos_token_id"),
        });
        Ok(TextFiles {
            chat_template: self.chat_template().map(str::to_string),
            config,
            tokenizer,
            tokenizer_config,
        })
    }
}

impl TextFiles {
    /// The files as text, as a folder holds them, with `checkpoint`.
    pub(super) fn into_model_files(self, checkpoint: Checkpoint) -> ModelFiles {
        ModelFiles {
            config_json: self.config.to_string(),
            config_source: "the GGUF's metadata (read as a config.json)",
            tokenizer_json: Some(self.tokenizer.to_string()),
            tokenizer_config_json: Some(self.tokenizer_config.to_string()),
            chat_template: self.chat_template,
            chat_template_json: None,
            preprocessor_config_json: None,
            processor_config_json: None,
            generation_config_json: None,
            checkpoint,
        }
    }
}

/// A GGUF text model as [`ModelFiles`], its header parsed once (when `file` was read).
pub fn text_model_files(file: GgufFile) -> crate::Result<ModelFiles> {
    let parts = file.header.text_files()?;
    Ok(parts.into_model_files(Checkpoint::Gguf(file)))
}
