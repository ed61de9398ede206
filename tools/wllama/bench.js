// wllama (llama.cpp in WebAssembly, npm @wllama/wllama) measured the way `captioner bench`
// measures Captioner: prefill tokens/s for a prompt of `prefill` tokens, and decode tokens/s for
// `decode` tokens after `contexts` tokens of prompt, `runs` times each after `warmup` runs that
// are not counted. Figures are llama.cpp's own timings (llama-server's `timings` object).
//
// URL: ?model=<gguf url>&gpu=0|1&threads=N&runs=3&warmup=1&prefill=128&contexts=32,256&decode=32

import { Wllama } from '/wllama/index.js';

const params = new URLSearchParams(location.search);
const number = (key, fallback) => (params.has(key) ? Number(params.get(key)) : fallback);
const settings = {
  model: params.get('model'),
  gpu: params.get('gpu') === '1',
  threads: number('threads', navigator.hardwareConcurrency),
  runs: number('runs', 3),
  warmup: number('warmup', 1),
  prefill: number('prefill', 128),
  contexts: (params.get('contexts') ?? '32,256').split(',').map(Number),
  decode: number('decode', 32),
};

const log = (line) => (document.getElementById('log').textContent += line + '\n');

// A prompt of about `n` tokens: " the" is one token in SmolLM2's (GPT-2 style) vocabulary. A
// different first letter for every prompt keeps the server's prompt cache from reusing a prefix
// (checked: `cache_n` must be 0); llama.cpp reports the tokens it really evaluated (`prompt_n`),
// and that is what is recorded.
let prompts = 0;
const prompt = (n) => String.fromCharCode(65 + (prompts++ % 26)) + ' the'.repeat(Math.max(n - 1, 1));

function stat(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { median, min: sorted[0], max: sorted[sorted.length - 1], samples };
}

async function measure(wllama, what, promptTokens, newTokens, pick) {
  const samples = [];
  const evaluated = [];
  for (let run = 0; run < settings.warmup + settings.runs; run++) {
    const response = await wllama.createCompletion({
      prompt: prompt(promptTokens),
      cache_prompt: false,
      max_tokens: newTokens,
      temperature: 0,
      ignore_eos: true,
    });
    const t = response.timings;
    if (!t) throw new Error('wllama returned no timings');
    if (t.cache_n) throw new Error(`${what}: ${t.cache_n} prompt tokens came from the cache`);
    if (run >= settings.warmup) {
      samples.push(pick(t));
      evaluated.push([t.prompt_n, t.predicted_n]);
    }
  }
  log(`${what}: ${stat(samples).median.toFixed(1)} tokens/s (prompt, generated: ${JSON.stringify(evaluated)})`);
  return { ...stat(samples), prompt_tokens: evaluated[0][0], generated_tokens: evaluated[0][1] };
}

// llama.cpp's own log, kept rather than printed: it is the only place that says where the model
// really went. Asking for `n_gpu_layers` is not enough: when ggml's WebGPU backend cannot get a
// device (it requires `shader-f16`, which SwiftShader lacks), llama.cpp loads everything on the
// CPU without an error, so a "WebGPU" run would silently be a CPU run.
const nativeLog = [];
const keep = (...args) => nativeLog.push(args.map(String).join(' '));
const logger = { debug: keep, log: keep, warn: keep, error: (...args) => { keep(...args); console.error(...args); } };

// The buffer types llama.cpp put the weights in ("CPU", or a GPU backend's name), from lines like
// "load_tensors:          CPU model buffer size =    92.10 MiB".
function modelBuffers() {
  const names = nativeLog.flatMap((line) => [...line.matchAll(/(\S+) model buffer size/g)].map((m) => m[1]));
  return [...new Set(names)];
}

async function run() {
  const adapter = await navigator.gpu?.requestAdapter();
  const wllama = new Wllama({ default: '/wllama/wasm/wllama.wasm' }, { suppressNativeLog: false, logger });
  const started = performance.now();
  await wllama.loadModelFromUrl(new URL(settings.model, location.href).href, {
    n_ctx: 1024,
    n_threads: settings.threads,
    n_gpu_layers: settings.gpu ? 999 : 0,
  });
  const loadMs = performance.now() - started;
  const buffers = modelBuffers();
  if (!buffers.length) throw new Error('llama.cpp logged no model buffer, so where the model runs is unknown');
  const onGpu = buffers.some((name) => name !== 'CPU');
  log(`loaded in ${loadMs.toFixed(0)} ms, WebGPU asked: ${settings.gpu}, model buffers: ${buffers.join(', ')}`);
  const prefill = await measure(wllama, `prefill ${settings.prefill}`, settings.prefill, 1, (t) => t.prompt_per_second);
  const decode = [];
  for (const context of settings.contexts) {
    const tps = await measure(wllama, `decode @ ${context}`, context, settings.decode, (t) => t.predicted_per_second);
    decode.push({ context, tokens_per_s: tps });
  }
  const threads = wllama.isMultithread() ? wllama.getNumThreads() : 1;
  await wllama.exit();
  return {
    engine: `wllama 3.8.1 (llama.cpp ${Wllama.getLibllamaVersion()})`,
    // What ran, not what was asked for.
    backend: onGpu ? 'WebGPU' : 'wasm CPU',
    webgpu_requested: settings.gpu,
    model_buffers: buffers,
    // Chromium 156 has `isFallbackAdapter` on `adapter.info` (as www/worker.js reads it), older
    // browsers on the adapter.
    adapter: adapter
      ? { fallback: adapter.info?.isFallbackAdapter ?? adapter.isFallbackAdapter, shader_f16: adapter.features.has('shader-f16') }
      : null,
    threads,
    cross_origin_isolated: self.crossOriginIsolated,
    settings,
    load_ms: loadMs,
    prefill_tokens_per_s: prefill,
    decode,
  };
}

window.wllamaResult = run().catch((e) => {
  log(`failed: ${e?.message ?? e}`);
  return { error: String(e?.message ?? e) };
});
