//! Safetensors files made into the GGUF pair as their bytes arrive, in pieces of any size: the
//! browser converts a published folder while it downloads, so it never holds the whole bf16
//! checkpoint, only the tensor being read and the packed ones before it.
//!
//! Each file is its 8-byte header length, a JSON header (every tensor's dtype, shape and byte
//! range; the ranges tile the data without gaps), then the data. The header is checked against
//! the plan before any data is kept: a tensor the model does not use, one of the wrong shape or
//! type, or one seen in an earlier file is an error there, so no buffer is sized by a number the
//! plan did not give.

use super::{Pair, PairWriter};
use crate::error::{Error, Result};
use crate::files::ModelFiles;
use crate::weights::safetensors::RawDtype;
use crate::weights::{not_enough_memory, Precision};
use safetensors::tensor::Metadata;

/// A header larger than this is refused (published models' are tens of KB; safetensors' own
/// reader stops at 100 MB).
const MAX_HEADER: usize = 16 << 20;

/// A pair being written from safetensors files that arrive piece by piece: [`Self::push`] each
/// piece of a file in order, [`Self::end_file`] after its last, then [`Self::finish`].
pub struct PackStream {
    writer: PairWriter,
    /// Which planned tensors some file has listed.
    listed: Vec<bool>,
    file: File,
    /// The most tensor bytes held at once while waiting for the rest of a tensor.
    peak_held: usize,
}

/// Where the current file is.
enum File {
    /// Its length prefix and JSON header, as far as they have come.
    Header(Vec<u8>),
    /// Its data: the tensors in byte order, `next` the one arriving, `have` its bytes so far
    /// (kept in `held` when the pair uses it and it came in more than one piece).
    Data {
        tensors: Vec<Listed>,
        next: usize,
        have: usize,
        held: Vec<u8>,
    },
}

/// A tensor of the file's header.
struct Listed {
    name: String,
    /// Its place in the plan; `None` for a tensor the pair leaves out (its bytes are skipped).
    index: Option<usize>,
    dtype: RawDtype,
    len: usize,
}

impl PackStream {
    /// A pair of `files`' config at `precision` (its checkpoint is not read: the weights come
    /// through [`Self::push`]).
    pub fn new(
        files: &ModelFiles,
        precision: Precision,
        for_llama_cpp: bool,
        name: &str,
    ) -> Result<Self> {
        let writer = PairWriter::new(files, precision, for_llama_cpp, name)?;
        Ok(Self {
            listed: vec![false; writer.planned().len()],
            writer,
            file: File::Header(Vec::new()),
            peak_held: 0,
        })
    }

    /// The next bytes of the current file.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            match &mut self.file {
                File::Header(head) => {
                    let want = header_end(head)?.unwrap_or(8);
                    let take = (want - head.len()).min(bytes.len());
                    head.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if header_end(head)? == Some(head.len()) {
                        let head = std::mem::take(head);
                        let tensors = list(&self.writer, &mut self.listed, &head[8..])?;
                        self.file = File::Data {
                            tensors,
                            next: 0,
                            have: 0,
                            held: Vec::new(),
                        };
                    }
                }
                File::Data {
                    tensors,
                    next,
                    have,
                    held,
                } => {
                    let Some(t) = tensors.get(*next) else {
                        return Err(Error::Safetensors(
                            "the file goes on after the last tensor its header lists".into(),
                        ));
                    };
                    let take = (t.len - *have).min(bytes.len());
                    let (piece, rest) = bytes.split_at(take);
                    bytes = rest;
                    *have += take;
                    let Some(index) = t.index else {
                        if *have == t.len {
                            (*next, *have) = (*next + 1, 0);
                        }
                        continue;
                    };
                    let whole = if held.is_empty() && take == t.len {
                        // All of it in this piece: read in place.
                        Some(t.dtype.widen(piece))
                    } else {
                        if held.is_empty() {
                            // Sized by the plan's shape, which the header matched.
                            held.try_reserve_exact(t.len).map_err(|_| {
                                not_enough_memory(&t.name, &self.writer.planned()[index].shape)
                            })?;
                        }
                        held.extend_from_slice(piece);
                        self.peak_held = self.peak_held.max(held.len());
                        (held.len() == t.len).then(|| t.dtype.widen(&std::mem::take(held)))
                    };
                    if let Some(values) = whole {
                        let values = values.ok_or_else(|| {
                            not_enough_memory(&t.name, &self.writer.planned()[index].shape)
                        })?;
                        (*next, *have) = (*next + 1, 0);
                        self.writer.put(index, values)?;
                    }
                }
            }
        }
        // Tensors of no bytes are whole as soon as they are next.
        if let File::Data {
            tensors,
            next,
            have: 0,
            ..
        } = &mut self.file
        {
            while let Some(t) = tensors.get(*next).filter(|t| t.len == 0) {
                if let Some(index) = t.index {
                    self.writer.put(index, Vec::new())?;
                }
                *next += 1;
            }
        }
        Ok(())
    }

    /// The current file has ended: all of it must have come.
    pub fn end_file(&mut self) -> Result<()> {
        self.push(&[])?;
        match std::mem::replace(&mut self.file, File::Header(Vec::new())) {
            File::Data { tensors, next, .. } if next == tensors.len() => Ok(()),
            File::Data { tensors, next, .. } => Err(Error::Safetensors(format!(
                "the file ends inside tensor {} ({} of {} tensors whole)",
                tensors[next].name,
                next,
                tensors.len()
            ))),
            File::Header(head) if head.is_empty() => {
                Err(Error::Safetensors("an empty safetensors file".into()))
            }
            File::Header(_) => Err(Error::Safetensors("the file ends inside its header".into())),
        }
    }

    /// The pair, once every file has ended and every planned tensor has come.
    pub fn finish(self) -> Result<Pair> {
        if !matches!(&self.file, File::Header(head) if head.is_empty()) {
            return Err(Error::Safetensors(
                "the last safetensors file did not end".into(),
            ));
        }
        self.writer.finish()
    }

    /// The most bytes of one tensor held while its other pieces were on their way: what the
    /// stream keeps beyond the packed tensors.
    pub fn peak_held(&self) -> usize {
        self.peak_held
    }
}

/// The tensors of a file's JSON header in byte order, each checked against the plan and marked
/// in `listed`.
fn list(writer: &PairWriter, listed: &mut [bool], json: &[u8]) -> Result<Vec<Listed>> {
    let metadata: Metadata =
        serde_json::from_slice(json).map_err(|e| Error::Safetensors(format!("the header: {e}")))?;
    let mut tensors = Vec::new();
    let mut unused = Vec::new();
    for name in metadata.offset_keys() {
        let Some(info) = metadata.info(&name) else {
            continue;
        };
        let dtype = RawDtype::of(&name, info.dtype)?;
        let index = if writer.leaves_out(&name) {
            None
        } else if let Some(index) = writer.index_of(&name) {
            let planned = &writer.planned()[index].shape;
            if &info.shape != planned {
                return Err(Error::Weights(format!(
                    "{name} is {:?}, expected {planned:?}",
                    info.shape
                )));
            }
            if std::mem::replace(&mut listed[index], true) {
                return Err(Error::Weights(format!("tensor {name} appears twice")));
            }
            Some(index)
        } else {
            unused.push(name);
            continue;
        };
        // The header's validation checked each range against its shape and dtype.
        let (start, end) = info.data_offsets;
        tensors.push(Listed {
            name,
            index,
            dtype,
            len: end - start,
        });
    }
    if !unused.is_empty() {
        return Err(Error::Weights(format!(
            "tensors this model does not use: {}",
            unused.join(", ")
        )));
    }
    Ok(tensors)
}

/// Where the header of a file starting `head` ends (length prefix included), once the prefix
/// is there; an error for a length no header has.
fn header_end(head: &[u8]) -> Result<Option<usize>> {
    let Some(prefix) = head.get(..8) else {
        return Ok(None);
    };
    let mut n = [0u8; 8];
    n.copy_from_slice(prefix);
    let n = u64::from_le_bytes(n);
    if n < 2 || n > MAX_HEADER as u64 {
        return Err(Error::Safetensors(format!(
            "a header of {n} bytes (at most {MAX_HEADER}): not a safetensors file"
        )));
    }
    Ok(Some(8 + n as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::write_pair;
    use crate::files::Checkpoint;
    use safetensors::tensor::TensorView;
    use safetensors::{Dtype, SafeTensors};
    use std::path::PathBuf;

    const Q8: Precision = Precision::Uniform(crate::quant::QuantType::Q8_0);

    fn tiny_b() -> (ModelFiles, Vec<u8>) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-b");
        let files = ModelFiles::from_path(&dir).expect("tiny-b");
        let weights = std::fs::read(dir.join("model.safetensors")).expect("weights");
        (files, weights)
    }

    /// The file's tensors as safetensors files of their own, `pick` choosing which go in each.
    fn reshard(bytes: &[u8], shards: usize, pick: impl Fn(usize) -> usize) -> Vec<Vec<u8>> {
        let file = SafeTensors::deserialize(bytes).expect("parses");
        let mut tensors = file.tensors();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        (0..shards)
            .map(|shard| {
                let views: Vec<(String, TensorView)> = tensors
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| pick(*i) == shard)
                    .map(|(_, (name, view))| (name.clone(), view.clone()))
                    .collect();
                safetensors::serialize(views, None).expect("serializes")
            })
            .collect()
    }

    fn stream(files: &ModelFiles, precision: Precision) -> PackStream {
        PackStream::new(files, precision, false, "tiny-b").expect("plans")
    }

    #[test]
    fn pieces_of_any_size_give_the_same_pair_holding_one_tensor_at_most() {
        let (files, weights) = tiny_b();
        for precision in [Q8, Precision::Mixed] {
            let whole = write_pair(&files, precision, false, "tiny-b").expect("whole");
            let mut s = stream(&files, precision);
            // Sizes that split the length prefix, the header and tensors at every kind of place.
            let sizes = [1, 3, 8, 13, 64, 4093, 65536];
            let (mut at, mut i) = (0, 0);
            while at < weights.len() {
                let end = (at + sizes[i % sizes.len()]).min(weights.len());
                s.push(&weights[at..end]).expect("a piece");
                (at, i) = (end, i + 1);
            }
            s.end_file().expect("ends");
            let largest = SafeTensors::deserialize(&weights)
                .expect("parses")
                .tensors()
                .iter()
                .map(|(_, v)| v.data().len())
                .max()
                .expect("tensors");
            let peak = s.peak_held();
            assert!(
                peak > 0 && peak <= largest,
                "held {peak}, largest {largest}"
            );
            let piecewise = s.finish().expect("pair");
            assert!(
                piecewise.text == whole.text,
                "{precision:?}: text file differs"
            );
            assert!(
                piecewise.mmproj == whole.mmproj,
                "{precision:?}: mmproj differs"
            );
        }
    }

    #[test]
    fn shards_in_any_order_give_the_same_pair() {
        let (mut files, weights) = tiny_b();
        let whole = write_pair(&files, Q8, false, "tiny-b").expect("whole");
        // Every third tensor in the first shard: neither file is in plan order.
        let shards = reshard(&weights, 2, |i| usize::from(i % 3 != 0));
        let mut s = stream(&files, Q8);
        for shard in shards.iter().rev() {
            s.push(shard).expect("a shard");
            s.end_file().expect("ends");
        }
        let pair = s.finish().expect("pair");
        assert!(pair.text == whole.text && pair.mmproj == whole.mmproj);
        // `quantize` on a sharded folder: the same pair again.
        files.checkpoint = Checkpoint::Safetensors(shards);
        let sharded = write_pair(&files, Q8, false, "tiny-b").expect("sharded");
        assert!(sharded.text == whole.text && sharded.mmproj == whole.mmproj);
    }

    #[test]
    fn a_cut_long_or_empty_file_is_an_error() {
        let (files, weights) = tiny_b();
        let cut = |at: usize| {
            let mut s = stream(&files, Q8);
            s.push(&weights[..at])
                .and_then(|()| s.end_file())
                .map(|()| s)
        };
        for at in [0, 5, 100, weights.len() / 2, weights.len() - 1] {
            let err = cut(at).err().map(|e| e.to_string());
            assert!(err.is_some(), "cut at {at}");
        }
        // A whole file, then more bytes.
        let mut s = stream(&files, Q8);
        s.push(&weights).expect("whole");
        let err = s.push(&[0; 4]).expect_err("bytes past the end").to_string();
        assert!(err.contains("after the last tensor"), "{err}");
        // Every file ended, a tensor missing.
        let shards = reshard(&weights, 2, |i| usize::from(i == 0));
        let mut s = stream(&files, Q8);
        s.push(&shards[0]).expect("a shard");
        s.end_file().expect("ends");
        let err = s.finish().err().expect("a missing tensor").to_string();
        assert!(err.contains("missing tensor"), "{err}");
        // A file never ended.
        let mut s = stream(&files, Q8);
        s.push(&weights[..10]).expect("a piece");
        assert!(s.finish().is_err());
    }

    #[test]
    fn headers_are_checked_before_any_data() {
        let (files, _) = tiny_b();
        let file = |name: &str, shape: Vec<usize>, dtype: Dtype| {
            let n: usize = shape.iter().product::<usize>() * dtype.bitsize() / 8;
            let data = vec![0u8; n];
            let view = TensorView::new(dtype, shape, &data).expect("view");
            safetensors::serialize([(name, view)], None).expect("serializes")
        };
        // Only as far as the header: the data never comes.
        let header_of = |bytes: &[u8]| {
            let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
            bytes[..8 + n].to_vec()
        };
        let norm = "model.text_model.norm.weight";
        for (bytes, says) in [
            (
                file("model.extra", vec![4], Dtype::F32),
                "does not use: model.extra",
            ),
            (file(norm, vec![7], Dtype::F32), "expected [32]"),
            (file(norm, vec![32], Dtype::I32), "dtype"),
        ] {
            let mut s = stream(&files, Q8);
            let err = s.push(&header_of(&bytes)).expect_err(says).to_string();
            assert!(err.contains(says), "{err}");
        }
        // The same tensor in two files.
        let mut s = stream(&files, Q8);
        let once = file(norm, vec![32], Dtype::F32);
        s.push(&once).expect("once");
        s.end_file().expect("ends");
        let err = s.push(&header_of(&once)).expect_err("twice").to_string();
        assert!(err.contains("twice"), "{err}");
        // A tied head the checkpoint carries anyway is skipped, not an error.
        let mut s = stream(&files, Q8);
        s.push(&file("lm_head.weight", vec![2, 32], Dtype::BF16))
            .expect("skipped");
        s.end_file().expect("ends");
        // Lengths no header has.
        for n in [0u64, 1, 1 << 40] {
            let mut s = stream(&files, Q8);
            assert!(s.push(&n.to_le_bytes()).is_err(), "header length {n}");
        }
    }
}
