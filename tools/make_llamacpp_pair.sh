#!/usr/bin/env bash
# Makes tests/fixtures/llamacpp-pair/: tiny-b converted by llama.cpp's own converter
# (convert_hf_to_gguf.py, text model + --mmproj, --outtype q8_0), so the tests can prove the
# engine reads the files llama.cpp publishes. Run by a developer, never by CI.
#
# Needs llama.cpp's source (the copy vendored in the PyPI sdist llama_cpp_python==0.3.36 was
# used) and a Python with gguf 0.19, torch, transformers and sentencepiece:
#   tools/make_llamacpp_pair.sh LLAMA_CPP_SRC [PYTHON]
set -euo pipefail
src="$1"
python="${2:-python3}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="$repo/tests/fixtures/llamacpp-pair"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp -r "$repo/tests/fixtures/tiny-b" "$tmp/tiny-b"
rm -f "$tmp"/tiny-b/goldens*
# The published SmolVLM configs name the text model's class; the converter needs it.
"$python" - "$tmp/tiny-b/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["text_config"]["architectures"] = ["VLlama3ForCausalLM"]
json.dump(c, open(sys.argv[1], "w"), indent=2)
PY
mkdir -p "$out"
"$python" "$src/convert_hf_to_gguf.py" "$tmp/tiny-b" --outtype q8_0 --outfile "$out/tiny-b-Q8_0.gguf"
"$python" "$src/convert_hf_to_gguf.py" "$tmp/tiny-b" --outtype q8_0 --mmproj --outfile "$out/mmproj-tiny-b-Q8_0.gguf"
