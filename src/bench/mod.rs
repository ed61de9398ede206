//! Benchmarks: what a caption costs, stage by stage, on this machine.
//!
//! [`run`] loads a model, captions one image cold (the time a user waits for the first
//! caption), then measures each stage on its own, several times after warm-up runs: image
//! preprocessing, the vision tower and connector per tile, prefill and decode throughput at
//! given context lengths. Every timed region ends by reading a result back from the device, so
//! a GPU's queued work is inside the time it is charged to. The same code runs natively
//! (`captioner bench`) and in the browser (`www/bench.html`).
//!
//! [`synthetic`] builds a model with a published model's exact shapes and random weights, so
//! the figures need no download.

mod synthetic;

pub use synthetic::{synthetic_model, test_image, Shape};

use crate::engine::{Engine, Request};
use crate::error::{Error, Result};
use crate::files::ModelFiles;
use crate::generate::{Flow, SamplingOptions};
use crate::preprocess::ProcessedImage;
use crate::weights::Precision;
use burn_tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};
use web_time::Instant;

/// What to measure, and how often.
#[derive(Debug, Clone, Serialize)]
pub struct Options {
    /// Measured repetitions of each stage (the median is the figure).
    pub runs: usize,
    /// Repetitions before those, not counted (shader compilation, caches, allocator pools).
    pub warmup: usize,
    /// Prompt length for the prefill figure.
    pub prefill_tokens: usize,
    /// Tokens already in the KV cache when decode speed is measured, one figure each.
    pub contexts: Vec<usize>,
    /// New tokens per decode measurement.
    pub decode_tokens: usize,
    /// How decode picks its tokens (0: greedy); the defaults are a caption's,
    /// `SamplingOptions::default()`.
    pub temperature: f32,
    pub top_p: f32,
    /// Longest new caption for the time to first caption.
    pub caption_tokens: usize,
    /// The image's longest edge after resizing (`None`: the processor's own setting); the
    /// tile count follows from it.
    pub longest_edge: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            runs: 5,
            warmup: 1,
            prefill_tokens: 128,
            contexts: vec![32, 256],
            decode_tokens: 32,
            temperature: SamplingOptions::default().temperature,
            top_p: SamplingOptions::default().top_p,
            caption_tokens: 32,
            longest_edge: Some(512),
        }
    }
}

impl Options {
    /// The `longest_edge` setting as both front ends take it (`--longest-edge`, bench.html's
    /// `edge`): a number of pixels, or 0 for the processor's own setting (all its tiles).
    pub fn longest_edge_from(pixels: u32) -> Option<u32> {
        (pixels > 0).then_some(pixels)
    }
}

/// Median, extremes and every sample of one measured quantity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

impl Stat {
    pub fn of(mut samples: Vec<f64>) -> Self {
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        samples.iter_mut().for_each(|s| *s = round3(*s));
        Self {
            median: round3(median),
            min: round3(sorted.first().copied().unwrap_or(f64::NAN)),
            max: round3(sorted.last().copied().unwrap_or(f64::NAN)),
            samples,
        }
    }

    /// Half the min-to-max range relative to the median, in percent: the spread in a table.
    pub fn spread_percent(&self) -> f64 {
        100.0 * (self.max - self.min) / 2.0 / self.median
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Decode throughput with `context` tokens already in the cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decode {
    pub context: usize,
    pub tokens: usize,
    pub tokens_per_s: Stat,
}

/// Device memory as burn's allocator reports it (`None` on the CPU backend).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct GpuMemory {
    /// Bytes of live buffers once the model is loaded: the weights.
    pub after_load_in_use: u64,
    /// The most bytes the allocator held (live and pooled) at any point measured.
    pub peak_reserved: u64,
}

/// One model at one precision on one device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub model: String,
    pub precision: String,
    pub device: String,
    /// The weight files' size.
    pub model_bytes: usize,
    pub load_ms: f64,
    /// From the start of loading to the end of the first caption (or answer, for a text model).
    pub first_caption_ms: f64,
    pub first_caption_tokens: usize,
    /// Image models only.
    pub preprocess_ms: Option<Stat>,
    pub image_tiles: Option<usize>,
    pub vision_ms_per_tile: Option<Stat>,
    pub prefill_tokens: usize,
    pub prefill_tokens_per_s: Stat,
    pub decode: Vec<Decode>,
    /// The process's peak resident memory (Linux), read at the end.
    pub peak_rss_bytes: Option<u64>,
    pub gpu_memory: Option<GpuMemory>,
}

/// Loads `files` on `device` at `precision` and measures it (see the module docs). `image` is
/// the picture to caption and tile (encoded; ignored by a text-only model).
pub async fn run(
    name: &str,
    files: ModelFiles,
    device: &Device,
    precision: Precision,
    image: &[u8],
    options: &Options,
) -> Result<Report> {
    if options.runs == 0 {
        return Err(Error::Invalid("a benchmark needs at least one run".into()));
    }
    let model_bytes = files.weights_bytes();
    let mut gpu = GpuWatch::new(device);

    let start = Instant::now();
    let engine = Engine::load_with(files, device, precision)?;
    let load_ms = ms_since(start);
    gpu.after_load();
    let request = Request {
        sampling: SamplingOptions::greedy(options.caption_tokens),
        longest_edge: options.longest_edge,
        ..Request::default()
    };
    let first = if engine.accepts_images() {
        engine
            .caption_async(&[image], &request, &mut |_| Flow::Continue)
            .await?
    } else {
        engine.chat_async(&request, &mut |_| Flow::Continue).await?
    };
    let first_caption_ms = ms_since(start);
    gpu.sample();

    let repeat = options.warmup + options.runs;
    let measured = |samples: Vec<f64>| Stat::of(samples[options.warmup..].to_vec());

    let (mut preprocess_ms, mut image_tiles, mut vision_ms_per_tile) = (None, None, None);
    if engine.accepts_images() {
        let mut pre = Vec::new();
        let mut processed = None;
        for _ in 0..repeat {
            let t = Instant::now();
            processed = Some(engine.preprocess(image, options.longest_edge)?);
            pre.push(ms_since(t));
        }
        let processed = processed.ok_or_else(|| Error::Invalid("no image".into()))?;
        // SmolVLM's tower runs tile by tile; Qwen2-VL's runs over the whole image at once.
        let tiles = match &processed {
            ProcessedImage::Tiles(t) => t.n_tiles,
            ProcessedImage::Patches(_) => 1,
        };
        let mut vision = Vec::new();
        for _ in 0..repeat {
            let t = Instant::now();
            let features = engine.image_features(&processed)?;
            sync(features.sum()).await?;
            vision.push(ms_since(t) / tiles as f64);
            gpu.sample();
        }
        preprocess_ms = Some(measured(pre));
        image_tiles = Some(tiles);
        vision_ms_per_tile = Some(measured(vision));
    }

    let vocab = engine.text_model().config().vocab_size;
    let mut prefill = Vec::new();
    for _ in 0..repeat {
        let ids = token_ids(options.prefill_tokens, vocab);
        let t = Instant::now();
        let (logits, _cache) = engine.prefill(&ids, &[])?;
        read_id(logits.argmax(0)).await?;
        prefill.push(options.prefill_tokens as f64 / (ms_since(t) / 1000.0));
        gpu.sample();
    }

    let mut decode = Vec::new();
    for &context in &options.contexts {
        let mut rates = Vec::new();
        for _ in 0..repeat {
            rates.push(decode_rate(&engine, context, options).await?);
            gpu.sample();
        }
        decode.push(Decode {
            context,
            tokens: options.decode_tokens,
            tokens_per_s: measured(rates),
        });
    }

    Ok(Report {
        model: name.to_string(),
        precision: precision.name(),
        device: device_name(device),
        model_bytes,
        load_ms: round3(load_ms),
        first_caption_ms: round3(first_caption_ms),
        first_caption_tokens: first.tokens.len(),
        preprocess_ms,
        image_tiles,
        vision_ms_per_tile,
        prefill_tokens: options.prefill_tokens,
        prefill_tokens_per_s: measured(prefill),
        decode,
        peak_rss_bytes: peak_rss_bytes(),
        gpu_memory: gpu.report(),
    })
}

/// Tokens per second of `options.decode_tokens` decode steps after a `context`-token prompt,
/// through [`Engine::decode`], the loop captions run (sampling, streamed text, stop checks),
/// with no stop token so that every run makes the same number of tokens. The prompt's logits
/// are read before the clock starts (on a GPU the prefill is still running otherwise); the
/// clock then covers `decode_tokens` steps and one more pick, the first token's.
async fn decode_rate(engine: &Engine, context: usize, options: &Options) -> Result<f64> {
    let text = engine.text_model();
    let (logits, mut cache) =
        engine.prefill(&token_ids(context.max(1), text.config().vocab_size), &[])?;
    read_id(logits.clone().argmax(0)).await?;
    let sampling = SamplingOptions {
        max_new_tokens: options.decode_tokens + 1,
        temperature: options.temperature,
        top_p: options.top_p,
        ..SamplingOptions::default()
    };
    let t = Instant::now();
    let tokens = engine
        .decode(logits, &mut cache, &[], &sampling, &mut |_| Flow::Continue)
        .await?;
    let elapsed = ms_since(t) / 1000.0;
    Ok(tokens.len().saturating_sub(1) as f64 / elapsed)
}

/// A fixed, spread-out prompt of `n` ordinary token ids.
fn token_ids(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 101) % vocab) as u32).collect()
}

async fn sync<const D: usize>(t: Tensor<D>) -> Result<()> {
    t.into_data_async()
        .await
        .map(|_| ())
        .map_err(|e| Error::Backend(format!("reading back: {e:?}")))
}

async fn read_id(t: Tensor<1, Int>) -> Result<u32> {
    let data = t
        .into_data_async()
        .await
        .map_err(|e| Error::Backend(format!("reading back: {e:?}")))?;
    let ids = data
        .try_into_vec_as::<i64>()
        .map_err(|e| Error::Backend(format!("argmax: {e:?}")))?;
    ids.first()
        .map(|&id| id as u32)
        .ok_or_else(|| Error::Backend("empty argmax".into()))
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn device_name(device: &Device) -> String {
    if crate::models::linear::is_cpu(device) {
        "cpu (burn flex)".into()
    } else if cfg!(target_arch = "wasm32") {
        "gpu (burn wgpu, WebGPU)".into()
    } else {
        "gpu (burn wgpu)".into()
    }
}

/// Samples burn's allocator between stages.
struct GpuWatch<'a> {
    device: &'a Device,
    memory: Option<GpuMemory>,
}

impl<'a> GpuWatch<'a> {
    fn new(device: &'a Device) -> Self {
        let memory = device.memory_pool_usage().map(|_| GpuMemory::default());
        Self { device, memory }
    }

    fn after_load(&mut self) {
        if let (Some(m), Some(u)) = (&mut self.memory, self.device.memory_pool_usage()) {
            m.after_load_in_use = u.bytes_in_use;
        }
        self.sample();
    }

    fn sample(&mut self) {
        if let (Some(m), Some(u)) = (&mut self.memory, self.device.memory_pool_usage()) {
            m.peak_reserved = m.peak_reserved.max(u.bytes_reserved);
        }
    }

    fn report(self) -> Option<GpuMemory> {
        self.memory
    }
}

/// The process's peak resident set (Linux `VmHWM`); `None` elsewhere.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The reports as a plain-text table, one column per report.
pub fn table(reports: &[Report]) -> String {
    let stat = |s: &Stat, unit: &str| format!("{:.1} {unit} ±{:.0}%", s.median, s.spread_percent());
    let opt = |s: &Option<Stat>, unit: &str| s.as_ref().map_or("-".into(), |s| stat(s, unit));
    let mb = |b: Option<u64>| b.map_or("-".into(), |b| format!("{:.1} MB", b as f64 / 1e6));
    let mut rows: Vec<(String, Vec<String>)> = vec![
        (
            "precision".into(),
            reports.iter().map(|r| r.precision.clone()).collect(),
        ),
        (
            "model size".into(),
            reports
                .iter()
                .map(|r| mb(Some(r.model_bytes as u64)))
                .collect(),
        ),
        (
            "load".into(),
            reports
                .iter()
                .map(|r| format!("{:.0} ms", r.load_ms))
                .collect(),
        ),
        (
            "first caption (incl. load)".into(),
            reports
                .iter()
                .map(|r| {
                    format!(
                        "{:.0} ms, {} tok",
                        r.first_caption_ms, r.first_caption_tokens
                    )
                })
                .collect(),
        ),
        (
            "preprocess".into(),
            reports
                .iter()
                .map(|r| opt(&r.preprocess_ms, "ms"))
                .collect(),
        ),
        (
            "vision + connector / tile".into(),
            reports
                .iter()
                .map(|r| opt(&r.vision_ms_per_tile, "ms"))
                .collect(),
        ),
        (
            "prefill".into(),
            reports
                .iter()
                .map(|r| stat(&r.prefill_tokens_per_s, "tok/s"))
                .collect(),
        ),
    ];
    let contexts: Vec<usize> = reports
        .first()
        .map(|r| r.decode.iter().map(|d| d.context).collect())
        .unwrap_or_default();
    for (i, context) in contexts.iter().enumerate() {
        rows.push((
            format!("decode @ {context} ctx"),
            reports
                .iter()
                .map(|r| {
                    r.decode
                        .get(i)
                        .map_or("-".into(), |d| stat(&d.tokens_per_s, "tok/s"))
                })
                .collect(),
        ));
    }
    rows.push((
        "peak RSS".into(),
        reports.iter().map(|r| mb(r.peak_rss_bytes)).collect(),
    ));
    rows.push((
        "GPU weights / peak".into(),
        reports
            .iter()
            .map(|r| {
                r.gpu_memory.as_ref().map_or("-".into(), |g| {
                    format!(
                        "{} / {}",
                        mb(Some(g.after_load_in_use)),
                        mb(Some(g.peak_reserved))
                    )
                })
            })
            .collect(),
    ));
    let label = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let width = rows
        .iter()
        .flat_map(|(_, cells)| cells.iter().map(String::len))
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (l, cells) in rows {
        out.push_str(&format!("{l:<label$}"));
        for c in cells {
            out.push_str(&format!("  {c:>width$}"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_takes_the_median_of_the_samples() {
        let s = Stat::of(vec![3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 10.0));
        assert_eq!(s.samples, vec![3.0, 1.0, 2.0, 10.0]);
        assert_eq!(Stat::of(vec![5.0, 1.0, 9.0]).median, 5.0);
    }
}
