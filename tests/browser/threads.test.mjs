// The browser's CPU engine on several threads (www/pkg-threads, picked by www/engine.js on a
// cross-origin isolated page) answers exactly as the native program does, on real weights
// large enough that every block product is split over the threads; without isolation it runs
// on one thread, says why, and answers the same.
//
// Needs: both wasm builds (scripts/build-web.sh), the native `captioner` binary (CAPTIONER_BIN),
// Chromium at /usr/bin/chromium, the SmolLM2 GGUF (CAPTIONER_SMOLLM2_GGUF, from scripts/setup.sh).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchChromium } from '../../tools/chromium.mjs';
import { serve } from '../../tools/serve.mjs';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const gguf = process.env.CAPTIONER_SMOLLM2_GGUF;
const skip = !gguf && 'CAPTIONER_SMOLLM2_GGUF is not set';
const PROMPT = 'Name three colours of the rainbow.';
const MAX_TOKENS = 12;

let scratch;
let browser;
before(async () => {
  scratch = mkdtempSync(join(tmpdir(), 'captioner-threads-'));
  // No WebGPU: `auto` must land on the CPU for the reason that matters here.
  browser = await launchChromium(join(scratch, 'profile'), { webgpu: false });
});
after(async () => {
  await browser?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

/** The native program's greedy answer (the same Q4_1 file, re-quantized to q4_0 as the page does). */
function nativeAnswer() {
  const bin = process.env.CAPTIONER_BIN ?? join(repo, 'target/debug/captioner');
  return execFileSync(bin, [
    'generate', '--model', gguf, '--prompt', PROMPT, '--temperature', '0', '--max-tokens', String(MAX_TOKENS),
  ], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

/** Loads the GGUF through the embedding API on a page of a server with or without COOP/COEP. */
async function answerInBrowser({ isolated }) {
  const { server, url } = await serve({ root: join(repo, 'www'), mounts: { '/gguf/': dirname(gguf) }, isolated });
  const page = await browser.newPage();
  try {
    await page.goto(`${url}/`);
    return await page.evaluate(async ({ model, prompt, maxTokens }) => {
      const { Captioner } = await import('/captioner.js');
      const c = await Captioner.load({ modelUrl: model });
      const answer = await c.chat(prompt, { temperature: 0, maxTokens });
      return {
        answer,
        device: c.device,
        threads: c.threads,
        threadNote: c.threadNote,
        isolated: self.crossOriginIsolated,
        cores: navigator.hardwareConcurrency,
      };
    }, { model: `/gguf/${basename(gguf)}`, prompt: PROMPT, maxTokens: MAX_TOKENS });
  } finally {
    await page.close();
    server.close();
  }
}

test('on a cross-origin isolated page the CPU runs on every core and answers like native', { skip, timeout: 900_000 }, async () => {
  const native = nativeAnswer();
  assert.ok(native.length > 0);
  const r = await answerInBrowser({ isolated: true });
  assert.equal(r.isolated, true);
  assert.equal(r.device, 'cpu');
  // The threaded build started one helper per core beyond the engine's own worker.
  assert.equal(r.threads, r.cores);
  if (availableParallelism() > 1) assert.ok(r.threads > 1, `threads = ${r.threads}`);
  assert.equal(r.threadNote, '');
  assert.equal(r.answer.trim(), native);
});

test('without isolation the CPU runs on one thread, says why, and answers the same', { skip, timeout: 900_000 }, async () => {
  const native = nativeAnswer();
  const r = await answerInBrowser({ isolated: false });
  assert.equal(r.isolated, false);
  assert.equal(r.device, 'cpu');
  assert.equal(r.threads, 1);
  if (r.cores > 1) assert.match(r.threadNote, /not cross-origin isolated/);
  assert.equal(r.answer.trim(), native);
});
