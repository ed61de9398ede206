#!/usr/bin/env bash
# The main job: sets up, builds the browser app (the engine for wasm32 + WebGPU, small) and
# serves www/ on http://127.0.0.1:${PORT:-8080}. Open it and pick a model and images.
# The test models are served too: http://127.0.0.1:8080/?model=/fixtures/tiny-b/ runs offline.
#   WASM_PROFILE=dev scripts/serve.sh   reuses the test build (faster to build, larger download)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
scripts/build-web.sh
if ! command -v node >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs >/dev/null
fi
exec node tools/serve.mjs --port "${PORT:-8080}" --mount /fixtures/=tests/fixtures
