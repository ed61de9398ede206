#!/usr/bin/env bash
# Sets up what the tests need, then runs every test: formatting, lints, the native test suite
# (CPU backend, the wgpu backend on lavapipe, real SmolLM2 weights), the wasm32 build and the
# browser tests (the page and the embedding API in headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
# The browser tests' engine: both wasm32 builds (dev profile: dependencies are optimised anyway,
# see Cargo.toml) and their wasm-bindgen glue in www/pkg/ and www/pkg-threads/.
WASM_PROFILE=dev scripts/build-web.sh
echo "== cargo clippy (wasm32: the browser binding, both builds)"
CARGO_TARGET_DIR="$CARGO_TARGET_DIR-wasm" cargo clippy --target wasm32-unknown-unknown --lib --no-default-features --features webgpu -- -D warnings
RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$CARGO_TARGET_DIR-wasm-threads" \
  RUSTFLAGS="$CAPTIONER_WASM_THREADS_RUSTFLAGS" \
  cargo clippy --target wasm32-unknown-unknown --lib --no-default-features --features threads -Z build-std=panic_abort,std -- -D warnings
echo "== tests"
# The wgpu backend runs on whatever Vulkan device is present (lavapipe here).
export CAPTIONER_TEST_WGPU=1
cargo test --all-targets -- --test-threads=1
echo "== browser tests (headless Chromium, WebGPU on SwiftShader)"
. scripts/setup-browser.sh
CAPTIONER_BIN="$CARGO_TARGET_DIR/debug/captioner" node --test tests/browser/
