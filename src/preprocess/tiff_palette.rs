//! Palette TIFFs (PhotometricInterpretation 3, "RGBPalette"), which Pillow reads and the `tiff`
//! crate refuses. The file is handed to the crate marked greyscale instead (BlackIsZero), so it
//! decodes the 8-bit indices with whatever compression the file uses, and the indices are then
//! looked up in the file's ColorMap here.
//!
//! Only what Pillow writes and most programs make is taken: classic (not Big) TIFF, one sample
//! of 8 bits per pixel, the palette of the first image. Anything else is left to the crate,
//! which refuses it as before.

use image::{DynamicImage, Rgb, RgbImage};

const PHOTOMETRIC: u16 = 262;
const BITS_PER_SAMPLE: u16 = 258;
const SAMPLES_PER_PIXEL: u16 = 277;
const COLOR_MAP: u16 = 320;
const RGB_PALETTE: u16 = 3;
const BLACK_IS_ZERO: u16 = 1;
const SHORT: u16 = 3;

/// The file with its first image marked greyscale, and the 256 colours its indices name;
/// `None` for any TIFF this module does not handle (see the module docs).
pub fn as_grey(bytes: &[u8]) -> Option<(Vec<u8>, Vec<[u8; 3]>)> {
    let little = match bytes.get(..4)? {
        [b'I', b'I', 42, 0] => true,
        [b'M', b'M', 0, 42] => false,
        _ => return None,
    };
    let u16_at = |o: usize| -> Option<u16> {
        let b: [u8; 2] = bytes.get(o..o.checked_add(2)?)?.try_into().ok()?;
        Some(if little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    let u32_at = |o: usize| -> Option<u32> {
        let b: [u8; 4] = bytes.get(o..o.checked_add(4)?)?.try_into().ok()?;
        Some(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    // A one-value SHORT entry holds its value in the first two bytes of the value field.
    let short_value = |entry: usize| -> Option<u16> {
        (u16_at(entry + 2)? == SHORT && u32_at(entry + 4)? == 1)
            .then(|| u16_at(entry + 8))
            .flatten()
    };

    let ifd = usize::try_from(u32_at(4)?).ok()?;
    let entries = usize::from(u16_at(ifd)?);
    let (mut photometric, mut color_map, mut bits) = (None, None, None);
    let mut samples = 1;
    for i in 0..entries {
        let entry = ifd.checked_add(2 + 12 * i)?;
        match u16_at(entry)? {
            PHOTOMETRIC => {
                (short_value(entry)? == RGB_PALETTE).then_some(())?;
                photometric = Some(entry + 8);
            }
            // One value, or one per sample (a single sample here).
            BITS_PER_SAMPLE => bits = Some(short_value(entry)?),
            SAMPLES_PER_PIXEL => samples = short_value(entry)?,
            COLOR_MAP => {
                (u16_at(entry + 2)? == SHORT && u32_at(entry + 4)? == 3 * 256).then_some(())?;
                color_map = Some(usize::try_from(u32_at(entry + 8)?).ok()?);
            }
            _ => {}
        }
    }
    if bits != Some(8) || samples != 1 {
        return None;
    }
    let (photometric, map) = (photometric?, color_map?);
    // Red, green and blue in turn, 16 bits each; Pillow keeps the high byte.
    let level = |channel: usize, index: usize| -> Option<u8> {
        Some((u16_at(map.checked_add(2 * (channel * 256 + index))?)? >> 8) as u8)
    };
    let colours = (0..256)
        .map(|i| Some([level(0, i)?, level(1, i)?, level(2, i)?]))
        .collect::<Option<Vec<_>>>()?;

    let mut grey = bytes.to_vec();
    let value = if little {
        BLACK_IS_ZERO.to_le_bytes()
    } else {
        BLACK_IS_ZERO.to_be_bytes()
    };
    grey[photometric..photometric + 2].copy_from_slice(&value);
    Some((grey, colours))
}

/// The decoded indices (the crate's 8-bit greyscale) looked up in `colours`; `None` when the
/// crate decoded something else.
pub fn apply(indices: DynamicImage, colours: &[[u8; 3]]) -> Option<DynamicImage> {
    let DynamicImage::ImageLuma8(indices) = indices else {
        return None;
    };
    let colour = |i: u8| colours.get(usize::from(i)).copied();
    // (Every u8 names one of the 256 colours, so nothing is skipped.)
    let (w, h) = indices.dimensions();
    let mut rgb = RgbImage::new(w, h);
    for (out, index) in rgb.pixels_mut().zip(indices.pixels()) {
        *out = Rgb(colour(index.0[0])?);
    }
    Some(DynamicImage::ImageRgb8(rgb))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::decode_image;

    /// A 2x1 uncompressed palette TIFF in either byte order: pixels 1 and 255, whose colours
    /// are (0x12, 0x34, 0x56) and (0xab, 0xcd, 0xef); `bits` per sample as given.
    fn palette_tiff(little: bool, bits: u16) -> Vec<u8> {
        let u16b = |v: u16| {
            if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let u32b = |v: u32| {
            if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let entries: [(u16, u16, u32, u32); 9] = [
            (256, 3, 1, 2), // ImageWidth
            (257, 3, 1, 1), // ImageLength
            (258, 3, 1, u32::from(bits)),
            (259, 3, 1, 1),       // no compression
            (262, 3, 1, 3),       // RGBPalette
            (273, 4, 1, 0),       // StripOffsets, set below
            (278, 3, 1, 1),       // RowsPerStrip
            (279, 4, 1, 2),       // StripByteCounts
            (320, 3, 3 * 256, 0), // ColorMap, set below
        ];
        let ifd_len = 2 + 12 * entries.len() + 4;
        let (map_at, strip_at) = (8 + ifd_len, 8 + ifd_len + 2 * 3 * 256);
        let mut out = if little {
            b"II".to_vec()
        } else {
            b"MM".to_vec()
        };
        out.extend(u16b(42));
        out.extend(u32b(8));
        out.extend(u16b(entries.len() as u16));
        for (tag, kind, count, value) in entries {
            let value = match tag {
                273 => strip_at as u32,
                320 => map_at as u32,
                _ => value,
            };
            out.extend(u16b(tag));
            out.extend(u16b(kind));
            out.extend(u32b(count));
            if kind == 3 && count == 1 {
                out.extend(u16b(value as u16));
                out.extend([0, 0]);
            } else {
                out.extend(u32b(value));
            }
        }
        out.extend(u32b(0));
        let mut map = vec![0u16; 3 * 256];
        for (channel, [a, b]) in [[0x12, 0xab], [0x34, 0xcd], [0x56, 0xef]]
            .iter()
            .enumerate()
        {
            // 16-bit levels whose low bytes Pillow drops.
            map[channel * 256 + 1] = u16::from_be_bytes([*a, 0x7f]);
            map[channel * 256 + 255] = u16::from_be_bytes([*b, 0xff]);
        }
        map.iter().for_each(|v| out.extend(u16b(*v)));
        out.extend([1, 255]);
        out
    }

    #[test]
    fn a_palette_tiff_in_either_byte_order_decodes_to_its_colours() {
        for little in [true, false] {
            let image = decode_image(&palette_tiff(little, 8)).expect("decodes");
            assert_eq!(image.as_raw(), &[0x12, 0x34, 0x56, 0xab, 0xcd, 0xef]);
        }
    }

    #[test]
    fn what_this_does_not_handle_is_left_to_the_crate() {
        assert!(as_grey(&palette_tiff(true, 4)).is_none());
        // The colour map cut short.
        let whole = palette_tiff(true, 8);
        assert!(as_grey(&whole[..whole.len() - 600]).is_none());
        // An IFD pointer past the end, and a BigTIFF header.
        let mut far = whole.clone();
        far[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(as_grey(&far).is_none());
        assert!(as_grey(b"II\x2b\x00\x08\x00\x00\x00").is_none());
        // The refusal the crate gives is a variant it leaves out, for the browser to try.
        let e = decode_image(&palette_tiff(true, 4)).expect_err("refused");
        assert!(e.is_unsupported(), "{e:?}");
    }
}
