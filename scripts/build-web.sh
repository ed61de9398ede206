#!/usr/bin/env bash
# Builds the browser app's engine, the crate for wasm32 twice, each with wasm-bindgen's ES-module
# glue: www/pkg/ (WebGPU + CPU, one thread) and www/pkg-threads/ (CPU on several threads, for
# cross-origin isolated pages; www/engine.js picks). Run by serve.sh (web) and test.sh (wasm-dev).
#   scripts/build-web.sh [webgpu] [threads]   the builds to make (default: both)
#   WASM_PROFILE=web|release|wasm-dev|dev (default web: small, see Cargo.toml; wasm-dev: what
#   test.sh builds)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup.sh

profile="${WASM_PROFILE:-web}"
builds=("$@")
[ ${#builds[@]} -gt 0 ] || builds=(webgpu threads)
for b in "${builds[@]}"; do
  case "$b" in webgpu | threads) ;; *) echo "build-web: unknown build '$b' (webgpu or threads)" >&2; exit 2 ;; esac
done
wants() { [[ " ${builds[*]} " == *" $1 "* ]]; }
command -v node >/dev/null || { echo "build-web: needs Node.js (scripts/setup-browser.sh installs it)" >&2; exit 1; }
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
flags=(--target wasm32-unknown-unknown --lib --no-default-features --profile "$profile")
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
# Function names are about a fifth of the module; a shipped build leaves them out (a panic's
# message still reaches the console), a test build keeps them.
bindgen=(--target web --no-typescript)
case "$profile" in dev | wasm-dev) ;; *) bindgen+=(--remove-name-section --remove-producers-section) ;; esac
# Writes the glue beside OUT and then moves it in, so a page being served never loads half a
# build (serve.sh serves while the threaded build is still going).
bindgen_into() {
  rm -rf "$1.new"
  wasm-bindgen "${bindgen[@]}" --out-dir "$1.new" "$2"
  # One self-contained glue module (the threaded build's helpers start from a copy of it; see
  # the script).
  node tools/inline_snippets.mjs "$1.new"
  rm -rf "$1"
  mv "$1.new" "$1"
}

if wants webgpu; then
  echo "== wasm32 build ($profile): WebGPU + CPU, one thread -> www/pkg"
  CARGO_TARGET_DIR="$wasm_target" cargo build "${flags[@]}" --features webgpu
  bindgen_into www/pkg "$wasm_target/wasm32-unknown-unknown/$dir/captioner.wasm"
fi

# The threaded CPU build: shared memory and atomics need the standard library rebuilt with them
# (`-Z build-std`, which stable cargo allows under RUSTC_BOOTSTRAP, from the rust-src component);
# the flags are in setup.sh.
if wants threads; then
  echo "== wasm32 build ($profile): CPU on threads -> www/pkg-threads"
  installed=$(rustup component list --installed 2>/dev/null || true)
  grep -q '^rust-src' <<<"$installed" || rustup component add rust-src
  RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$threads_target" \
    RUSTFLAGS="$CAPTIONER_WASM_THREADS_RUSTFLAGS" \
    cargo build "${flags[@]}" --features threads -Z build-std=panic_abort,std
  bindgen_into www/pkg-threads "$threads_target/wasm32-unknown-unknown/$dir/captioner.wasm"
fi
for b in "${builds[@]}"; do
  pkg=www/pkg; [ "$b" = webgpu ] || pkg=www/pkg-threads
  echo "$pkg/captioner_bg.wasm: $(stat -c %s "$pkg/captioner_bg.wasm") bytes, $(gzip -9c "$pkg/captioner_bg.wasm" | wc -c) gzipped"
done
