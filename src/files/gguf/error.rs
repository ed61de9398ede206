//! What can be wrong with a GGUF file, said with where.

use super::{GgmlType, MAX_ARRAY_DEPTH, MAX_ARRAY_VALUES, MAX_DIMS};

/// Everything that can go wrong reading a GGUF.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GgufError {
    #[error("not a GGUF file: it starts with {found:02x?}, not the magic \"GGUF\"")]
    BadMagic { found: Vec<u8> },
    #[error("this GGUF appears to be big-endian (version field {raw:#010x}); only little-endian files are supported")]
    BigEndian { raw: u32 },
    #[error("GGUF version {0} is not supported (supported: 2 and 3)")]
    UnsupportedVersion(u32),
    #[error("GGUF truncated: {what} needs {needed} bytes at offset {offset}, but the file ends at {len}")]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        len: u64,
    },
    #[error("{what} at offset {offset}: a count of {count} cannot fit in the {remaining} bytes that remain")]
    ImplausibleCount {
        what: String,
        offset: u64,
        count: u64,
        remaining: u64,
    },
    #[error("{what} at offset {offset}: {count} more array values than the {MAX_ARRAY_VALUES} any model's metadata needs in all")]
    TooManyValues {
        what: String,
        offset: u64,
        count: u64,
    },
    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 { what: String, offset: u64 },
    #[error("{what} at offset {offset} has unknown value type {value_type}")]
    UnknownValueType {
        what: String,
        offset: u64,
        value_type: u32,
    },
    #[error("{what} at offset {offset}: arrays nested deeper than {MAX_ARRAY_DEPTH} levels")]
    NestingTooDeep { what: String, offset: u64 },
    #[error("metadata key {0:?} appears more than once")]
    DuplicateKey(String),
    #[error("tensor {0:?} appears more than once")]
    DuplicateTensor(String),
    #[error("tensor {name:?} has {n_dims} dimensions; ggml allows at most {MAX_DIMS}")]
    BadDimCount { name: String, n_dims: u32 },
    #[error("tensor {name:?} has unknown ggml type {type_id}")]
    UnknownGgmlType { name: String, type_id: u32 },
    #[error("tensor {name:?}: shape {dims:?} has too many elements")]
    ShapeOverflow { name: String, dims: Vec<u64> },
    #[error("tensor {name:?}: its first dimension {ne0} is not a multiple of the {ggml_type} block size {block}")]
    BadRowSize {
        name: String,
        ggml_type: GgmlType,
        ne0: u64,
        block: u64,
    },
    #[error(
        "tensor {name:?}: data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    Misaligned {
        name: String,
        offset: u64,
        alignment: u64,
    },
    #[error("tensor {name:?}: its data [{start}, {end}) lies outside the {len}-byte file")]
    DataOutOfRange {
        name: String,
        start: u64,
        end: u64,
        len: u64,
    },
    #[error("general.alignment = {0} is not a power of two")]
    BadAlignment(u64),
    #[error("the bytes given ({given} bytes) are not the file that was parsed ({parsed} bytes)")]
    BytesMismatch { given: u64, parsed: u64 },
    #[error("tensor {name:?} has ggml type {ggml_type}, which this reader cannot dequantize (supported: {supported})")]
    UnsupportedType {
        name: String,
        ggml_type: GgmlType,
        supported: &'static str,
    },
    #[error("{}", crate::buffers::no_memory_message(.name, .shape))]
    NoMemory { name: String, shape: Vec<usize> },
    #[error("no tensor named {0:?}")]
    MissingTensor(String),
    #[error("metadata key {0:?} is missing")]
    MissingKey(String),
    #[error("metadata key {key:?}: expected {expected}, found {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("metadata key {key:?}: {detail}")]
    BadValue { key: String, detail: String },
    #[error("tensor {name:?}: {detail}")]
    BadTensor { name: String, detail: String },
    #[error("unexpected tensor(s) for a {architecture} model: {names:?}")]
    UnknownTensors {
        architecture: String,
        names: Vec<String>,
    },
    #[error("{0}")]
    Unsupported(String),
}

impl From<GgufError> for crate::Error {
    fn from(e: GgufError) -> Self {
        crate::Error::Gguf(Box::new(e))
    }
}
