// The engine's home: a module Web Worker running the wasm build, so the page never freezes.
// Messages in: load, caption, chat, rows, cancel, set-captions, pending-lines. Messages out
// carry the request's id.

import { loadEngine } from './engine.js';
import { fromFiles, fromUrl } from './model-store.js';

let engine = null;
// The exports of the build `engine` came from (engine.js picks it by device), or null.
let pkg = null;
/** The build the loaded engine runs on, else the plain one: for work that needs no model. */
const anyBuild = async () => pkg ?? (await loadEngine()).pkg;
let cancelled = false;

const post = (message) => self.postMessage(message);

self.onmessage = async ({ data: msg }) => {
  try {
    switch (msg.type) {
      case 'load':
        return await load(msg);
      case 'caption':
        return await caption(msg);
      case 'chat':
        return await chat(msg);
      case 'rows':
        return await rows(msg);
      case 'set-captions':
        return await setCaptions(msg);
      case 'pending-lines':
        return await pendingLines(msg);
      case 'cancel':
        cancelled = true;
        engine?.cancel();
        return;
      default:
        throw new Error(`unknown message type ${msg.type}`);
    }
  } catch (e) {
    post({ type: 'error', id: msg.id, message: String(e?.message ?? e) });
  }
};

/**
 * The device to run on: WebGPU when the browser has a GPU adapter, else the CPU (with why).
 * A fallback adapter is a GPU emulated in software (SwiftShader): asked for `auto`, the CPU
 * runs instead, because there the wasm CPU path decodes about 80 times faster (BENCHMARKS.md,
 * "In the browser"). Asking for `webgpu` still gets it.
 */
async function pickDevice(wanted) {
  if (wanted === 'cpu') return { device: 'cpu', note: '' };
  const adapter = self.navigator.gpu ? await self.navigator.gpu.requestAdapter() : null;
  const software = adapter?.info?.isFallbackAdapter === true;
  if (adapter && (!software || wanted === 'webgpu')) return { device: 'webgpu', note: '' };
  if (software) {
    return { device: 'cpu', note: 'the only WebGPU adapter is a software one: running on the CPU, which is faster there' };
  }
  const why = self.navigator.gpu
    ? 'this browser offers WebGPU but found no usable GPU adapter'
    : 'this browser has no WebGPU';
  if (wanted === 'webgpu') throw new Error(`${why}; choose the CPU instead (slower, but it works)`);
  return { device: 'cpu', note: `${why}: running on the CPU (slower)` };
}

async function load({ id, source, device, precision }) {
  const progress = (p) => post({ type: 'progress', id, progress: p });
  let files;
  let fromCache = false;
  if (source.url) {
    ({ files, fromCache } = await fromUrl(source.url, progress));
  } else {
    files = await fromFiles(source.files);
  }
  const chosen = await pickDevice(device ?? 'auto');
  const build = await loadEngine({ cpu: chosen.device === 'cpu' });
  progress({ phase: 'building' });
  engine?.free();
  engine = null;
  pkg = build.pkg;
  engine = await pkg.Captioner.load(
    files.map((f) => [f.name, f.bytes]),
    chosen.device,
    precision ?? 'auto',
  );
  post({
    type: 'result',
    id,
    value: {
      device: chosen.device,
      note: chosen.note,
      // Threads only matter on the CPU.
      threads: chosen.device === 'cpu' ? build.threads : null,
      threadNote: chosen.device === 'cpu' ? build.note : '',
      fromCache,
      acceptsImages: engine.acceptsImages,
      precision: precision ?? 'auto',
    },
  });
}

function requireEngine() {
  if (!engine) throw new Error('no model loaded');
  return engine;
}

async function caption({ id, images, options }) {
  const e = requireEngine();
  cancelled = false;
  const bytes = [];
  for (const image of images) bytes.push(new Uint8Array(await new Blob([image]).arrayBuffer()));
  const text = await e.caption(bytes, options ?? {}, (piece) =>
    post({ type: 'token', id, text: piece }),
  );
  post({ type: 'result', id, value: text });
}

async function chat({ id, prompt, options }) {
  const e = requireEngine();
  cancelled = false;
  const text = await e.chat(prompt, options ?? {}, (piece) => post({ type: 'token', id, text: piece }));
  post({ type: 'result', id, value: text });
}

/** Normalises a row's path or a picked file's relative path for matching. */
function normalisePath(path) {
  return path.replace(/\\/g, '/').replace(/^(\.\/)+/, '').replace(/^\/+/, '');
}

/**
 * Finds picked files by a row's path: the exact relative path, then the path without the picked
 * folder's own name, then the file name when only one picked file has it.
 */
function fileFinder(entries) {
  const byPath = new Map();
  const byName = new Map();
  for (const [path, file] of entries) {
    const p = normalisePath(path);
    byPath.set(p, file);
    const inner = p.includes('/') ? p.slice(p.indexOf('/') + 1) : null;
    if (inner && !byPath.has(inner)) byPath.set(inner, file);
    const name = p.split('/').pop();
    byName.set(name, byName.has(name) ? null : file);
  }
  return async (path) => {
    const p = normalisePath(path);
    const file = byPath.get(p) ?? byName.get(p.split('/').pop());
    if (file === null) {
      throw `image '${path}' matches several picked files by name; give its folder in the path`;
    }
    if (!file) throw `image '${path}' not found among the picked files`;
    return new Uint8Array(await file.arrayBuffer());
  };
}

/**
 * Captions JSONL lines from `start` (earlier lines were done by an interrupted run), posting
 * one `row` message per output line, then `result` with the final progress.
 */
async function rows({ id, lines, files, options, start = 0, resumedRows = 0 }) {
  const e = requireEngine();
  cancelled = false;
  const run = new pkg.Rows(options ?? {});
  run.setTotal(lines.filter((l) => l.trim() !== '').length);
  run.resume(start, resumedRows);
  const readImage = fileFinder(files);
  for (let index = start; index < lines.length; index++) {
    // Let queued messages (a cancel) in between rows, whatever the backend.
    await new Promise((resolve) => setTimeout(resolve, 0));
    if (cancelled) {
      post({ type: 'result', id, value: { stopped: true, next: index, progress: run.progress() } });
      run.free();
      return;
    }
    const onToken = (piece) => post({ type: 'token', id, index, text: piece });
    const result = await run.nextLine(e, lines[index], readImage, onToken);
    post({ type: 'row', id, index, result, progress: run.progress() });
  }
  post({ type: 'result', id, value: { stopped: false, next: lines.length, progress: run.progress() } });
  run.free();
}

/** Output lines with hand-edited captions: `[{line, caption}]` to lines. */
async function setCaptions({ id, edits, captionKey, errorKey }) {
  const build = await anyBuild();
  const value = edits.map(({ line, caption }) =>
    build.setCaption(line, caption, captionKey ?? 'caption', errorKey ?? 'error'),
  );
  post({ type: 'result', id, value });
}

/** Output lines for lines a run has not reached: `[{index, line}]` to lines (or null when
 * the line still needs a caption). */
async function pendingLines({ id, lines, options }) {
  const build = await anyBuild();
  const value = lines.map(({ index, line }) => build.outputWithoutModel(line, index + 1, options ?? {}) ?? null);
  post({ type: 'result', id, value });
}
