// The page in headless Chromium (WebGPU on SwiftShader), against what `captioner caption-jsonl`
// writes natively for the same rows and greedy settings: loading and keeping a model, a run,
// cancel and resume. The embedding API has its own file (embed.test.mjs).
//
// Needs: `www/pkg/` built (scripts/test.sh does it), the native `captioner` binary
// (CAPTIONER_BIN), Chromium at /usr/bin/chromium (CHROMIUM overrides).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { serve } from '../../tools/serve.mjs';
import { captioner, fixtures, images, pageSuite, repo, rowsOf, waitForText, downloadOf, example, examplePictures } from './page.mjs';

const MAX_TOKENS = 8;

const suite = pageSuite();
const launch = (...args) => suite.launch(...args);

/** What the native program writes for the example rows. */
const nativeOutput = (extra = [], model = undefined) => suite.nativeOutput({ maxTokens: MAX_TOKENS, extra, model });
const { openPage, assertLocal } = suite;

let pack = null;
/**
 * The Q8_0 pair `captioner quantize` writes of tiny-b: what the page keeps in its cache, and
 * runs, for `auto` on WebGPU. The native program on it (`--device gpu`) is the reference there.
 */
function q8Pack() {
  if (!pack) {
    pack = join(suite.scratch, 'pack-q8_0');
    captioner(['quantize', '--model', join(fixtures, 'tiny-b'), '--out', pack, '--type', 'q8_0'], { stdio: 'ignore' });
  }
  return pack;
}

test('the page captions a JSONL with images like the native program, keeps the model as its q8_0 pack, and reads that from the cache the second time', async () => {
  // `auto` on WebGPU holds the weights as Q8_0, and the page keeps the folder as the pack
  // `captioner quantize --type q8_0` writes: the native program on that pack is the reference.
  const pack = q8Pack();
  const packFiles = readdirSync(pack).filter((n) => n.endsWith('.gguf')).sort();
  assert.deepEqual(packFiles, ['mmproj-tiny-b-Q8_0.gguf', 'tiny-b-Q8_0.gguf']);
  const native = rowsOf(nativeOutput(['--device', 'gpu'], pack));
  const { page, requests, errors } = await openPage('/?model=/fixtures/tiny-b/&device=webgpu');
  const status = await waitForText(page, 'model-status', /Model ready|could not/);
  // Packed on the GPU, and the GPU memory it takes is said.
  assert.match(status, /Model ready on WebGPU, weights auto \(q8_0\), [\d.]+ MB of GPU memory/, status);
  // The worker was started with the model in its address, for the server's policy (serve.test.mjs).
  const model = encodeURIComponent(new URL('/fixtures/tiny-b/', suite.origin).href);
  assert.ok(requests.some((u) => u.endsWith(`/worker.js?model=${model}`)), requests.join('\n'));

  await page.getByTestId('max-tokens').fill(String(MAX_TOKENS));
  await page.getByTestId('temperature').fill('0');
  await page.getByTestId('images').setInputFiles(examplePictures);
  await page.getByTestId('jsonl').setInputFiles(example);
  await waitForText(page, 'input-status', /12 row\(s\)/);
  await page.getByTestId('run').click();
  await waitForText(page, 'progress-text', /^Done: 12 of 12 rows/);

  // The rows on the page, in order, hold the captions or errors as text.
  const shown = await page.getByTestId('row').allTextContents();
  assert.equal(shown.length, 12);

  const browserRows = rowsOf((await downloadOf(page)).toString('utf8'));
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
  const isModel = (u) => u.startsWith(suite.origin) && new URL(u).pathname.startsWith('/fixtures/tiny-b/');
  // (The worker's downloads are seen, so the check after the reload means something.)
  assert.ok(requests.some((u) => isModel(u) && u.endsWith('/model.safetensors')));
  await page.close();

  // Reload, the same settings: the model (its pack) comes from the browser's cache, with no
  // model request at all.
  const again = await openPage('/?model=/fixtures/tiny-b/&device=webgpu');
  const status2 = await waitForText(again.page, 'model-status', /Model ready|could not/);
  assert.match(status2, /no download/, status2);
  const modelRequests = again.requests.filter(isModel);
  assert.deepEqual(modelRequests, []);
  // What the cache holds is the pack, not the bf16 original.
  const stored = await again.page.evaluate(async () =>
    (await (await caches.open('captioner-models-v1')).keys()).map((r) => r.url));
  assert.ok(!stored.some((u) => u.endsWith('/model.safetensors')), stored.join('\n'));
  assert.deepEqual(stored.filter((u) => u.endsWith('.gguf')).map((u) => u.split('/').pop()).sort(), packFiles);
  // The same inputs and settings again: the finished rows are restored without a run.
  await again.page.getByTestId('max-tokens').fill(String(MAX_TOKENS));
  await again.page.getByTestId('temperature').fill('0');
  await again.page.getByTestId('images').setInputFiles(examplePictures);
  await again.page.getByTestId('jsonl').setInputFiles(example);
  await waitForText(again.page, 'input-status', /12 row\(s\) restored/);
  assert.deepEqual(await again.page.getByTestId('row').allTextContents(), shown);

  // The stored model is listed with its size, and Delete removes it from the browser.
  const listed = await waitForText(again.page, 'cached', /fixtures\/tiny-b\//);
  assert.match(listed, /\/fixtures\/tiny-b\/ — [\d.]+ MB, q8_0 pack/, listed);
  // Save writes the pack to disk: the very files `captioner quantize` wrote.
  const buttons = again.page.getByTestId('save-pack-file');
  assert.equal(await buttons.count(), packFiles.length);
  const saved = [];
  for (let i = 0; i < packFiles.length; i++) {
    const [d] = await Promise.all([again.page.waitForEvent('download'), buttons.nth(i).click()]);
    saved.push(d);
  }
  assert.deepEqual(saved.map((d) => d.suggestedFilename()).sort(), packFiles);
  for (const d of saved) {
    assert.ok(readFileSync(await d.path()).equals(readFileSync(join(pack, d.suggestedFilename()))), d.suggestedFilename());
  }
  await again.page.getByRole('button', { name: /Delete the stored model .*tiny-b/ }).click();
  await waitForText(again.page, 'cached', /None yet/);
  const left = await again.page.evaluate(async () => (await (await caches.open('captioner-models-v1')).keys()).length);
  assert.equal(left, 0);
  await again.page.close();
});

test('before Load the page says what the model downloads and what stays in the browser; once stored, that it needs no download', async () => {
  const pack = q8Pack();
  const packBytes = readdirSync(pack).reduce((n, f) => n + statSync(join(pack, f)).size, 0);
  const weights = statSync(join(fixtures, 'tiny-b', 'model.safetensors')).size;
  const mb = (text) => Number(/([\d.]+) MB/.exec(text)?.[1]);
  // A profile of its own: nothing stored yet.
  const fresh = await launch('profile-plan', { webgpu: true });
  try {
    const { page, errors } = await openPage('/?device=webgpu', fresh);
    // Another model than the named ones: its address.
    await page.getByTestId('model-other').check();
    await page.getByTestId('model-url').fill('/fixtures/tiny-b/');
    // `auto` on WebGPU: the bf16 weights are downloaded, their q8_0 pack is what stays. The pack
    // is estimated from the safetensors header (a range read), the tokenizer included.
    const line = await waitForText(page, 'model-plan', /^tiny-b: /);
    const said = /^tiny-b: ([\d.]+ MB) download once, about ([\d.]+ MB) kept \(its q8_0 pack\) in this browser\.$/.exec(line);
    assert.ok(said, line);
    assert.equal(mb(said[1]), Number((weights / 1e6).toFixed(1)), line);
    assert.ok(Math.abs(mb(said[2]) * 1e6 - packBytes) < 0.1 * packBytes, `${line} (the pack is ${packBytes} bytes)`);

    // f32 keeps the folder's own files; on the CPU, `auto` does too.
    await page.getByTestId('precision').selectOption('f32');
    const own = await waitForText(page, 'model-plan', /its own files/);
    assert.equal(mb(own), mb(said[1]), own);
    assert.match(own, /^tiny-b: [\d.]+ MB download once, [\d.]+ MB kept \(its own files\) in this browser\.$/);
    await page.getByTestId('precision').selectOption('auto');
    await waitForText(page, 'model-plan', /q8_0 pack/);

    // After Load the pack is stored: the line says so, with the stored size.
    await page.getByTestId('load-model').click();
    const status = await waitForText(page, 'model-status', /Model ready|could not/);
    assert.match(status, /Model ready on WebGPU/, status);
    const stored = await waitForText(page, 'model-plan', /kept in this browser,/);
    assert.equal(stored, `tiny-b: kept in this browser, ${(packBytes / 1e6).toFixed(1)} MB; no download.`);

    // A folder that is not there, said before Load.
    await page.getByTestId('model-url').fill('/fixtures/no-such-model/');
    const missing = await waitForText(page, 'model-plan', /no-such-model/);
    assert.match(missing, /^The model’s size is not known: .*no-such-model\/config\.json: 404 Not Found; is this a model folder\?\.$/, missing);

    // Picked files are read from the disk: nothing downloaded, nothing kept.
    const modelDir = join(fixtures, 'tiny-b');
    const files = readdirSync(modelDir);
    await page.getByTestId('model-files').setInputFiles(files.map((f) => join(modelDir, f)));
    const picked = await waitForText(page, 'model-plan', /picked files/);
    assert.match(picked, new RegExp(`^${files.length} picked files, [\\d.]+ MB, read from your disk: nothing is downloaded or kept in this browser\\.$`), picked);
    // A hub address names the model by its repository, not by its revision ('main'): the
    // pack's files are named so too.
    const names = await page.evaluate(async () => {
      const { stemOf, DEFAULT_MODEL_URL } = await import('./model-store.js');
      return [stemOf(DEFAULT_MODEL_URL), stemOf('/fixtures/tiny-b/'), stemOf('/m/tiny-Q4_0.gguf')];
    });
    assert.deepEqual(names, ['SmolVLM-256M-Instruct', 'tiny-b', 'tiny-Q4_0']);
    assert.equal(errors.length, 0, errors.join('\n'));
    await page.close();
  } finally {
    await fresh.close();
  }
});

test('a model kept as its own files is packed from the cache without a download, into the very pack a download makes', async () => {
  const pack = q8Pack();
  const sha = (bytes) => createHash('sha256').update(bytes).digest('hex');
  const want = Object.fromEntries(readdirSync(pack).map((f) => [f, sha(readFileSync(join(pack, f)))]));
  const fresh = await launch('profile-repack', { webgpu: true });
  try {
    // f32 keeps the folder's own files in the cache.
    const first = await openPage('/?device=webgpu', fresh);
    await first.page.getByTestId('model-other').check();
    await first.page.getByTestId('model-url').fill('/fixtures/tiny-b/');
    await first.page.getByTestId('precision').selectOption('f32');
    await first.page.getByTestId('load-model').click();
    assert.match(await waitForText(first.page, 'model-status', /Model ready|could not/), /Model ready/);
    await first.page.close();
    // `auto` on WebGPU wants the q8_0 pack: made from the stored files, with no model request.
    const second = await openPage('/?model=/fixtures/tiny-b/&device=webgpu', fresh);
    const status = await waitForText(second.page, 'model-status', /Model ready|could not/);
    assert.match(status, /Model ready on WebGPU, weights auto \(q8_0\)/, status);
    const isModel = (u) => new URL(u).pathname.startsWith('/fixtures/tiny-b/');
    assert.deepEqual(second.requests.filter(isModel), []);
    const stored = await second.page.evaluate(async () => {
      const cache = await caches.open('captioner-models-v1');
      const out = {};
      for (const request of await cache.keys()) {
        if (!request.url.endsWith('.gguf')) continue;
        const bytes = await (await cache.match(request)).arrayBuffer();
        const hash = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
        out[request.url.split('/').pop()] = [...hash].map((b) => b.toString(16).padStart(2, '0')).join('');
      }
      return out;
    });
    assert.deepEqual(stored, want);
    assert.equal(second.errors.length, 0, second.errors.join('\n'));
    await second.page.close();
  } finally {
    await fresh.close();
  }
});

test('the tiny Qwen2.5-VL folder captions the rows in the page as the native program does on the GPU', async () => {
  // A Qwen2-VL folder has no GGUF pack yet: the page keeps its own files and `auto` packs its
  // matrices as Q8_0 as it loads, as the native program does with `--device gpu`.
  const model = join(fixtures, 'qwen2vl', 'tiny-25');
  const native = rowsOf(nativeOutput(['--device', 'gpu'], model));
  const { page, errors } = await openPage('/?model=/fixtures/qwen2vl/tiny-25/&device=webgpu');
  const status = await waitForText(page, 'model-status', /Model ready|could not/);
  assert.match(status, /Model ready on WebGPU, weights auto \(q8_0\)/, status);
  await page.getByTestId('max-tokens').fill(String(MAX_TOKENS));
  await page.getByTestId('temperature').fill('0');
  await page.getByTestId('images').setInputFiles(examplePictures);
  await page.getByTestId('jsonl').setInputFiles(example);
  // The first test captioned these rows with these settings in this browser, with tiny-b: its
  // stored captions are another model's, and do not come back.
  const inputs = await waitForText(page, 'input-status', /12 row\(s\)/);
  assert.doesNotMatch(inputs, /restored/, inputs);
  await page.getByTestId('run').click();
  await waitForText(page, 'progress-text', /^Done: 12 of 12 rows/);
  const browserRows = rowsOf((await downloadOf(page)).toString('utf8'));
  assert.equal(browserRows.length, native.length);
  // Rows 1-3 have pictures (one, one, two): each gets a caption.
  for (const i of [0, 1, 2]) assert.ok(typeof native[i].caption === 'string' && native[i].caption.length > 0, `row ${i + 1}`);
  browserRows.forEach((row, i) => {
    assert.equal(row.caption, native[i].caption, `row ${i + 1} caption`);
    assert.equal(row.error === undefined, native[i].error === undefined, `row ${i + 1} error`);
  });
  const kept = await page.evaluate(async () =>
    (await (await caches.open('captioner-models-v1')).keys()).map((r) => r.url.split('/').pop()));
  assert.ok(kept.includes('model.safetensors'), `kept as its own files: ${kept.join(', ')}`);
  assert.equal(errors.length, 0, errors.join('\n'));
  // (The later tests start from an empty cache.)
  await page.evaluate(() => caches.delete('captioner-models-v1'));
  await page.close();
});

test('without WebGPU the page says so and runs on the CPU; a wrong model URL says what to do', async () => {
  const native = rowsOf(nativeOutput());
  const plain = await launch('profile-no-webgpu', { webgpu: false });
  try {
    // A model on another origin that does not allow cross-origin reads (no CORS headers).
    const other = await serve({ root: join(repo, 'www'), mounts: { '/fixtures/': fixtures } });
    try {
      const { page } = await openPage(`/?model=${encodeURIComponent(other.url + '/fixtures/tiny-b/')}`, plain);
      const blocked = await waitForText(page, 'model-status', /Model ready|could not/);
      assert.match(blocked, /could not reach .*CORS/, blocked);
      await page.close();
    } finally {
      other.server.close();
    }

    const { page, requests } = await openPage('/?model=/fixtures/no-such-model/', plain);
    const failed = await waitForText(page, 'model-status', /Model ready|could not/);
    assert.match(failed, /404 Not Found\. Is this a model folder\?/, failed);

    // Picked files that are not a model folder: said plainly.
    await page.getByTestId('model-files').setInputFiles([join(images, 'small_100x80.png')]);
    await page.getByTestId('load-model').click();
    const wrong = await waitForText(page, 'model-status', /could not/);
    assert.match(wrong, /no config\.json .*pick the whole model folder/, wrong);

    // The model from local files this time (offline use): the folder's files, picked.
    const modelDir = join(fixtures, 'tiny-b');
    await page.getByTestId('model-files').setInputFiles(readdirSync(modelDir).map((f) => join(modelDir, f)));
    await page.getByTestId('load-model').click();
    const status = await waitForText(page, 'model-status', /Model ready|could not/);
    assert.match(status, /Model ready on the CPU \(\d+ threads?\)/, status);
    assert.match(status, /no WebGPU|no usable GPU adapter/, status);

    await page.getByTestId('max-tokens').fill(String(MAX_TOKENS));
    await page.getByTestId('temperature').fill('0');
    // The image is dropped on the drop zone this time.
    const bytes = [...readFileSync(join(images, 'small_100x80.png'))];
    const drop = await page.evaluateHandle((data) => {
      const transfer = new DataTransfer();
      transfer.items.add(new File([new Uint8Array(data)], 'small_100x80.png', { type: 'image/png' }));
      return transfer;
    }, bytes);
    await page.getByTestId('drop').dispatchEvent('drop', { dataTransfer: drop });
    await waitForText(page, 'input-status', /^1 image file/);
    await page.getByTestId('run').click();
    await waitForText(page, 'progress-text', /^Done: 1 of 1 rows/);
    // Without a JSONL the image is the row {"image": ["small_100x80.png"]}: example row 2.
    const [shown] = await page.getByTestId('caption').allTextContents();
    assert.equal(shown, native[1].caption);
    assertLocal(requests);
  } finally {
    await plain.close();
  }
});

test('cancel pauses after the current row, and Run goes on to the same file', async () => {
  const nativeText = nativeOutput(['--device', 'gpu'], q8Pack());
  const native = rowsOf(nativeText);
  // On WebGPU: SwiftShader is slow enough that the run is still going when Cancel is clicked
  // (on the CPU path the 12 rows can finish first).
  const { page } = await openPage('/?model=/fixtures/tiny-b/&device=webgpu');
  await waitForText(page, 'model-status', /Model ready/);
  await page.getByTestId('max-tokens').fill(String(MAX_TOKENS));
  await page.getByTestId('temperature').fill('0');
  // Another seed (greedy ignores it) so the first test's saved progress is not restored here.
  await page.getByTestId('seed').fill('7');
  await page.getByTestId('images').setInputFiles(examplePictures);
  await page.getByTestId('jsonl').setInputFiles(example);
  await waitForText(page, 'input-status', /12 row\(s\)/);
  await page.getByTestId('run').click();
  await waitForText(page, 'progress-text', /^1 of 12 rows/);
  await page.getByTestId('cancel').click();
  const paused = await waitForText(page, 'progress-text', /^Paused/);
  // The focus goes to Run, which goes on, not to the page's body.
  assert.equal(await page.evaluate(() => document.activeElement?.dataset.testid), 'run');
  const done = Number(/Paused: (\d+) of 12/.exec(paused)[1]);
  assert.ok(done >= 1 && done < 12, paused);

  // Mid-run download: the whole file, the rows not done yet as they came in.
  const partialRows = rowsOf((await downloadOf(page)).toString('utf8'));
  assert.equal(partialRows.length, 12);
  assert.equal(partialRows[0].caption, native[0].caption);
  assert.equal(partialRows[11].caption, undefined);

  await page.getByTestId('run').click();
  const finished = await waitForText(page, 'progress-text', /^Done: 12 of 12 rows/);
  // The rows finished before the pause count as they came out then: the counts are an
  // uninterrupted run's, as the native program counts the example (the row written by hand
  // is the one skipped).
  assert.match(finished, /\(4 captioned, 1 skipped, 7 failed\)/, finished);
  const rows = rowsOf((await downloadOf(page)).toString('utf8'));
  assert.deepEqual(rows.map((r) => r.caption), native.map((r) => r.caption));

  // A caption edited by hand goes into the file; the row's other fields stay byte for byte.
  await page.getByTestId('row').first().getByTestId('caption').fill('Edited by hand ✓');
  const first = (await downloadOf(page)).toString('utf8').split('\n')[0];
  const nativeFirst = nativeText.split('\n')[0];
  assert.equal(first, nativeFirst.replace(JSON.stringify(native[0].caption), JSON.stringify('Edited by hand ✓')));
  await page.close();
});
