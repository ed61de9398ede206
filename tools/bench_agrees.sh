#!/usr/bin/env bash
# Checks that `captioner bench` times the loop users run: its decode figure and what
# `captioner generate --verbose` reports for the same model, contexts, token count and sampling
# agree within 10 %. A developer's check (timings do not belong in CI's tests); the figures go
# in BENCHMARKS.md ("The loop users run").
#
#   tools/bench_agrees.sh CAPTIONER_BIN MODEL [NEW_TOKENS]     (MODEL: a folder or a .gguf)
#
# generate runs with the CLI's default sampling (temperature 0.7, top-p 0.9, seed 42) on a
# prompt that asks for a long answer; bench then decodes as many tokens from a prompt of the
# same length, with the same sampling, so both cover the same KV-cache lengths.
set -euo pipefail
bin=${1:?captioner binary}
model=${2:?model folder or .gguf}
tokens=${3:-128}
prompt="Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."

gen=$("$bin" generate --model "$model" --prompt "$prompt" --max-tokens "$tokens" --verbose 2>&1 >/dev/null)
echo "$gen" | grep 'tokens/s'
read -r prompt_tokens new_tokens generate_rate < <(echo "$gen" | sed -nE \
  's/^([0-9]+) prompt tokens, ([0-9]+) new tokens; .*, ([0-9.]+) tokens\/s after it.*/\1 \2 \3/p')
[ -n "${generate_rate:-}" ] || { echo "no tokens/s in generate's output" >&2; exit 1; }
# generate's figure covers the tokens after the first; bench's decode steps do too.
steps=$((new_tokens - 1))

json=$("$bin" bench --model "$model" --runs 3 --warmup 1 --prefill-tokens 8 \
  --contexts "$prompt_tokens" --decode-tokens "$steps" --caption-tokens 4 --json - 2>/dev/null)
bench_rate=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["reports"][0]["decode"][0]["tokens_per_s"]["median"])' <<<"$json")

python3 - "$generate_rate" "$bench_rate" "$prompt_tokens" "$steps" <<'PY'
import sys
generate, bench, context, steps = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
ratio = generate / bench
print(f"{steps} tokens after a {context}-token prompt: generate {generate:.1f} tokens/s, "
      f"bench {bench:.1f} tokens/s (median of 3), generate/bench {ratio:.3f}")
if abs(ratio - 1) > 0.10:
    sys.exit("bench and generate disagree by more than 10 %")
PY
