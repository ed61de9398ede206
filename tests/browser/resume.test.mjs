// Progress that survives a reload: the finished rows and the captions typed by hand are kept in
// this browser (www/progress-store.js, IndexedDB), however long the rows, and come back when the
// same inputs and settings are picked again. The page kept them in localStorage before, which
// took about 5 MB a site and dropped the rest without a word, and kept no edit at all.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { downloadOf, examplePictures, pageSuite, waitForText } from './page.mjs';

const MAX_TOKENS = 8;

const suite = pageSuite();

/** IndexedDB's record of a row, read in the page: the rows store holds one per row. */
const storedEdits = (page) =>
  page.evaluate(
    () =>
      new Promise((resolve, reject) => {
        const open = indexedDB.open('captioner-progress');
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          try {
            const all = open.result.transaction('rows').objectStore('rows').getAll();
            all.onsuccess = () => resolve(all.result.map((r) => r.edit).filter((e) => e != null));
            all.onerror = () => reject(all.error);
          } catch {
            resolve([]); // (no rows store: a page that keeps no progress here)
          }
        };
      }),
  );

test('a run with rows of 8 MB in all and a caption typed by hand: both come back after a reload, and the download is the same', async () => {
  // Rows whose fields are long: each output line carries its row's fields, 8 MB in all, past
  // what localStorage takes.
  const pictures = examplePictures.slice(0, 8);
  const text = pictures
    .map((path, i) => JSON.stringify({ image: [basename(path)], id: i, notes: String(i).repeat(1_000_000) }))
    .join('\n') + '\n';
  const input = join(suite.scratch, 'long.jsonl');
  writeFileSync(input, text);
  const pick = async (page) => {
    await page.getByTestId('images').setInputFiles(pictures);
    await page.getByTestId('jsonl').setInputFiles(input);
  };

  const first = await suite.pageWithModel('cpu', 301, MAX_TOKENS);
  await pick(first.page);
  await waitForText(first.page, 'input-status', /8 row\(s\) from long\.jsonl\./);
  await first.page.getByTestId('run').click();
  await waitForText(first.page, 'progress-text', /^Done: 8 of 8 rows/);
  const caption = first.page.getByTestId('row').nth(2).getByTestId('caption');
  await caption.fill('Typed by hand before the tab closed');
  // The edit is stored within a second or so, whatever closes the tab after.
  for (let i = 0; i < 50 && !(await storedEdits(first.page)).length; i++) await first.page.waitForTimeout(100);
  assert.deepEqual(await storedEdits(first.page), ['Typed by hand before the tab closed']);
  const download = (await downloadOf(first.page)).toString('utf8');
  assert.match(download, /"caption":"Typed by hand before the tab closed"/);
  const shown = await first.page.getByTestId('row').allTextContents();
  assert.equal(first.errors.length, 0, first.errors.join('\n'));
  await first.page.close();

  // A new page, the same inputs and settings: every row restored, the edit with it, nothing run.
  const again = await suite.pageWithModel('cpu', 301, MAX_TOKENS);
  await pick(again.page);
  const status = await waitForText(again.page, 'input-status', /8 row\(s\) from long\.jsonl\./);
  assert.match(status, /8 row\(s\) restored from an earlier run\./, status);
  assert.doesNotMatch(status, /cannot be kept/, status);
  assert.deepEqual(await again.page.getByTestId('row').allTextContents(), shown);
  assert.equal(await again.page.getByTestId('row').nth(2).getAttribute('data-edited'), '');
  assert.match(await again.page.getByTestId('show').textContent(), /Edited by hand \(1\)/);
  assert.match(await again.page.getByTestId('run-hint').textContent(), /Every row is finished/);
  assert.equal((await downloadOf(again.page)).toString('utf8'), download);

  // Other settings are another run: nothing of this one is restored under them.
  await again.page.getByTestId('seed').fill('302');
  await again.page.getByTestId('clear').click();
  await pick(again.page);
  const other = await waitForText(again.page, 'input-status', /8 row\(s\) from long\.jsonl\./);
  assert.doesNotMatch(other, /restored/, other);
  assert.equal(again.errors.length, 0, again.errors.join('\n'));
  await again.page.close();
});

test('progress under settings unused for 30 days is deleted when the page opens, and the old localStorage copies with it', async () => {
  const { page } = await suite.openPage('/');
  // (The page opened the store; add an old run and a recent one beside it, and an old-style copy.)
  await page.evaluate(
    () =>
      new Promise((resolve, reject) => {
        localStorage.setItem('captioner-run:0123', '[]');
        const open = indexedDB.open('captioner-progress');
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const tx = open.result.transaction(['rows', 'keys'], 'readwrite');
          const day = 24 * 3600 * 1000;
          tx.objectStore('keys').put({ used: Date.now() - 31 * day }, 'settings:old');
          tx.objectStore('keys').put({ used: Date.now() - 29 * day }, 'settings:recent');
          for (const key of ['settings:old', 'settings:recent']) {
            tx.objectStore('rows').put({ output: { line: '{}', outcome: 'captioned' } }, [key, 'a\u0000b']);
          }
          tx.oncomplete = () => resolve();
          tx.onerror = () => reject(tx.error);
        };
      }),
  );
  await page.reload();
  const left = await page.evaluate(async () => {
    // The page prunes as it opens the store; let that land.
    for (let i = 0; i < 50; i++) {
      const db = await new Promise((resolve) => {
        const open = indexedDB.open('captioner-progress');
        open.onsuccess = () => resolve(open.result);
      });
      const keys = await new Promise((resolve) => {
        const r = db.transaction('rows').objectStore('rows').getAllKeys();
        r.onsuccess = () => resolve(r.result.map(([key]) => key));
      });
      db.close();
      if (!keys.includes('settings:old')) return { keys, old: Object.keys(localStorage) };
      await new Promise((r) => setTimeout(r, 100));
    }
    return null;
  });
  assert.ok(left, 'the old run was not deleted');
  assert.ok(left.keys.includes('settings:recent'), 'a run of 29 days ago was deleted');
  assert.deepEqual(left.old.filter((k) => k.startsWith('captioner-run:')), []);
  await page.close();
});
