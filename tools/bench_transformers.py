"""Side by side on one machine, in one session: PyTorch / transformers eager (f32, CPU) and
Captioner on a model with SmolVLM-256M's exact shapes and random weights (no download).

    ~/.cache/captioner-ref/bin/python tools/bench_transformers.py [--captioner BIN] [--out DIR]

The reference venv is the goldens' one (tools/requirements-goldens.txt: torch 2.15, transformers
5.24). Measured the same way as `captioner bench` (src/bench/mod.rs): one 512 px tile through the
vision tower and connector; prefill of 128 tokens; 32 greedy decode steps after 32 and after 256
tokens of context, each step reading back the chosen id; warm-up runs excluded; medians.
Captioner runs its CPU backend (`--devices cpu,gpu` adds wgpu on a real GPU).
`--edge 0` measures vision on a whole photo instead: the test image at the processor's own size
(13 tiles), PyTorch given as many tiles in one batch, both reported per tile.
Prints the table with ratios Captioner / PyTorch and writes both reports as JSON.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from transformers import Idefics3Config, Idefics3ForConditionalGeneration

REPO = Path(__file__).resolve().parent.parent
SHAPE = REPO / "src/bench/shapes/smolvlm-256m/config.json"


def median_of(fn, runs, warmup):
    samples = []
    for i in range(warmup + runs):
        t = time.perf_counter()
        value = fn()
        elapsed = time.perf_counter() - t
        if i >= warmup:
            samples.append(value(elapsed) if callable(value) else elapsed)
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "samples": samples}


def token_ids(n, vocab):
    # The same prompt `captioner bench` uses.
    return torch.tensor([[(i * 7919 + 101) % vocab for i in range(n)]])


@torch.inference_mode()
def bench_torch(runs, warmup, tiles):
    torch.manual_seed(0)
    config = Idefics3Config.from_dict(json.loads(SHAPE.read_text()))
    model = Idefics3ForConditionalGeneration(config).eval().float()
    vocab = config.text_config.vocab_size
    side = config.vision_config.image_size
    pixels = torch.randn(1, tiles, 3, side, side)

    vision = median_of(lambda: model.model.get_image_features(pixels), runs, warmup)
    vision = {k: [x / tiles for x in v] if k == "samples" else v / tiles for k, v in vision.items()}

    def prefill(n):
        out = model(input_ids=token_ids(n, vocab), use_cache=True)
        return out.logits[0, -1].argmax().item(), out.past_key_values

    pre = median_of(lambda: prefill(128), runs, warmup)

    def decode(context, steps=32):
        token, past = prefill(context)
        t = time.perf_counter()
        for _ in range(steps):
            out = model(input_ids=torch.tensor([[token]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = out.logits[0, -1].argmax().item()
        return steps / (time.perf_counter() - t)

    decodes = {}
    for context in (32, 256):
        rates = [decode(context) for _ in range(warmup + runs)][warmup:]
        decodes[context] = {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "samples": rates}
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "tiles": tiles,
        "vision_ms_per_tile": {k: v * 1000 if k != "samples" else [x * 1000 for x in v] for k, v in vision.items()},
        "prefill_tokens_per_s": 128 / pre["median"],
        "decode_tokens_per_s": {c: d["median"] for c, d in decodes.items()},
    }


def bench_captioner(binary, device, runs, warmup, edge, out):
    path = out / f"captioner-{device}.json"
    subprocess.run(
        [binary, "bench", "--model", str(REPO / "tests/fixtures/tiny-b"), "--synthetic", "smolvlm-256m",
         "--precision", "f32", "--device", device, "--runs", str(runs), "--warmup", str(warmup),
         "--prefill-tokens", "128", "--contexts", "32,256", "--decode-tokens", "32",
         "--longest-edge", str(edge), "--json", str(path)],
        check=True, stdout=sys.stderr)
    return json.loads(path.read_text())


def main():
    p = argparse.ArgumentParser()
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/captioner-target"))
    p.add_argument("--captioner", default=f"{target}/release/captioner")
    p.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp()))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    # gpu (wgpu) is worth it on a real GPU; on lavapipe a 256M vision tile takes minutes.
    p.add_argument("--devices", default="cpu")
    p.add_argument("--edge", type=int, default=512, help="the image's longest edge; 0: the processor's own")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)

    # Captioner first: its report says how many tiles the image became, and PyTorch gets as many.
    ours = {d: bench_captioner(a.captioner, d, a.runs, a.warmup, a.edge, a.out) for d in a.devices.split(",")}
    tiles = next(iter(ours.values()))["reports"][0]["image_tiles"]
    ref = bench_torch(a.runs, a.warmup, tiles)
    (a.out / "torch.json").write_text(json.dumps(ref, indent=2))

    print(f"PyTorch {ref['torch']} eager f32, transformers {ref['transformers']}, {ref['threads']} threads; "
          f"synthetic SmolVLM-256M shapes; vision over {tiles} tile(s) at once")
    cols = [("vision ms/tile", "lower")] + [("prefill tok/s", "higher")] + [(f"decode@{c} tok/s", "higher") for c in (32, 256)]
    print(f"{'':<26}" + "".join(f"{n:>18}" for n, _ in cols))
    ref_row = [ref["vision_ms_per_tile"]["median"], ref["prefill_tokens_per_s"]] + [ref["decode_tokens_per_s"][c] for c in (32, 256)]
    print(f"{'PyTorch':<26}" + "".join(f"{v:>18.1f}" for v in ref_row))
    for device, doc in ours.items():
        r = doc["reports"][0]
        row = [r["vision_ms_per_tile"]["median"], r["prefill_tokens_per_s"]["median"]] + [
            next(d for d in r["decode"] if d["context"] == c)["tokens_per_s"]["median"] for c in (32, 256)]
        print(f"{'Captioner ' + r['device']:<26}" + "".join(f"{v:>18.1f}" for v in row))
        # Ratio as speed-up over PyTorch (>1: Captioner faster), whatever the unit.
        speed = [ref_row[0] / row[0]] + [row[i] / ref_row[i] for i in range(1, len(row))]
        print(f"{'  speed vs PyTorch':<26}" + "".join(f"{v:>17.2f}x" for v in speed))
    print(f"(JSON in {a.out})")


if __name__ == "__main__":
    main()
