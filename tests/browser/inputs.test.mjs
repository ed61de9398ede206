// The page keeps "nothing lost" whatever the user picks and when: inputs are locked while a run
// goes, picks merge without duplicates and can be cleared or removed one by one, whatever is
// picked as rows is read as rows, and the rows file is read as bytes so that each line comes
// out as `captioner caption-jsonl` writes it (a line that is not UTF-8 included). A picture
// in a format the engine does not read (AVIF) is decoded by the browser instead, and its row
// says so.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { asInBrowser, captioner, downloadOf, fixtures, images, nativeCaptions, pageSuite, pillowRgb, pngOf, repo, rowsOf, waitForText, example, examplePictures, dropFiles } from './page.mjs';

const MAX_TOKENS = 8;

const suite = pageSuite();

/** The page with the tiny model loaded on `device`, greedy (see page.mjs). */
const pageWithModel = (device, seed) => suite.pageWithModel(device, seed, MAX_TOKENS);

const focused = (page) => page.evaluate(() => document.activeElement?.dataset.testid ?? document.activeElement?.tagName);

/** The counts in a progress line: "(N captioned, N skipped, N failed)". */
const counts = (text) => /\((\d+) captioned, (\d+) skipped, (\d+) failed\)/.exec(text).slice(1).map(Number);

test('a pick or a drop while a run goes changes nothing, and the download is the native output', async () => {
  // On WebGPU (SwiftShader), slow enough that the run is still going when the drop comes. The
  // page holds the weights as `auto` does on a GPU (Q8_0): native wgpu at `auto` is the reference.
  const native = nativeCaptions({
    input: example, out: join(suite.scratch, 'locked.jsonl'), maxTokens: MAX_TOKENS, extra: ['--device', 'gpu'],
  });
  const { page, errors } = await pageWithModel('webgpu', 101);
  await page.getByTestId('images').setInputFiles(examplePictures);
  await page.getByTestId('jsonl').setInputFiles(example);
  await waitForText(page, 'input-status', /12 row\(s\)/);
  await page.getByTestId('run').click();
  // The focus is not dropped on the page's body when Run turns disabled.
  assert.equal(await focused(page), 'cancel');
  await waitForText(page, 'progress-text', /^1 of 12 rows/);

  assert.equal(await page.locator('#input-controls').evaluate((f) => f.disabled), true);
  assert.equal(await page.locator('#settings-controls').evaluate((f) => f.disabled), true);
  const shown = await page.getByTestId('row').count();
  await dropFiles(page, [{ name: 'aaa_first.jpg', type: 'image/jpeg', bytes: [0xff, 0xd8, 0xff] }]);
  const refused = await waitForText(page, 'input-status', /A run is going/);
  assert.match(refused, /^10 image file\(s\), 12 row\(s\) from rows\.jsonl/, refused);
  assert.equal(await page.getByTestId('row').count(), shown);

  const done = await waitForText(page, 'progress-text', /^Done: 12 of 12 rows/);
  assert.equal(await focused(page), 'download');
  assert.equal(await page.locator('#input-controls').evaluate((f) => f.disabled), false);
  assert.equal((await downloadOf(page)).toString('utf8'), asInBrowser(native));
  // Every row counted once, as the native program counts the example. (A pause and a resume
  // count the same: app.test.mjs, "cancel pauses after the current row".)
  assert.deepEqual(counts(done), [4, 1, 7], done);
  assert.equal(errors.length, 0, errors.join('\n'));
  await page.close();
});

test('picks merge without duplicates; Clear, Remove and the summary of missing images', async () => {
  const { page, errors } = await suite.openPage('/');
  const hint = await page.getByTestId('run-hint').textContent();
  assert.match(hint, /load a model and add images or a rows file/, hint);

  const pictures = examplePictures;
  await page.getByTestId('images').setInputFiles(pictures);
  await waitForText(page, 'input-status', /^10 image file\(s\), one row each/);
  // The same ten again: still ten rows.
  await page.getByTestId('images').setInputFiles(pictures);
  await waitForText(page, 'input-status', /^10 image file\(s\)/);
  assert.equal(await page.getByTestId('row').count(), 10);
  // A dropped file that is neither an image nor rows is left out, by name.
  await dropFiles(page, [{ name: 'notes.txt', type: 'text/plain', bytes: [0x68, 0x69] }]);
  const leftOut = await waitForText(page, 'input-status', /Left out/);
  assert.match(leftOut, /^10 image file\(s\).*Left out, not images: notes\.txt\./, leftOut);

  await page.getByTestId('jsonl').setInputFiles(example);
  const summary = await waitForText(page, 'input-status', /12 row\(s\) from rows\.jsonl/);
  assert.match(summary, /1 row\(s\) name images not picked: photos\/missing\.jpg\./, summary);
  assert.equal(await page.getByTestId('row').count(), 12);

  // Remove the first row: the download lacks it and keeps every other line as it came.
  await page.getByTestId('remove').first().click();
  await waitForText(page, 'input-status', /11 row\(s\) from rows\.jsonl \(1 removed\)/);
  assert.equal(await page.getByTestId('row').count(), 11);
  assert.equal(await focused(page), 'remove');
  const lines = (await downloadOf(page)).toString('utf8').split('\n').filter((l) => l.trim());
  const input = readFileSync(example, 'utf8').split('\n').filter((l) => l.trim());
  assert.deepEqual(lines, input.slice(1));

  await page.getByTestId('clear').click();
  await waitForText(page, 'input-status', /^0 image file\(s\), one row each\.$/);
  assert.equal(await page.getByTestId('row').count(), 0);
  assert.equal(await page.getByTestId('download').isDisabled(), true);

  // Load from the keyboard: the focus stays on Load while the model loads, and after.
  await page.getByTestId('model-other').check();
  await page.getByTestId('model-url').fill('/fixtures/tiny-b/');
  await page.getByTestId('device').selectOption('cpu');
  await page.getByTestId('load-model').focus();
  await page.keyboard.press('Enter');
  await waitForText(page, 'model-status', /Model ready/);
  assert.equal(await focused(page), 'load-model');
  assert.match(await page.getByTestId('run-hint').textContent(), /add images or a rows file/);
  assert.equal(errors.length, 0, errors.join('\n'));
  await page.close();
});

test('whatever is picked as rows is read as rows, bytes and all, as caption-jsonl reads it', async () => {
  const { page, errors } = await pageWithModel('cpu', 103);
  await page.getByTestId('images').setInputFiles(examplePictures);
  await page.getByTestId('jsonl').setInputFiles(example);
  await waitForText(page, 'input-status', /12 row\(s\) from rows\.jsonl/);

  // Each file replaces the rows before it; each comes out as the native program writes it.
  const cases = {
    // JSONL in a .txt file: rows.
    'list.txt': Buffer.from('{"image": "small_100x80.png", "id": 1}\n{"image": ["gray_200x150.png"], "id": 2}\n'),
    // A CSV: a line each, none of them JSON (error rows, nothing dropped).
    'table.csv': Buffer.from('image,id\nsmall_100x80.png,1\n'),
    // Latin-1 bytes (caf\xe9.jpg) on line 2, a BOM and CRLF: the error row with the raw bytes.
    'latin1.jsonl': Buffer.concat([
      Buffer.from('\ufeff{"image": ["small_100x80.png"], "id": 1}\r\n'),
      Buffer.from('{"image": ["caf'), Buffer.from([0xe9]), Buffer.from('.jpg"], "id": 2}\r\n'),
      Buffer.from('{"image": ["photo_90x60.bmp"], "id": 3}\n'),
    ]),
  };
  for (const [name, bytes] of Object.entries(cases)) {
    const input = join(suite.scratch, name);
    writeFileSync(input, bytes);
    const native = nativeCaptions({ input, out: join(suite.scratch, `${name}.out`), maxTokens: MAX_TOKENS });
    const rows = native.toString('utf8').split('\n').filter((l) => l).length;
    await page.getByTestId('jsonl').setInputFiles(input);
    await waitForText(page, 'input-status', new RegExp(`${rows} row\\(s\\) from ${name.replace('.', '\\.')}`));
    assert.equal(await page.getByTestId('row').count(), rows, name);
    await page.getByTestId('run').click();
    await waitForText(page, 'progress-text', new RegExp(`^Done: ${rows} of ${rows} rows`));
    // (As text: a failure shows the rows that differ, not bytes.)
    assert.equal((await downloadOf(page)).toString('utf8'), native.toString('utf8'), name);
  }
  // The not-UTF-8 line is an error row that says so, not a row with U+FFFD in its path.
  const latin1 = rowsOf(nativeCaptions({
    input: join(suite.scratch, 'latin1.jsonl'), out: join(suite.scratch, 'latin1.again'), maxTokens: MAX_TOKENS,
  }).toString('utf8'));
  assert.match(latin1[1].error, /not UTF-8/);
  assert.equal(errors.length, 0, errors.join('\n'));
  await page.close();
});

test('a picture the engine does not read (AVIF) is captioned from the pixels the browser decodes, and its row says so', async () => {
  const formats = join(fixtures, 'formats');
  const avifs = ['rgb.avif', 'rgba.avif'];
  const { page, errors } = await pageWithModel('cpu', 104);
  // What the browser decodes each to, asked the way the worker asks.
  const decoded = {};
  for (const name of avifs) {
    decoded[name] = await page.evaluate(async (bytes) => {
      const bitmap = await createImageBitmap(new Blob([new Uint8Array(bytes)]), {
        premultiplyAlpha: 'none', colorSpaceConversion: 'none',
      });
      const context = new OffscreenCanvas(bitmap.width, bitmap.height).getContext('2d');
      context.drawImage(bitmap, 0, 0);
      return { width: bitmap.width, height: bitmap.height, rgba: [...context.getImageData(0, 0, bitmap.width, bitmap.height).data] };
    }, [...readFileSync(join(formats, name))]);
  }
  // A sane decode: the RGB one is Pillow's (libavif) to the level. (Chromium reads the alpha
  // plane of the RGBA one stretched, as if it were limited range: 127 for 127 in Pillow is 129,
  // 19 is 3, and 6 is 0. Its captions below hold whatever the browser decodes.)
  const { width, height, rgba } = decoded['rgb.avif'];
  const pillow = pillowRgb('rgb.avif');
  assert.deepEqual([pillow.width, pillow.height], [width, height]);
  const rgb = rgba.filter((_, i) => i % 4 !== 3);
  assert.ok(rgba.every((v, i) => i % 4 !== 3 || v === 255), 'opaque');
  assert.deepEqual(rgb, [...pillow.rgb], "the browser's pixels are Pillow's");

  // The native program on PNGs of those very pixels is the reference for the captions.
  const pngs = join(suite.scratch, 'avif-as-png');
  mkdirSync(pngs, { recursive: true });
  for (const name of avifs) {
    const { width, height, rgba } = decoded[name];
    writeFileSync(join(pngs, `${name}.png`), pngOf(width, height, Uint8Array.from(rgba)));
  }
  const nativeInput = join(suite.scratch, 'avif-native.jsonl');
  writeFileSync(nativeInput, avifs.map((name, i) => JSON.stringify({ image: [`${name}.png`], id: i + 1 })).join('\n') + '\n');
  captioner([
    'caption-jsonl', '--model', join(fixtures, 'tiny-b'), '--input', nativeInput, '--output', `${nativeInput}.out`,
    '--image-root', pngs, '--temperature', '0', '--max-tokens', String(MAX_TOKENS),
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  const native = rowsOf(readFileSync(`${nativeInput}.out`, 'utf8'));

  // The page, with a format the engine knows and leaves out (and Chromium reads no PPM) and
  // bytes that are no image beside them.
  const ppm = join(suite.scratch, 'tiny.ppm');
  writeFileSync(ppm, Buffer.concat([Buffer.from('P6\n1 1\n255\n'), Buffer.from([200, 100, 50])]));
  const junk = join(suite.scratch, 'broken.heic');
  writeFileSync(junk, 'not a picture at all');
  const input = join(suite.scratch, 'avif.jsonl');
  const names = [...avifs, 'tiny.ppm', 'broken.heic'];
  writeFileSync(input, names.map((name, i) => JSON.stringify({ image: [name], id: i + 1 })).join('\n') + '\n');
  await page.getByTestId('images').setInputFiles(avifs.map((name) => join(formats, name)).concat(ppm, junk));
  await page.getByTestId('jsonl').setInputFiles(input);
  await waitForText(page, 'input-status', /4 row\(s\) from avif\.jsonl/);
  await page.getByTestId('run').click();
  await waitForText(page, 'progress-text', /^Done: 4 of 4 rows \(2 captioned, 0 skipped, 2 failed\)/);
  const out = rowsOf((await downloadOf(page)).toString('utf8'));
  avifs.forEach((name, i) => {
    assert.deepEqual(out[i], { image: [name], id: i + 1, caption: native[i].caption, decoded_by_browser: [name] });
  });
  assert.match(out[2].error, /^image 'tiny\.ppm': unsupported image format Pnm: .*; the browser could not decode it either: ./);
  // Bytes no decoder takes for an image: the engine's error alone, as the command line writes it.
  assert.equal(out[3].error, "image 'broken.heic': not a recognised image: expected JPEG, PNG, WebP, GIF, BMP, TIFF or ICO data");
  for (const row of out.slice(2)) {
    assert.equal(row.caption, null);
    assert.equal(row.decoded_by_browser, undefined);
  }
  assert.equal(errors.length, 0, errors.join('\n'));
  await page.close();
});
