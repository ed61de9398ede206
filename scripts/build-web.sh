#!/usr/bin/env bash
# Builds the browser app's engine, the crate for wasm32 twice, each with wasm-bindgen's ES-module
# glue: www/pkg/ (WebGPU + CPU, one thread) and www/pkg-threads/ (CPU on several threads, for
# cross-origin isolated pages; www/engine.js picks). Sourced by serve.sh (release) and test.sh (dev).
#   WASM_PROFILE=release|dev (default release)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup.sh

profile="${WASM_PROFILE:-release}"
# wasm-bindgen's CLI must be exactly the version of the wasm-bindgen crate in Cargo.lock.
want=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/[^0-9.]/, ""); print; exit}' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$want" ]; then
  echo "build-web: installing wasm-bindgen-cli $want (a few minutes, once)"
  # (a tool, not our code: built without the lint wrapper test.sh may have set)
  env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS cargo install wasm-bindgen-cli --version "$want"
fi

# Its own target dirs, so the native and wasm builds never wait on each other's lock.
wasm_target="$CARGO_TARGET_DIR-wasm"
threads_target="$CARGO_TARGET_DIR-wasm-threads"
flags=(--target wasm32-unknown-unknown --lib --no-default-features)
[ "$profile" = release ] && flags+=(--release)
dir=$([ "$profile" = release ] && echo release || echo debug)

echo "== wasm32 build ($profile): WebGPU + CPU, one thread -> www/pkg"
CARGO_TARGET_DIR="$wasm_target" cargo build "${flags[@]}" --features webgpu
wasm-bindgen --target web --no-typescript --out-dir www/pkg \
  "$wasm_target/wasm32-unknown-unknown/$dir/captioner.wasm"

# The threaded CPU build: shared memory and atomics need the standard library rebuilt with them
# (`-Z build-std`, which stable cargo allows under RUSTC_BOOTSTRAP, from the rust-src component);
# the flags are in setup.sh.
echo "== wasm32 build ($profile): CPU on threads -> www/pkg-threads"
installed=$(rustup component list --installed 2>/dev/null || true)
grep -q '^rust-src' <<<"$installed" || rustup component add rust-src
RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$threads_target" \
  RUSTFLAGS="$CAPTIONER_WASM_THREADS_RUSTFLAGS" \
  cargo build "${flags[@]}" --features threads -Z build-std=panic_abort,std
wasm-bindgen --target web --no-typescript --out-dir www/pkg-threads \
  "$threads_target/wasm32-unknown-unknown/$dir/captioner.wasm"
ls -la www/pkg www/pkg-threads
