#!/usr/bin/env bash
# Builds llama.cpp's CPU tools (llama-bench, llama-mtmd-cli, llama-completion) from the copy
# vendored in the PyPI sdist llama_cpp_python==0.3.36 (pinned: PyPI is reachable where GitHub is
# not), into ~/.cache/llamacpp/build/bin. Needs cmake and a C++ compiler (the reference venv
# has cmake and ninja: tools/requirements-goldens.txt). Prints the bin folder.
set -euo pipefail
root="${LLAMACPP_DIR:-$HOME/.cache/llamacpp}"
version=0.3.36
if [ ! -x "$root/build/bin/llama-bench" ]; then
  mkdir -p "$root"
  if [ ! -d "$root/src" ]; then
    tmp="$(mktemp -d)"
    python3 -m pip download -q --no-deps --no-binary :all: -d "$tmp" "llama_cpp_python==$version"
    tar -xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp"
    mv "$tmp"/llama_cpp_python-*/vendor/llama.cpp "$root/src"
    rm -rf "$tmp"
  fi
  cmake -S "$root/src" -B "$root/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF >&2
  cmake --build "$root/build" -j "$(nproc)" --target llama-bench llama-mtmd-cli llama-completion >&2
fi
echo "$root/build/bin"
