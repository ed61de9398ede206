// Captioner's embedding API: caption images in the browser, privately, from another web app.
//
//   import { Captioner, PRESETS } from './captioner.js';
//   const c = await Captioner.load({ modelUrl, onProgress });
//   const text = await c.caption(file, { maxTokens: 64, onToken: (t) => ... });
//   for await (const row of c.captionRows(rows, filesByPath, { ...PRESETS.dataflow })) { ... }
//   c.dispose();
//
// The engine runs in a Web Worker (the page never freezes); images never leave the machine.

import { DEFAULT_MODEL_URL } from './model-store.js';
import { jsonlLines } from './picked-files.js';

export { DEFAULT_MODEL_URL };

/**
 * Other tools' words, to spread into a call's options: `captionRows(rows, files,
 * { ...PRESETS.dataflow })` asks what DataFlow's ImageCaptionGenerate asked (its sampling,
 * temperature 0.7, top-p 0.9 and 512 new tokens, is the default). The engine's `Preset`
 * (src/engine.rs) holds the same words; a test keeps them equal.
 */
export const PRESETS = Object.freeze({
  dataflow: Object.freeze({
    system:
      'You are a image caption generator. Your task is to generate a concise and informative caption for the given image content.',
    prompt: 'Please provide a comprehensive description of the image.',
  }),
});

export class Captioner {
  #worker;
  #next = 1;
  #pending = new Map();

  /** The device the model runs on: `'webgpu'` or `'cpu'`. */
  device = null;
  /** Why that device (e.g. that WebGPU is missing). */
  deviceNote = '';
  /** Whether the model came from the browser's cache (no download). */
  fromCache = false;
  /** How the weights are held, e.g. `'auto (q8_0)'` (auto on WebGPU) or `'f32'`. */
  precision = null;
  /** The files loaded: `'original'` (the model's own) or a quantized pack's type (`'q8_0'`). */
  form = null;
  /** GPU memory the model holds after loading, in bytes (null on the CPU). */
  gpuBytes = null;
  /** The images the browser decoded in the last `caption` (indexes among those given). */
  lastDecodedByBrowser = [];

  constructor(worker) {
    this.#worker = worker;
    worker.onmessage = ({ data }) => this.#receive(data);
    worker.onerror = (event) => {
      const error = new Error(`the captioner worker failed: ${event.message ?? 'unknown error'}`);
      for (const p of this.#pending.values()) p.reject(error);
      this.#pending.clear();
    };
  }

  /**
   * Loads a model: `modelUrl` (a model folder's base URL; default SmolVLM-256M-Instruct on the
   * Hugging Face hub) or `files` (the folder's files, picked by the user). `device` is
   * `'webgpu'`, `'cpu'` or `'auto'` (WebGPU on a GPU; the CPU where WebGPU is missing or has
   * only a software adapter). `precision` is how the weights are held: `'auto'` (on WebGPU
   * Q8_0, and a model folder from a URL is kept in the browser's cache as its Q8_0 GGUF pack;
   * on the CPU as the files have them), `'f32'`, `'q8_0'`, `'q4_0'` or `'mixed'`; a
   * safetensors folder is quantized as it loads. `onProgress({phase, loaded, total,
   * bytesPerSecond, file})` reports the download: `phase: 'plan'` first, with its `total`
   * bytes where the server says, then `'download'`, `'packing'`, `'building'`.
   * `modelInWorkerUrl` (unbundled use only) starts the worker as `worker.js?model=<url>`, so the
   * server can allow the worker's downloads to reach that model's origin and no other (its
   * Content-Security-Policy; tools/serve.mjs does so for the page).
   */
  static async load({ modelUrl, files, device = 'auto', precision = 'auto', onProgress, modelInWorkerUrl = false } = {}) {
    const source = files ? { files: [...files] } : { url: modelUrl ?? DEFAULT_MODEL_URL };
    const worker = startWorker(modelInWorkerUrl ? source.url : null);
    const captioner = new Captioner(worker);
    try {
      const info = await captioner.#request({ type: 'load', source, device, precision }, { onProgress });
      captioner.device = info.device;
      captioner.deviceNote = info.note;
      captioner.threads = info.threads;
      captioner.threadNote = info.threadNote;
      captioner.fromCache = info.fromCache;
      captioner.precision = info.precision;
      captioner.form = info.form;
      captioner.gpuBytes = info.gpuBytes;
    } catch (e) {
      worker.terminate();
      throw e;
    }
    return captioner;
  }

  /**
   * Captions one image (a Blob or File), or several shown together; resolves to the caption.
   * Options: prompt, system, maxTokens, temperature, topP, topK, seed, longestEdge, onToken.
   * An image in a format the engine does not read (AVIF; HEIC in Safari) is decoded by the
   * browser; `lastDecodedByBrowser` then lists it (its index among the images given).
   */
  async caption(image, { onToken, ...options } = {}) {
    const images = Array.isArray(image) ? image : [image];
    const { text, decodedByBrowser } = await this.#request({ type: 'caption', images, options }, { onToken });
    this.lastDecodedByBrowser = decodedByBrowser;
    return text;
  }

  /**
   * Answers a text prompt with the model's text part alone (no image); resolves to the answer.
   * Options: as for caption (without prompt and longestEdge).
   */
  chat(prompt, { onToken, ...options } = {}) {
    return this.#request({ type: 'chat', prompt, options }, { onToken });
  }

  /**
   * Captions rows in DataFlow's conventions and yields the output rows in order: every field
   * kept, plus the caption (or `caption: null` and an error). `rows` is a JSONL file (a Blob,
   * its bytes, or its text) or an array of rows (objects, JSON lines, or a line's bytes);
   * `filesByPath` maps the rows' image paths to Files (a Map, an object, or an array of Files
   * whose relative paths or names are matched). Options: the caption options, plus imageKey,
   * captionKey, errorKey, maxImages, overwrite, and `onRow({index, line, outcome, caption,
   * error, progress})`, `onToken(text, index)`, and `done`: `[index, outcome]` pairs of lines
   * an earlier run finished, which are not run again (resuming).
   */
  async *captionRows(rows, filesByPath, options = {}) {
    const { onRow, onToken, done = [], ...settings } = options;
    const lines = await inputLines(rows);
    const files = fileEntries(filesByPath);
    const queue = [];
    let wake = null;
    let finished = false;
    let failure = null;
    const push = (item) => {
      queue.push(item);
      wake?.();
    };
    this.#request(
      { type: 'rows', lines, files, options: settings, done: [...done] },
      {
        onRow: (message) => push(message),
        onToken: (text, index) => onToken?.(text, index),
      },
    ).then(
      (summary) => {
        this.lastRun = summary;
        finished = true;
        wake?.();
      },
      (e) => {
        failure = e;
        wake?.();
      },
    );
    for (;;) {
      if (queue.length) {
        const { index, result, progress } = queue.shift();
        if (result === null) continue; // a blank line
        onRow?.({ index, ...result, progress });
        // (Numbers beyond a double's precision become doubles in the object; `onRow`'s
        // `line` keeps them exact.)
        yield JSON.parse(result.line);
        continue;
      }
      if (failure) throw failure;
      if (finished) return;
      await new Promise((resolve) => (wake = resolve));
      wake = null;
    }
  }

  /** Hand-edited captions written into output lines, every other field kept byte for byte. */
  setCaptions(edits, { captionKey, errorKey } = {}) {
    return this.#request({ type: 'set-captions', edits, captionKey, errorKey });
  }

  /**
   * The output lines that `[{index, line}]` (input lines and their indexes) get without the
   * model, or null for those that still need a caption.
   */
  outputsWithoutModel(lines, options = {}) {
    return this.#request({ type: 'pending-lines', lines, options });
  }

  /** Stops the caption being generated; a row run stops after its current row. */
  cancel() {
    this.#worker.postMessage({ type: 'cancel' });
  }

  /** Ends the worker, which frees the model and its GPU memory. */
  dispose() {
    this.#worker.terminate();
    const error = new Error('the captioner was disposed');
    for (const p of this.#pending.values()) p.reject(error);
    this.#pending.clear();
  }

  #request(message, handlers = {}) {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, ...handlers });
      this.#worker.postMessage({ ...message, id });
    });
  }

  #receive(message) {
    const pending = this.#pending.get(message.id);
    if (!pending) return;
    switch (message.type) {
      case 'progress':
        pending.onProgress?.(message.progress);
        break;
      case 'token':
        pending.onToken?.(message.text, message.index);
        break;
      case 'row':
        pending.onRow?.(message);
        break;
      case 'result':
        this.#pending.delete(message.id);
        pending.resolve(message.value);
        break;
      case 'error':
        this.#pending.delete(message.id);
        pending.reject(new Error(message.message));
        break;
    }
  }
}

/**
 * The engine's worker. Bundlers (Vite, webpack) find a worker, and bundle it with what it
 * imports, only when it is started in the literal form of the second return; a plain
 * `<script type="module">` loads the same file beside this module.
 */
function startWorker(modelUrl) {
  if (modelUrl) {
    // Not the literal form, on purpose: a bundler would copy worker.js without its imports
    // (and webpack, told to leave it alone, does not warn of an expression it cannot follow).
    const name = './worker.js';
    const script = new URL(/* webpackIgnore: true */ name, import.meta.url);
    script.searchParams.set('model', new URL(modelUrl, location.href).href);
    return new Worker(script, { type: 'module' });
  }
  return new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
}

/** The lines of `rows` (see `captionRows`): strings, or bytes for a line that is not UTF-8. */
async function inputLines(rows) {
  if (typeof rows === 'string') return rows.split('\n');
  if (rows instanceof Blob) return jsonlLines(new Uint8Array(await rows.arrayBuffer()));
  if (rows instanceof ArrayBuffer) return jsonlLines(new Uint8Array(rows));
  if (ArrayBuffer.isView(rows)) return jsonlLines(new Uint8Array(rows.buffer, rows.byteOffset, rows.byteLength));
  return [...rows].map((r) => (typeof r === 'string' || r instanceof Uint8Array ? r : JSON.stringify(r)));
}

/** `[[path, File]]` from a Map, a plain object, `[path, File]` pairs, or Files. */
function fileEntries(filesByPath) {
  if (!filesByPath) return [];
  if (filesByPath instanceof Map) return [...filesByPath.entries()];
  if (Array.isArray(filesByPath) || filesByPath instanceof FileList) {
    return [...filesByPath].map((f) =>
      Array.isArray(f) ? f : [f.webkitRelativePath || f.relativePath || f.name, f],
    );
  }
  return Object.entries(filesByPath);
}
