//! Image bytes to 8-bit RGB, the way a PIL image reaches transformers.
//!
//! The reference path (checked against Pillow 13.0.0 / transformers 5.24.0)
//! is `PIL.Image.open` -> `ImageOps.exif_transpose` -> transformers'
//! `convert_to_rgb` (`image_transforms.convert_to_rgb`):
//! * a mode with an alpha band, or an image with a `transparency` entry, is
//!   converted to RGBA and alpha-composited over opaque white with
//!   `Image.alpha_composite` (integer math, see [`composite_over_white`]),
//!   then the alpha band is dropped;
//! * anything else goes through `Image.convert("RGB")` (greyscale is
//!   replicated, palettes are looked up).
//!
//! (transformers' `load_image`, used when the processor is given a path or
//! URL instead of a PIL image, converts with `convert("RGB")` and so drops
//! alpha instead of compositing; this module follows the PIL-image path.)
//!
//! How the `image` crate's output is brought in line with Pillow:
//! * palettes and `tRNS` keys are expanded to RGBA by the crate; "has alpha"
//!   is "decoded with an alpha channel" (a fully opaque alpha composites to
//!   the unchanged colour, so the two views agree);
//! * 16-bit PNGs: RGB(A) and LA keep the high byte, greyscale (Pillow mode
//!   `I;16`) clamps to 255; with a `tRNS` key Pillow compares the 8-bit values
//!   to the key's low byte (replicated here);
//! * GIF: first frame only; when it does not cover the logical screen and has
//!   no transparent index, the uncovered area is palette entry 0 (Pillow)
//!   instead of transparent (crate); a frame with no colour table at all is
//!   greyscale (Pillow's mode L), which the crate decodes once the file is
//!   given a table of the 256 greys;
//! * BMP: an OS/2 2.x header and RLE rows stored top-down, both of which
//!   Pillow reads, are rewritten into forms the crate reads;
//! * TIFF: the first page, oriented by its own Orientation tag, a palette
//!   (8-bit indices) looked up as Pillow does (see [`super::tiff_palette`]);
//!   ICO: the largest icon;
//! * orientation: EXIF tag 0x0112 of IFD0, else `tiff:Orientation` in XMP,
//!   as `Image.getexif` does;
//! * a JPEG without an EOI marker after its first scan is refused as
//!   truncated, like Pillow's "image file is truncated" (Pillow does accept
//!   some files that lack only the final EOI; this module does not).
//!
//! JPEG pixels come from [`super::jpeg`], which reproduces libjpeg-turbo
//! (Pillow's decoder: ISLOW IDCT, fancy upsampling, integer YCbCr tables)
//! bit for bit for baseline and progressive Huffman JPEGs (greyscale, YCbCr,
//! RGB, CMYK/YCCK). Only what it does not implement (arithmetic coding,
//! lossless/hierarchical, 12-bit samples, other component counts) or fails
//! on falls back to the `image` crate (zune-jpeg), whose IDCT, upsampling
//! and colour conversion round differently (1-4 levels on a few percent of
//! samples). Every other format decodes bit-identically to Pillow.
//!
//! Limits: at most [`MAX_SIDE`] pixels per side and [`MAX_ALLOC`] bytes of
//! decoded data, checked from the header before any pixel buffer exists.
//! No file system access, no threads: bytes in, image out.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, RgbImage};

use super::PreprocessError;

/// Largest accepted width or height, in pixels.
pub const MAX_SIDE: u32 = 16384;
/// Largest decoded buffer the decoder may allocate, in bytes.
pub const MAX_ALLOC: u64 = 1 << 30;

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::WebP => "WebP",
        ImageFormat::Gif => "GIF",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Tiff => "TIFF",
        ImageFormat::Ico => "ICO",
        _ => "other",
    }
}

/// Decodes JPEG, PNG, WebP, GIF (first frame), BMP, TIFF (first page) or ICO
/// (the largest icon) bytes, applies the EXIF orientation and converts to RGB
/// like transformers' `convert_to_rgb`.
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage, PreprocessError> {
    if bytes.is_empty() {
        return Err(PreprocessError::EmptyInput);
    }
    let format = image::guess_format(bytes).map_err(|_| PreprocessError::UnknownFormat)?;
    if !matches!(
        format,
        ImageFormat::Jpeg
            | ImageFormat::Png
            | ImageFormat::WebP
            | ImageFormat::Gif
            | ImageFormat::Bmp
            | ImageFormat::Tiff
            | ImageFormat::Ico
    ) {
        return Err(PreprocessError::UnsupportedFormat(format!("{format:?}")));
    }
    let name = format_name(format);
    let decode_err = |e: ImageError| match e {
        ImageError::Unsupported(what) => PreprocessError::UnsupportedVariant {
            format: name,
            message: what.to_string(),
        },
        other => PreprocessError::Decode {
            format: name,
            message: other.to_string(),
        },
    };

    if format == ImageFormat::Jpeg && jpeg_is_truncated(bytes) {
        return Err(PreprocessError::Truncated { format: name });
    }
    // Variants Pillow reads and the `image` crate refuses, rewritten into ones it reads.
    // (And whether the decoded image is then flipped, or, for a palette TIFF decoded as its
    // indices, the colours they are looked up in.)
    let (rewritten, flip, palette) = match format {
        ImageFormat::Gif => (gif_with_grey_table(bytes), false, None),
        ImageFormat::Jpeg => (jpeg_without_short_adobe(bytes), false, None),
        ImageFormat::Bmp => match bmp_the_crate_reads(bytes) {
            Some((patched, flip)) => (Some(patched), flip, None),
            None => (None, false, None),
        },
        ImageFormat::Tiff => match super::tiff_palette::as_grey(bytes) {
            Some((patched, colours)) => (Some(patched), false, Some(colours)),
            None => (None, false, None),
        },
        _ => (None, false, None),
    };
    let bytes = rewritten.as_deref().unwrap_or(bytes);

    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_ALLOC);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(decode_err)?;

    // Only the header has been read so far: refuse huge images before any
    // pixel buffer exists.
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(PreprocessError::EmptyImage { width, height });
    }
    if width > MAX_SIDE || height > MAX_SIDE || decoder.total_bytes() > MAX_ALLOC {
        return Err(PreprocessError::TooLarge { width, height });
    }

    // A TIFF carries its orientation in its own first directory, which the TIFF
    // decoder reads; the other formats in EXIF or XMP.
    let orientation = match format {
        ImageFormat::Tiff => decoder.orientation().unwrap_or(Orientation::NoTransforms),
        _ => pil_orientation(&mut decoder),
    };
    // JPEG pixels come from the libjpeg-turbo-exact decoder; what it does
    // not support (arithmetic coding, lossless, 12-bit, ...) or refuses
    // goes through the `image` crate as before.
    let exact = match format {
        ImageFormat::Jpeg => super::jpeg::decode(bytes, MAX_SIDE, MAX_ALLOC)
            .ok()
            .and_then(|d| RgbImage::from_raw(d.width, d.height, d.rgb)),
        _ => None,
    };
    let mut img = match exact {
        Some(rgb) => DynamicImage::ImageRgb8(rgb),
        None => DynamicImage::from_decoder(decoder).map_err(|e| match e {
            ImageError::Limits(_) => PreprocessError::TooLarge { width, height },
            ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                PreprocessError::Truncated { format: name }
            }
            other => decode_err(other),
        })?,
    };
    if let Some(colours) = &palette {
        img = super::tiff_palette::apply(img, colours).ok_or(
            PreprocessError::UnsupportedVariant {
                format: name,
                message: "a palette image whose indices are not 8-bit".into(),
            },
        )?;
    }
    if format == ImageFormat::Gif {
        if let (Some(fill), DynamicImage::ImageRgba8(buf)) = (gif_first_frame_fill(bytes), &mut img)
        {
            fill.apply(buf);
        }
    }
    if flip {
        img = img.flipv();
    }
    img.apply_orientation(orientation);
    let key = if format == ImageFormat::Png {
        png_16bit_transparency_key(bytes)
    } else {
        None
    };
    Ok(convert(img, key))
}

/// `ImageOps.exif_transpose` decides from `Image.getexif()`: the EXIF
/// Orientation tag (0x0112) of IFD0 and, only when that tag is absent, the
/// first `tiff:Orientation="N"` / `tiff:Orientation>N` in the XMP packet.
/// Values other than 2..=8 mean no transform.
fn pil_orientation(decoder: &mut impl ImageDecoder) -> Orientation {
    let from_exif = decoder
        .exif_metadata()
        .ok()
        .flatten()
        .and_then(|exif| exif_orientation_tag(&exif));
    let value = from_exif.or_else(|| {
        decoder
            .xmp_metadata()
            .ok()
            .flatten()
            .and_then(|xmp| xmp_orientation(&xmp))
    });
    value
        .and_then(|v| u8::try_from(v).ok())
        .and_then(Orientation::from_exif)
        .unwrap_or(Orientation::NoTransforms)
}

/// The Orientation tag of IFD0 in a TIFF-structured EXIF block (optionally
/// prefixed by `Exif\0\0`); `None` when absent or unreadable. A tag with
/// more than one value reads as 0 (present, no transform), as in Pillow
/// where the tuple matches no transpose method.
fn exif_orientation_tag(exif: &[u8]) -> Option<u32> {
    let t = exif.strip_prefix(b"Exif\0\0").unwrap_or(exif);
    let big = match t.get(..4)? {
        b"II*\0" => false,
        b"MM\0*" => true,
        _ => return None,
    };
    let u16_at = |o: usize| -> Option<u16> {
        let b: [u8; 2] = t.get(o..o + 2)?.try_into().ok()?;
        Some(if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    };
    let u32_at = |o: usize| -> Option<u32> {
        let b: [u8; 4] = t.get(o..o + 4)?.try_into().ok()?;
        Some(if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    let ifd = usize::try_from(u32_at(4)?).ok()?;
    let entries = usize::from(u16_at(ifd)?);
    for i in 0..entries {
        let e = ifd + 2 + 12 * i;
        if u16_at(e)? != 0x0112 {
            continue;
        }
        let kind = u16_at(e + 2)?;
        let count = u32_at(e + 4)?;
        if count != 1 {
            return Some(0);
        }
        return match kind {
            1 | 6 | 7 => t.get(e + 8).map(|&b| u32::from(b)),
            3 | 8 => u16_at(e + 8).map(u32::from),
            4 | 9 => u32_at(e + 8),
            _ => Some(0),
        };
    }
    None
}

/// Pillow's regex `tiff:Orientation(="|>)([0-9])` on the XMP packet.
fn xmp_orientation(xmp: &[u8]) -> Option<u32> {
    const KEY: &[u8] = b"tiff:Orientation";
    let mut from = 0;
    while let Some(pos) = xmp.get(from..)?.windows(KEY.len()).position(|w| w == KEY) {
        let rest = &xmp[from + pos + KEY.len()..];
        let digit = match rest {
            [b'=', b'"', d, ..] | [b'>', d, ..] if d.is_ascii_digit() => Some(*d),
            _ => None,
        };
        if let Some(d) = digit {
            return Some(u32::from(d - b'0'));
        }
        from += pos + 1;
    }
    None
}

/// True when a JPEG has no EOI marker after its first scan. Pillow refuses
/// such files ("image file is truncated") while the `image` crate would fill
/// in the missing rows. The marker segments are walked up to the first SOS
/// (so an EOI inside an EXIF thumbnail does not count); after that, FF D9
/// cannot occur inside entropy-coded data.
fn jpeg_is_truncated(bytes: &[u8]) -> bool {
    let mut pos = 2; // after SOI
    loop {
        // Skip to the next marker: stray bytes before it (libjpeg skips them with a warning,
        // and so Pillow reads the file), then fill bytes.
        while bytes.get(pos).is_some_and(|&b| b != 0xFF) {
            pos += 1;
        }
        while bytes.get(pos) == Some(&0xFF) && bytes.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (bytes.get(pos), bytes.get(pos + 1)) else {
            return true;
        };
        pos += 2;
        match marker {
            // Markers without a length field.
            0x01 | 0xD0..=0xD7 => continue,
            0xD8 => continue,
            0xD9 => return false,
            _ => {}
        }
        let Some(len) = bytes
            .get(pos..pos + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            return true;
        };
        if marker == 0xDA {
            return !bytes[pos..].windows(2).any(|w| w == [0xFF, 0xD9]);
        }
        pos += len;
    }
}

/// One channel of Pillow's `alpha_composite(white_opaque, src)`.
///
/// Pillow (libImaging/AlphaComposite.c, scalar path; the same table is
/// produced by Pillow 13.0.0 for all 256 x 256 inputs) works in integers with
/// 7 extra fraction bits: with an opaque destination the blended alpha is
/// 255 * 255, the source weight is `a * 255 * 255 * 128 / (255 * 255)`, the
/// destination weight is `255 * 128` minus that, and the weighted sum plus a
/// rounding half is divided by 255 with the shift trick
/// `((v >> 8) + v) >> 8` before dropping the 7 fraction bits. A fully
/// transparent source pixel returns the destination unchanged.
#[inline]
pub fn composite_over_white(c: u8, a: u8) -> u8 {
    if a == 0 {
        return 255;
    }
    const FRAC: u32 = 7;
    let a = u32::from(a);
    let out_alpha = a * 255 + 255 * (255 - a);
    let w_src = a * 255 * 255 * (1 << FRAC) / out_alpha;
    let w_dst = 255 * (1 << FRAC) - w_src;
    let v = u32::from(c) * w_src + 255 * w_dst + (0x80 << FRAC);
    ((((v >> 8) + v) >> 8) >> FRAC) as u8
}

fn from_rgba_samples<I: Iterator<Item = [u8; 4]>>(w: u32, h: u32, px: I) -> RgbImage {
    let mut out = Vec::with_capacity(w as usize * h as usize * 3);
    for [r, g, b, a] in px {
        out.extend_from_slice(&[
            composite_over_white(r, a),
            composite_over_white(g, a),
            composite_over_white(b, a),
        ]);
    }
    RgbImage::from_raw(w, h, out).unwrap_or_else(|| RgbImage::new(w, h))
}

fn from_rgb_samples<I: Iterator<Item = [u8; 3]>>(w: u32, h: u32, px: I) -> RgbImage {
    let mut out = Vec::with_capacity(w as usize * h as usize * 3);
    for p in px {
        out.extend_from_slice(&p);
    }
    RgbImage::from_raw(w, h, out).unwrap_or_else(|| RgbImage::new(w, h))
}

/// High byte of a 16-bit sample (Pillow's `;16B` unpackers keep it).
#[inline]
fn hi(v: u16) -> u8 {
    (v >> 8) as u8
}

/// Where Pillow's first GIF frame differs from the `image` crate's: when the
/// first frame does not cover the logical screen and has no transparent
/// index, Pillow leaves the uncovered area at palette index 0 (an opaque
/// colour), the `image` crate makes it transparent (white after compositing).
struct GifFill {
    rect: (u32, u32, u32, u32),
    color: [u8; 3],
}

impl GifFill {
    fn apply(&self, buf: &mut image::RgbaImage) {
        let (x0, y0, w, h) = self.rect;
        let [r, g, b] = self.color;
        for (x, y, p) in buf.enumerate_pixels_mut() {
            let inside = x >= x0 && x - x0 < w && y >= y0 && y - y0 < h;
            if !inside {
                *p = image::Rgba([r, g, b, 255]);
            }
        }
    }
}

/// The first image descriptor of a GIF: its offset, and whether a graphic control extension
/// before it makes an index transparent. `pos` is where the blocks start (after the header
/// and any global table).
fn gif_first_descriptor(bytes: &[u8], mut pos: usize) -> Option<(usize, bool)> {
    let mut transparent = false;
    loop {
        match *bytes.get(pos)? {
            0x21 => {
                let label = *bytes.get(pos + 1)?;
                pos += 2;
                if label == 0xF9 && *bytes.get(pos)? >= 4 {
                    transparent = bytes.get(pos + 1)? & 1 != 0;
                }
                // Skip the data sub-blocks.
                loop {
                    let n = usize::from(*bytes.get(pos)?);
                    pos += 1 + n;
                    if n == 0 {
                        break;
                    }
                }
            }
            0x2C => return Some((pos, transparent)),
            _ => return None,
        }
    }
}

/// Parses the GIF header up to the first image descriptor.
fn gif_first_frame_fill(bytes: &[u8]) -> Option<GifFill> {
    let u16_at = |o: usize| -> Option<u16> {
        Some(u16::from_le_bytes(bytes.get(o..o + 2)?.try_into().ok()?))
    };
    let (sw, sh) = (u32::from(u16_at(6)?), u32::from(u16_at(8)?));
    let flags = *bytes.get(10)?;
    let mut pos = 13;
    let mut global = None;
    if flags & 0x80 != 0 {
        let len = 3 << ((flags & 7) + 1);
        global = Some(bytes.get(pos..pos + 3)?);
        pos += len;
    }
    let (pos, transparent) = gif_first_descriptor(bytes, pos)?;
    let (x, y) = (u32::from(u16_at(pos + 1)?), u32::from(u16_at(pos + 3)?));
    let (w, h) = (u32::from(u16_at(pos + 5)?), u32::from(u16_at(pos + 7)?));
    let local_flags = *bytes.get(pos + 9)?;
    let covers = x == 0 && y == 0 && w >= sw && h >= sh;
    if transparent || covers {
        return None;
    }
    let palette = if local_flags & 0x80 != 0 {
        Some(bytes.get(pos + 10..pos + 13)?)
    } else {
        global
    };
    let color = match palette {
        Some(p) => [p[0], p[1], p[2]],
        None => [0, 0, 0],
    };
    Some(GifFill {
        rect: (x, y, w, h),
        color,
    })
}

/// A JPEG without its Adobe (APP14) segments that are too short to hold Adobe's 12 bytes;
/// `None` when it has none. libjpeg, and Pillow with it, ignores such a segment (the exact
/// decoder does too); zune-jpeg, which the `image` crate reads the header with, refuses the
/// file. Only the header, up to the first scan, is looked at.
fn jpeg_without_short_adobe(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut cut = Vec::new();
    let mut pos = 2; // after SOI
    while pos + 4 <= bytes.len() {
        let marker = bytes[pos + 1];
        // Junk between segments and fill bytes, skipped as libjpeg skips them.
        if bytes[pos] != 0xFF || marker == 0xFF {
            pos += 1;
            continue;
        }
        match marker {
            0xDA | 0xD9 => break,
            0x01 | 0xD0..=0xD7 => {
                pos += 2;
                continue;
            }
            _ => {}
        }
        let end = pos + 2 + usize::from(u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]]));
        let data = bytes.get(pos + 4..end)?;
        if marker == 0xEE && data.starts_with(b"Adobe") && data.len() < 12 {
            cut.push(pos..end);
        }
        pos = end;
    }
    if cut.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut from = 0;
    for range in cut {
        out.extend_from_slice(&bytes[from..range.start]);
        from = range.end;
    }
    out.extend_from_slice(&bytes[from..]);
    Some(out)
}

/// A GIF whose first frame has no colour table, global or local, with a global table of the
/// 256 greys added; `None` for any other GIF. Pillow reads such a frame as greyscale (mode L:
/// each index is its own grey level) where the `gif` crate refuses it; with the table, the
/// crate decodes it to the same pixels, a transparent index included.
fn gif_with_grey_table(bytes: &[u8]) -> Option<Vec<u8>> {
    let flags = *bytes.get(10)?;
    if flags & 0x80 != 0 {
        return None;
    }
    // Does the first frame bring its own table?
    let (pos, _) = gif_first_descriptor(bytes, 13)?;
    if bytes.get(pos + 9)? & 0x80 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() + 768);
    out.extend_from_slice(&bytes[..13]);
    // A global table of 2^(7 + 1) entries; the colour resolution bits are kept.
    out[10] = flags | 0x87;
    out.extend((0..=255u8).flat_map(|g| [g, g, g]));
    out.extend_from_slice(&bytes[13..]);
    Some(out)
}

/// A BMP in a form Pillow reads and the `image` crate refuses, rewritten into one the crate
/// reads, and whether the decoded image must then be flipped upside down; `None` for any other
/// BMP. Two forms:
/// * an OS/2 2.x header (64 bytes), whose first 40 bytes are Windows' BITMAPINFOHEADER: cut
///   to those (for the compressions both read alike: none, RLE8, RLE4);
/// * RLE rows stored top-down (a negative height), which the crate only takes bottom-up: the
///   height is made positive and the decoded image flipped.
fn bmp_the_crate_reads(bytes: &[u8]) -> Option<(Vec<u8>, bool)> {
    let u32_at = |o: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(o..o + 4)?.try_into().ok()?))
    };
    let header = u32_at(14)?;
    let height = u32_at(22)? as i32;
    let compression = u32_at(30)?;
    // (the whole 64-byte header must be there to be cut: the fuzzer found one that was not)
    let os2 = header == 64 && compression <= 2 && bytes.len() >= 14 + 64;
    let rle_top_down = matches!(compression, 1 | 2) && height < 0 && (header == 40 || os2);
    if !os2 && !rle_top_down {
        return None;
    }
    let mut out = bytes.to_vec();
    if rle_top_down {
        out[22..26].copy_from_slice(&height.checked_neg()?.to_le_bytes());
    }
    if os2 {
        const EXTRA: u32 = 64 - 40;
        let offset = u32_at(10)?.checked_sub(EXTRA)?;
        out[10..14].copy_from_slice(&offset.to_le_bytes());
        out[14..18].copy_from_slice(&40u32.to_le_bytes());
        out.drain(54..78);
        let size = u32_at(2)?.saturating_sub(EXTRA);
        out[2..6].copy_from_slice(&size.to_le_bytes());
    }
    Some((out, rle_top_down))
}

/// The `tRNS` colour key of a 16-bit greyscale or RGB PNG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Png16Key {
    Grey(u16),
    Rgb([u16; 3]),
}

/// Reads the IHDR and `tRNS` chunks of a PNG: the key only matters for
/// 16-bit greyscale / RGB images (colour types 0 / 2), where Pillow's
/// handling differs from a plain colour-key test (see [`convert`]).
fn png_16bit_transparency_key(bytes: &[u8]) -> Option<Png16Key> {
    let (&depth, &color) = (bytes.get(24)?, bytes.get(25)?);
    if depth != 16 || (color != 0 && color != 2) {
        return None;
    }
    let mut pos = 8;
    loop {
        let len = usize::try_from(u32::from_be_bytes(
            bytes.get(pos..pos + 4)?.try_into().ok()?,
        ))
        .ok()?;
        let kind = bytes.get(pos + 4..pos + 8)?;
        let data = bytes.get(pos + 8..pos.checked_add(8)?.checked_add(len)?)?;
        match kind {
            b"tRNS" => {
                let v = |i: usize| -> Option<u16> {
                    Some(u16::from_be_bytes(
                        data.get(2 * i..2 * i + 2)?.try_into().ok()?,
                    ))
                };
                return if color == 0 {
                    Some(Png16Key::Grey(v(0)?))
                } else {
                    Some(Png16Key::Rgb([v(0)?, v(1)?, v(2)?]))
                };
            }
            b"IDAT" | b"IEND" => return None,
            _ => pos += 12 + len,
        }
    }
}

/// Converts a decoded image to RGB the way Pillow + transformers would.
pub fn to_rgb_like_pil(img: DynamicImage) -> RgbImage {
    convert(img, None)
}

/// RGB from pixels another decoder made of a file this module does not read (the browser's
/// decoders, for AVIF or HEIC): `rgba` holds `width * height` RGBA samples, row by row, alpha
/// not premultiplied. Alpha is composited over white, as for any image decoded with alpha, and
/// the size limits are those of [`decode_image`].
pub fn rgb_from_rgba(width: u32, height: u32, rgba: Vec<u8>) -> Result<RgbImage, PreprocessError> {
    if width == 0 || height == 0 {
        return Err(PreprocessError::EmptyImage { width, height });
    }
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(PreprocessError::TooLarge { width, height });
    }
    let bytes = rgba.len();
    let bad = PreprocessError::BadPixels {
        width,
        height,
        bytes,
    };
    // (`from_raw` takes a longer buffer too, which would mean the sizes are wrong.)
    if bytes as u64 != u64::from(width) * u64::from(height) * 4 {
        return Err(bad);
    }
    let image = image::RgbaImage::from_raw(width, height, rgba).ok_or(bad)?;
    Ok(to_rgb_like_pil(DynamicImage::ImageRgba8(image)))
}

/// `to_rgb_like_pil`, plus the 16-bit PNG colour-key quirk: Pillow holds
/// those images as 8-bit values (16-bit greyscale clamped to 255, RGB as
/// high bytes) and then marks transparent the pixels whose 8-bit values
/// equal the key truncated to its low byte (Pillow 13.0.0 behaviour,
/// checked); the `image` crate compares the full 16-bit values instead.
fn convert(img: DynamicImage, key: Option<Png16Key>) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    match (img, key) {
        (DynamicImage::ImageLumaA16(i), Some(Png16Key::Grey(k))) => from_rgba_samples(
            w,
            h,
            i.pixels().map(|p| {
                let g = p.0[0].min(255) as u8;
                [g, g, g, if g == k as u8 { 0 } else { 255 }]
            }),
        ),
        (DynamicImage::ImageRgba16(i), Some(Png16Key::Rgb(k))) => from_rgba_samples(
            w,
            h,
            i.pixels().map(|p| {
                let [r, g, b] = [hi(p.0[0]), hi(p.0[1]), hi(p.0[2])];
                let transparent = [r, g, b] == [k[0] as u8, k[1] as u8, k[2] as u8];
                [r, g, b, if transparent { 0 } else { 255 }]
            }),
        ),
        (img, _) => convert_plain(img),
    }
}

fn convert_plain(img: DynamicImage) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    match img {
        DynamicImage::ImageRgb8(i) => i,
        DynamicImage::ImageLuma8(i) => from_rgb_samples(w, h, i.pixels().map(|p| [p.0[0]; 3])),
        DynamicImage::ImageLumaA8(i) => {
            from_rgba_samples(w, h, i.pixels().map(|p| [p.0[0], p.0[0], p.0[0], p.0[1]]))
        }
        DynamicImage::ImageRgba8(i) => from_rgba_samples(w, h, i.pixels().map(|p| p.0)),
        // Pillow mode I;16 -> RGB clamps to 255.
        DynamicImage::ImageLuma16(i) => {
            from_rgb_samples(w, h, i.pixels().map(|p| [p.0[0].min(255) as u8; 3]))
        }
        DynamicImage::ImageLumaA16(i) => from_rgba_samples(
            w,
            h,
            i.pixels().map(|p| {
                let l = hi(p.0[0]);
                [l, l, l, hi(p.0[1])]
            }),
        ),
        DynamicImage::ImageRgb16(i) => from_rgb_samples(w, h, i.pixels().map(|p| p.0.map(hi))),
        DynamicImage::ImageRgba16(i) => from_rgba_samples(w, h, i.pixels().map(|p| p.0.map(hi))),
        // Float images do not come out of the enabled decoders; fall back to
        // the image crate's 8-bit conversion.
        other => {
            let rgba = other.to_rgba8();
            from_rgba_samples(w, h, rgba.pixels().map(|p| p.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_png(img: &DynamicImage) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        img.write_to(&mut buf, ImageFormat::Png)
            .expect("png encode");
        buf.into_inner()
    }

    #[test]
    fn pixels_from_another_decoder_become_rgb_as_a_decoded_image_would() {
        // Two pixels: opaque red, and blue at alpha 100 (composited over white).
        let rgba = vec![255, 0, 0, 255, 0, 0, 255, 100];
        let rgb = rgb_from_rgba(2, 1, rgba.clone()).expect("pixels");
        let png = encode_png(&DynamicImage::ImageRgba8(
            image::RgbaImage::from_raw(2, 1, rgba).expect("2x1"),
        ));
        assert_eq!(rgb, decode_image(&png).expect("png"));
        let blue = composite_over_white(255, 100);
        let other = composite_over_white(0, 100);
        assert_eq!(rgb.as_raw(), &[255, 0, 0, other, other, blue]);

        assert!(matches!(
            rgb_from_rgba(2, 1, vec![0; 12]),
            Err(PreprocessError::BadPixels { bytes: 12, .. })
        ));
        assert!(matches!(
            rgb_from_rgba(1, 1, vec![0; 8]),
            Err(PreprocessError::BadPixels { .. })
        ));
        assert!(matches!(
            rgb_from_rgba(0, 1, vec![]),
            Err(PreprocessError::EmptyImage { .. })
        ));
        // Too large by its sides alone, whatever the buffer.
        assert!(matches!(
            rgb_from_rgba(MAX_SIDE + 1, 1, vec![]),
            Err(PreprocessError::TooLarge { .. })
        ));
    }

    #[test]
    fn empty_and_garbage_fail_cleanly() {
        assert!(matches!(
            decode_image(&[]),
            Err(PreprocessError::EmptyInput)
        ));
        assert!(matches!(
            decode_image(b"definitely not an image"),
            Err(PreprocessError::UnknownFormat)
        ));
        // PNG signature then nothing.
        let r = decode_image(b"\x89PNG\r\n\x1a\n");
        assert!(
            matches!(
                r,
                Err(PreprocessError::Decode { format: "PNG", .. }
                    | PreprocessError::Truncated { .. })
            ),
            "{r:?}"
        );
        // JPEG SOI then nothing.
        assert!(matches!(
            decode_image(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Err(PreprocessError::Truncated { format: "JPEG" })
        ));
        // Recognised but not accepted.
        assert!(matches!(
            decode_image(b"qoif\0\0\0\x01\0\0\0\x01\x03\0"),
            Err(PreprocessError::UnsupportedFormat(_))
        ));
    }

    #[test]
    fn truncated_png_fails() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 4) as u8, (x ^ y) as u8])
        }));
        let bytes = encode_png(&img);
        for cut in [20, 40, bytes.len() / 2, bytes.len() - 13] {
            assert!(decode_image(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(decode_image(&bytes).ok(), Some(img.to_rgb8()));
    }

    /// Re-encodes `img` and patches the size fields of its header to
    /// `side x side`, leaving the (now far too short) pixel data as is.
    fn claim_size(format: ImageFormat, side: u32) -> Vec<u8> {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(8, 8, image::Rgb([9, 9, 9])));
        let mut buf = Cursor::new(Vec::new());
        img.write_to(&mut buf, format).expect("encode");
        let mut bytes = buf.into_inner();
        match format {
            ImageFormat::Png => {
                // IHDR data starts at 16: width, height (u32 BE); CRC at 29.
                bytes[16..20].copy_from_slice(&side.to_be_bytes());
                bytes[20..24].copy_from_slice(&side.to_be_bytes());
                let crc = crc32(&bytes[12..29]);
                bytes[29..33].copy_from_slice(&crc.to_be_bytes());
            }
            ImageFormat::Jpeg => {
                // SOF0: FF C0, length (2), precision (1), height, width (u16 BE).
                let sof = bytes
                    .windows(2)
                    .position(|w| w == [0xFF, 0xC0])
                    .expect("SOF0 marker");
                let s = u16::try_from(side).expect("fits u16").to_be_bytes();
                bytes[sof + 5..sof + 7].copy_from_slice(&s);
                bytes[sof + 7..sof + 9].copy_from_slice(&s);
            }
            _ => unreachable!(),
        }
        bytes
    }

    #[test]
    fn huge_header_is_refused_without_allocating() {
        for format in [ImageFormat::Png, ImageFormat::Jpeg] {
            match decode_image(&claim_size(format, 20000)) {
                Err(PreprocessError::TooLarge { width, height }) => {
                    assert_eq!((width, height), (20000, 20000))
                }
                other => panic!("{format:?}: expected TooLarge, got {other:?}"),
            }
            // Within the limits, PNG reports the missing data (JPEG decoders,
            // Pillow's included, fill in the missing rows instead).
            if format == ImageFormat::Png {
                assert!(matches!(
                    decode_image(&claim_size(format, 3000)),
                    Err(PreprocessError::Decode { .. })
                ));
            }
        }
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn truncated_jpeg_fails() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(48, 40, |x, y| {
            image::Rgb([(x * 5) as u8, (y * 6) as u8, 128])
        }));
        let mut buf = Cursor::new(Vec::new());
        img.write_to(&mut buf, ImageFormat::Jpeg)
            .expect("jpeg encode");
        let bytes = buf.into_inner();
        assert!(decode_image(&bytes).is_ok());
        for cut in [3, 30, bytes.len() / 2, bytes.len() - 2] {
            assert!(
                matches!(
                    decode_image(&bytes[..cut]),
                    Err(PreprocessError::Truncated { format: "JPEG" })
                ),
                "cut at {cut}"
            );
        }
        // Trailing bytes after EOI are fine.
        let mut padded = bytes.clone();
        padded.extend_from_slice(b"trailing junk");
        assert!(decode_image(&padded).is_ok());
    }

    #[test]
    fn exif_and_xmp_orientation_parsing() {
        let le = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0\0\0\0\0";
        assert_eq!(exif_orientation_tag(le), Some(6));
        let mut prefixed = b"Exif\0\0".to_vec();
        prefixed.extend_from_slice(le);
        assert_eq!(exif_orientation_tag(&prefixed), Some(6));
        let be = b"MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x08\0\0\0\0\0\0";
        assert_eq!(exif_orientation_tag(be), Some(8));
        // Another tag only, and garbage.
        let other = b"II*\0\x08\0\0\0\x01\0\x0f\x01\x03\0\x01\0\0\0\x06\0\0\0\0\0\0\0";
        assert_eq!(exif_orientation_tag(other), None);
        assert_eq!(exif_orientation_tag(b"II*\0\xff\xff\xff\xff"), None);
        assert_eq!(exif_orientation_tag(b""), None);
        assert_eq!(xmp_orientation(br#"<x tiff:Orientation="3"/>"#), Some(3));
        assert_eq!(
            xmp_orientation(b"<tiff:Orientation>6</tiff:Orientation>"),
            Some(6)
        );
        assert_eq!(
            xmp_orientation(b"tiff:Orientation='3' tiff:Orientation>5"),
            Some(5)
        );
        assert_eq!(xmp_orientation(b"tiff:Orientation"), None);
    }

    #[test]
    fn one_pixel_is_fine() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(1, 1, image::Rgb([1, 2, 3])));
        let out = decode_image(&encode_png(&img)).expect("decode");
        assert_eq!(out.dimensions(), (1, 1));
        assert_eq!(out.get_pixel(0, 0).0, [1, 2, 3]);
    }

    #[test]
    fn alpha_composite_matches_pillow_samples() {
        // Pillow 13.0.0: Image.alpha_composite(white RGBA, src).convert("RGB")
        // for src = (c, c, c, a).
        let cases = [
            ((0, 0), 255),
            ((0, 255), 0),
            ((255, 255), 255),
            ((0, 128), 127),
            ((100, 1), 254),
            ((100, 254), 101),
            ((37, 77), 189),
            ((200, 200), 212),
        ];
        for ((c, a), want) in cases {
            assert_eq!(composite_over_white(c, a), want, "c={c} a={a}");
        }
        // Opaque pixels are unchanged.
        for c in 0..=255u8 {
            assert_eq!(composite_over_white(c, 255), c);
        }
    }

    #[test]
    fn rgba_and_grey_conversions() {
        let rgba = image::RgbaImage::from_fn(3, 1, |x, _| {
            image::Rgba([10, 20, 30, [0, 128, 255][x as usize]])
        });
        let out = decode_image(&encode_png(&DynamicImage::ImageRgba8(rgba))).expect("decode");
        assert_eq!(out.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(out.get_pixel(2, 0).0, [10, 20, 30]);
        let grey = image::GrayImage::from_fn(2, 1, |x, _| image::Luma([x as u8 * 200]));
        let out = decode_image(&encode_png(&DynamicImage::ImageLuma8(grey))).expect("decode");
        assert_eq!(out.get_pixel(1, 0).0, [200, 200, 200]);
        let g16 = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(3, 1, |x, _| {
            image::Luma([[100u16, 255, 40000][x as usize]])
        });
        let out = to_rgb_like_pil(DynamicImage::ImageLuma16(g16));
        assert_eq!(out.as_raw(), &[100, 100, 100, 255, 255, 255, 255, 255, 255]);
        let c16 = image::ImageBuffer::<image::Rgb<u16>, _>::from_pixel(
            1,
            1,
            image::Rgb([0x12ff, 0xab00, 0x00ff]),
        );
        let out = to_rgb_like_pil(DynamicImage::ImageRgb16(c16));
        assert_eq!(out.as_raw(), &[0x12, 0xab, 0x00]);
    }

    /// Minimal JPEG-less EXIF check: a PNG with an eXIf chunk carrying the
    /// orientation tag.
    fn png_with_orientation(img: &RgbImage, orientation: u16) -> Vec<u8> {
        let png = encode_png(&DynamicImage::ImageRgb8(img.clone()));
        // Little-endian TIFF header with one IFD entry: 0x0112 SHORT 1.
        let mut exif = b"II*\x00\x08\x00\x00\x00\x01\x00".to_vec();
        exif.extend_from_slice(&0x0112u16.to_le_bytes());
        exif.extend_from_slice(&3u16.to_le_bytes());
        exif.extend_from_slice(&1u32.to_le_bytes());
        exif.extend_from_slice(&orientation.to_le_bytes());
        exif.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        let mut chunk = b"eXIf".to_vec();
        chunk.extend_from_slice(&exif);
        // Insert right after IHDR (8-byte signature + 25-byte IHDR chunk).
        let mut out = png[..33].to_vec();
        out.extend_from_slice(&(exif.len() as u32).to_be_bytes());
        out.extend_from_slice(&chunk);
        out.extend_from_slice(&crc32(&chunk).to_be_bytes());
        out.extend_from_slice(&png[33..]);
        out
    }

    #[test]
    fn exif_orientation_is_applied() {
        // 3 x 2 image with distinct pixels.
        let img = RgbImage::from_fn(3, 2, |x, y| image::Rgb([(x * 10 + y) as u8, 0, 0]));
        let at = |i: &RgbImage, x, y| i.get_pixel(x, y).0[0];
        let same = decode_image(&png_with_orientation(&img, 1)).expect("decode");
        assert_eq!(same, img);
        // 6: rotate 90 degrees clockwise to display (PIL ROTATE_270).
        let r = decode_image(&png_with_orientation(&img, 6)).expect("decode");
        assert_eq!(r.dimensions(), (2, 3));
        // The stored bottom-left pixel ends up top-left.
        assert_eq!(at(&r, 0, 0), at(&img, 0, 1));
        assert_eq!(at(&r, 1, 0), at(&img, 0, 0));
        // 3: rotate 180.
        let r = decode_image(&png_with_orientation(&img, 3)).expect("decode");
        assert_eq!(at(&r, 0, 0), at(&img, 2, 1));
        // 2: mirror horizontally.
        let r = decode_image(&png_with_orientation(&img, 2)).expect("decode");
        assert_eq!(at(&r, 0, 0), at(&img, 2, 0));
    }
}
