#!/usr/bin/env bash
# tools/gpu_bench.sh: `captioner bench` on a real GPU (Linux, NVIDIA, Vulkan through wgpu), with
# a summary table and the decode roofline. One command, no network; the full mode takes under
# 8 minutes once the binary exists. Everything printed, the raw JSON and each bench's stderr
# go to ${OUT:-/tmp}/gpu_bench/. Run with --help for the options.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: tools/gpu_bench.sh [--bin PATH] [--model DIR] [--bandwidth-gbs N] [--quick]
                          [--adapter KIND|any] [--timeout-s N]
                          [--precision-256m LIST] [--precision-500m LIST]

Runs, on the GPU (wgpu, Vulkan), one command per precision:
  captioner bench --device gpu --synthetic smolvlm-256m --precision f32|q8_0|auto
  captioner bench --device gpu --synthetic smolvlm-500m --precision auto
then prints one table of the reports (decode, prefill, vision, GPU bytes, any gpu.* counters)
and the decode roofline: weight bytes read per token / memory bandwidth.

  --bin PATH            the captioner binary (or CAPTIONER_BIN=PATH); default: build it with
                        `cargo build --release --features cli --bin captioner` and use
                        ${CARGO_TARGET_DIR:-target}/release/captioner (the build is not
                        inside the 8 minutes)
  --model DIR           tokenizer and chat template for the synthetic models
                        (default tests/fixtures/tiny-b, relative to the repository root)
  --bandwidth-gbs N     the device's memory bandwidth in GB/s (default: looked up from
                        nvidia-smi's GPU name in a table of published peak figures)
  --adapter KIND        which wgpu adapter: CUBECL_WGPU_DEFAULT_DEVICE, default DiscreteGpu(0),
                        so that a machine without a GPU fails instead of measuring a software
                        Vulkan device; `any` leaves wgpu's default choice (e.g. Mesa lavapipe)
  --quick               minimal runs (1 run, 0 warm-up, short prompts, smolvlm-256m at f32
                        only): a check that the script works, e.g. on lavapipe
                        (`--quick --adapter any`); its figures mean nothing
  --timeout-s N         limit for each bench command (default 110 s for smolvlm-256m, 150 s
                        for smolvlm-500m, and all of them together stop at 450 s; --quick:
                        1500 s, no total)
  --precision-256m LIST, --precision-500m LIST
                        override the precision lists (comma-separated; each precision is a
                        bench command, and a JSON file, of its own, so that a hang or a
                        timeout loses one report, not the list)
  -h, --help            this text

Exit status: 0 when every bench ran on a GPU adapter; 2 when there is no usable GPU; 3 when a
bench failed or ran out of time; 1 for a usage error.
EOF
}

die() { echo "gpu_bench: $*" >&2; exit 1; }

cd "$(dirname "$0")/.."
ROOT=$(pwd)

BIN=${CAPTIONER_BIN:-}
MODEL=tests/fixtures/tiny-b
BANDWIDTH=
QUICK=0
ADAPTER='DiscreteGpu(0)'
TIMEOUT=
P256=
P500=
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) [ $# -ge 2 ] || die "--bin needs a path"; BIN=$2; shift 2 ;;
        --bin=*) BIN=${1#*=}; shift ;;
        --model) [ $# -ge 2 ] || die "--model needs a folder"; MODEL=$2; shift 2 ;;
        --model=*) MODEL=${1#*=}; shift ;;
        --bandwidth-gbs) [ $# -ge 2 ] || die "--bandwidth-gbs needs a number"; BANDWIDTH=$2; shift 2 ;;
        --bandwidth-gbs=*) BANDWIDTH=${1#*=}; shift ;;
        --adapter) [ $# -ge 2 ] || die "--adapter needs a kind"; ADAPTER=$2; shift 2 ;;
        --adapter=*) ADAPTER=${1#*=}; shift ;;
        --timeout-s) [ $# -ge 2 ] || die "--timeout-s needs seconds"; TIMEOUT=$2; shift 2 ;;
        --timeout-s=*) TIMEOUT=${1#*=}; shift ;;
        --precision-256m) [ $# -ge 2 ] || die "--precision-256m needs a list"; P256=$2; shift 2 ;;
        --precision-500m) [ $# -ge 2 ] || die "--precision-500m needs a list"; P500=$2; shift 2 ;;
        --quick) QUICK=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
if [ -n "$BANDWIDTH" ] && ! [[ $BANDWIDTH =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    die "--bandwidth-gbs $BANDWIDTH: a number of GB/s"
fi
if [ -n "$TIMEOUT" ] && ! [[ $TIMEOUT =~ ^[0-9]+$ ]]; then
    die "--timeout-s $TIMEOUT: a whole number of seconds"
fi
[ -f "$MODEL/tokenizer.json" ] || die "--model $MODEL: no tokenizer.json there"

DIR=${OUT:-/tmp}/gpu_bench
mkdir -p "$DIR"
LOG=$DIR/gpu_bench.log
: >"$LOG"
# Everything from here on is printed and logged.
exec > >(tee -a "$LOG") 2>&1

echo "gpu_bench: $(date -u +%Y-%m-%dT%H:%M:%SZ), $ROOT ($(git rev-parse --short HEAD 2>/dev/null || echo 'no git')$(git diff --quiet HEAD 2>/dev/null || echo ', uncommitted changes'))"
echo "gpu_bench: output in $DIR"

# --- The binary ----------------------------------------------------------------------------
if [ -z "$BIN" ]; then
    BIN=${CARGO_TARGET_DIR:-target}/release/captioner
    echo "gpu_bench: building $BIN (cargo build --release --features cli --bin captioner)"
    cargo build --release --features cli --bin captioner
fi
[ -x "$BIN" ] || die "$BIN: not an executable (pass --bin PATH or CAPTIONER_BIN)"
echo "gpu_bench: binary $BIN"

# --- The GPU -------------------------------------------------------------------------------
GPU_NAME=
if command -v nvidia-smi >/dev/null 2>&1; then
    if nvidia-smi >"$DIR/nvidia-smi.txt" 2>&1; then
        nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader 2>/dev/null |
            sed 's/^/gpu_bench: nvidia-smi: /' || true
        GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1 || true)
    else
        echo "gpu_bench: nvidia-smi failed: $(head -n1 "$DIR/nvidia-smi.txt")"
    fi
else
    echo "gpu_bench: no nvidia-smi on PATH (no NVIDIA driver here?)"
fi
ICDS=
for icd in /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json /usr/local/share/vulkan/icd.d/*.json; do
    [ -e "$icd" ] && ICDS="$ICDS${ICDS:+ }$(basename "$icd")"
done
echo "gpu_bench: Vulkan drivers (ICD files): ${ICDS:-none found}"
if [ "$ADAPTER" = any ]; then
    unset CUBECL_WGPU_DEFAULT_DEVICE
    echo "gpu_bench: adapter: wgpu's default choice (--adapter any; may be a software device)"
else
    export CUBECL_WGPU_DEFAULT_DEVICE=$ADAPTER
    echo "gpu_bench: adapter: CUBECL_WGPU_DEFAULT_DEVICE=$ADAPTER"
fi

# Published peak memory bandwidth, GB/s, from the first GPU's name.
lookup_bandwidth() {
    case "$1" in
        *H200*) echo 4800 ;;
        *"H100 NVL"*) echo 3900 ;;
        *H100*PCIe*) echo 2000 ;;
        *H100*) echo 3350 ;;
        *A100*80GB*PCIe*) echo 1935 ;;
        *A100*80GB*) echo 2039 ;;
        *A100*) echo 1555 ;;
        *L40S*|*" L40") echo 864 ;;
        *" L4") echo 300 ;;
        *"RTX 4090"*) echo 1008 ;;
        *"RTX 3090 Ti"*) echo 1008 ;;
        *"RTX 3090"*) echo 936 ;;
        *" A10"|*" A10G") echo 600 ;;
        *T4) echo 320 ;;
        *) echo "" ;;
    esac
}
BW_SOURCE=
if [ -n "$BANDWIDTH" ]; then
    BW_SOURCE="--bandwidth-gbs"
elif [ -n "$GPU_NAME" ]; then
    BANDWIDTH=$(lookup_bandwidth "$GPU_NAME")
    [ -n "$BANDWIDTH" ] && BW_SOURCE="published peak for $GPU_NAME"
fi

# --- The benches ---------------------------------------------------------------------------
if [ "$QUICK" = 1 ]; then
    RUNS=(--runs 1 --warmup 0 --prefill-tokens 8 --contexts "8,32" --decode-tokens 4 --caption-tokens 4)
    JOBS=("smolvlm-256m ${P256:-f32} ${TIMEOUT:-1500}")
    BUDGET=
else
    RUNS=()
    JOBS=("smolvlm-256m ${P256:-f32,q8_0,auto} ${TIMEOUT:-110}"
          "smolvlm-500m ${P500:-auto} ${TIMEOUT:-150}")
    BUDGET=450
fi
# One bench command per shape and precision.
CALLS=()
for job in "${JOBS[@]}"; do
    read -r shape precisions limit <<<"$job"
    IFS=, read -r -a list <<<"$precisions"
    for precision in "${list[@]}"; do
        CALLS+=("$shape ${precision// /} $limit")
    done
done

no_gpu() {
    # $1: a bench's stderr file. Says whether it failed for want of an adapter.
    grep -qiE 'no adapter|unable to acquire wgpu device|adapters \[|ERROR_INCOMPATIBLE_DRIVER|vulkan.*(not|no) (found|available)|failed to create (an )?instance' "$1"
}

JSONS=()
FAILED=0
NOGPU=0
SEEN=
BENCH_START=$SECONDS
for call in "${CALLS[@]}"; do
    read -r shape precision limit <<<"$call"
    name=$shape-$precision
    if [ -n "$BUDGET" ]; then
        left=$((BUDGET - (SECONDS - BENCH_START)))
        if [ "$left" -lt 30 ]; then
            echo "gpu_bench: [$name] skipped: the ${BUDGET}s for all the benches are spent"
            FAILED=1
            continue
        fi
        [ "$left" -lt "$limit" ] && limit=$left
    fi
    json=$DIR/$name.json
    err=$DIR/$name.stderr
    rm -f "$json"
    cmd=("$BIN" bench --device gpu --synthetic "$shape" --model "$MODEL" --precision "$precision"
         ${RUNS[@]+"${RUNS[@]}"} --json "$json")
    echo
    echo "gpu_bench: [$name, timeout ${limit}s] ${cmd[*]}"
    start=$SECONDS
    rc=0
    # stdout (bench's own table) is printed; stderr (progress, errors) goes to its file and its
    # tail is printed on failure.
    timeout --kill-after=15 "$limit" "${cmd[@]}" 2>"$err" || rc=$?
    echo "gpu_bench: [$name] exit $rc after $((SECONDS - start)) s"
    if [ "$rc" -ne 0 ]; then
        # What went wrong, without the backtraces' frames and repeated lines.
        grep -vE '^ {2,}|^stack backtrace:|^note: Some details|^$' "$err" |
            awk '!seen[$0]++' | tail -n 12 | cut -c1-400 | sed 's/^/  | /' || true
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
            echo "gpu_bench: [$name] ran out of its ${limit}s (hung, or a slow or software device)"
        elif no_gpu "$err"; then
            NOGPU=1
            # The adapters wgpu did find, as cubecl lists them.
            SEEN=$(grep -oE 'name: \\"[^\\]*\\", vendor: [0-9]+, device: [0-9]+, device_type: [A-Za-z]+' "$err" |
                sed -E 's/name: \\"([^\\]*)\\".*device_type: ([A-Za-z]+)/\1 [\2]/' | awk '!seen[$0]++' |
                paste -sd ';' - || true)
            FAILED=1
            break  # the other benches would fail the same way
        fi
        FAILED=1
        continue
    fi
    [ -s "$json" ] || { echo "gpu_bench: [$name] wrote no JSON"; FAILED=1; continue; }
    JSONS+=("$json")
done

if [ "$NOGPU" = 1 ]; then
    echo
    echo "gpu_bench: NO USABLE GPU: wgpu found no adapter of the kind asked for ($ADAPTER)."
    echo "  wgpu's adapters: ${SEEN:-none listed}"
    echo "  Vulkan drivers here: ${ICDS:-none}. An NVIDIA GPU needs nvidia_icd.json (in a container:"
    echo "  NVIDIA_DRIVER_CAPABILITIES must include 'graphics'). To measure a software device"
    echo "  anyway, pass --adapter any."
fi
if [ ${#JSONS[@]} -eq 0 ]; then
    echo "gpu_bench: no report to summarize; see $DIR"
    [ "$NOGPU" = 1 ] && exit 2
    exit 3
fi

# --- The summary and the roofline ----------------------------------------------------------
echo
if command -v python3 >/dev/null 2>&1; then
    python3 - "$ROOT" "${BANDWIDTH:-}" "${BW_SOURCE:-}" "$QUICK" "${JSONS[@]}" <<'PY'
import json, re, sys, os

root, bandwidth, bw_source, quick, paths = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1", sys.argv[5:]
reports = []
for p in paths:
    with open(p) as f:
        doc = json.load(f)
    for r in doc.get("reports", []):
        r["_run"] = os.path.basename(p)[: -len(".json")]
        reports.append(r)

def med(v):
    if isinstance(v, dict) and "median" in v:
        return v["median"]
    return v

def num(x, fmt="{:.1f}"):
    return "-" if x is None else fmt.format(x)

def mb(b):
    return "-" if b is None else f"{b / 1e6:.1f} MB"

def flatten(obj, prefix=""):
    """Dotted paths to every leaf; a median-and-samples statistic counts as its median."""
    if isinstance(obj, dict) and "median" in obj and "samples" in obj:
        yield prefix, obj["median"]
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from flatten(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from flatten(v, f"{prefix}.{i}")
    else:
        yield prefix, obj

def gpu_counters(r):
    """Every numeric field whose dotted path has a `gpu` part (not gpu_memory): gpu.* counters."""
    out = {}
    for path, v in flatten(r):
        parts = path.split(".")
        if "gpu" in parts and isinstance(v, (int, float)) and not isinstance(v, bool):
            out[path] = v
    return out

def shape_config(model):
    m = re.search(r"synthetic (\S+?)(,|$)", model)
    if not m:
        return None
    p = os.path.join(root, "src", "bench", "shapes", m.group(1), "config.json")
    try:
        with open(p) as f:
            return json.load(f)
    except OSError:
        return None

def params(c):
    """(text weights read per decoded token, all weights on the GPU) in parameters, from the
    shapes. The input embedding table is on the host (a row per token); the LM head is read
    whole each token. Norms and biases are left out (< 0.1 %)."""
    t = c.get("text_config", c)
    h, inter, L = t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"]
    nq = t["num_attention_heads"]
    nkv = t.get("num_key_value_heads", nq)
    hd = t.get("head_dim", h // nq)
    vocab = t["vocab_size"]
    layer = h * nq * hd + 2 * h * nkv * hd + nq * hd * h + 3 * h * inter
    text = L * layer + vocab * h
    v = c.get("vision_config")
    vision = 0
    if v:
        hv, iv, Lv = v["hidden_size"], v["intermediate_size"], v["num_hidden_layers"]
        patch, size = v["patch_size"], v["image_size"]
        vision = Lv * (4 * hv * hv + 2 * hv * iv) + v.get("num_channels", 3) * patch * patch * hv \
            + (size // patch) ** 2 * hv
        vision += hv * c.get("scale_factor", 1) ** 2 * h  # the connector
    return text, text + vision

bw = float(bandwidth) if bandwidth else None
contexts = []
for r in reports:
    for d in r.get("decode", []):
        if d["context"] not in contexts:
            contexts.append(d["context"])

cols = []
rows = [("run (--precision asked)", []), ("model", []), ("precision", []), ("device", [])]
for c in contexts:
    rows.append((f"decode @ {c} ctx, tok/s", []))
rows += [("prefill, tok/s", []), ("vision + connector, ms/tile", []),
         ("GPU bytes after load", []), ("GPU bytes reserved, peak", []),
         ("weights read / token (est.)", []), ("roofline, tok/s", []),
         ("decode best / roofline", []), ("roofline from all GPU bytes", [])]
notes = set()
counter_rows = {}
for i, r in enumerate(reports):
    row = dict(rows)
    row["run (--precision asked)"].append(r.pop("_run"))
    row["model"].append(r.get("model", "?").replace("synthetic ", ""))
    row["precision"].append(r.get("precision", "?"))
    row["device"].append(r.get("device", "?"))
    dec = {d["context"]: med(d["tokens_per_s"]) for d in r.get("decode", [])}
    for c in contexts:
        row[f"decode @ {c} ctx, tok/s"].append(num(dec.get(c)))
    row["prefill, tok/s"].append(num(med(r.get("prefill_tokens_per_s"))))
    row["vision + connector, ms/tile"].append(num(med(r.get("vision_ms_per_tile"))))
    g = r.get("gpu_memory") or {}
    after, peak = g.get("after_load_in_use"), g.get("peak_reserved")
    row["GPU bytes after load"].append(mb(after))
    row["GPU bytes reserved, peak"].append(mb(peak))
    # Weight bytes per decoded token: a field of the report's own if it has one, else the
    # GPU bytes after load scaled by the text decoder's share of the parameters.
    own = next((v for p, v in flatten(r) if re.search(r"weight_bytes", p) and isinstance(v, (int, float))), None)
    per_token = None
    if own:
        per_token = own
        notes.add("weights read per token: the report's own figure")
    elif after:
        cfg = shape_config(r.get("model", ""))
        if cfg:
            text, total = params(cfg)
            per_token = after * text / total
            notes.add("weights read per token (est.) = GPU bytes after load x the text decoder's share "
                      "of the parameters (layers + LM head, from src/bench/shapes); the report has no "
                      "such field")
        else:
            per_token = after
            notes.add("weights read per token = all GPU bytes after load (an upper estimate: it includes "
                      "the vision tower, which decode does not read); the report has no such field")
    row["weights read / token (est.)"].append(mb(per_token))
    best = max(dec.values()) if dec else None
    if bw and per_token:
        roof = bw * 1e9 / per_token
        row["roofline, tok/s"].append(num(roof, "{:.0f}"))
        row["decode best / roofline"].append("-" if best is None else f"{100 * best / roof:.1f} %")
        row["roofline from all GPU bytes"].append(num(bw * 1e9 / after, "{:.0f}") if after else "-")
    else:
        for k in ("roofline, tok/s", "decode best / roofline", "roofline from all GPU bytes"):
            row[k].append("-")
    for k, v in gpu_counters(r).items():
        counter_rows.setdefault(k, {})[i] = v

for k, by in counter_rows.items():
    rows.append((k, [num(by.get(i), "{:.6g}") for i in range(len(reports))]))

label = max(len(l) for l, _ in rows)
width = max([len(c) for _, cells in rows for c in cells] + [8])
for l, cells in rows:
    print(f"{l:<{label}}" + "".join(f"  {c:>{width}}" for c in cells))
print()
if bw:
    print(f"bandwidth: {bw:g} GB/s ({bw_source}); roofline = bandwidth / weight bytes read per decoded token "
          "(the KV cache's reads, a few MB at these contexts, left out)")
else:
    print("bandwidth unknown: pass --bandwidth-gbs N for the roofline")
for n in sorted(notes):
    print("note:", n)
if not counter_rows:
    print("note: the reports have no gpu.* counters (dispatches, submits, syncs, allocations, uploads "
          "per token)")
if quick:
    print("note: --quick: one short run of each stage; the figures only show that the script works")
PY
elif command -v jq >/dev/null 2>&1; then
    for json in "${JSONS[@]}"; do
        jq -r '.reports[] | [
            "model: \(.model)  precision: \(.precision)  device: \(.device)",
            (.decode[] | "  decode @ \(.context) ctx: \(.tokens_per_s.median) tok/s"),
            "  prefill: \(.prefill_tokens_per_s.median) tok/s",
            "  vision + connector: \(.vision_ms_per_tile.median // "-") ms/tile",
            "  GPU bytes after load / peak: \(.gpu_memory.after_load_in_use // "-") / \(.gpu_memory.peak_reserved // "-")",
            (paths(numbers) as $p | select($p | map(tostring) | index("gpu"))
                | "  \($p | map(tostring) | join(".")): \(getpath($p))")
          ] | .[]' "$json"
        if [ -n "$BANDWIDTH" ]; then
            jq -r --argjson bw "$BANDWIDTH" '.reports[] | select(.gpu_memory.after_load_in_use > 0) |
                "  roofline (\(.precision)): \($bw * 1e9 / .gpu_memory.after_load_in_use | floor) tok/s from all GPU bytes after load (an upper estimate of the bytes read per token: it includes the vision tower)"' "$json"
        fi
    done
    [ -n "$BANDWIDTH" ] || echo "bandwidth unknown: pass --bandwidth-gbs"
else
    echo "gpu_bench: neither python3 nor jq: the bench's own tables above are the summary"
    [ -n "$BANDWIDTH" ] || echo "bandwidth unknown: pass --bandwidth-gbs"
fi

echo
echo "gpu_bench: log, JSON and stderr in $DIR"
if [ "$NOGPU" = 1 ]; then exit 2; fi
if [ "$FAILED" = 1 ]; then exit 3; fi
exit 0
