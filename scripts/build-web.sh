#!/usr/bin/env bash
# Builds the browser app's engine: the crate for wasm32 (WebGPU + CPU backends), then
# wasm-bindgen's ES-module glue into www/pkg/. Sourced by serve.sh (release) and test.sh (dev).
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
  cargo install wasm-bindgen-cli --version "$want"
fi

# Its own target dir, so the native and wasm builds never wait on each other's lock.
wasm_target="$CARGO_TARGET_DIR-wasm"
flags=(--target wasm32-unknown-unknown --lib --no-default-features)
[ "$profile" = release ] && flags+=(--release)
echo "== wasm32 build ($profile)"
CARGO_TARGET_DIR="$wasm_target" cargo build "${flags[@]}"
dir=$([ "$profile" = release ] && echo release || echo debug)
echo "== wasm-bindgen -> www/pkg"
wasm-bindgen --target web --no-typescript --out-dir www/pkg \
  "$wasm_target/wasm32-unknown-unknown/$dir/captioner.wasm"
ls -la www/pkg
