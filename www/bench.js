// The benchmark page: reads its settings from the form (or the URL), runs each precision in a
// worker of its own, shows the table and offers the JSON. `window.benchResult` resolves to the
// JSON document (automation reads it: tools/bench_wllama.mjs, tests/browser/bench.test.mjs).

import { DEFAULT_MODEL_URL } from './model-store.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
for (const key of ['model', 'synthetic', 'precision', 'device', 'runs']) {
  if (params.has(key)) $(key).value = params.get(key);
}
if (!$('model').value) $('model').value = DEFAULT_MODEL_URL;

let resolveResult;
window.benchResult = new Promise((resolve) => (resolveResult = resolve));

const numbers = (key) => params.get(key)?.split(',').map(Number);
function settings() {
  const s = { runs: Number($('runs').value) };
  const map = { warmup: 'warmup', prefill: 'prefillTokens', decode: 'decodeTokens', caption: 'captionTokens', edge: 'longestEdge', temperature: 'temperature', top_p: 'topP' };
  for (const [param, key] of Object.entries(map)) if (params.has(param)) s[key] = Number(params.get(param));
  if (params.has('contexts')) s.contexts = numbers('contexts');
  if ($('synthetic').value) s.synthetic = $('synthetic').value;
  return s;
}

/** Runs one precision in a fresh worker; `onStage` hears what it is doing. */
function runOne(message, onStage) {
  return new Promise((resolve, reject) => {
    const worker = new Worker('bench-worker.js', { type: 'module' });
    worker.onmessage = ({ data }) => {
      if (data.stage) return onStage(data);
      worker.terminate();
      data.error ? reject(new Error(data.error)) : resolve(data.report);
    };
    worker.onerror = (e) => {
      worker.terminate();
      reject(new Error(e.message || 'the benchmark worker failed'));
    };
    worker.postMessage(message);
  });
}

async function machine() {
  const adapter = navigator.gpu ? await navigator.gpu.requestAdapter() : null;
  const info = adapter?.info ?? {};
  return {
    userAgent: navigator.userAgent,
    threads: navigator.hardwareConcurrency,
    gpu: adapter ? { vendor: info.vendor, architecture: info.architecture, description: info.description } : null,
  };
}

const fmt = (s, unit) => (s ? `${s.median.toFixed(1)} ${unit} ±${((100 * (s.max - s.min)) / 2 / s.median).toFixed(0)}%` : '-');
const mb = (b) => (b == null ? '-' : `${(b / 1e6).toFixed(1)} MB`);
function show(reports) {
  const rows = [
    ['precision', (r) => r.precision],
    ['model size', (r) => mb(r.model_bytes)],
    ['CPU kernel threads', (r) => String(r.kernel_threads ?? 1)],
    ['load', (r) => `${r.load_ms.toFixed(0)} ms`],
    ['first caption (incl. load)', (r) => `${r.first_caption_ms.toFixed(0)} ms, ${r.first_caption_tokens} tok`],
    ['preprocess', (r) => fmt(r.preprocess_ms, 'ms')],
    ['vision + connector / tile', (r) => fmt(r.vision_ms_per_tile, 'ms')],
    ['prefill', (r) => fmt(r.prefill_tokens_per_s, 'tok/s')],
    ...(reports[0]?.decode ?? []).map((d, i) => [`decode @ ${d.context} ctx`, (r) => fmt(r.decode[i]?.tokens_per_s, 'tok/s')]),
    ['GPU weights / peak', (r) => (r.gpu_memory ? `${mb(r.gpu_memory.after_load_in_use)} / ${mb(r.gpu_memory.peak_reserved)}` : '-')],
  ];
  $('table').replaceChildren(
    ...rows.map(([label, cell]) => {
      const tr = document.createElement('tr');
      const th = document.createElement('th');
      th.textContent = label;
      tr.append(th, ...reports.map((r) => Object.assign(document.createElement('td'), { textContent: cell(r) })));
      return tr;
    }),
  );
}

async function run() {
  $('start').disabled = true;
  const reports = [];
  try {
    const model = new URL($('model').value, location.href).href;
    const precisions = $('precision').value.split(',').map((p) => p.trim());
    for (const [i, precision] of precisions.entries()) {
      const started = performance.now();
      let doing = 'starting';
      const say = () => {
        const seconds = Math.round((performance.now() - started) / 1000);
        $('status').textContent = `${precision} (${i + 1} of ${precisions.length}): ${doing}, ${seconds} s so far…`;
      };
      say();
      const ticker = setInterval(say, 1000);
      // `?threads=N` caps the CPU kernel's threads (1: the single-threaded build), for a
      // before/after in one session; by default it gets every core the page allows.
      const threads = params.has('threads') ? Number(params.get('threads')) : undefined;
      const onStage = (s) => {
        doing = s.stage === 'download'
          ? `downloading the model, ${mb(s.loaded)} of ${mb(s.total)}`
          : `loading, a first caption, then ${settings().runs} timed run(s) of each stage on ` +
            (s.device === 'cpu' ? `the CPU (${s.threads} thread${s.threads === 1 ? '' : 's'})` : 'WebGPU') +
            (s.note ? `: ${s.note}` : '');
        say();
      };
      try {
        reports.push(await runOne({ model, device: $('device').value, precision, threads, settings: settings() }, onStage));
      } finally {
        clearInterval(ticker);
      }
      show(reports);
    }
    const doc = { captioner: 'browser', machine: await machine(), options: settings(), reports };
    const blob = new Blob([JSON.stringify(doc, null, 2)], { type: 'application/json' });
    Object.assign($('download'), { href: URL.createObjectURL(blob), hidden: false });
    $('status').textContent = 'Done.';
    document.body.dataset.state = 'done';
    resolveResult(doc);
  } catch (e) {
    $('status').textContent = `Failed: ${e.message}`;
    document.body.dataset.state = 'error';
    resolveResult({ error: e.message, reports });
  } finally {
    $('start').disabled = false;
  }
}

$('form').addEventListener('submit', (e) => {
  e.preventDefault();
  run();
});
if (params.get('run') === '1') run();
