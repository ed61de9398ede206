// The page: pick a model, images and optionally a JSONL file, run, watch, download.
// Everything shown from files or captions goes through textContent, never HTML.

import { Captioner, DEFAULT_MODEL_URL } from './captioner.js';
import { listCached, remove as removeCached, storedFiles } from './model-store.js';
import { fileFinder, isBlank, jsonlLines, lineText, looksLikeImage, looksLikeRows, normalisePath } from './picked-files.js';

const $ = (id) => document.getElementById(id);
const ui = {
  modelUrl: $('model-url'), modelFiles: $('model-files'), device: $('device'),
  precision: $('precision'),
  loadModel: $('load-model'), modelStatus: $('model-status'), modelProgress: $('model-progress'),
  cached: $('cached'), drop: $('drop'), images: $('images'), folder: $('folder'), jsonl: $('jsonl'),
  clear: $('clear'), inputStatus: $('input-status'), run: $('run'), runHint: $('run-hint'),
  cancel: $('cancel'), download: $('download'), progress: $('progress'),
  progressText: $('progress-text'), results: $('results'),
  // Locked while a run goes, so that the rows it captions stay the rows shown and downloaded.
  locked: [$('model-controls'), $('input-controls'), $('settings-controls')],
};

const state = {
  captioner: null,
  loading: false,
  images: new Map(), // relative path -> File; a path picked again replaces its file
  leftOut: new Set(), // paths of picked files that are neither images nor rows
  rows: null, // {name, lines}: the rows file, its lines as jsonlLines gives them
  removed: new Set(), // indexes of the rows file's lines removed by hand
  lines: [], // the run's input lines: the rows file's, or one per image
  paths: [], // without a rows file: the image path of each line
  identities: [], // per line: what a finished output of it is kept by when the inputs change
  outputs: new Map(), // line index -> {line, outcome, caption, error}
  edits: new Map(), // line index -> caption typed by hand
  restored: 0, // outputs found in this browser's storage
  rowsByIndex: new Map(), // line index -> <li>
  thumbnails: [], // object URLs of the shown thumbnails, revoked on each render
  running: false,
  key: null, // storage key of this input (for resuming after a reload)
  generation: 0, // bumped by each input change, so a slower, older one does not win
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

/** A note such as the engine's "the only WebGPU adapter is …" as a sentence of its own. */
function sentence(note) {
  return `${note[0].toUpperCase()}${note.slice(1)}.`;
}

function formatSeconds(s) {
  if (s == null) return '?';
  if (s < 60) return `${s.toFixed(0)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

// ---- model ----

async function loadModel() {
  if (state.loading || state.running) return;
  state.loading = true;
  // aria-disabled rather than disabled: a disabled button drops the keyboard focus.
  ui.loadModel.setAttribute('aria-disabled', 'true');
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
        if (p.phase === 'plan') {
          // Said before the first byte comes.
          setStatus(
            ui.modelStatus,
            p.total != null
              ? `Downloading ${formatBytes(p.total)} of model weights…`
              : 'Downloading the model weights (the server does not say how big)…',
          );
        } else if (p.phase === 'packing') {
          setStatus(ui.modelStatus, `Packing the weights as ${p.type} for this browser’s storage…`);
        } else if (p.phase === 'download') {
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
        `${c.gpuBytes != null ? `, ${formatBytes(c.gpuBytes)} of GPU memory` : ''}` +
        `${c.fromCache ? ' (from this browser’s storage, no download)' : ''}.` +
        (c.deviceNote ? ` ${sentence(c.deviceNote)}` : '') +
        (c.threadNote ? ` ${sentence(c.threadNote)}` : ''),
    );
  } catch (e) {
    setStatus(ui.modelStatus, `The model could not be loaded: ${e.message}`);
  } finally {
    state.loading = false;
    ui.loadModel.removeAttribute('aria-disabled');
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
    const pack = m.form !== 'original';
    text.textContent = `${m.url} — ${formatBytes(m.bytes)}${pack ? `, ${m.form} pack` : ''} `;
    const del = document.createElement('button');
    del.type = 'button';
    del.textContent = 'Delete';
    del.setAttribute('aria-label', `Delete the stored model ${m.url}${pack ? ` (${m.form} pack)` : ''}`);
    del.addEventListener('click', async () => {
      await removeCached(m.key);
      showCached();
    });
    li.append(text);
    if (pack) li.append(...saveButtons(m));
    li.append(del);
    ui.cached.append(li);
  }
  if (!ui.cached.children.length) {
    const li = document.createElement('li');
    li.textContent = 'None yet.';
    ui.cached.append(li);
  }
}

/**
 * Buttons that save a stored pack's files (the GGUF pair `captioner quantize` writes) to disk,
 * one a file (a browser asks before letting one click download several), to host them for
 * others or to load with `captioner --model`.
 */
function saveButtons(m) {
  return m.files.map((name) => {
    const save = document.createElement('button');
    save.type = 'button';
    save.textContent = `Save ${name}`;
    save.dataset.testid = 'save-pack-file';
    save.addEventListener('click', async () => {
      const file = (await storedFiles(m.key))?.find((f) => f.name === name);
      if (!file) return showCached();
      const a = document.createElement('a');
      a.href = URL.createObjectURL(new Blob([file.bytes], { type: 'application/octet-stream' }));
      a.download = name;
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
    });
    return save;
  });
}

// ---- inputs ----

/** A picked file's path relative to what was picked (a folder's files keep their folder). */
const pathOf = (file) => normalisePath(file.webkitRelativePath || file.relativePath || file.name);

/**
 * Files from the image pickers or a drop. Images join the list, where the same path again
 * replaces its file (picking a folder twice makes no duplicates); a rows file becomes the rows;
 * from a folder or a drop, anything else is left out and named. `asImages`: the image picker's
 * files are images whatever their names (a file that is not one becomes that row's error).
 */
async function addFiles(files, { asImages = false } = {}) {
  if (refuseWhileRunning()) return;
  let rowsFile = null;
  let images = 0;
  for (const file of files) {
    if (looksLikeRows(file)) rowsFile = file;
    else if (asImages || looksLikeImage(file)) {
      state.images.set(pathOf(file), file);
      images++;
    } else state.leftOut.add(pathOf(file));
  }
  if (rowsFile) await setRows(rowsFile, { imagesChanged: images > 0 });
  else await inputsChanged({ imagesChanged: true });
}

/**
 * Whatever is picked as rows is read as rows, as bytes (`jsonlLines`: a line that is not UTF-8
 * becomes the error row the native program writes). It replaces the rows picked before.
 */
async function setRows(file, { imagesChanged = false } = {}) {
  if (refuseWhileRunning()) return;
  let lines;
  try {
    lines = jsonlLines(new Uint8Array(await file.arrayBuffer()));
  } catch (e) {
    setStatus(ui.inputStatus, `${file.name} could not be read: ${e.message}`);
    return;
  }
  state.rows = { name: file.name, lines };
  state.removed = new Set();
  await inputsChanged({ imagesChanged });
}

function clearInputs() {
  if (refuseWhileRunning()) return;
  state.images = new Map();
  state.leftOut = new Set();
  state.rows = null;
  state.removed = new Set();
  inputsChanged({ reset: true });
}

/** Removes a row: the rows file's line (its line number stays), or the image of its row. */
function removeRow(index) {
  if (refuseWhileRunning()) return;
  if (state.rows) {
    state.removed.add(index);
    return inputsChanged();
  }
  state.images.delete(state.paths[index]);
  return inputsChanged({ imagesChanged: true });
}

/** While a run goes the inputs stay as they are: says so, and tells the caller to stop. */
function refuseWhileRunning() {
  if (!state.running) return false;
  setStatus(ui.inputStatus, `${inputSummary()} A run is going: pause it to change the images or rows.`);
  return true;
}

/**
 * The run's lines from the inputs: the rows file's lines (a removed one blank, so that line
 * numbers stay those of the file), else a row per image in path order. Each line's identity
 * keeps its finished output across input changes: its line number and text, or its image.
 */
function currentLines() {
  if (state.rows) {
    const lines = state.rows.lines.map((line, i) => (state.removed.has(i) ? '' : line));
    return { lines, paths: [], identities: lines.map((line, i) => `${i}:${lineText(line)}`) };
  }
  const { imageKey } = settings();
  const paths = [...state.images.keys()].sort((a, b) => a.localeCompare(b));
  return {
    lines: paths.map((path) => JSON.stringify({ [imageKey]: [path] })),
    paths,
    identities: paths.map((path) => {
      const file = state.images.get(path);
      return `${path}:${file.size}:${file.lastModified}`;
    }),
  };
}

/**
 * Recomputes the rows after an input change. Finished rows whose input is still there keep
 * their output and edits, except failed ones when the images changed (the picked image may be
 * the one that was missing); `reset` drops them all (the fields the outputs were written with
 * changed).
 */
async function inputsChanged({ reset = false, imagesChanged = false } = {}) {
  const generation = ++state.generation;
  const { lines, paths, identities } = currentLines();
  const kept = new Map();
  if (!reset) {
    state.identities.forEach((identity, i) => {
      const output = state.outputs.get(i);
      if (!output || (imagesChanged && output.outcome === 'failed')) return;
      kept.set(identity, { output, edit: state.edits.get(i) });
    });
  }
  const key = await inputKey(lines);
  if (generation !== state.generation) return; // a newer change has won
  Object.assign(state, { lines, paths, identities, key, outputs: new Map(), edits: new Map() });
  identities.forEach((identity, i) => {
    const k = kept.get(identity);
    if (!k) return;
    state.outputs.set(i, k.output);
    if (k.edit != null) state.edits.set(i, k.edit);
  });
  state.restored = restore();
  if (state.outputs.size) save();
  renderRows();
  showInputStatus();
  updateButtons();
}

const hasRows = () => state.lines.some((line, i) => !isBlank(line, i));

/** The image paths a line's row names (none for a line that is not a JSON object). */
function imagePaths(line, imageKey) {
  if (typeof line !== 'string') return [];
  try {
    const v = JSON.parse(line)?.[imageKey];
    return (Array.isArray(v) ? v : [v]).filter((p) => typeof p === 'string');
  } catch {
    return [];
  }
}

/** The images rows name that are not among the picked files, as the run will look them up. */
function missingImages() {
  const find = fileFinder([...state.images]);
  const { imageKey } = settings();
  const missing = new Set();
  let rows = 0;
  state.lines.forEach((line) => {
    const absent = imagePaths(line, imageKey).filter((path) => {
      try {
        find(path);
        return false;
      } catch {
        return true;
      }
    });
    if (absent.length) rows++;
    for (const path of absent) missing.add(path);
  });
  return { rows, missing: [...missing] };
}

/** A few names, then how many more. */
function someOf(names, shown = 3) {
  const more = names.length - shown;
  return names.slice(0, shown).join(', ') + (more > 0 ? ` and ${more} more` : '');
}

function inputSummary() {
  const rows = state.lines.filter((line, i) => !isBlank(line, i)).length;
  let text = `${state.images.size} image file(s)`;
  text += state.rows ? `, ${rows} row(s) from ${state.rows.name}` : ', one row each';
  if (state.removed.size) text += ` (${state.removed.size} removed)`;
  text += '.';
  const { rows: short, missing } = missingImages();
  if (short) text += ` ${short} row(s) name images not picked: ${someOf(missing)}.`;
  if (state.leftOut.size) text += ` Left out, not images: ${someOf([...state.leftOut])}.`;
  const kept = state.outputs.size - state.restored;
  if (state.restored) text += ` ${state.restored} row(s) restored from an earlier run.`;
  if (kept > 0) text += ` ${kept} finished row(s) kept.`;
  return text;
}

function showInputStatus() {
  setStatus(ui.inputStatus, inputSummary());
}

/** A key for this input and settings, to find an interrupted run's progress after a reload. */
async function inputKey(lines) {
  const images = [...state.images].map(([path, file]) => [path, file.size]);
  const text = JSON.stringify([lines.map(lineText), images, settings()]);
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

/** Adds the outputs stored for this input by an earlier visit; returns how many. */
function restore() {
  const saved = state.key && localStorage.getItem(state.key);
  if (!saved) return 0;
  try {
    let restored = 0;
    for (const [index, output] of JSON.parse(saved)) {
      if (index >= state.lines.length || state.outputs.has(index)) continue;
      state.outputs.set(index, output);
      restored++;
    }
    return restored;
  } catch {
    localStorage.removeItem(state.key);
    return 0;
  }
}

// ---- results ----

function renderRows() {
  for (const url of state.thumbnails) URL.revokeObjectURL(url);
  state.thumbnails = [];
  ui.results.replaceChildren();
  state.rowsByIndex = new Map();
  const find = fileFinder([...state.images]);
  const { imageKey } = settings();
  state.lines.forEach((line, index) => {
    if (isBlank(line, index)) return;
    const li = document.createElement('li');
    li.dataset.testid = 'row';
    li.dataset.index = index;
    const [first] = imagePaths(line, imageKey);
    let file = null;
    try {
      file = first === undefined ? null : find(first);
    } catch {
      // Not picked: the row shows no thumbnail (the summary names it, the run gives its error).
    }
    if (file) {
      const img = document.createElement('img');
      img.src = URL.createObjectURL(file);
      state.thumbnails.push(img.src);
      img.alt = '';
      img.loading = 'lazy';
      li.append(img);
    }
    const name = first ?? `line ${index + 1}`;
    const path = document.createElement('div');
    path.className = 'path';
    path.textContent = first ?? lineText(line).slice(0, 80);
    const caption = document.createElement('p');
    caption.className = 'caption';
    caption.dataset.testid = 'caption';
    caption.setAttribute('role', 'textbox');
    caption.setAttribute('aria-label', `Caption of ${name}`);
    caption.addEventListener('input', () => {
      state.edits.set(index, caption.textContent);
    });
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.className = 'remove';
    remove.dataset.testid = 'remove';
    remove.textContent = 'Remove';
    remove.setAttribute('aria-label', `Remove ${name}`);
    remove.disabled = state.running;
    remove.addEventListener('click', async () => {
      const position = [...ui.results.children].indexOf(li);
      await removeRow(index);
      // The next row's Remove (or the last one's) takes the focus, not the page body.
      const buttons = ui.results.querySelectorAll('.remove');
      (buttons[Math.min(position, buttons.length - 1)] ?? ui.clear).focus();
    });
    li.append(path, caption, remove);
    ui.results.append(li);
    state.rowsByIndex.set(index, li);
    const done = state.outputs.get(index);
    if (done) showResult(index, done);
  });
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
    caption.textContent = result.caption ?? captionIn(result.line);
    caption.classList.remove('error');
    caption.contentEditable = 'plaintext-only';
  }
}

/** The caption an output line already holds (a skipped row's). */
function captionIn(line) {
  try {
    const caption = JSON.parse(line)?.[settings().captionKey];
    return typeof caption === 'string' ? caption : '';
  } catch {
    return '';
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
  if (!state.captioner || state.running || !hasRows()) return;
  state.running = true;
  updateButtons();
  // Run is disabled now; the focus goes where the next key press is useful.
  ui.cancel.focus();
  let progress = null;
  let finished = false;
  try {
    const rows = state.captioner.captionRows(state.lines, [...state.images], {
      ...settings(),
      // Finished rows are not run again, and count as they came out (captioned, skipped or failed).
      done: [...state.outputs].map(([index, output]) => [index, output.outcome]),
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
    finished = !summary?.stopped;
    showProgress(summary?.progress ?? progress, finished ? 'Done' : 'Paused');
  } catch (e) {
    setStatus(ui.progressText, `The run stopped: ${e.message}`);
  } finally {
    state.running = false;
    updateButtons();
    showInputStatus();
    (finished ? ui.download : ui.run).focus();
  }
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
    .filter(({ index, line }) => !isBlank(line, index) && !state.outputs.has(index));
  const without = new Map();
  if (pending.length && state.captioner) {
    const lines = await state.captioner.outputsWithoutModel(pending, settings());
    pending.forEach(({ index }, k) => lines[k] && without.set(index, lines[k]));
  }
  // Strings and, for a line that is not UTF-8 and has no output yet, its bytes as they came.
  const parts = [];
  state.lines.forEach((line, i) => {
    if (isBlank(line, i)) return;
    parts.push(edited.get(i) ?? state.outputs.get(i)?.line ?? without.get(i) ?? withoutCr(line), '\n');
  });
  const blob = new Blob(parts, { type: 'application/jsonl' });
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = (state.rows?.name ?? 'images.jsonl').replace(/(\.[^./]*)?$/, '.captioned.jsonl');
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

/** A line without the `\r` of a CRLF file. */
function withoutCr(line) {
  if (typeof line === 'string') return line.replace(/\r$/, '');
  return line.at(-1) === 0x0d ? line.subarray(0, -1) : line;
}

function updateButtons() {
  const rows = hasRows();
  ui.run.disabled = !state.captioner || state.running || !rows;
  ui.cancel.disabled = !state.running;
  ui.download.disabled = !rows;
  for (const fieldset of ui.locked) fieldset.disabled = state.running;
  ui.drop.setAttribute('aria-disabled', String(state.running));
  for (const button of ui.results.querySelectorAll('.remove')) button.disabled = state.running;
  setStatus(ui.runHint, runHint(rows));
}

/** Why Run is disabled, or what a run does now. */
function runHint(rows) {
  if (state.running) return 'Captioning. The inputs and settings stay as they are until the run ends or is paused.';
  const needs = [];
  if (!state.captioner) needs.push(state.loading ? 'wait for the model to load' : 'load a model');
  if (!rows) needs.push('add images or a rows file');
  if (needs.length) return `To caption, ${needs.join(' and ')}.`;
  const left = state.lines.filter((line, i) => !isBlank(line, i) && !state.outputs.has(i)).length;
  if (!left) return 'Every row is finished: Download has them.';
  return state.outputs.size ? `Run goes on with the ${left} row(s) not finished.` : '';
}

// ---- wiring ----

/** A picker's files, and the picker emptied so that picking the same files again is seen. */
function takeFiles(input) {
  const files = [...input.files];
  input.value = '';
  return files;
}

ui.loadModel.addEventListener('click', loadModel);
ui.run.addEventListener('click', run);
ui.cancel.addEventListener('click', () => state.captioner?.cancel());
ui.download.addEventListener('click', download);
ui.images.addEventListener('change', () => addFiles(takeFiles(ui.images), { asImages: true }));
ui.folder.addEventListener('change', () => addFiles(takeFiles(ui.folder)));
ui.jsonl.addEventListener('change', () => {
  const [file] = takeFiles(ui.jsonl);
  if (file) setRows(file);
});
ui.clear.addEventListener('click', clearInputs);
for (const id of ['image-key', 'caption-key']) $(id).addEventListener('change', () => inputsChanged({ reset: true }));

// A file dropped anywhere else would make the browser open it in place of the page (and its run).
for (const type of ['dragover', 'drop']) window.addEventListener(type, (e) => e.preventDefault());
ui.drop.addEventListener('dragover', (e) => {
  e.preventDefault();
  if (!state.running) ui.drop.classList.add('over');
});
ui.drop.addEventListener('dragleave', () => ui.drop.classList.remove('over'));
ui.drop.addEventListener('drop', async (e) => {
  e.preventDefault();
  ui.drop.classList.remove('over');
  if (refuseWhileRunning()) return;
  addFiles(await droppedFiles(e.dataTransfer));
});
ui.drop.addEventListener('keydown', (e) => {
  if (e.key !== 'Enter' && e.key !== ' ') return;
  e.preventDefault();
  if (!refuseWhileRunning()) ui.images.click();
});
ui.drop.addEventListener('click', () => {
  if (!refuseWhileRunning()) ui.images.click();
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

updateButtons();
showCached();
if (params.has('model')) loadModel();
