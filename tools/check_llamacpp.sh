#!/usr/bin/env bash
# Checks that llama.cpp runs the GGUF pair `captioner quantize --llama-cpp` writes, and that
# at q8_0 it answers exactly as with the pair llama.cpp's own converter made from the same
# model (tests/fixtures/llamacpp-pair, see tools/make_llamacpp_pair.sh). Run by a developer:
#   tools/check_llamacpp.sh LLAMA_MTMD_CLI [CAPTIONER_BIN]
# (llama-mtmd-cli built from llama.cpp's source, e.g. the copy vendored in the PyPI sdist
# llama_cpp_python==0.3.36: cmake -B build && cmake --build build --target llama-mtmd-cli).
set -euo pipefail
cli="$1"
repo="$(cd "$(dirname "$0")/.." && pwd)"
captioner="${2:-${CARGO_TARGET_DIR:-$HOME/.cache/captioner-target}/debug/captioner}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
image="$repo/tests/fixtures/images/photo_640x480.jpg"
ask() { # text-model mmproj -> the generated text
  "$cli" -m "$1" --mmproj "$2" --image "$image" -p "Can you describe this image?" \
    -n 12 --temp 0 -t 1 2>/dev/null | grep -v '^[[:space:]]*$' | tail -n 1
}
theirs="$(ask "$repo/tests/fixtures/llamacpp-pair/tiny-b-Q8_0.gguf" "$repo/tests/fixtures/llamacpp-pair/mmproj-tiny-b-Q8_0.gguf")"
for type in q8_0 q4_0; do
  "$captioner" quantize --model "$repo/tests/fixtures/tiny-b" --out "$tmp/$type" --type "$type" \
    --name tiny --llama-cpp > /dev/null
  upper="$(echo "$type" | tr '[:lower:]' '[:upper:]')"
  ours="$(ask "$tmp/$type/tiny-$upper.gguf" "$tmp/$type/mmproj-tiny-$upper.gguf")"
  echo "$type: llama.cpp on Captioner's pair: $ours"
  [ -n "$ours" ] || { echo "llama.cpp produced nothing"; exit 1; }
  if [ "$type" = q8_0 ] && [ "$ours" != "$theirs" ]; then
    echo "differs from llama.cpp's own q8_0 pair: $theirs"
    exit 1
  fi
done
echo "llama.cpp's own q8_0 pair: $theirs"
