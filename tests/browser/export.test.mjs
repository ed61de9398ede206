// The rows in the other forms people use them in (www/export.js): a CSV that a spreadsheet reads
// back field for field, and a zip of `.txt` caption files named after the images. Checked against
// Python's own csv and zipfile readers, and through the page's buttons after a run.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { captionFiles, csvOf, windowsCanHold, zipOf } from '../../www/export.js';
import { downloadOf, example, examplePictures, pageSuite, rowsOf, waitForText } from './page.mjs';

const MAX_TOKENS = 8;

const suite = pageSuite();

/** What Python's csv module reads from the CSV file at `path`: the rows, as lists of cells. */
const pythonCsv = (path) => JSON.parse(execFileSync('python3', ['-c',
  'import csv, json, sys; csv.field_size_limit(sys.maxsize); ' +
  'print(json.dumps(list(csv.reader(open(sys.argv[1], encoding="utf-8-sig", newline="")))))',
  path]).toString('utf8'));

/** What Python's zipfile module reads from the zip at `path`: `{name: text}`, after its CRC check. */
const pythonZip = (path) => JSON.parse(execFileSync('python3', ['-c',
  'import json, sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; ' +
  'print(json.dumps({i.filename: z.read(i).decode("utf-8") for i in z.infolist()}))',
  path]).toString('utf8'));

/** The cells a row's fields should read as: a string's text, any other value's JSON as written. */
function expectedCsv(lines) {
  const rows = lines.map((l) => JSON.parse(l));
  const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  return { columns, rows };
}

test('the CSV reads back field for field: quotes, commas, line breaks, every script, numbers as written, no formulas', () => {
  const lines = [
    '{"image": ["a,b.jpg"], "caption": "He said \\"hi\\",\\nthen left.", "n": 123456789012345678901234567890}',
    '\ufeff{"image": "日本/写真.png", "caption": "Café ✓ 🚀", "x": 1.50, "tags": ["a", "b"], "none": null}',
    'not JSON at all',
    // A text a spreadsheet would run is shown as text; a number stays a number.
    `{"image": "f.jpg", "caption": "=HYPERLINK(\\"http://x\\")", "n": -3, "x": "-3", "long": "${'ab\\"['.repeat(200_000)}"}`,
  ];
  const path = join(suite.scratch, 'fields.csv');
  writeFileSync(path, csvOf(lines));
  const read = pythonCsv(path);
  assert.deepEqual(read.slice(0, 4), [
    ['image', 'caption', 'n', 'x', 'tags', 'none', 'line', 'long'],
    ['["a,b.jpg"]', 'He said "hi",\nthen left.', '123456789012345678901234567890', '', '', '', '', ''],
    ['日本/写真.png', 'Café ✓ 🚀', '', '1.50', '["a", "b"]', 'null', '', ''],
    ['', '', '', '', '', '', 'not JSON at all', ''],
  ]);
  // (A long string, brackets and quotes in it, is one cell.)
  assert.deepEqual(read[4], ['f.jpg', "'=HYPERLINK(\"http://x\")", '-3', "'-3", '', '', '', 'ab"['.repeat(200_000)]);
});

test('caption files: one per image with a caption, named after it inside the zip, the rest counted', () => {
  const lines = [
    '{"image": ["photos/a.jpg"], "caption": "first"}',
    '{"image": "b.png", "caption": "second ✓"}',
    '{"image": ["../../etc/c.webp"], "caption": "no way out"}',
    '{"image": ["d1.jpg", "d2.jpg"], "caption": "a pair"}',
    '{"image": ["e.jpg"], "caption": null, "error": "image \'e.jpg\' not found"}',
    '{"image": ["photos/a.jpg"], "caption": "again"}',
    '{"image": ["B.jpeg"], "caption": "another b.txt, which would overwrite the first"}',
    '{"image": ["C:\\\\data\\\\g.jpg"], "caption": "from Windows"}',
    '{"image": [], "caption": "no image"}',
    '{"image": ["scans/aux.jpg"], "caption": "a device name on Windows"}',
    '{"image": ["12:30.png"], "caption": "a colon"}',
    '{"image": ["trail./x.jpg"], "caption": "a folder ending in a dot"}',
    '{"img": "f.jpg", "text": "keys of its own"}',
  ];
  const { files, left, notOnWindows } = captionFiles(lines);
  assert.deepEqual(left, { uncaptioned: 2, noImage: 1, severalImages: 1, sameFile: 2 });
  // Written all the same (they belong beside their images), and named.
  assert.deepEqual(notOnWindows, ['scans/aux.txt', '12:30.txt', 'trail./x.txt']);
  const holds = ['CON', 'con.tar.gz', 'Com1 .txt', 'LPT¹.txt', 'nul', 'a?', 'tab\t', 'end '].map(windowsCanHold);
  assert.deepEqual(holds, [false, false, false, false, false, false, false, false]);
  const fine = ['console.txt', 'com10.txt', 'aux_1.txt', 'naïve café.txt', '.hidden'].map(windowsCanHold);
  assert.deepEqual(fine, [true, true, true, true, true]);
  const own = captionFiles(lines.slice(-1), { imageKey: 'img', captionKey: 'text' });
  assert.deepEqual(own.files, [{ name: 'f.txt', text: 'keys of its own' }]);

  const path = join(suite.scratch, 'captions.zip');
  return zipOf(files).arrayBuffer().then((bytes) => {
    writeFileSync(path, Buffer.from(bytes));
    assert.deepEqual(pythonZip(path), {
      'photos/a.txt': 'first', 'b.txt': 'second ✓', 'etc/c.txt': 'no way out', 'data/g.txt': 'from Windows',
      'scans/aux.txt': 'a device name on Windows', '12:30.txt': 'a colon', 'trail./x.txt': 'a folder ending in a dot',
    });
  });
});

test('after a run the page downloads the same rows as CSV and as caption files, and says what it left out', async () => {
  const { page, errors } = await suite.pageWithModel('cpu', 301, MAX_TOKENS);
  await page.getByTestId('images').setInputFiles(examplePictures);
  await page.getByTestId('jsonl').setInputFiles(example);
  await waitForText(page, 'input-status', /12 row\(s\)/);
  await page.getByTestId('run').click();
  await waitForText(page, 'progress-text', /^Done: 12 of 12 rows/);
  const jsonl = (await downloadOf(page)).toString('utf8').split('\n').filter((l) => l);

  // The CSV: the JSONL's rows and fields, in order.
  const csvPath = join(suite.scratch, 'page.csv');
  writeFileSync(csvPath, await downloadOf(page, 'download-csv'));
  const { columns, rows } = expectedCsv(jsonl);
  const read = pythonCsv(csvPath);
  assert.deepEqual(read[0], columns);
  assert.equal(read.length, 1 + rows.length);
  rows.forEach((row, i) => {
    const strings = columns.map((c) => (row[c] === undefined ? '' : typeof row[c] === 'string' ? row[c] : null));
    strings.forEach((want, k) => want !== null && assert.equal(read[i + 1][k], want, `row ${i + 1} ${columns[k]}`));
  });
  // Numbers as the line writes them (the example's 30-digit integer keeps its digits).
  assert.equal(read[1][columns.indexOf('huge')], '123456789012345678901234567890');

  // The caption files: every captioned row with one image, named after it.
  const zipPath = join(suite.scratch, 'page.zip');
  writeFileSync(zipPath, await downloadOf(page, 'download-txt'));
  const want = {};
  for (const row of rowsOf(jsonl.join('\n'))) {
    const images = [row.image].flat();
    if (typeof row.caption === 'string' && images.length === 1) want[images[0].replace(/\.[^./]*$/, '.txt')] = row.caption;
  }
  assert.ok(Object.keys(want).length >= 2, JSON.stringify(want));
  assert.deepEqual(pythonZip(zipPath), want);
  const said = await waitForText(page, 'export-status', /caption file/);
  assert.match(said, new RegExp(`^${Object.keys(want).length} caption file\\(s\\) in the zip; rows left out: \\d+ without a caption, 1 with several images`), said);

  // The same files written into the images' folder (File System Access): the picker answers
  // with a folder of the page's private file system, holding one caption file already.
  const [first] = Object.keys(want);
  await page.evaluate(async (name) => {
    const root = await navigator.storage.getDirectory();
    const folder = await root.getDirectoryHandle('pictures', { create: true });
    const writable = await (await folder.getFileHandle(name, { create: true })).createWritable();
    await writable.write('written by hand');
    await writable.close();
    window.showDirectoryPicker = async () => folder;
  }, first);
  const folderFiles = () => page.evaluate(async () => {
    const out = {};
    const walk = async (dir, prefix) => {
      for await (const [name, handle] of dir.entries()) {
        if (handle.kind === 'directory') await walk(handle, `${prefix}${name}/`);
        else out[prefix + name] = await (await handle.getFile()).text();
      }
    };
    await walk(await (await navigator.storage.getDirectory()).getDirectoryHandle('pictures'), '');
    return out;
  });
  const count = Object.keys(want).length;
  // Asked first, and told no: the file there is kept, every other one written.
  const asked = [];
  page.once('dialog', (d) => asked.push(d.message()) && d.dismiss());
  await page.getByTestId('write-txt').click();
  const kept = await waitForText(page, 'export-status', /written into pictures/);
  assert.match(asked[0], new RegExp(`^1 of the ${count} caption files are in pictures already \\(${first.replace('.', '\\.')}\\)`), asked[0]);
  assert.match(kept, new RegExp(`^${count - 1} caption file\\(s\\) written into pictures; 1 already there kept as they were`), kept);
  assert.deepEqual(await folderFiles(), { ...want, [first]: 'written by hand' });
  // Told yes: replaced.
  page.once('dialog', (d) => d.accept());
  await page.getByTestId('write-txt').click();
  await waitForText(page, 'export-status', new RegExp(`^${count} caption file\\(s\\) written into pictures`));
  assert.deepEqual(await folderFiles(), want);
  assert.equal(errors.length, 0, errors.join('\n'));
  await page.close();
});
