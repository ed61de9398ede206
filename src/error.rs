//! One error type for the library. Every failure a user can cause (a bad model folder, a bad
//! image, a prompt that does not fit) is a value that says what went wrong and where.
//!
//! This module is the bottom of the crate: it knows no other module. A layer with an error type
//! of its own (`files::gguf::GgufError`, `preprocess::PreprocessError`) converts it into
//! [`Error`] where it is defined, and the typed value stays reachable as the source.

use thiserror::Error;

/// Everything that can go wrong in Captioner's library.
#[derive(Debug, Error)]
pub enum Error {
    /// A configuration file is missing a field, has a field of the wrong type, or is not JSON.
    #[error("{file}: {message}")]
    Config { file: String, message: String },

    /// A required file of a model folder is absent.
    #[error("model file `{0}` is missing")]
    MissingFile(String),

    /// The weights do not match what the configuration asks for.
    #[error("weights do not match the config: {0}")]
    Weights(String),

    /// Not the memory to hold a model's tensor: the model is too large for the machine or tab.
    #[error("{0}")]
    NoMemory(String),

    /// A safetensors buffer could not be parsed.
    #[error("safetensors: {0}")]
    Safetensors(String),

    /// A GGUF buffer could not be parsed (a `files::gguf::GgufError`).
    #[error("gguf: {0}")]
    Gguf(#[source] Cause),

    /// An image could not be decoded or preprocessed (a `preprocess::PreprocessError`).
    #[error("image: {0}")]
    Image(#[source] Cause),

    /// Tokenizer or chat-template failure.
    #[error("prompt: {0}")]
    Prompt(String),

    /// What went wrong with one file of several (the GGUF files of a pair), named.
    #[error("{file}: {source}")]
    InFile {
        file: String,
        #[source]
        source: Box<Error>,
    },

    /// A request that cannot be served as asked (e.g. an image given to a text-only model).
    #[error("{0}")]
    Invalid(String),

    /// The compute backend failed (a failed GPU read, for instance).
    #[error("backend: {0}")]
    Backend(String),

    /// Reading a file failed (native only).
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A lower layer's own error, kept typed for `downcast_ref`.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn config(file: &str, message: impl Into<String>) -> Self {
        Error::Config {
            file: file.to_string(),
            message: message.into(),
        }
    }
}
