#!/usr/bin/env bash
# Sets up what the tests need, then runs every test: formatting, lints (clippy, riding on the
# builds), the wasm32 builds, the native test suite (CPU backend, the wgpu backend on lavapipe,
# real SmolLM2 weights) and the browser tests (the page and the embedding API in headless
# Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
# Lints ride on the builds. Clippy's driver is rustc with clippy's lint passes added; `cargo
# clippy` is `cargo check` with it as the workspace's compiler (RUSTC_WORKSPACE_WRAPPER) and
# its arguments in CLIPPY_ARGS. Set here for the builds themselves, each target's crate is
# compiled once, linted (clippy -D warnings: the native lib, bins, tests and benches; both
# wasm32 lib builds), instead of separate `cargo clippy` runs that type-check every dependency
# a second time per target. What that saves on a fresh clone is in the README.
export RUSTC_WORKSPACE_WRAPPER="$(rustc --print sysroot)/bin/clippy-driver"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
# The browser tests' engine: both wasm32 builds (dev profile: dependencies are optimised anyway,
# see Cargo.toml) and their wasm-bindgen glue in www/pkg/ and www/pkg-threads/.
echo "== wasm32 builds, linted"
WASM_PROFILE=dev scripts/build-web.sh
echo "== tests, built linted"
# The wgpu backend runs on whatever Vulkan device is present (lavapipe here).
export CAPTIONER_TEST_WGPU=1
cargo test --all-targets -- --test-threads=1
echo "== browser tests (headless Chromium, WebGPU on SwiftShader)"
. scripts/setup-browser.sh
CAPTIONER_BIN="$CARGO_TARGET_DIR/debug/captioner" node --test tests/browser/
