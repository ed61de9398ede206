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
    positions   get_rope_index (Qwen2VLModel and Qwen2_5_VLModel, tiny configs): M-RoPE's three
                position streams and the rope delta, for prompts of one image, two, an image first,
                a tall one and a grid from the preprocess section; and Qwen2VLRotaryEmbedding's
                cos / sin tables on those streams (published head_dim 128, mrope_section 16/24/24,
                and a tiny one)
    text        a tiny random Qwen2VLForConditionalGeneration (vocabulary of 512, tied head) saved as
                bf16 and reloaded: its decoder's logits on a prompt of text tokens at an image
                prompt's M-RoPE positions, then 6 greedy steps (each step's top-1/top-2 margin)
    vision      that model's vision tower and merger on two images' patches (the processor's)
    windows     Qwen2.5-VL's window attention order (get_vision_window_index): the merge units'
                reordering and the windows' boundaries, for several grids and window sizes
    vision25    a tiny random Qwen2_5_VLForConditionalGeneration (tiny-25/, saved as bf16 and reloaded):
                its vision tower (RMSNorm, SwiGLU, windows of 2 x 2 units, full attention in blocks 1
                and 3) on the same two images as `vision`
    greedy      the whole tiny models (tiny-text/, tiny-25/) on prompts of one and two images (the processor's patches, ids
                laid out as the processor lays them out): 6 greedy steps, each step's logits and margin
    prompt      Qwen2VLProcessor on the published chat template (chat_template.json) and Qwen2's tokenizer as
                transformers builds it from llama.cpp's vocabulary GGUF with the Qwen2-VL tokens in their
                slots (CAPTIONER_QWEN2_VOCAB_GGUF, from scripts/setup.sh): the rendered prompts, the ids with
                each image's pads expanded, the decoded text; plain encodings and the special ids
    engine      the tiny models as a user's folder (tokenizer.json, tokenizer_config.json, chat_template.json,
                preprocessor_config.json beside the weights; a 512-token byte-level BPE with the family's
                special tokens at config.json's ids): Qwen2VLProcessor's ids and model.generate's greedy
                tokens and text for a caption of one image and one of two, each step's top-1/top-2 margin

Qwen2.5-VL uses this same image processor class. The hub is never contacted.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize

from make_goldens import (FIX, load_image_like_rust, reinit_, reset_dir, save_tensors, versions, write_compact_json,
                          write_json)

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


# The published folders' token ids (Qwen2's vocabulary: <|vision_start|>, <|vision_end|>,
# <|image_pad|>); the text tokens around them are arbitrary ids.
VISION_START, VISION_END, IMAGE_PAD = 151652, 151653, 151655


def tiny_model(family: str) -> torch.nn.Module:
    """The smallest model whose get_rope_index is the real one (only its config is read)."""
    text = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_key_value_heads": 1, "vocab_size": 151936,
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": 1e6}}
    if family == "qwen2_vl":
        config = transformers.Qwen2VLConfig(
            text_config=text,
            vision_config={"depth": 1, "embed_dim": 16, "hidden_size": 16, "num_heads": 2})
        return transformers.Qwen2VLModel(config)
    config = transformers.Qwen2_5_VLConfig(
        text_config=text,
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2,
                       "out_hidden_size": 16, "fullatt_block_indexes": [0]})
    return transformers.Qwen2_5_VLModel(config)


def prompt(parts: list) -> tuple[list[int], list[list[int]]]:
    """Token ids from parts: an int n is n text tokens, a grid [t, h, w] one image in its
    vision_start / vision_end pair, as the processor expands it."""
    ids, grids, next_text = [], [], 100
    for part in parts:
        if isinstance(part, int):
            ids += list(range(next_text, next_text + part))
            next_text += part
        else:
            t, h, w = part
            ids += [VISION_START] + [IMAGE_PAD] * (t * h * w // 4) + [VISION_END]
            grids.append(part)
    return ids, grids


def make_positions() -> None:
    cases = {
        "one image": [14, [1, 34, 46], 9],
        "two images": [14, [1, 36, 22], 3, [1, 4, 4], 9],
        "an image first": [[1, 8, 12], 5],
        "a tall image": [7, [1, 14, 8], 2],
        "the smallest image": [3, [1, 4, 4], 1],
    }
    out = []
    for family in ["qwen2_vl", "qwen2_5_vl"]:
        model = tiny_model(family)
        for name, parts in cases.items():
            ids, grids = prompt(parts)
            input_ids = torch.tensor([ids])
            types = (input_ids == IMAGE_PAD).int()
            with torch.no_grad():
                pos, delta = model.get_rope_index(input_ids, types, image_grid_thw=torch.tensor(grids))
            out.append({
                "family": family, "case": name, "tokens": ids, "grids": grids,
                "temporal": pos[0, 0].tolist(), "height": pos[1, 0].tolist(), "width": pos[2, 0].tolist(),
                "delta": int(delta[0, 0]),
            })
            print(f"  {family} / {name}: {len(ids)} tokens, delta {int(delta[0, 0])}")
    write_json(OUT / "positions.json", {"versions": versions(), "image_token_id": IMAGE_PAD, "merge_size": 2,
                                        "cases": out}, indent=None)

    # The rotary tables M-RoPE makes of the streams of "two images".
    two = next(c for c in out if c["family"] == "qwen2_vl" and c["case"] == "two images")
    position_ids = torch.tensor([two["temporal"], two["height"], two["width"]])[:, None, :]
    tables, settings = {}, []
    for name, head_dim, section, theta in [("published", 128, [16, 24, 24], 1e6), ("tiny", 16, [2, 3, 3], 1e4)]:
        text = transformers.Qwen2VLTextConfig(
            hidden_size=head_dim * 2, num_attention_heads=2, head_dim=head_dim,
            rope_parameters={"rope_type": "default", "mrope_section": section, "rope_theta": theta})
        rope = transformers.models.qwen2_vl.modeling_qwen2_vl.Qwen2VLRotaryEmbedding(text)
        with torch.no_grad():
            cos, sin = rope(torch.zeros(1, dtype=torch.float32), position_ids)
        tables[f"{name}.cos"] = cos[0].numpy()
        tables[f"{name}.sin"] = sin[0].numpy()
        settings.append({"name": name, "head_dim": head_dim, "mrope_section": section, "rope_theta": theta})
    save_tensors(OUT / "rope.safetensors", tables, {"streams": "positions.json: qwen2_vl / two images",
                                                    "settings": str(settings)})


# The tiny models' text side: a head of 16 and a low theta, so every section's pairs turn far
# enough between the streams for a wrong stream to show in the logits (with theta 1e6 and a head
# of 8 the height and width pairs barely turn).
TINY_TEXT = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 4096,
             "bos_token_id": None, "eos_token_id": None,
             "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1000.0}}


def make_text() -> None:
    folder = OUT / "tiny-text"
    reset_dir(folder)
    torch.manual_seed(0)
    config = transformers.Qwen2VLConfig(
        text_config=TINY_TEXT, tie_word_embeddings=True,
        vision_config={"depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 2},
        image_token_id=500, video_token_id=501, vision_start_token_id=502, vision_end_token_id=503)
    model = transformers.Qwen2VLForConditionalGeneration(config).eval()
    with torch.no_grad():
        reinit_(model, 21)
    model.to(torch.bfloat16).save_pretrained(folder)
    model = transformers.Qwen2VLForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()

    # "a tall image"'s streams (positions.json), on text tokens: the decoder alone, at positions
    # no plain RoPE would give.
    case = next(c for c in __import__("json").load(open(OUT / "positions.json"))["cases"]
                if c["family"] == "qwen2_vl" and c["case"] == "a tall image")
    n = len(case["tokens"])
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 500, (1, n), generator=g)
    streams = torch.tensor([case["temporal"], case["height"], case["width"]])[:, None, :]
    tokens, margins, step_logits = [], [], []
    with torch.no_grad():
        prompt_logits = model(input_ids=ids, position_ids=streams).logits[0]
        seq, pos = ids, streams
        for step in range(6):
            logits = model(input_ids=seq, position_ids=pos).logits[0, -1]
            top = torch.topk(logits, 2)
            tokens.append(int(top.indices[0]))
            margins.append(float(top.values[0] - top.values[1]))
            step_logits.append(logits)
            nxt = seq.shape[1] + case["delta"]
            seq = torch.cat([seq, top.indices[:1].view(1, 1)], dim=1)
            pos = torch.cat([pos, torch.full((3, 1, 1), nxt)], dim=2)
    assert min(margins) > 1e-3, margins
    save_tensors(folder / "goldens.safetensors", {
        "prompt_logits": prompt_logits.numpy(), "step_logits": torch.stack(step_logits).numpy()})
    write_json(folder / "goldens.json", {
        "versions": versions(), "prompt_ids": ids[0].tolist(), "positions_case": "qwen2_vl / a tall image",
        "greedy_tokens": tokens, "margins": margins})
    print(f"  tiny-text: greedy {tokens}, smallest margin {min(margins):.4f}")


def make_vision() -> None:
    folder = OUT / "tiny-text"
    model = transformers.Qwen2VLForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    images = [load_image_like_rust(IMAGES / name) for name in ["small_100x80.png", "photo_300x500.jpg"]]
    # Small bounds keep the fixture small: 48 and 60 patches.
    out = processor(dict(PUBLISHED, max_pixels=28 * 28 * 16))(images=images, return_tensors="pt")
    with torch.no_grad():
        vision = model.model.visual(out["pixel_values"], grid_thw=out["image_grid_thw"])
    # (pixel_values are left out: the Rust test makes them with its processor, which the
    # preprocess section checks bit for bit; their SHA-256 is kept to say so.)
    pv = np.ascontiguousarray(out["pixel_values"].numpy(), dtype="<f4")
    write_json(folder / "vision.json", {
        "images": ["small_100x80.png", "photo_300x500.jpg"], "settings": dict(PUBLISHED, max_pixels=28 * 28 * 16),
        "pixel_values_sha256": hashlib.sha256(pv.tobytes()).hexdigest()})
    save_tensors(folder / "vision.safetensors", {
        "image_grid_thw": out["image_grid_thw"].numpy(),
        "last_hidden_state": vision.last_hidden_state.numpy(),
        "merged": vision.pooler_output.numpy(),
    })
    print(f"  vision: grids {out['image_grid_thw'].tolist()} -> merged {tuple(vision.pooler_output.shape)}")


def make_greedy() -> None:
    make_greedy_of(OUT / "tiny-text", transformers.Qwen2VLForConditionalGeneration)
    make_greedy_of(OUT / "tiny-25", transformers.Qwen2_5_VLForConditionalGeneration)


def make_greedy_of(folder: Path, family) -> None:
    model = family.from_pretrained(folder, dtype=torch.float32).eval()
    settings = dict(PUBLISHED, max_pixels=28 * 28 * 16)
    g = torch.Generator().manual_seed(9)
    text = lambda n: torch.randint(0, 500, (n,), generator=g).tolist()
    cases = []
    tensors = {}
    for name, images in [("one image", ["photo_640x480.jpg"]),
                         ("two images", ["small_100x80.png", "gray_200x150.png"])]:
        out = processor(settings)(images=[load_image_like_rust(IMAGES / i) for i in images], return_tensors="pt")
        ids = text(6)
        for grid in out["image_grid_thw"].tolist():
            ids += [502] + [500] * (grid[0] * grid[1] * grid[2] // 4) + [503] + text(4)
        seq = torch.tensor([ids])
        tokens, margins, logits_per_step = [], [], []
        with torch.no_grad():
            for step in range(6):
                logits = model(input_ids=seq, pixel_values=out["pixel_values"], image_grid_thw=out["image_grid_thw"],
                               mm_token_type_ids=(seq == 500).int()).logits[0, -1]
                top = torch.topk(logits, 2)
                tokens.append(int(top.indices[0]))
                margins.append(float(top.values[0] - top.values[1]))
                logits_per_step.append(logits)
                seq = torch.cat([seq, top.indices[:1].view(1, 1)], dim=1)
        assert min(margins) > 1e-3, (name, margins)
        tensors[f"{name}.step_logits"] = torch.stack(logits_per_step).numpy()
        cases.append({"case": name, "images": images, "settings": settings, "prompt_ids": ids,
                      "grids": out["image_grid_thw"].tolist(), "greedy_tokens": tokens, "margins": margins})
        print(f"  greedy / {folder.name} / {name}: {len(ids)} prompt ids, tokens {tokens}, smallest margin {min(margins):.4f}")
    save_tensors(folder / "greedy.safetensors", tensors)
    write_json(folder / "greedy.json", {"versions": versions(), "cases": cases}, indent=None)


# What a Qwen2-VL / Qwen2.5-VL GGUF holds where llama.cpp's vocabulary GGUF (a Qwen2 text model)
# has [PADn] placeholders: the converter writes the tokenizer's special added tokens, and those that
# look special (<|...|>), as CONTROL (3), its other added tokens as USER_DEFINED (4). Qwen2-VL's
# tokenizer ends at <|video_pad|>; Qwen2.5-VL's adds the tool and fill-in-the-middle tokens.
VOCAB_GGUF = Path(os.environ.get("CAPTIONER_QWEN2_VOCAB_GGUF",
                                 Path.home() / ".cache/captioner/qwen2-vocab/ggml-vocab-qwen2.gguf"))
VL_TOKENS = [
    (151646, "<|object_ref_start|>", 3), (151647, "<|object_ref_end|>", 3), (151648, "<|box_start|>", 3),
    (151649, "<|box_end|>", 3), (151650, "<|quad_start|>", 3), (151651, "<|quad_end|>", 3),
    (151652, "<|vision_start|>", 3), (151653, "<|vision_end|>", 3), (151654, "<|vision_pad|>", 3),
    (151655, "<|image_pad|>", 3), (151656, "<|video_pad|>", 3), (151657, "<tool_call>", 4),
    (151658, "</tool_call>", 4), (151659, "<|fim_prefix|>", 3), (151660, "<|fim_middle|>", 3),
    (151661, "<|fim_suffix|>", 3), (151662, "<|fim_pad|>", 3), (151663, "<|repo_name|>", 3),
    (151664, "<|file_sep|>", 3),
]


def vl_vocab_gguf(out: Path) -> None:
    """The vocabulary GGUF with VL_TOKENS in their slots, every other key as it was."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    reader = GGUFReader(VOCAB_GGUF)
    arch = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(out, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        value = field.contents()
        if name == "tokenizer.ggml.tokens":
            for i, text, _ in VL_TOKENS:
                assert value[i] == f"[PAD{i}]", (i, value[i])
                value[i] = text
        elif name == "tokenizer.ggml.token_type":
            for i, _, ty in VL_TOKENS:
                value[i] = ty
        vtype = field.types[0]
        sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(name, value, vtype, sub_type=sub)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


class ImageOnlyProcessor(transformers.Qwen2VLProcessor):
    """Qwen2VLProcessor without a video processor: that one needs torchvision, which has no build
    for torch 2.15 here. Images take the same path through the class either way."""

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor" and argument is None:
            return None
        return super().check_argument_for_proper_class(argument_name, argument)


def make_prompt() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        vl_vocab_gguf(Path(tmp) / "vl-vocab.gguf")
        tok = transformers.AutoTokenizer.from_pretrained(tmp, gguf_file="vl-vocab.gguf")
    template = json.loads((OUT / "chat_template.json").read_text())["chat_template"]
    proc = ImageOnlyProcessor(image_processor=processor(PUBLISHED), tokenizer=tok, chat_template=template)
    cases = []
    for name, system, user, images in [
        # Captioner's default prompt (engine.rs DEFAULT_PROMPT).
        ("a caption", None, "Describe this image in one or two sentences.", ["photo_640x480.jpg"]),
        # DataFlow's ImageCaptionGenerate words (engine.rs DATAFLOW_SYSTEM, DATAFLOW_PROMPT).
        ("DataFlow's prompt", "You are a image caption generator. Your task is to generate a concise and "
         "informative caption for the given image content.",
         "Please provide a comprehensive description of the image.", ["photo_300x500.jpg"]),
        ("two images and a system prompt", "You caption images for a dataset.",
         "Caption both images: what differs?", ["small_100x80.png", "gray_200x150.png"]),
        ("unusual text", None, "Naïve café — 日本語, 12345 tokens!\n\n  Two <tool_call> lines\t.",
         ["rgba_160x120.png"]),
        ("text only", None, "Say hello.", []),
    ]:
        messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
        messages.append({"role": "user",
                         "content": [{"type": "image"} for _ in images] + [{"type": "text", "text": user}]})
        rendered = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        pil = [load_image_like_rust(IMAGES / i) for i in images]
        out = proc(text=[rendered], images=pil or None, return_tensors="pt")
        ids = out["input_ids"][0].tolist()
        grids = out["image_grid_thw"].tolist() if images else []
        cases.append({"case": name, "system": system, "user": user, "images": images, "rendered": rendered,
                      "grids": grids, "ids": ids, "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)})
        print(f"  prompt / {name}: {len(ids)} ids, grids {grids}")
    encode = [{"text": t, "ids": tok(t)["input_ids"]} for t in [
        "Hello world", "  leading spaces and trailing  ", "digits 1234567 and 3.14159", "naïve café 日本語 😀",
        "line one\nline two\r\n\n\ttabbed", "<|im_start|>user\nhi<|im_end|>", "<tool_call>{\"a\": 1}</tool_call>"]]
    specials = {text: tok.convert_tokens_to_ids(text) for _, text, _ in VL_TOKENS}
    specials.update({t: tok.convert_tokens_to_ids(t) for t in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]})
    write_json(OUT / "prompt.json", {
        "versions": versions(), "vocab_gguf_sha256": hashlib.sha256(VOCAB_GGUF.read_bytes()).hexdigest(),
        "vl_tokens": [{"id": i, "text": t, "type": ty} for i, t, ty in VL_TOKENS], "settings": PUBLISHED,
        "special_ids": specials, "cases": cases, "encode": encode})


# The tiny models' tokenizer: 500 byte-level BPE tokens trained on this text, then the family's
# special tokens at the ids the tiny configs give them (image 500, video 501, vision start 502 and
# end 503), the chat tokens, and fillers up to the vocabulary's 512, so that every id decodes.
TINY_SPECIALS = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_start|>",
                 "<|im_end|>", "<|endoftext|>"] + [f"<|extra_{i}|>" for i in range(5)]
TINY_CORPUS = """You are a helpful assistant. Describe this image in one or two sentences.
You are a image caption generator. Your task is to generate a concise and informative caption for the
given image content. Please provide a comprehensive description of the image. A photo of a red barn in a
green field under a blue sky, with two horses grazing near a wooden fence and hills behind them. The
picture shows a small gray square on a white background; the edges are sharp and the colors are flat.
Captions describe what is in the picture, where things are and what they are doing, in plain words.
A busy street at night: yellow taxis, people crossing, shop windows lit in orange and purple light.
Mountains reflected in a quiet lake at dawn; pine trees, mist, a canoe pulled up on the rocky shore."""
# DataFlow's ImageCaptionGenerate words and Captioner's default prompt (engine.rs).
DEFAULT_PROMPT = "Describe this image in one or two sentences."
DATAFLOW_SYSTEM = ("You are a image caption generator. Your task is to generate a concise and informative caption "
                   "for the given image content.")
DATAFLOW_PROMPT = "Please provide a comprehensive description of the image."


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([TINY_CORPUS] * 4, trainer)
    assert tok.get_vocab_size() == 500, tok.get_vocab_size()
    tok.add_special_tokens(TINY_SPECIALS)
    assert tok.token_to_id("<|image_pad|>") == 500 and tok.get_vocab_size() == 512
    return tok


def make_engine() -> None:
    tok = tiny_tokenizer()
    template = json.loads((OUT / "chat_template.json").read_text())["chat_template"]
    settings = dict(PUBLISHED, max_pixels=28 * 28 * 16)
    mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    for folder, family in [(OUT / "tiny-text", transformers.Qwen2VLForConditionalGeneration),
                           (OUT / "tiny-25", transformers.Qwen2_5_VLForConditionalGeneration)]:
        write_compact_json(folder / "tokenizer.json", json.loads(tok.to_str()))
        # PreTrainedTokenizerFast takes tokenizer.json as it is, as Captioner does.
        write_json(folder / "tokenizer_config.json", {
            "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>", "model_max_length": 4096}, indent=2)
        write_json(folder / "chat_template.json", {"chat_template": template}, indent=2)
        # As the published folders write it, with a small max_pixels.
        write_json(folder / "preprocessor_config.json", {
            **settings, "image_mean": mean, "image_std": std, "image_processor_type": "Qwen2VLImageProcessor",
            "processor_class": "Qwen2VLProcessor"}, indent=2)
        hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
        proc = ImageOnlyProcessor(image_processor=processor(settings), tokenizer=hf_tok, chat_template=template)
        model = family.from_pretrained(folder, dtype=torch.float32).eval()
        cases = []
        for name, system, user, images in [
            ("one image", None, DEFAULT_PROMPT, ["photo_640x480.jpg"]),
            ("two images, DataFlow's words", DATAFLOW_SYSTEM, DATAFLOW_PROMPT, ["small_100x80.png", "gray_200x150.png"]),
            # RGBA (composited over white) and one pixel (scaled up to min_pixels).
            ("an RGBA image and a one-pixel one", None, DEFAULT_PROMPT, ["rgba_160x120.png", "one_by_one.png"]),
        ]:
            messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
            messages.append({"role": "user",
                             "content": [{"type": "image"} for _ in images] + [{"type": "text", "text": user}]})
            rendered = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            inputs = proc(text=[rendered], images=[load_image_like_rust(IMAGES / i) for i in images],
                          return_tensors="pt")
            with torch.no_grad():
                out = model.generate(**inputs, max_new_tokens=12, do_sample=False, eos_token_id=505,
                                     pad_token_id=506, output_scores=True, return_dict_in_generate=True)
            prompt_len = inputs["input_ids"].shape[1]
            # Captioner's tokens end before the stop token, as the caption's text does.
            tokens = out.sequences[0, prompt_len:].tolist()
            tokens = tokens[:tokens.index(505)] if 505 in tokens else tokens
            margins = [float(v[0] - v[1]) for v in (torch.topk(s[0], 2).values for s in out.scores)]
            assert min(margins) > 1e-3, (name, margins)
            cases.append({"case": name, "system": system, "user": user, "images": images,
                          "ids": inputs["input_ids"][0].tolist(), "grids": inputs["image_grid_thw"].tolist(),
                          "tokens": tokens, "text": hf_tok.decode(tokens, skip_special_tokens=True).strip(),
                          "margins": margins})
            print(f"  engine / {folder.name} / {name}: {prompt_len} ids, tokens {tokens}, "
                  f"smallest margin {min(margins):.4f}")
        write_json(folder / "engine.json", {"versions": versions(), "max_new_tokens": 12, "cases": cases}, indent=None)


def make_windows() -> None:
    from transformers.vision_utils import get_vision_window_index

    cases = []
    # Qwen2.5-VL's window_size 112 with patches of 14 and merge 2: windows of 4 x 4 merge units.
    for grids, window, patch in [
        ([[1, 6, 8]], 112, 14),  # 3 x 4 units: one window row, its width exactly one window
        ([[1, 16, 18]], 112, 14),  # a column of windows cut by the edge
        ([[1, 34, 46]], 112, 14),  # photo_640x480 at the published bounds
        ([[1, 6, 8], [1, 10, 6]], 112, 14),  # two images: boundaries continue
        ([[2, 8, 8]], 112, 14),  # two frames
        ([[1, 12, 20]], 56, 14),  # windows of 2 x 2 units
    ]:
        index, cu = get_vision_window_index(torch.tensor(grids), 2, window, patch)
        cases.append({"grids": grids, "window_size": window, "patch_size": patch, "merge_size": 2,
                      "window_index": index.tolist(), "cu_window_seqlens": cu.tolist()})
    write_json(OUT / "windows.json", {"versions": versions(), "cases": cases}, indent=None)
    print(f"  windows: {len(cases)} cases")


def make_vision25() -> None:
    folder = OUT / "tiny-25"
    reset_dir(folder)
    torch.manual_seed(0)
    # Windows of 56 px (2 x 2 merge units) so that the test images have several, cut at the edges.
    config = transformers.Qwen2_5_VLConfig(
        text_config=TINY_TEXT, tie_word_embeddings=True,
        vision_config={"depth": 4, "hidden_size": 32, "intermediate_size": 48, "num_heads": 2, "out_hidden_size": 64,
                       "window_size": 56, "fullatt_block_indexes": [1, 3]},
        image_token_id=500, video_token_id=501, vision_start_token_id=502, vision_end_token_id=503)
    model = transformers.Qwen2_5_VLForConditionalGeneration(config).eval()
    with torch.no_grad():
        reinit_(model, 25)
    model.to(torch.bfloat16).save_pretrained(folder)
    model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    images = [load_image_like_rust(IMAGES / name) for name in ["small_100x80.png", "photo_300x500.jpg"]]
    settings = dict(PUBLISHED, max_pixels=28 * 28 * 16)
    out = processor(settings)(images=images, return_tensors="pt")
    with torch.no_grad():
        vision = model.model.visual(out["pixel_values"], grid_thw=out["image_grid_thw"])
    write_json(folder / "vision.json", {"versions": versions(), "images": ["small_100x80.png", "photo_300x500.jpg"],
                                        "settings": settings})
    save_tensors(folder / "vision.safetensors", {
        "image_grid_thw": out["image_grid_thw"].numpy(), "merged": vision.pooler_output.numpy()})
    print(f"  vision25: grids {out['image_grid_thw'].tolist()} -> merged {tuple(vision.pooler_output.shape)}")


SECTIONS = {
    "preprocess": make_preprocess,
    "positions": make_positions,
    "text": make_text,
    "vision": make_vision,
    "windows": make_windows,
    "vision25": make_vision25,
    "greedy": make_greedy,
    "prompt": make_prompt,
    "engine": make_engine,
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
