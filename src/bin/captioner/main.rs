//! `captioner`: the native command-line front end.

use anyhow::{bail, Context, Result};
use burn_tensor::{Device, DeviceKind};
use captioner::jsonl::{self, FolderImages, Input, Output};
use captioner::{
    CaptionRun, Engine, Flow, ModelFiles, Precision, Preset, Progress, Request, RowOptions,
    RowResult, SamplingOptions, DEFAULT_PROMPT,
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

mod bench;

/// `--max-image-mib`'s default: the library's limit.
const DEFAULT_MAX_IMAGE_MIB: u64 = captioner::jsonl::MAX_IMAGE_FILE_BYTES >> 20;

#[derive(Parser)]
#[command(
    name = "captioner",
    version,
    about = "Caption images privately with SmolVLM, on CPU or GPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Caption one image and print the caption.
    Caption {
        /// A model folder (config.json, model.safetensors, tokenizer.json, ...).
        #[arg(long)]
        model: PathBuf,
        /// The image (JPEG, PNG, WebP, GIF, BMP, TIFF, ICO).
        #[arg(long)]
        image: PathBuf,
        /// What to ask about the image.
        #[arg(long, default_value = DEFAULT_PROMPT)]
        prompt: String,
        /// Ask with another tool's words instead of --prompt and --system.
        #[arg(long, value_enum, conflicts_with_all = ["prompt", "system"])]
        preset: Option<PresetChoice>,
        /// Resize so the longest edge is at most this many pixels (SmolVLM: fewer tiles,
        /// faster; Qwen2-VL, which keeps each image's aspect: at most this many pixels squared).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        longest_edge: Option<u32>,
        /// Refuse an image file larger than this many MiB.
        #[arg(long, default_value_t = DEFAULT_MAX_IMAGE_MIB, value_parser = clap::value_parser!(u64).range(1..))]
        max_image_mib: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Caption every row of a JSONL file (DataFlow conventions): the same rows, in the same
    /// order, every field kept, plus a caption. Rerun the same command to resume.
    CaptionJsonl(CaptionJsonl),
    /// Answer a text prompt with the text model alone, through its chat template.
    Generate {
        /// A model folder or a llama.cpp `.gguf` file.
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        prompt: String,
        #[command(flatten)]
        common: Common,
    },
    /// Write a Hugging Face folder as llama.cpp's GGUF pair (text model + mmproj), quantized.
    Quantize(Quantize),
    /// Measure load, preprocessing, vision, prefill and decode speed and memory, as a table
    /// and JSON (see BENCHMARKS.md).
    Bench(bench::Bench),
}

#[derive(Args)]
struct Quantize {
    /// A Hugging Face model folder (config.json, safetensors, tokenizer, processor settings).
    #[arg(long)]
    model: PathBuf,
    /// The folder the GGUF file(s) are written to.
    #[arg(long)]
    out: Option<PathBuf>,
    /// q8_0, q4_0, or mixed (q4_0 with the text model's value projections at q8_0).
    #[arg(long = "type", default_value = "mixed", value_parser = parse_precision)]
    precision: Precision,
    /// The file name stem (default: the model folder's name).
    #[arg(long)]
    name: Option<String>,
    /// Only print the size of every tensor type and file, from config.json alone.
    #[arg(long)]
    dry_run: bool,
    /// Write random weights with the folder's shapes instead of reading safetensors: a
    /// synthetic model for benchmarks (the folder needs config.json, the tokenizer and the
    /// processor settings only). Its captions are noise.
    #[arg(long)]
    random_weights: bool,
    /// Keep the vision position table F32, as llama.cpp needs it to run the mmproj (2.3 MB
    /// more for SmolVLM; by default it is Q8_0).
    #[arg(long)]
    llama_cpp: bool,
}

#[derive(Args)]
struct CaptionJsonl {
    /// A model folder (config.json, model.safetensors, tokenizer.json, ...).
    #[arg(long)]
    model: PathBuf,
    /// JSON Lines, one row per line, e.g. {"image": ["photos/a.jpg"], "id": 17}; `-` is stdin.
    #[arg(long)]
    input: PathBuf,
    /// Where the rows go, written as they finish; `-` is stdout. An existing file that holds
    /// the start of this input's output is resumed.
    #[arg(long)]
    output: PathBuf,
    /// Relative image paths are resolved from here.
    #[arg(long, default_value = ".")]
    image_root: PathBuf,
    /// The field holding a row's image path(s).
    #[arg(long, default_value = "image")]
    multi_modal_key: String,
    /// The field the caption is written to.
    #[arg(long, default_value = "caption")]
    output_key: String,
    /// The field that says why a row has no caption.
    #[arg(long, default_value = "error")]
    error_key: String,
    /// Rows with more images than this get an error instead of a caption.
    #[arg(long, default_value_t = RowOptions::default().max_images)]
    max_images_per_row: usize,
    /// What to ask about each row's images.
    #[arg(long, default_value = DEFAULT_PROMPT)]
    prompt: String,
    /// Ask with another tool's words instead of --prompt and --system.
    #[arg(long, value_enum, conflicts_with_all = ["prompt", "system"])]
    preset: Option<PresetChoice>,
    /// Resize so the longest edge is at most this many pixels (SmolVLM: fewer tiles, faster;
    /// Qwen2-VL, which keeps each image's aspect: at most this many pixels squared).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    longest_edge: Option<u32>,
    /// Refuse (as the row's error) an image file larger than this many MiB.
    #[arg(long, default_value_t = DEFAULT_MAX_IMAGE_MIB, value_parser = clap::value_parser!(u64).range(1..))]
    max_image_mib: u64,
    /// Caption rows that already have a caption too.
    #[arg(long)]
    overwrite: bool,
    /// Start the output file over instead of resuming it.
    #[arg(long)]
    restart: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct Common {
    /// An optional system prompt.
    #[arg(long)]
    system: Option<String>,
    /// At most this many new tokens.
    #[arg(long, default_value_t = SamplingOptions::default().max_new_tokens)]
    max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = SamplingOptions::default().temperature)]
    temperature: f32,
    #[arg(long, default_value_t = SamplingOptions::default().top_p)]
    top_p: f32,
    /// 0 disables top-k.
    #[arg(long, default_value_t = SamplingOptions::default().top_k)]
    top_k: usize,
    #[arg(long, default_value_t = SamplingOptions::default().seed)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
    device: DeviceChoice,
    /// How to hold the weights: auto (as the files have them on the CPU; on the GPU float
    /// matrices as q8_0), f32, q8_0, q4_0 or mixed
    /// (q4_0 with the text model's value projections at q8_0). Safetensors are quantized on
    /// load.
    #[arg(long, default_value = "auto", value_parser = parse_precision)]
    precision: Precision,
    /// Print tokens as they are generated.
    #[arg(long)]
    stream: bool,
    /// Print timings to stderr.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum PresetChoice {
    /// DataFlow's ImageCaptionGenerate: its system and user prompts (its sampling, temperature
    /// 0.7, top-p 0.9 and 512 new tokens, is the default).
    Dataflow,
}

impl From<PresetChoice> for Preset {
    fn from(choice: PresetChoice) -> Self {
        match choice {
            PresetChoice::Dataflow => Preset::Dataflow,
        }
    }
}

/// The request of `common` with `prompt`, or with a preset's prompts where one is given.
fn request_for(
    common: &Common,
    prompt: String,
    preset: Option<PresetChoice>,
    longest_edge: Option<u32>,
) -> Request {
    let request = common.request(prompt, longest_edge);
    match preset {
        Some(preset) => request.with_preset(preset.into()),
        None => request,
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum DeviceChoice {
    /// burn's pure-Rust CPU backend.
    Cpu,
    /// The default GPU through wgpu (Vulkan, Metal or DirectX).
    Gpu,
}

impl Common {
    fn request(&self, prompt: String, longest_edge: Option<u32>) -> Request {
        Request {
            prompt,
            system: self.system.clone(),
            sampling: SamplingOptions {
                max_new_tokens: self.max_tokens,
                temperature: self.temperature,
                top_p: self.top_p,
                top_k: self.top_k,
                seed: self.seed,
            },
            longest_edge,
        }
    }

    fn device(&self) -> Device {
        match self.device {
            DeviceChoice::Cpu => Device::flex(),
            DeviceChoice::Gpu => Device::wgpu(DeviceKind::DefaultDevice),
        }
    }
}

fn quantize(args: Quantize) -> Result<ExitCode> {
    use captioner::config::ModelConfig;
    use captioner::convert::{plan, planned_bytes, write_pair};
    if matches!(args.precision, Precision::Auto) {
        bail!("--type must be q8_0, q4_0, mixed or f32");
    }
    let config_path = args.model.join("config.json");
    // (A device or FIFO named config.json is refused unread, as for every model file.)
    let config_bytes = captioner::files::read_regular(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let config_json = String::from_utf8(config_bytes)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let config = ModelConfig::from_json(&config_json)
        .with_context(|| format!("reading {}", config_path.display()))?;
    if let ModelConfig::Qwen2Vl(_) = config {
        bail!(
            "Qwen2-VL and Qwen2.5-VL have no GGUF pair yet; caption from the folder itself \
             (--precision q8_0 or q4_0 packs its matrices as it loads)"
        );
    }
    let planned = plan(&config, args.precision, args.llama_cpp);
    let stem = args.name.clone().unwrap_or_else(|| {
        args.model
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into())
    });
    let names = captioner::convert::pair_names(&stem, args.precision);
    println!("tensor data at {}:", args.precision.name());
    let mut by_type: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for t in &planned {
        let e = by_type.entry(format!("{:?}", t.ty)).or_default();
        e.0 += t.shape.iter().product::<usize>();
        e.1 += t.bytes();
    }
    for (ty, (params, bytes)) in &by_type {
        println!("  {ty:>5}: {params:>11} weights, {bytes:>11} bytes");
    }
    let (text, mmproj) = planned_bytes(&planned);
    println!(
        "  text model {text} bytes, mmproj {mmproj} bytes, total {} bytes ({:.1} MB)",
        text + mmproj,
        (text + mmproj) as f64 / 1e6
    );
    if args.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    let Some(out) = &args.out else {
        bail!("--out is required (or pass --dry-run)");
    };
    let pair = if args.random_weights {
        let mut named = Vec::new();
        for name in captioner::files::TEXT_FILES {
            let path = args.model.join(name);
            if path.exists() {
                let bytes = captioner::files::read_regular(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                named.push((name.to_string(), bytes));
            }
        }
        // The tensors are made up.
        let files = ModelFiles::folder_texts(named)
            .with_context(|| format!("reading the model at {}", args.model.display()))?;
        captioner::convert::write_random_pair(&files, args.precision, args.llama_cpp, 42)
    } else {
        let files = ModelFiles::from_path(&args.model)
            .with_context(|| format!("reading the model at {}", args.model.display()))?;
        write_pair(&files, args.precision, args.llama_cpp, &stem)
    }
    .with_context(|| format!("converting {}", args.model.display()))?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let write = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = out.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {} ({} bytes)", path.display(), bytes.len());
        Ok(())
    };
    write(&names.0, &pair.text)?;
    if let Some(mmproj) = &pair.mmproj {
        write(&names.1, mmproj)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_precision(s: &str) -> std::result::Result<Precision, String> {
    s.parse().map_err(|e: captioner::Error| e.to_string())
}

fn load(model: &std::path::Path, common: &Common) -> Result<Engine> {
    let (device, verbose) = (common.device(), common.verbose);
    let start = Instant::now();
    let files = ModelFiles::from_path(model)
        .with_context(|| format!("reading the model at {}", model.display()))?;
    let engine = Engine::load_with(files, &device, common.precision)
        .with_context(|| format!("loading the model at {}", model.display()))?;
    if verbose {
        eprintln!(
            "model loaded in {:.2} s{}",
            start.elapsed().as_secs_f64(),
            peak_memory().map_or(String::new(), |m| format!("; peak memory so far {m}"))
        );
        // Right after loading, what the GPU's allocator holds is the weights.
        if let Some(bytes) = engine.gpu_bytes_in_use() {
            eprintln!(
                "device weights: {bytes} bytes (held as {})",
                engine.precision().name()
            );
        }
    }
    Ok(engine)
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", message(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each joined by ": ". A library error often says its
/// cause already ("image: the JPEG data is truncated", whose source is "the JPEG data is
/// truncated"): a cause whose text is already in the line is left out rather than said twice.
fn message(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn run() -> Result<ExitCode> {
    // Before any model is loaded: large tensors reuse freed heap memory instead of fresh pages
    // per op (see the module's note).
    captioner::heap::keep_freed_memory();
    let cli = Cli::parse();
    let (engine, request, image, common, task) = match cli.command {
        Command::CaptionJsonl(args) => return caption_jsonl(args),
        Command::Quantize(args) => return quantize(args),
        Command::Bench(args) => return bench::run(args),
        Command::Caption {
            model,
            image,
            prompt,
            preset,
            longest_edge,
            max_image_mib,
            common,
        } => {
            let engine = load(&model, &common)?;
            if !engine.accepts_images() {
                bail!(
                    "{} is a text-only model; use `captioner generate`",
                    model.display()
                );
            }
            let name = image.display().to_string();
            let bytes =
                captioner::jsonl::read_image_file(&image, &name, mib_to_bytes(max_image_mib))
                    .map_err(anyhow::Error::msg)?;
            let task = format!("captioning {}", image.display());
            (
                engine,
                request_for(&common, prompt, preset, longest_edge),
                Some(bytes),
                common,
                task,
            )
        }
        Command::Generate {
            model,
            prompt,
            common,
        } => {
            let engine = load(&model, &common)?;
            let task = "answering the prompt".to_string();
            (engine, common.request(prompt, None), None, common, task)
        }
    };

    let start = Instant::now();
    let mut first_token: Option<f64> = None;
    let mut stdout = std::io::stdout();
    let mut on_text = |piece: &str| {
        first_token.get_or_insert_with(|| start.elapsed().as_secs_f64());
        if common.stream {
            let _ = write!(stdout, "{piece}");
            let _ = stdout.flush();
        }
        Flow::Continue
    };
    let result = match &image {
        Some(bytes) => engine.caption(&[bytes.as_slice()], &request, &mut on_text),
        None => engine.chat(&request, &mut on_text),
    }
    .context(task)?;
    if common.stream {
        println!();
    } else {
        println!("{}", result.text);
    }
    if common.verbose {
        let total = start.elapsed().as_secs_f64();
        let first = first_token.unwrap_or(total);
        let decode = result.tokens.len().saturating_sub(1);
        eprintln!(
            "{} prompt tokens, {} new tokens; first token after {:.2} s, {:.1} tokens/s after it, {:.2} s in all",
            result.prompt_tokens,
            result.tokens.len(),
            first,
            if total > first { decode as f64 / (total - first) } else { 0.0 },
            total
        );
        if let Some(m) = peak_memory() {
            eprintln!("peak memory {m}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn mib_to_bytes(mib: u64) -> u64 {
    mib.saturating_mul(1 << 20)
}

/// The process's peak resident memory (Linux: `VmHWM`), for `--verbose`.
fn peak_memory() -> Option<String> {
    captioner::bench::peak_rss_bytes().map(|b| format!("{:.1} MB (RSS)", b as f64 / 1e6))
}

fn caption_jsonl(args: CaptionJsonl) -> Result<ExitCode> {
    let input = Input::from_arg(&args.input);
    let output = Output::from_arg(&args.output);
    if let Input::File(path) = &input {
        if !path.is_file() {
            bail!(
                "the input {} does not exist or is not a file; pass a JSONL file (or - for stdin)",
                path.display()
            );
        }
    }
    if !args.image_root.is_dir() {
        bail!(
            "the image root {} is not a folder; pass --image-root with the folder the rows' paths start from",
            args.image_root.display()
        );
    }
    let options = RowOptions {
        image_key: args.multi_modal_key.clone(),
        caption_key: args.output_key.clone(),
        error_key: args.error_key.clone(),
        max_images: args.max_images_per_row,
        overwrite: args.overwrite,
    };
    if let Err(e) = options.validate() {
        bail!("{e} (--output-key, --error-key, --multi-modal-key)");
    }
    let common = &args.common;
    let engine = load(&args.model, common)?;
    if !engine.accepts_images() {
        bail!(
            "{} is a text-only model; caption-jsonl needs a vision model such as SmolVLM",
            args.model.display()
        );
    }
    let request = request_for(common, args.prompt.clone(), args.preset, args.longest_edge);
    request.sampling.validate()?;
    let mut batch = CaptionRun::new(options, request);
    let mut images =
        FolderImages::new(&args.image_root).with_max_bytes(mib_to_bytes(args.max_image_mib));

    // First Ctrl-C: finish the current row, then stop with a valid file. Second: quit now
    // (rows are written whole, so the file is still valid up to its last complete line).
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after the current row (Ctrl-C again to quit at once)");
    })
    .context("installing the Ctrl-C handler")?;

    let mut report = Report::new();
    let summary = jsonl::run(
        &engine,
        &mut batch,
        &input,
        &output,
        &mut images,
        args.restart,
        &cancel,
        &mut |progress, row| report.row(progress, row),
    )
    .context("the run stopped")?;
    report.finish();

    let p = &summary.progress;
    let target = match &output {
        Output::Stdout => "stdout".to_string(),
        Output::File(path) => path.display().to_string(),
    };
    let resumed = if summary.resumed > 0 {
        format!(", {} kept from the earlier run", summary.resumed)
    } else {
        String::new()
    };
    eprintln!(
        "{} rows: {} captioned, {} skipped{resumed}, {} failed; {} in {}, {:.1} tokens/s; output in {target}",
        p.rows_done,
        p.captioned,
        p.skipped,
        p.failed,
        plural(p.tokens, "token"),
        duration(p.elapsed_seconds),
        p.tokens_per_second,
    );
    if summary.interrupted {
        eprintln!("interrupted: run the same command again to resume");
        return Ok(ExitCode::from(130));
    }
    Ok(ExitCode::SUCCESS)
}

/// Progress on stderr: a bar on a terminal, a plain line every few seconds otherwise (logs).
struct Report {
    bar: Option<ProgressBar>,
    last_line: Instant,
}

impl Report {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} rows · {msg} · {elapsed_precise} elapsed, {eta} left",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        Self {
            bar,
            last_line: Instant::now(),
        }
    }

    fn row(&mut self, p: &Progress, row: &RowResult) {
        let note = row
            .error
            .as_ref()
            .map(|e| format!("row {}: {e}", p.rows_done));
        match &self.bar {
            Some(bar) => {
                if let Some(note) = note {
                    bar.println(note);
                }
                bar.set_length(p.rows_total.unwrap_or(p.rows_done) as u64);
                bar.set_position(p.rows_done as u64);
                bar.set_message(format!(
                    "{:.1} tok/s, {} failed",
                    p.tokens_per_second, p.failed
                ));
            }
            None => {
                if let Some(note) = note {
                    eprintln!("{note}");
                }
                if self.last_line.elapsed().as_secs_f64() >= 5.0 {
                    self.last_line = Instant::now();
                    let total = p.rows_total.map(|t| format!("/{t}")).unwrap_or_default();
                    let left = p
                        .eta_seconds
                        .map(|s| format!(", {} left", duration(s)))
                        .unwrap_or_default();
                    eprintln!(
                        "{}{total} rows ({} failed), {:.1} tokens/s{left}",
                        p.rows_done, p.failed, p.tokens_per_second
                    );
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{seconds:.1} s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}
