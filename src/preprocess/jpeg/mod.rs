//! JPEG decoding that reproduces Pillow's pixels bit for bit.
//!
//! Pillow 13 decodes JPEG with libjpeg-turbo (3.x) at its default settings:
//! the accurate integer IDCT (`JDCT_ISLOW`, `jidctint.c`), "fancy"
//! (triangle-filter) chroma upsampling (`jdsample.c`; the merged upsampler
//! is only used when fancy upsampling is off) and the integer YCbCr -> RGB
//! tables of `jdcolor.c`. This module implements the same arithmetic in
//! plain Rust (no `unsafe`, no threads, builds for wasm32), for:
//! * baseline and extended sequential Huffman JPEG (SOF0 / SOF1), single-
//!   or multi-scan, and progressive Huffman JPEG (SOF2, spectral selection
//!   and successive approximation), with restart intervals;
//! * 8-bit samples, 1 component (greyscale), 3 components (YCbCr, or RGB
//!   when an Adobe marker / component ids say so, as libjpeg decides) and
//!   4 components (CMYK / YCCK, which Pillow reads as inverted "CMYK;I" and
//!   then converts to RGB with its own integer formula);
//! * any sampling factors libjpeg-turbo accepts: 1:1, h2v1 / h1v2 / h2v2
//!   fancy upsampling, other integer ratios by replication.
//!
//! Not implemented (the caller falls back to another decoder): arithmetic
//! coding, lossless and hierarchical JPEG, 12/16-bit samples, component
//! counts other than 1, 3 and 4, DNL markers, and libjpeg's block smoothing
//! (only used for progressive files whose scans never complete the first AC
//! coefficients; such files are decoded without it and may differ).
//!
//! Behaviour on corrupt entropy-coded data follows libjpeg in spirit (missing
//! bits read as zeros, the rest of the segment is skipped) but is not
//! guaranteed to be identical. Nothing here panics on any input: every read
//! is bounds-checked and the arithmetic wraps instead of overflowing.

mod bit_reader;
mod color;
mod decoder;
mod huffman;
mod idct;
mod scan;
mod upsample;

use decoder::Decoder;

/// Why the decoder gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JpegError {
    /// A valid JPEG feature this decoder does not implement.
    Unsupported(&'static str),
    /// Malformed data.
    Invalid(&'static str),
    /// The image exceeds the caller's limits.
    TooLarge { width: u32, height: u32 },
}

/// A decoded image as Pillow's `convert("RGB")` would return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodedJpeg {
    pub width: u32,
    pub height: u32,
    /// Row-major RGB, 3 bytes per pixel.
    pub rgb: Vec<u8>,
}

/// `jpeg_natural_order` plus 16 guard entries (libjpeg maps overshooting
/// coefficient indices of corrupt data to position 63).
const NATURAL: [usize; 80] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63,
    63, 63, 63, 63, 63, 63,
];

type Result<T> = std::result::Result<T, JpegError>;

/// Decodes `bytes` into RGB, refusing images with a side over `max_side`
/// or whose buffers would exceed `max_alloc` bytes.
pub(crate) fn decode(bytes: &[u8], max_side: u32, max_alloc: u64) -> Result<DecodedJpeg> {
    let mut d = Decoder::new(bytes, max_side, max_alloc);
    d.run()?;
    d.output()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a (64-bit) of a byte string: the goldens below are this hash of
    /// `numpy.asarray(Image.open(path).convert("RGB")).tobytes()` under
    /// Pillow 13.0.0 (libjpeg-turbo 3.2.0).
    fn fnv1a(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }

    const PROG_420_RST: &[u8] =
        include_bytes!("../../../tests/fixtures/images/jpeg_prog_420_rst_61x37.jpg");
    const CMYK: &[u8] = include_bytes!("../../../tests/fixtures/images/jpeg_cmyk_23x9.jpg");
    const H1V2: &[u8] = include_bytes!("../../../tests/fixtures/images/jpeg_h1v2_45x29.jpg");
    const PHOTO_640: &[u8] = include_bytes!("../../../tests/fixtures/images/photo_640x480.jpg");
    const PHOTO_300: &[u8] = include_bytes!("../../../tests/fixtures/images/photo_300x500.jpg");
    const EXIF_ROT: &[u8] = include_bytes!("../../../tests/fixtures/images/exif_rot_200x120.jpg");

    fn dec(bytes: &[u8]) -> Result<DecodedJpeg> {
        decode(bytes, 16384, 1 << 30)
    }

    #[test]
    fn matches_pillow_pixels() {
        type Case = (&'static str, &'static [u8], (u32, u32), u64);
        let cases: [Case; 6] = [
            // progressive, 4:2:0 (h2v2 fancy), restart every 2 MCUs
            (
                "prog_420_rst",
                PROG_420_RST,
                (61, 37),
                0x6537_8084_e5df_4b7f,
            ),
            // Adobe CMYK, read by Pillow as inverted "CMYK;I"
            ("cmyk", CMYK, (23, 9), 0xd746_e5cc_a294_e13f),
            // baseline, luma sampled 1x2 (h1v2 fancy)
            ("h1v2", H1V2, (45, 29), 0xacc1_f00e_833b_847c),
            // baseline 4:2:0 photos
            ("photo_640", PHOTO_640, (640, 480), 0x7255_fe9a_9b79_03c3),
            ("photo_300", PHOTO_300, (300, 500), 0x6c29_15f5_1955_cf09),
            ("exif_rot", EXIF_ROT, (200, 120), 0x75ec_4ed0_c6b3_cabe),
        ];
        for (name, bytes, size, golden) in cases {
            let d = dec(bytes).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!((d.width, d.height), size, "{name}");
            assert_eq!(d.rgb.len(), size.0 as usize * size.1 as usize * 3, "{name}");
            assert_eq!(fnv1a(&d.rgb), golden, "{name}: pixels differ from Pillow");
        }
    }

    #[test]
    fn decode_image_uses_this_decoder() {
        // EXIF orientation 6 is applied after decoding: Pillow's
        // exif_transpose(...).convert("RGB") hashes to this.
        let img = crate::preprocess::decode_image(EXIF_ROT).expect("decode");
        assert_eq!(img.dimensions(), (120, 200));
        assert_eq!(fnv1a(img.as_raw()), 0xe012_2c7a_6d56_6faa);
        let img = crate::preprocess::decode_image(PROG_420_RST).expect("decode");
        assert_eq!(fnv1a(img.as_raw()), 0x6537_8084_e5df_4b7f);
    }

    #[test]
    fn limits_are_enforced() {
        assert!(matches!(
            decode(PROG_420_RST, 60, 1 << 30),
            Err(JpegError::TooLarge {
                width: 61,
                height: 37
            })
        ));
        assert!(matches!(
            decode(PROG_420_RST, 16384, 1000),
            Err(JpegError::TooLarge { .. })
        ));
    }

    #[test]
    fn unsupported_and_invalid_inputs_are_errors() {
        assert!(matches!(dec(b""), Err(JpegError::Invalid(_))));
        assert!(matches!(
            dec(b"\xff\xd8\xff\xd9"),
            Err(JpegError::Invalid(_))
        ));
        // SOF9 (arithmetic coding).
        let mut arith = PHOTO_300.to_vec();
        let sof = arith
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("SOF0");
        arith[sof + 1] = 0xC9;
        assert!(matches!(dec(&arith), Err(JpegError::Unsupported(_))));
        // 12-bit precision.
        let mut p12 = PHOTO_300.to_vec();
        p12[sof + 4] = 12;
        assert!(matches!(dec(&p12), Err(JpegError::Unsupported(_))));
    }

    /// Every truncation and a few thousand byte corruptions decode or fail
    /// without panicking (overflow checks are on in test builds).
    #[test]
    fn hostile_input_never_panics() {
        for src in [PROG_420_RST, CMYK, H1V2] {
            for cut in 0..src.len() {
                let mut b = src[..cut].to_vec();
                b.extend_from_slice(&[0xFF, 0xD9]);
                let _ = dec(&b);
            }
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            let mut next = || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            for _ in 0..1500 {
                let mut b = src.to_vec();
                for _ in 0..1 + next() % 4 {
                    let i = (next() % b.len() as u64) as usize;
                    b[i] = match next() % 4 {
                        0 => 0xFF,
                        1 => 0,
                        _ => next() as u8,
                    };
                }
                if let Ok(d) = dec(&b) {
                    assert_eq!(d.rgb.len(), d.width as usize * d.height as usize * 3);
                }
            }
        }
    }
}
