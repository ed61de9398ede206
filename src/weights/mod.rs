//! Weights from bytes: a name -> tensor map that models take their parameters from.
//!
//! Models take their parameters through a [`Loader`], which checks each name and shape against
//! the config and reports all missing, unexpected and mis-shaped tensors in one error.
//!
//! The words, from the files up: a [`Checkpoint`] is the weight files' bytes (safetensors
//! shards, a GGUF, a GGUF pair); [`WeightSet::from_files`] reads it into a [`WeightSet`], each
//! tensor by its Hugging Face name as a [`StoredTensor`] (floats, still-raw file bytes, or
//! packed blocks); a [`HostTensor`] is one as f32 in host memory; the [`Loader`] hands them to
//! the layers, where a matrix becomes a `models::linear::Weight` on the device.

pub mod gguf;
pub mod model_files;
pub mod precision;
pub mod safetensors;

pub use precision::{mixed_type, Precision};

use crate::buffers::f32_buffer;
use crate::error::{Error, Result};
pub use crate::files::Checkpoint;
use crate::quant::BlockMatrix;
use burn_tensor::{Device, Tensor, TensorData};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A tensor in host memory, f32, in PyTorch layout (row-major, outermost dimension first).
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }

    /// The same values under `shape`. A loader's placeholder for a missing or mis-shaped
    /// tensor (already reported, never computed with) has too few values for any real shape:
    /// it becomes a placeholder of the new rank instead of a panic.
    pub fn reshaped(self, shape: Vec<usize>) -> HostTensor {
        if shape.iter().product::<usize>() == self.data.len() {
            HostTensor::new(shape, self.data)
        } else {
            placeholder(&shape)
        }
    }

    /// The transpose of a 2-D tensor: `[out, in]` (PyTorch's Linear) to `[in, out]` (burn's);
    /// `None` when there is not the memory for it.
    pub fn transposed(&self) -> Option<HostTensor> {
        transpose(&self.data, self.shape[0], self.shape[1])
    }

    pub fn to_device<const D: usize>(self, device: &Device) -> Tensor<D> {
        Tensor::from_data(TensorData::new(self.data, self.shape), device)
    }
}

/// `[rows, cols]` values, row-major, as a `[cols, rows]` tensor; `None` when there is not the
/// memory for it (a weight is transposed beside its own copy, at load).
pub fn transpose(data: &[f32], rows: usize, cols: usize) -> Option<HostTensor> {
    debug_assert_eq!(data.len(), rows * cols);
    let mut out = f32_buffer(data.len())?;
    out.resize(data.len(), 0.0);
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    Some(HostTensor::new(vec![cols, rows], out))
}

/// A tensor as a checkpoint holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredTensor {
    /// Exact floats (f32, or bf16/f16 widened).
    Float(HostTensor),
    /// ggml Q8_0/Q4_0 blocks, kept packed.
    Blocks(BlockMatrix),
    /// Another quantized format, dequantized on read: re-quantizing it loses little, and
    /// keeping it as f32 would cost four bytes a weight.
    Dequantized(HostTensor),
    /// Exact floats still in the file's bytes (bf16/f16/f32), widened when taken.
    Raw(safetensors::RawTensor),
}

impl StoredTensor {
    pub fn shape(&self) -> Vec<usize> {
        match self {
            StoredTensor::Float(t) | StoredTensor::Dequantized(t) => t.shape.clone(),
            StoredTensor::Blocks(b) => vec![b.rows(), b.cols()],
            StoredTensor::Raw(r) => r.shape.clone(),
        }
    }

    /// The values as f32; `None` when there is not the memory to widen or unpack them (a
    /// tensor already held as f32 always comes back).
    pub fn try_into_host(self) -> Option<HostTensor> {
        match self {
            StoredTensor::Float(t) | StoredTensor::Dequantized(t) => Some(t),
            StoredTensor::Blocks(b) => {
                let values = b.try_dequantize()?;
                Some(HostTensor::new(vec![b.rows(), b.cols()], values))
            }
            StoredTensor::Raw(r) => r.try_into_host(),
        }
    }

    /// The values as f32, for a tensor that is f32 already or small: anything sized by a file
    /// goes through [`StoredTensor::try_into_host`] (the [`Loader`] does).
    pub fn into_host(self) -> HostTensor {
        let shape = self.shape();
        self.try_into_host()
            .unwrap_or_else(|| std::alloc::handle_alloc_error(f32_layout(&shape)))
    }
}

/// The memory `shape`'s values take as f32, for the allocator's error.
fn f32_layout(shape: &[usize]) -> std::alloc::Layout {
    let len = shape.iter().product::<usize>();
    std::alloc::Layout::array::<f32>(len).unwrap_or(std::alloc::Layout::new::<f32>())
}

/// The error for a tensor there is not the memory to hold as f32.
pub(crate) fn not_enough_memory(name: &str, shape: &[usize]) -> Error {
    Error::NoMemory(crate::buffers::no_memory_message(name, shape))
}

/// All tensors of a checkpoint, by name.
#[derive(Debug, Default)]
pub struct WeightSet {
    tensors: BTreeMap<String, StoredTensor>,
}

impl WeightSet {
    /// The one place that decides how each kind of weight file becomes tensors: the files'
    /// bytes are moved in, and packed GGUF blocks stay where they are read. Quantizing as it
    /// loads (`precision`), a safetensors tensor is widened to f32 only when its turn comes; an
    /// f32 model is widened up front, which frees the file's bytes sooner.
    pub fn from_files(checkpoint: Checkpoint, precision: Precision) -> Result<Self> {
        let mut set = WeightSet::new();
        match checkpoint {
            Checkpoint::Safetensors(buffers) => {
                let quantizing = precision.quantizes_floats();
                for b in buffers {
                    if quantizing {
                        set.read_safetensors_shared(Arc::new(b))?;
                    } else {
                        set.read_safetensors(&b)?;
                    }
                }
            }
            Checkpoint::GgufPair { text, mmproj } => {
                gguf::pair::read_pair_weights(&text, &mmproj, &mut set)?;
            }
            Checkpoint::Gguf(file) => {
                // One tensor at a time, packed blocks kept as they are: the file is never
                // widened to f32 as a whole.
                for (gguf_name, _) in file.header.llama_hf_names()? {
                    let (name, stored) = file.header.llama_hf_stored_in(&file.bytes, &gguf_name)?;
                    set.insert_stored(name, stored);
                }
            }
        }
        Ok(set)
    }

    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: String, tensor: HostTensor) {
        self.tensors.insert(name, StoredTensor::Float(tensor));
    }

    pub fn insert_stored(&mut self, name: String, tensor: StoredTensor) {
        self.tensors.insert(name, tensor);
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Removes and returns a tensor, if present.
    pub fn take(&mut self, name: &str) -> Option<StoredTensor> {
        self.tensors.remove(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }
}

/// Hands tensors to model constructors and keeps the books: every tensor asked for that is
/// missing or mis-shaped, and every tensor never asked for, is reported by [`Loader::finish`].
///
/// A missing tensor yields a one-element placeholder so construction can go on and the final
/// error lists all problems at once; the placeholder is never computed with.
pub struct Loader<'a> {
    weights: WeightSet,
    device: &'a Device,
    precision: Precision,
    missing: Vec<String>,
    misshaped: Vec<String>,
    /// The tensor there was not the memory to hold as f32 (the first: nothing is widened after).
    no_memory: Option<Error>,
}

impl<'a> Loader<'a> {
    pub fn new(weights: WeightSet, device: &'a Device) -> Self {
        Self::with_precision(weights, device, Precision::Auto)
    }

    /// A loader that holds matrices as `precision` says (see [`Precision`]).
    pub fn with_precision(weights: WeightSet, device: &'a Device, precision: Precision) -> Self {
        Self {
            weights,
            device,
            precision,
            missing: Vec::new(),
            misshaped: Vec::new(),
            no_memory: None,
        }
    }

    pub fn device(&self) -> &Device {
        self.device
    }

    pub fn contains(&self, name: &str) -> bool {
        self.weights.contains(name)
    }

    /// Drops a tensor the model does not use (e.g. an `lm_head` tied to the embeddings).
    pub fn ignore(&mut self, name: &str) {
        self.weights.take(name);
    }

    /// The tensor `name` as stored, which must have `shape`; a placeholder (after noting the
    /// problem) when it is missing or mis-shaped.
    fn stored(&mut self, name: &str, shape: &[usize]) -> StoredTensor {
        match self.weights.take(name) {
            Some(t) if t.shape() == shape => t,
            Some(t) => {
                self.misshaped
                    .push(format!("{name} is {:?}, expected {shape:?}", t.shape()));
                StoredTensor::Float(placeholder(shape))
            }
            None => {
                self.missing.push(name.to_string());
                StoredTensor::Float(placeholder(shape))
            }
        }
    }

    /// The host tensor `name` as f32, which must have `shape`.
    pub fn host(&mut self, name: &str, shape: &[usize]) -> HostTensor {
        let stored = self.stored(name, shape);
        self.widened(name, stored)
    }

    /// `stored` as f32; a placeholder (after noting the problem) when the memory is not there.
    fn widened(&mut self, name: &str, stored: StoredTensor) -> HostTensor {
        let shape = stored.shape();
        // Once a load is known to fail, it holds no more than it has: what still fits would
        // only leave less for the allocations that cannot fail gracefully.
        if self.no_memory.is_some() {
            return placeholder(&shape);
        }
        match stored.try_into_host() {
            Some(host) => host,
            None => self.no_memory_for(name, &shape),
        }
    }

    /// Notes that there was not the memory for the f32 values of `name`, `shape` (say, for a
    /// transposed copy the model makes of it), and gives the placeholder that stands in.
    pub fn no_memory_for(&mut self, name: &str, shape: &[usize]) -> HostTensor {
        self.no_memory
            .get_or_insert_with(|| not_enough_memory(name, shape));
        placeholder(shape)
    }

    pub fn tensor<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Tensor<D> {
        self.host(name, &shape).to_device(self.device)
    }

    /// A `[rows, cols]` matrix in the form [`Precision`] picks for it: packed blocks (as stored,
    /// or quantized now) or f32.
    pub fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> StoredTensor {
        let stored = self.stored(name, &[rows, cols]);
        let target = self.precision.target(name, &stored);
        match (stored, target) {
            (StoredTensor::Blocks(b), Some(ty)) if b.ty() == ty => StoredTensor::Blocks(b),
            (stored, Some(ty)) if BlockMatrix::fits(cols) => {
                let host = self.widened(name, stored);
                // A placeholder is never computed with; keep it as it is.
                if host.data.len() != rows * cols {
                    return StoredTensor::Float(host);
                }
                match BlockMatrix::quantize(ty, rows, cols, &host.data) {
                    Ok(b) => StoredTensor::Blocks(b),
                    Err(_) => StoredTensor::Float(host),
                }
            }
            (stored, _) => StoredTensor::Float(self.widened(name, stored)),
        }
    }

    /// A small `[rows, cols]` table added to activations (not multiplied), on the device as
    /// f32 holding the values of the form [`Precision`] picks for it: a file stores it packed,
    /// and quantizing on load gives the very numbers such a file would.
    pub fn table(&mut self, name: &str, [rows, cols]: [usize; 2]) -> Tensor<2> {
        let stored = self.matrix(name, rows, cols);
        self.widened(name, stored).to_device(self.device)
    }

    /// Succeeds only when every tensor asked for was there with its shape and none is left over.
    pub fn finish(self) -> Result<()> {
        // Out of memory says all there is to say: the other lists would only be its echoes.
        if let Some(e) = self.no_memory {
            return Err(e);
        }
        let extra: Vec<&str> = self.weights.names().collect();
        let mut problems = Vec::new();
        if !self.missing.is_empty() {
            problems.push(format!("missing tensors: {}", list(&self.missing)));
        }
        if !self.misshaped.is_empty() {
            problems.push(format!("wrong shapes: {}", list(&self.misshaped)));
        }
        if !extra.is_empty() {
            problems.push(format!("unexpected tensors: {}", list(&extra)));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Weights(problems.join("; ")))
        }
    }
}

fn placeholder(shape: &[usize]) -> HostTensor {
    HostTensor::new(vec![1; shape.len()], vec![0.0])
}

/// At most a dozen names, then a count: an error message stays readable for a wrong file.
fn list<S: AsRef<str>>(items: &[S]) -> String {
    let shown: Vec<&str> = items.iter().take(12).map(AsRef::as_ref).collect();
    let mut s = shown.join(", ");
    if items.len() > shown.len() {
        s.push_str(&format!(" (and {} more)", items.len() - shown.len()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_lists_every_problem() {
        let mut w = WeightSet::new();
        w.insert("a".into(), HostTensor::new(vec![2], vec![0.0; 2]));
        w.insert("b".into(), HostTensor::new(vec![3], vec![0.0; 3]));
        w.insert("zzz".into(), HostTensor::new(vec![1], vec![0.0]));
        let device = Device::flex();
        let mut loader = Loader::new(w, &device);
        let _ = loader.tensor("a", [2]);
        let _ = loader.tensor("b", [4]);
        let _ = loader.tensor("c", [1]);
        let err = loader.finish().unwrap_err().to_string();
        assert!(err.contains("missing tensors: c"), "{err}");
        assert!(err.contains("b is [3], expected [4]"), "{err}");
        assert!(err.contains("unexpected tensors: zzz"), "{err}");
    }

    #[test]
    fn transpose_swaps_axes() {
        let t = HostTensor::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!(
            t.transposed(),
            Some(HostTensor::new(vec![3, 2], vec![1., 4., 2., 5., 3., 6.]))
        );
        // Out of memory, said (the loader turns it into an error naming the tensor).
        let _less = crate::buffers::budget::limit(5);
        assert_eq!(t.transposed(), None);
    }
}
