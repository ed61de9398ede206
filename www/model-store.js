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
 * `pack: {type, make(files, stem)}` asks for a safetensors folder as a quantized GGUF pack
 * (`make` writes it): the pack is what the cache keeps, so a later visit reads it and nothing
 * else. Without `pack`, only the folder's own files will do: a pack stored for WebGPU is not
 * what the CPU's `auto` means (the files as they are), and the same settings give the same
 * captions whatever the cache holds. `form` says what came: `'original'` or the pack's type.
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
  const files = original ?? (await downloadModel(key, ggufName, onProgress));
  if (packKey) {
    onProgress({ phase: 'packing', type: pack.type });
    let packed = null;
    try {
      packed = await pack.make(files, stemOf(key));
    } catch (e) {
      // Not a folder a pack can be made of: the model still loads from its own files.
      console.warn(`no ${pack.type} pack for ${url} (${e?.message ?? e}); keeping its files`);
    }
    if (packed) {
      const stored = cache ? await store(cache, packKey, packed, { source: key, form: pack.type }) : false;
      return { files: packed, fromCache: original != null, stored, form: pack.type };
    }
  }
  let stored = original != null;
  if (cache && !original) stored = await store(cache, key, files, { source: key, form: 'original' });
  return { files, fromCache: original != null, stored, form: 'original' };
}

/** The files of the model at folder `key` (a .gguf file's, `ggufName`), from the network. */
async function downloadModel(key, ggufName, onProgress) {
  const base = ggufName ? new URL('.', key.slice(0, -1)).href : key;
  const files = [];
  let weights;
  if (ggufName) {
    weights = [[ggufName, true], [`mmproj-${ggufName}`, false]];
  } else {
    const plan = [...REQUIRED.map((n) => [n, true]), ...OPTIONAL.map((n) => [n, false])];
    for (const [name, required] of plan) {
      const bytes = await download(base, name, required, () => {});
      if (bytes) files.push({ name, bytes });
    }
    // Weights: one file, or the shards a safetensors index names.
    weights = [['model.safetensors', true]];
    const index = await download(base, 'model.safetensors.index.json', false, () => {});
    if (index) {
      files.push({ name: 'model.safetensors.index.json', bytes: index });
      const shards = new Set(Object.values(JSON.parse(new TextDecoder().decode(index)).weight_map));
      weights = [...shards].map((name) => [name, true]);
    }
  }
  // The size of the whole download, said before its first byte (null where a server hides it).
  const sizes = await Promise.all(weights.map(([name]) => sizeOf(base + name)));
  const planned = sizes.every((n) => n != null) ? sizes.reduce((a, b) => a + b, 0) : null;
  onProgress({ phase: 'plan', total: planned, files: weights.length });
  const started = performance.now();
  let done = 0;
  for (const [name, required] of weights) {
    const bytes = await download(base, name, required, (loaded, size) =>
      onProgress({
        phase: 'download',
        file: name,
        loaded: done + loaded,
        total: planned ?? (size ? done + size : null),
        bytesPerSecond: ((done + loaded) * 1000) / Math.max(1, performance.now() - started),
      }),
    );
    if (!bytes) continue;
    done += bytes.byteLength;
    files.push({ name, bytes });
  }
  return files;
}

/** A folder key's last part: the model's name, as `captioner quantize` names its pack. */
function stemOf(key) {
  return key.slice(0, -1).split('/').pop() || 'model';
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

async function download(base, name, required, onBytes) {
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
  const size = Number(response.headers.get('content-length')) || null;
  const reader = response.body.getReader();
  const chunks = [];
  let loaded = 0;
  for (;;) {
    let step;
    try {
      step = await reader.read();
    } catch {
      throw new ModelError(`the download of ${name} broke off after ${loaded} bytes; try again`);
    }
    if (step.done) break;
    chunks.push(step.value);
    loaded += step.value.byteLength;
    onBytes(loaded, size);
  }
  // A server that compresses reports the compressed length; only a shortfall on an identity
  // response means the file was cut.
  const encoded = response.headers.get('content-encoding');
  if (size && !encoded && loaded < size) {
    throw new ModelError(`${name} arrived cut short (${loaded} of ${size} bytes); try again`);
  }
  const bytes = new Uint8Array(loaded);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.byteLength;
  }
  return bytes;
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
