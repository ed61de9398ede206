// www/bench.html in headless Chromium (WebGPU on SwiftShader), in its smallest configuration so
// it cannot rot: every precision gives a report with every stage, and the GPU holds packed
// weights in fewer bytes than f32 ones. The figures themselves go in BENCHMARKS.md.
//
// Needs: `www/pkg/` built (scripts/test.sh does it), Chromium at /usr/bin/chromium.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchChromium } from '../../tools/chromium.mjs';
import { serve } from '../../tools/serve.mjs';

const repo = fileURLToPath(new URL('../..', import.meta.url));
let server;
let origin;
let browser;
let scratch;

before(async () => {
  scratch = mkdtempSync(join(tmpdir(), 'captioner-bench-'));
  ({ server, url: origin } = await serve({
    root: join(repo, 'www'),
    mounts: { '/fixtures/': join(repo, 'tests/fixtures') },
  }));
  browser = await launchChromium(join(scratch, 'profile'));
});

after(async () => {
  await browser?.close();
  server?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

const positive = (x, what) => assert.ok(Number.isFinite(x) && x > 0, `${what} = ${x}`);

function checkStat(s, what, runs) {
  positive(s.median, what);
  assert.ok(s.min <= s.median && s.median <= s.max, `${what}: ${JSON.stringify(s)}`);
  assert.equal(s.samples.length, runs, `${what}: warm-up runs are not counted`);
}

test('bench.html measures every stage at each precision on WebGPU', async () => {
  const page = await browser.newPage();
  const query = new URLSearchParams({
    model: '/fixtures/tiny-b/', precision: 'f32,q4_0', device: 'webgpu', runs: '1', warmup: '1',
    contexts: '4,12', prefill: '8', decode: '3', caption: '4', edge: '64', run: '1',
  });
  await page.goto(`${origin}/bench.html?${query}`);
  const doc = await page.evaluate(() => window.benchResult);
  assert.equal(doc.error, undefined, doc.error);
  assert.equal(doc.reports.length, 2);
  for (const [r, precision] of doc.reports.map((r, i) => [r, ['f32', 'q4_0'][i]])) {
    assert.equal(r.precision, precision);
    assert.match(r.device, /WebGPU/);
    positive(r.load_ms, 'load_ms');
    assert.ok(r.first_caption_ms > r.load_ms);
    checkStat(r.preprocess_ms, 'preprocess_ms', 1);
    checkStat(r.vision_ms_per_tile, 'vision_ms_per_tile', 1);
    checkStat(r.prefill_tokens_per_s, 'prefill', 1);
    assert.deepEqual(r.decode.map((d) => d.context), [4, 12]);
    for (const d of r.decode) checkStat(d.tokens_per_s, `decode @ ${d.context}`, 1);
    positive(r.gpu_memory.after_load_in_use, 'GPU bytes after load');
    assert.ok(r.gpu_memory.peak_reserved >= r.gpu_memory.after_load_in_use);
  }
  // Packed 4-bit weights take fewer GPU bytes than f32 ones.
  const [f32, q4] = doc.reports.map((r) => r.gpu_memory.after_load_in_use);
  console.log(`GPU bytes after load: f32 ${f32}, q4_0 ${q4}`);
  assert.ok(q4 < f32, `q4_0 ${q4} vs f32 ${f32} bytes on the GPU`);
  // The page shows the table and offers the JSON.
  assert.match(await page.getByTestId('table').innerText(), /decode @ 12 ctx/);
  assert.equal(await page.locator('#download').isHidden(), false);
  await page.close();
});

test("bench.html's edge=0 keeps the processor's own tiling, as `captioner bench --longest-edge 0`", async () => {
  const page = await browser.newPage();
  const tiles = {};
  for (const edge of ['0', '64']) {
    const query = new URLSearchParams({
      model: '/fixtures/tiny-b/', precision: 'f32', device: 'cpu', runs: '1', warmup: '0',
      contexts: '4', prefill: '4', decode: '2', caption: '2', edge, run: '1',
    });
    await page.goto(`${origin}/bench.html?${query}`);
    const doc = await page.evaluate(() => window.benchResult);
    assert.equal(doc.error, undefined, doc.error);
    tiles[edge] = doc.reports[0].image_tiles;
  }
  // tiny-b's processor: longest edge 256 in tiles of 64, so the 1024x768 test image is 4 x 3
  // tiles and the global one; at 64 it is one tile.
  assert.deepEqual(tiles, { 0: 13, 64: 1 });
  await page.close();
});

test('bench.html on `auto` runs on the CPU where the only WebGPU adapter is software, and says what it is doing', async () => {
  const page = await browser.newPage();
  // Every status line the page shows, kept as it changes.
  await page.addInitScript(() => {
    window.statusSeen = [];
    document.addEventListener('DOMContentLoaded', () => {
      const status = document.getElementById('status');
      new MutationObserver(() => window.statusSeen.push(status.textContent)).observe(status, { childList: true });
    });
  });
  const query = new URLSearchParams({
    model: '/fixtures/tiny-b/', precision: 'f32', runs: '1', warmup: '0',
    contexts: '4', prefill: '4', decode: '2', caption: '2', edge: '64', run: '1',
  });
  await page.goto(`${origin}/bench.html?${query}`);
  assert.equal(await page.locator('#device').inputValue(), 'auto');
  const doc = await page.evaluate(() => window.benchResult);
  assert.equal(doc.error, undefined, doc.error);
  // SwiftShader is a fallback adapter: the CPU ran, and the report says why.
  assert.doesNotMatch(doc.reports[0].device, /WebGPU/);
  assert.match(doc.reports[0].device_note, /software/);
  const seen = await page.evaluate(() => window.statusSeen);
  assert.ok(seen.some((s) => /^f32 \(1 of 1\): loading, a first caption, then 1 timed run\(s\) of each stage on the CPU/.test(s)), seen.join('\n'));
  await page.close();
});
