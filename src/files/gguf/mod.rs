//! llama.cpp's GGUF container, read from bytes in memory (the browser has no filesystem): the
//! header's metadata and tensor table, parsed once into a [`Gguf`] that a [`GgufFile`] keeps
//! beside the bytes. What the tensors and keys *mean* (Hugging Face names, configs, the
//! tokenizer, dequantization) is `crate::weights::gguf`'s business; this module knows only the
//! format.
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

use std::collections::HashSet;
use std::sync::Arc;

/// The alignment of the tensor data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most this many dimensions.
pub const MAX_DIMS: u32 = 4;
/// Arrays of arrays deeper than this are refused (they only guard against stack exhaustion;
/// real files nest at most once).
pub const MAX_ARRAY_DEPTH: usize = 8;
/// Array values in a whole header, all arrays together. A value in memory takes some 32 bytes
/// whatever it took in the file, so a header of one byte-array the size of the file would
/// need 32 times the file; real headers hold well under a million (Gemma's 262,144 tokens
/// with their scores and types), and this many take at most about half a gigabyte.
pub const MAX_ARRAY_VALUES: u64 = 1 << 24;
/// Elements per block of the k-quants.
pub const QK_K: usize = 256;

mod error;
mod tensor;
mod value;

pub use error::GgufError;
pub use tensor::{GgmlType, GgufTensorInfo, SUPPORTED_TYPES};
pub use value::GgufValue;

pub type Result<T> = std::result::Result<T, GgufError>;

/// A GGUF file: its bytes, shared so that packed tensors can stay in them, and their header,
/// parsed once when the file is read.
#[derive(Debug, Clone)]
pub struct GgufFile {
    pub header: Gguf,
    pub bytes: Arc<Vec<u8>>,
}

impl GgufFile {
    /// Parses the header; see [`Gguf::parse`].
    pub fn parse(bytes: Vec<u8>) -> Result<Self> {
        let header = Gguf::parse(&bytes)?;
        Ok(Self {
            header,
            bytes: Arc::new(bytes),
        })
    }

    /// The file's size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
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
    /// Array values the rest of the header may still hold ([`MAX_ARRAY_VALUES`]).
    values_left: u64,
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
                let offset = self.pos as u64;
                let n = self.count(min_size, what)?;
                self.values_left =
                    self.values_left
                        .checked_sub(n)
                        .ok_or_else(|| GgufError::TooManyValues {
                            what: what(),
                            offset,
                            count: n - self.values_left,
                        })?;
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
        let mut r = Reader {
            buf: bytes,
            pos: 0,
            values_left: MAX_ARRAY_VALUES,
        };
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

    pub(crate) fn data_of<'b>(&self, bytes: &'b [u8], info: &GgufTensorInfo) -> Result<&'b [u8]> {
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

    // ---- typed metadata access, with errors naming the key ----

    pub(crate) fn req(&self, key: &str) -> Result<&GgufValue> {
        self.get(key)
            .ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    pub(crate) fn wrong_type(key: &str, expected: &'static str, value: &GgufValue) -> GgufError {
        GgufError::WrongType {
            key: key.to_string(),
            expected,
            found: value.describe(),
        }
    }

    pub(crate) fn req_str(&self, key: &str) -> Result<&str> {
        let v = self.req(key)?;
        v.as_str()
            .ok_or_else(|| Self::wrong_type(key, "a string", v))
    }

    pub(crate) fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| Self::wrong_type(key, "a non-negative integer", v)),
        }
    }

    pub(crate) fn req_u64(&self, key: &str) -> Result<u64> {
        self.opt_u64(key)?
            .ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    /// A finite number: NaN or an infinity (an epsilon, a RoPE base) is an error, where JSON
    /// would have quietly made it `null` and the config its default.
    pub(crate) fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => Ok(Some(x)),
                Some(x) => Err(GgufError::BadValue {
                    key: key.to_string(),
                    detail: format!("is {x}, where a finite number belongs"),
                }),
                None => Err(Self::wrong_type(key, "a number", v)),
            },
        }
    }

    pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| Self::wrong_type(key, "a bool", v)),
        }
    }

    /// A count that may be stored per layer (an array); all layers must agree.
    pub(crate) fn uniform_u64(&self, key: &str) -> Result<Option<u64>> {
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
    /// The names of the file's tensors, in file order.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|t| t.name.as_str())
    }
}
