// The engine's home: a module Web Worker running the wasm build, so the page never freezes.
// Messages in: load, caption, chat, rows, cancel, set-captions, pending-lines. Messages out
// carry the request's id.

import { loadEngine, pickDevice } from './engine.js';
import { fromFiles, fromUrl, packType } from './model-store.js';
import { fileFinder, isBlank } from './picked-files.js';

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

async function load({ id, source, device, precision = 'auto' }) {
  const progress = (p) => post({ type: 'progress', id, progress: p });
  const chosen = await pickDevice(device ?? 'auto');
  const build = await loadEngine({ cpu: chosen.device === 'cpu' });
  let files;
  let fromCache = false;
  let form = 'original';
  if (source.url) {
    const type = packType(precision, chosen.device);
    // The engine's PackStream: the download is packed as it arrives.
    const begin = (texts, stem) => {
      const stream = new build.pkg.PackStream(texts.map((f) => [f.name, f.bytes]), type, stem);
      return {
        push: (bytes) => stream.push(bytes),
        endFile: () => stream.endFile(),
        finish: () => stream.finish().map(([name, bytes]) => ({ name, bytes })),
        free: () => stream.free(),
      };
    };
    ({ files, fromCache, form } = await fromUrl(source.url, progress, { pack: type && { type, begin } }));
  } else {
    files = await fromFiles(source.files);
  }
  progress({ phase: 'building' });
  engine?.free();
  engine = null;
  pkg = build.pkg;
  engine = await pkg.Captioner.load(
    files.map((f) => [f.name, f.bytes]),
    chosen.device,
    precision,
  );
  files = null;
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
      // What the files were: the model's own, or the quantized pack the cache keeps.
      form,
      acceptsImages: engine.acceptsImages,
      precision: engine.precision,
      gpuBytes: engine.gpuBytes ?? null,
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
  // `{text, decodedByBrowser}`: an image in a format the engine does not read is decoded by
  // the browser, as in a rows run.
  const value = await e.caption(bytes, options ?? {}, (piece) => post({ type: 'token', id, text: piece }), decodeInBrowser);
  post({ type: 'result', id, value });
}

async function chat({ id, prompt, options }) {
  const e = requireEngine();
  cancelled = false;
  const text = await e.chat(prompt, options ?? {}, (piece) => post({ type: 'token', id, text: piece }));
  post({ type: 'result', id, value: text });
}

/**
 * Captions JSONL lines (strings, or bytes where a line is not UTF-8), posting one `row` message
 * per output line, then `result` with the final progress. `done` lists `[index, outcome]` for
 * lines an earlier, interrupted run finished: they are not run again, and count as they came
 * out then.
 */
async function rows({ id, lines, files, options, done = [] }) {
  const e = requireEngine();
  cancelled = false;
  const run = new pkg.Rows(options ?? {});
  run.setTotal(lines.filter((line, i) => !isBlank(line, i)).length);
  const earlier = new Map(done);
  for (const outcome of earlier.values()) run.countEarlier(outcome);
  const find = fileFinder(files);
  const readImage = async (path) => new Uint8Array(await find(path).arrayBuffer());
  for (let index = 0; index < lines.length; index++) {
    if (earlier.has(index)) continue;
    // Let queued messages (a cancel) in between rows, whatever the backend.
    await new Promise((resolve) => setTimeout(resolve, 0));
    if (cancelled) {
      post({ type: 'result', id, value: { stopped: true, next: index, progress: run.progress() } });
      run.free();
      return;
    }
    const onToken = (piece) => post({ type: 'token', id, index, text: piece });
    const result = await run.nextLine(e, lines[index], index + 1, readImage, onToken, decodeInBrowser);
    post({ type: 'row', id, index, result, progress: run.progress() });
  }
  post({ type: 'result', id, value: { stopped: false, next: lines.length, progress: run.progress() } });
  run.free();
}

// The engine's own limit on an image's side (src/preprocess/decode.rs, MAX_SIDE).
const MAX_SIDE = 16384;

/**
 * The browser's decoders, for an image in a format the engine does not read (AVIF; HEIC in
 * Safari): `{width, height, rgba}`, RGBA samples with alpha not premultiplied, turned as the
 * file's orientation says (the default) and without colour management, as the engine decodes (Pillow's way).
 * The row it goes into says the browser decoded it.
 */
async function decodeInBrowser(bytes) {
  // (Its error, when it cannot, goes to the row: "The source image could not be decoded.")
  // (Orientation from the file is the default; some browsers refuse the option's name.)
  const bitmap = await createImageBitmap(new Blob([bytes]), {
    premultiplyAlpha: 'none',
    colorSpaceConversion: 'none',
  });
  try {
    const { width, height } = bitmap;
    if (width > MAX_SIDE || height > MAX_SIDE) {
      throw new Error(`${width}x${height} is too large (at most ${MAX_SIDE} pixels per side)`);
    }
    const context = new OffscreenCanvas(width, height).getContext('2d', { willReadFrequently: true });
    context.drawImage(bitmap, 0, 0);
    const { data } = context.getImageData(0, 0, width, height);
    return { width, height, rgba: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  } finally {
    bitmap.close();
  }
}

/** Output lines with hand-edited captions: `[{line, caption}]` to lines. */
async function setCaptions({ id, edits, captionKey, errorKey }) {
  const build = await anyBuild();
  const value = edits.map(({ line, caption }) =>
    build.setCaption(line, caption, captionKey ?? 'caption', errorKey ?? 'error'),
  );
  post({ type: 'result', id, value });
}

/** Output lines for lines a run has not reached: `[{index, line}]` (text or bytes) to lines,
 * or null where the line still needs a caption. */
async function pendingLines({ id, lines, options }) {
  const build = await anyBuild();
  const value = lines.map(({ index, line }) => build.outputWithoutModel(line, index + 1, options ?? {}) ?? null);
  post({ type: 'result', id, value });
}
