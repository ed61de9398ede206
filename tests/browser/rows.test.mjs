// Rows that cannot go astray: a run works on the rows and files as they were when Run was
// pressed, a result goes to the row it belongs to (by identity, never by index), a picture
// replaced at the same path loses its old caption, one rule says which lines are blank (JSON's
// white space only, as the engine reads them), and a pick never doubles an image or switches
// the rows without saying so. Each test here failed on the page before these rules (issue "The
// page as a product…", first section).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { captioner, downloadOf, example, examplePictures, fixtures, images, pageSuite, rowsOf, dropFiles, waitForText } from './page.mjs';

const MAX_TOKENS = 8;

const suite = pageSuite();

/** The page with the tiny model loaded on the CPU, greedy (see page.mjs). */
const pageWithModel = (seed) => suite.pageWithModel('cpu', seed, MAX_TOKENS);

/** `captioner caption-jsonl` on `input` with images under `root`, greedy; its output's bytes. */
function native(input, root, extra = []) {
  const out = `${input}.native`;
  captioner([
    'caption-jsonl', '--model', join(fixtures, 'tiny-b'), '--input', input, '--output', out,
    '--image-root', root, '--temperature', '0', '--max-tokens', String(MAX_TOKENS), '--restart',
    ...extra,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  return readFileSync(out);
}

test('a rows file picked, or a field left, just as Run is pressed: the run captions the new rows, every one', async () => {
  const text = [
    // A long field makes the file take a moment to read, the window the old page ran in.
    JSON.stringify({ image: ['small_100x80.png'], id: 1, notes: 'x'.repeat(4_000_000) }),
    JSON.stringify({ image: ['gray_200x150.png'], id: 2 }),
    JSON.stringify({ image: ['photo_90x60.bmp'], id: 3 }),
  ].join('\n') + '\n';
  const input = join(suite.scratch, 'late.jsonl');
  writeFileSync(input, text);
  const { page, errors } = await pageWithModel(201);
  await page.getByTestId('images').setInputFiles(examplePictures);
  await page.getByTestId('jsonl').setInputFiles(example);
  await waitForText(page, 'input-status', /12 row\(s\) from rows\.jsonl/);

  // The pick and the click in one task: the click comes while the file is still being read.
  await page.evaluate((text) => {
    const picker = document.querySelector('[data-testid="jsonl"]');
    const t = new DataTransfer();
    t.items.add(new File([text], 'late.jsonl', { type: 'application/jsonl' }));
    picker.files = t.files;
    picker.dispatchEvent(new Event('change', { bubbles: true }));
    document.querySelector('[data-testid="run"]').click();
  }, text);
  await waitForText(page, 'progress-text', /^Done: 3 of 3 rows/);
  assert.equal(await page.getByTestId('row').count(), 3);
  const expected = native(input, images);
  assert.equal((await downloadOf(page)).toString('utf8'), expected.toString('utf8'));

  // The caption field changed and Run clicked straight away: the field's change (on blur) lands
  // first, so every row is captioned again into the new field, none lost to the reset.
  await page.getByTestId('caption-key').fill('text');
  await page.getByTestId('run').click();
  await waitForText(page, 'progress-text', /^Done: 3 of 3 rows \(3 captioned/);
  const renamed = rowsOf((await downloadOf(page)).toString('utf8'));
  assert.deepEqual(renamed.map((r) => r.text), rowsOf(expected.toString('utf8')).map((r) => r.caption));
  assert.equal(errors.length, 0, errors.join('\n'));
  await page.close();
});

test('another picture at the same path loses the old caption, and the run captions the new one', async () => {
  const input = join(suite.scratch, 'same-path.jsonl');
  writeFileSync(input, '{"image": ["pic.png"], "id": 1}\n{"image": ["other.png"], "id": 2}\n');
  const first = join(suite.scratch, 'first');
  const second = join(suite.scratch, 'second');
  for (const dir of [first, second]) mkdirSync(dir, { recursive: true });
  copyFileSync(join(images, 'small_100x80.png'), join(first, 'pic.png'));
  copyFileSync(join(images, 'gray_200x150.png'), join(second, 'pic.png'));
  for (const dir of [first, second]) copyFileSync(join(images, 'rgba_160x120.png'), join(dir, 'other.png'));

  const { page, errors } = await pageWithModel(202);
  await page.getByTestId('images').setInputFiles([join(first, 'pic.png'), join(first, 'other.png')]);
  await page.getByTestId('jsonl').setInputFiles(input);
  await waitForText(page, 'input-status', /2 row\(s\) from same-path\.jsonl/);
  await page.getByTestId('run').click();
  await waitForText(page, 'progress-text', /^Done: 2 of 2 rows/);
  assert.equal((await downloadOf(page)).toString('utf8'), native(input, first).toString('utf8'));

  // A different pic.png: said, and its row is no longer finished; other.png's row is kept.
  await page.getByTestId('images').setInputFiles([join(second, 'pic.png')]);
  const status = await waitForText(page, 'input-status', /Replaced/);
  assert.match(status, /Replaced by another file of the same path: pic\.png\./, status);
  assert.match(status, /1 finished row\(s\) kept\./, status);
  assert.match(await page.getByTestId('run-hint').textContent(), /Run goes on with the 1 row\(s\) not finished/);
  await page.getByTestId('run').click();
  await waitForText(page, 'progress-text', /^Done: 2 of 2 rows/);
  assert.equal((await downloadOf(page)).toString('utf8'), native(input, second).toString('utf8'));
  assert.equal(errors.length, 0, errors.join('\n'));
  await page.close();
});

test('only JSON white space makes a blank line, for the page as for the engine; other white space is a row', async () => {
  // U+0085 (NEL) is white space to Rust and not to JavaScript's \s; U+00A0, U+2028, U+3000 and
  // FF are to both; none is JSON's. Each of those lines is an error row that keeps it.
  const input = join(suite.scratch, 'white.jsonl');
  writeFileSync(input, [
    '{"image": ["small_100x80.png"], "id": 1}', '\u0085', ' \t\r', '\u00a0\u3000 \t', '\f',
    '{"image": ["gray_200x150.png"], "id": 2}', '\u2028', '',
  ].join('\n'));
  const expected = native(input, images);
  const rows = rowsOf(expected.toString('utf8'));
  assert.equal(rows.length, 6);
  assert.deepEqual(rows.filter((r) => r.error).map((r) => r.raw), ['\u0085', '\u00a0\u3000 \t', '\f', '\u2028']);
  const { page, errors } = await pageWithModel(203);
  await page.getByTestId('images').setInputFiles(examplePictures);
  await page.getByTestId('jsonl').setInputFiles(input);
  await waitForText(page, 'input-status', /\d+ row\(s\) from white\.jsonl/);
  assert.match(await page.getByTestId('input-status').textContent(), /^10 image file\(s\), 6 row\(s\)/);
  assert.equal(await page.getByTestId('row').count(), 6);
  await page.getByTestId('run').click();
  await waitForText(page, 'progress-text', /^Done: 6 of 6 rows/);
  assert.deepEqual(await downloadOf(page), expected);
  assert.equal(errors.length, 0, errors.join('\n'));
  await page.close();
});

test('one image picked by folder and by name is one row; another file at the same path is said', async () => {
  const dir = join(suite.scratch, 'holiday');
  const elsewhere = join(suite.scratch, 'elsewhere');
  const another = join(suite.scratch, 'another');
  for (const d of [dir, elsewhere, another]) mkdirSync(d, { recursive: true });
  copyFileSync(join(images, 'small_100x80.png'), join(dir, 'a.png'));
  copyFileSync(join(images, 'gray_200x150.png'), join(dir, 'b.png'));
  copyFileSync(join(images, 'rgba_160x120.png'), join(elsewhere, 'b.png'));
  copyFileSync(join(images, 'palette_120x90.gif'), join(another, 'b.png'));
  const { page, errors } = await suite.openPage('/');

  await page.getByTestId('folder').setInputFiles(dir);
  await waitForText(page, 'input-status', /^2 image file\(s\), one row each/);
  // The same a.png by name: already there, as holiday/a.png.
  await page.getByTestId('images').setInputFiles([join(dir, 'a.png')]);
  const again = await waitForText(page, 'input-status', /Already picked/);
  assert.match(again, /^2 image file\(s\), one row each\. Already picked, not added again: a\.png \(as holiday\/a\.png\)\./, again);
  assert.equal(await page.getByTestId('row').count(), 2);

  // Two different b.png picked by name one after the other: the second replaces the first, and
  // the page says so.
  await page.getByTestId('images').setInputFiles([join(elsewhere, 'b.png')]);
  await waitForText(page, 'input-status', /^3 image file\(s\)/);
  const lines = (await downloadOf(page)).toString('utf8').trim().split('\n');
  assert.deepEqual(lines.map((l) => JSON.parse(l).image[0]), ['b.png', 'holiday/a.png', 'holiday/b.png']);
  await page.getByTestId('images').setInputFiles([join(another, 'b.png')]);
  const replaced = await waitForText(page, 'input-status', /Replaced/);
  assert.match(replaced, /^3 image file\(s\), one row each\. Replaced by another file of the same path: b\.png\./, replaced);
  assert.equal(errors.length, 0, errors.join('\n'));
  await page.close();
});

test('rows are never switched without a word: a folder keeps the rows, several rows files are all named', async () => {
  const dir = join(suite.scratch, 'with-rows');
  mkdirSync(dir, { recursive: true });
  copyFileSync(join(images, 'small_100x80.png'), join(dir, 'small_100x80.png'));
  writeFileSync(join(dir, 'other.jsonl'), '{"image": ["small_100x80.png"]}\n');
  const { page, errors } = await suite.openPage('/');

  await page.getByTestId('jsonl').setInputFiles(example);
  await waitForText(page, 'input-status', /12 row\(s\) from rows\.jsonl/);
  // A folder with a rows file in it: its images join, the rows stay, the file is named.
  await page.getByTestId('folder').setInputFiles(dir);
  const folder = await waitForText(page, 'input-status', /Not used as rows/);
  assert.match(folder, /^1 image file\(s\), 12 row\(s\) from rows\.jsonl\./, folder);
  assert.match(folder, /Not used as rows \(the rows are from rows\.jsonl; pick one with “Rows” to use it\): with-rows\/other\.jsonl\./, folder);

  // Two rows files dropped together: neither is taken, both are named.
  await page.getByTestId('clear').click();
  await waitForText(page, 'input-status', /^0 image file\(s\), one row each\.$/);
  const row = [...Buffer.from('{"image": ["a.png"]}\n')];
  await dropFiles(page, [
    { name: 'one.jsonl', type: 'application/jsonl', bytes: row },
    { name: 'two.jsonl', type: 'application/jsonl', bytes: row },
  ]);
  const several = await waitForText(page, 'input-status', /Not used as rows/);
  assert.match(several, /^0 image file\(s\), one row each\. Not used as rows \(several rows files came together; pick one with “Rows” to use it\): one\.jsonl, two\.jsonl\./, several);

  // One rows file dropped alone is a choice: it becomes the rows, and what it replaced is said.
  await page.getByTestId('jsonl').setInputFiles(example);
  await waitForText(page, 'input-status', /12 row\(s\) from rows\.jsonl/);
  await dropFiles(page, [{ name: 'one.jsonl', type: 'application/jsonl', bytes: row }]);
  const alone = await waitForText(page, 'input-status', /from one\.jsonl/);
  assert.match(alone, /^0 image file\(s\), 1 row\(s\) from one\.jsonl\. The rows from rows\.jsonl were replaced by one\.jsonl\./, alone);
  assert.equal(errors.length, 0, errors.join('\n'));
  await page.close();
});

/** A seeded generator of floats in [0, 1) (mulberry32): the same trials on every run. */
function seeded(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('inputs changed at random moments around a run: the download is the grid, every row once, rightly captioned (seeded, 50 trials)', async () => {
  const pictures = ['small_100x80.png', 'gray_200x150.png', 'photo_90x60.bmp', 'rgba_160x120.png'];
  // Each picture's caption, as the native program writes it.
  const all = join(suite.scratch, 'all-pictures.jsonl');
  writeFileSync(all, pictures.map((p) => JSON.stringify({ image: [p] })).join('\n') + '\n');
  const expected = new Map(rowsOf(native(all, images).toString('utf8')).map((r) => [r.image[0], r.caption]));
  const rowsFiles = {
    A: pictures.map((p, i) => JSON.stringify({ image: [p], id: `a${i}` })).join('\n') + '\n',
    B: [pictures[2], pictures[0], 'photos/missing.jpg'].map((p, i) => JSON.stringify({ image: [p], id: `b${i}` })).join('\n') + '\n',
  };

  const { page, errors } = await pageWithModel(204);
  // The user's hands, in the page: each acts as a pick, a drop, an edit or a click would.
  await page.evaluate(async ({ pictures, rowsFiles }) => {
    const q = (id) => document.querySelector(`[data-testid="${id}"]`);
    const files = {};
    for (const p of pictures) files[p] = new File([await (await fetch(`/fixtures/images/${p}`)).blob()], p);
    const pick = (id, list) => {
      const t = new DataTransfer();
      for (const f of list) t.items.add(f);
      q(id).files = t.files;
      q(id).dispatchEvent(new Event('change', { bubbles: true }));
    };
    window.hands = {
      rows: (which) => pick('jsonl', [new File([rowsFiles[which]], `${which}.jsonl`)]),
      images: (n) => pick('images', pictures.slice(0, n).map((p) => files[p])),
      captionKey: (key) => {
        // Typed in: a field locked while a run goes takes no typing.
        if (q('caption-key').matches(':disabled')) return;
        q('caption-key').value = key;
        q('caption-key').dispatchEvent(new Event('change', { bubbles: true }));
      },
      remove: () => q('remove')?.click(),
      clear: () => q('clear').click(),
      run: () => q('run').click(),
    };
  }, { pictures, rowsFiles });

  const random = seeded(33);
  const pickOf = (list) => list[Math.floor(random() * list.length)];
  const settled = async () => {
    // The run over, and the status line still for a while (a change may land after a run).
    await page.waitForFunction(() => !/^Captioning/.test(document.querySelector('[data-testid="run-hint"]').textContent));
    let last = null;
    for (;;) {
      const now = await page.evaluate(() => ['input-status', 'progress-text', 'run-hint']
        .map((id) => document.querySelector(`[data-testid="${id}"]`).textContent).join('|'));
      if (now === last) return;
      last = now;
      await page.waitForTimeout(250);
    }
  };
  for (let trial = 0; trial < 50; trial++) {
    await page.evaluate(() => window.hands.clear());
    await page.evaluate(({ rows, images, key }) => {
      window.hands.captionKey(key);
      window.hands.images(images);
      if (rows) window.hands.rows(rows);
    }, { rows: pickOf([null, 'A', 'B']), images: 1 + Math.floor(random() * 4), key: pickOf(['caption', 'text']) });
    await settled();
    const action = pickOf([['rows', 'A'], ['rows', 'B'], ['images', 4], ['images', 2], ['captionKey', 'text'],
      ['captionKey', 'caption'], ['remove'], ['clear']]);
    const before = random() < 0.5;
    const delay = Math.floor(random() * 300);
    const label = `trial ${trial}: ${action.join(' ')} ${before ? 'just before Run' : `${delay} ms after Run`}`;
    await page.evaluate(({ action: [name, arg], before, delay }) => {
      if (before) window.hands[name](arg);
      window.hands.run();
      if (!before) setTimeout(() => window.hands[name](arg), delay);
    }, { action, before, delay });
    await page.waitForTimeout(before ? 0 : delay + 50);
    await settled();

    const key = await page.getByTestId('caption-key').inputValue();
    const grid = await page.getByTestId('row').evaluateAll((rows) => rows.map((li) => ({
      path: li.querySelector('.path').textContent,
      text: li.querySelector('.caption').textContent,
      failed: li.querySelector('.caption').classList.contains('error'),
    })));
    if (!grid.length) continue;
    const download = rowsOf((await downloadOf(page)).toString('utf8'));
    assert.equal(download.length, grid.length, label);
    const seen = new Set();
    download.forEach((row, i) => {
      assert.equal(row.image[0], grid[i].path, label);
      const id = row.id ?? row.image[0];
      assert.ok(!seen.has(id), `${label}: ${id} twice`);
      seen.add(id);
      if (grid[i].failed) assert.equal(row.error, grid[i].text, label);
      else assert.equal(row[key] ?? '', grid[i].text, label);
      if (typeof row[key] === 'string') assert.equal(row[key], expected.get(row.image[0]), `${label}: ${id}`);
    });
  }
  assert.equal(errors.length, 0, errors.join('\n'));
  await page.close();
});

test('a caption field named as the image field is refused at Run, and says why', async () => {
  // Before, every row counted as captioned already (its "caption" was its image list) and the
  // download was the input: a run that did nothing, with no word.
  const { page, errors } = await pageWithModel(31);
  await page.getByTestId('caption-key').fill('image');
  await page.getByTestId('images').setInputFiles([join(images, 'small_100x80.png')]);
  await waitForText(page, 'input-status', /^1 image file/);
  await page.getByTestId('run').click();
  const said = await waitForText(page, 'progress-text', /stopped|Done/);
  assert.match(said, /^The run stopped: the caption key and the image key are both "image"/, said);
  assert.equal(errors.length, 0, errors.join('\n'));
  await page.close();
});
