//! Image decoding and the Idefics3 image processor against transformers' PIL path
//! (tools/make_goldens.py): every tile's 8-bit pixels, the masks, tile counts and layouts.
//! Criterion: at least 99.9 % of values identical and none more than one level apart.

mod common;

use captioner::preprocess::{decode_image, layout_only, preprocess, ImageProcessorConfig, Tiles};
use common::*;

/// The processor's output back in 8-bit levels, `[tiles, H, W, 3]` like the goldens.
fn levels(p: &Tiles) -> Vec<u8> {
    let (h, w) = (p.tile_height, p.tile_width);
    let mut out = vec![0u8; p.n_tiles * h * w * 3];
    for t in 0..p.n_tiles {
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let v = p.pixel_values[((t * 3 + c) * h + y) * w + x];
                    out[((t * h + y) * w + x) * 3 + c] = ((v * 0.5 + 0.5) * 255.0).round() as u8;
                }
            }
        }
    }
    out
}

struct Agreement {
    equal: usize,
    total: usize,
    max_diff: u8,
}

fn compare(ours: &[u8], theirs: &[u8]) -> Agreement {
    assert_eq!(ours.len(), theirs.len());
    Agreement {
        equal: ours.iter().zip(theirs).filter(|(a, b)| a == b).count(),
        total: ours.len(),
        max_diff: ours
            .iter()
            .zip(theirs)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0),
    }
}

fn assert_close(what: &str, a: Agreement) {
    let share = a.equal as f64 / a.total as f64;
    eprintln!(
        "{what}: {:.4} % identical, max diff {}",
        share * 100.0,
        a.max_diff
    );
    assert!(
        share >= 0.999,
        "{what}: only {:.4} % identical",
        share * 100.0
    );
    assert!(a.max_diff <= 1, "{what}: a value differs by {}", a.max_diff);
}

#[test]
fn tiles_match_transformers() {
    let dir = fixtures().join("preprocess");
    let meta = read_json(dir.join("goldens.json"));
    let g = read_goldens(dir.join("goldens.safetensors"));
    let cases = meta["cases"].as_array().expect("cases");
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["case"].as_str().expect("name");
        let bytes = std::fs::read(
            fixtures()
                .join("images")
                .join(case["image"].as_str().expect("image")),
        )
        .expect("read");
        let cfg = ImageProcessorConfig::from_preprocessor_json(&case["settings"].to_string())
            .expect("settings");
        let image = decode_image(&bytes).expect("decode");
        let p = preprocess(&image, &cfg, None).expect("preprocess");
        assert_eq!(
            p.n_tiles as u64,
            case["n_tiles"].as_u64().expect("n_tiles"),
            "{name}"
        );
        assert_eq!(
            p.rows as u64,
            case["rows"].as_u64().expect("rows"),
            "{name}"
        );
        assert_eq!(
            p.cols as u64,
            case["cols"].as_u64().expect("cols"),
            "{name}"
        );
        assert_eq!(
            p.tile_height as u64,
            case["tile_h"].as_u64().expect("h"),
            "{name}"
        );
        assert_eq!(
            p.tile_width as u64,
            case["tile_w"].as_u64().expect("w"),
            "{name}"
        );
        let ours = levels(&p);
        if let Some(theirs) = g.get(&format!("{name}.pixels")) {
            assert_close(name, compare(&ours, &theirs.u8()));
            assert_eq!(
                p.pixel_mask,
                g[&format!("{name}.mask")].u8(),
                "{name}: mask"
            );
        } else {
            // Published-size tiles are stored subsampled (every 4th pixel of each axis).
            let sub = &g[&format!("{name}.pixels_sub4")];
            let (h, w) = (p.tile_height, p.tile_width);
            let mut picked = Vec::with_capacity(sub.values.len());
            for t in 0..p.n_tiles {
                for y in (0..h).step_by(4) {
                    for x in (0..w).step_by(4) {
                        picked.extend_from_slice(&ours[((t * h + y) * w + x) * 3..][..3]);
                    }
                }
            }
            assert_close(name, compare(&picked, &sub.u8()));
            assert!(p.pixel_mask.iter().all(|&m| m == 1), "{name}: mask");
        }
    }
}

#[test]
fn decoding_matches_pillow() {
    // RGBA and palette composited over white, grayscale expanded, EXIF orientation applied.
    let dir = fixtures().join("preprocess");
    let meta = read_json(dir.join("goldens.json"));
    let g = read_goldens(dir.join("goldens.safetensors"));
    for (file, info) in meta["decoded"].as_object().expect("decoded") {
        let bytes = std::fs::read(fixtures().join("images").join(file)).expect("read");
        let image = decode_image(&bytes).expect("decode");
        let theirs = &g[info["tensor"].as_str().expect("tensor")];
        assert_eq!(
            vec![image.height() as usize, image.width() as usize, 3],
            theirs.shape,
            "{file}: size after orientation"
        );
        assert_close(file, compare(image.as_raw(), &theirs.u8()));
    }
}

#[test]
fn published_tile_counts_match() {
    let meta = read_json(fixtures().join("preprocess/goldens.json"));
    let published = &meta["published_tile_counts"];
    let cfg = ImageProcessorConfig::from_preprocessor_json(&published["settings"].to_string())
        .expect("settings");
    for size in published["sizes"].as_array().expect("sizes") {
        let (w, h) = (
            size["width"].as_u64().expect("w") as u32,
            size["height"].as_u64().expect("h") as u32,
        );
        let (rows, cols, n) = layout_only(w, h, &cfg, None);
        assert_eq!(
            (rows as u64, cols as u64, n as u64),
            (
                size["rows"].as_u64().unwrap_or(0),
                size["cols"].as_u64().unwrap_or(0),
                size["n_tiles"].as_u64().unwrap_or(0)
            ),
            "{w}x{h}"
        );
    }
}

#[test]
fn bad_images_are_errors_not_panics() {
    for file in [
        "truncated.jpg",
        "empty.jpg",
        "not_an_image.jpg",
        "huge_header.png",
    ] {
        let bytes = std::fs::read(fixtures().join("images").join(file)).expect("read");
        let err = decode_image(&bytes).expect_err(file);
        eprintln!("{file}: {err}");
        assert!(!err.to_string().is_empty());
    }
    let one = std::fs::read(fixtures().join("images/one_by_one.png")).expect("read");
    let image = decode_image(&one).expect("a 1x1 image is valid");
    assert_eq!((image.width(), image.height()), (1, 1));
}

/// TIFF (four compressions, greyscale, 16-bit, CMYK, alpha, bilevel Group 4, 8-bit palette,
/// orientation, two pages), ICO (PNG and BMP entries), GIFs with no colour table (greyscale to
/// Pillow, with and without a transparent index), BMPs only Pillow read (RLE8 top-down, an OS/2
/// 2.x header), a JPEG with junk between markers and one whose Adobe segment is cut short: the
/// RGB Pillow gives transformers, byte for byte (tools/make_format_goldens.py). One exception,
/// said here so that a change shows: JPEG-compressed TIFF is decoded by zune-jpeg (inside the
/// `tiff` crate), not the libjpeg-turbo-exact decoder, and rounds a level differently on about
/// 1 % of samples.
#[test]
fn tiff_and_ico_decode_like_pillow_and_avif_is_left_to_the_browser() {
    let dir = fixtures().join("formats");
    let meta = read_json(dir.join("goldens.json"));
    let g = read_goldens(dir.join("goldens.safetensors"));
    let mut report = Vec::new();
    let mut exact = 0;
    for (file, info) in meta["files"].as_object().expect("files") {
        let bytes = std::fs::read(dir.join(file)).expect("read");
        let theirs = &g[info["tensor"].as_str().expect("Pillow opens every fixture")];
        let image = match (file.as_str(), decode_image(&bytes)) {
            // Not read here; in the browser, the browser decodes it (tests/browser/inputs.test.mjs).
            (name, Err(e)) if name.ends_with(".avif") => {
                assert!(
                    e.to_string().starts_with("unsupported image format Avif"),
                    "{e}"
                );
                assert!(e.is_unsupported(), "the browser gets to try it: {e:?}");
                continue;
            }
            (_, Err(e)) => {
                report.push(format!("{file}: {e}"));
                continue;
            }
            (_, Ok(image)) => image,
        };
        let shape = vec![image.height() as usize, image.width() as usize, 3];
        if shape != theirs.shape {
            report.push(format!("{file}: {shape:?}, Pillow {:?}", theirs.shape));
            continue;
        }
        let a = compare(image.as_raw(), &theirs.u8());
        let (equal, total) = (a.equal, a.total);
        let close = a.max_diff <= 1 && (total - equal) * 50 <= total;
        match file.as_str() {
            "jpeg.tif" if close => {}
            _ if equal == total => exact += 1,
            _ => report.push(format!(
                "{file}: {} of {total} differ, by up to {}",
                total - equal,
                a.max_diff
            )),
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
    assert_eq!(exact, 20, "every other fixture is byte for byte Pillow's");
}
