// Model files: downloaded from a model folder's URL (kept in the Cache API so the next visit
// needs no network), or read from files the user picked. Runs in the worker or on the page.

export const DEFAULT_MODEL_URL =
  'https://huggingface.co/HuggingFaceTB/SmolVLM-256M-Instruct/resolve/main/';

const CACHE = 'captioner-models-v1';
// A key of our own next to the files (never fetched): which files the folder had.
const MANIFEST = '.captioner-manifest.json';
// A model folder's quantized pack is kept under the folder's key plus this and its type
// (`…/SmolVLM-256M-Instruct/.captioner-pack-q8_0/`), never fetched either.
const PACK = '.captioner-pack-';
const REQUIRED = ['config.json', 'tokenizer.json'];
const OPTIONAL = [
  'tokenizer_config.json',
  'chat_template.json',
  'chat_template.jinja',
  'preprocessor_config.json',
  'processor_config.json',
  'generation_config.json',
];

export class ModelError extends Error {}

function folder(url) {
  const base = new URL(url, self.location.href).href;
  return base.endsWith('/') ? base : base + '/';
}

/**
 * `{files, fromCache, form}`: `files` `[{name, bytes}]` of the model at `url`, from the cache
 * when it holds all of them. `url` is a model folder, or a `.gguf` file: a text model, with
 * its vision part when the same folder has `mmproj-<name>` next to it (llama.cpp's naming).
 *
 * `pack: {type, begin(textFiles, stem)}` asks for a safetensors folder as a quantized GGUF
 * pack: `begin` starts writing it (`{push(bytes), endFile(), finish(), free()}`, the engine's
 * `PackStream`), and the weights go into it piece by piece as they download, so the whole
 * original is never held. The pack is what the cache keeps, so a later visit reads it and
 * nothing else. Without `pack`, only the folder's own files will do: a pack stored for WebGPU
 * is not what the CPU's `auto` means (the files as they are), and the same settings give the
 * same captions whatever the cache holds. `form` says what came: `'original'` or the pack's
 * type.
 */
export async function fromUrl(url, onProgress = () => {}, { pack = null } = {}) {
  // The cache keeps a model under a folder-like key; a .gguf file's key is its URL plus '/'.
  const key = folder(url);
  const cache = await openCache();
  const ggufName = key.endsWith('.gguf/') ? key.slice(0, -1).split('/').pop() : null;
  const packKey = pack && !ggufName ? `${key}${PACK}${pack.type}/` : null;
  // Asked for a pack, only the pack will do (the folder's own files, stored by an earlier
  // visit, are made into one without a download).
  const cached = cache && (await fromCache(cache, packKey ?? key));
  if (cached) {
    onProgress({ phase: 'cached', loaded: total(cached), total: total(cached) });
    return { files: cached, fromCache: true, form: formOf(packKey ?? key) };
  }
  const original = packKey && cache ? await fromCache(cache, key) : null;
  let downloaded = null;
  if (packKey) {
    let packed = null;
    try {
      if (original) packed = packOf(original, pack, stemOf(key), onProgress);
      else ({ packed, files: downloaded } = await downloadModel(key, null, onProgress, pack));
    } catch (e) {
      if (!(e instanceof PackError)) throw e;
      // Not a folder a pack can be made of: the model still loads from its own files (for a
      // folder that fails halfway through its weights, downloaded again).
      console.warn(`no ${pack.type} pack for ${url} (${e.message}); keeping its files`);
    }
    if (packed) {
      const stored = cache ? await store(cache, packKey, packed, { source: key, form: pack.type }) : false;
      return { files: packed, fromCache: original != null, stored, form: pack.type };
    }
  }
  // A pack that could not begin leaves the whole download in `downloaded`.
  const files = original ?? downloaded ?? (await downloadModel(key, ggufName, onProgress)).files;
  let stored = original != null;
  if (cache && !original) stored = await store(cache, key, files, { source: key, form: 'original' });
  return { files, fromCache: original != null, stored, form: 'original' };
}

/** The engine could not make the pack (as opposed to the download failing). */
class PackError extends Error {}

/** `pack.begin(texts, stem)`, every error it and its stream throw a `PackError`. */
function packSink(pack, texts, stem) {
  const guard = (f) => {
    try {
      return f();
    } catch (e) {
      // A trap (a panic, memory exhausted) leaves the engine unusable: no fallback can run.
      if (e instanceof WebAssembly.RuntimeError) throw e;
      throw new PackError(String(e?.message ?? e));
    }
  };
  const stream = guard(() => pack.begin(texts, stem));
  return {
    push: (bytes) => guard(() => stream.push(bytes)),
    endFile: () => guard(() => stream.endFile()),
    finish: () => guard(() => stream.finish()),
    free: () => stream.free(),
  };
}

/** The pack of a folder's files already at hand (an earlier visit stored the original). */
function packOf(files, pack, stem, onProgress) {
  onProgress({ phase: 'packing', type: pack.type });
  const isWeights = (f) => f.name.endsWith('.safetensors');
  const sink = packSink(pack, files.filter((f) => !isWeights(f)), stem);
  try {
    // In slices: the engine copies what it is given into its memory, which never shrinks.
    const slice = 8 << 20;
    for (const f of files.filter(isWeights)) {
      for (let at = 0; at < f.bytes.byteLength; at += slice) sink.push(f.bytes.subarray(at, at + slice));
      sink.endFile();
    }
    return sink.finish();
  } finally {
    sink.free();
  }
}

/**
 * The pack a model folder is kept as in the browser's cache, for `precision` on `device`
 * (`'webgpu'` or `'cpu'`), or null to keep its own files: `auto` on WebGPU holds the weights
 * as Q8_0 anyway (the engine's default there), so the cache keeps the Q8_0 pack, a quarter of
 * f32 and half of bf16.
 */
export function packType(precision, device) {
  return precision === 'auto' && device === 'webgpu' ? 'q8_0' : null;
}

/**
 * What loading the model at `url` will take, said before Load starts: `{name, stored, download,
 * kept, form}`. `stored` is true when this browser already keeps what the load reads (the
 * `pack` of type `packType` gives, else the folder's own files); `kept` is then its size.
 * Otherwise `download` is the weights' size from HEAD requests (null where a server hides one)
 * and `kept` what the cache holds afterwards: the folder's files, or for a pack an estimate
 * from the safetensors headers (`packEstimate`; null when they cannot be read). `form` is
 * `'original'` or the pack's type.
 */
export async function planLoad(url, { pack = null } = {}) {
  const key = folder(url);
  const ggufName = key.endsWith('.gguf/') ? key.slice(0, -1).split('/').pop() : null;
  const packKey = pack && !ggufName ? `${key}${PACK}${pack}/` : null;
  const name = stemOf(key);
  const cache = await openCache();
  const manifest = cache && (await storedManifest(cache, packKey ?? key));
  const form = packKey ? pack : 'original';
  if (manifest) return { name, stored: true, download: 0, kept: manifest.bytes, form };
  // The folder made into a pack without a download (an earlier visit kept its own files).
  if (packKey && cache && (await storedManifest(cache, key))) {
    return { name, stored: true, download: 0, kept: null, form };
  }
  const base = ggufName ? new URL('.', key.slice(0, -1)).href : key;
  let index = null;
  if (!ggufName) {
    // Said now rather than at Load: a folder that cannot be reached, or is not a model's.
    let config;
    try {
      config = await fetch(key + 'config.json', { method: 'HEAD', credentials: 'omit' });
    } catch {
      throw new ModelError(`could not reach ${key} (the network is down, or the server does not allow this page to read it)`);
    }
    if (!config.ok) throw new ModelError(`${key}config.json: ${config.status} ${config.statusText}; is this a model folder?`);
    const response = await fetch(base + 'model.safetensors.index.json', { credentials: 'omit' }).catch(() => null);
    if (response?.ok) index = new Uint8Array(await response.arrayBuffer());
  }
  const weights = weightFiles(ggufName, index).map(([w]) => w);
  const sizes = await Promise.all(weights.map((w) => sizeOf(base + w)));
  const download = sizes.every((n) => n != null) ? sizes.reduce((a, b) => a + b, 0) : null;
  if (!packKey) return { name, stored: false, download, kept: download, form };
  return { name, stored: false, download, kept: await packEstimate(base, weights), form };
}

async function storedManifest(cache, base) {
  const hit = await cache.match(base + MANIFEST);
  return hit ? hit.json().catch(() => null) : null;
}

/**
 * About how big the Q8_0 pack of the safetensors files `weights` at `base` is, from their
 * headers alone (a range read each): each tensor as `convert::plan` holds it, Q8_0 for a
 * matrix whose rows are whole blocks (34 bytes a block of 32), F16 for the patch embedding,
 * F32 for the rest, plus the tokenizer, which the pack's metadata carries. Null if a header
 * cannot be read.
 */
async function packEstimate(base, weights) {
  let bytes = (await sizeOf(base + 'tokenizer.json')) ?? 0;
  for (const w of weights) {
    const header = await safetensorsHeader(base + w);
    if (!header) return null;
    for (const [tensor, info] of Object.entries(header)) {
      if (tensor === '__metadata__' || !Array.isArray(info?.shape)) continue;
      const elements = info.shape.reduce((a, b) => a * b, 1);
      if (info.shape.length >= 2 && tensor.includes('.patch_embedding.')) bytes += 2 * elements;
      else if (info.shape.length === 2 && info.shape[1] > 0 && info.shape[1] % 32 === 0) bytes += (elements / 32) * 34;
      else bytes += 4 * elements;
    }
  }
  return bytes;
}

// A safetensors header larger than this is not read (the format's own reader stops at 100 MB;
// published models' headers are tens of KB).
const MAX_HEADER = 16 << 20;

/** The JSON header of the safetensors file at `url` (its length, then itself), or null. */
async function safetensorsHeader(url) {
  try {
    const length = await bytesAt(url, 0, 8);
    if (!length) return null;
    const n = new DataView(length.buffer, length.byteOffset, 8).getBigUint64(0, true);
    if (n === 0n || n > BigInt(MAX_HEADER)) return null;
    const json = await bytesAt(url, 8, Number(n));
    return json && JSON.parse(new TextDecoder().decode(json));
  } catch {
    return null;
  }
}

/**
 * `length` bytes of the file at `url` from `start`, by a range request, or null. A server that
 * ignores the range sends the whole file: its body is read only as far as needed.
 */
async function bytesAt(url, start, length) {
  const response = await fetch(url, {
    credentials: 'omit',
    headers: { Range: `bytes=${start}-${start + length - 1}` },
  });
  if (!response.ok || !response.body) return null;
  const skip = response.status === 206 ? 0 : start;
  const reader = response.body.getReader();
  const chunks = [];
  let have = 0;
  try {
    while (have < skip + length) {
      const { done, value } = await reader.read();
      if (done) return null;
      chunks.push(value);
      have += value.byteLength;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  return joined(chunks, have).subarray(skip, skip + length);
}

function joined(chunks, length) {
  const out = new Uint8Array(length);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/**
 * The files of the model at folder `key` (a .gguf file's, `ggufName`), from the network:
 * `{files}`. With `pack` (see `fromUrl`), the safetensors weights go into the pack as they
 * arrive and are not kept: `{files: the text files, packed: the pack's files}`.
 */
async function downloadModel(key, ggufName, onProgress, pack = null) {
  const base = ggufName ? new URL('.', key.slice(0, -1)).href : key;
  const files = [];
  let index = null;
  if (!ggufName) {
    const plan = [...REQUIRED.map((n) => [n, true]), ...OPTIONAL.map((n) => [n, false])];
    for (const [name, required] of plan) {
      const bytes = await download(base, name, required, () => {});
      if (bytes) files.push({ name, bytes });
    }
    index = await download(base, 'model.safetensors.index.json', false, () => {});
    if (index) files.push({ name: 'model.safetensors.index.json', bytes: index });
  }
  const weights = weightFiles(ggufName, index);
  // Begun before the weights' first byte: a folder the engine cannot pack is downloaded
  // as it is.
  let sink = null;
  try {
    sink = pack && packSink(pack, files, stemOf(key));
  } catch (e) {
    if (!(e instanceof PackError)) throw e;
    console.warn(`no ${pack.type} pack for ${key} (${e.message}); downloading its files`);
  }
  try {
    // The size of the whole download, said before its first byte (null where a server hides it).
    const sizes = await Promise.all(weights.map(([name]) => sizeOf(base + name)));
    const planned = sizes.every((n) => n != null) ? sizes.reduce((a, b) => a + b, 0) : null;
    onProgress({ phase: 'plan', total: planned, files: weights.length });
    const started = performance.now();
    let done = 0;
    for (const [name, required] of weights) {
      const response = await open(base, name, required);
      if (!response) continue;
      const chunks = [];
      const loaded = await readBody(response, name, (chunk, loaded, size) => {
        if (sink) sink.push(chunk);
        else chunks.push(chunk);
        onProgress({
          phase: 'download',
          file: name,
          packing: pack?.type ?? null,
          loaded: done + loaded,
          total: planned ?? (size ? done + size : null),
          bytesPerSecond: ((done + loaded) * 1000) / Math.max(1, performance.now() - started),
        });
      });
      done += loaded;
      if (sink) sink.endFile();
      else files.push({ name, bytes: joined(chunks, loaded) });
    }
    if (!sink) return { files, packed: null };
    onProgress({ phase: 'packing', type: pack.type });
    return { files, packed: sink.finish() };
  } finally {
    sink?.free();
  }
}

/**
 * The weight files to fetch, `[[name, required]]`: a GGUF file `ggufName` and its `mmproj-`
 * file where there is one (llama.cpp's naming), else a folder's `model.safetensors` or the
 * shards its safetensors index (`index`, bytes, or null for none) names.
 */
function weightFiles(ggufName, index) {
  if (ggufName) return [[ggufName, true], [`mmproj-${ggufName}`, false]];
  if (!index) return [['model.safetensors', true]];
  let map;
  try {
    map = JSON.parse(new TextDecoder().decode(index)).weight_map;
  } catch {
    throw new ModelError('model.safetensors.index.json is not JSON');
  }
  const shards = map && typeof map === 'object'
    ? [...new Set(Object.values(map))].filter((name) => typeof name === 'string')
    : [];
  if (!shards.length) throw new ModelError('model.safetensors.index.json names no weight files');
  return shards.map((name) => [name, true]);
}

/**
 * The model's name, as `captioner quantize` names its pack: a folder key's last part, or on a
 * Hugging Face hub address (`…/<owner>/<name>/resolve/<revision>/`) the repository's name.
 */
export function stemOf(key) {
  const parts = folder(key).slice(0, -1).split('/');
  const at = parts.lastIndexOf('resolve');
  const name = at >= 1 && at === parts.length - 2 ? parts[at - 1] : parts.at(-1);
  return name?.replace(/\.gguf$/, '') || 'model';
}

function formOf(key) {
  const at = key.lastIndexOf(PACK);
  return at < 0 ? 'original' : key.slice(at + PACK.length, -1);
}

/** A file's size from a HEAD request: 0 for none there (an optional file), null if unknown. */
async function sizeOf(url) {
  try {
    const response = await fetch(url, { method: 'HEAD', credentials: 'omit' });
    if (response.status === 404) return 0;
    const size = Number(response.headers.get('content-length'));
    return response.ok && size > 0 && !response.headers.get('content-encoding') ? size : null;
  } catch {
    return null;
  }
}

/** `[{name, bytes}]` from picked files (a folder's relative paths are kept as names). */
export async function fromFiles(fileList) {
  const files = [];
  for (const file of fileList) {
    const name = file.webkitRelativePath || file.name;
    files.push({ name, bytes: new Uint8Array(await file.arrayBuffer()) });
  }
  if (!files.some((f) => f.name.endsWith('config.json') || f.name.endsWith('.gguf'))) {
    throw new ModelError(
      'the picked files hold no config.json (nor a .gguf): pick the whole model folder',
    );
  }
  return files;
}

/** The bytes of `name` at `base`; null for an optional file that is not there. */
async function download(base, name, required, onBytes) {
  const response = await open(base, name, required);
  if (!response) return null;
  const chunks = [];
  const loaded = await readBody(response, name, (chunk, loaded, size) => {
    chunks.push(chunk);
    onBytes(loaded, size);
  });
  return joined(chunks, loaded);
}

/** The response for `name` at `base`, its body still to read; null for an optional file that is not there. */
async function open(base, name, required) {
  const url = base + name;
  let response;
  try {
    response = await fetch(url, { credentials: 'omit' });
  } catch {
    throw new ModelError(
      `could not reach ${url}: the network is down, or the server does not allow this page to ` +
        'read it (CORS). Check the address, or load the model from local files.',
    );
  }
  if (response.status === 404 && !required) return null;
  if (!response.ok) {
    throw new ModelError(
      `${url}: ${response.status} ${response.statusText}. Is this a model folder? It needs ` +
        'config.json, tokenizer.json and model.safetensors.',
    );
  }
  return response;
}

/**
 * Reads `response`'s body, handing each piece to `onChunk(chunk, loaded, size)` as it comes;
 * the bytes read. A body cut short is an error.
 */
async function readBody(response, name, onChunk) {
  const size = Number(response.headers.get('content-length')) || null;
  const reader = response.body.getReader();
  let loaded = 0;
  for (;;) {
    let step;
    try {
      step = await reader.read();
    } catch {
      throw new ModelError(`the download of ${name} broke off after ${loaded} bytes; try again`);
    }
    if (step.done) break;
    loaded += step.value.byteLength;
    try {
      onChunk(step.value, loaded, size);
    } catch (e) {
      reader.cancel().catch(() => {});
      throw e;
    }
  }
  // A server that compresses reports the compressed length; only a shortfall on an identity
  // response means the file was cut.
  const encoded = response.headers.get('content-encoding');
  if (size && !encoded && loaded < size) {
    throw new ModelError(`${name} arrived cut short (${loaded} of ${size} bytes); try again`);
  }
  return loaded;
}

async function openCache() {
  try {
    return await caches.open(CACHE);
  } catch {
    return null; // no Cache API (not a secure context): download every time
  }
}

async function fromCache(cache, base) {
  const manifest = await cache.match(base + MANIFEST);
  if (!manifest) return null;
  const { files: names } = await manifest.json();
  const files = [];
  for (const name of names) {
    const hit = await cache.match(base + name);
    if (!hit) return null;
    files.push({ name, bytes: new Uint8Array(await hit.arrayBuffer()) });
  }
  return files;
}

async function store(cache, base, files, about) {
  try {
    for (const { name, bytes } of files) {
      await cache.put(base + name, new Response(bytes));
    }
    const manifest = { files: files.map((f) => f.name), bytes: total(files), saved: Date.now(), ...about };
    await cache.put(base + MANIFEST, new Response(JSON.stringify(manifest)));
    return true;
  } catch (e) {
    // Quota exceeded: the model still runs now, it is just downloaded again next time.
    await remove(base).catch(() => {});
    console.warn(`the model could not be stored (${e?.name ?? e}); it will be downloaded again`);
    return false;
  }
}

function total(files) {
  return files.reduce((n, f) => n + f.bytes.byteLength, 0);
}

/**
 * Models in the browser's cache: `[{key, url, form, bytes, files, saved}]`, `url` the model's
 * address and `form` `'original'` or a pack's type.
 */
export async function listCached() {
  const cache = await openCache();
  if (!cache) return [];
  const out = [];
  for (const request of await cache.keys()) {
    if (!request.url.endsWith(MANIFEST)) continue;
    const manifest = await (await cache.match(request)).json();
    const key = request.url.slice(0, -MANIFEST.length);
    out.push({ key, url: manifest.source ?? key, form: formOf(key), ...manifest });
  }
  return out;
}

/** Deletes a stored model: a folder's own files, or one of its packs (`key` from `listCached`). */
export async function remove(key) {
  const cache = await openCache();
  if (!cache) return;
  const base = folder(key);
  // A folder's own files, or one pack: the folder's packs live under its key and stay.
  const other = base.includes(PACK) ? null : base + PACK;
  for (const request of await cache.keys()) {
    if (request.url.startsWith(base) && !(other && request.url.startsWith(other))) {
      await cache.delete(request);
    }
  }
}

/** The files stored under `key` (from `listCached`), `[{name, bytes}]`, or null. */
export async function storedFiles(key) {
  const cache = await openCache();
  return cache ? fromCache(cache, folder(key)) : null;
}
