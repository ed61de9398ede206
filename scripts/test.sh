#!/usr/bin/env bash
# Sets up what the tests need, then runs every test: formatting, lints, the native test suite
# (CPU backend, the wgpu backend on lavapipe, real SmolLM2 weights) and the wasm32 build.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== wasm32 build"
# Its own target dir, so a native build never waits on the wasm build's lock.
CARGO_TARGET_DIR="$CARGO_TARGET_DIR-wasm" cargo build --target wasm32-unknown-unknown --lib --no-default-features
echo "== tests"
# The wgpu backend runs on whatever Vulkan device is present (lavapipe here).
export CAPTIONER_TEST_WGPU=1
cargo test --all-targets -- --test-threads=1
