#!/usr/bin/env python3
"""TIFF, ICO and AVIF fixtures and what Pillow makes of them (tests/fixtures/formats/).

Writes small images in the TIFF and ICO variants people have (compressions, bit depths, colour
models, alpha, orientation, several pages or sizes), GIFs without a colour table and BMPs
that only Pillow read (RLE8 stored top-down, an OS/2 2.x header), a JPEG with junk between
markers and one with an Adobe segment cut short, then reads each back as transformers'
image processors receive it: `Image.open` -> `ImageOps.exif_transpose` -> `convert_to_rgb`
(non-RGB modes converted to RGBA and composited over opaque white). The RGB bytes go to
goldens.safetensors, and what Pillow opened (mode, size, or the error) to goldens.json.

Run by a developer, never by CI, in a venv with tools/requirements-formats.txt:
    python3 -m venv /tmp/formats && /tmp/formats/bin/pip install -r tools/requirements-formats.txt
    /tmp/formats/bin/python tools/make_format_goldens.py
"""

import io
import json
import struct
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageOps

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "formats"


def photo(w: int, h: int, seed: int) -> np.ndarray:
    """Smooth gradients with a little noise: every channel and most levels in use."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / max(w - 1, 1)
    g = 255 * y / max(h - 1, 1)
    b = 127.5 + 127.5 * np.sin((x + 2 * y) / 5.0)
    img = np.stack([r, g, b], axis=-1) + rng.normal(0, 6, (h, w, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def convert_to_rgb(img: Image.Image) -> Image.Image:
    """transformers' image_transforms.convert_to_rgb."""
    if img.mode == "RGB":
        return img
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def make_files() -> list[str]:
    OUT.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(photo(41, 27, 1))
    alpha = Image.fromarray(np.tile(np.linspace(0, 255, 41).astype(np.uint8), (27, 1)))
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    files = {}

    for compression in ("raw", "tiff_lzw", "tiff_adobe_deflate", "packbits"):
        files[f"rgb_{compression.replace('tiff_', '')}.tif"] = (rgb, {"compression": compression})
    files["gray_lzw.tif"] = (rgb.convert("L"), {"compression": "tiff_lzw"})
    files["rgba_lzw.tif"] = (rgba, {"compression": "tiff_lzw"})
    files["palette.tif"] = (rgb.quantize(64, dither=Image.Dither.NONE), {"compression": "raw"})
    gray16 = Image.fromarray(photo(41, 27, 2)[:, :, 0].astype(np.uint16) * 3)  # mode I;16
    files["gray16.tif"] = (gray16, {"compression": "raw"})
    files["cmyk.tif"] = (rgb.convert("CMYK"), {"compression": "tiff_lzw"})
    files["bilevel_g4.tif"] = (rgb.convert("1"), {"compression": "group4"})
    files["jpeg.tif"] = (rgb, {"compression": "jpeg"})
    # Orientation 6 (rotate 90 clockwise to view), in the TIFF's own tag.
    files["rotated.tif"] = (rgb, {"compression": "tiff_lzw", "tiffinfo": {274: 6}})

    names = []
    for name, (img, opts) in files.items():
        img.save(OUT / name, **opts)
        names.append(name)

    # Two pages: the first is the image.
    first, second = rgb, Image.fromarray(photo(41, 27, 3))
    first.save(OUT / "two_pages.tif", save_all=True, append_images=[second], compression="tiff_lzw")
    names.append("two_pages.tif")

    # GIFs with no colour table at all, global or local: Pillow reads the indices as grey levels
    # (mode L). Written by Pillow with a table, which is then cut out of the header.
    indexed = Image.fromarray(photo(41, 27, 4)).quantize(16, dither=Image.Dither.NONE)
    for name, opts in (("gif_no_table.gif", {}), ("gif_no_table_transparent.gif", {"transparency": 3})):
        buf = io.BytesIO()
        indexed.save(buf, "GIF", **opts)
        data = buf.getvalue()
        flags = data[10]
        assert flags & 0x80, "Pillow wrote a global table"
        table = 3 << ((flags & 7) + 1)
        (OUT / name).write_bytes(data[:10] + bytes([flags & 0x70]) + data[11:13] + data[13 + table :])
        names.append(name)

    # BMPs Pillow reads that the image crate did not: RLE8 stored top-down, and an OS/2 2.x
    # header (64 bytes). Pillow writes neither, so they are put together here.
    pixels = np.asarray(indexed)
    palette = indexed.getpalette()[: 3 * 16]
    quads = b"".join(bytes([palette[3 * i + 2], palette[3 * i + 1], palette[3 * i], 0]) for i in range(16))

    def bmp(header: bytes, data: bytes) -> bytes:
        offset = 14 + len(header) + len(quads)
        return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + header + quads + data

    def info(size: int, height: int, compression: int, data: bytes) -> bytes:
        h, w = pixels.shape
        fields = struct.pack("<IiiHHIIiiII", size, w, height, 1, 8, compression, len(data), 2835, 2835, 16, 0)
        return fields + b"\0" * (size - 40)

    def rle8(rows) -> bytes:
        out = b""
        for row in rows:
            x = 0
            while x < len(row):
                n = 1
                while x + n < len(row) and n < 255 and row[x + n] == row[x]:
                    n += 1
                out += bytes([n, row[x]])
                x += n
            out += b"\0\0"
        return out + b"\0\1"

    h, w = pixels.shape
    top_down = rle8(pixels)
    (OUT / "bmp_rle8_top_down.bmp").write_bytes(bmp(info(40, -h, 1, top_down), top_down))
    stride = (w + 3) // 4 * 4
    bottom_up = b"".join(bytes(row) + b"\0" * (stride - w) for row in pixels[::-1])
    (OUT / "bmp_os2_v2.bmp").write_bytes(bmp(info(64, h, 0, bottom_up), bottom_up))
    names += ["bmp_rle8_top_down.bmp", "bmp_os2_v2.bmp"]

    # A JPEG with stray bytes between two markers, which libjpeg skips with a warning.
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    after_app0 = 4 + int.from_bytes(data[4:6], "big")
    (OUT / "jpeg_junk_between_markers.jpg").write_bytes(data[:after_app0] + b"\0\x11junk" + data[after_app0:])
    names.append("jpeg_junk_between_markers.jpg")
    # An Adobe APP14 segment cut short (9 of its 12 bytes of data: the version and flags0, no
    # transform): Pillow reads the version and opens it; libjpeg ignores any APP14 too short to
    # be Adobe's and decodes the rest. (Cut before the version, Pillow refuses the file.)
    short_app14 = b"\xff\xee\x00\x0bAdobe\x00\x64\x80\x00"
    (OUT / "jpeg_short_app14.jpg").write_bytes(data[:after_app0] + short_app14 + data[after_app0:])
    names.append("jpeg_short_app14.jpg")

    # Icons: Pillow opens the largest size. PNG entries (Pillow's default) and BMP entries with
    # an alpha channel.
    icon = rgba.resize((48, 48), Image.Resampling.LANCZOS)
    icon.save(OUT / "icon_png.ico", sizes=[(16, 16), (32, 32), (48, 48)])
    icon.save(OUT / "icon_bmp.ico", sizes=[(16, 16), (48, 48)], bitmap_format="bmp")
    names += ["icon_png.ico", "icon_bmp.ico"]

    # AVIF, which this program does not read: in the browser the page has the browser decode it
    # (libavif in Pillow; the browser's own decoder there), and Pillow's pixels say what a
    # decode should give.
    rgb.save(OUT / "rgb.avif", quality=90)
    rgba.save(OUT / "rgba.avif", quality=90)
    names += ["rgb.avif", "rgba.avif"]
    return names


def save_safetensors(path: Path, tensors: dict[str, np.ndarray], meta: dict[str, str]) -> None:
    """safetensors by hand (U8 tensors only): no package needed beyond numpy."""
    header, data = {"__metadata__": meta}, b""
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array, dtype=np.uint8).tobytes()
        header[name] = {"dtype": "U8", "shape": list(array.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def main() -> None:
    names = make_files()
    goldens, tensors = {}, {}
    for name in names:
        try:
            img = Image.open(OUT / name)
            img.load()
        except Exception as e:  # noqa: BLE001 - recording the failure is the point
            goldens[name] = {"error": type(e).__name__}
            continue
        entry = {"mode": img.mode, "size_wh": list(img.size)}
        img = ImageOps.exif_transpose(img)
        out = np.asarray(convert_to_rgb(img))
        tensors[name] = out
        entry.update(tensor=name, rgb_hw=list(out.shape[:2]))
        goldens[name] = entry
    save_safetensors(OUT / "goldens.safetensors", tensors, {"pillow": PIL.__version__})
    (OUT / "goldens.json").write_text(
        json.dumps({"pillow": PIL.__version__, "numpy": np.__version__, "files": goldens}, indent=1) + "\n"
    )
    for name in names:
        print(f"{name:22} {(OUT / name).stat().st_size:7} bytes  {goldens[name]}")


if __name__ == "__main__":
    main()
