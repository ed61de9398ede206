#!/usr/bin/env bash
# Builds llama.cpp's CPU tools (llama-bench, llama-mtmd-cli, llama-completion) from the copy
# vendored in the PyPI sdist llama_cpp_python==0.3.36 (pinned: PyPI is reachable where GitHub is
# not), into ~/.cache/llamacpp/build/bin. Needs a C++ compiler; without a cmake on PATH it installs
# PyPI's cmake wheel (pinned) into a venv of its own. Prints the bin folder.
set -euo pipefail
root="${LLAMACPP_DIR:-$HOME/.cache/llamacpp}"
version=0.3.36
if [ ! -x "$root/build/bin/llama-bench" ]; then
  mkdir -p "$root"
  if [ ! -d "$root/src" ]; then
    tmp="$(mktemp -d)"
    # The sdist itself, through pip as configured (pip checks the index's digest). Only this
    # package is taken from source: `--no-binary :all:` would also build its build tools (cmake).
    python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python \
      "llama-cpp-python==$version" -d "$tmp"
    tar -xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp"
    mv "$tmp"/llama_cpp_python-*/vendor/llama.cpp "$root/src"
    rm -rf "$tmp"
  fi
  if ! command -v cmake >/dev/null; then
    [ -x "$root/cmake/bin/cmake" ] ||
      { python3 -m venv "$root/cmake" && "$root/cmake/bin/pip" install -q cmake==3.31.6; }
    PATH="$root/cmake/bin:$PATH"
  fi
  cmake -S "$root/src" -B "$root/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF >&2
  cmake --build "$root/build" -j "$(nproc)" --target llama-bench llama-mtmd-cli llama-completion >&2
fi
echo "$root/build/bin"
