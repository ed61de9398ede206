//! Hugging Face safetensors from an in-memory buffer (the browser has no filesystem).
//! bf16, f16 and f32 tensors are widened to f32 on load.

use super::{HostTensor, WeightSet};
use crate::error::{Error, Result};
use safetensors::{Dtype, SafeTensors};

impl WeightSet {
    /// Reads every tensor of a safetensors buffer. Several buffers (sharded checkpoints) can be
    /// read into the same set one after another.
    pub fn read_safetensors(&mut self, bytes: &[u8]) -> Result<()> {
        let file =
            SafeTensors::deserialize(bytes).map_err(|e| Error::Safetensors(e.to_string()))?;
        for (name, view) in file.tensors() {
            let raw = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => raw
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                Dtype::BF16 => raw
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::F16 => raw
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                other => {
                    return Err(Error::Safetensors(format!(
                        "tensor {name} has dtype {other:?}; only F32, BF16 and F16 are supported"
                    )))
                }
            };
            self.insert(name, HostTensor::new(view.shape().to_vec(), data));
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
