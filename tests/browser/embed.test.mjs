// The embedding API (www/captioner.js) in headless Chromium, through the example page an
// annotation tool would write (www/examples/embed.html): one picture, then rows, against what
// `captioner caption-jsonl` writes natively for the same rows and greedy settings: on the CPU,
// at Q4_0 on WebGPU (SwiftShader) and from a GGUF pair's URL.
//
// Needs: `www/pkg/` built (scripts/test.sh does it), the native `captioner` binary
// (CAPTIONER_BIN), Chromium at /usr/bin/chromium (CHROMIUM overrides).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { captioner, fixtures, images, pageSuite, pillowRgb, pngOf, rowsOf, waitForText } from './page.mjs';

const MAX_TOKENS = 8;

const suite = pageSuite();
const { openPage, assertLocal } = suite;

/** What the native program writes for the example rows. */
const nativeOutput = (extra = [], model = undefined) => suite.nativeOutput({ maxTokens: MAX_TOKENS, extra, model });

/**
 * Runs the embedding example at `query` on two pictures; asserts it finished and that its
 * captions are the native ones (row 2 of the example is small_100x80.png alone, row 1
 * photo_640x480.jpg). Resolves to the page's result, the page and its requests.
 */
async function embedMatches(query, native, label = query) {
  const { page, requests, downloads } = await openPage(`/examples/embed.html?${query}`);
  await page.getByTestId('files').setInputFiles([join(images, 'small_100x80.png'), join(images, 'photo_640x480.jpg')]);
  await page.getByTestId('go').click();
  const out = await waitForText(page, 'output', /^(done|failed)/);
  assert.match(out, /^done/, `${label}: ${out}`);
  const result = JSON.parse(await page.getByTestId('result').textContent());
  assert.equal(result.caption, native[1].caption, label);
  assert.deepEqual(result.rows.map((r) => r.caption), [native[1].caption, native[0].caption], label);
  return { result, page, requests, downloads };
}

test('the embedding API captions an image and rows from an example page', async () => {
  const native = rowsOf(nativeOutput());
  const { result, page, requests } = await embedMatches('model=/fixtures/tiny-b/', native);
  // `auto` on SwiftShader, a software adapter, runs on the CPU and says why.
  assert.equal(result.device, 'cpu');
  assert.match(result.deviceNote, /software/);
  assert.equal(result.streamed, result.caption);
  assert.equal(result.rows[0].id, 'a');
  assertLocal(requests);
  await page.close();
});

test('the embedding API captions a picture the engine does not read (AVIF) from the pixels the browser decodes, and says so', async () => {
  // Chromium decodes this AVIF to Pillow's pixels (inputs.test.mjs checks that): the native
  // program on a PNG of those pixels is the reference.
  const { width, height, rgb } = pillowRgb('rgb.avif');
  const rgba = Uint8Array.from({ length: width * height * 4 }, (_, i) => (i % 4 === 3 ? 255 : rgb[(i >> 2) * 3 + (i % 4)]));
  writeFileSync(join(suite.scratch, 'avif-embed.png'), pngOf(width, height, rgba));
  const input = join(suite.scratch, 'avif-embed.jsonl');
  writeFileSync(input, JSON.stringify({ image: ['avif-embed.png'] }) + '\n');
  captioner([
    'caption-jsonl', '--model', join(fixtures, 'tiny-b'), '--input', input, '--output', `${input}.out`,
    '--image-root', suite.scratch, '--temperature', '0', '--max-tokens', String(MAX_TOKENS),
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  const [want] = rowsOf(readFileSync(`${input}.out`, 'utf8'));
  const photo = rowsOf(nativeOutput())[0];

  const { page, errors } = await openPage('/examples/embed.html?model=/fixtures/tiny-b/');
  await page.getByTestId('files').setInputFiles([join(fixtures, 'formats', 'rgb.avif'), join(images, 'photo_640x480.jpg')]);
  await page.getByTestId('go').click();
  const out = await waitForText(page, 'output', /^(done|failed)/);
  assert.match(out, /^done/, out);
  const result = JSON.parse(await page.getByTestId('result').textContent());
  assert.equal(result.caption, want.caption);
  assert.deepEqual(result.decodedByBrowser, [0]);
  // The rows say it in their own field, the picture the engine reads does not.
  assert.deepEqual(result.rows, [
    { id: 'a', image: 'rgb.avif', caption: want.caption, decoded_by_browser: ['rgb.avif'] },
    { id: 'b', image: ['photo_640x480.jpg'], caption: photo.caption },
  ]);
  assert.equal(errors.length, 0, errors.join('\n'));
  await page.close();
});

test('quantized weights on WebGPU caption like native wgpu at the same quantization', async () => {
  // Q4_0, asked for by name. (Q8_0 on WebGPU is what `auto` holds there: the page's tests
  // compare it with native wgpu, app.test.mjs's "cancel pauses" and inputs.test.mjs's "a pick
  // or a drop".)
  const native = rowsOf(nativeOutput(['--device', 'gpu', '--precision', 'q4_0']));
  const { page } = await embedMatches('model=/fixtures/tiny-b/&precision=q4_0&device=webgpu', native, 'q4_0');
  // The weights really were quantized: some caption of the example differs from f32's.
  const unquantized = rowsOf(nativeOutput());
  assert.ok(native.some((row, i) => row.caption !== unquantized[i].caption), 'q4_0 equals f32');
  await page.close();
});

test('a GGUF pair written by captioner quantize loads from its URL and captions like native wgpu', async () => {
  const pair = join(suite.scratch, 'pair');
  captioner(['quantize', '--model', join(fixtures, 'tiny-b'), '--out', pair, '--type', 'q4_0', '--name', 'tiny'],
    { stdio: 'ignore' });
  const native = rowsOf(nativeOutput(['--device', 'gpu'], pair));
  const { page, downloads } = await embedMatches('model=/scratch/pair/tiny-Q4_0.gguf&device=webgpu', native);
  // The text model and its mmproj, found by llama.cpp's naming, each read once, and nothing else.
  const model = downloads
    .map((u) => new URL(u).pathname)
    .filter((path) => path.startsWith('/scratch/pair/'))
    .map((path) => path.split('/').pop());
  assert.deepEqual(model.sort(), ['mmproj-tiny-Q4_0.gguf', 'tiny-Q4_0.gguf']);
  await page.close();
});
