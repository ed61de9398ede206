//! Resident memory of a long `captioner caption-jsonl` run: it must stay flat, since rows are
//! streamed (one row's images decoded at a time, each output line written as it finishes).
//!
//! `cargo bench --bench batch_memory` runs 2,000 rows of the tiny test model and prints a
//! table and a JSON report; `ROWS=n` changes the count. Under `cargo test` (no `--bench`
//! argument) it runs 40 rows as a smoke check, so the harness cannot rot unnoticed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `VmRSS` and `VmHWM` of a process, in KiB (Linux).
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn lines_in(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rows: usize = std::env::var("ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 2000 } else { 40 });
    let dir = std::env::temp_dir().join(format!("captioner-batch-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let input = dir.join("rows.jsonl");
    let output = dir.join("out.jsonl");
    let _ = std::fs::remove_file(&output);

    // Real photos of several sizes, a two-image row and a failing row now and then.
    let names = [
        "photo_640x480.jpg",
        "photo_300x500.jpg",
        "small_100x80.png",
        "photo_256x256.webp",
        "gray_200x150.png",
    ];
    let mut file = std::fs::File::create(&input).expect("input");
    for i in 0..rows {
        let line = match i % 10 {
            7 => format!(
                "{{\"id\": {i}, \"image\": [\"{}\", \"{}\"]}}",
                names[0], names[2]
            ),
            9 => format!("{{\"id\": {i}, \"image\": \"missing-{i}.jpg\"}}"),
            _ => format!(
                "{{\"id\": {i}, \"image\": [\"{}\"]}}",
                names[i % names.len()]
            ),
        };
        writeln!(file, "{line}").expect("write");
    }
    drop(file);

    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_captioner"))
        .arg("caption-jsonl")
        .arg("--model")
        .arg(fixtures().join("tiny-b"))
        .arg("--image-root")
        .arg(fixtures().join("images"))
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .args(["--temperature", "0", "--max-tokens", "16"])
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn captioner");

    // (rows done, RSS KiB) samples, and the high-water mark seen last.
    let mut samples: Vec<(usize, u64)> = Vec::new();
    let mut peak = 0;
    while child.try_wait().expect("wait").is_none() {
        if let Some((rss, hwm)) = memory_kib(child.id()) {
            samples.push((lines_in(&output), rss));
            peak = peak.max(hwm);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let seconds = start.elapsed().as_secs_f64();
    let done = lines_in(&output);
    assert_eq!(done, rows, "every row comes out");

    // RSS after each tenth of the run; growth measured from the first tenth (after warm-up).
    // Samples taken once the last row is out show the process tearing down: left out.
    samples.retain(|(r, _)| *r < rows);
    let checkpoints: Vec<(usize, u64)> = (1..=10)
        .filter_map(|k| {
            let at = rows * k / 10;
            samples
                .iter()
                .rfind(|(r, _)| *r <= at)
                .map(|&(_, rss)| (at, rss))
        })
        .collect();
    let first = checkpoints.first().map(|c| c.1).unwrap_or(0);
    let last = checkpoints.last().map(|c| c.1).unwrap_or(0);
    let growth_mib = (last as f64 - first as f64) / 1024.0;

    println!("caption-jsonl, tiny-b, {rows} rows, greedy, 16 new tokens max");
    println!("{:>8} {:>10}", "rows", "RSS MiB");
    for (at, rss) in &checkpoints {
        println!("{at:>8} {:>10.1}", *rss as f64 / 1024.0);
    }
    println!(
        "peak {:.1} MiB, growth after the first tenth {growth_mib:+.1} MiB, {seconds:.1} s ({:.1} rows/s)",
        peak as f64 / 1024.0,
        rows as f64 / seconds
    );
    let report = serde_json::json!({
        "bench": "batch_memory",
        "rows": rows,
        "seconds": seconds,
        "peak_rss_mib": peak as f64 / 1024.0,
        "growth_mib": growth_mib,
        "rss_mib_by_rows": checkpoints
            .iter()
            .map(|(at, rss)| serde_json::json!([at, *rss as f64 / 1024.0]))
            .collect::<Vec<_>>(),
    });
    println!("{report}");
    let _ = std::fs::remove_dir_all(&dir);
}
