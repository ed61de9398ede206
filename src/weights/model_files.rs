//! A model's files read by name (the browser's downloads or picks) or from a path: a published
//! Hugging Face folder, or a llama.cpp GGUF file or pair, whose metadata gives the config,
//! tokenizer and chat template. (The files themselves are `crate::files`, which knows no format.)

use super::gguf::folder::text_model_files;
use super::gguf::pair::pair_files;
use crate::error::{Error, Result};
use crate::files::gguf::GgufFile;
#[cfg(not(target_arch = "wasm32"))]
use crate::files::read_regular;
use crate::files::{is_weights_shard, Checkpoint, ModelFiles, TEXT_FILES};
use std::collections::BTreeMap;

impl ModelFiles {
    /// A GGUF text model: config, tokenizer and chat template come from its metadata.
    pub fn from_gguf(bytes: Vec<u8>) -> Result<Self> {
        text_model_files(GgufFile::parse(bytes)?)
    }

    /// A model from its files by name, as the browser has them (downloaded or picked): the
    /// published folder's files, or a lone `.gguf`. Folder prefixes are ignored and so are
    /// names a model does not use (README.md, onnx/, ...).
    pub fn from_named(files: impl IntoIterator<Item = (String, Vec<u8>)>) -> Result<Self> {
        let mut texts: BTreeMap<&'static str, String> = BTreeMap::new();
        let mut shards: Vec<(String, Vec<u8>)> = Vec::new();
        let mut ggufs = Vec::new();
        for (name, bytes) in files {
            let base = name.rsplit('/').next().unwrap_or(&name);
            if let Some(&known) = TEXT_FILES.iter().find(|k| **k == base) {
                let text =
                    String::from_utf8(bytes).map_err(|_| Error::config(known, "not UTF-8 text"))?;
                texts.insert(known, text);
            } else if is_weights_shard(base) {
                shards.push((base.to_string(), bytes));
            } else if base.ends_with(".gguf") {
                ggufs.push((base.to_string(), bytes));
            }
        }
        // Two GGUF files are a text model and its mmproj (architecture `clip`), in any order.
        // A damaged GGUF is named: with two of them, which one is which is the question.
        let parse = |(name, bytes): (String, Vec<u8>)| {
            GgufFile::parse(bytes)
                .map(|file| (name.clone(), file))
                .map_err(|e| Error::InFile {
                    file: name,
                    source: Box::new(e.into()),
                })
        };
        let gguf = match ggufs.len() {
            0 => None,
            // (parsed where it is used: a stray one beside safetensors is not read)
            1 => ggufs.pop(),
            2 => {
                if texts.contains_key("config.json") || !shards.is_empty() {
                    return Err(Error::Invalid(
                        "a folder holds either safetensors with config.json or a GGUF pair, not both"
                            .into(),
                    ));
                }
                let arch = |(_, f): &(String, GgufFile)| match f.header.architecture() {
                    Ok(a) => a.to_string(),
                    Err(_) => "without an architecture".into(),
                };
                let b = parse(ggufs.remove(1))?;
                let a = parse(ggufs.remove(0))?;
                let (text, mmproj) = match (arch(&a) == "clip", arch(&b) == "clip") {
                    (false, true) => (a, b),
                    (true, false) => (b, a),
                    _ => {
                        return Err(Error::Invalid(format!(
                            "two .gguf files must be a text model and its mmproj (architecture \"clip\"); {} is {}, {} is {}",
                            a.0,
                            arch(&a),
                            b.0,
                            arch(&b)
                        )))
                    }
                };
                // (pair_files says "the mmproj" for its errors; here it has a name)
                let mmproj_name = mmproj.0.clone();
                return pair_files(text.1, mmproj.1).map_err(|e| match e {
                    Error::InFile { source, .. } => Error::InFile {
                        file: mmproj_name,
                        source,
                    },
                    other => other,
                });
            }
            n => {
                return Err(Error::Invalid(format!(
                    "{n} .gguf files: give one GGUF text model, or a text model and its mmproj"
                )))
            }
        };
        // Shards load in name order: model-00001-of-00002 before model-00002-of-00002.
        shards.sort_by(|a, b| a.0.cmp(&b.0));
        let Some(config_json) = texts.remove("config.json") else {
            return match gguf {
                Some(named) if shards.is_empty() => text_model_files(parse(named)?.1),
                _ => Err(Error::MissingFile("config.json".into())),
            };
        };
        let checkpoint = match (shards.is_empty(), gguf) {
            (false, _) => Checkpoint::Safetensors(shards.into_iter().map(|(_, b)| b).collect()),
            (true, Some(named)) => Checkpoint::Gguf(parse(named)?.1),
            (true, None) => return Err(Error::MissingFile("model.safetensors".into())),
        };
        Ok(Self {
            config_json,
            config_source: "config.json",
            checkpoint,
            tokenizer_json: texts.remove("tokenizer.json"),
            tokenizer_config_json: texts.remove("tokenizer_config.json"),
            // transformers 5 saves the template as plain Jinja next to the JSON files.
            chat_template: texts.remove("chat_template.jinja"),
            chat_template_json: texts.remove("chat_template.json"),
            preprocessor_config_json: texts.remove("preprocessor_config.json"),
            processor_config_json: texts.remove("processor_config.json"),
            generation_config_json: texts.remove("generation_config.json"),
        })
    }

    /// A published folder's text files (config, tokenizer, settings; anything else named is
    /// ignored) with no weights yet: for writing a pack whose tensors come another way (a
    /// download converted as it streams, or made-up weights). The checkpoint is empty.
    pub fn folder_texts(files: impl IntoIterator<Item = (String, Vec<u8>)>) -> Result<Self> {
        let texts = files.into_iter().filter(|(name, _)| {
            let base = name.rsplit('/').next().unwrap_or(name);
            TEXT_FILES.contains(&base)
        });
        let none = ("model.safetensors".to_string(), Vec::new());
        let mut files = Self::from_named(texts.chain([none]))?;
        files.checkpoint = Checkpoint::Safetensors(Vec::new());
        Ok(files)
    }

    /// A model folder or a `.gguf` file on disk. Each file must be a regular file (or a link
    /// to one): a FIFO named `config.json` would block the load for ever, and a link to
    /// `/dev/zero` would be read until memory runs out.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_path(path: &std::path::Path) -> Result<Self> {
        let io = |p: &std::path::Path, source| Error::Io {
            path: p.display().to_string(),
            source,
        };
        if path.is_file() {
            return Self::from_gguf(read_regular(path).map_err(|e| io(path, e))?);
        }
        if !path.is_dir() {
            return Err(io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such model folder or file"),
            ));
        }
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| io(path, e))? {
            let p = entry.map_err(|e| io(path, e))?.path();
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if TEXT_FILES.contains(&name) || is_weights_shard(name) || name.ends_with(".gguf") {
                files.push((name.to_string(), read_regular(&p).map_err(|e| io(&p, e))?));
            }
        }
        Self::from_named(files)
    }
}
