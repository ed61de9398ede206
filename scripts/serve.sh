#!/usr/bin/env bash
# The main job: sets up, builds the browser app (the engine for wasm32 + WebGPU, small) and
# serves www/ on http://127.0.0.1:${PORT:-8080}. Open it and pick a model and images.
# The test models are served too: http://127.0.0.1:8080/?model=/fixtures/tiny-b/ runs offline.
#   WASM_PROFILE=wasm-dev scripts/serve.sh   reuses the test build (built already, larger download)
#
# The page is served as soon as the WebGPU build (www/pkg: WebGPU, and the CPU on one thread)
# is there. The threaded CPU build (www/pkg-threads) follows in the background: on a fresh
# machine it is a second build of the whole dependency tree, with the standard library
# rebuilt. Until it is there the page runs the CPU on one thread and says why; a model loaded
# after it has finished gets the threads.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
if ! command -v node >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs >/dev/null
fi
scripts/build-web.sh webgpu
# A threaded build left from older sources must not be served beside the new one.
rm -rf www/pkg-threads
log="${TMPDIR:-/tmp}/captioner-build-threads.log"
(
  if scripts/build-web.sh threads >"$log" 2>&1; then
    echo "serve: the threaded CPU engine is built (www/pkg-threads); models loaded from now on use every core"
  else
    echo "serve: the threaded CPU build failed, the CPU stays on one thread; see $log" >&2
  fi
) &
echo "serve: building the threaded CPU engine in the background (log: $log)"
exec node tools/serve.mjs --port "${PORT:-8080}" --mount /fixtures/=tests/fixtures
