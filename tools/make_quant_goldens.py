"""Reference Q8_0 / Q4_0 blocks from gguf-py (llama.cpp's Python port of its reference
quantizers), for tests that Captioner's quantizers write the same bytes.

Run by a developer (never CI) in the goldens venv (tools/requirements-goldens.txt: gguf 0.19.0):
    python tools/make_quant_goldens.py   # writes tests/fixtures/quant/goldens.json
"""

import json
from pathlib import Path

import gguf
import numpy as np
from gguf.quants import GGMLQuantizationType as Q, quantize

rng = np.random.default_rng(20261129)
rows = [
    rng.normal(0, 0.05, 64),          # weight-like
    rng.normal(0, 3.0, 64),           # wide
    np.concatenate([np.zeros(32), rng.uniform(-1, 1, 32)]),  # an all-zero block
    np.round(rng.uniform(-8, 8, 64)) / 8,  # exact ties at x.5 steps
    rng.standard_cauchy(64),          # outliers
]
x = np.stack(rows).astype(np.float32)
out = {
    "note": "tools/make_quant_goldens.py; gguf-py reference quantizers",
    "versions": {"gguf": "0.19.0", "numpy": np.__version__},
    "shape": list(x.shape),
    # Exact float32 values as their bit patterns.
    "values_f32_bits": x.view(np.uint32).ravel().tolist(),
    "q8_0": quantize(x, Q.Q8_0).tobytes().hex(),
    "q4_0": quantize(x, Q.Q4_0).tobytes().hex(),
}
path = Path(__file__).resolve().parent.parent / "tests/fixtures/quant/goldens.json"
path.write_text(json.dumps(out) + "\n")
print(f"wrote {path}")
