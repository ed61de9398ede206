// The page and the embedding API in headless Chromium (WebGPU on SwiftShader), against what
// `captioner caption-jsonl` writes natively for the same rows and greedy settings.
//
// Needs: `www/pkg/` built (scripts/test.sh does it), the native `captioner` binary
// (CAPTIONER_BIN), Chromium at /usr/bin/chromium (CHROMIUM overrides).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serve } from '../../tools/serve.mjs';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const fixtures = join(repo, 'tests/fixtures');
const images = join(fixtures, 'images');
const example = join(repo, 'examples/rows.jsonl');
const MAX_TOKENS = 8;

let server;
let origin;
let browser;
let scratch;

before(async () => {
  ({ server, url: origin } = await serve({
    root: join(repo, 'www'),
    mounts: { '/fixtures/': fixtures },
  }));
  scratch = mkdtempSync(join(tmpdir(), 'captioner-browser-'));
  browser = await chromium.launchPersistentContext(join(scratch, 'profile'), {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    ignoreDefaultArgs: true,
    acceptDownloads: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--enable-unsafe-webgpu',
      '--remote-debugging-pipe',
      '--no-startup-window',
    ],
  });
});

after(async () => {
  await browser?.close();
  server?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

/** What the native program writes for the example rows. */
function nativeOutput(extra = []) {
  const out = join(scratch, `native-${Date.now()}.jsonl`);
  execFileSync(process.env.CAPTIONER_BIN ?? join(repo, 'target/debug/captioner'), [
    'caption-jsonl', '--model', join(fixtures, 'tiny-b'), '--input', example, '--output', out,
    '--image-root', images, '--temperature', '0', '--max-tokens', String(MAX_TOKENS), ...extra,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  return readFileSync(out, 'utf8');
}

/** A page that records every request it makes. */
async function openPage(path) {
  const page = await browser.newPage();
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));
  page.on('worker', (w) => w.on('console', () => {}));
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(origin + path);
  return { page, requests, errors };
}

async function waitForText(page, testid, pattern, timeout = 300_000) {
  await page.waitForFunction(
    ([id, source]) => new RegExp(source).test(document.querySelector(`[data-testid="${id}"]`)?.textContent ?? ''),
    [testid, pattern.source],
    { timeout, polling: 200 },
  );
  return page.getByTestId(testid).textContent();
}

/** Every request went to the page's origin (blob: URLs are the page's own thumbnails). */
function assertLocal(requests) {
  assert.ok(requests.length > 0);
  for (const url of requests) {
    const local = url.startsWith(origin + '/') || url.startsWith(`blob:${origin}/`);
    assert.ok(local, `request to ${url}`);
  }
}

const rowsOf = (text) => text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));

test('the page captions a JSONL with images like the native program, and the model comes from the cache the second time', async () => {
  const native = rowsOf(nativeOutput());
  const { page, requests, errors } = await openPage('/?model=/fixtures/tiny-b/');
  const status = await waitForText(page, 'model-status', /Model ready|could not/);
  assert.match(status, /Model ready on WebGPU/, status);

  await page.getByTestId('max-tokens').fill(String(MAX_TOKENS));
  await page.getByTestId('temperature').fill('0');
  const pictures = ['photo_640x480.jpg', 'small_100x80.png', 'photo_300x500.jpg', 'rgba_160x120.png',
    'truncated.jpg', 'not_an_image.jpg', 'photo_90x60.bmp', 'gray_200x150.png', 'palette_120x90.gif',
    'huge_header.png'];
  await page.getByTestId('images').setInputFiles(pictures.map((p) => join(images, p)));
  await page.getByTestId('jsonl').setInputFiles(example);
  await waitForText(page, 'input-status', /12 row\(s\)/);
  await page.getByTestId('run').click();
  await waitForText(page, 'progress-text', /^Done: 12 of 12 rows/);

  // The rows on the page, in order, hold the captions or errors as text.
  const shown = await page.getByTestId('row').allTextContents();
  assert.equal(shown.length, 12);

  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByTestId('download').click(),
  ]);
  const browserRows = rowsOf(readFileSync(await download.path(), 'utf8'));
  assert.equal(browserRows.length, native.length);
  browserRows.forEach((row, i) => {
    const want = native[i];
    // Same fields and values; the same caption, or an error in the same place.
    const strip = ({ caption, error, ...rest }) => rest;
    assert.deepEqual(strip(row), strip(want), `row ${i + 1}`);
    assert.equal(row.caption, want.caption, `row ${i + 1} caption`);
    assert.equal(row.error === undefined, want.error === undefined, `row ${i + 1} error`);
    if (typeof want.caption === 'string') assert.ok(shown[i].includes(want.caption));
  });
  // A missing image is named; the browser looks among the picked files, not the disk.
  assert.match(browserRows[3].error, /image 'photos\/missing.jpg' not found among the picked files/);
  assert.equal(errors.length, 0, errors.join('\n'));
  assertLocal(requests);
  const isModel = (u) => u.startsWith(origin) && new URL(u).pathname.startsWith('/fixtures/tiny-b/');
  // (The worker's downloads are seen, so the check after the reload means something.)
  assert.ok(requests.some((u) => isModel(u) && u.endsWith('/model.safetensors')));
  await page.close();

  // Reload: the model comes from the browser's cache, with no model request at all.
  const again = await openPage('/?model=/fixtures/tiny-b/');
  const status2 = await waitForText(again.page, 'model-status', /Model ready|could not/);
  assert.match(status2, /no download/, status2);
  const modelRequests = again.requests.filter(isModel);
  assert.deepEqual(modelRequests, []);
  // The same inputs and settings again: the finished rows are restored without a run.
  await again.page.getByTestId('max-tokens').fill(String(MAX_TOKENS));
  await again.page.getByTestId('temperature').fill('0');
  await again.page.getByTestId('images').setInputFiles(pictures.map((p) => join(images, p)));
  await again.page.getByTestId('jsonl').setInputFiles(example);
  await waitForText(again.page, 'input-status', /12 row\(s\) restored/);
  assert.deepEqual(await again.page.getByTestId('row').allTextContents(), shown);
  await again.page.close();
});

test('the embedding API captions an image and rows from an example page', async () => {
  const native = rowsOf(nativeOutput());
  const { page, requests } = await openPage('/examples/embed.html?model=/fixtures/tiny-b/');
  await page.getByTestId('files').setInputFiles([join(images, 'small_100x80.png'), join(images, 'photo_640x480.jpg')]);
  await page.getByTestId('go').click();
  const out = await waitForText(page, 'output', /^(done|failed)/);
  assert.match(out, /^done/, out);
  const result = JSON.parse(await page.getByTestId('result').textContent());
  // Row 2 of the example is small_100x80.png alone with the default prompt.
  assert.equal(result.caption, native[1].caption);
  assert.equal(result.streamed, result.caption);
  assert.deepEqual(result.rows.map((r) => r.caption), [native[1].caption, native[0].caption]);
  assert.equal(result.rows[0].id, 'a');
  assertLocal(requests);
  await page.close();
});
