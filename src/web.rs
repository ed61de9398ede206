//! The browser binding (wasm-bindgen), meant to run in a Web Worker: load a model from its
//! files, caption images, and run JSONL rows with the same row logic as the native program.
//!
//! WebGPU cannot block, so everything that reads from the GPU returns a promise. JS hands in
//! bytes (`Uint8Array`) and functions; nothing here touches the DOM or the network.

use crate::caption_run::{preprocess_or_fall_back, CaptionRun, ImageSource};
use crate::engine::{Engine, Request};
use crate::files::ModelFiles;
use crate::generate::{Flow, SamplingOptions};
use crate::rows::{plan, Line, Outcome, Plan, Row, RowOptions};
use crate::weights::Precision;
use burn_tensor::Device;
use image::RgbImage;
use js_sys::{Array, Function, Promise, Reflect, Uint8Array};
use serde::Deserialize;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, JsFuture};

#[wasm_bindgen(start)]
pub fn start() {
    // The static constructors (cubecl registers some 4,900 IR dialect and WGSL items through
    // `inventory`) run here, once. A module that never calls them itself is linked by wasm-ld
    // as a command, whose every export runs them all on entry: every call from JS, down to the
    // ones wasm-bindgen's glue makes for each JS object handed in, hundreds per WebGPU decode
    // step: the worker was busy 60 % of a WebGPU decode with it, 1.5 % without, and the tiny
    // model's WebGPU decode runs twice as fast (BENCHMARKS.md, "Constructors once").
    // tests/browser/module.test.mjs checks the link.
    unsafe extern "C" {
        fn __wasm_call_ctors();
    }
    // SAFETY: the linker's function that runs the constructors, which are `inventory`
    // registrations (idempotent by design); called once per instance, from its start.
    unsafe { __wasm_call_ctors() };
    console_error_panic_hook::set_once();
}

/// Starts `threads` Web Workers for the CPU kernel (threaded build only; see
/// [`crate::workers`]). Call it once and wait for it before loading a model; the page must be
/// cross-origin isolated, since the workers share this module's memory.
#[cfg(feature = "threads")]
#[wasm_bindgen(js_name = initThreads)]
pub async fn init_threads(threads: usize) -> Result<(), JsValue> {
    JsFuture::from(wasm_bindgen_rayon::init_thread_pool(threads)).await?;
    crate::workers::POOL_THREADS.store(threads, std::sync::atomic::Ordering::SeqCst);
    Ok(())
}

/// How many threads the CPU kernel runs on: the caller and its helpers (1 in the build
/// without threads). The helpers are fixed the first time the kernel or this asks for them,
/// so in the threaded build call it after [`init_threads`] has resolved.
#[wasm_bindgen(js_name = kernelThreads)]
pub fn kernel_threads() -> usize {
    crate::workers::threads()
}

#[cfg(feature = "webgpu")]
thread_local! {
    /// burn registers the WebGPU runtime once per page (worker); later models reuse it.
    static WEBGPU: RefCell<Option<Device>> = const { RefCell::new(None) };
}

/// Settings from JS: camelCase, each optional; the defaults are the native program's.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
struct Settings {
    prompt: Option<String>,
    system: Option<String>,
    max_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    seed: Option<u64>,
    longest_edge: Option<u32>,
    image_key: Option<String>,
    caption_key: Option<String>,
    error_key: Option<String>,
    max_images: Option<usize>,
    overwrite: Option<bool>,
}

impl Settings {
    fn from_js(value: JsValue) -> Result<Self, JsValue> {
        if value.is_undefined() || value.is_null() {
            return Ok(Self::default());
        }
        serde_wasm_bindgen::from_value(value).map_err(|e| js_error(format!("options: {e}")))
    }

    fn request(&self) -> Result<Request, JsValue> {
        let defaults = SamplingOptions::default();
        let request = Request {
            prompt: self
                .prompt
                .clone()
                .filter(|p| !p.trim().is_empty())
                .unwrap_or_else(|| crate::DEFAULT_PROMPT.to_string()),
            system: self.system.clone().filter(|s| !s.trim().is_empty()),
            sampling: SamplingOptions {
                max_new_tokens: self.max_tokens.unwrap_or(defaults.max_new_tokens),
                temperature: self.temperature.unwrap_or(defaults.temperature),
                top_p: self.top_p.unwrap_or(defaults.top_p),
                top_k: self.top_k.unwrap_or(defaults.top_k),
                seed: self.seed.unwrap_or(defaults.seed),
            },
            longest_edge: self.longest_edge,
        };
        request.sampling.validate().map_err(js_error)?;
        Ok(request)
    }

    fn row_options(&self) -> Result<RowOptions, JsValue> {
        let d = RowOptions::default();
        let options = RowOptions {
            image_key: self.image_key.clone().unwrap_or(d.image_key),
            caption_key: self.caption_key.clone().unwrap_or(d.caption_key),
            error_key: self.error_key.clone().unwrap_or(d.error_key),
            max_images: self.max_images.unwrap_or(d.max_images),
            overwrite: self.overwrite.unwrap_or(d.overwrite),
        };
        options.validate().map_err(js_error)?;
        Ok(options)
    }
}

fn js_error(e: impl std::fmt::Display) -> JsValue {
    JsError::new(&e.to_string()).into()
}

/// The text of a thrown JS value: an Error's message, a string, or its debug form.
fn js_message(value: &JsValue) -> String {
    if let Some(s) = value.as_string() {
        return s;
    }
    Reflect::get(value, &JsValue::from_str("message"))
        .ok()
        .and_then(|m| m.as_string())
        .unwrap_or_else(|| format!("{value:?}"))
}

/// The bytes of a `Uint8Array` (copied once, into wasm memory) or of an `ArrayBuffer`.
/// (`new Uint8Array(array)` would first copy a typed array inside JS: a whole model, twice.)
fn bytes_of(value: &JsValue) -> Vec<u8> {
    match value.dyn_ref::<Uint8Array>() {
        Some(array) => array.to_vec(),
        None => Uint8Array::new(value).to_vec(),
    }
}

fn to_js<T: serde::Serialize>(value: &T) -> Result<JsValue, JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(js_error)
}

/// Calls `on_token` with each piece of text and stops when the run is cancelled.
fn text_callback(on_token: Option<Function>, cancel: Rc<Cell<bool>>) -> impl FnMut(&str) -> Flow {
    move |piece: &str| {
        if let Some(f) = &on_token {
            // A throwing callback is the page's problem, not a reason to lose the caption.
            let _ = f.call1(&JsValue::NULL, &JsValue::from_str(piece));
        }
        if cancel.get() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }
}

/// A loaded model.
#[wasm_bindgen]
pub struct Captioner {
    engine: Rc<Engine>,
    cancel: Rc<Cell<bool>>,
    device: String,
}

#[wasm_bindgen]
impl Captioner {
    /// Builds a model from its files, `[[name, Uint8Array], ...]` (the published folder's
    /// files, or one `.gguf`), on `device`: `"webgpu"` or `"cpu"`. `precision` says how to
    /// hold the weights: `"auto"` (as the files have them; the default), `"f32"`, `"q8_0"`,
    /// `"q4_0"` or `"mixed"` (a safetensors folder is quantized as it loads).
    pub async fn load(
        files: Array,
        device: String,
        precision: Option<String>,
    ) -> Result<Captioner, JsValue> {
        let precision: Precision = precision
            .as_deref()
            .unwrap_or("auto")
            .parse()
            .map_err(js_error)?;
        let named = named_files(files)?;
        let burn_device = burn_device(&device).await?;
        let model = ModelFiles::from_named(named).map_err(js_error)?;
        let engine = Engine::load_with(model, &burn_device, precision).map_err(js_error)?;
        Ok(Captioner {
            engine: Rc::new(engine),
            cancel: Rc::new(Cell::new(false)),
            device,
        })
    }

    /// `"webgpu"` or `"cpu"`.
    #[wasm_bindgen(getter)]
    pub fn device(&self) -> String {
        self.device.clone()
    }

    /// How the weights are held, as the device took the asked-for precision: `"auto (q8_0)"`
    /// on WebGPU for `"auto"`, else the name asked for.
    #[wasm_bindgen(getter)]
    pub fn precision(&self) -> String {
        self.engine.precision().name()
    }

    /// The bytes the GPU allocator holds for this model (weights and live activations), or
    /// `undefined` on the CPU.
    #[wasm_bindgen(getter, js_name = gpuBytes)]
    pub fn gpu_bytes(&self) -> Option<f64> {
        self.engine.gpu_bytes_in_use().map(|b| b as f64)
    }

    /// Whether the model takes images (a VLM) or only text.
    #[wasm_bindgen(getter, js_name = acceptsImages)]
    pub fn accepts_images(&self) -> bool {
        self.engine.accepts_images()
    }

    /// Captions the images (`Uint8Array`s of encoded files) shown together in one prompt;
    /// resolves to `{text, decodedByBrowser}`: the caption, and the indexes (from 0) of the
    /// images in a format the engine does not read that `decodeImage(bytes)` decoded instead
    /// (the browser's decoders; see [`Rows::next_line`]). `onToken(text)` sees the caption as
    /// it is generated.
    pub fn caption(
        &self,
        images: Array,
        options: JsValue,
        on_token: Option<Function>,
        decode_image: Option<Function>,
    ) -> Promise {
        let engine = self.engine.clone();
        let cancel = self.cancel.clone();
        cancel.set(false);
        future_to_promise(async move {
            let request = Settings::from_js(options)?.request()?;
            if images.length() == 0 {
                return Err(js_error("no image to caption"));
            }
            if !engine.accepts_images() {
                return Err(js_error(Engine::text_only()));
            }
            let mut source = JsImages {
                read: None,
                decode: decode_image,
            };
            let many = images.length() > 1;
            let mut processed = Vec::with_capacity(images.length() as usize);
            let mut decoded_by_browser = Vec::new();
            // One file's bytes at a time, let go once it is decoded.
            for (index, value) in images.iter().enumerate() {
                let (image, by_browser) = preprocess_or_fall_back(
                    &engine,
                    bytes_of(&value),
                    request.longest_edge,
                    &mut source,
                )
                .await
                .map_err(|reason| {
                    let which = if many {
                        format!(" {}", index + 1)
                    } else {
                        String::new()
                    };
                    js_error(format!("image{which}: {reason}"))
                })?;
                if by_browser {
                    decoded_by_browser.push(index);
                }
                processed.push(image);
            }
            let mut on_text = text_callback(on_token, cancel);
            let generation = engine
                .caption_processed(
                    &processed,
                    request.system.as_deref(),
                    &request.prompt,
                    &request.sampling,
                    &mut on_text,
                )
                .await
                .map_err(js_error)?;
            to_js(&Caption {
                text: generation.text,
                decoded_by_browser,
            })
        })
    }

    /// Answers `prompt` with the text model alone, no image, through the chat template;
    /// resolves to the answer. `options` as for [`Captioner::caption`] (its `prompt` is
    /// ignored); `onToken(text)` sees the answer as it is generated.
    pub fn chat(&self, prompt: String, options: JsValue, on_token: Option<Function>) -> Promise {
        let engine = self.engine.clone();
        let cancel = self.cancel.clone();
        cancel.set(false);
        future_to_promise(async move {
            if prompt.trim().is_empty() {
                return Err(js_error("the prompt is empty"));
            }
            let request = Request {
                prompt,
                ..Settings::from_js(options)?.request()?
            };
            let mut on_text = text_callback(on_token, cancel);
            let generation = engine
                .chat_async(&request, &mut on_text)
                .await
                .map_err(js_error)?;
            Ok(JsValue::from_str(&generation.text))
        })
    }

    /// Stops the caption (or answer) being generated by [`Captioner::caption`] or
    /// [`Captioner::chat`]; it resolves with the text so far.
    pub fn cancel(&self) {
        self.cancel.set(true);
    }
}

/// A published model folder made into the GGUF pair `captioner quantize --type <precision>
/// --name <stem>` writes, byte for byte, while its safetensors download: the page keeps this
/// pack in its cache instead of the larger original, and never holds the whole original.
///
/// `new PackStream([[name, Uint8Array], ...] text files, precision, stem)`, then for each
/// weights file `push(bytes)` each piece as it arrives and `endFile()` after its last, then
/// `finish()`: `[[stem-Q8_0.gguf, bytes], [mmproj-stem-Q8_0.gguf, bytes]]` (no mmproj for a
/// text model).
#[wasm_bindgen(js_name = PackStream)]
pub struct WebPackStream {
    stream: Option<crate::convert::PackStream>,
    names: (String, String),
}

#[wasm_bindgen(js_class = PackStream)]
impl WebPackStream {
    #[wasm_bindgen(constructor)]
    pub fn new(files: Array, precision: String, stem: String) -> Result<WebPackStream, JsValue> {
        let precision: Precision = precision.parse().map_err(js_error)?;
        if matches!(precision, Precision::Auto | Precision::Packed) {
            return Err(js_error(
                "a pack needs a precision: f32, q8_0, q4_0 or mixed",
            ));
        }
        let model = ModelFiles::folder_texts(named_files(files)?).map_err(js_error)?;
        let stream =
            crate::convert::PackStream::new(&model, precision, false, &stem).map_err(js_error)?;
        Ok(Self {
            stream: Some(stream),
            names: crate::convert::pair_names(&stem, precision),
        })
    }

    /// The next bytes of the weights file being downloaded.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), JsValue> {
        self.stream()?.push(bytes).map_err(js_error)
    }

    /// The weights file being downloaded has ended.
    #[wasm_bindgen(js_name = endFile)]
    pub fn end_file(&mut self) -> Result<(), JsValue> {
        self.stream()?.end_file().map_err(js_error)
    }

    /// The pair's files, once every weights file has ended.
    pub fn finish(&mut self) -> Result<Array, JsValue> {
        let stream = self
            .stream
            .take()
            .ok_or_else(|| js_error("the pack is already finished"))?;
        let pair = stream.finish().map_err(js_error)?;
        let out = Array::new();
        let entry = |name: &str, bytes: Vec<u8>| {
            let bytes = Uint8Array::from(bytes.as_slice());
            Array::of2(&JsValue::from_str(name), &bytes)
        };
        out.push(&entry(&self.names.0, pair.text));
        if let Some(mmproj) = pair.mmproj {
            out.push(&entry(&self.names.1, mmproj));
        }
        Ok(out)
    }

    fn stream(&mut self) -> Result<&mut crate::convert::PackStream, JsValue> {
        self.stream
            .as_mut()
            .ok_or_else(|| js_error("the pack is already finished"))
    }
}

/// `[[name, Uint8Array], ...]` as names and bytes (the array is dropped as it is read).
fn named_files(files: Array) -> Result<Vec<(String, Vec<u8>)>, JsValue> {
    let mut named = Vec::new();
    for pair in files.iter() {
        let pair: Array = pair
            .dyn_into()
            .map_err(|_| js_error("each file must be a [name, bytes] pair"))?;
        let name = pair
            .get(0)
            .as_string()
            .ok_or_else(|| js_error("a file name must be a string"))?;
        named.push((name, bytes_of(&pair.get(1))));
    }
    Ok(named)
}

async fn burn_device(device: &str) -> Result<Device, JsValue> {
    match device {
        #[cfg(feature = "webgpu")]
        "webgpu" => webgpu_device().await,
        #[cfg(not(feature = "webgpu"))]
        "webgpu" => Err(js_error(
            "this build of the engine has no WebGPU (the threaded CPU build): use device 'cpu'",
        )),
        "cpu" => Ok(Device::flex()),
        other => Err(js_error(format!(
            "unknown device '{other}': use 'webgpu' or 'cpu'"
        ))),
    }
}

/// Benchmark settings from JS (`www/bench.js`); absent ones take `bench::Options`' defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
struct BenchSettings {
    runs: Option<usize>,
    warmup: Option<usize>,
    prefill_tokens: Option<usize>,
    contexts: Option<Vec<usize>>,
    decode_tokens: Option<usize>,
    /// How decode picks tokens (0: greedy), as `captioner bench --temperature --top-p`.
    temperature: Option<f32>,
    top_p: Option<f32>,
    caption_tokens: Option<usize>,
    /// Pixels, or 0 for the processor's own setting (as `captioner bench --longest-edge 0`).
    longest_edge: Option<u32>,
    /// `"smolvlm-256m"` or `"smolvlm-500m"`: random weights with those shapes, the tokenizer
    /// from `files`.
    synthetic: Option<String>,
}

/// Measures a model the way `captioner bench` does (see `crate::bench`) and resolves to its
/// report. `files` as for [`Captioner::load`]; `image` an encoded image (default: a generated
/// 1024x768 one, as natively); `precision` as there,
/// or for a synthetic model the form it is built in (`"f32"`, `"q8_0"`, `"q4_0"`, `"mixed"`).
#[wasm_bindgen]
pub async fn bench(
    files: Array,
    device: String,
    precision: String,
    image: Option<Uint8Array>,
    settings: JsValue,
) -> Result<JsValue, JsValue> {
    let settings: BenchSettings = if settings.is_undefined() || settings.is_null() {
        BenchSettings::default()
    } else {
        serde_wasm_bindgen::from_value(settings).map_err(|e| js_error(format!("options: {e}")))?
    };
    let d = crate::bench::Options::default();
    let options = crate::bench::Options {
        runs: settings.runs.unwrap_or(d.runs),
        warmup: settings.warmup.unwrap_or(d.warmup),
        prefill_tokens: settings.prefill_tokens.unwrap_or(d.prefill_tokens),
        contexts: settings.contexts.unwrap_or(d.contexts),
        decode_tokens: settings.decode_tokens.unwrap_or(d.decode_tokens),
        temperature: settings.temperature.unwrap_or(d.temperature),
        top_p: settings.top_p.unwrap_or(d.top_p),
        caption_tokens: settings.caption_tokens.unwrap_or(d.caption_tokens),
        longest_edge: settings
            .longest_edge
            .map_or(d.longest_edge, crate::bench::Options::longest_edge_from),
    };
    let precision = precision
        .parse::<Precision>()
        .map_err(js_error)?
        .on(device == "webgpu");
    let image = match image {
        Some(bytes) => bytes.to_vec(),
        None => crate::bench::test_image(1024, 768).map_err(js_error)?,
    };
    let files = ModelFiles::from_named(named_files(files)?).map_err(js_error)?;
    let device_handle = burn_device(&device).await?;
    let (name, files, precision) = match &settings.synthetic {
        Some(shape) => {
            let shape = crate::bench::Shape::published(shape)
                .ok_or_else(|| js_error(format!("unknown synthetic shape '{shape}'")))?;
            let (files, precision) =
                crate::bench::synthetic_model(&shape, files, precision, 42).map_err(js_error)?;
            (format!("synthetic {}", shape.name), files, precision)
        }
        None => ("model".to_string(), files, precision),
    };
    let mut report = crate::bench::run(&name, files, &device_handle, precision, &image, &options)
        .await
        .map_err(js_error)?;
    report.precision = precision.name();
    to_js(&report)
}

#[cfg(feature = "webgpu")]
async fn webgpu_device() -> Result<Device, JsValue> {
    if let Some(device) = WEBGPU.with(|d| d.borrow().clone()) {
        return Ok(device);
    }
    let device = Device::wgpu_options()
        .init_async()
        .await
        .map_err(|e| js_error(format!("WebGPU could not start: {e}")))?;
    WEBGPU.with(|d| *d.borrow_mut() = Some(device.clone()));
    Ok(device)
}

/// What [`Captioner::caption`] resolves to.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Caption {
    text: String,
    /// The images the browser decoded, by their index among those given.
    decoded_by_browser: Vec<usize>,
}

/// Images read through a JS function `readImage(path) -> Promise<Uint8Array>`, and, for a
/// format the engine does not read, decoded by `decodeImage(bytes) -> Promise<{width, height,
/// rgba}>` (the browser's decoders) when one is given.
struct JsImages {
    /// None where the images come as bytes (a caption's).
    read: Option<Function>,
    decode: Option<Function>,
}

impl ImageSource for JsImages {
    async fn read(&mut self, path: &str) -> Result<Vec<u8>, String> {
        let read = self.read.as_ref().ok_or("no readImage to read it with")?;
        Ok(bytes_of(
            &call_awaited(read, &JsValue::from_str(path)).await?,
        ))
    }

    async fn decode_unsupported(&mut self, bytes: &[u8]) -> Option<Result<RgbImage, String>> {
        let decode = self.decode.as_ref()?;
        Some(decode_in_js(decode, bytes).await)
    }
}

/// `f(arg)`, awaited when it returns a promise; what it throws or rejects with, as text.
async fn call_awaited(f: &Function, arg: &JsValue) -> Result<JsValue, String> {
    let pending = f.call1(&JsValue::NULL, arg).map_err(|e| js_message(&e))?;
    JsFuture::from(Promise::resolve(&pending))
        .await
        .map_err(|e| js_message(&e))
}

/// Calls `decodeImage(bytes)`: its `{width, height, rgba}` (RGBA samples, alpha not
/// premultiplied) as RGB.
async fn decode_in_js(decode: &Function, bytes: &[u8]) -> Result<RgbImage, String> {
    let value = call_awaited(decode, &Uint8Array::from(bytes)).await?;
    let field = |name: &str| Reflect::get(&value, &JsValue::from_str(name)).ok();
    let side = |name: &str| {
        field(name)
            .and_then(|v| v.as_f64())
            .filter(|v| v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(v))
            .map(|v| v as u32)
            .ok_or_else(|| format!("decodeImage gave no {name}"))
    };
    let (width, height) = (side("width")?, side("height")?);
    let rgba = field("rgba")
        .filter(JsValue::is_object)
        .map(|v| bytes_of(&v))
        .ok_or("decodeImage gave no rgba")?;
    crate::preprocess::rgb_from_rgba(width, height, rgba).map_err(|e| e.to_string())
}

/// A line from JS: its text, or its raw bytes (a `Uint8Array`; the page reads a JSONL file as
/// bytes so that a line which is not UTF-8 becomes the error row the native program writes).
fn line_of(value: &JsValue, line_no: usize) -> Line {
    match value.as_string() {
        Some(text) => Line::parse(&text, line_no),
        None => Line::from_bytes(&bytes_of(value), line_no),
    }
}

/// A run over JSONL rows: lines in, output lines out, with progress.
#[wasm_bindgen]
pub struct Rows {
    batch: Rc<RefCell<CaptionRun>>,
}

#[wasm_bindgen]
impl Rows {
    /// `options`: the caption settings plus `imageKey`, `captionKey`, `errorKey`, `maxImages`,
    /// `overwrite`.
    #[wasm_bindgen(constructor)]
    pub fn new(options: JsValue) -> Result<Rows, JsValue> {
        let settings = Settings::from_js(options)?;
        let batch = CaptionRun::new(settings.row_options()?, settings.request()?);
        Ok(Rows {
            batch: Rc::new(RefCell::new(batch)),
        })
    }

    /// The number of rows in the input, for the time left.
    #[wasm_bindgen(js_name = setTotal)]
    pub fn set_total(&self, rows: usize) -> Result<(), JsValue> {
        self.idle()?.set_total(Some(rows));
        Ok(())
    }

    /// Counts a row that an earlier run of this input finished with `outcome` (`"captioned"`,
    /// `"skipped"` or `"failed"`), for a resumed run.
    #[wasm_bindgen(js_name = countEarlier)]
    pub fn count_earlier(&self, outcome: JsValue) -> Result<(), JsValue> {
        let outcome: Outcome = serde_wasm_bindgen::from_value(outcome)
            .map_err(|e| js_error(format!("outcome: {e}")))?;
        self.idle()?.count_earlier(outcome);
        Ok(())
    }

    /// Processes line `line_no` (1-based) of the JSONL input, given as text or as its bytes.
    /// Resolves to `null` for a blank line, else `{line, outcome, caption, error}` where `line`
    /// is the output row's JSON. `readImage(path)` gives an image's bytes; `decodeImage(bytes)`,
    /// when given, decodes what the engine does not read (see [`JsImages`]), and the row then
    /// says so in its `decoded_by_browser` field.
    #[wasm_bindgen(js_name = nextLine)]
    pub fn next_line(
        &self,
        captioner: &Captioner,
        line: JsValue,
        line_no: usize,
        read_image: Function,
        on_token: Option<Function>,
        decode_image: Option<Function>,
    ) -> Promise {
        let engine = captioner.engine.clone();
        // A row is never cut short (a half caption would pass for a whole one): runs stop
        // between rows, which is the caller's loop.
        let cancel = Rc::new(Cell::new(false));
        let batch = self.batch.clone();
        let line = line_of(&line, line_no);
        // The mutable borrow, held across the row's awaits, is the one-row-at-a-time lock: a
        // second call while a row runs gets an error instead of a second run on the same state.
        #[allow(clippy::await_holding_refcell_ref)]
        future_to_promise(async move {
            let mut batch = batch.try_borrow_mut().map_err(|_| busy())?;
            let mut images = JsImages {
                read: Some(read_image),
                decode: decode_image,
            };
            let mut on_text = text_callback(on_token, cancel);
            let result = batch.next(&engine, line, &mut images, &mut on_text).await;
            match result {
                None => Ok(JsValue::NULL),
                Some(row) => to_js(&row),
            }
        })
    }

    /// Counts so far: `{rowsDone, rowsTotal, captioned, skipped, failed, tokens,
    /// elapsedSeconds, tokensPerSecond, etaSeconds}`.
    pub fn progress(&self) -> Result<JsValue, JsValue> {
        to_js(&self.batch.try_borrow().map_err(|_| busy())?.progress())
    }

    fn idle(&self) -> Result<std::cell::RefMut<'_, CaptionRun>, JsValue> {
        self.batch.try_borrow_mut().map_err(|_| busy())
    }
}

fn busy() -> JsValue {
    js_error("a row is running: await the previous nextLine first")
}

/// An output line with its caption replaced by `caption` (a caption edited by hand) and its
/// error field removed; every other field stays byte for byte.
#[wasm_bindgen(js_name = setCaption)]
pub fn set_caption(
    line: &str,
    caption: &str,
    caption_key: &str,
    error_key: &str,
) -> Result<String, JsValue> {
    let mut row: Row =
        serde_json::from_str(line).map_err(|e| js_error(format!("not a row: {e}")))?;
    row.set(caption_key, &serde_json::Value::String(caption.to_string()));
    row.remove(error_key);
    Ok(row.to_json())
}

/// The output a line gets without the model (a malformed line, a row that already has a
/// caption, a row whose image field is unusable), or `undefined` when it needs a caption. A
/// download in the middle of a run uses it for the lines not reached yet.
#[wasm_bindgen(js_name = outputWithoutModel)]
pub fn output_without_model(
    line: JsValue,
    line_no: usize,
    options: JsValue,
) -> Result<Option<String>, JsValue> {
    let settings = Settings::from_js(options)?;
    match plan(line_of(&line, line_no), &settings.row_options()?) {
        Plan::Done { line, .. } => Ok(Some(line)),
        _ => Ok(None),
    }
}
