//! Fuzzing that keeps running: every parser a hostile file reaches (model configs, safetensors,
//! GGUF, chat templates, images, JSONL rows), fed mutations of a committed corpus
//! (`tests/fuzz_corpus/<target>/`) from a seeded generator, so a run is repeatable.
//!
//! A test binary of its own (`harness = false`): each target runs in a child process (this
//! binary again) under a memory limit and a per-input time limit, so that a panic, an abort
//! (an allocation the limit refuses) and a hang are all failures, each reported with the input
//! that caused it, saved for a rerun and for the corpus.
//!
//!   cargo test --test fuzz                       about 10 s per target (what CI runs)
//!   CAPTIONER_FUZZ_SECONDS=600 CAPTIONER_FUZZ_SEED=7 cargo test --release --test fuzz
//!   CAPTIONER_FUZZ_TARGETS=gguf,image cargo test --test fuzz
//!   CAPTIONER_FUZZ_REPLAY=<file> CAPTIONER_FUZZ_TARGETS=gguf cargo test --test fuzz

mod common;

use burn_tensor::Device;
use captioner::config::{GenerationConfig, ModelConfig};
use captioner::files::Checkpoint;
use captioner::preprocess::qwen2_vl::Qwen2VlImageConfig;
use captioner::preprocess::{decode_image, preprocess, ImageProcessorConfig};
use captioner::prompt::{ContentStyle, Prompter};
use captioner::rows::{plan, Line, Plan};
use captioner::weights::gguf::GgufFile;
use captioner::weights::WeightSet;
use captioner::{Engine, ModelFiles, Precision, QuantType, RowOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One input may take this long (`CAPTIONER_FUZZ_INPUT_SECONDS` sets another); the slowest
/// legitimate one (a GGUF text model loaded whole) takes well under a second.
const INPUT_LIMIT_SECONDS: u64 = 5;
/// The child's address space: a hostile size that gets past the checks fails to allocate
/// (an abort, reported) instead of making the machine swap.
const MEMORY_LIMIT: u64 = 6 << 30;

/// A parser under test: takes any bytes, may return an error, must not panic, abort or hang.
type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("config", config),
    ("safetensors", safetensors),
    ("gguf", gguf),
    ("template", template),
    ("image", image),
    ("rows", rows),
];

fn main() -> ExitCode {
    let only = std::env::var("CAPTIONER_FUZZ_TARGETS").ok();
    let wanted = |name: &str| {
        only.as_deref()
            .is_none_or(|list| list.split(',').any(|t| t.trim() == name))
    };
    if let Ok(name) = std::env::var("CAPTIONER_FUZZ_CHILD") {
        return child(&name);
    }
    let seconds: u64 = env_number("CAPTIONER_FUZZ_SECONDS", 10);
    // As many targets at once as there are cores: each child is one thread, and the budget
    // is wall time.
    let at_once = std::thread::available_parallelism().map_or(1, |n| n.get());
    let names: Vec<&str> = TARGETS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| wanted(n))
        .collect();
    let mut failed = Vec::new();
    for group in names.chunks(at_once) {
        let started = Instant::now();
        let children: Vec<_> = group
            .iter()
            .map(|name| {
                Command::new(std::env::current_exe().expect("this binary"))
                    .env("CAPTIONER_FUZZ_CHILD", name)
                    .env("CAPTIONER_FUZZ_SECONDS", seconds.to_string())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("the fuzz child starts")
            })
            .collect();
        for (name, child) in group.iter().zip(children) {
            let out = child.wait_with_output().expect("the fuzz child ends");
            if let Err(name) = report(name, &out, started) {
                failed.push(name);
            }
        }
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("fuzz: failed targets: {failed:?}");
        ExitCode::FAILURE
    }
}

/// Prints how a target's child ended; `Err` with its name when it failed.
fn report<'a>(name: &'a str, out: &std::process::Output, started: Instant) -> Result<(), &'a str> {
    let report = String::from_utf8_lossy(&out.stdout);
    if out.status.success() {
        println!("fuzz {name}: {} ({:.1?})", report.trim(), started.elapsed());
        return Ok(());
    }
    let saved = current_input(name);
    eprintln!(
        "fuzz {name} FAILED ({}): {}\n{}\nthe input is in {} (replay: CAPTIONER_FUZZ_REPLAY={} CAPTIONER_FUZZ_TARGETS={name})",
        out.status,
        report.trim(),
        String::from_utf8_lossy(&out.stderr),
        saved.display(),
        saved.display(),
    );
    Err(name)
}

fn env_number(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Where a child keeps the input it is running, so that whatever kills it, the input is known.
fn current_input(target: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz");
    std::fs::create_dir_all(&dir).expect("fuzz dir");
    dir.join(format!("{target}.current"))
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_corpus")
        .join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    paths.sort();
    let read = |p: &PathBuf| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    paths
        .iter()
        .map(|p| match p.extension() {
            // A fixture used as it is, named by its path from the repository root (the
            // fixture models' files are too big to keep twice).
            Some(ext) if ext == "link" => {
                let target = String::from_utf8(read(p)).expect("a path");
                read(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(target.trim()))
            }
            _ => read(p),
        })
        .collect()
}

/// Milliseconds since the child started at which the current input started; 0 when idle.
static RUNNING_SINCE: AtomicU64 = AtomicU64::new(0);

fn child(name: &str) -> ExitCode {
    let Some((_, target)) = TARGETS.iter().find(|(n, _)| *n == name) else {
        eprintln!("no fuzz target {name}");
        return ExitCode::FAILURE;
    };
    if let Err(e) = limit_memory() {
        eprintln!("the memory limit could not be set: {e}");
        return ExitCode::FAILURE;
    }
    let clock = Instant::now();
    let limit_ms = env_number("CAPTIONER_FUZZ_INPUT_SECONDS", INPUT_LIMIT_SECONDS) * 1000;
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(100));
        let since = RUNNING_SINCE.load(Ordering::SeqCst);
        if since != 0 && clock.elapsed().as_millis() as u64 > since + limit_ms {
            eprintln!("an input ran over {} s", limit_ms / 1000);
            std::process::abort();
        }
    });
    let save = current_input(name);
    let run = |input: &[u8]| {
        // Written before it runs: an abort or a hang leaves it behind.
        std::fs::File::create(&save)
            .and_then(|mut f| f.write_all(input))
            .expect("save the input");
        RUNNING_SINCE.store(clock.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
        target(input);
        RUNNING_SINCE.store(0, Ordering::SeqCst);
    };
    if let Ok(path) = std::env::var("CAPTIONER_FUZZ_REPLAY") {
        run(&std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")));
        println!("replayed {path}");
        return ExitCode::SUCCESS;
    }
    let seeds = corpus(name);
    let mut rng = Rng(env_number("CAPTIONER_FUZZ_SEED", 1) | 1);
    let budget = Duration::from_secs(env_number("CAPTIONER_FUZZ_SECONDS", 10));
    for seed in &seeds {
        run(seed);
    }
    let mut inputs = seeds.len();
    while clock.elapsed() < budget {
        let input = mutate(&seeds, &mut rng);
        run(&input);
        inputs += 1;
    }
    println!("{inputs} inputs ({} seeds), none failed", seeds.len());
    ExitCode::SUCCESS
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_memory() -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: MEMORY_LIMIT,
        rlim_max: MEMORY_LIMIT,
    };
    // SAFETY: setrlimit only reads the struct passed in.
    match unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// (elsewhere an allocation past the machine's memory is the limit)
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_memory() -> std::io::Result<()> {
    Ok(())
}

// ---- mutations ----

/// xorshift64: small, seeded, the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values at the edges of the integer types, as text and as little-endian bytes: what turns a
/// size into an overflow or a huge allocation.
const EDGES: &[u64] = &[
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

/// A few mutations of a corpus entry, or of two spliced.
fn mutate(seeds: &[Vec<u8>], rng: &mut Rng) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(6) {
        // Most mutations near the start, where headers and metadata are.
        let len = data.len();
        let at = if rng.below(4) == 0 || len < 4096 {
            rng.below(len + 1)
        } else {
            rng.below(4096)
        };
        match rng.below(9) {
            0 if at < len => data[at] ^= 1 << rng.below(8),
            1 if at < len => data[at] = rng.next() as u8,
            2 => {
                let v = EDGES[rng.below(EDGES.len())];
                let width = [1, 2, 4, 8][rng.below(4)];
                let end = (at + width).min(len);
                data[at.min(end)..end].copy_from_slice(&v.to_le_bytes()[..end - at.min(end)]);
            }
            3 => {
                // A number in the text replaced by an edge value, a negative, a float or junk.
                let v = EDGES[rng.below(EDGES.len())];
                let text = [
                    v.to_string(),
                    format!("-{v}"),
                    "1e999".into(),
                    "NaN".into(),
                    "0.0".into(),
                    "\"x\"".into(),
                    "null".into(),
                ][rng.below(7)]
                .clone();
                replace_number(&mut data, at, text.as_bytes());
            }
            4 => {
                let n = rng.below(64).min(len - at.min(len));
                data.drain(at..at + n);
            }
            5 => {
                let n = rng.below(32);
                let end = (at + n).min(len);
                let copy = data[at.min(end)..end].to_vec();
                let to = rng.below(data.len() + 1);
                data.splice(
                    to..to,
                    copy.iter()
                        .cycle()
                        .take(copy.len() * (1 + rng.below(8)))
                        .copied(),
                );
            }
            6 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                let n = rng.below(256).min(other.len() - from);
                data.splice(
                    at.min(len)..at.min(len),
                    other[from..from + n].iter().copied(),
                );
            }
            7 => data.truncate(at),
            _ => {
                let junk: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
                data.splice(at.min(len)..at.min(len), junk);
            }
        }
    }
    data
}

/// Replaces the run of ASCII digits at or after `at` (if any) by `with`.
fn replace_number(data: &mut Vec<u8>, at: usize, with: &[u8]) {
    let Some(start) = data[at.min(data.len())..]
        .iter()
        .position(u8::is_ascii_digit)
        .map(|i| i + at.min(data.len()))
    else {
        return;
    };
    let end = data[start..]
        .iter()
        .position(|b| !b.is_ascii_digit())
        .map_or(data.len(), |i| start + i);
    data.splice(start..end, with.iter().copied());
}

// ---- targets ----

fn text(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

/// `config.json`, `generation_config.json` and the processor settings, each parsed from the
/// same text, and a config that parses sized as `quantize --dry-run` sizes it.
fn config(input: &[u8]) {
    let text = text(input);
    if let Ok(config) = ModelConfig::from_json(&text) {
        let planned = captioner::convert::plan(&config, Precision::Uniform(QuantType::Q4_0), false);
        let _ = captioner::convert::planned_bytes(&planned);
    }
    let _ = GenerationConfig::from_json(&text);
    let _ = GenerationConfig::from_model_config_json(&text);
    let _ = captioner::config::processor_image_seq_len(&text);
    let _ = ImageProcessorConfig::from_preprocessor_json(&text);
    let _ = ImageProcessorConfig::from_processor_json(&text);
    let _ = Qwen2VlImageConfig::from_preprocessor_json(&text);
}

/// The tiny vision model's text files, read once: what a mutated weights file is loaded with.
fn tiny_texts() -> &'static Vec<(String, Vec<u8>)> {
    static TEXTS: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    TEXTS.get_or_init(|| {
        let dir = common::fixtures().join("tiny-b");
        captioner::files::TEXT_FILES
            .iter()
            .filter_map(|name| Some((name.to_string(), std::fs::read(dir.join(name)).ok()?)))
            .collect()
    })
}

/// A safetensors file: its header and tensors read (at f32 and quantizing as it loads), and a
/// model built from it with the tiny model's config.
fn safetensors(input: &[u8]) {
    for precision in [Precision::F32, Precision::Uniform(QuantType::Q8_0)] {
        let _ = WeightSet::from_files(Checkpoint::Safetensors(vec![input.to_vec()]), precision);
    }
    if let Ok(mut files) = ModelFiles::folder_texts(tiny_texts().clone()) {
        files.checkpoint = Checkpoint::Safetensors(vec![input.to_vec()]);
        let _ = Engine::load(files, &Device::flex());
    }
}

/// A GGUF file: a text model read as a model folder and loaded, or an mmproj read as the
/// vision half of a pair with the tiny model's text GGUF.
fn gguf(input: &[u8]) {
    let Ok(file) = GgufFile::parse(input.to_vec()) else {
        return;
    };
    let files = match file.header.architecture() {
        Ok("clip") => {
            static TEXT: OnceLock<GgufFile> = OnceLock::new();
            let text = TEXT.get_or_init(|| {
                let path = common::fixtures().join("llamacpp-pair/tiny-b-Q8_0.gguf");
                GgufFile::parse(std::fs::read(path).expect("text GGUF")).expect("parses")
            });
            captioner::weights::gguf::pair::pair_files(text.clone(), file)
        }
        _ => captioner::weights::gguf::folder::text_model_files(file),
    };
    if let Ok(files) = files {
        let _ = Engine::load(files, &Device::flex());
    }
}

/// A chat template, compiled and rendered for a caption and for a conversation.
fn template(input: &[u8]) {
    // The smallest tokenizer: the template is what is under test.
    let tokenizer = r#"{"version": "1.0", "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"<unk>": 0, "hi": 1}, "unk_token": "<unk>"}}"#;
    for style in [ContentStyle::Items, ContentStyle::Text] {
        let Ok(prompter) = Prompter::new(tokenizer, text(input), None, style) else {
            continue;
        };
        let _ = prompter.render(Some("Be brief."), "Describe this image.", 2);
        let messages = serde_json::json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "and?"}]},
        ]);
        let _ = prompter.render_messages(&messages, true);
    }
}

/// An image file, decoded and run through the tiny model's preprocessing.
fn image(input: &[u8]) {
    static CONFIG: OnceLock<ImageProcessorConfig> = OnceLock::new();
    let cfg = CONFIG.get_or_init(|| {
        let text =
            std::fs::read_to_string(common::fixtures().join("tiny-b/preprocessor_config.json"))
                .expect("processor settings");
        ImageProcessorConfig::from_preprocessor_json(&text).expect("parses")
    });
    if let Ok(img) = decode_image(input) {
        let _ = preprocess(&img, cfg, None);
    }
}

/// JSONL lines, each read and planned as a run plans them, and finished both ways.
fn rows(input: &[u8]) {
    let options = RowOptions::default();
    for (i, line) in input.split_inclusive(|&b| b == b'\n').enumerate() {
        let planned = plan(Line::from_bytes(line, i + 1), &options);
        if let Plan::Caption(job) = planned {
            let _ = job.paths();
            let _ = job.finish(Ok("a caption"), &options);
        }
    }
}
