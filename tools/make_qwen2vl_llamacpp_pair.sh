#!/usr/bin/env bash
# Makes tests/fixtures/qwen2vl/llamacpp-text/ and llamacpp-25/: the tiny Qwen2-VL and Qwen2.5-VL
# (tests/fixtures/qwen2vl/tiny-text, tiny-25) converted by llama.cpp's own converter
# (convert_hf_to_gguf.py, text model + --mmproj, f32), so the tests can prove the engine reads
# the pairs llama.cpp writes for this family. Run by a developer, never by CI.
#
# Needs llama.cpp's source (the copy vendored in the PyPI sdist llama_cpp_python==0.3.36 was
# used) and a Python with gguf 0.19, torch, transformers and sentencepiece:
#   tools/make_qwen2vl_llamacpp_pair.sh LLAMA_CPP_SRC [PYTHON]
#
# The converter names the pre-tokenizer by hashing how a known tokenizer splits a test text; the
# tiny model's tokenizer is no published one, so it is told the name of the split it does use:
# GPT-2's (a byte-level BPE with GPT-2's pattern, as tools/make_qwen2vl_goldens.py trains it).
# Its mmproj name table maps `visual.merger.mlp.2` to `mm.2` through the table of block indexes,
# which for a tower of 2 blocks stops at 1: the table is made for 3 (the file still says 2).
set -euo pipefail
src="$1"
python="${2:-python3}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
convert() {
  "$python" - "$src" "$@" <<'PY'
import sys
from pathlib import Path
src = Path(sys.argv[1])
sys.path[:0] = [str(src), str(src / "gguf-py")]
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt2"
mmproj_init = base.MmprojModel.__init__
def widened(self, *args, **kwargs):
    mmproj_init(self, *args, **kwargs)
    self.tensor_map = base.gguf.get_tensor_name_map(base.gguf.MODEL_ARCH.MMPROJ, max(self.block_count, 3))
base.MmprojModel.__init__ = widened
import convert_hf_to_gguf
sys.argv = ["convert_hf_to_gguf.py", *sys.argv[2:]]
convert_hf_to_gguf.main()
PY
}
for model in tiny-text tiny-25; do
  out="$repo/tests/fixtures/qwen2vl/llamacpp-${model#tiny-}"
  mkdir -p "$out"
  convert "$repo/tests/fixtures/qwen2vl/$model" --outtype f32 --outfile "$out/$model-F32.gguf"
  convert "$repo/tests/fixtures/qwen2vl/$model" --outtype f32 --mmproj --outfile "$out/mmproj-$model-F32.gguf"
done
