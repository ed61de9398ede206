//! A reader for llama.cpp's GGUF files, from bytes in memory (the browser has no filesystem).
//!
//! It turns a GGUF into the pieces a Hugging Face checkpoint folder would hold:
//!
//! * [`Gguf::llama_hf_config`]: the `config.json` of a llama-architecture file;
//! * [`Gguf::llama_hf_tensors`]: every tensor under its Hugging Face Llama name, dequantized to
//!   f32, in PyTorch layout, with llama.cpp's reordering of the Q/K projection rows undone
//!   (or one at a time: [`Gguf::llama_hf_names`] and [`Gguf::llama_hf_tensor`]);
//! * [`Gguf::hf_tokenizer_json`]: a `tokenizer.json` for the embedded byte-level BPE tokenizer;
//! * [`Gguf::chat_template`]: the embedded chat template.
//!
//! Each of these reproduces what transformers does when it loads the same file with
//! `from_pretrained(..., gguf_file=...)`, so that a GGUF model behaves like transformers' reading of it.
//!
//! ## The file format (versions 2 and 3; all numbers little-endian)
//!
//! ```text
//! "GGUF"  u32 version  u64 tensor_count  u64 kv_count
//! kv_count    x { string key, u32 value_type, value }
//! tensor_count x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
//! padding to `general.alignment` (32 unless stated)
//! tensor data; each tensor at data_start + offset
//! ```
//!
//! A string is a u64 byte length and UTF-8 bytes; an array is a u32 element type, a u64 count
//! and the elements. `ne` lists dimensions innermost first (ggml order): a PyTorch `[out, in]`
//! matrix has `ne = [in, out]`.
//!
//! Dequantization covers F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K and
//! Q8_K, bit-identical to ggml's reference dequantizers (and gguf-py's); other types are
//! reported by name. `tools/check_gguf.py` checks all of this against gguf-py and transformers.
//!
//! Nothing here trusts the file: every count, length and offset is checked against the bytes
//! actually present before anything is allocated or read, and problems come back as a
//! [`GgufError`] that says what was wrong and where.

use super::{HostTensor, Stored};
use crate::quant::{BlockMatrix, QuantType};
use half::f16;
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

#[path = "gguf_tokenizer.rs"]
mod tokenizer;

/// The alignment of the tensor data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most this many dimensions.
const MAX_DIMS: u32 = 4;
/// Arrays of arrays deeper than this are refused (they only guard against stack exhaustion;
/// real files nest at most once).
const MAX_ARRAY_DEPTH: usize = 8;
/// Elements per block of the k-quants.
const QK_K: usize = 256;

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

type Result<T> = std::result::Result<T, GgufError>;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The GGUF name of this value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            GgufValue::U8(_) => "uint8",
            GgufValue::I8(_) => "int8",
            GgufValue::U16(_) => "uint16",
            GgufValue::I16(_) => "int16",
            GgufValue::U32(_) => "uint32",
            GgufValue::I32(_) => "int32",
            GgufValue::U64(_) => "uint64",
            GgufValue::I64(_) => "int64",
            GgufValue::F32(_) => "float32",
            GgufValue::F64(_) => "float64",
            GgufValue::Bool(_) => "bool",
            GgufValue::String(_) => "string",
            GgufValue::Array(_) => "array",
        }
    }

    /// Any integer type, when it is non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type, when it fits an i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::U64(v) => i64::try_from(v).ok(),
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// A float, widened to f64 (as Python reads a GGUF float32), or an integer.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A short description for error messages (arrays by element type and length).
    fn describe(&self) -> String {
        match self {
            GgufValue::Array(items) => match items.first() {
                Some(first) => format!("array of {} {}", items.len(), first.type_name()),
                None => "empty array".to_string(),
            },
            other => other.type_name().to_string(),
        }
    }
}

/// The ggml tensor types a GGUF can name (numbering from ggml.h). Only some can be
/// dequantized here; see [`GgmlType::is_supported`].
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
}

/// The types [`Gguf::tensor_f32`] can read, for messages.
const SUPPORTED_TYPES: &str =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, Q8_K";

impl GgmlType {
    pub fn from_id(id: u32) -> Option<GgmlType> {
        use GgmlType::*;
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            16 => IQ2_XXS,
            17 => IQ2_XS,
            18 => IQ3_XXS,
            19 => IQ1_S,
            20 => IQ4_NL,
            21 => IQ3_S,
            22 => IQ2_S,
            23 => IQ4_XS,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            29 => IQ1_M,
            30 => BF16,
            34 => TQ1_0,
            35 => TQ2_0,
            39 => MXFP4,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2_K => 10,
            Q3_K => 11,
            Q4_K => 12,
            Q5_K => 13,
            Q6_K => 14,
            Q8_K => 15,
            IQ2_XXS => 16,
            IQ2_XS => 17,
            IQ3_XXS => 18,
            IQ1_S => 19,
            IQ4_NL => 20,
            IQ3_S => 21,
            IQ2_S => 22,
            IQ4_XS => 23,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            IQ1_M => 29,
            BF16 => 30,
            TQ1_0 => 34,
            TQ2_0 => 35,
            MXFP4 => 39,
        }
    }

    /// `(elements per block, bytes per block)`, as in ggml's type traits.
    pub fn block_layout(self) -> (u64, u64) {
        use GgmlType::*;
        let k = QK_K as u64;
        match self {
            F32 | I32 => (1, 4),
            F16 | BF16 | I16 => (1, 2),
            I8 => (1, 1),
            F64 | I64 => (1, 8),
            Q4_0 | IQ4_NL => (32, 2 + 16),
            Q4_1 => (32, 2 + 2 + 16),
            Q5_0 => (32, 2 + 4 + 16),
            Q5_1 => (32, 2 + 2 + 4 + 16),
            Q8_0 => (32, 2 + 32),
            Q8_1 => (32, 4 + 4 + 32),
            Q2_K => (k, 2 + 2 + k / 16 + k / 4),
            Q3_K => (k, 2 + k / 4 + k / 8 + 12),
            Q4_K => (k, 2 + 2 + k / 2 + 12),
            Q5_K => (k, 2 + 2 + k / 2 + k / 8 + 12),
            Q6_K => (k, 2 + k / 2 + k / 4 + k / 16),
            Q8_K => (k, 4 + k + k / 8),
            IQ2_XXS => (k, 2 + k / 4),
            IQ2_XS => (k, 2 + k / 4 + k / 32),
            IQ3_XXS => (k, 2 + k / 4 + k / 8),
            IQ1_S => (k, 2 + k / 8 + k / 16),
            IQ3_S => (k, 2 + k / 4 + k / 8 + k / 32 + 4),
            IQ2_S => (k, 2 + k / 4 + k / 16),
            IQ4_XS => (k, 2 + 2 + k / 2 + k / 64),
            IQ1_M => (k, k / 8 + k / 16 + k / 32),
            TQ1_0 => (k, 2 + 4 * 13),
            TQ2_0 => (k, 2 + 64),
            MXFP4 => (32, 1 + 16),
        }
    }

    /// Whether [`Gguf::tensor_f32`] can dequantize this type.
    pub fn is_supported(self) -> bool {
        use GgmlType::*;
        matches!(
            self,
            F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q4_K | Q5_K | Q6_K | Q8_K
        )
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A named tensor in PyTorch layout: `(name, shape, row-major f32 values)`.
pub type HfTensor = (String, Vec<usize>, Vec<f32>);

/// One entry of the tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// Dimensions in ggml order (innermost first): the reverse of PyTorch's shape.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

impl GgufTensorInfo {
    /// The shape in PyTorch order (outermost first).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Number of elements (checked against overflow when the file was parsed).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |n, &d| n.saturating_mul(d))
    }

    /// Bytes of data (checked when the file was parsed).
    pub fn n_bytes(&self) -> u64 {
        let (block, size) = self.ggml_type.block_layout();
        (self.n_elements() / block).saturating_mul(size)
    }
}

/// A parsed GGUF header: metadata and tensor table. The tensor data stays in the caller's
/// bytes, which the data accessors take again (so no copy of the file is kept).
#[derive(Debug, Clone, PartialEq)]
pub struct Gguf {
    pub version: u32,
    /// Metadata in file order (keys are unique).
    pub metadata: Vec<(String, GgufValue)>,
    /// The tensor table in file order (names are unique).
    pub tensors: Vec<GgufTensorInfo>,
    /// Where the data section starts, from the start of the file.
    pub data_start: u64,
    /// The data section alignment (`general.alignment`, default 32).
    pub alignment: u64,
    /// Length of the parsed file; the data accessors check they are given the same bytes.
    pub file_len: u64,
}

// --------------------------------------------------------------------------------------------
// Parsing
// --------------------------------------------------------------------------------------------

/// A bounds-checked little-endian reader. `what` names the thing being read, for errors.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.pos as u64,
                needed: n,
                len: self.buf.len() as u64,
            });
        }
        let n = n as usize;
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items each taking at least `min_size` bytes: refused if the rest of the file
    /// could not hold them, which bounds every allocation by the file size.
    fn count(&mut self, min_size: u64, what: &dyn Fn() -> String) -> Result<u64> {
        let offset = self.pos as u64;
        let count = self.u64(what)?;
        let fits = count
            .checked_mul(min_size)
            .is_some_and(|bytes| bytes <= self.remaining());
        if !fits {
            return Err(GgufError::ImplausibleCount {
                what: what(),
                offset,
                count,
                remaining: self.remaining(),
            });
        }
        Ok(count)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.count(1, what)?;
        let offset = self.pos as u64;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 {
                what: what(),
                offset,
            }),
        }
    }

    /// A metadata value of GGUF value type `ty`.
    fn value(&mut self, ty: u32, depth: usize, what: &dyn Fn() -> String) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U8(u8::from_le_bytes(self.array(what)?)),
            1 => GgufValue::I8(i8::from_le_bytes(self.array(what)?)),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => GgufValue::U32(u32::from_le_bytes(self.array(what)?)),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => GgufValue::Bool(self.array::<1>(what)?[0] != 0),
            8 => GgufValue::String(self.string(what)?),
            9 => {
                let offset = self.pos as u64;
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::NestingTooDeep {
                        what: what(),
                        offset,
                    });
                }
                let elem_ty = self.u32(what)?;
                let min_size = match value_min_size(elem_ty) {
                    Some(size) => size,
                    None => {
                        return Err(GgufError::UnknownValueType {
                            what: format!("{} (array element type)", what()),
                            offset,
                            value_type: elem_ty,
                        })
                    }
                };
                let n = self.count(min_size, what)?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(elem_ty, depth + 1, what)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(u64::from_le_bytes(self.array(what)?)),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            other => {
                return Err(GgufError::UnknownValueType {
                    what: what(),
                    offset: self.pos.saturating_sub(4) as u64,
                    value_type: other,
                })
            }
        })
    }
}

/// The fewest bytes a value of GGUF type `ty` can take (None for an unknown type).
fn value_min_size(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,     // the length prefix of an empty string
        9 => 4 + 8, // element type and count of an empty array
        10..=12 => 8,
        _ => return None,
    })
}

impl Gguf {
    /// Parses the header (metadata and tensor table) of a GGUF file, versions 2 and 3, and
    /// checks that every tensor's data lies inside `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Gguf> {
        let mut r = Reader { buf: bytes, pos: 0 };
        if bytes.len() < 4 || &bytes[..4] != b"GGUF" {
            return Err(GgufError::BadMagic {
                found: bytes[..bytes.len().min(4)].to_vec(),
            });
        }
        r.pos = 4;
        let version = r.u32(&|| "the version".into())?;
        if version != 2 && version != 3 {
            // A big-endian file reads as a byte-swapped small version here.
            let swapped = version.swap_bytes();
            if (1..=3).contains(&swapped) {
                return Err(GgufError::BigEndian { raw: version });
            }
            return Err(GgufError::UnsupportedVersion(version));
        }
        // A tensor entry takes at least 8 (name) + 4 (n_dims) + 4 (type) + 8 (offset) bytes;
        // a metadata entry 8 (key) + 4 (type) + 1.
        let tensor_count = r.count(24, &|| "the tensor count".into())?;
        let kv_count = r.count(13, &|| "the metadata count".into())?;

        let mut metadata = Vec::with_capacity(kv_count as usize);
        let mut keys_seen = HashSet::with_capacity(kv_count as usize);
        for i in 0..kv_count {
            let key = r.string(&|| format!("the key of metadata entry {i}"))?;
            let what = || format!("metadata {key:?}");
            let ty = r.u32(&what)?;
            let value = r.value(ty, 0, &what)?;
            if !keys_seen.insert(key.clone()) {
                return Err(GgufError::DuplicateKey(key));
            }
            metadata.push((key, value));
        }

        let mut tensors = Vec::with_capacity(tensor_count as usize);
        let mut names_seen = HashSet::with_capacity(tensor_count as usize);
        for i in 0..tensor_count {
            let name = r.string(&|| format!("the name of tensor {i}"))?;
            let what = || format!("the table entry of tensor {name:?}");
            let n_dims = r.u32(&what)?;
            if n_dims > MAX_DIMS {
                return Err(GgufError::BadDimCount { name, n_dims });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64(&what)?);
            }
            let type_id = r.u32(&what)?;
            let offset = r.u64(&what)?;
            let Some(ggml_type) = GgmlType::from_id(type_id) else {
                return Err(GgufError::UnknownGgmlType { name, type_id });
            };
            if !names_seen.insert(name.clone()) {
                return Err(GgufError::DuplicateTensor(name));
            }
            tensors.push(GgufTensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }

        let mut gguf = Gguf {
            version,
            metadata,
            tensors,
            data_start: 0,
            alignment: DEFAULT_ALIGNMENT,
            file_len: bytes.len() as u64,
        };
        if let Some(value) = gguf.get("general.alignment") {
            let alignment = value.as_u64().ok_or_else(|| GgufError::WrongType {
                key: "general.alignment".into(),
                expected: "an unsigned integer",
                found: value.describe(),
            })?;
            if !alignment.is_power_of_two() {
                return Err(GgufError::BadAlignment(alignment));
            }
            gguf.alignment = alignment;
        }
        // The data section starts at the next multiple of the alignment. A file without tensors
        // may end right after its header, without the padding.
        let header_end = r.pos as u64;
        gguf.data_start = header_end.div_ceil(gguf.alignment) * gguf.alignment;
        for t in &gguf.tensors {
            gguf.check_tensor(t)?;
        }
        Ok(gguf)
    }

    /// Shape, block and bounds checks for one tensor (at parse time, so that the accessors can
    /// rely on them).
    fn check_tensor(&self, t: &GgufTensorInfo) -> Result<()> {
        let n = t
            .dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| usize::try_from(n).is_ok() && n.checked_mul(4).is_some())
            .ok_or_else(|| GgufError::ShapeOverflow {
                name: t.name.clone(),
                dims: t.dims.clone(),
            })?;
        let (block, size) = t.ggml_type.block_layout();
        // A tensor without dimensions is a scalar.
        let ne0 = t.dims.first().copied().unwrap_or(1);
        if ne0 % block != 0 {
            return Err(GgufError::BadRowSize {
                name: t.name.clone(),
                ggml_type: t.ggml_type,
                ne0,
                block,
            });
        }
        if t.offset % self.alignment != 0 {
            return Err(GgufError::Misaligned {
                name: t.name.clone(),
                offset: t.offset,
                alignment: self.alignment,
            });
        }
        let n_bytes = (n / block)
            .checked_mul(size)
            .ok_or_else(|| GgufError::ShapeOverflow {
                name: t.name.clone(),
                dims: t.dims.clone(),
            })?;
        let start = self.data_start.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(n_bytes));
        match (start, end) {
            (Some(_), Some(end)) if end <= self.file_len => Ok(()),
            _ => Err(GgufError::DataOutOfRange {
                name: t.name.clone(),
                start: self.data_start.saturating_add(t.offset),
                end: self
                    .data_start
                    .saturating_add(t.offset)
                    .saturating_add(n_bytes),
                len: self.file_len,
            }),
        }
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A tensor table entry by name.
    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// `general.architecture` (e.g. "llama").
    pub fn architecture(&self) -> Result<&str> {
        self.req_str("general.architecture")
    }

    /// The chat template (`tokenizer.chat_template`), if the file has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.get("tokenizer.chat_template")
            .and_then(GgufValue::as_str)
    }

    /// The raw bytes of a tensor's data.
    pub fn tensor_bytes<'b>(&self, bytes: &'b [u8], name: &str) -> Result<&'b [u8]> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| GgufError::MissingTensor(name.to_string()))?;
        self.data_of(bytes, info)
    }

    fn data_of<'b>(&self, bytes: &'b [u8], info: &GgufTensorInfo) -> Result<&'b [u8]> {
        if bytes.len() as u64 != self.file_len {
            return Err(GgufError::BytesMismatch {
                given: bytes.len() as u64,
                parsed: self.file_len,
            });
        }
        // `parse` checked this already; checked again since the fields are public.
        let start = self.data_start.saturating_add(info.offset);
        let end = start.saturating_add(info.n_bytes());
        usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(s, e)| bytes.get(s..e))
            .ok_or_else(|| GgufError::DataOutOfRange {
                name: info.name.clone(),
                start,
                end,
                len: bytes.len() as u64,
            })
    }

    /// A tensor dequantized to f32, with its shape in PyTorch order (the reverse of ggml's).
    /// `bytes` must be the buffer the header was parsed from.
    pub fn tensor_f32(&self, bytes: &[u8], name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| GgufError::MissingTensor(name.to_string()))?;
        let data = self.data_of(bytes, info)?;
        let values =
            dequantize(info.ggml_type, data).ok_or_else(|| GgufError::UnsupportedType {
                name: info.name.clone(),
                ggml_type: info.ggml_type,
                supported: SUPPORTED_TYPES,
            })?;
        Ok((info.shape(), values))
    }

    // ---- typed metadata access, with errors naming the key ----

    fn req(&self, key: &str) -> Result<&GgufValue> {
        self.get(key)
            .ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    fn wrong_type(key: &str, expected: &'static str, value: &GgufValue) -> GgufError {
        GgufError::WrongType {
            key: key.to_string(),
            expected,
            found: value.describe(),
        }
    }

    fn req_str(&self, key: &str) -> Result<&str> {
        let v = self.req(key)?;
        v.as_str()
            .ok_or_else(|| Self::wrong_type(key, "a string", v))
    }

    fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| Self::wrong_type(key, "a non-negative integer", v)),
        }
    }

    fn req_u64(&self, key: &str) -> Result<u64> {
        self.opt_u64(key)?
            .ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| Self::wrong_type(key, "a number", v)),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| Self::wrong_type(key, "a bool", v)),
        }
    }

    /// A count that may be stored per layer (an array); all layers must agree.
    fn uniform_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            Some(GgufValue::Array(items)) => {
                let mut value = None;
                for item in items {
                    let v = item
                        .as_u64()
                        .ok_or_else(|| Self::wrong_type(key, "non-negative integers", item))?;
                    if value.is_some_and(|prev| prev != v) {
                        return Err(GgufError::BadValue {
                            key: key.to_string(),
                            detail: "differs between layers, which a Llama config cannot express"
                                .into(),
                        });
                    }
                    value = Some(v);
                }
                value.map(Some).ok_or_else(|| GgufError::BadValue {
                    key: key.to_string(),
                    detail: "is an empty array".into(),
                })
            }
            _ => self.opt_u64(key),
        }
    }

    fn require_llama(&self) -> Result<()> {
        match self.architecture()? {
            "llama" => Ok(()),
            other => Err(GgufError::Unsupported(format!(
                "general.architecture is {other:?}; only \"llama\" is supported"
            ))),
        }
    }

    /// The Hugging Face `config.json` equivalent of a llama-architecture GGUF, with the values
    /// transformers derives from the same file (floats stored as float32 are widened exactly,
    /// as Python reads them: `rms_norm_eps` 1e-5 comes out as 9.999999747378752e-06).
    pub fn llama_hf_config(&self) -> Result<Value> {
        self.require_llama()?;
        let hidden = self.req_u64("llama.embedding_length")?;
        let heads = self.req_u64("llama.attention.head_count")?;
        let kv_heads = self
            .uniform_u64("llama.attention.head_count_kv")?
            .unwrap_or(heads);
        let layers = self.req_u64("llama.block_count")?;
        let intermediate = self
            .uniform_u64("llama.feed_forward_length")?
            .ok_or_else(|| GgufError::MissingKey("llama.feed_forward_length".into()))?;
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(GgufError::BadValue {
                key: "llama.attention.head_count_kv".into(),
                detail: format!("{kv_heads} KV heads do not divide {heads} attention heads"),
            });
        }
        // transformers takes head_dim from the RoPE width (right for Llama, where RoPE covers
        // the whole head); LlamaConfig's default is hidden_size / heads.
        let head_dim = match self.opt_u64("llama.rope.dimension_count")? {
            Some(d) => d,
            None => match self.opt_u64("llama.attention.key_length")? {
                Some(d) => d,
                None => hidden / heads,
            },
        };
        // As transformers: the metadata count, else the number of tokens.
        let vocab_size = match self.opt_u64("llama.vocab_size")? {
            Some(v) => v,
            None => match self
                .get("tokenizer.ggml.tokens")
                .and_then(GgufValue::as_array)
            {
                Some(tokens) => tokens.len() as u64,
                None => self
                    .tensor_info("token_embd.weight")
                    .and_then(|t| t.dims.get(1).copied())
                    .ok_or_else(|| GgufError::MissingKey("llama.vocab_size".into()))?,
            },
        };
        let mut c = Map::new();
        c.insert("model_type".into(), json!("llama"));
        c.insert("architectures".into(), json!(["LlamaForCausalLM"]));
        c.insert("hidden_size".into(), json!(hidden));
        c.insert("intermediate_size".into(), json!(intermediate));
        c.insert("num_hidden_layers".into(), json!(layers));
        c.insert("num_attention_heads".into(), json!(heads));
        c.insert("num_key_value_heads".into(), json!(kv_heads));
        c.insert("head_dim".into(), json!(head_dim));
        c.insert("hidden_act".into(), json!("silu"));
        // LlamaConfig's defaults where the file is silent.
        let eps = self
            .opt_f64("llama.attention.layer_norm_rms_epsilon")?
            .unwrap_or(1e-6);
        c.insert("rms_norm_eps".into(), json!(eps));
        let theta = self.opt_f64("llama.rope.freq_base")?.unwrap_or(10_000.0);
        c.insert("rope_theta".into(), json!(theta));
        let max_pos = self.opt_u64("llama.context_length")?.unwrap_or(2048);
        c.insert("max_position_embeddings".into(), json!(max_pos));
        c.insert("vocab_size".into(), json!(vocab_size));
        c.insert("attention_bias".into(), json!(false));
        c.insert("mlp_bias".into(), json!(false));
        // llama.cpp writes `output.weight` only when it differs from the embedding.
        let tied = self.tensor_info("output.weight").is_none();
        c.insert("tie_word_embeddings".into(), json!(tied));
        for (key, name) in [
            ("tokenizer.ggml.bos_token_id", "bos_token_id"),
            ("tokenizer.ggml.eos_token_id", "eos_token_id"),
            ("tokenizer.ggml.padding_token_id", "pad_token_id"),
        ] {
            if let Some(id) = self.opt_u64(key)? {
                c.insert(name.into(), json!(id));
            }
        }
        c.insert("torch_dtype".into(), json!("float32"));
        Ok(Value::Object(c))
    }

    /// Every tensor of a llama-architecture GGUF under its Hugging Face name, dequantized to
    /// f32, with PyTorch shapes, in file order. The Q and K projections get their rows put back
    /// in Hugging Face's order (see [`unpermute_rope_rows`]). Unknown tensor names are an error
    /// listing all of them.
    ///
    /// This holds the whole model in f32 at once; to convert one tensor at a time, walk
    /// [`Gguf::llama_hf_names`] and call [`Gguf::llama_hf_tensor`].
    pub fn llama_hf_tensors(&self, bytes: &[u8]) -> Result<Vec<HfTensor>> {
        self.llama_hf_names()?
            .iter()
            .map(|(gguf_name, _)| self.llama_hf_tensor(bytes, gguf_name))
            .collect()
    }

    /// `(GGUF name, Hugging Face name)` of every tensor of a llama-architecture GGUF, in file
    /// order; an error listing the tensors that have no Hugging Face Llama counterpart.
    pub fn llama_hf_names(&self) -> Result<Vec<(String, String)>> {
        self.require_llama()?;
        let layers = self.req_u64("llama.block_count")?;
        let mut names = Vec::with_capacity(self.tensors.len());
        let mut unknown = Vec::new();
        for t in &self.tensors {
            match llama_hf_name(&t.name, layers) {
                Some(hf) => names.push((t.name.clone(), hf)),
                None => unknown.push(t.name.clone()),
            }
        }
        if !unknown.is_empty() {
            return Err(GgufError::UnknownTensors {
                architecture: "llama".into(),
                names: unknown,
            });
        }
        Ok(names)
    }

    /// One tensor of a llama-architecture GGUF, by its GGUF name, as [`Gguf::llama_hf_tensors`]
    /// returns it.
    pub fn llama_hf_tensor(&self, bytes: &[u8], gguf_name: &str) -> Result<HfTensor> {
        self.require_llama()?;
        let layers = self.req_u64("llama.block_count")?;
        let Some(hf_name) = llama_hf_name(gguf_name, layers) else {
            return Err(GgufError::UnknownTensors {
                architecture: "llama".into(),
                names: vec![gguf_name.to_string()],
            });
        };
        let (shape, mut values) = self.tensor_f32(bytes, gguf_name)?;
        if let Some(n_head) = self.rope_heads(gguf_name)? {
            values = unpermute_rope_rows(&values, &shape, n_head).map_err(|detail| {
                GgufError::BadTensor {
                    name: gguf_name.to_string(),
                    detail,
                }
            })?;
        }
        Ok((hf_name, shape, values))
    }

    /// Like [`Gguf::llama_hf_tensor`], but a Q8_0 or Q4_0 matrix comes back as its packed
    /// blocks, untouched (rows un-permuted whole), instead of as f32.
    pub fn llama_hf_stored(&self, bytes: &[u8], gguf_name: &str) -> Result<(String, Stored)> {
        let (hf_name, heads) = self.llama_name_and_heads(gguf_name)?;
        Ok((hf_name, self.stored_impl(bytes, None, gguf_name, heads)?))
    }

    /// [`Gguf::llama_hf_stored`] with the blocks left in `file` (no copy) where their rows are
    /// in order already.
    pub fn llama_hf_stored_in(
        &self,
        file: &Arc<Vec<u8>>,
        gguf_name: &str,
    ) -> Result<(String, Stored)> {
        let (hf_name, heads) = self.llama_name_and_heads(gguf_name)?;
        let stored = self.stored_impl(file, Some(file), gguf_name, heads)?;
        Ok((hf_name, stored))
    }

    /// The Hugging Face name of a llama tensor and the head count its rows were permuted by.
    fn llama_name_and_heads(&self, gguf_name: &str) -> Result<(String, Option<usize>)> {
        self.require_llama()?;
        let layers = self.req_u64("llama.block_count")?;
        let hf_name =
            llama_hf_name(gguf_name, layers).ok_or_else(|| GgufError::UnknownTensors {
                architecture: "llama".into(),
                names: vec![gguf_name.to_string()],
            })?;
        Ok((hf_name, self.rope_heads(gguf_name)?))
    }

    /// The names of the file's tensors, in file order.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|t| t.name.as_str())
    }

    /// Tensor `gguf_name` with PyTorch shape: a Q8_0/Q4_0 matrix as its blocks, F32/F16/BF16
    /// exactly, any other type dequantized (to be re-quantized by the loader). With
    /// `rope_heads`, the rows are put back in Hugging Face's order (see
    /// [`unpermute_rope_rows`]).
    pub fn stored(
        &self,
        bytes: &[u8],
        gguf_name: &str,
        rope_heads: Option<usize>,
    ) -> Result<Stored> {
        self.stored_impl(bytes, None, gguf_name, rope_heads)
    }

    /// [`Gguf::stored`] with packed blocks left in `file` (no copy) when no rows move.
    pub fn stored_in(
        &self,
        file: &Arc<Vec<u8>>,
        gguf_name: &str,
        rope_heads: Option<usize>,
    ) -> Result<Stored> {
        self.stored_impl(file, Some(file), gguf_name, rope_heads)
    }

    fn stored_impl(
        &self,
        bytes: &[u8],
        share: Option<&Arc<Vec<u8>>>,
        gguf_name: &str,
        rope_heads: Option<usize>,
    ) -> Result<Stored> {
        let info = self
            .tensor_info(gguf_name)
            .ok_or_else(|| GgufError::BadTensor {
                name: gguf_name.to_string(),
                detail: "not in the file".into(),
            })?;
        let bad = |detail: String| GgufError::BadTensor {
            name: gguf_name.to_string(),
            detail,
        };
        let packed = match info.ggml_type {
            GgmlType::Q8_0 => Some(QuantType::Q8_0),
            GgmlType::Q4_0 => Some(QuantType::Q4_0),
            _ => None,
        };
        let shape = info.shape();
        if let (Some(ty), [rows, cols]) = (packed, shape.as_slice()) {
            let slice = self.data_of(bytes, info)?;
            if let (Some(file), None) = (share, rope_heads) {
                let start = slice.as_ptr() as usize - file.as_ptr() as usize;
                let blocks = BlockMatrix::from_shared(ty, *rows, *cols, file.clone(), start)
                    .map_err(|e| bad(e.to_string()))?;
                return Ok(Stored::Blocks(blocks));
            }
            let mut data = slice.to_vec();
            if let Some(n_head) = rope_heads {
                data = unpermute_rope_rows(&data, &[*rows], n_head).map_err(bad)?;
            }
            let blocks =
                BlockMatrix::from_blocks(ty, *rows, *cols, data).map_err(|e| bad(e.to_string()))?;
            return Ok(Stored::Blocks(blocks));
        }
        let exact = matches!(
            info.ggml_type,
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16
        );
        let (shape, mut values) = self.tensor_f32(bytes, gguf_name)?;
        if let Some(n_head) = rope_heads {
            values = unpermute_rope_rows(&values, &shape, n_head).map_err(bad)?;
        }
        let tensor = HostTensor::new(shape, values);
        Ok(if exact {
            Stored::Float(tensor)
        } else {
            Stored::Dequantized(tensor)
        })
    }

    /// The head count whose RoPE permutation llama.cpp applied to this tensor's rows, if any.
    fn rope_heads(&self, gguf_name: &str) -> Result<Option<usize>> {
        let heads = if gguf_name.ends_with(".attn_q.weight") {
            Some(self.req_u64("llama.attention.head_count")?)
        } else if gguf_name.ends_with(".attn_k.weight") {
            match self.uniform_u64("llama.attention.head_count_kv")? {
                Some(kv) => Some(kv),
                None => Some(self.req_u64("llama.attention.head_count")?),
            }
        } else {
            None
        };
        heads
            .map(|n| {
                usize::try_from(n).map_err(|_| GgufError::BadTensor {
                    name: gguf_name.to_string(),
                    detail: "absurd head count".into(),
                })
            })
            .transpose()
    }

    /// A `tokenizer.json` (Hugging Face tokenizers format) for the file's embedded tokenizer,
    /// built as transformers builds it from the same file; see the `tokenizer` module.
    pub fn hf_tokenizer_json(&self) -> Result<Value> {
        tokenizer::hf_tokenizer_json(self)
    }
}

/// The Hugging Face name of a llama.cpp tensor of a Llama model with `layers` blocks.
fn llama_hf_name(name: &str, layers: u64) -> Option<String> {
    match name {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    // Plain decimal only ("01" or "+1" would not be llama.cpp's spelling).
    if layer.is_empty()
        || !layer.bytes().all(|b| b.is_ascii_digit())
        || (layer.len() > 1 && layer.starts_with('0'))
    {
        return None;
    }
    let index: u64 = layer.parse().ok()?;
    if index >= layers {
        return None;
    }
    let hf = match part {
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{index}.{hf}"))
}

/// Undoes llama.cpp's reordering of a Q or K projection.
///
/// ggml's RoPE rotates adjacent pairs of a head's dimensions (0,1), (2,3), ..., while Hugging
/// Face's Llama rotates the two halves against each other (d, d + head_dim/2). llama.cpp's
/// converter therefore interleaves the output rows of each head: its row `2d + j` is Hugging
/// Face's row `j * head_dim/2 + d` (j = 0, 1). This puts them back, as transformers' GGUF loader
/// does, with `head_dim = rows / n_head`.
pub fn unpermute_rope_rows<T: Copy + Default>(
    values: &[T],
    shape: &[usize],
    n_head: usize,
) -> std::result::Result<Vec<T>, String> {
    let rows = shape.first().copied().unwrap_or(0);
    let pairs = n_head.checked_mul(2).filter(|&p| p > 0);
    if pairs.is_none_or(|p| rows % p != 0) {
        return Err(format!(
            "{rows} rows cannot be split into {n_head} heads of an even size"
        ));
    }
    // A row is `cols` values, or, for a quantized tensor, the bytes of its blocks: rows are
    // moved whole, so packed blocks need no dequantization.
    let cols = values.len().checked_div(rows).unwrap_or(0);
    let head_dim = rows / n_head;
    let half = head_dim / 2;
    let mut out = vec![T::default(); values.len()];
    for h in 0..n_head {
        for j in 0..2 {
            for d in 0..half {
                let src = (h * head_dim + 2 * d + j) * cols;
                let dst = (h * head_dim + j * half + d) * cols;
                out[dst..dst + cols].copy_from_slice(&values[src..src + cols]);
            }
        }
    }
    Ok(out)
}

// --------------------------------------------------------------------------------------------
// Dequantization: ggml's reference formulas, with the same f32 operation order as ggml's
// `dequantize_row_*` and gguf-py's numpy versions, so results are bit-identical.
// --------------------------------------------------------------------------------------------

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Dequantizes whole blocks of `ty` (`data.len()` is a multiple of the block size in bytes;
/// the caller checks that). `None` for a type this reader cannot dequantize.
pub fn dequantize(ty: GgmlType, data: &[u8]) -> Option<Vec<f32>> {
    let (block, size) = ty.block_layout();
    let (block, size) = (block as usize, size as usize);
    let n_blocks = data.len() / size;
    let mut out = Vec::with_capacity(n_blocks * block);
    let blocks = data.chunks_exact(size);
    match ty {
        GgmlType::F32 => out.extend(blocks.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        GgmlType::F16 => out.extend(blocks.map(|b| f16_at(b, 0))),
        GgmlType::BF16 => out.extend(
            blocks.map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)),
        ),
        GgmlType::Q4_0 => {
            // d: f16, qs[16]: element j in the low nibble of qs[j], element j + 16 in the high.
            for b in blocks {
                let d = f16_at(b, 0);
                let qs = &b[2..18];
                out.extend(qs.iter().map(|&q| d * ((q & 0x0F) as i32 - 8) as f32));
                out.extend(qs.iter().map(|&q| d * ((q >> 4) as i32 - 8) as f32));
            }
        }
        GgmlType::Q4_1 => {
            // d: f16, m: f16, qs[16]; x = d * q + m.
            for b in blocks {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let qs = &b[4..20];
                out.extend(qs.iter().map(|&q| d * (q & 0x0F) as f32 + m));
                out.extend(qs.iter().map(|&q| d * (q >> 4) as f32 + m));
            }
        }
        GgmlType::Q5_0 => {
            // d: f16, qh: u32 (bit i is the fifth bit of element i), qs[16].
            for b in blocks {
                let d = f16_at(b, 0);
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                let qs = &b[6..22];
                for half in 0..2 {
                    for (j, &q) in qs.iter().enumerate() {
                        let i = half * 16 + j;
                        let low = if half == 0 { q & 0x0F } else { q >> 4 };
                        let high = ((qh >> i) & 1) as u8;
                        out.push(d * ((low | (high << 4)) as i32 - 16) as f32);
                    }
                }
            }
        }
        GgmlType::Q5_1 => {
            // d: f16, m: f16, qh: u32, qs[16]; x = d * q + m.
            for b in blocks {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                let qs = &b[8..24];
                for half in 0..2 {
                    for (j, &q) in qs.iter().enumerate() {
                        let i = half * 16 + j;
                        let low = if half == 0 { q & 0x0F } else { q >> 4 };
                        let high = ((qh >> i) & 1) as u8;
                        out.push(d * (low | (high << 4)) as f32 + m);
                    }
                }
            }
        }
        GgmlType::Q8_0 => {
            // d: f16, qs[32]: i8; x = q * d.
            for b in blocks {
                let d = f16_at(b, 0);
                out.extend(b[2..34].iter().map(|&q| (q as i8) as f32 * d));
            }
        }
        GgmlType::Q4_K => {
            // d, dmin: f16; scales[12]: eight 6-bit (scale, min) pairs; qs[128]. Each 64
            // elements use 32 bytes of qs: low nibbles for the first 32, high for the next.
            for b in blocks {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let scales = &b[4..16];
                let qs = &b[16..144];
                for chunk in 0..4 {
                    let q = &qs[chunk * 32..chunk * 32 + 32];
                    for (sub, shift) in [(2 * chunk, 0), (2 * chunk + 1, 4)] {
                        let (sc, m) = k_scale_min(scales, sub);
                        let (d1, m1) = (d * sc as f32, dmin * m as f32);
                        out.extend(q.iter().map(|&v| d1 * ((v >> shift) & 0x0F) as f32 - m1));
                    }
                }
            }
        }
        GgmlType::Q5_K => {
            // As Q4_K, plus qh[32]: bit s of qh[l] is the fifth bit of element l of sub-block s.
            for b in blocks {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let scales = &b[4..16];
                let qh = &b[16..48];
                let qs = &b[48..176];
                for chunk in 0..4 {
                    let q = &qs[chunk * 32..chunk * 32 + 32];
                    for (sub, shift) in [(2 * chunk, 0), (2 * chunk + 1, 4)] {
                        let (sc, m) = k_scale_min(scales, sub);
                        let (d1, m1) = (d * sc as f32, dmin * m as f32);
                        out.extend(q.iter().zip(qh).map(|(&v, &h)| {
                            let value = ((v >> shift) & 0x0F) | (((h >> sub) & 1) << 4);
                            d1 * value as f32 - m1
                        }));
                    }
                }
            }
        }
        GgmlType::Q6_K => {
            // ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16]: i8 (one per 16
            // elements), d: f16 at the end. Each half (128 elements) uses 64 bytes of ql and
            // 32 of qh: element 32k + l (k = 0..4) takes ql[l + 32 (k & 1)] (low nibble for
            // k < 2, high for k >= 2) and bits 2k, 2k+1 of qh[l].
            for b in blocks {
                let d = f16_at(b, 208);
                let scales = &b[192..208];
                for half in 0..2 {
                    let ql = &b[half * 64..half * 64 + 64];
                    let qh = &b[128 + half * 32..128 + half * 32 + 32];
                    for k in 0..4 {
                        let low = &ql[(k & 1) * 32..(k & 1) * 32 + 32];
                        let shift = if k < 2 { 0 } else { 4 };
                        for (l, (&lo, &hi)) in low.iter().zip(qh).enumerate() {
                            let idx = half * 128 + k * 32 + l;
                            let sc = scales[idx / 16] as i8;
                            let q = ((lo >> shift) & 0x0F) | (((hi >> (2 * k)) & 3) << 4);
                            out.push((d * sc as f32) * (q as i32 - 32) as f32);
                        }
                    }
                }
            }
        }
        GgmlType::Q8_K => {
            // d: f32, qs[256]: i8, bsums[16]: i16 (unused here); x = d * q.
            for b in blocks {
                let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                out.extend(b[4..4 + QK_K].iter().map(|&q| d * (q as i8) as f32));
            }
        }
        _ => return None,
    }
    Some(out)
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K block, packed in 12 bytes:
/// bytes 0-3 hold the scales of sub-blocks 0-3 (low 6 bits), bytes 4-7 their mins; sub-blocks
/// 4-7 keep their low 4 bits in the nibbles of bytes 8-11 and their top 2 bits in the top bits
/// of bytes 0-7.
fn k_scale_min(s: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- a small GGUF writer ----

    fn put_str(buf: &mut Vec<u8>, s: &str) {
        buf.extend((s.len() as u64).to_le_bytes());
        buf.extend(s.as_bytes());
    }

    /// Builds a GGUF in memory: metadata entries, then tensors laid out at aligned offsets.
    struct Writer {
        version: u32,
        alignment: usize,
        kv: Vec<u8>,
        n_kv: u64,
        infos: Vec<u8>,
        n_tensors: u64,
        data: Vec<u8>,
    }

    impl Writer {
        fn new() -> Self {
            Writer {
                version: 3,
                alignment: 32,
                kv: Vec::new(),
                n_kv: 0,
                infos: Vec::new(),
                n_tensors: 0,
                data: Vec::new(),
            }
        }

        fn kv_raw(&mut self, key: &str, ty: u32, payload: &[u8]) -> &mut Self {
            put_str(&mut self.kv, key);
            self.kv.extend(ty.to_le_bytes());
            self.kv.extend(payload);
            self.n_kv += 1;
            self
        }

        fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
            self.kv_raw(key, 4, &v.to_le_bytes())
        }

        fn kv_f32(&mut self, key: &str, v: f32) -> &mut Self {
            self.kv_raw(key, 6, &v.to_le_bytes())
        }

        fn kv_bool(&mut self, key: &str, v: bool) -> &mut Self {
            self.kv_raw(key, 7, &[v as u8])
        }

        fn kv_str(&mut self, key: &str, v: &str) -> &mut Self {
            let mut p = Vec::new();
            put_str(&mut p, v);
            self.kv_raw(key, 8, &p)
        }

        fn kv_strs(&mut self, key: &str, items: &[&str]) -> &mut Self {
            let mut p = Vec::new();
            p.extend(8u32.to_le_bytes());
            p.extend((items.len() as u64).to_le_bytes());
            for s in items {
                put_str(&mut p, s);
            }
            self.kv_raw(key, 9, &p)
        }

        fn kv_i32s(&mut self, key: &str, items: &[i32]) -> &mut Self {
            let mut p = Vec::new();
            p.extend(5u32.to_le_bytes());
            p.extend((items.len() as u64).to_le_bytes());
            for v in items {
                p.extend(v.to_le_bytes());
            }
            self.kv_raw(key, 9, &p)
        }

        /// A tensor with ggml dims `ne` (innermost first) and raw data bytes.
        fn tensor(&mut self, name: &str, ne: &[u64], ty: GgmlType, data: &[u8]) -> &mut Self {
            while self.data.len() % self.alignment != 0 {
                self.data.push(0);
            }
            put_str(&mut self.infos, name);
            self.infos.extend((ne.len() as u32).to_le_bytes());
            for d in ne {
                self.infos.extend(d.to_le_bytes());
            }
            self.infos.extend(ty.id().to_le_bytes());
            self.infos.extend((self.data.len() as u64).to_le_bytes());
            self.data.extend(data);
            self.n_tensors += 1;
            self
        }

        fn tensor_f32(&mut self, name: &str, ne: &[u64], values: &[f32]) -> &mut Self {
            let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.tensor(name, ne, GgmlType::F32, &data)
        }

        fn finish(&self) -> Vec<u8> {
            let mut out = b"GGUF".to_vec();
            out.extend(self.version.to_le_bytes());
            out.extend(self.n_tensors.to_le_bytes());
            out.extend(self.n_kv.to_le_bytes());
            out.extend(&self.kv);
            out.extend(&self.infos);
            while out.len() % self.alignment != 0 {
                out.push(0);
            }
            out.extend(&self.data);
            out
        }
    }

    fn h(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_bits().to_le_bytes()
    }

    // ---- blocks with known values, packed from the ggml layouts ----

    /// Q8_0: scale 0.5, quants -16..15.
    fn q8_0_block() -> (Vec<u8>, Vec<f32>) {
        let mut b = h(0.5).to_vec();
        let q: Vec<i8> = (0..32).map(|i| i as i8 - 16).collect();
        b.extend(q.iter().map(|&v| v as u8));
        (b, q.iter().map(|&v| v as f32 * 0.5).collect())
    }

    /// Q4_0: scale 0.25; element j is in the low nibble of byte j, element j + 16 in its high
    /// nibble; the stored 4-bit value is offset by 8.
    fn q4_0_block() -> (Vec<u8>, Vec<f32>) {
        let mut b = h(0.25).to_vec();
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut want: Vec<f32> = (0..16).map(|j| (j as f32 - 8.0) * 0.25).collect();
        want.extend((0..16).map(|j| ((15 - j) as f32 - 8.0) * 0.25));
        (b, want)
    }

    /// Q4_1: scale 0.5, min -1; same nibble order, value = d * q + m.
    fn q4_1_block() -> (Vec<u8>, Vec<f32>) {
        let mut b = h(0.5).to_vec();
        b.extend(h(-1.0));
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut want: Vec<f32> = (0..16).map(|j| j as f32 * 0.5 - 1.0).collect();
        want.extend((0..16).map(|j| (15 - j) as f32 * 0.5 - 1.0));
        (b, want)
    }

    /// Q5_0 / Q5_1: 5-bit values v_i = (7 i + 3) mod 32, fifth bits in a u32 (bit i for element i).
    fn q5_values() -> Vec<u8> {
        (0..32u32).map(|i| ((7 * i + 3) % 32) as u8).collect()
    }

    fn q5_pack(v: &[u8]) -> Vec<u8> {
        let qh: u32 = (0..32).map(|i| ((v[i] as u32 >> 4) & 1) << i).sum();
        let mut b = qh.to_le_bytes().to_vec();
        b.extend((0..16).map(|j| (v[j] & 0x0F) | ((v[j + 16] & 0x0F) << 4)));
        b
    }

    fn q5_0_block() -> (Vec<u8>, Vec<f32>) {
        let v = q5_values();
        let mut b = h(2.0).to_vec();
        b.extend(q5_pack(&v));
        (b, v.iter().map(|&q| (q as f32 - 16.0) * 2.0).collect())
    }

    fn q5_1_block() -> (Vec<u8>, Vec<f32>) {
        let v = q5_values();
        let mut b = h(0.125).to_vec();
        b.extend(h(3.0));
        b.extend(q5_pack(&v));
        (b, v.iter().map(|&q| q as f32 * 0.125 + 3.0).collect())
    }

    /// 6-bit scales and mins of the eight sub-blocks of a Q4_K/Q5_K test block (sub-blocks 4-7
    /// above 15, so that their top bits matter).
    const K_SCALES: [u8; 8] = [1, 2, 3, 4, 17, 33, 50, 63];
    const K_MINS: [u8; 8] = [0, 5, 10, 15, 20, 40, 60, 63];

    /// The 12-byte packing: bytes 0-3 scales 0-3 (+ top 2 bits of scales 4-7 in bits 6-7),
    /// bytes 4-7 mins 0-3 (+ top bits of mins 4-7), bytes 8-11 low nibbles of scale/min 4-7.
    fn k_scales_pack() -> [u8; 12] {
        let mut s = [0u8; 12];
        for j in 0..4 {
            s[j] = K_SCALES[j] | ((K_SCALES[j + 4] >> 4) << 6);
            s[j + 4] = K_MINS[j] | ((K_MINS[j + 4] >> 4) << 6);
            s[j + 8] = (K_SCALES[j + 4] & 0x0F) | ((K_MINS[j + 4] & 0x0F) << 4);
        }
        s
    }

    /// Q4_K: 4-bit value of element i is (i * 5 + i / 32) mod 16; chunk c of 64 elements keeps
    /// its first 32 in the low nibbles of qs[32c..32c+32] and the next 32 in the high nibbles.
    fn q4_k_block() -> (Vec<u8>, Vec<f32>) {
        let (d, dmin) = (0.5f32, 0.25f32);
        let v: Vec<u8> = (0..256usize)
            .map(|i| ((i * 5 + i / 32) % 16) as u8)
            .collect();
        let mut b = h(d).to_vec();
        b.extend(h(dmin));
        b.extend(k_scales_pack());
        for c in 0..4 {
            b.extend((0..32).map(|l| v[64 * c + l] | (v[64 * c + 32 + l] << 4)));
        }
        let want = (0..256)
            .map(|i| {
                let s = i / 32;
                (d * K_SCALES[s] as f32) * v[i] as f32 - dmin * K_MINS[s] as f32
            })
            .collect();
        (b, want)
    }

    /// Q5_K: Q4_K plus a fifth bit: bit s of qh[l] for element l of sub-block s.
    fn q5_k_block() -> (Vec<u8>, Vec<f32>) {
        let (d, dmin) = (0.5f32, 2.0f32);
        let v: Vec<u8> = (0..256usize)
            .map(|i| ((i * 11 + i / 32) % 32) as u8)
            .collect();
        let mut b = h(d).to_vec();
        b.extend(h(dmin));
        b.extend(k_scales_pack());
        b.extend((0..32).map(|l| (0..8).map(|s| ((v[32 * s + l] >> 4) & 1) << s).sum::<u8>()));
        for c in 0..4 {
            b.extend((0..32).map(|l| (v[64 * c + l] & 0x0F) | ((v[64 * c + 32 + l] & 0x0F) << 4)));
        }
        let want = (0..256)
            .map(|i| {
                let s = i / 32;
                (d * K_SCALES[s] as f32) * v[i] as f32 - dmin * K_MINS[s] as f32
            })
            .collect();
        (b, want)
    }

    /// Q6_K: ql[128], qh[64], scales[16] (i8), d. In each half of 128 elements, element
    /// 32k + l takes its low 4 bits from ql[64 half + l + 32 (k % 2)] (low nibble for k < 2,
    /// high for k >= 2) and its top 2 bits from bits 2k..2k+1 of qh[32 half + l].
    fn q6_k_block() -> (Vec<u8>, Vec<f32>) {
        let d = 0.5f32;
        let scales: Vec<i8> = (0..16).map(|i| i as i8 * 3 - 20).collect();
        let v: Vec<u8> = (0..256usize).map(|i| ((i * 13 + 7) % 64) as u8).collect();
        let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
        for (i, &q) in v.iter().enumerate() {
            let (half, k, l) = (i / 128, (i % 128) / 32, i % 32);
            ql[64 * half + l + 32 * (k % 2)] |= (q & 0x0F) << if k < 2 { 0 } else { 4 };
            qh[32 * half + l] |= (q >> 4) << (2 * k);
        }
        let mut b = ql.to_vec();
        b.extend(qh);
        b.extend(scales.iter().map(|&s| s as u8));
        b.extend(h(d));
        let want = (0..256)
            .map(|i| (d * scales[i / 16] as f32) * (v[i] as f32 - 32.0))
            .collect();
        (b, want)
    }

    /// Q8_K: f32 scale, 256 i8 quants, 16 i16 block sums (ignored when dequantizing).
    fn q8_k_block() -> (Vec<u8>, Vec<f32>) {
        let d = 0.25f32;
        let q: Vec<i8> = (0..256).map(|i: i32| (i - 128) as i8).collect();
        let mut b = d.to_le_bytes().to_vec();
        b.extend(q.iter().map(|&v| v as u8));
        b.extend([0u8; 32]);
        (b, q.iter().map(|&v| d * v as f32).collect())
    }

    /// Builds one block and the values it should dequantize to.
    type BlockMaker = fn() -> (Vec<u8>, Vec<f32>);

    /// One tensor of every supported type, with the values each should read as.
    fn typed_file() -> (Vec<u8>, Vec<(&'static str, Vec<f32>)>) {
        let mut w = Writer::new();
        w.kv_str("general.architecture", "test");
        let mut expect = Vec::new();

        let f32s = [1.5f32, -2.0, 0.0, 3.25e-3, f32::MAX, -0.0];
        w.tensor_f32("f32", &[3, 2], &f32s);
        expect.push(("f32", f32s.to_vec()));

        // 1.0, -2.5, the largest f16, the smallest subnormal.
        let f16_bits = [0x3C00u16, 0xC100, 0x7BFF, 0x0001];
        let data: Vec<u8> = f16_bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        w.tensor("f16", &[4], GgmlType::F16, &data);
        expect.push(("f16", vec![1.0, -2.5, 65504.0, 2f32.powi(-24)]));

        let bf16_bits = [0x3F80u16, 0xC020, 0x4049];
        let data: Vec<u8> = bf16_bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        w.tensor("bf16", &[3], GgmlType::BF16, &data);
        expect.push(("bf16", vec![1.0, -2.5, 3.140625]));

        let blocks: [(&str, GgmlType, BlockMaker); 9] = [
            ("q8_0", GgmlType::Q8_0, q8_0_block),
            ("q4_0", GgmlType::Q4_0, q4_0_block),
            ("q4_1", GgmlType::Q4_1, q4_1_block),
            ("q5_0", GgmlType::Q5_0, q5_0_block),
            ("q5_1", GgmlType::Q5_1, q5_1_block),
            ("q4_k", GgmlType::Q4_K, q4_k_block),
            ("q5_k", GgmlType::Q5_K, q5_k_block),
            ("q6_k", GgmlType::Q6_K, q6_k_block),
            ("q8_k", GgmlType::Q8_K, q8_k_block),
        ];
        for (name, ty, make) in blocks {
            let (b, want) = make();
            assert_eq!(b.len() as u64, ty.block_layout().1, "{name} block size");
            // Two rows of one block each: the second block is the first repeated.
            let n = want.len() as u64;
            let data = [b.clone(), b].concat();
            w.tensor(name, &[n, 2], ty, &data);
            expect.push((name, [want.clone(), want].concat()));
        }
        (w.finish(), expect)
    }

    #[test]
    fn dequantizes_every_supported_type() {
        let (bytes, expect) = typed_file();
        let g = Gguf::parse(&bytes).expect("parse");
        for (name, want) in expect {
            let (shape, got) = g.tensor_f32(&bytes, name).expect(name);
            assert_eq!(
                shape.iter().product::<usize>(),
                want.len(),
                "{name} shape {shape:?}"
            );
            let got_bits: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
            let want_bits: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got_bits, want_bits, "{name}: got {got:?}, want {want:?}");
        }
        let (shape, _) = g.tensor_f32(&bytes, "q8_0").expect("q8_0");
        assert_eq!(shape, vec![2, 32], "PyTorch order is the reverse of ne");
    }

    #[test]
    fn reads_metadata_and_layout() {
        let mut w = Writer::new();
        w.alignment = 64;
        w.kv_str("general.architecture", "llama")
            .kv_u32("general.alignment", 64)
            .kv_f32("x.eps", 1e-5)
            .kv_bool("x.flag", true)
            .kv_strs("x.list", &["a", "é", ""])
            .kv_i32s("x.ints", &[-1, 7])
            .kv_raw("x.u8", 0, &[200])
            .kv_raw("x.i64", 11, &(-5i64).to_le_bytes())
            .kv_raw("x.f64", 12, &0.5f64.to_le_bytes());
        // An array of arrays.
        let mut nested = 9u32.to_le_bytes().to_vec();
        nested.extend(2u64.to_le_bytes());
        for n in [1u32, 2] {
            nested.extend(4u32.to_le_bytes());
            nested.extend(1u64.to_le_bytes());
            nested.extend(n.to_le_bytes());
        }
        w.kv_raw("x.nested", 9, &nested);
        w.tensor_f32("a", &[2], &[1.0, 2.0]);
        w.tensor_f32("b", &[1, 3], &[3.0, 4.0, 5.0]);
        let bytes = w.finish();
        let g = Gguf::parse(&bytes).expect("parse");
        assert_eq!(g.version, 3);
        assert_eq!(g.alignment, 64);
        assert_eq!(g.data_start % 64, 0);
        assert_eq!(g.architecture().expect("arch"), "llama");
        assert_eq!(g.get("x.eps"), Some(&GgufValue::F32(1e-5)));
        assert_eq!(
            g.get("x.eps").and_then(GgufValue::as_f64),
            Some(1e-5f32 as f64)
        );
        assert_eq!(g.get("x.flag"), Some(&GgufValue::Bool(true)));
        assert_eq!(
            g.get("x.list"),
            Some(&GgufValue::Array(vec![
                GgufValue::String("a".into()),
                GgufValue::String("é".into()),
                GgufValue::String(String::new()),
            ]))
        );
        assert_eq!(
            g.get("x.ints"),
            Some(&GgufValue::Array(vec![
                GgufValue::I32(-1),
                GgufValue::I32(7)
            ]))
        );
        assert_eq!(g.get("x.u8"), Some(&GgufValue::U8(200)));
        assert_eq!(g.get("x.i64"), Some(&GgufValue::I64(-5)));
        assert_eq!(g.get("x.f64"), Some(&GgufValue::F64(0.5)));
        assert_eq!(
            g.get("x.nested"),
            Some(&GgufValue::Array(vec![
                GgufValue::Array(vec![GgufValue::U32(1)]),
                GgufValue::Array(vec![GgufValue::U32(2)]),
            ]))
        );
        assert_eq!(g.get("missing"), None);
        assert_eq!(g.tensors.len(), 2);
        assert_eq!(g.tensors[1].offset, 64, "second tensor aligned to 64");
        assert_eq!(
            g.tensor_f32(&bytes, "b").expect("b"),
            (vec![3, 1], vec![3.0, 4.0, 5.0])
        );
        assert_eq!(g.chat_template(), None);

        // Version 2 has the same layout.
        w.version = 2;
        let bytes = w.finish();
        assert_eq!(Gguf::parse(&bytes).expect("v2").version, 2);
    }

    /// Patches the little-endian u64 following the first occurrence of `marker`.
    fn patch_after(bytes: &mut [u8], marker: &[u8], value: &[u8]) {
        let at = bytes
            .windows(marker.len())
            .position(|w| w == marker)
            .expect("marker")
            + marker.len();
        bytes[at..at + value.len()].copy_from_slice(value);
    }

    fn err(bytes: &[u8]) -> GgufError {
        match Gguf::parse(bytes) {
            Ok(_) => panic!("parsed malformed input"),
            Err(e) => e,
        }
    }

    #[test]
    fn rejects_bad_headers() {
        assert!(matches!(err(b""), GgufError::BadMagic { .. }));
        assert!(matches!(err(b"GG"), GgufError::BadMagic { .. }));
        assert!(matches!(err(b"GGML\x03\0\0\0"), GgufError::BadMagic { .. }));
        let mut w = Writer::new();
        w.version = 1;
        assert_eq!(err(&w.finish()), GgufError::UnsupportedVersion(1));
        w.version = 7;
        assert_eq!(err(&w.finish()), GgufError::UnsupportedVersion(7));
        w.version = 3u32.swap_bytes();
        assert!(matches!(err(&w.finish()), GgufError::BigEndian { .. }));
        assert!(matches!(err(b"GGUF\x03\0\0"), GgufError::Truncated { .. }));
        // Absurd counts fail before allocating.
        let mut bytes = Writer::new().finish();
        bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(err(&bytes), GgufError::ImplausibleCount { .. }));
        let mut bytes = Writer::new().finish();
        bytes[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(err(&bytes), GgufError::ImplausibleCount { .. }));
    }

    #[test]
    fn rejects_bad_metadata() {
        let mut w = Writer::new();
        w.kv_str("k", "value");
        let mut bytes = w.finish();
        patch_after(&mut bytes, b"k\x08\0\0\0", &(1u64 << 50).to_le_bytes());
        let e = err(&bytes);
        assert!(
            matches!(&e, GgufError::ImplausibleCount { what, .. } if what.contains("\"k\"")),
            "{e}"
        );

        let mut w = Writer::new();
        w.kv_raw("k", 13, &[0; 8]);
        assert!(matches!(
            err(&w.finish()),
            GgufError::UnknownValueType { value_type: 13, .. }
        ));

        let mut w = Writer::new();
        w.kv_raw("k", 9, &[13, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(
            err(&w.finish()),
            GgufError::UnknownValueType { value_type: 13, .. }
        ));

        let mut w = Writer::new();
        let mut p = 4u32.to_le_bytes().to_vec();
        p.extend(u64::MAX.to_le_bytes());
        w.kv_raw("k", 9, &p);
        assert!(matches!(
            err(&w.finish()),
            GgufError::ImplausibleCount { .. }
        ));

        let mut w = Writer::new();
        w.kv_raw("k", 8, &[2, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe]);
        assert!(matches!(err(&w.finish()), GgufError::InvalidUtf8 { .. }));

        let mut w = Writer::new();
        w.kv_u32("k", 1).kv_u32("k", 2);
        assert_eq!(err(&w.finish()), GgufError::DuplicateKey("k".into()));

        let mut w = Writer::new();
        w.kv_u32("general.alignment", 24);
        assert_eq!(err(&w.finish()), GgufError::BadAlignment(24));
        let mut w = Writer::new();
        w.kv_u32("general.alignment", 0);
        assert_eq!(err(&w.finish()), GgufError::BadAlignment(0));
        let mut w = Writer::new();
        w.kv_str("general.alignment", "32");
        assert!(matches!(err(&w.finish()), GgufError::WrongType { .. }));

        // Arrays nested past the limit.
        let mut p = Vec::new();
        for _ in 0..MAX_ARRAY_DEPTH {
            p.extend(9u32.to_le_bytes());
            p.extend(1u64.to_le_bytes());
        }
        p.extend(4u32.to_le_bytes());
        p.extend(0u64.to_le_bytes());
        let mut w = Writer::new();
        w.kv_raw("k", 9, &p);
        assert!(matches!(err(&w.finish()), GgufError::NestingTooDeep { .. }));
    }

    #[test]
    fn rejects_bad_tensor_entries() {
        let one = |ne: &[u64], ty: GgmlType, data: &[u8]| {
            let mut w = Writer::new();
            w.tensor("t", ne, ty, data);
            w.finish()
        };
        // Unknown type id (4 was Q4_2, removed from ggml).
        let mut bytes = one(&[1], GgmlType::F32, &[0; 4]);
        patch_after(
            &mut bytes,
            b"t\x01\0\0\0\x01\0\0\0\0\0\0\0",
            &4u32.to_le_bytes(),
        );
        assert!(matches!(
            err(&bytes),
            GgufError::UnknownGgmlType { type_id: 4, .. }
        ));
        // Five dimensions.
        let bytes = one(&[1, 1, 1, 1, 1], GgmlType::F32, &[0; 4]);
        assert!(matches!(
            err(&bytes),
            GgufError::BadDimCount { n_dims: 5, .. }
        ));
        // No dimensions: a scalar, as in ggml.
        let bytes = one(&[], GgmlType::F32, &2.5f32.to_le_bytes());
        let g = Gguf::parse(&bytes).expect("scalar");
        assert_eq!(g.tensor_f32(&bytes, "t").expect("t"), (vec![], vec![2.5]));
        let bytes = one(&[], GgmlType::Q8_0, &[0; 34]);
        assert!(matches!(err(&bytes), GgufError::BadRowSize { .. }));
        // Element count overflow.
        let bytes = one(&[1 << 40, 1 << 40], GgmlType::F32, &[]);
        assert!(matches!(err(&bytes), GgufError::ShapeOverflow { .. }));
        // A row that is not whole blocks.
        let bytes = one(&[16], GgmlType::Q8_0, &[0; 34]);
        assert!(matches!(
            err(&bytes),
            GgufError::BadRowSize {
                ne0: 16,
                block: 32,
                ..
            }
        ));
        // Data past the end of the file.
        let bytes = one(&[64], GgmlType::F32, &[0; 8]);
        assert!(matches!(err(&bytes), GgufError::DataOutOfRange { .. }));
        // An offset that is not aligned, and one far out of range.
        let mut bytes = one(&[1], GgmlType::F32, &[0; 4]);
        patch_after(
            &mut bytes,
            b"t\x01\0\0\0\x01\0\0\0\0\0\0\0\0\0\0\0",
            &4u64.to_le_bytes(),
        );
        assert!(matches!(
            err(&bytes),
            GgufError::Misaligned { offset: 4, .. }
        ));
        let mut bytes = one(&[1], GgmlType::F32, &[0; 4]);
        patch_after(
            &mut bytes,
            b"t\x01\0\0\0\x01\0\0\0\0\0\0\0\0\0\0\0",
            &(u64::MAX - 31).to_le_bytes(),
        );
        assert!(matches!(err(&bytes), GgufError::DataOutOfRange { .. }));
        // Duplicate names.
        let mut w = Writer::new();
        w.tensor_f32("t", &[1], &[1.0])
            .tensor_f32("t", &[1], &[2.0]);
        assert_eq!(err(&w.finish()), GgufError::DuplicateTensor("t".into()));
    }

    #[test]
    fn data_access_errors() {
        let mut w = Writer::new();
        w.tensor("q2k", &[256], GgmlType::Q2_K, &[0; 84]);
        w.tensor_f32("f", &[1], &[1.0]);
        let bytes = w.finish();
        let g = Gguf::parse(&bytes).expect("parse");
        assert!(matches!(
            g.tensor_f32(&bytes, "q2k"),
            Err(GgufError::UnsupportedType {
                ggml_type: GgmlType::Q2_K,
                ..
            })
        ));
        assert_eq!(
            g.tensor_f32(&bytes, "nope"),
            Err(GgufError::MissingTensor("nope".into()))
        );
        assert!(matches!(
            g.tensor_f32(&bytes[..bytes.len() - 1], "f"),
            Err(GgufError::BytesMismatch { .. })
        ));
        assert_eq!(
            g.tensor_bytes(&bytes, "f").expect("f"),
            &1.0f32.to_le_bytes()
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let (bytes, _) = typed_file();
        for len in 0..bytes.len() {
            assert!(
                Gguf::parse(&bytes[..len]).is_err(),
                "a {len}-byte prefix parsed"
            );
        }
    }

    #[test]
    fn garbage_never_panics() {
        // Deterministic byte flips of valid files; any result is fine except a panic, and a
        // file that parses must serve all its tensors (or say why not).
        let (typed, _) = typed_file();
        let llama = tiny_llama(true);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for base in [typed, llama] {
            for _ in 0..3000 {
                let mut bytes = base.clone();
                for _ in 0..1 + next() % 4 {
                    let at = (next() % bytes.len() as u64) as usize;
                    bytes[at] = next() as u8;
                }
                if let Ok(g) = Gguf::parse(&bytes) {
                    for t in &g.tensors {
                        let _ = g.tensor_f32(&bytes, &t.name);
                    }
                    let _ = g.llama_hf_config();
                    let _ = g.llama_hf_tensors(&bytes);
                    let _ = g.hf_tokenizer_json();
                }
            }
        }
    }

    // ---- Llama naming, config and Q/K order ----

    /// A one-layer Llama: hidden 8, 2 heads of 4, 1 KV head, FFN 4, vocab 266 (the 256
    /// byte-level characters and ten more), all F32. Weight values encode their row so the
    /// Q/K reordering can be checked.
    fn tiny_llama(tied: bool) -> Vec<u8> {
        let mut w = Writer::new();
        let (vocab, merges, types) = tiny_vocab();
        let vocab: Vec<&str> = vocab.iter().map(String::as_str).collect();
        w.kv_str("general.architecture", "llama")
            .kv_u32("llama.block_count", 1)
            .kv_u32("llama.context_length", 64)
            .kv_u32("llama.embedding_length", 8)
            .kv_u32("llama.feed_forward_length", 4)
            .kv_u32("llama.attention.head_count", 2)
            .kv_u32("llama.attention.head_count_kv", 1)
            .kv_f32("llama.rope.freq_base", 100000.0)
            .kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
            .kv_u32("llama.rope.dimension_count", 4)
            .kv_str("tokenizer.ggml.model", "gpt2")
            .kv_str("tokenizer.ggml.pre", "smollm")
            .kv_strs("tokenizer.ggml.tokens", &vocab)
            .kv_i32s("tokenizer.ggml.token_type", &types)
            .kv_strs("tokenizer.ggml.merges", &merges)
            .kv_u32("tokenizer.ggml.bos_token_id", 1)
            .kv_u32("tokenizer.ggml.eos_token_id", 2)
            .kv_u32("tokenizer.ggml.padding_token_id", 2)
            .kv_bool("tokenizer.ggml.add_bos_token", false)
            .kv_str("tokenizer.chat_template", "{{ messages }}");
        let rows = |n: usize, cols: usize| -> Vec<f32> {
            (0..n * cols)
                .map(|i| (i / cols) as f32 + (i % cols) as f32 / 100.0)
                .collect()
        };
        let n_vocab = vocab.len() as u64;
        w.tensor_f32("token_embd.weight", &[8, n_vocab], &rows(vocab.len(), 8));
        w.tensor_f32("blk.0.attn_norm.weight", &[8], &[1.0; 8]);
        w.tensor_f32("blk.0.attn_q.weight", &[8, 8], &rows(8, 8));
        w.tensor_f32("blk.0.attn_k.weight", &[8, 4], &rows(4, 8));
        w.tensor_f32("blk.0.attn_v.weight", &[8, 4], &rows(4, 8));
        w.tensor_f32("blk.0.attn_output.weight", &[8, 8], &rows(8, 8));
        w.tensor_f32("blk.0.ffn_gate.weight", &[8, 4], &rows(4, 8));
        w.tensor_f32("blk.0.ffn_up.weight", &[8, 4], &rows(4, 8));
        w.tensor_f32("blk.0.ffn_down.weight", &[4, 8], &rows(8, 4));
        w.tensor_f32("blk.0.ffn_norm.weight", &[8], &[2.0; 8]);
        w.tensor_f32("output_norm.weight", &[8], &[3.0; 8]);
        if !tied {
            w.tensor_f32("output.weight", &[8, n_vocab], &rows(vocab.len(), 8));
        }
        w.finish()
    }

    #[test]
    fn llama_config() {
        let bytes = tiny_llama(true);
        let g = Gguf::parse(&bytes).expect("parse");
        let c = g.llama_hf_config().expect("config");
        let want = json!({
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": 8,
            "intermediate_size": 4,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 4,
            "hidden_act": "silu",
            "rms_norm_eps": 1e-5f32 as f64,
            "rope_theta": 100000.0,
            "max_position_embeddings": 64,
            "vocab_size": 266,
            "attention_bias": false,
            "mlp_bias": false,
            "tie_word_embeddings": true,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 2,
            "torch_dtype": "float32",
        });
        assert_eq!(c, want);
        assert_eq!(g.chat_template(), Some("{{ messages }}"));
        let untied = tiny_llama(false);
        let g = Gguf::parse(&untied).expect("parse");
        assert_eq!(
            g.llama_hf_config().expect("config")["tie_word_embeddings"],
            json!(false)
        );
    }

    #[test]
    fn llama_tensors_renamed_and_unpermuted() {
        let bytes = tiny_llama(false);
        let g = Gguf::parse(&bytes).expect("parse");
        let tensors = g.llama_hf_tensors(&bytes).expect("tensors");
        let names: Vec<&str> = tensors.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "model.embed_tokens.weight",
                "model.layers.0.input_layernorm.weight",
                "model.layers.0.self_attn.q_proj.weight",
                "model.layers.0.self_attn.k_proj.weight",
                "model.layers.0.self_attn.v_proj.weight",
                "model.layers.0.self_attn.o_proj.weight",
                "model.layers.0.mlp.gate_proj.weight",
                "model.layers.0.mlp.up_proj.weight",
                "model.layers.0.mlp.down_proj.weight",
                "model.layers.0.post_attention_layernorm.weight",
                "model.norm.weight",
                "lm_head.weight",
            ]
        );
        let get = |name: &str| {
            let (_, shape, values) = tensors.iter().find(|(n, _, _)| n == name).expect(name);
            (shape.clone(), values.clone())
        };
        let row_ids = |values: &[f32], cols: usize| -> Vec<usize> {
            values.chunks(cols).map(|r| r[0] as usize).collect()
        };
        // Heads of 4 rows: the file's rows (0, 1, 2, 3) hold HF's (0, 2, 1, 3).
        let (shape, q) = get("model.layers.0.self_attn.q_proj.weight");
        assert_eq!(shape, vec![8, 8]);
        assert_eq!(row_ids(&q, 8), [0, 2, 1, 3, 4, 6, 5, 7]);
        let (shape, k) = get("model.layers.0.self_attn.k_proj.weight");
        assert_eq!(shape, vec![4, 8]);
        assert_eq!(row_ids(&k, 8), [0, 2, 1, 3]);
        // Columns travel with their row.
        assert_eq!(&q[8..16], &[2.0, 2.01, 2.02, 2.03, 2.04, 2.05, 2.06, 2.07]);
        let (_, v) = get("model.layers.0.self_attn.v_proj.weight");
        assert_eq!(row_ids(&v, 8), [0, 1, 2, 3]);
        let (shape, down) = get("model.layers.0.mlp.down_proj.weight");
        assert_eq!(shape, vec![8, 4]);
        assert_eq!(row_ids(&down, 4), [0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(get("model.embed_tokens.weight").0, vec![266, 8]);

        // One at a time gives the same.
        let names = g.llama_hf_names().expect("names");
        assert_eq!(names.len(), tensors.len());
        for ((gguf_name, hf_name), whole) in names.iter().zip(&tensors) {
            let one = g.llama_hf_tensor(&bytes, gguf_name).expect("one tensor");
            assert_eq!(&one, whole);
            assert_eq!(hf_name, &whole.0);
        }
        // Head counts that do not fit the rows are errors, not panics.
        assert!(unpermute_rope_rows(&[0.0; 6], &[3, 2], 1).is_err());
        assert!(unpermute_rope_rows::<f32>(&[], &[0], usize::MAX).is_err());
        assert!(unpermute_rope_rows::<f32>(&[], &[0], 0).is_err());
    }

    #[test]
    fn packed_llama_tensors_stay_blocks() {
        use crate::weights::gguf_write::{quantize_q4_0, quantize_q8_0};
        let values = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 7919 % 211) as f32 - 105.0) / 300.0)
                .collect()
        };
        let (q, k) = (values(32 * 32), values(16 * 32));
        let mut w = Writer::new();
        w.kv_str("general.architecture", "llama")
            .kv_u32("llama.block_count", 1)
            .kv_u32("llama.attention.head_count", 2)
            .kv_u32("llama.attention.head_count_kv", 1);
        w.tensor(
            "blk.0.attn_q.weight",
            &[32, 32],
            GgmlType::Q8_0,
            &quantize_q8_0(&q),
        );
        w.tensor(
            "blk.0.attn_k.weight",
            &[32, 16],
            GgmlType::Q4_0,
            &quantize_q4_0(&k),
        );
        let q4_1: Vec<u8> = q4_1_block().0.repeat(8);
        w.tensor("blk.0.ffn_up.weight", &[32, 8], GgmlType::Q4_1, &q4_1);
        let bytes = w.finish();
        let g = Gguf::parse(&bytes).expect("parse");
        for (name, ty) in [
            ("blk.0.attn_q.weight", Some(QuantType::Q8_0)),
            ("blk.0.attn_k.weight", Some(QuantType::Q4_0)),
            ("blk.0.ffn_up.weight", None),
        ] {
            let (hf, stored) = g.llama_hf_stored(&bytes, name).expect("stored");
            let (hf_f32, shape, f32s) = g.llama_hf_tensor(&bytes, name).expect("f32");
            assert_eq!(hf, hf_f32);
            match (stored, ty) {
                (Stored::Blocks(b), Some(ty)) => {
                    assert_eq!(b.ty(), ty);
                    assert_eq!(vec![b.rows(), b.cols()], shape);
                    // The packed rows are the unpermuted f32 rows, bit for bit.
                    assert_eq!(b.dequantize(), f32s, "{name}");
                }
                (Stored::Dequantized(t), None) => assert_eq!(t.data, f32s),
                (other, _) => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn llama_unknown_tensors_are_named() {
        let mut w = Writer::new();
        w.kv_str("general.architecture", "llama")
            .kv_u32("llama.block_count", 1)
            .kv_u32("llama.attention.head_count", 1);
        w.tensor_f32("blk.0.attn_norm.weight", &[2], &[1.0, 1.0]);
        w.tensor_f32("blk.1.attn_norm.weight", &[2], &[1.0, 1.0]);
        w.tensor_f32("rope_freqs.weight", &[2], &[1.0, 1.0]);
        let bytes = w.finish();
        let g = Gguf::parse(&bytes).expect("parse");
        assert_eq!(
            g.llama_hf_tensors(&bytes),
            Err(GgufError::UnknownTensors {
                architecture: "llama".into(),
                names: vec!["blk.1.attn_norm.weight".into(), "rope_freqs.weight".into()],
            })
        );
        let mut w = Writer::new();
        w.kv_str("general.architecture", "qwen2");
        let bytes = w.finish();
        let g = Gguf::parse(&bytes).expect("parse");
        assert!(matches!(
            g.llama_hf_config(),
            Err(GgufError::Unsupported(_))
        ));
        assert!(matches!(
            g.llama_hf_tensors(&bytes),
            Err(GgufError::Unsupported(_))
        ));
    }

    // ---- tokenizer ----

    /// Tokens: `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` (control), then the 256 byte-level
    /// characters, then merged tokens "Ġt", "he", "Ġthe", "ll", "hell", `<think>` (user
    /// defined) and a control token outside the byte alphabet (skipped by transformers).
    fn tiny_vocab() -> (Vec<String>, Vec<&'static str>, Vec<i32>) {
        let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
            .map(String::from)
            .to_vec();
        let mut types = vec![3, 3, 3];
        tokens.extend(
            tokenizer::byte_level_alphabet()
                .iter()
                .map(|c| c.to_string()),
        );
        types.extend([1; 256]);
        for t in ["Ġt", "he", "Ġthe", "ll", "hell"] {
            tokens.push(t.to_string());
            types.push(1);
        }
        tokens.push("<think>".into());
        types.push(4);
        tokens.push("<｜pad｜>".into());
        types.push(3);
        let merges = vec!["Ġ t", "h e", "Ġt he", "l l", "he ll"];
        (tokens, merges, types)
    }

    #[test]
    fn tokenizer_json_matches_transformers_construction() {
        let bytes = tiny_llama(true);
        let g = Gguf::parse(&bytes).expect("parse");
        let j = g.hf_tokenizer_json().expect("tokenizer json");
        let added: Vec<(u64, &str, bool)> = j["added_tokens"]
            .as_array()
            .expect("added")
            .iter()
            .map(|t| {
                (
                    t["id"].as_u64().expect("id"),
                    t["content"].as_str().expect("content"),
                    t["special"].as_bool().expect("special"),
                )
            })
            .collect();
        assert_eq!(
            added,
            [
                (0, "<|endoftext|>", true),
                (1, "<|im_start|>", true),
                (2, "<|im_end|>", true),
                (264, "<think>", false),
            ]
        );
        assert_eq!(j["pre_tokenizer"]["type"], "ByteLevel");
        assert_eq!(j["pre_tokenizer"]["use_regex"], true);
        assert_eq!(j["decoder"]["type"], "ByteLevel");
        assert_eq!(j["post_processor"]["special_tokens"], json!({}));
        // The non-alphabet token is in the vocabulary, re-spelled byte by byte.
        let respelled: String = "<｜pad｜>"
            .bytes()
            .map(|b| tokenizer::byte_level_alphabet()[b as usize])
            .collect();
        assert_eq!(j["model"]["vocab"][respelled.as_str()], 265);

        let tok = tokenizers::Tokenizer::from_bytes(j.to_string()).expect("tokenizers accepts it");
        let text = "<|im_start|>hello the<think><|im_end|>";
        let enc = tok.encode(text, true).expect("encode");
        let id = |s: &str| j["model"]["vocab"][s].as_u64().expect(s) as u32;
        assert_eq!(
            enc.get_ids(),
            [1, id("hell"), id("o"), id("Ġthe"), 264, 2],
            "{:?}",
            enc.get_tokens()
        );
        assert_eq!(
            tok.decode(enc.get_ids(), true).expect("decode"),
            "hello the<think>"
        );
        assert_eq!(tok.decode(enc.get_ids(), false).expect("decode"), text);
    }

    #[test]
    fn tokenizer_variants() {
        // No <|endoftext|> in the vocabulary: transformers appends it; add_bos puts bos first;
        // a llama3-style `pre` brings its split regex.
        let mut w = Writer::new();
        let alphabet: Vec<String> = tokenizer::byte_level_alphabet()
            .iter()
            .map(|c| c.to_string())
            .collect();
        let mut tokens: Vec<&str> = vec!["<s>"];
        tokens.extend(alphabet.iter().map(String::as_str));
        w.kv_str("general.architecture", "llama")
            .kv_str("tokenizer.ggml.model", "gpt2")
            .kv_str("tokenizer.ggml.pre", "llama-bpe")
            .kv_strs("tokenizer.ggml.tokens", &tokens)
            .kv_strs("tokenizer.ggml.merges", &[])
            .kv_u32("tokenizer.ggml.bos_token_id", 0)
            .kv_bool("tokenizer.ggml.add_bos_token", true);
        let bytes = w.finish();
        let g = Gguf::parse(&bytes).expect("parse");
        let j = g.hf_tokenizer_json().expect("json");
        let added: Vec<(u64, &str)> = j["added_tokens"]
            .as_array()
            .expect("added")
            .iter()
            .map(|t| {
                (
                    t["id"].as_u64().expect("id"),
                    t["content"].as_str().expect("c"),
                )
            })
            .collect();
        assert_eq!(added, [(0, "<s>"), (257, "<|endoftext|>")]);
        assert_eq!(j["pre_tokenizer"]["type"], "Sequence");
        assert_eq!(
            j["post_processor"]["special_tokens"]["<s>"]["ids"],
            json!([0])
        );
        let tok = tokenizers::Tokenizer::from_bytes(j.to_string()).expect("tokenizers");
        let enc = tok.encode("hi 123", true).expect("encode");
        assert_eq!(enc.get_ids()[0], 0, "bos first");
        assert_eq!(enc.get_ids().len(), 1 + 6);

        // Other tokenizer models and bad ids are errors.
        let mut w = Writer::new();
        w.kv_str("tokenizer.ggml.model", "llama")
            .kv_strs("tokenizer.ggml.tokens", &["a"]);
        let bytes = w.finish();
        let g = Gguf::parse(&bytes).expect("parse");
        assert!(matches!(
            g.hf_tokenizer_json(),
            Err(GgufError::Unsupported(_))
        ));
        let mut w = Writer::new();
        w.kv_str("tokenizer.ggml.model", "gpt2")
            .kv_strs("tokenizer.ggml.tokens", &["a", "b"])
            .kv_strs("tokenizer.ggml.merges", &["a c"]);
        let bytes = w.finish();
        let g = Gguf::parse(&bytes).expect("parse");
        assert!(matches!(
            g.hf_tokenizer_json(),
            Err(GgufError::BadValue { .. })
        ));
        let mut w = Writer::new();
        w.kv_str("tokenizer.ggml.model", "gpt2")
            .kv_strs("tokenizer.ggml.tokens", &["a"])
            .kv_strs("tokenizer.ggml.merges", &[])
            .kv_u32("tokenizer.ggml.eos_token_id", 5);
        let bytes = w.finish();
        let g = Gguf::parse(&bytes).expect("parse");
        assert!(matches!(
            g.hf_tokenizer_json(),
            Err(GgufError::BadValue { .. })
        ));
    }

    /// Developer export for `tools/check_gguf.py` (not a unit test): with GGUF_CHECK_FILE and
    /// GGUF_CHECK_OUT set, writes every tensor dequantized (raw/), the Hugging Face view of a
    /// llama file (hf/, config.json, tokenizer.json) and, given GGUF_CHECK_TEXTS (a JSON list
    /// of strings), their encodings by the `tokenizers` crate.
    #[test]
    #[ignore = "developer export, run by tools/check_gguf.py"]
    fn export_for_python_check() {
        use std::fs;
        use std::path::Path;
        let (Ok(file), Ok(out)) = (
            std::env::var("GGUF_CHECK_FILE"),
            std::env::var("GGUF_CHECK_OUT"),
        ) else {
            eprintln!("GGUF_CHECK_FILE / GGUF_CHECK_OUT not set; nothing exported");
            return;
        };
        let out = Path::new(&out);
        let bytes = fs::read(&file).expect("read GGUF_CHECK_FILE");
        let g = Gguf::parse(&bytes).expect("parse");

        let write_set = |dir: &str, tensors: Vec<HfTensor>| {
            let dir = out.join(dir);
            fs::create_dir_all(&dir).expect("mkdir");
            let mut index = Vec::new();
            for (i, (name, shape, values)) in tensors.into_iter().enumerate() {
                let path = format!("{i}.f32");
                let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                fs::write(dir.join(&path), raw).expect("write tensor");
                index.push(json!({"name": name, "shape": shape, "file": path}));
            }
            fs::write(dir.join("index.json"), Value::Array(index).to_string()).expect("index");
        };

        let raw: Vec<_> = g
            .tensors
            .iter()
            .filter(|t| t.ggml_type.is_supported())
            .map(|t| {
                let (shape, values) = g.tensor_f32(&bytes, &t.name).expect("tensor");
                (t.name.clone(), shape, values)
            })
            .collect();
        write_set("raw", raw);

        if g.architecture().ok() == Some("llama") && !g.tensors.is_empty() {
            let config = g.llama_hf_config().expect("config");
            fs::write(out.join("config.json"), config.to_string()).expect("config");
            write_set("hf", g.llama_hf_tensors(&bytes).expect("hf tensors"));
        }
        if let Some(t) = g.chat_template() {
            fs::write(out.join("chat_template.jinja"), t).expect("template");
        }
        if g.get("tokenizer.ggml.model").is_some() {
            let j = g.hf_tokenizer_json().expect("tokenizer json");
            fs::write(out.join("tokenizer.json"), j.to_string()).expect("tokenizer");
            if let Ok(texts) = std::env::var("GGUF_CHECK_TEXTS") {
                let texts: Vec<String> =
                    serde_json::from_str(&fs::read_to_string(texts).expect("texts")).expect("list");
                let tok = tokenizers::Tokenizer::from_bytes(j.to_string()).expect("tokenizer");
                let results: Vec<Value> = texts
                    .iter()
                    .map(|text| {
                        let enc = tok.encode(text.as_str(), true).expect("encode");
                        let ids = enc.get_ids().to_vec();
                        let decoded = tok.decode(&ids, true).expect("decode");
                        let decoded_all = tok.decode(&ids, false).expect("decode");
                        json!({"ids": ids, "decoded": decoded, "decoded_with_special": decoded_all})
                    })
                    .collect();
                fs::write(
                    out.join("encodings.json"),
                    Value::Array(results).to_string(),
                )
                .expect("encodings");
            }
        }
    }
}
