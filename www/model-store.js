// Model files: downloaded from a model folder's URL (kept in the Cache API so the next visit
// needs no network), or read from files the user picked. Runs in the worker or on the page.

export const DEFAULT_MODEL_URL =
  'https://huggingface.co/HuggingFaceTB/SmolVLM-256M-Instruct/resolve/main/';

const CACHE = 'captioner-models-v1';
// A key of our own next to the files (never fetched): which files the folder had.
const MANIFEST = '.captioner-manifest.json';
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
 * `[{name, bytes}]` of the model at `url`, from the cache when it holds all of them. `url` is a
 * model folder, or a `.gguf` file: a text model, with its vision part when the same folder has
 * `mmproj-<name>` next to it (llama.cpp's naming).
 */
export async function fromUrl(url, onProgress = () => {}) {
  // The cache keeps a model under a folder-like key; a .gguf file's key is its URL plus '/'.
  const key = folder(url);
  const cache = await openCache();
  const cached = cache && (await fromCache(cache, key));
  if (cached) {
    onProgress({ phase: 'cached', loaded: total(cached), total: total(cached) });
    return { files: cached, fromCache: true };
  }
  const ggufName = key.endsWith('.gguf/') ? key.slice(0, -1).split('/').pop() : null;
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
  const started = performance.now();
  let done = 0;
  for (const [name, required] of weights) {
    const bytes = await download(base, name, required, (loaded, size) =>
      onProgress({
        phase: 'download',
        file: name,
        loaded: done + loaded,
        total: size ? done + size : null,
        bytesPerSecond: ((done + loaded) * 1000) / Math.max(1, performance.now() - started),
      }),
    );
    if (!bytes) continue;
    done += bytes.byteLength;
    files.push({ name, bytes });
  }
  let stored = false;
  if (cache) stored = await store(cache, key, files);
  return { files, fromCache: false, stored };
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

async function store(cache, base, files) {
  try {
    for (const { name, bytes } of files) {
      await cache.put(base + name, new Response(bytes));
    }
    const manifest = { files: files.map((f) => f.name), bytes: total(files), saved: Date.now() };
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

/** Models in the browser's cache: `[{url, bytes, files, saved}]`. */
export async function listCached() {
  const cache = await openCache();
  if (!cache) return [];
  const out = [];
  for (const request of await cache.keys()) {
    if (!request.url.endsWith(MANIFEST)) continue;
    const manifest = await (await cache.match(request)).json();
    out.push({ url: request.url.slice(0, -MANIFEST.length), ...manifest });
  }
  return out;
}

/** Deletes a cached model folder. */
export async function remove(url) {
  const cache = await openCache();
  if (!cache) return;
  const base = folder(url);
  for (const request of await cache.keys()) {
    if (request.url.startsWith(base)) await cache.delete(request);
  }
}
