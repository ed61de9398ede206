//! `captioner bench`: the stage-by-stage benchmark of `captioner::bench`, as JSON and a table.

use anyhow::{bail, Context, Result};
use burn_tensor::{Device, DeviceKind};
use captioner::bench::{self, Options, Report, Shape};
use captioner::{ModelFiles, Precision};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct Bench {
    /// A model folder or `.gguf`; with --synthetic, the folder whose tokenizer and chat template
    /// the synthetic model takes (e.g. tests/fixtures/tiny-b for SmolVLM's).
    #[arg(long)]
    model: PathBuf,
    /// Random weights with these shapes instead of the model's own: smolvlm-256m,
    /// smolvlm-500m, or a config.json.
    #[arg(long)]
    synthetic: Option<String>,
    /// Comma-separated; each runs in a process of its own, so each peak memory is its own.
    /// A synthetic model is built at each (auto means f32 there on the CPU, q8_0 on the GPU).
    #[arg(long, default_value = "auto")]
    precision: String,
    /// cpu (burn's CPU backend) or gpu (wgpu).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Measured runs of each stage; the median is the figure.
    #[arg(long, default_value_t = Options::default().runs)]
    runs: usize,
    /// Runs before those, not counted.
    #[arg(long, default_value_t = Options::default().warmup)]
    warmup: usize,
    #[arg(long, default_value_t = Options::default().prefill_tokens)]
    prefill_tokens: usize,
    /// Comma-separated KV-cache lengths to measure decode speed at.
    #[arg(long, default_value = "32,256")]
    contexts: String,
    /// New tokens per decode measurement.
    #[arg(long, default_value_t = Options::default().decode_tokens)]
    decode_tokens: usize,
    /// How decode picks its tokens, as a caption does (0: greedy).
    #[arg(long, default_value_t = Options::default().temperature)]
    temperature: f32,
    #[arg(long, default_value_t = Options::default().top_p)]
    top_p: f32,
    /// Longest first caption.
    #[arg(long, default_value_t = Options::default().caption_tokens)]
    caption_tokens: usize,
    /// The image's longest edge; 0 keeps the processor's setting (more tiles).
    #[arg(long, default_value_t = Options::default().longest_edge.unwrap_or(0))]
    longest_edge: u32,
    /// The image to caption (default: a generated 1024x768 photo-like PNG).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Write the JSON report here (`-`: stdout, and the table goes to stderr).
    #[arg(long)]
    json: Option<PathBuf>,
    /// On a GPU, multiply packed weights by one to eight rows with burn's tiled quantized
    /// matmul instead of Captioner's fused kernel: the before of a before/after.
    #[arg(long)]
    no_gpu_matvec: bool,
    /// Internal: run one precision and write its report as JSON to --json.
    #[arg(long, hide = true)]
    child: bool,
}

impl Bench {
    fn options(&self) -> Result<Options> {
        let contexts = self
            .contexts
            .split(',')
            .map(|c| c.trim().parse::<usize>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .with_context(|| format!("--contexts {:?}: comma-separated numbers", self.contexts))?;
        Ok(Options {
            runs: self.runs,
            warmup: self.warmup,
            prefill_tokens: self.prefill_tokens,
            contexts,
            decode_tokens: self.decode_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            caption_tokens: self.caption_tokens,
            longest_edge: Options::longest_edge_from(self.longest_edge),
        })
    }

    fn precisions(&self) -> Result<Vec<Precision>> {
        self.precision
            .split(',')
            .map(|p| p.trim().parse::<Precision>().map_err(anyhow::Error::from))
            .collect()
    }

    /// This command line again for one precision, as a child process.
    fn child_args(&self, precision: Precision, json: &std::path::Path) -> Vec<String> {
        let mut args = vec![
            "bench".to_string(),
            "--child".into(),
            "--model".into(),
            self.model.display().to_string(),
            "--precision".into(),
            precision.name(),
            "--json".into(),
            json.display().to_string(),
            "--device".into(),
            self.device.clone(),
            "--contexts".into(),
            self.contexts.clone(),
        ];
        for (flag, value) in [
            ("--runs", self.runs),
            ("--warmup", self.warmup),
            ("--prefill-tokens", self.prefill_tokens),
            ("--decode-tokens", self.decode_tokens),
            ("--caption-tokens", self.caption_tokens),
            ("--longest-edge", self.longest_edge as usize),
        ] {
            args.extend([flag.to_string(), value.to_string()]);
        }
        if self.no_gpu_matvec {
            args.push("--no-gpu-matvec".into());
        }
        args.extend([
            "--temperature".to_string(),
            self.temperature.to_string(),
            "--top-p".to_string(),
            self.top_p.to_string(),
        ]);
        if let Some(s) = &self.synthetic {
            args.extend(["--synthetic".to_string(), s.clone()]);
        }
        if let Some(i) = &self.image {
            args.extend(["--image".to_string(), i.display().to_string()]);
        }
        args
    }
}

pub fn run(args: Bench) -> Result<ExitCode> {
    let options = args.options()?;
    let precisions = args.precisions()?;
    let reports = if args.child || precisions.len() == 1 {
        vec![measure(&args, precisions[0], &options)?]
    } else {
        let exe = std::env::current_exe().context("finding this program to rerun it")?;
        let dir = std::env::temp_dir().join(format!("captioner-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).context("a scratch folder for the reports")?;
        let mut reports = Vec::new();
        for &precision in &precisions {
            let out = dir.join(format!("{}.json", precision.name()));
            eprintln!("bench: {} ...", precision.name());
            let status = std::process::Command::new(&exe)
                .args(args.child_args(precision, &out))
                .status()
                .context("running the benchmark for one precision")?;
            if !status.success() {
                bail!("the {} benchmark failed ({status})", precision.name());
            }
            let text = std::fs::read_to_string(&out)?;
            reports.push(serde_json::from_str::<Report>(&text)?);
        }
        let _ = std::fs::remove_dir_all(&dir);
        reports
    };
    if args.child {
        let path = args.json.as_ref().context("--child needs --json")?;
        std::fs::write(path, serde_json::to_string(&reports[0])?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let document = json!({
        "captioner": env!("CARGO_PKG_VERSION"),
        "machine": machine(),
        "options": options,
        "reports": reports,
    });
    let table = bench::table(&reports);
    match &args.json {
        Some(p) if p.as_os_str() == "-" => {
            println!("{}", serde_json::to_string_pretty(&document)?);
            eprint!("{table}");
        }
        Some(p) => {
            std::fs::write(p, serde_json::to_string_pretty(&document)? + "\n")
                .with_context(|| format!("writing {}", p.display()))?;
            print!("{table}");
        }
        None => print!("{table}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn measure(args: &Bench, precision: Precision, options: &Options) -> Result<Report> {
    let device = match args.device.as_str() {
        "cpu" => Device::flex(),
        "gpu" => Device::wgpu(DeviceKind::DefaultDevice),
        other => bail!("--device {other:?}: cpu or gpu"),
    };
    let files = ModelFiles::from_path(&args.model)
        .with_context(|| format!("reading the model at {}", args.model.display()))?;
    // What `auto` means here (Q8_0 on a GPU), so that the report names it.
    let precision = precision.on(args.device == "gpu");
    let (name, files, precision) = match &args.synthetic {
        Some(shape) => {
            let shape = match Shape::published(shape) {
                Some(s) => s,
                None if shape.ends_with(".json") => Shape::from_config(
                    shape,
                    std::fs::read_to_string(shape).with_context(|| format!("reading {shape}"))?,
                ),
                None => bail!(
                    "--synthetic {shape:?}: one of {} or a config.json",
                    Shape::NAMES.join(", ")
                ),
            };
            let (files, precision) = bench::synthetic_model(&shape, files, precision, 42)
                .context("building the synthetic model")?;
            (format!("synthetic {}", shape.name), files, precision)
        }
        None => (args.model.display().to_string(), files, precision),
    };
    let mut name = name;
    if args.no_gpu_matvec {
        captioner::models::matvec::set_enabled(false);
        name.push_str(", burn matmul for packed m <= 8");
    }
    let image = match &args.image {
        Some(p) => captioner::jsonl::read_image_file(
            p,
            &p.display().to_string(),
            captioner::jsonl::MAX_IMAGE_FILE_BYTES,
        )
        .map_err(anyhow::Error::msg)?,
        None => bench::test_image(1024, 768)?,
    };
    let mut report = pollster::block_on(bench::run(
        &name, files, &device, precision, &image, options,
    ))
    .context("benchmark")?;
    report.precision = precision.name();
    Ok(report)
}

/// What the figures were measured on.
fn machine() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let field = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().to_string())
    };
    let memory_kb: Option<u64> = field(&read("/proc/meminfo"), "MemTotal")
        .and_then(|v| v.trim_end_matches("kB").trim().parse().ok());
    json!({
        "cpu": field(&read("/proc/cpuinfo"), "model name"),
        "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "memory_bytes": memory_kb.map(|kb| kb * 1024),
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
    })
}
