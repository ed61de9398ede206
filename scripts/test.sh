#!/usr/bin/env bash
# Sets up what the tests need, then runs every test: formatting, lints (clippy, riding on the
# builds), the wasm32 builds, the native test suite (CPU backend, the wgpu backend on lavapipe,
# real SmolLM2 weights) and the browser tests (the page and the embedding API in headless
# Chromium). Each step's time is printed at the end.
#
#   scripts/test.sh                 everything (what CI runs)
#   scripts/test.sh --quick [REV]   the inner loop: what the changes since REV (default HEAD:
#                                   the uncommitted ones, untracked files included) touch
#
# --quick runs the native tests when Rust code changed, and the browser test files whose
# subjects changed (the table in `browser_tests_for` below), rebuilding the wasm32 engine only
# when they need it. It skips nothing silently: it says what it runs and what it leaves to CI.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
since=HEAD
if [ "${1:-}" = --quick ]; then
  quick=true
  since="${2:-HEAD}"
fi

. scripts/setup.sh
# The Qwen2-VL prompt tests' tokenizer (tests/qwen2vl.rs), fetched once into the cache.
fetch_qwen2_vocab

times=()
step_name=""
step_start=0
step() {
  finish_step
  echo "== $1"
  step_name="$1"
  step_start=$SECONDS
}
finish_step() {
  [ -z "$step_name" ] || times+=("$(printf '%5ds  %s' $((SECONDS - step_start)) "$step_name")")
  step_name=""
}
report() {
  finish_step
  echo "== times (whole run $((SECONDS / 60)) min $((SECONDS % 60)) s)"
  [ ${#times[@]} -eq 0 ] || printf '%s\n' "${times[@]}"
}
trap report EXIT

# The browser test files a changed path calls for (one per line); `all` for every file.
browser_tests_for() {
  case "$1" in
    tests/browser/page.mjs | tools/chromium.mjs | scripts/setup-browser.sh | package.json | package-lock.json) echo all ;;
    tests/browser/*.test.mjs) echo "$1" ;;
    tools/serve.mjs) printf '%s\n' tests/browser/serve.test.mjs tests/browser/app.test.mjs tests/browser/embed.test.mjs ;;
    tools/probe_webgpu.mjs) echo tests/browser/probe.test.mjs ;;
    tools/bench_wllama.mjs | tools/wllama/*) echo tests/browser/wllama.test.mjs ;;
    www/bench*) echo tests/browser/bench.test.mjs ;;
    # The page's own files: its flows (app), the rows it writes (rows) and what it takes (inputs).
    www/app.js | www/index.html | www/*.css)
      printf '%s\n' tests/browser/app.test.mjs tests/browser/rows.test.mjs tests/browser/inputs.test.mjs tests/browser/export.test.mjs tests/browser/look.test.mjs tests/browser/resume.test.mjs ;;
    www/export.js) echo tests/browser/export.test.mjs ;;
    www/progress-store.js) printf '%s\n' tests/browser/resume.test.mjs tests/browser/app.test.mjs ;;
    # Shared by the page and the embedding API (and its npm package: www/package.json).
    www/picked-files.js | www/captioner.js)
      printf '%s\n' tests/browser/app.test.mjs tests/browser/rows.test.mjs tests/browser/inputs.test.mjs tests/browser/embed.test.mjs tests/browser/package.test.mjs ;;
    www/captioner.d.ts | www/examples/*) printf '%s\n' tests/browser/embed.test.mjs tests/browser/package.test.mjs ;;
    www/package.json) echo tests/browser/package.test.mjs ;;
    www/engine.js)
      printf '%s\n' tests/browser/threads.test.mjs tests/browser/app.test.mjs tests/browser/embed.test.mjs tests/browser/package.test.mjs ;;
    www/worker.js)
      printf '%s\n' tests/browser/app.test.mjs tests/browser/inputs.test.mjs tests/browser/embed.test.mjs tests/browser/package.test.mjs ;;
    www/model-store.js) printf '%s\n' tests/browser/app.test.mjs tests/browser/embed.test.mjs ;;
    www/*) echo tests/browser/app.test.mjs ;;
    # The engine's browser face: what the page calls, and the row rules it shares.
    src/web.rs)
      printf '%s\n' tests/browser/app.test.mjs tests/browser/module.test.mjs tests/browser/inputs.test.mjs tests/browser/embed.test.mjs ;;
    src/caption_run.rs) printf '%s\n' tests/browser/app.test.mjs tests/browser/inputs.test.mjs tests/browser/embed.test.mjs ;;
    src/convert.rs | src/convert/* | src/rows.rs | src/jsonl.rs)
      printf '%s\n' tests/browser/app.test.mjs tests/browser/embed.test.mjs ;;
    # What a browser decodes falls back from the engine's decoders.
    src/preprocess/*) printf '%s\n' tests/browser/inputs.test.mjs tests/browser/embed.test.mjs ;;
    scripts/build-web.sh | src/lib.rs) echo tests/browser/module.test.mjs ;;
    tools/inline_snippets.mjs) printf '%s\n' tests/browser/threads.test.mjs tests/browser/package.test.mjs ;;
    src/bench/*) echo tests/browser/bench.test.mjs ;;
    src/workers.rs | src/heap.rs) echo tests/browser/threads.test.mjs ;;
    tests/fixtures/*) printf '%s\n' tests/browser/app.test.mjs tests/browser/embed.test.mjs ;;
    # The example rows every page test compares with the native program on.
    examples/*)
      printf '%s\n' tests/browser/app.test.mjs tests/browser/rows.test.mjs tests/browser/inputs.test.mjs tests/browser/embed.test.mjs ;;
  esac
}

rust_changed=false
browser=()
if $quick; then
  changed=$( (git diff --name-only "$since" -- && git ls-files --others --exclude-standard) | sort -u)
  if [ -z "$changed" ]; then
    echo "test.sh --quick: nothing changed since $since"
    exit 0
  fi
  declare -A picked=()
  while read -r path; do
    case "$path" in
      *.rs | Cargo.toml | Cargo.lock | build.rs | tests/fixtures/*) rust_changed=true ;;
    esac
    for t in $(browser_tests_for "$path"); do
      # (A deleted test file is listed as changed too.)
      if [ "$t" = all ] || [ -e "$t" ]; then picked[$t]=1; fi
    done
  done <<<"$changed"
  if [ -n "${picked[all]:-}" ]; then
    browser=(tests/browser/)
  else
    browser=("${!picked[@]}")
  fi
  echo "test.sh --quick: $(wc -l <<<"$changed") changed path(s) since $since;" \
    "native tests: $($rust_changed && echo yes || echo no);" \
    "browser tests: ${browser[*]:-none} (CI runs them all, and builds and lints the wasm32" \
    "engine whatever changed)"
fi

step "cargo fmt --check"
cargo fmt --all -- --check
# Lints ride on the builds. Clippy's driver is rustc with clippy's lint passes added; `cargo
# clippy` is `cargo check` with it as the workspace's compiler (RUSTC_WORKSPACE_WRAPPER) and
# its arguments in CLIPPY_ARGS. Set here for the builds themselves, each target's crate is
# compiled once, linted (clippy -D warnings: the native lib, bins, tests and benches; both
# wasm32 lib builds), instead of separate `cargo clippy` runs that type-check every dependency
# a second time per target. What that saves on a fresh clone is in the README.
export RUSTC_WORKSPACE_WRAPPER="$(rustc --print sysroot)/bin/clippy-driver"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
# The browser tests' engine: both wasm32 builds (the wasm-dev profile: dependencies optimised as
# `web` has them, no LTO; see Cargo.toml) and their wasm-bindgen glue in www/pkg/ and
# www/pkg-threads/.
needs_browser=false
{ ! $quick || [ ${#browser[@]} -gt 0 ]; } && needs_browser=true
if ! $quick || { $needs_browser && { $rust_changed || [ ! -f www/pkg/captioner_bg.wasm ] || [ ! -f www/pkg-threads/captioner_bg.wasm ]; }; }; then
  step "wasm32 builds, linted"
  # (Node.js, from setup-browser.sh, makes the threaded build's glue self-contained.)
  command -v node >/dev/null || . scripts/setup-browser.sh
  WASM_PROFILE=wasm-dev scripts/build-web.sh
fi
# The native binary the browser tests compare with, and every test target, linted.
if ! $quick || $rust_changed || { $needs_browser && [ ! -x "$CARGO_TARGET_DIR/debug/captioner" ]; }; then
  step "tests, built linted"
  cargo test --all-targets --no-run
fi
if ! $quick || $rust_changed; then
  step "native tests"
  # The wgpu backend runs on whatever Vulkan device is present (lavapipe here).
  CAPTIONER_TEST_WGPU=1 cargo test --all-targets -- --test-threads=1
fi
if ! $quick; then
  browser=(tests/browser/)
fi
if [ ${#browser[@]} -gt 0 ]; then
  step "browser tests (headless Chromium, WebGPU on SwiftShader): ${browser[*]}"
  . scripts/setup-browser.sh
  # Two test files at a time even on two cores (node's default there is one): a file spends
  # most of its time waiting on SwiftShader's GPU process, and the CPU was 70 % busy with one
  # (BENCHMARKS.md, "A first build on a fresh clone": 533 s one at a time, 401 s two).
  jobs=$(nproc)
  [ "$jobs" -gt 2 ] && jobs=$((jobs - 1)) || jobs=2
  CAPTIONER_BIN="$CARGO_TARGET_DIR/debug/captioner" node --test --test-concurrency="$jobs" "${browser[@]}"
fi
