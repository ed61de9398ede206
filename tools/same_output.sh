#!/bin/bash
# Did a change keep the CLI's output? Runs two builds of `captioner` on the tiny fixtures and says,
# file by file, whether their outputs are byte-identical: greedy and sampled captions, a JSONL run
# over examples/rows.jsonl (every kind of bad row), the GGUF pair `quantize` writes (its bytes),
# a caption from that pair, and one from the llama.cpp-written pair.
#
#   tools/same_output.sh OLD_BINARY NEW_BINARY
#
# Build the old binary from a worktree (`git worktree add /tmp/old <rev>`, then in it
# `cargo test --no-run --test cli` with the same CARGO_TARGET_DIR and copy target/debug/captioner).
set -u
if [ $# -ne 2 ]; then echo "usage: $0 OLD_BINARY NEW_BINARY" >&2; exit 2; fi
cd "$(dirname "$0")/.."
F=tests/fixtures
out=$(mktemp -d)
export RUST_BACKTRACE=0
run() {
  local B=$1 v=$2
  "$B" caption --model $F/tiny-b --image $F/images/small_100x80.png --max-tokens 24 > "$out/$v.caption.txt" 2>&1
  "$B" caption --model $F/tiny-b --image $F/images/photo_640x480.jpg --max-tokens 24 --temperature 0.7 --seed 7 > "$out/$v.sampled.txt" 2>&1
  "$B" caption-jsonl --model $F/tiny-b --input examples/rows.jsonl --output "$out/$v.rows.jsonl" --image-root $F/images --max-tokens 12 > /dev/null 2>&1
  "$B" quantize --model $F/tiny-b --out "$out/$v-pack" > /dev/null 2>&1
  cat "$out/$v-pack"/* > "$out/$v.pack.bin"
  "$B" caption --model "$out/$v-pack" --image $F/images/small_100x80.png --max-tokens 12 > "$out/$v.packcap.txt" 2>&1
  "$B" caption --model $F/llamacpp-pair --image $F/images/small_100x80.png --max-tokens 12 > "$out/$v.pair.txt" 2>&1
}
run "$1" old
run "$2" new
status=0
for k in caption.txt sampled.txt rows.jsonl pack.bin packcap.txt pair.txt; do
  if cmp -s "$out/old.$k" "$out/new.$k"; then
    echo "identical: $k ($(wc -c < "$out/new.$k") bytes)"
  else
    echo "DIFFERS:   $k (both kept in $out)"; status=1
  fi
done
[ $status -eq 0 ] && rm -rf "$out"
exit $status
