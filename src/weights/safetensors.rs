//! Hugging Face safetensors from an in-memory buffer (the browser has no filesystem).
//! bf16, f16 and f32 tensors are widened to f32 on load.

use super::{not_enough_memory, HostTensor, StoredTensor, WeightSet};
use crate::buffers::f32_buffer;
use crate::error::{Error, Result};
use safetensors::{Dtype, SafeTensors};
use std::fmt;
use std::sync::Arc;

/// The element types a safetensors tensor may have here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawDtype {
    F32,
    BF16,
    F16,
}

impl RawDtype {
    /// Tensor `name`'s safetensors dtype, if it is one of the three.
    pub fn of(name: &str, dtype: Dtype) -> Result<Self> {
        match dtype {
            Dtype::F32 => Ok(RawDtype::F32),
            Dtype::BF16 => Ok(RawDtype::BF16),
            Dtype::F16 => Ok(RawDtype::F16),
            other => Err(Error::Safetensors(format!(
                "tensor {name} has dtype {other:?}; only F32, BF16 and F16 are supported"
            ))),
        }
    }

    /// The little-endian values of `raw` as f32 (exact for all three); `None` when there is
    /// not the memory for them (see [`crate::buffers`]).
    pub fn widen(self, raw: &[u8]) -> Option<Vec<f32>> {
        let width = match self {
            RawDtype::F32 => 4,
            RawDtype::BF16 | RawDtype::F16 => 2,
        };
        let mut out = f32_buffer(raw.len() / width)?;
        match self {
            RawDtype::F32 => out.extend(
                raw.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
            RawDtype::BF16 => out.extend(
                raw.chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            ),
            RawDtype::F16 => out.extend(
                raw.chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
            ),
        }
        Some(out)
    }
}

/// A tensor still in its file's bytes.
#[derive(Clone)]
pub struct RawTensor {
    pub shape: Vec<usize>,
    dtype: RawDtype,
    file: Arc<Vec<u8>>,
    start: usize,
    len: usize,
}

impl RawTensor {
    /// The values widened to f32; `None` when there is not the memory for them.
    pub fn try_into_host(self) -> Option<HostTensor> {
        let data = self
            .dtype
            .widen(&self.file[self.start..self.start + self.len])?;
        Some(HostTensor::new(self.shape, data))
    }
}

impl PartialEq for RawTensor {
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape
            && self.dtype == other.dtype
            && self.file[self.start..self.start + self.len]
                == other.file[other.start..other.start + other.len]
    }
}

impl fmt::Debug for RawTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawTensor({:?} {:?})", self.dtype, self.shape)
    }
}

impl WeightSet {
    /// Reads every tensor of a safetensors buffer. Several buffers (sharded checkpoints) can be
    /// read into the same set one after another.
    pub fn read_safetensors(&mut self, bytes: &[u8]) -> Result<()> {
        let file =
            SafeTensors::deserialize(bytes).map_err(|e| Error::Safetensors(e.to_string()))?;
        for (name, view) in file.tensors() {
            let data = RawDtype::of(&name, view.dtype())?
                .widen(view.data())
                .ok_or_else(|| not_enough_memory(&name, view.shape()))?;
            self.insert(name, HostTensor::new(view.shape().to_vec(), data));
        }
        Ok(())
    }

    /// Like [`WeightSet::read_safetensors`], but each tensor stays in `file` until the loader
    /// takes it, and is widened to f32 only then: a model quantized as it loads never holds
    /// more than one f32 tensor at a time.
    pub fn read_safetensors_shared(&mut self, file: Arc<Vec<u8>>) -> Result<()> {
        let header =
            SafeTensors::deserialize(&file).map_err(|e| Error::Safetensors(e.to_string()))?;
        let mut found = Vec::new();
        for (name, view) in header.tensors() {
            let dtype = RawDtype::of(&name, view.dtype())?;
            let start = view.data().as_ptr() as usize - file.as_ptr() as usize;
            found.push((name, view.shape().to_vec(), dtype, start, view.data().len()));
        }
        drop(header);
        for (name, shape, dtype, start, len) in found {
            let raw = RawTensor {
                shape,
                dtype,
                file: file.clone(),
                start,
                len,
            };
            self.insert_stored(name, StoredTensor::Raw(raw));
        }
        Ok(())
    }

    pub fn from_safetensors(bytes: &[u8]) -> Result<Self> {
        let mut set = WeightSet::new();
        set.read_safetensors(bytes)?;
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    fn file(dtype: Dtype, bytes: &[u8], shape: Vec<usize>) -> Vec<u8> {
        let view = TensorView::new(dtype, shape, bytes).unwrap();
        safetensors::serialize([("w", view)], None).unwrap()
    }

    #[test]
    fn widens_bf16_and_f16() {
        let vals = [1.5f32, -2.0, 0.25];
        let bf: Vec<u8> = vals
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        let set = WeightSet::from_safetensors(&file(Dtype::BF16, &bf, vec![3])).unwrap();
        assert_eq!(set.tensors["w"].clone().into_host().data, vals);
        let f16: Vec<u8> = vals
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let set = WeightSet::from_safetensors(&file(Dtype::F16, &f16, vec![1, 3])).unwrap();
        assert_eq!(set.tensors["w"].shape(), vec![1, 3]);
        assert_eq!(set.tensors["w"].clone().into_host().data, vals);
    }

    #[test]
    fn shared_tensors_widen_when_taken() {
        let vals = [1.5f32, -2.0, 0.25, 8.0];
        let bf: Vec<u8> = vals
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        let mut set = WeightSet::new();
        set.read_safetensors_shared(Arc::new(file(Dtype::BF16, &bf, vec![2, 2])))
            .unwrap();
        let stored = set.take("w").unwrap();
        assert!(matches!(stored, StoredTensor::Raw(_)));
        assert_eq!(stored.shape(), vec![2, 2]);
        assert_eq!(stored.into_host().data, vals);
    }

    /// A tensor there is not the memory to widen or unpack is an error that names it, from the
    /// loader as from an up-front read: never an abort (a killed tab, in the browser).
    #[test]
    fn a_tensor_there_is_no_memory_for_is_an_error_not_an_abort() {
        use crate::buffers::budget;
        use crate::quant::{BlockMatrix, QuantType};
        use crate::weights::{Loader, Precision};
        let vals: Vec<f32> = (0..64).map(|i| i as f32 / 8.0).collect();
        let bf: Vec<u8> = vals
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        let bytes = file(Dtype::BF16, &bf, vec![2, 32]);
        let device = burn_tensor::Device::flex();
        let load = |limit: usize| {
            let mut set = WeightSet::new();
            set.read_safetensors_shared(Arc::new(bytes.clone()))
                .unwrap();
            let blocks = BlockMatrix::quantize(QuantType::Q8_0, 2, 32, &vals).unwrap();
            set.insert_stored("packed".into(), StoredTensor::Blocks(blocks));
            let _less = budget::limit(limit);
            let mut loader = Loader::with_precision(set, &device, Precision::F32);
            let raw = loader.host("w", &[2, 32]);
            let packed = loader.matrix("packed", 2, 32);
            (raw, packed, loader.finish())
        };
        let (raw, packed, done) = load(64);
        assert_eq!(raw.data.len(), 64);
        assert!(matches!(packed, StoredTensor::Float(t) if t.data.len() == 64));
        done.expect("room for 64 f32s each");
        let (_, _, done) = load(63);
        let err = done.expect_err("no room").to_string();
        assert!(err.contains("not enough memory to hold w as f32"), "{err}");
        // Packed blocks to unpack, alone.
        let mut set = WeightSet::new();
        let blocks = BlockMatrix::quantize(QuantType::Q8_0, 2, 32, &vals).unwrap();
        set.insert_stored("packed".into(), StoredTensor::Blocks(blocks));
        let _less = budget::limit(63);
        let mut loader = Loader::with_precision(set, &device, Precision::F32);
        let _ = loader.matrix("packed", 2, 32);
        let err = loader.finish().expect_err("no room").to_string();
        assert!(
            err.contains("not enough memory to hold packed as f32"),
            "{err}"
        );
        // Read up front.
        let err = WeightSet::from_safetensors(&bytes)
            .expect_err("no room")
            .to_string();
        assert!(
            err.contains("not enough memory to hold w as f32 (1 MiB)"),
            "{err}"
        );
    }

    #[test]
    fn truncated_buffer_is_an_error() {
        let bytes = file(Dtype::F32, &[0u8; 16], vec![4]);
        for cut in [0, 7, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                WeightSet::from_safetensors(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }
}
