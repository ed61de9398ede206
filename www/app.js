// The page: pick a model, images and optionally a JSONL file, run, watch, download.
// Everything shown from files or captions goes through textContent, never HTML.

import { Captioner, DEFAULT_MODEL_URL, PRESETS } from './captioner.js';
import { pickDevice } from './engine.js';
import { listCached, packType, planLoad, remove as removeCached, storedFiles } from './model-store.js';
import { captionFiles, csvOf, zipOf } from './export.js';
import { fileFinder, isBlank, jsonlLines, lineText, looksLikeImage, looksLikeRows, normalisePath } from './picked-files.js';
import { openProgress } from './progress-store.js';

const $ = (id) => document.getElementById(id);
const ui = {
  modelUrl: $('model-url'), modelFiles: $('model-files'), device: $('device'),
  precision: $('precision'),
  modelPlan: $('model-plan'), loadModel: $('load-model'), modelStatus: $('model-status'), modelProgress: $('model-progress'),
  cached: $('cached'), drop: $('drop'), images: $('images'), folder: $('folder'), jsonl: $('jsonl'),
  clear: $('clear'), inputStatus: $('input-status'), run: $('run'), runHint: $('run-hint'),
  cancel: $('cancel'), download: $('download'), downloadCsv: $('download-csv'),
  downloadTxt: $('download-txt'), writeTxt: $('write-txt'), exportStatus: $('export-status'), progress: $('progress'),
  progressText: $('progress-text'), results: $('results'),
  // Locked while a run goes, so that the rows it captions stay the rows shown and downloaded.
  locked: [$('model-controls'), $('input-controls'), $('settings-controls')],
};

const state = {
  captioner: null,
  // The loaded model as the stored progress tells models apart: its URL or picked files, and
  // the device and precision it runs at (another model's captions are not this one's).
  model: null,
  loading: false,
  images: new Map(), // relative path -> File; a path picked again replaces its file
  leftOut: new Set(), // paths of picked files that are neither images nor rows
  rows: null, // {name, lines}: the rows file, its lines as jsonlLines gives them
  removed: new Set(), // indexes of the rows file's lines removed by hand
  // The grid's rows, replaced whole (frozen) by each input change, never changed in place:
  lines: [], // the input lines: the rows file's, or one per image
  paths: [], // without a rows file: the image path of each line
  lineImages: [], // per line: [{path, file}], its image paths and the picked files (or null)
  identities: [], // per line: what its output is kept by (see currentLines)
  outputs: new Map(), // identity -> {line, outcome, caption, error}
  edits: new Map(), // identity -> caption typed by hand
  restored: 0, // outputs found in this browser's storage
  rowsById: new Map(), // identity -> <li>
  thumbnails: new Map(), // picked file -> its object URL, made when first shown (see renderRows)
  running: false,
  changes: Promise.resolve(), // the input changes, one after another (see inputChange)
  cancelled: false, // Cancel pressed since Run was
  key: null, // storage key of the settings the outputs were made with (for resuming after a reload)
  storageTrouble: null, // why this browser's storage refused the progress, if it did
};

/** The progress kept in this browser (progress-store.js); null where it cannot be. */
const progressStore = openProgress().catch((e) => {
  state.storageTrouble = `this browser's storage cannot be opened (${e?.message ?? e})`;
  return null;
});

/** The engine's default prompt (`DEFAULT_PROMPT` in src/engine.rs; a test keeps them equal),
 * shown in the prompt field so that what is sent is what the page shows. A row of several
 * images gets the engine's wording for several while the field holds this one. */
const DEFAULT_PROMPT = 'Describe this image in one or two sentences.';
/**
 * Models known to work, offered by name: where they come from, what they download and where
 * they run. (SmolVLM-256M-Instruct's folder is 513.0 MB, nearly all of it model.safetensors in
 * bf16; once chosen, the plan line below the choice says to the byte what the server has.)
 */
const KNOWN_MODELS = [
  {
    url: DEFAULT_MODEL_URL,
    name: 'SmolVLM-256M-Instruct',
    about: 'From Hugging Face: a 513 MB download, once. Runs on WebGPU, or on the CPU.',
  },
];

const params = new URLSearchParams(location.search);
ui.modelUrl.value = params.get('model') ?? DEFAULT_MODEL_URL;
const otherModel = document.querySelector('#model-choice input[value="other"]');
for (const { url, name, about } of KNOWN_MODELS) {
  const label = document.createElement('label');
  label.className = 'choice';
  const radio = document.createElement('input');
  Object.assign(radio, { type: 'radio', name: 'model', value: url });
  radio.dataset.testid = 'model-known';
  const text = document.createElement('span');
  const strong = document.createElement('strong');
  strong.textContent = name;
  const hint = document.createElement('span');
  hint.className = 'hint';
  hint.textContent = about;
  text.append(strong, hint);
  label.append(radio, text);
  otherModel.closest('label').before(label);
}
const modelChoices = [...document.querySelectorAll('#model-choice input')];
(modelChoices.find((r) => r.value === ui.modelUrl.value) ?? otherModel).checked = true;
$('other-model').hidden = !otherModel.checked;
if (!$('prompt').value) $('prompt').value = DEFAULT_PROMPT;
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
  state.model = null;
  updateButtons();
  const picked = [...ui.modelFiles.files];
  const source = picked.length ? { files: picked } : { modelUrl: ui.modelUrl.value.trim() };
  setStatus(ui.modelStatus, picked.length ? 'Reading the model files…' : 'Loading the model…');
  try {
    state.captioner = await Captioner.load({
      ...source,
      // This page is served unbundled, and tools/serve.mjs narrows the worker's downloads to
      // the chosen model's origin.
      modelInWorkerUrl: true,
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
          setStatus(ui.modelStatus, `Writing the ${p.type} pack for this browser’s storage…`);
        } else if (p.phase === 'download') {
          if (p.total) {
            ui.modelProgress.max = p.total;
            ui.modelProgress.value = p.loaded;
          }
          const left = p.total && p.bytesPerSecond > 0 ? `, ${formatSeconds((p.total - p.loaded) / p.bytesPerSecond)} left` : '';
          setStatus(
            ui.modelStatus,
            `Downloading ${p.file}${p.packing ? ` (packed as ${p.packing} as it arrives)` : ''}: ` +
              `${formatBytes(p.loaded)} of ${formatBytes(p.total)} (${formatBytes(p.bytesPerSecond)}/s${left})`,
          );
        } else if (p.phase === 'building') {
          setStatus(ui.modelStatus, 'Preparing the model on the device…');
        }
      },
    });
    const c = state.captioner;
    const from = picked.length
      ? picked.map((f) => [f.name, f.size, f.lastModified])
      : new URL(source.modelUrl, location.href).href;
    state.model = { from, device: c.device, precision: c.precision };
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
    showPlan();
  }
}

/**
 * Says what Load will take before it starts: the download and what stays in this browser
 * afterwards, or that the model is stored already (`planLoad`), or the picked files' size.
 */
let plans = 0; // the latest plan asked for: an older one's answer is dropped
async function showPlan() {
  const asked = ++plans;
  const say = (text) => asked === plans && setStatus(ui.modelPlan, text);
  const picked = [...ui.modelFiles.files];
  if (picked.length) {
    const bytes = picked.reduce((n, f) => n + f.size, 0);
    return say(
      `${picked.length} picked file${picked.length === 1 ? '' : 's'}, ${formatBytes(bytes)}, read from ` +
        'your disk: nothing is downloaded or kept in this browser.',
    );
  }
  const url = ui.modelUrl.value.trim();
  if (!url) return say('');
  try {
    // (Without WebGPU, asking for it fails at Load, which says why.)
    const { device } = await pickDevice(ui.device.value).catch(() => ({ device: 'webgpu' }));
    say(planText(await planLoad(url, { pack: packType(ui.precision.value, device) })));
  } catch (e) {
    say(`The model’s size is not known: ${e.message}.`);
  }
}

function planText({ name, stored, download, kept, form }) {
  const as = form === 'original' ? 'its own files' : `its ${form} pack`;
  if (stored) {
    return `${name}: kept in this browser${kept != null ? `, ${formatBytes(kept)}` : ''}; no download.`;
  }
  const size =
    download != null ? `${formatBytes(download)} download once` : 'a download of a size the server does not say';
  const estimate = form === 'original' ? '' : 'about ';
  const after = kept != null ? `${estimate}${formatBytes(kept)} kept (${as})` : `${as} kept`;
  return `${name}: ${size}, ${after} in this browser.`;
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
      showPlan();
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
 * What tells one file from another when its path cannot: its name, size and time of change. The
 * same file picked twice (by folder and by name) has the same key; another file at the same
 * path almost always has another.
 */
const fileKey = (file) => `${file.name}\u0000${file.size}\u0000${file.lastModified}`;

/**
 * Queues an input change (`change`, which may read files and await) unless a run goes. Changes
 * run one after another, each on the inputs the one before left, and Run waits for the queue
 * before it takes its snapshot: a run never starts on lines a change is about to replace, and
 * no change lands while it goes. What a change needs from its event (a picker's files, a drop's
 * items) is taken before it is queued.
 */
function inputChange(change) {
  if (refuseWhileRunning()) return;
  const done = state.changes.then(change);
  state.changes = done.catch((e) => setStatus(ui.inputStatus, `The change failed: ${e.message ?? e}`));
  return done;
}

/**
 * Two 32-bit FNV-1a style hashes of `text` and its length: a line's text in its identity
 * without holding (and storing) a second copy of a long line.
 */
function textHash(text) {
  let a = 0x811c9dc5;
  let b = 0x9e3779b9 ^ text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
  }
  return `${(a >>> 0).toString(36)}.${(b >>> 0).toString(36)}.${text.length}`;
}

/** Whether paths `a` and `b` name one file picked by folder and by name (`dir/a.jpg`, `a.jpg`). */
const samePick = (a, b) => a.endsWith(`/${b}`) || b.endsWith(`/${a}`);

/**
 * Files from the image pickers or a drop. Images join the list: the same path again replaces
 * its file (and says so when it is another file), and a file already picked under another path
 * (by folder, then by name) is not added twice. Rows files: one given alone becomes the rows; one
 * among other files (a folder) becomes the rows only when there are none yet; several are all
 * left unused. Whatever is not used is named. From a folder or a drop, anything else is left out
 * and named. `asImages`: the image picker's files are images whatever their names (a file that
 * is not one becomes that row's error).
 */
async function addFiles(files, { asImages = false } = {}) {
  const notes = [];
  const rowsFiles = [];
  // Paths by file: the same file again under a path that is the other's with its folder.
  const pickedAs = new Map();
  const remember = (path, file) => pickedAs.set(fileKey(file), [...(pickedAs.get(fileKey(file)) ?? []), path]);
  for (const [path, file] of state.images) remember(path, file);
  const already = [];
  const replaced = [];
  let images = 0;
  for (const file of files) {
    const path = pathOf(file);
    if (looksLikeRows(file)) {
      rowsFiles.push(file);
    } else if (asImages || looksLikeImage(file)) {
      const other = (pickedAs.get(fileKey(file)) ?? []).find((p) => samePick(p, path));
      if (other != null) {
        already.push(`${path} (as ${other})`);
        continue;
      }
      const before = state.images.get(path);
      if (before && fileKey(before) !== fileKey(file)) replaced.push(path);
      state.images.set(path, file);
      remember(path, file);
      images++;
    } else state.leftOut.add(path);
  }
  if (already.length) notes.push(`Already picked, not added again: ${someOf(already)}.`);
  if (replaced.length) notes.push(`Replaced by another file of the same path: ${someOf(replaced)}.`);
  const alone = files.length === 1 && rowsFiles.length === 1;
  const rowsFile = rowsFiles.length === 1 && (alone || !state.rows) ? rowsFiles[0] : null;
  if (rowsFiles.length && !rowsFile) {
    const why = rowsFiles.length > 1
      ? 'several rows files came together'
      : `the rows are from ${state.rows.name}`;
    notes.push(
      `Not used as rows (${why}; pick one with “Rows” to use it): ${someOf(rowsFiles.map(pathOf))}.`,
    );
  }
  if (rowsFile) await setRows(rowsFile, { imagesChanged: images > 0, notes });
  else await inputsChanged({ imagesChanged: true, notes });
}

/**
 * Whatever is picked as rows is read as rows, as bytes (`jsonlLines`: a line that is not UTF-8
 * becomes the error row the native program writes). It replaces the rows picked before, and
 * says so.
 */
async function setRows(file, { imagesChanged = false, notes = [] } = {}) {
  let lines;
  try {
    lines = jsonlLines(new Uint8Array(await file.arrayBuffer()));
  } catch (e) {
    // The rows stay as they were; images that came with the file still count.
    notes.push(`${file.name} could not be read: ${e.message}.`);
    return inputsChanged({ imagesChanged, notes });
  }
  if (state.rows) notes.push(`The rows from ${state.rows.name} were replaced by ${file.name}.`);
  state.rows = { name: file.name, lines };
  state.removed = new Set();
  await inputsChanged({ imagesChanged, notes });
}

function clearInputs() {
  state.images = new Map();
  state.leftOut = new Set();
  state.rows = null;
  state.removed = new Set();
  return inputsChanged({ reset: true });
}

/**
 * Removes the row `id`: the rows file's line (its line number stays), or the image of its row.
 * By identity: a row that a change before it replaced is not there to remove.
 */
function removeRow(id) {
  const index = state.identities.indexOf(id);
  if (index < 0) return;
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
 * numbers stay those of the file), else a row per image in path order. Each line's identity is
 * what its finished output is kept by: its line number, its text (hashed) and the picked files
 * its images resolve to (another picture at the same path is another row), or, without a rows
 * file, its image's path and file. The arrays are frozen: a change replaces them.
 */
function currentLines() {
  const { imageKey } = settings();
  if (state.rows) {
    const find = fileFinder([...state.images]);
    const lines = state.rows.lines.map((line, i) => (state.removed.has(i) ? '' : line));
    // Each line is parsed here once; the grid and the summary of missing images read this.
    const images = lines.map((line) =>
      Object.freeze(
        imagePaths(line, imageKey).map((path) => {
          try {
            return { path, file: find(path) };
          } catch {
            return { path, file: null };
          }
        }),
      ),
    );
    const identities = lines.map((line, i) =>
      [i, textHash(lineText(line)), ...images[i].map(({ file }) => (file ? fileKey(file) : ''))].join('\u0000'),
    );
    return {
      lines: Object.freeze(lines),
      paths: Object.freeze([]),
      images: Object.freeze(images),
      identities: Object.freeze(identities),
    };
  }
  const paths = [...state.images.keys()].sort((a, b) => a.localeCompare(b));
  return {
    lines: Object.freeze(paths.map((path) => JSON.stringify({ [imageKey]: [path] }))),
    paths: Object.freeze(paths),
    images: Object.freeze(paths.map((path) => Object.freeze([{ path, file: state.images.get(path) }]))),
    identities: Object.freeze(paths.map((path) => `${path}\u0000${fileKey(state.images.get(path))}`)),
  };
}

/**
 * Recomputes the rows after an input change. Finished rows whose identity is still there keep
 * their output and edits, except failed ones when the images changed (the picked image may be
 * the one that was missing); `reset` drops them all (the fields the outputs were written with
 * changed). `notes` say what the change did besides (see addFiles), in the status line.
 */
async function inputsChanged({ reset = false, imagesChanged = false, notes = [] } = {}) {
  const { lines, paths, images, identities } = currentLines();
  const key = await progressKey();
  const stored = await storedProgress(key, identities);
  const still = new Set(identities);
  // A failed row is tried again once the images changed: the missing or broken one may be back.
  const retry = (output) => imagesChanged && output.outcome === 'failed';
  const keep = (output, id) => !reset && still.has(id) && !retry(output);
  const outputs = new Map([...state.outputs].filter(([id, output]) => keep(output, id)));
  const edits = new Map([...state.edits].filter(([id]) => outputs.has(id)));
  // Finished rows kept on the page are stored under these settings too, where they are not yet.
  for (const id of outputs.keys()) if (!stored.has(id)) saveSoon(key, id);
  let restored = 0;
  for (const [id, { output, edit }] of stored) {
    if (outputs.has(id) || retry(output)) continue;
    outputs.set(id, output);
    if (typeof edit === 'string') edits.set(id, edit);
    restored++;
  }
  Object.assign(state, { lines, paths, lineImages: images, identities, key, outputs, edits, restored });
  renderRows();
  showInputStatus(notes);
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
  const missing = new Set();
  let rows = 0;
  for (const images of state.lineImages) {
    const absent = images.filter(({ file }) => !file);
    if (absent.length) rows++;
    for (const { path } of absent) missing.add(path);
  }
  return { rows, missing: [...missing] };
}

/** A few names, then how many more. */
function someOf(names, shown = 3) {
  const more = names.length - shown;
  return names.slice(0, shown).join(', ') + (more > 0 ? ` and ${more} more` : '');
}

/** The inputs in a sentence or two, with `notes` on what the last change did. */
function inputSummary(notes = []) {
  const rows = state.lines.filter((line, i) => !isBlank(line, i)).length;
  let text = `${state.images.size} image file(s)`;
  text += state.rows ? `, ${rows} row(s) from ${state.rows.name}` : ', one row each';
  if (state.removed.size) text += ` (${state.removed.size} removed)`;
  text += '.';
  for (const note of notes) text += ` ${note}`;
  const { rows: short, missing } = missingImages();
  if (short) text += ` ${short} row(s) name images not picked: ${someOf(missing)}.`;
  if (state.leftOut.size) text += ` Left out, not images: ${someOf([...state.leftOut])}.`;
  const kept = state.outputs.size - state.restored;
  if (state.restored) text += ` ${state.restored} row(s) restored from an earlier run.`;
  if (kept > 0) text += ` ${kept} finished row(s) kept.`;
  if (state.storageTrouble) {
    text += ` The progress cannot be kept in this browser: ${state.storageTrouble}. A reload will` +
      ' not bring the finished rows back; download them before leaving.';
  }
  return text;
}

function showInputStatus(notes = []) {
  setStatus(ui.inputStatus, inputSummary(notes));
}

/**
 * The key the outputs are stored under: a digest of the settings and the model that shape
 * them. Rows are told apart by their identities (currentLines), so a row added or removed
 * changes no other row's record.
 */
async function progressKey() {
  const shaping = { ...settings(), model: state.model ?? undefined };
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(JSON.stringify(shaping)));
  return 'settings:' + [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/** The outputs (and hand edits) this browser keeps for `identities` under `key`, by identity. */
async function storedProgress(key, identities) {
  try {
    return (await (await progressStore)?.read(key, identities)) ?? new Map();
  } catch (e) {
    state.storageTrouble = `reading it failed (${e?.message ?? e})`;
    return new Map();
  }
}

/**
 * Rows whose output or hand edit changed and are not stored yet: settings key -> identities.
 * They are written at most once a second while a run goes or the user types (each write is a
 * transaction, and a row's caption arrives many times a second on a fast model), and at once
 * when a run ends or the page is hidden.
 */
const unsaved = new Map();
let saveTimer = null;
function saveSoon(key, id) {
  if (!unsaved.has(key)) unsaved.set(key, new Set());
  unsaved.get(key).add(id);
  saveTimer ??= setTimeout(saveNow, 1000);
}
async function saveNow() {
  clearTimeout(saveTimer);
  saveTimer = null;
  const writes = [...unsaved].map(([key, ids]) => [
    key,
    // A row no longer on the page (removed, or its inputs changed) keeps what was stored.
    [...ids].filter((id) => state.outputs.has(id)).map((id) => [id, { output: state.outputs.get(id), edit: state.edits.get(id) }]),
  ]);
  unsaved.clear();
  const store = await progressStore;
  if (!store) return;
  try {
    for (const [key, records] of writes) await store.write(key, records);
  } catch (e) {
    // The rows stay on the page and in the download; only a reload cannot bring them back.
    const why = e?.name === 'QuotaExceededError' ? "this browser's storage is full" : `writing it failed (${e?.message ?? e})`;
    if (state.storageTrouble !== why) {
      state.storageTrouble = why;
      if (!state.running) showInputStatus();
    }
  }
}
addEventListener('pagehide', saveNow);
document.addEventListener('visibilitychange', () => document.visibilityState === 'hidden' && saveNow());

// ---- results ----

/**
 * Thumbnails are given their image when their row comes near the view, one object URL per
 * picked file: making one is a synchronous call into the browser's blob registry, and made for
 * every row up front they took 1.2 s of the 1.9 s a grid of 5,000 rows held the page
 * (BENCHMARKS.md, "The page with thousands of rows").
 */
const thumbnailOf = new WeakMap(); // <li> -> [its <img>, the file it shows]
const nearView = new IntersectionObserver(
  (entries) => {
    for (const { target, isIntersecting } of entries) {
      if (!isIntersecting) continue;
      nearView.unobserve(target);
      const [img, file] = thumbnailOf.get(target) ?? [];
      if (!img) continue;
      if (!state.thumbnails.has(file)) state.thumbnails.set(file, URL.createObjectURL(file));
      img.src = state.thumbnails.get(file);
    }
  },
  { rootMargin: '1000px 0px' },
);

function renderRows() {
  // What the last export left out was of other rows.
  setStatus(ui.exportStatus, '');
  nearView.disconnect();
  for (const url of state.thumbnails.values()) URL.revokeObjectURL(url);
  state.thumbnails.clear();
  ui.results.replaceChildren();
  state.rowsById = new Map();
  state.lines.forEach((line, index) => {
    if (isBlank(line, index)) return;
    const id = state.identities[index];
    const li = document.createElement('li');
    li.dataset.testid = 'row';
    li.dataset.index = index;
    // An image not picked shows no thumbnail (the summary names it, the run gives its error).
    const { path: first, file } = state.lineImages[index][0] ?? {};
    if (file) {
      const img = document.createElement('img');
      img.alt = '';
      // A file the browser cannot show (not an image, or a format it lacks) shows no broken icon.
      img.addEventListener('error', () => img.remove());
      li.append(img);
      thumbnailOf.set(li, [img, file]);
      nearView.observe(li);
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
      state.edits.set(id, caption.textContent);
      saveSoon(state.key, id);
      if (li.dataset.edited == null) {
        li.dataset.edited = '';
        showCounts();
      }
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
      await inputChange(() => removeRow(id));
      // The next row's Remove (or the last one's) takes the focus, not the page body.
      const buttons = ui.results.querySelectorAll('.remove');
      (buttons[Math.min(position, buttons.length - 1)] ?? ui.clear).focus();
    });
    li.append(path, caption, remove);
    ui.results.append(li);
    state.rowsById.set(id, li);
    const done = state.outputs.get(id);
    if (done) showResult(id, done);
    if (state.edits.has(id)) li.dataset.edited = '';
  });
  showCounts();
}

/** How many rows each filter of the grid shows. */
function showCounts() {
  let failed = 0;
  let pending = 0;
  for (const id of state.rowsById.keys()) {
    const output = state.outputs.get(id);
    if (!output) pending++;
    else if (output.outcome === 'failed') failed++;
  }
  const counts = { all: state.rowsById.size, failed, edited: state.edits.size, pending };
  for (const el of document.querySelectorAll('#show [data-count]')) el.textContent = `(${counts[el.dataset.count]})`;
}

/** Shows the output of the row with identity `id`, where the grid has that row. */
function showResult(id, result) {
  const li = state.rowsById.get(id);
  if (!li) return;
  li.dataset.outcome = result.outcome ?? 'captioned';
  const caption = li.querySelector('.caption');
  if (result.error != null && result.caption == null) {
    caption.textContent = result.error;
    caption.classList.add('error');
    caption.contentEditable = 'false';
  } else {
    // A caption typed by hand is what the row holds (and what the download writes).
    caption.textContent = state.edits.get(id) ?? result.caption ?? captionIn(result.line);
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

/** The settings in one line, shown on the closed settings block. */
/** The words each choice of the Words field puts in the prompt fields. */
const WORDS = { default: { prompt: DEFAULT_PROMPT, system: '' }, ...PRESETS };

/** Which choice of the Words field the prompt fields hold: a preset's words, or your own. */
function wordsChoice() {
  const [prompt, system] = [$('prompt').value || DEFAULT_PROMPT, $('system').value];
  return Object.keys(WORDS).find((k) => WORDS[k].prompt === prompt && WORDS[k].system === system) ?? 'own';
}

function showSettings() {
  const s = settings();
  const words = wordsChoice();
  $('preset').value = words;
  const prompt =
    words === 'dataflow'
      ? 'DataFlow’s prompts'
      : `${(s.prompt ?? DEFAULT_PROMPT) === DEFAULT_PROMPT ? 'default' : 'own'} prompt${s.system ? ' and system prompt' : ''}`;
  const sampling = s.temperature === 0 ? 'greedy' : `temperature ${s.temperature ?? 0.7}, top-p ${s.topP ?? 0.9}`;
  setStatus(
    $('settings-summary'),
    `${prompt}, up to ${s.maxTokens ?? 512} new tokens, ${sampling}, seed ${s.seed ?? 42}`,
  );
}

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
  state.cancelled = false;
  updateButtons();
  // Until the first row of this run finishes, the last run's "Done" is not its status.
  setStatus(ui.progressText, 'Starting…');
  // Run is disabled now; the focus goes where the next key press is useful.
  ui.cancel.focus();
  let progress = null;
  let finished = false;
  try {
    // A change that was under way when Run was pressed (a rows file still being read, a field
    // left just before the click) lands first; none starts from now on (inputChange refuses).
    await state.changes;
    if (!hasRows()) return setStatus(ui.progressText, '');
    if (state.cancelled) return setStatus(ui.progressText, 'Paused before the first row.');
    // What the run works on, taken once: its lines, their identities and files, its settings
    // and the key its progress is stored under. Every result goes to the row of its identity,
    // never to whatever row holds its index now.
    const key = await progressKey();
    // Settings changed since the rows were picked: the finished rows count as this run's, and
    // are stored under its settings with the rest.
    if (key !== state.key) for (const id of state.outputs.keys()) saveSoon(key, id);
    state.key = key;
    const run = {
      lines: state.lines,
      ids: state.identities,
      images: [...state.images],
      settings: settings(),
      key: state.key,
    };
    const rows = state.captioner.captionRows(run.lines, run.images, {
      ...run.settings,
      // Finished rows are not run again, and count as they came out (captioned, skipped or failed).
      done: run.ids.flatMap((id, index) => {
        const output = state.outputs.get(id);
        return output ? [[index, output.outcome]] : [];
      }),
      onToken: (text, index) => {
        const li = state.rowsById.get(run.ids[index]);
        if (!li) return;
        if (current !== li) markCurrent(li);
        li.querySelector('.caption').textContent += text;
      },
      onRow: (result) => {
        const id = run.ids[result.index];
        if (current === state.rowsById.get(id)) markCurrent(null);
        state.outputs.set(id, result);
        showResult(id, result);
        progress = result.progress;
        showProgress(progress);
        saveSoon(run.key, id);
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
    markCurrent(null);
    saveNow();
    state.running = false;
    updateButtons();
    showInputStatus();
    (finished ? ui.download : ui.run).focus();
  }
}

/**
 * The row being captioned: marked, and scrolled into view when it starts, unless the user is
 * editing a caption or scrolled in the last few seconds (the page must not pull the rows from
 * under a user reading or correcting them).
 */
let current = null;
let scrolledByUser = -Infinity;
const FOLLOW_AFTER_MS = 5000;
for (const type of ['wheel', 'touchmove']) {
  window.addEventListener(type, () => (scrolledByUser = performance.now()), { passive: true });
}
window.addEventListener('keydown', (e) => {
  if (['PageUp', 'PageDown', 'Home', 'End', 'ArrowUp', 'ArrowDown', ' '].includes(e.key)) scrolledByUser = performance.now();
});
function markCurrent(li) {
  current?.classList.remove('current');
  current?.removeAttribute('aria-busy');
  current = li;
  if (!li) return;
  li.classList.add('current');
  li.setAttribute('aria-busy', 'true');
  const editing = document.activeElement?.classList.contains('caption');
  if (!editing && performance.now() - scrolledByUser > FOLLOW_AFTER_MS) li.scrollIntoView({ block: 'nearest' });
}

function showProgress(p, word) {
  showCounts();
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

/**
 * The output lines of the rows the grid shows, in their order, each as far as it got: strings,
 * and, for a line that is not UTF-8 and has no output yet, its bytes as they came.
 */
async function outputLines() {
  const { captionKey } = settings();
  const { lines, identities } = state;
  const outputOf = (i) => state.outputs.get(identities[i]);
  const edits = lines
    .map((_, i) => i)
    .filter((i) => outputOf(i) && state.edits.has(identities[i]))
    .map((i) => ({ index: i, line: outputOf(i).line, caption: state.edits.get(identities[i]) }));
  const edited = new Map();
  if (edits.length && state.captioner) {
    const out = await state.captioner.setCaptions(edits, { captionKey });
    edits.forEach((e, k) => edited.set(e.index, out[k]));
  }
  // Rows not reached yet get what they would get without the model (a malformed line its
  // error row) or go out as they came in, so the file is whole and valid at any time.
  const pending = lines
    .map((line, index) => ({ index, line }))
    .filter(({ index, line }) => !isBlank(line, index) && !outputOf(index));
  const without = new Map();
  if (pending.length && state.captioner) {
    const out = await state.captioner.outputsWithoutModel(pending, settings());
    pending.forEach(({ index }, k) => out[k] && without.set(index, out[k]));
  }
  return lines
    .map((line, i) => (isBlank(line, i) ? null : edited.get(i) ?? outputOf(i)?.line ?? without.get(i) ?? withoutCr(line)))
    .filter((line) => line !== null);
}

/** Offers `blob` as a download named after the rows file (or `images`) with `suffix`. */
function offer(blob, suffix) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = (state.rows?.name ?? 'images.jsonl').replace(/(\.[^./]*)?$/, suffix);
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

/** The JSONL of the rows the grid shows. */
async function download() {
  const parts = (await outputLines()).flatMap((line) => [line, '\n']);
  offer(new Blob(parts, { type: 'application/jsonl' }), '.captioned.jsonl');
}

/** The output lines as text (a line that is not UTF-8 read as well as it goes). */
async function outputTexts() {
  const decoder = new TextDecoder();
  return (await outputLines()).map((line) => (typeof line === 'string' ? line : decoder.decode(line)));
}

/** The same rows as a CSV, for a spreadsheet. */
async function downloadCsv() {
  try {
    offer(new Blob([csvOf(await outputTexts())], { type: 'text/csv' }), '.captioned.csv');
    setStatus(ui.exportStatus, '');
  } catch (e) {
    setStatus(ui.exportStatus, `The CSV could not be made: ${e.message}`);
  }
}

/** A caption file beside each image (a zip of `.txt` files named after the images). */
async function downloadCaptionFiles() {
  try {
    const { files, left, notOnWindows } = captionFiles(await outputTexts(), settings());
    if (files.length) offer(zipOf(files), '.captions.zip');
    const skipped = [
      left.uncaptioned && `${left.uncaptioned} without a caption`,
      left.noImage && `${left.noImage} without an image path`,
      left.severalImages && `${left.severalImages} with several images (one caption for them all fits none alone)`,
      left.sameFile && `${left.sameFile} whose file another row's takes (the same image, or the same name)`,
    ].filter(Boolean);
    setStatus(
      ui.exportStatus,
      `${files.length ? `${files.length} caption file(s) in the zip` : 'No caption files: no row has a caption and one image'}` +
        (skipped.length ? `; rows left out: ${skipped.join(', ')}.` : '.') +
        (notOnWindows.length
          ? ` Windows cannot unpack ${notOnWindows.length} of them, named as their images are ` +
            `(${someOf(notOnWindows)}); they unpack on the system the images are on.`
          : ''),
    );
  } catch (e) {
    setStatus(ui.exportStatus, `The caption files could not be made: ${e.message}`);
  }
}

/**
 * Writes the caption files straight into a folder the user grants (File System Access), each
 * beside its image: the folder the images were picked from, whose own name, first in the paths
 * of a folder pick, is dropped. A .txt that is there already is replaced only when the user
 * says so, once for them all; otherwise it is kept and the others are written.
 */
async function writeCaptionFiles() {
  let folder;
  try {
    folder = await window.showDirectoryPicker({ id: 'captioner-captions', mode: 'readwrite' });
  } catch (e) {
    if (e.name !== 'AbortError') setStatus(ui.exportStatus, `No folder to write into: ${e.message}`);
    return;
  }
  try {
    const { files, left, notOnWindows } = captionFiles(await outputTexts(), settings());
    const within = (name) => (name.startsWith(`${folder.name}/`) ? name.slice(folder.name.length + 1) : name);
    // Each file looked up once: the handle of one that is there already is the one written.
    const planned = [];
    for (const { name, text } of files) {
      const path = within(name);
      planned.push({ path, text, handle: await fileIn(folder, path, { create: false }) });
    }
    const there = planned.filter((file) => file.handle);
    const replace =
      there.length > 0 &&
      window.confirm(
        `${there.length} of the ${planned.length} caption files are in ${folder.name} already ` +
          `(${someOf(there.map((f) => f.path))}). Replace them? Cancel keeps them and writes the others.`,
      );
    let written = 0;
    for (const file of planned) {
      if (file.handle && !replace) continue;
      const handle = file.handle ?? (await fileIn(folder, file.path, { create: true }));
      const writable = await handle.createWritable();
      await writable.write(file.text);
      await writable.close();
      written++;
    }
    const kept = there.length && !replace ? `; ${there.length} already there kept as they were` : '';
    const out = left.uncaptioned + left.noImage + left.severalImages + left.sameFile;
    setStatus(
      ui.exportStatus,
      `${written} caption file(s) written into ${folder.name}${kept}` +
        (out ? `; ${out} row(s) have no caption file (as for the zip).` : '.'),
    );
  } catch (e) {
    setStatus(ui.exportStatus, `The caption files could not all be written into ${folder.name}: ${e.message}`);
  }
}

/** The handle of the file at `path` ('a/b.txt') under `folder`, or null where `create` is false and it is not there. */
async function fileIn(folder, path, { create }) {
  const parts = path.split('/');
  try {
    for (const part of parts.slice(0, -1)) folder = await folder.getDirectoryHandle(part, { create });
    return await folder.getFileHandle(parts.at(-1), { create });
  } catch (e) {
    if (!create && (e.name === 'NotFoundError' || e.name === 'TypeMismatchError')) return null;
    throw e;
  }
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
  ui.downloadCsv.disabled = !rows;
  ui.downloadTxt.disabled = !rows;
  ui.writeTxt.disabled = !rows;
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
  const left = state.lines.filter((line, i) => !isBlank(line, i) && !state.outputs.has(state.identities[i])).length;
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
let typing = null;
ui.modelUrl.addEventListener('input', () => {
  clearTimeout(typing);
  typing = setTimeout(showPlan, 400);
});
for (const control of [ui.modelFiles, ui.device, ui.precision]) control.addEventListener('change', showPlan);
// A named model fills in its address; "Another model" shows the address and the file picker.
for (const radio of modelChoices) {
  radio.addEventListener('change', () => {
    $('other-model').hidden = radio !== otherModel;
    if (radio !== otherModel) {
      ui.modelUrl.value = radio.value;
      ui.modelFiles.value = '';
    }
    showPlan();
  });
}
ui.run.addEventListener('click', run);
ui.cancel.addEventListener('click', () => {
  // (A run still waiting for an input change has nothing in the worker to cancel yet.)
  state.cancelled = true;
  state.captioner?.cancel();
});
ui.download.addEventListener('click', download);
ui.downloadCsv.addEventListener('click', downloadCsv);
ui.downloadTxt.addEventListener('click', downloadCaptionFiles);
ui.writeTxt.hidden = typeof window.showDirectoryPicker !== 'function';
ui.writeTxt.addEventListener('click', writeCaptionFiles);
// Every input change goes through inputChange: refused while a run goes, waited for by Run.
ui.images.addEventListener('change', () => {
  const files = takeFiles(ui.images);
  inputChange(() => addFiles(files, { asImages: true }));
});
ui.folder.addEventListener('change', () => {
  const files = takeFiles(ui.folder);
  inputChange(() => addFiles(files));
});
ui.jsonl.addEventListener('change', () => {
  const [file] = takeFiles(ui.jsonl);
  if (file) inputChange(() => setRows(file));
});
ui.clear.addEventListener('click', () => inputChange(clearInputs));
// (The Words field's own events are its change handler's below.)
$('settings-controls').addEventListener('input', (e) => e.target !== $('preset') && showSettings());
// A preset fills the prompt fields with its words; editing them makes them your own.
$('preset').addEventListener('change', () => {
  const words = WORDS[$('preset').value];
  if (!words) return $('prompt').focus(); // "Your own": the prompt, to type it
  $('prompt').value = words.prompt;
  $('system').value = words.system;
  showSettings();
});
$('show').addEventListener('change', (e) => (ui.results.dataset.show = e.target.value));
for (const id of ['image-key', 'caption-key']) {
  $(id).addEventListener('change', () => inputChange(() => inputsChanged({ reset: true })));
}

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
  // The drop's items can only be read while its event is current: droppedFiles takes them
  // before its first await.
  const files = droppedFiles(e.dataTransfer);
  inputChange(async () => addFiles(await files));
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
showSettings();
showCached();
showPlan();
if (params.has('model')) loadModel();
