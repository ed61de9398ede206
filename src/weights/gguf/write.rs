//! Writing GGUF (version 3): metadata, a tensor table and aligned tensor data, with llama.cpp's
//! reference quantizers for Q8_0 and Q4_0 (`quant::reference`), so the files Captioner writes
//! are the ones llama.cpp's own tools would write from the same numbers.

use super::{GgmlType, GgufError, GgufValue};
use half::f16;
use std::io::{self, Write};
use std::ops::Range;

/// Tensor data starts at, and each tensor is padded to, a multiple of this (GGUF's default).
pub const ALIGNMENT: usize = 32;

// The reference quantizers are the quantization layer's; tests and tools reach them here too.
pub use crate::quant::reference::{largest_magnitude, quantize_q4_0, quantize_q8_0};

/// Elements per Q8_0 / Q4_0 block.
const BLOCK: usize = 32;

struct TensorEntry {
    name: String,
    /// ggml order: innermost dimension first.
    dims: Vec<u64>,
    ggml_type: GgmlType,
    /// Bytes in the file (before padding): `data`'s, or a tensor's written later.
    len: usize,
    data: Vec<u8>,
}

/// A GGUF file being assembled in memory.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<TensorEntry>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a metadata key (in the order given).
    pub fn metadata(&mut self, key: &str, value: GgufValue) {
        self.metadata.push((key.to_string(), value));
    }

    /// Adds a tensor from f32 values of the given PyTorch-order shape, stored as `ggml_type`
    /// (F32, F16, Q8_0 or Q4_0; quantized types need a multiple of 32 in the innermost
    /// dimension).
    pub fn tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        values: &[f32],
        ggml_type: GgmlType,
    ) -> Result<(), GgufError> {
        let data = encode(name, shape, values, ggml_type)?;
        self.tensor_bytes(name, shape, ggml_type, data);
        Ok(())
    }

    /// Adds a tensor whose data is already in `ggml_type`'s layout (blocks quantized by the
    /// caller), with its PyTorch-order shape.
    pub fn tensor_bytes(
        &mut self,
        name: &str,
        shape: &[usize],
        ggml_type: GgmlType,
        data: Vec<u8>,
    ) {
        self.tensors.push(TensorEntry {
            name: name.to_string(),
            dims: shape.iter().rev().map(|&d| d as u64).collect(),
            ggml_type,
            len: data.len(),
            data,
        });
    }

    /// Adds a tensor of `len` bytes in `ggml_type`'s layout whose data is written into the
    /// file's frame later (see [`Self::into_frame`]); until then it reads as zeros.
    pub fn tensor_later(&mut self, name: &str, shape: &[usize], ggml_type: GgmlType, len: usize) {
        self.tensors.push(TensorEntry {
            name: name.to_string(),
            dims: shape.iter().rev().map(|&d| d as u64).collect(),
            ggml_type,
            len,
            data: Vec::new(),
        });
    }

    /// Writes the file: header, metadata, tensor table, then the aligned data.
    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(&self.head())?;
        for t in &self.tensors {
            out.write_all(&t.data)?;
            out.write_all(&vec![0u8; padded(t.len) - t.data.len()])?;
        }
        Ok(())
    }

    /// The whole file in one buffer, and where each tensor's data is in it (in the order they
    /// were added): a tensor added with [`Self::tensor_later`] is written there in place, so a
    /// file is made without a second copy of its data.
    pub fn into_frame(self) -> Result<(Vec<u8>, Vec<Range<usize>>), GgufError> {
        let mut out = self.head();
        let data = self
            .tensors
            .iter()
            .try_fold(0usize, |sum, t| sum.checked_add(padded(t.len)));
        let too_big = || GgufError::Unsupported("the file does not fit in memory".into());
        out.try_reserve_exact(data.ok_or_else(too_big)?)
            .map_err(|_| too_big())?;
        let mut places = Vec::with_capacity(self.tensors.len());
        for t in self.tensors {
            let start = out.len();
            out.extend_from_slice(&t.data);
            out.resize(start + padded(t.len), 0);
            places.push(start..start + t.len);
        }
        Ok((out, places))
    }

    /// Header, metadata and tensor table, padded to where the data starts.
    fn head(&self) -> Vec<u8> {
        let mut head = Vec::new();
        head.extend_from_slice(b"GGUF");
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut head, key);
            head.extend_from_slice(&value_type(value).to_le_bytes());
            put_value(&mut head, value);
        }
        // (u64: the sum of a big pack's tensors may not fit a 32-bit usize, which
        // `into_frame` then reports)
        let mut offset = 0u64;
        for t in &self.tensors {
            put_string(&mut head, &t.name);
            head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            offset = offset.saturating_add(padded(t.len) as u64);
        }
        head.resize(padded(head.len()), 0);
        head
    }
}

/// f32 values of a PyTorch-order `shape` in `ggml_type`'s layout (F32, F16, Q8_0 or Q4_0;
/// quantized types need a multiple of 32 in the innermost dimension). `name` is for errors.
pub fn encode(
    name: &str,
    shape: &[usize],
    values: &[f32],
    ggml_type: GgmlType,
) -> Result<Vec<u8>, GgufError> {
    let n: usize = shape.iter().product();
    if n != values.len() {
        return Err(GgufError::Unsupported(format!(
            "tensor {name}: shape {shape:?} holds {n} values, not {}",
            values.len()
        )));
    }
    let inner = shape.last().copied().unwrap_or(1);
    let quantized = matches!(ggml_type, GgmlType::Q8_0 | GgmlType::Q4_0);
    if quantized && inner % BLOCK != 0 {
        return Err(GgufError::Unsupported(format!(
            "tensor {name}: {ggml_type:?} needs rows of a multiple of {BLOCK} values, not {inner}"
        )));
    }
    Ok(match ggml_type {
        GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => values
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        GgmlType::Q8_0 => quantize_q8_0(values),
        GgmlType::Q4_0 => quantize_q4_0(values),
        other => {
            return Err(GgufError::Unsupported(format!(
                "tensor {name}: writing {other:?} is not supported"
            )))
        }
    })
}

fn padded(n: usize) -> usize {
    n.div_ceil(ALIGNMENT) * ALIGNMENT
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// GGUF's metadata type ids.
fn value_type(v: &GgufValue) -> u32 {
    match v {
        GgufValue::U8(_) => 0,
        GgufValue::I8(_) => 1,
        GgufValue::U16(_) => 2,
        GgufValue::I16(_) => 3,
        GgufValue::U32(_) => 4,
        GgufValue::I32(_) => 5,
        GgufValue::F32(_) => 6,
        GgufValue::Bool(_) => 7,
        GgufValue::String(_) => 8,
        GgufValue::Array(_) => 9,
        GgufValue::U64(_) => 10,
        GgufValue::I64(_) => 11,
        GgufValue::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.push(*x as u8),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(u8::from(*x)),
        GgufValue::String(s) => put_string(out, s),
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Array(items) => {
            // An empty array still names a type; GGUF readers accept any.
            let ty = items.first().map(value_type).unwrap_or(4);
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::gguf::{dequantize, Gguf};

    /// Deterministic values with a spread of magnitudes, an all-zero block and exact ties.
    fn values(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                if (64..96).contains(&i) {
                    0.0
                } else {
                    ((i as f32 * 0.731).sin() * (1.0 + (i % 7) as f32)).round() / 4.0
                        + (i as f32 * 0.113).cos() * 0.01
                }
            })
            .collect()
    }

    fn max_error(ty: GgmlType, x: &[f32]) -> f32 {
        let data = match ty {
            GgmlType::Q8_0 => quantize_q8_0(x),
            _ => quantize_q4_0(x),
        };
        let back = dequantize(ty, &data).expect("dequantize");
        assert_eq!(back.len(), x.len());
        x.iter()
            .zip(&back)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn quantizers_stay_within_their_step() {
        let x = values(256);
        for (ty, levels) in [(GgmlType::Q8_0, 127.0), (GgmlType::Q4_0, 8.0)] {
            for block in x.chunks(32) {
                let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                let step = amax / levels;
                // Half a step of rounding (a whole one where Q4_0 clips at +7), plus f16 scale
                // rounding.
                let bound = step * if ty == GgmlType::Q4_0 { 1.0 } else { 0.5 } + amax * 1e-3;
                let err = max_error(ty, block);
                assert!(err <= bound, "{ty:?}: {err} > {bound}");
            }
        }
        // An all-zero block stays exactly zero.
        assert_eq!(max_error(GgmlType::Q4_0, &[0.0; 32]), 0.0);
        assert_eq!(max_error(GgmlType::Q8_0, &[0.0; 32]), 0.0);
    }

    #[test]
    fn q4_0_maps_the_largest_magnitude_exactly() {
        let mut x = vec![0.1f32; 32];
        x[5] = -2.0;
        x[20] = 1.5;
        let back = dequantize(GgmlType::Q4_0, &quantize_q4_0(&x)).expect("dequantize");
        assert_eq!(back[5], -2.0);
        // d = -2 / -8 = 0.25: 1.5 is 6 steps above zero.
        assert_eq!(back[20], 1.5);
    }

    #[test]
    fn written_files_parse_back_with_their_metadata_and_tensors() {
        let mut w = GgufWriter::new();
        w.metadata("general.architecture", GgufValue::String("llama".into()));
        w.metadata("llama.block_count", GgufValue::U32(2));
        w.metadata("llama.rope.freq_base", GgufValue::F32(100000.0));
        w.metadata("tokenizer.ggml.add_bos_token", GgufValue::Bool(false));
        w.metadata(
            "tokenizer.ggml.tokens",
            GgufValue::Array(vec![
                GgufValue::String("<s>".into()),
                GgufValue::String("é".into()),
            ]),
        );
        let x = values(2 * 64);
        w.tensor("a.f32", &[3, 2], &x[..6], GgmlType::F32).unwrap();
        w.tensor("b.q8", &[2, 64], &x, GgmlType::Q8_0).unwrap();
        w.tensor("c.q4", &[2, 64], &x, GgmlType::Q4_0).unwrap();
        w.tensor("d.f16", &[5], &x[..5], GgmlType::F16).unwrap();
        // Rows that are not whole blocks cannot be quantized.
        assert!(w.tensor("bad", &[2, 48], &x[..96], GgmlType::Q8_0).is_err());
        assert!(w.tensor("bad", &[7], &x[..6], GgmlType::F32).is_err());
        let mut bytes = Vec::new();
        w.write(&mut bytes).unwrap();

        let g = Gguf::parse(&bytes).expect("parses");
        assert_eq!(g.version, 3);
        assert_eq!(g.architecture().unwrap(), "llama");
        assert_eq!(g.get("llama.block_count"), Some(&GgufValue::U32(2)));
        assert_eq!(
            g.get("llama.rope.freq_base"),
            Some(&GgufValue::F32(100000.0))
        );
        assert_eq!(
            g.get("tokenizer.ggml.add_bos_token"),
            Some(&GgufValue::Bool(false))
        );
        assert_eq!(
            g.get("tokenizer.ggml.tokens")
                .and_then(|v| v.as_array())
                .map(|a| a.len()),
            Some(2)
        );
        let (shape, a) = g.tensor_f32(&bytes, "a.f32").unwrap();
        assert_eq!((shape, a.as_slice()), (vec![3, 2], &x[..6]));
        let (shape, b) = g.tensor_f32(&bytes, "b.q8").unwrap();
        assert_eq!(shape, vec![2, 64]);
        assert_eq!(b, dequantize(GgmlType::Q8_0, &quantize_q8_0(&x)).unwrap());
        let (_, c) = g.tensor_f32(&bytes, "c.q4").unwrap();
        assert_eq!(c, dequantize(GgmlType::Q4_0, &quantize_q4_0(&x)).unwrap());
        let (_, d) = g.tensor_f32(&bytes, "d.f16").unwrap();
        for (got, want) in d.iter().zip(&x[..5]) {
            assert!((got - want).abs() <= want.abs() * 1e-3 + 1e-7);
        }
        // Every tensor's data is aligned.
        for name in ["a.f32", "b.q8", "c.q4", "d.f16"] {
            assert_eq!(g.tensor_info(name).unwrap().offset as usize % ALIGNMENT, 0);
        }
    }
}
