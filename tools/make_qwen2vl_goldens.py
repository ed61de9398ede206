#!/usr/bin/env python3
"""Reference fixtures for the Qwen2-VL / Qwen2.5-VL family (tests/fixtures/qwen2vl/), from transformers.

Run from the repository root inside the reference venv (tools/requirements-goldens.txt), after
tools/make_goldens.py has made the test images:

    python tools/make_qwen2vl_goldens.py               # everything
    python tools/make_qwen2vl_goldens.py preprocess    # only some sections

Sections:
    preprocess  Qwen2VLImageProcessorPil (transformers 5.24, Pillow 13): smart_resize, BICUBIC, CLIP
                mean/std, the patches in transformers' order, image_grid_thw; for each case the
                SHA-256 of pixel_values (f32, little-endian), and the whole of it for the small ones

Qwen2.5-VL uses this same image processor class. The hub is never contacted.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import transformers
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize

from make_goldens import FIX, load_image_like_rust, reset_dir, save_tensors, versions, write_json

OUT = FIX / "qwen2vl"
IMAGES = FIX / "images"

# What the published Qwen2-VL-2B-Instruct and Qwen2.5-VL-3B-Instruct folders set
# (preprocessor_config.json); the rest are the class defaults (BICUBIC, 1/255, CLIP mean/std).
PUBLISHED = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2}
# Above this many floats a case keeps only its hash (the fixtures stay small).
FULL_VALUES_UP_TO = 32 * 1176


def processor(settings: dict) -> Qwen2VLImageProcessorPil:
    return Qwen2VLImageProcessorPil(**settings)


def preprocess_cases() -> list[tuple[str, str, dict]]:
    """(case name, image file, processor settings): every image mode the decoder makes, sizes
    above and below the pixel bounds, and the bounds given the newer way (`size`)."""
    cases = []
    for name in [
        "photo_640x480.jpg",  # rounded to 476 x 644
        "photo_300x500.jpg",  # portrait
        "small_100x80.png",
        "rgba_160x120.png",  # alpha composited over white
        "gray_200x150.png",
        "palette_120x90.gif",
        "exif_rot_200x120.jpg",  # EXIF orientation applied first
        "photo_256x256.webp",
        "jpeg_cmyk_23x9.jpg",  # below min_pixels: scaled up
        "one_by_one.png",  # 1 x 1: the smallest image, 56 x 56 after smart_resize
    ]:
        cases.append((f"published/{name}", name, dict(PUBLISHED)))
    # A small max_pixels: scaled down to at most 16 merged tokens.
    small = dict(PUBLISHED, max_pixels=28 * 28 * 16)
    for name in ["photo_640x480.jpg", "photo_300x500.jpg", "small_100x80.png"]:
        cases.append((f"max16/{name}", name, small))
    # A large min_pixels: scaled up.
    cases.append(("min64/small_100x80.png", "small_100x80.png", dict(PUBLISHED, min_pixels=28 * 28 * 64)))
    # The bounds as `size` (shortest_edge = min_pixels, longest_edge = max_pixels), and another
    # patch geometry (Qwen2.5-VL keeps 14 / 2 / 2; these only exercise the order).
    cases.append((
        "size-keys/photo_300x500.jpg",
        "photo_300x500.jpg",
        {"size": {"shortest_edge": 3136, "longest_edge": 28 * 28 * 20}, "patch_size": 14,
         "temporal_patch_size": 2, "merge_size": 2},
    ))
    cases.append((
        "geometry/small_100x80.png",
        "small_100x80.png",
        {"min_pixels": 1024, "max_pixels": 16 * 16 * 40, "patch_size": 8, "temporal_patch_size": 3, "merge_size": 2},
    ))
    return cases


def make_preprocess() -> None:
    reset_dir(OUT / "preprocess")
    cases = []
    tensors = {}
    for case, file, settings in preprocess_cases():
        img = load_image_like_rust(IMAGES / file)
        out = processor(settings)(images=[img], return_tensors="np")
        pv = np.ascontiguousarray(out["pixel_values"], dtype="<f4")
        thw = [int(v) for v in out["image_grid_thw"][0]]
        p = settings.get("patch_size", 14) * settings.get("merge_size", 2)
        size = settings.get("size", {})
        h, w = smart_resize(
            img.height, img.width, factor=p,
            min_pixels=settings.get("min_pixels", size.get("shortest_edge")),
            max_pixels=settings.get("max_pixels", size.get("longest_edge")),
        )
        entry = {
            "case": case,
            "image": file,
            "settings": settings,
            "source_hw": [img.height, img.width],
            "resized_hw": [h, w],
            "grid_thw": thw,
            "shape": list(pv.shape),
            "sha256": hashlib.sha256(pv.tobytes()).hexdigest(),
            "first": [float(v) for v in pv.reshape(-1)[:8]],
        }
        if pv.size <= FULL_VALUES_UP_TO:
            tensors[case] = pv
            entry["tensor"] = case
        cases.append(entry)
        print(f"  {case}: {img.width}x{img.height} -> {w}x{h}, grid {thw}, {pv.shape}")

    # An aspect ratio over 200 is refused (ValueError), before any resize.
    refused = []
    for hw in [(1, 201), (402, 2)]:
        try:
            smart_resize(hw[0], hw[1], factor=28, min_pixels=3136, max_pixels=12845056)
            raise SystemExit(f"smart_resize took {hw}")
        except ValueError as e:
            refused.append({"source_hw": list(hw), "error": str(e)})
    # And one just inside: exactly 200.
    accepted = {"source_hw": [1, 200], "resized_hw": list(smart_resize(1, 200, factor=28, min_pixels=3136, max_pixels=12845056))}

    save_tensors(OUT / "preprocess" / "goldens.safetensors", tensors)
    write_json(OUT / "preprocess" / "goldens.json", {
        "versions": versions(),
        "processor": "Qwen2VLImageProcessorPil",
        "cases": cases,
        "aspect_refused": refused,
        "aspect_accepted": accepted,
    })


SECTIONS = {
    "preprocess": make_preprocess,
}


def main(argv: list[str]) -> None:
    wanted = argv or list(SECTIONS)
    unknown = [w for w in wanted if w not in SECTIONS]
    if unknown:
        sys.exit(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    assert transformers.__version__ == "5.24.0", transformers.__version__
    for name in SECTIONS:
        if name in wanted:
            t0 = time.time()
            SECTIONS[name]()
            print(f"== {name} done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main(sys.argv[1:])
