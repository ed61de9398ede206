//! `captioner bench` in its smallest configuration, so it cannot rot: it runs on the tiny model
//! and on a synthetic model, and its JSON has every field, with figures that are measurements
//! (positive, finite, consistent with their samples). The figures themselves are not asserted:
//! they go in BENCHMARKS.md.

mod common;

use common::fixtures;
use serde_json::Value;
use std::process::Command;

fn bench(extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_captioner"))
        .args([
            "bench",
            "--runs",
            "2",
            "--warmup",
            "1",
            "--contexts",
            "4,12",
        ])
        .args([
            "--prefill-tokens",
            "8",
            "--decode-tokens",
            "3",
            "--caption-tokens",
            "4",
        ])
        .args(["--longest-edge", "128"])
        .arg("--json")
        .arg(&json)
        .args(extra)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    for row in [
        "load",
        "vision + connector / tile",
        "decode @ 12 ctx",
        "peak RSS",
    ] {
        assert!(table.contains(row), "table lacks {row:?}:\n{table}");
    }
    serde_json::from_str(&std::fs::read_to_string(&json).expect("json written")).expect("json")
}

fn positive(v: &Value, what: &str) -> f64 {
    let x = v.as_f64().unwrap_or_else(|| panic!("{what} is {v}"));
    assert!(x.is_finite() && x > 0.0, "{what} = {x}");
    x
}

/// A stat: median within [min, max], one sample per measured run.
fn stat(v: &Value, what: &str, runs: usize) {
    let (median, min, max) = (
        positive(&v["median"], what),
        positive(&v["min"], what),
        positive(&v["max"], what),
    );
    assert!(min <= median && median <= max, "{what}: {v}");
    let samples = v["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), runs, "{what}: warm-up runs are not counted");
    for s in samples {
        let s = positive(s, what);
        assert!(min <= s && s <= max, "{what}: {v}");
    }
}

fn check_report(r: &Value, precision: &str) {
    assert_eq!(r["precision"], precision);
    assert_eq!(r["device"], "cpu (burn flex)");
    positive(&r["model_bytes"], "model_bytes");
    let load = positive(&r["load_ms"], "load_ms");
    assert!(positive(&r["first_caption_ms"], "first_caption_ms") > load);
    assert!(r["first_caption_tokens"].as_u64().expect("tokens") <= 4);
    stat(&r["preprocess_ms"], "preprocess_ms", 2);
    positive(&r["image_tiles"], "image_tiles");
    stat(&r["vision_ms_per_tile"], "vision_ms_per_tile", 2);
    assert_eq!(r["prefill_tokens"], 8);
    stat(&r["prefill_tokens_per_s"], "prefill", 2);
    let decode = r["decode"].as_array().expect("decode");
    let contexts: Vec<u64> = decode
        .iter()
        .map(|d| d["context"].as_u64().unwrap())
        .collect();
    assert_eq!(contexts, [4, 12]);
    for d in decode {
        assert_eq!(d["tokens"], 3);
        stat(&d["tokens_per_s"], "decode", 2);
    }
    positive(&r["peak_rss_bytes"], "peak_rss_bytes");
    assert!(
        r["gpu_memory"].is_null(),
        "the CPU backend has no device pools"
    );
}

#[test]
fn bench_reports_every_stage_per_precision() {
    let model = fixtures().join("tiny-b");
    let doc = bench(&[
        "--model",
        model.to_str().unwrap(),
        "--precision",
        "f32,q4_0",
    ]);
    assert_eq!(doc["captioner"], env!("CARGO_PKG_VERSION"));
    positive(&doc["machine"]["threads"], "threads");
    assert_eq!(doc["options"]["runs"], 2);
    let reports = doc["reports"].as_array().expect("reports");
    assert_eq!(reports.len(), 2);
    check_report(&reports[0], "f32");
    check_report(&reports[1], "q4_0");
    // The same files, held two ways.
    assert_eq!(reports[0]["model_bytes"], reports[1]["model_bytes"]);
}

#[test]
fn bench_builds_a_synthetic_model_at_each_precision() {
    let model = fixtures().join("tiny-b");
    let shape = model.join("config.json");
    let doc = bench(&[
        "--model",
        model.to_str().unwrap(),
        "--synthetic",
        shape.to_str().unwrap(),
        "--precision",
        "q8_0",
    ]);
    let r = &doc["reports"][0];
    check_report(r, "q8_0");
    assert!(
        r["model"].as_str().unwrap().starts_with("synthetic "),
        "{r}"
    );
}
