// The page: pick a model, images and optionally a JSONL file, run, watch, download.
// Everything shown from files or captions goes through textContent, never HTML.

import { Captioner, DEFAULT_MODEL_URL } from './captioner.js';
import { listCached, remove as removeCached } from './model-store.js';

const $ = (id) => document.getElementById(id);
const ui = {
  modelUrl: $('model-url'), modelFiles: $('model-files'), device: $('device'),
  precision: $('precision'),
  loadModel: $('load-model'), modelStatus: $('model-status'), modelProgress: $('model-progress'),
  cached: $('cached'), drop: $('drop'), images: $('images'), folder: $('folder'), jsonl: $('jsonl'),
  inputStatus: $('input-status'), run: $('run'), cancel: $('cancel'), download: $('download'),
  progress: $('progress'), progressText: $('progress-text'), results: $('results'),
};

const state = {
  captioner: null,
  files: [], // [{path, file}]
  jsonl: null, // {name, text}
  lines: [], // the run's input lines
  outputs: new Map(), // line index -> {line, outcome, caption, error}
  edits: new Map(), // line index -> caption typed by hand
  rowsByIndex: new Map(), // line index -> <li>
  running: false,
  key: null, // storage key of this input (for resuming after a reload)
};

const params = new URLSearchParams(location.search);
ui.modelUrl.value = params.get('model') ?? DEFAULT_MODEL_URL;
if (['auto', 'webgpu', 'cpu'].includes(params.get('device'))) ui.device.value = params.get('device');

function setStatus(el, text) {
  el.textContent = text;
}

function formatBytes(n) {
  if (n == null) return '?';
  const units = ['B', 'KB', 'MB', 'GB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function formatSeconds(s) {
  if (s == null) return '?';
  if (s < 60) return `${s.toFixed(0)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

// ---- model ----

async function loadModel() {
  ui.loadModel.disabled = true;
  ui.modelProgress.hidden = false;
  ui.modelProgress.removeAttribute('value');
  state.captioner?.dispose();
  state.captioner = null;
  updateButtons();
  const picked = [...ui.modelFiles.files];
  const source = picked.length ? { files: picked } : { modelUrl: ui.modelUrl.value.trim() };
  setStatus(ui.modelStatus, picked.length ? 'Reading the model files…' : 'Loading the model…');
  try {
    state.captioner = await Captioner.load({
      ...source,
      device: ui.device.value,
      precision: ui.precision.value,
      onProgress: (p) => {
        if (p.phase === 'download') {
          if (p.total) {
            ui.modelProgress.max = p.total;
            ui.modelProgress.value = p.loaded;
          }
          setStatus(
            ui.modelStatus,
            `Downloading ${p.file}: ${formatBytes(p.loaded)} of ${formatBytes(p.total)} ` +
              `(${formatBytes(p.bytesPerSecond)}/s)`,
          );
        } else if (p.phase === 'building') {
          setStatus(ui.modelStatus, 'Preparing the model on the device…');
        }
      },
    });
    const c = state.captioner;
    setStatus(
      ui.modelStatus,
      `Model ready on ${c.device === 'webgpu' ? 'WebGPU' : `the CPU (${c.threads} thread${c.threads === 1 ? '' : 's'})`}` +
        `${c.precision !== 'auto' ? `, weights ${c.precision}` : ''}` +
        `${c.fromCache ? ' (from this browser’s storage, no download)' : ''}.` +
        (c.deviceNote ? ` ${c.deviceNote}.` : '') +
        (c.threadNote ? ` ${c.threadNote[0].toUpperCase()}${c.threadNote.slice(1)}.` : ''),
    );
  } catch (e) {
    setStatus(ui.modelStatus, `The model could not be loaded: ${e.message}`);
  } finally {
    ui.loadModel.disabled = false;
    ui.modelProgress.hidden = true;
    updateButtons();
    showCached();
  }
}

async function showCached() {
  ui.cached.replaceChildren();
  for (const m of await listCached()) {
    const li = document.createElement('li');
    const text = document.createElement('span');
    text.textContent = `${m.url} — ${formatBytes(m.bytes)} `;
    const del = document.createElement('button');
    del.type = 'button';
    del.textContent = 'Delete';
    del.setAttribute('aria-label', `Delete the stored model ${m.url}`);
    del.addEventListener('click', async () => {
      await removeCached(m.url);
      showCached();
    });
    li.append(text, del);
    ui.cached.append(li);
  }
  if (!ui.cached.children.length) {
    const li = document.createElement('li');
    li.textContent = 'None yet.';
    ui.cached.append(li);
  }
}

// ---- inputs ----

function addFiles(files) {
  for (const file of files) {
    if (/\.jsonl?$/i.test(file.name) || file.type === 'application/jsonl') {
      file.text().then((text) => {
        state.jsonl = { name: file.name, text };
        inputsChanged();
      });
      continue;
    }
    const path = file.webkitRelativePath || file.relativePath || file.name;
    state.files.push({ path, file });
  }
  inputsChanged();
}

async function inputsChanged() {
  state.files.sort((a, b) => a.path.localeCompare(b.path));
  state.lines = state.jsonl
    ? state.jsonl.text.split('\n')
    : state.files.map(({ path }) => JSON.stringify({ image: [path] }));
  if (state.lines.length && state.lines[state.lines.length - 1] === '') state.lines.pop();
  state.outputs = new Map();
  state.edits = new Map();
  state.key = await inputKey();
  restore();
  renderRows();
  const rows = state.lines.filter((l) => l.trim()).length;
  setStatus(
    ui.inputStatus,
    `${state.files.length} image file(s)` +
      (state.jsonl ? `, ${rows} row(s) from ${state.jsonl.name}` : `, one row each`) +
      (state.outputs.size ? `; ${state.outputs.size} row(s) restored from an earlier run` : ''),
  );
  updateButtons();
}

/** A key for this input and settings, to find an interrupted run's progress after a reload. */
async function inputKey() {
  const text = JSON.stringify([state.lines, state.files.map((f) => [f.path, f.file.size]), settings()]);
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text));
  return 'captioner-run:' + [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

function save() {
  try {
    localStorage.setItem(state.key, JSON.stringify([...state.outputs.entries()]));
  } catch {
    // Storage full: the run goes on, it just cannot resume after a reload.
  }
}

function restore() {
  const saved = state.key && localStorage.getItem(state.key);
  if (!saved) return;
  try {
    state.outputs = new Map(JSON.parse(saved));
  } catch {
    localStorage.removeItem(state.key);
  }
}

// ---- results ----

function renderRows() {
  ui.results.replaceChildren();
  state.rowsByIndex = new Map();
  const byPath = new Map(state.files.map(({ path, file }) => [path, file]));
  const { imageKey } = settings();
  state.lines.forEach((line, index) => {
    if (!line.trim()) return;
    const li = document.createElement('li');
    li.dataset.testid = 'row';
    li.dataset.index = index;
    const first = firstImage(line, imageKey);
    const file = first && (byPath.get(first) ?? state.files.find((f) => f.path.endsWith('/' + first))?.file);
    if (file) {
      const img = document.createElement('img');
      img.src = URL.createObjectURL(file);
      img.alt = '';
      img.loading = 'lazy';
      li.append(img);
    }
    const path = document.createElement('div');
    path.className = 'path';
    path.textContent = first ?? line.slice(0, 80);
    const caption = document.createElement('p');
    caption.className = 'caption';
    caption.dataset.testid = 'caption';
    caption.setAttribute('role', 'textbox');
    caption.setAttribute('aria-label', `Caption of ${first ?? 'row ' + (index + 1)}`);
    caption.addEventListener('input', () => {
      state.edits.set(index, caption.textContent);
    });
    li.append(path, caption);
    ui.results.append(li);
    state.rowsByIndex.set(index, li);
    const done = state.outputs.get(index);
    if (done) showResult(index, done);
  });
}

function firstImage(line, imageKey) {
  try {
    const v = JSON.parse(line)?.[imageKey];
    return Array.isArray(v) ? (typeof v[0] === 'string' ? v[0] : null) : typeof v === 'string' ? v : null;
  } catch {
    return null;
  }
}

function showResult(index, result) {
  const li = state.rowsByIndex.get(index);
  if (!li) return;
  const caption = li.querySelector('.caption');
  if (result.error != null && result.caption == null) {
    caption.textContent = result.error;
    caption.classList.add('error');
    caption.contentEditable = 'false';
  } else {
    const text = result.caption ?? JSON.parse(result.line)?.[settings().captionKey] ?? '';
    caption.textContent = text;
    caption.classList.remove('error');
    caption.contentEditable = 'plaintext-only';
  }
}

// ---- run ----

function settings() {
  const number = (el) => (el.value === '' ? undefined : Number(el.value));
  return {
    prompt: $('prompt').value || undefined,
    system: $('system').value || undefined,
    maxTokens: number($('max-tokens')),
    temperature: number($('temperature')),
    topP: number($('top-p')),
    seed: number($('seed')),
    longestEdge: number($('longest-edge')),
    imageKey: $('image-key').value || 'image',
    captionKey: $('caption-key').value || 'caption',
  };
}

async function run() {
  if (!state.captioner || state.running) return;
  state.running = true;
  updateButtons();
  const start = nextToDo();
  const resumedRows = [...state.outputs.keys()].filter((i) => i < start).length;
  let progress = null;
  try {
    const rows = state.captioner.captionRows(state.lines, state.files.map((f) => [f.path, f.file]), {
      ...settings(),
      start,
      resumedRows,
      onToken: (text, index) => {
        const caption = state.rowsByIndex.get(index)?.querySelector('.caption');
        if (caption) caption.textContent += text;
      },
      onRow: (result) => {
        state.outputs.set(result.index, result);
        showResult(result.index, result);
        progress = result.progress;
        showProgress(progress);
        save();
      },
    });
    for await (const _ of rows) {
      // Rows arrive through onRow; the iterator paces the run.
    }
    const summary = state.captioner.lastRun;
    showProgress(summary?.progress ?? progress, summary?.stopped ? 'Paused' : 'Done');
  } catch (e) {
    setStatus(ui.progressText, `The run stopped: ${e.message}`);
  } finally {
    state.running = false;
    updateButtons();
  }
}

/** The first line an earlier (interrupted) run did not finish. */
function nextToDo() {
  let i = 0;
  while (i < state.lines.length && (state.outputs.has(i) || !state.lines[i].trim())) i++;
  return i;
}

function showProgress(p, word) {
  if (!p) return;
  ui.progress.max = p.rowsTotal || 1;
  ui.progress.value = p.rowsDone;
  const left = p.etaSeconds != null && !word ? `, ${formatSeconds(p.etaSeconds)} left` : '';
  setStatus(
    ui.progressText,
    `${word ? word + ': ' : ''}${p.rowsDone} of ${p.rowsTotal} rows (${p.captioned} captioned, ` +
      `${p.skipped} skipped, ${p.failed} failed), ${p.tokensPerSecond.toFixed(1)} tokens/s${left}`,
  );
}

async function download() {
  const { captionKey } = settings();
  const edits = [...state.edits.entries()]
    .filter(([i]) => state.outputs.has(i))
    .map(([i, caption]) => ({ index: i, line: state.outputs.get(i).line, caption }));
  const edited = new Map();
  if (edits.length && state.captioner) {
    const lines = await state.captioner.setCaptions(edits, { captionKey });
    edits.forEach((e, k) => edited.set(e.index, lines[k]));
  }
  // Rows not reached yet get what they would get without the model (a malformed line its
  // error row) or go out as they came in, so the file is whole and valid at any time.
  const pending = state.lines
    .map((line, index) => ({ index, line }))
    .filter(({ index, line }) => line.trim() && !state.outputs.has(index));
  const without = new Map();
  if (pending.length && state.captioner) {
    const lines = await state.captioner.outputsWithoutModel(pending, settings());
    pending.forEach(({ index }, k) => lines[k] && without.set(index, lines[k]));
  }
  const out = [];
  state.lines.forEach((line, i) => {
    if (!line.trim()) return;
    out.push(edited.get(i) ?? state.outputs.get(i)?.line ?? without.get(i) ?? line.replace(/\r$/, ''));
  });
  const blob = new Blob([out.join('\n') + '\n'], { type: 'application/jsonl' });
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = (state.jsonl?.name ?? 'images.jsonl').replace(/(\.jsonl?)?$/i, '.captioned.jsonl');
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

function updateButtons() {
  const hasRows = state.lines.some((l) => l.trim());
  ui.run.disabled = !state.captioner || state.running || !hasRows;
  ui.cancel.disabled = !state.running;
  ui.download.disabled = !hasRows;
}

// ---- wiring ----

ui.loadModel.addEventListener('click', loadModel);
ui.run.addEventListener('click', run);
ui.cancel.addEventListener('click', () => state.captioner?.cancel());
ui.download.addEventListener('click', download);
ui.images.addEventListener('change', () => addFiles(ui.images.files));
ui.folder.addEventListener('change', () => addFiles(ui.folder.files));
ui.jsonl.addEventListener('change', () => addFiles(ui.jsonl.files));
for (const id of ['image-key', 'caption-key']) $(id).addEventListener('change', inputsChanged);

ui.drop.addEventListener('dragover', (e) => {
  e.preventDefault();
  ui.drop.classList.add('over');
});
ui.drop.addEventListener('dragleave', () => ui.drop.classList.remove('over'));
ui.drop.addEventListener('drop', async (e) => {
  e.preventDefault();
  ui.drop.classList.remove('over');
  addFiles(await droppedFiles(e.dataTransfer));
});
ui.drop.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' || e.key === ' ') ui.images.click();
});

/** Files of a drop, walking dropped folders (their paths kept as relative paths). */
async function droppedFiles(dataTransfer) {
  const entries = [...dataTransfer.items].map((i) => i.webkitGetAsEntry?.()).filter(Boolean);
  if (!entries.length) return [...dataTransfer.files];
  const out = [];
  const walk = async (entry, prefix) => {
    if (entry.isFile) {
      const file = await new Promise((ok, fail) => entry.file(ok, fail));
      file.relativePath = prefix + file.name;
      out.push(file);
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
        if (!batch.length) break;
        for (const child of batch) await walk(child, `${prefix}${entry.name}/`);
      }
    }
  };
  for (const entry of entries) await walk(entry, '');
  return out;
}

showCached();
if (params.has('model')) loadModel();
