// tools/bench_wllama.mjs in its smallest configuration, so the side-by-side cannot rot: wllama
// (npm @wllama/wllama, cross-origin isolated, multi-threaded) and Captioner's bench.html both
// run on the real SmolLM2 GGUF in one headless Chromium, every figure is there, and the table
// prints the ratios. The figures themselves go in BENCHMARKS.md.
//
// Needs: `www/pkg/` built, Chromium at /usr/bin/chromium, the SmolLM2 GGUF (scripts/setup.sh
// downloads it and sets CAPTIONER_SMOLLM2_GGUF).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const gguf = process.env.CAPTIONER_SMOLLM2_GGUF;

const positive = (x, what) => assert.ok(Number.isFinite(x) && x > 0, `${what} = ${x}`);
function checkStat(s, what) {
  positive(s.median, what);
  assert.ok(s.min <= s.median && s.median <= s.max, `${what}: ${JSON.stringify(s)}`);
  assert.equal(s.samples.length, 1, `${what}: one run, the warm-up not counted`);
}

test('bench_wllama.mjs runs wllama and Captioner on the same GGUF and prints ratios', { skip: !gguf && 'CAPTIONER_SMOLLM2_GGUF is not set' }, () => {
  const out = mkdtempSync(join(tmpdir(), 'captioner-wllama-'));
  try {
    const stdout = execFileSync('node', [
      join(repo, 'tools/bench_wllama.mjs'), '--gguf', gguf, '--out', out, '--runs', '1', '--warmup', '1',
      '--prefill', '8', '--contexts', '4,12', '--decode', '3', '--wllama', 'cpu,webgpu', '--captioner', 'cpu:auto',
    ], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 15 * 60 * 1000 });
    console.log(stdout);

    const [wllama, wllamaGpu] = JSON.parse(readFileSync(join(out, 'wllama.json'), 'utf8'));
    assert.match(wllama.engine, /^wllama 3\.8\.1 \(llama\.cpp b\d+/);
    assert.equal(wllama.backend, 'wasm CPU');
    assert.deepEqual(wllama.model_buffers, ['CPU']);
    // Asked for WebGPU, wllama is named after where llama.cpp put the weights. ggml's WebGPU
    // backend needs shader-f16; on an adapter without it (SwiftShader) llama.cpp quietly loads
    // everything on the CPU, and the row must not be called WebGPU.
    assert.equal(wllamaGpu.webgpu_requested, true);
    assert.equal(wllamaGpu.backend === 'WebGPU', wllamaGpu.model_buffers.some((b) => b !== 'CPU'));
    if (wllamaGpu.adapter && !wllamaGpu.adapter.shader_f16) {
      assert.deepEqual(wllamaGpu.model_buffers, ['CPU']);
      assert.equal(wllamaGpu.backend, 'wasm CPU');
      assert.match(readFileSync(join(out, 'table.txt'), 'utf8'), /wllama wasm CPU \(WebGPU asked\)/);
    }
    // Served cross-origin isolated, so wllama's threads are on.
    assert.equal(wllama.cross_origin_isolated, true);
    assert.ok(wllama.threads >= 1);
    checkStat(wllama.prefill_tokens_per_s, 'wllama prefill');
    assert.deepEqual(wllama.decode.map((d) => d.context), [4, 12]);
    for (const d of wllama.decode) {
      checkStat(d.tokens_per_s, `wllama decode @ ${d.context}`);
      // llama.cpp evaluated the whole prompt (no prompt-cache reuse) and generated every token.
      assert.equal(d.tokens_per_s.prompt_tokens, d.context);
      assert.equal(d.tokens_per_s.generated_tokens, 3);
    }

    const [doc] = JSON.parse(readFileSync(join(out, 'captioner.json'), 'utf8'));
    const [r] = doc.reports;
    assert.match(r.device, /flex/);
    // Served as the app is (cross-origin isolated), the CPU kernel runs on every core.
    assert.equal(r.kernel_threads, doc.machine.threads);
    checkStat(r.prefill_tokens_per_s, 'Captioner prefill');
    assert.deepEqual(r.decode.map((d) => d.context), [4, 12]);
    for (const d of r.decode) checkStat(d.tokens_per_s, `Captioner decode @ ${d.context}`);

    const table = readFileSync(join(out, 'table.txt'), 'utf8');
    assert.equal(stdout.trim(), table.trim());
    assert.match(table, /ratio to wllama wasm CPU/);
    const ratios = table.split('\n').filter((l) => l.trim().startsWith('Captioner wasm CPU')).at(-1);
    const cells = ratios.trim().split(/\s+/).slice(-3).map(Number);
    for (const x of cells) positive(x, 'ratio');
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
