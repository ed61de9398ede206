//! `captioner`: the native command-line front end.

use anyhow::{bail, Context, Result};
use burn::tensor::{Device, DeviceKind};
use captioner::{Engine, Flow, ModelFiles, Request, SamplingOptions, DEFAULT_PROMPT};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

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
        /// The image (JPEG, PNG, WebP, GIF, BMP).
        #[arg(long)]
        image: PathBuf,
        /// What to ask about the image.
        #[arg(long, default_value = DEFAULT_PROMPT)]
        prompt: String,
        /// Resize so the longest edge is at most this many pixels (fewer tiles, faster).
        #[arg(long)]
        longest_edge: Option<u32>,
        #[command(flatten)]
        common: Common,
    },
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
}

#[derive(Args)]
struct Common {
    /// An optional system prompt.
    #[arg(long)]
    system: Option<String>,
    /// At most this many new tokens.
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    #[arg(long, default_value_t = 0.9)]
    top_p: f32,
    /// 0 disables top-k.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
    device: DeviceChoice,
    /// Print tokens as they are generated.
    #[arg(long)]
    stream: bool,
    /// Print timings to stderr.
    #[arg(long, short)]
    verbose: bool,
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

fn load(model: &std::path::Path, device: &Device, verbose: bool) -> Result<Engine> {
    let start = Instant::now();
    let files = ModelFiles::from_path(model)
        .with_context(|| format!("reading the model at {}", model.display()))?;
    let engine = Engine::load(files, device)
        .with_context(|| format!("loading the model at {}", model.display()))?;
    if verbose {
        eprintln!("model loaded in {:.2} s", start.elapsed().as_secs_f64());
    }
    Ok(engine)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let (engine, request, image, common) = match cli.command {
        Command::Caption {
            model,
            image,
            prompt,
            longest_edge,
            common,
        } => {
            let engine = load(&model, &common.device(), common.verbose)?;
            if !engine.accepts_images() {
                bail!(
                    "{} is a text-only model; use `captioner generate`",
                    model.display()
                );
            }
            let bytes =
                std::fs::read(&image).with_context(|| format!("reading {}", image.display()))?;
            (
                engine,
                common.request(prompt, longest_edge),
                Some(bytes),
                common,
            )
        }
        Command::Generate {
            model,
            prompt,
            common,
        } => {
            let engine = load(&model, &common.device(), common.verbose)?;
            (engine, common.request(prompt, None), None, common)
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
    .context("generation failed")?;
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
    }
    Ok(())
}
