//! Captioning a stream of JSONL lines: one line in, at most one line out, with running
//! statistics for a progress bar. Front ends feed lines and write what comes back as it comes,
//! so a run never holds the dataset in memory and a cancelled run leaves a valid file.

use crate::engine::{Engine, Request};
use crate::error::Error;
use crate::generate::Flow;
use crate::preprocess::{PreprocessError, ProcessedImage};
use crate::rows::{plan, Job, Line, Outcome, Plan, RowOptions};
use crate::DEFAULT_PROMPT;
use image::RgbImage;
use std::future::Future;
use web_time::Instant;

/// The engine's refusal of an image for its format, when that is what `error` is (see
/// [`PreprocessError::is_unsupported`]).
fn format_refusal(error: &Error) -> Option<&PreprocessError> {
    match error {
        Error::Image(cause) => cause
            .downcast_ref::<PreprocessError>()
            .filter(|e| e.is_unsupported()),
        _ => None,
    }
}

/// What went wrong with an image, without the "image: " that would come before a path.
fn reason(error: &Error) -> String {
    match error {
        Error::Image(cause) => cause.to_string(),
        other => other.to_string(),
    }
}

/// The prompt for rows showing several images, when the caller keeps the default prompt.
pub const DEFAULT_PROMPT_MANY: &str = "Describe these images together in one or two sentences.";

/// Where a front end finds a row's images: files under a folder natively, the files the user
/// picked in the browser.
pub trait ImageSource {
    /// The bytes of the image at `path`, written as the row gives it; an error message naming
    /// the path otherwise.
    fn read(&mut self, path: &str) -> impl Future<Output = Result<Vec<u8>, String>>;

    /// The pixels of an image in a format the engine does not read, from a decoder that may
    /// read it: the browser's own (AVIF; HEIC in Safari). `None` where the source has no such
    /// decoder (natively); else the image, or why that decoder failed too.
    fn decode_unsupported(
        &mut self,
        _bytes: &[u8],
    ) -> impl Future<Output = Option<Result<RgbImage, String>>> {
        std::future::ready(None)
    }
}

/// An image's bytes as the engine takes them: decoded by the engine or, for a format it
/// refuses, by the source's other decoder (the browser's). The image and whether that other
/// decoder read it; or why neither could, for an error that names the image.
pub async fn preprocess_or_fall_back<S: ImageSource>(
    engine: &Engine,
    bytes: Vec<u8>,
    longest_edge: Option<u32>,
    source: &mut S,
) -> Result<(ProcessedImage, bool), String> {
    let e = match engine.preprocess(&bytes, longest_edge) {
        Ok(image) => return Ok((image, false)),
        Err(e) => e,
    };
    // Refused for its format: another decoder may read it. (`unknown`: bytes the engine takes
    // for no image at all.)
    let Some(unknown) = format_refusal(&e).map(|r| matches!(r, PreprocessError::UnknownFormat))
    else {
        return Err(reason(&e));
    };
    match source.decode_unsupported(&bytes).await {
        None => Err(reason(&e)),
        // Bytes neither takes for an image: the engine's word is enough, and the same as the
        // command line's.
        Some(Err(_)) if unknown => Err(reason(&e)),
        Some(Err(why)) => Err(format!(
            "{}; the browser could not decode it either: {why}",
            reason(&e)
        )),
        Some(Ok(pixels)) => {
            drop(bytes);
            engine
                .preprocess_pixels(&pixels, longest_edge)
                .map(|image| (image, true))
                .map_err(|e| format!("the browser decoded it, but {}", reason(&e)))
        }
    }
}

/// How far a run has come.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Rows written so far (captioned, skipped or failed).
    pub rows_done: usize,
    /// Rows in the input, when known in advance.
    pub rows_total: Option<usize>,
    pub captioned: usize,
    pub skipped: usize,
    pub failed: usize,
    /// New tokens generated in this run.
    pub tokens: u64,
    pub elapsed_seconds: f64,
    /// New tokens per second of generation time.
    pub tokens_per_second: f64,
    /// Time left at this run's pace, when the total is known and a row has been captioned.
    pub eta_seconds: Option<f64>,
}

/// The output for one line.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RowResult {
    /// The output row as one JSON line, without the newline.
    pub line: String,
    pub outcome: Outcome,
    /// The caption written, for a captioned row.
    pub caption: Option<String>,
    /// Why the row has no caption, for a failed row.
    pub error: Option<String>,
}

/// A captioning run over rows: its settings and running statistics. The engine is passed to
/// each call, so a front end can keep the two apart (the browser owns them on the JS side).
pub struct CaptionRun {
    options: RowOptions,
    request: Request,
    /// Whether the caller kept the default prompt (then multi-image rows get a plural one).
    default_prompt: bool,
    progress: Progress,
    started: Instant,
    /// Seconds spent on rows that went to the model, for the pace.
    model_seconds: f64,
    model_rows: usize,
}

impl CaptionRun {
    pub fn new(options: RowOptions, request: Request) -> Self {
        let default_prompt = request.prompt == DEFAULT_PROMPT;
        Self {
            options,
            request,
            default_prompt,
            progress: Progress::default(),
            started: Instant::now(),
            model_seconds: 0.0,
            model_rows: 0,
        }
    }

    pub fn options(&self) -> &RowOptions {
        &self.options
    }

    /// Sets the number of rows in the input, for the time left.
    pub fn set_total(&mut self, rows: Option<usize>) {
        self.progress.rows_total = rows;
    }

    /// Counts rows that an earlier run already wrote (a resumed run).
    pub fn count_resumed(&mut self, rows: usize) {
        self.progress.rows_done += rows;
        self.progress.skipped += rows;
    }

    /// Counts a row that an earlier run of the same input finished with `outcome` (the browser
    /// keeps each row's outcome, so a resumed run's counts equal an uninterrupted one's).
    pub fn count_earlier(&mut self, outcome: Outcome) {
        self.progress.rows_done += 1;
        self.count(outcome);
    }

    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Captioned => self.progress.captioned += 1,
            Outcome::Skipped => self.progress.skipped += 1,
            Outcome::Failed => self.progress.failed += 1,
        }
    }

    /// The statistics so far.
    pub fn progress(&self) -> Progress {
        let mut p = self.progress.clone();
        p.elapsed_seconds = self.started.elapsed().as_secs_f64();
        p.tokens_per_second = if self.model_seconds > 0.0 {
            p.tokens as f64 / self.model_seconds
        } else {
            0.0
        };
        p.eta_seconds = match (p.rows_total, self.model_rows) {
            (Some(total), n) if n > 0 => {
                Some(total.saturating_sub(p.rows_done) as f64 * self.model_seconds / n as f64)
            }
            _ => None,
        };
        p
    }

    /// Processes one line of the input (text or bytes, see [`Line`]): `None` for a blank line,
    /// the output line otherwise. `on_text` sees the caption as it is generated and may stop it
    /// (the row then keeps the text so far).
    pub async fn next<S: ImageSource>(
        &mut self,
        engine: &Engine,
        line: Line,
        images: &mut S,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> Option<RowResult> {
        let result = match plan(line, &self.options) {
            Plan::Nothing => return None,
            Plan::Done {
                line,
                outcome,
                error,
            } => RowResult {
                line,
                outcome,
                caption: None,
                error,
            },
            Plan::Caption(mut job) => {
                let start = Instant::now();
                let caption = self.caption(engine, &mut job, images, on_text).await;
                self.model_seconds += start.elapsed().as_secs_f64();
                self.model_rows += 1;
                match caption {
                    Ok((text, tokens)) => {
                        self.progress.tokens += tokens as u64;
                        RowResult {
                            line: job.finish(Ok(&text), &self.options),
                            outcome: Outcome::Captioned,
                            caption: Some(text),
                            error: None,
                        }
                    }
                    Err(message) => RowResult {
                        line: job.finish(Err(&message), &self.options),
                        outcome: Outcome::Failed,
                        caption: None,
                        error: Some(message),
                    },
                }
            }
        };
        self.progress.rows_done += 1;
        self.count(result.outcome);
        Some(result)
    }

    /// Reads a row's images and captions them together: the caption and its token count, or a
    /// message for the row's error field.
    async fn caption<S: ImageSource>(
        &self,
        engine: &Engine,
        job: &mut Job,
        source: &mut S,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<(String, usize), String> {
        let paths = job.paths().to_vec();
        let mut processed = Vec::with_capacity(paths.len());
        // One file's bytes at a time, let go once it is decoded.
        for path in &paths {
            let bytes = source.read(path).await?;
            let (image, by_browser) =
                preprocess_or_fall_back(engine, bytes, self.request.longest_edge, source)
                    .await
                    // The row's error names the path instead of the generic "image: ".
                    .map_err(|reason| format!("image '{path}': {reason}"))?;
            if by_browser {
                job.decoded_by_browser(path);
            }
            processed.push(image);
        }
        let prompt = if self.default_prompt && paths.len() > 1 {
            DEFAULT_PROMPT_MANY
        } else {
            &self.request.prompt
        };
        let generation = engine
            .caption_processed(
                &processed,
                self.request.system.as_deref(),
                prompt,
                &self.request.sampling,
                on_text,
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok((generation.text, generation.tokens.len()))
    }
}
