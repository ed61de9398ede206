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
    # The sdist itself, checked against PyPI's digest. (`pip download --no-binary :all:` would
    # also build the sdist's build tools from source to read its metadata: cmake among them.)
    python3 - "$version" "$tmp" <<'EOF'
import hashlib, json, sys, urllib.request
version, out = sys.argv[1], sys.argv[2]
# PyPI's simple index (PEP 691 JSON): the one PyPI API pip itself needs.
index = urllib.request.Request(
    "https://pypi.org/simple/llama-cpp-python/",
    headers={"Accept": "application/vnd.pypi.simple.v1+json"},
)
with urllib.request.urlopen(index) as r:
    name = f"llama_cpp_python-{version}.tar.gz"
    sdist = next(f for f in json.load(r)["files"] if f["filename"] == name)
with urllib.request.urlopen(sdist["url"]) as r:
    data = r.read()
if hashlib.sha256(data).hexdigest() != sdist["hashes"]["sha256"]:
    sys.exit(f"{name}: sha256 differs from PyPI's")
with open(f"{out}/{name}", "wb") as f:
    f.write(data)
EOF
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
