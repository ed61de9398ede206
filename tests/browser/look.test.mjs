// The page as a first-time user meets it: one path with the settings folded and their defaults
// said, the prompt that will be sent shown, no accessibility violations (axe-core) in light or
// dark, before, during and after a run, and a layout that fits a phone.
//
// With CAPTIONER_SCREENSHOTS=<folder> it also writes the README's screenshots there (first
// open, mid-run, done, phone): `CAPTIONER_SCREENSHOTS=docs/screenshots node --test
// tests/browser/look.test.mjs`.
//
// Needs: `www/pkg/` built (scripts/test.sh does it), axe-core (npm ci), Chromium.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { asInBrowser, downloadOf, example, examplePictures, pageSuite, repo, rowsOf, waitForText } from './page.mjs';

const suite = pageSuite();
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const shots = process.env.CAPTIONER_SCREENSHOTS ? resolve(process.env.CAPTIONER_SCREENSHOTS) : null;
if (shots) mkdirSync(shots, { recursive: true });

/** Saves a screenshot named `name` when asked for (CAPTIONER_SCREENSHOTS). */
async function shoot(page, name) {
  if (shots) await page.screenshot({ path: join(shots, `${name}.png`), fullPage: false });
}

/**
 * axe-core's WCAG 2 A/AA rules on the page as it is; fails listing each violation with the
 * elements it found. (Evaluated through the DevTools protocol, so the page's policy, which
 * allows no script but its own, does not stop it.)
 */
async function assertAccessible(page, when) {
  const violations = await page.evaluate(async (source) => {
    if (!window.axe) (0, eval)(source);
    const result = await window.axe.run(document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] },
    });
    return result.violations.map((v) => `${v.id} (${v.impact}): ${v.help}\n    ${v.nodes.map((n) => n.target.join(' ')).join('\n    ')}`);
  }, axeSource);
  assert.deepEqual(violations, [], `${when}:\n${violations.join('\n')}`);
}

test('a first visit sees one path, the settings folded with their defaults said, and the prompt that will be sent', async () => {
  const { page, errors } = await suite.openPage('/', suite.browser, { folded: true });
  const advanced = page.getByTestId('advanced');
  assert.equal(await advanced.evaluate((d) => d.open), false);
  assert.equal(
    await page.getByTestId('settings-summary').textContent(),
    'default prompt, up to 512 new tokens, temperature 0.7, top-p 0.9, seed 42',
  );
  // The prompt field holds the engine's own default prompt.
  const engine = readFileSync(join(repo, 'src/engine.rs'), 'utf8');
  const [, defaultPrompt] = /pub const DEFAULT_PROMPT: &str = "([^"]+)";/.exec(engine);
  assert.equal(await page.getByTestId('prompt').inputValue(), defaultPrompt);
  // The model is chosen by name, with its download and where it runs; the address field and
  // the file picker wait under "Another model".
  const choices = await page.getByTestId('model-choice').locator('label').allInnerTexts();
  assert.deepEqual(choices.map((t) => t.replace(/\s+/g, ' ').trim()), [
    'SmolVLM-256M-Instruct From Hugging Face: a 513 MB download, once. Runs on WebGPU, or on the CPU.',
    'Another model A model folder’s URL, or its files from this computer',
  ]);
  assert.equal(await page.getByRole('radio', { name: /^SmolVLM-256M-Instruct/ }).isChecked(), true);
  assert.equal(await page.getByTestId('model-url').isVisible(), false);
  await page.getByRole('radio', { name: /^Another model/ }).check();
  assert.equal(await page.getByTestId('model-url').isVisible(), true);
  assert.equal(await page.getByTestId('model-files').isVisible(), true);
  // Back to the named model: its address is what Load will fetch.
  await page.getByRole('radio', { name: /^SmolVLM-256M-Instruct/ }).check();
  assert.equal(await page.getByTestId('model-url').isVisible(), false);
  const defaultUrl = await page.evaluate(async () => (await import('./model-store.js')).DEFAULT_MODEL_URL);
  assert.equal(await page.getByTestId('model-url').inputValue(), defaultUrl);
  // Opening the block and changing a field says so in its summary.
  await page.getByText('Prompt and sampling').click();
  await page.getByTestId('temperature').fill('0');
  await page.getByTestId('prompt').fill('Name the main object.');
  assert.equal(
    await page.getByTestId('settings-summary').textContent(),
    'own prompt, up to 512 new tokens, greedy, seed 42',
  );
  assert.equal(errors.length, 0, errors.join('\n'));
  await page.close();
});

test('DataFlow’s words: the preset puts the engine’s own in the prompt fields, says so, and a run captions as `caption-jsonl --preset dataflow` does', async () => {
  // The words as src/engine.rs holds them (a string literal, its line continuations joined).
  const engine = readFileSync(join(repo, 'src/engine.rs'), 'utf8');
  const literal = (name) =>
    new RegExp(`pub const ${name}: &str = "((?:[^"\\\\]|\\\\[^])*)";`).exec(engine)[1].replace(/\\\n\s*/g, '');
  const [system, prompt] = [literal('DATAFLOW_SYSTEM'), literal('DATAFLOW_PROMPT')];
  assert.match(system, /^You are a image caption generator\. Your task is to generate a concise and informative caption/);
  const { page, errors } = await suite.pageWithModel('cpu', 42, 8);
  await page.getByTestId('preset').selectOption('dataflow');
  assert.equal(await page.getByTestId('prompt').inputValue(), prompt);
  assert.equal(await page.getByTestId('system').inputValue(), system);
  assert.equal(await page.getByTestId('settings-summary').textContent(), 'DataFlow’s prompts, up to 8 new tokens, greedy, seed 42');
  // The embedding API offers the same words.
  const api = await page.evaluate(async () => ({ ...(await import('./captioner.js')).PRESETS.dataflow }));
  assert.deepEqual(api, { system, prompt });

  await page.getByTestId('images').setInputFiles(examplePictures);
  await page.getByTestId('jsonl').setInputFiles(example);
  await waitForText(page, 'input-status', /12 row\(s\)/);
  await page.getByTestId('run').click();
  await waitForText(page, 'progress-text', /^Done: 12 of 12 rows/);
  const native = suite.nativeOutput({ maxTokens: 8, extra: ['--preset', 'dataflow'] });
  assert.equal((await downloadOf(page)).toString('utf8'), asInBrowser(native));
  // Not the default words' captions.
  assert.notDeepEqual(rowsOf(native).map((r) => r.caption), rowsOf(suite.nativeOutput({ maxTokens: 8 })).map((r) => r.caption));

  // Edited, the words are the user's own; back to Captioner's, the system prompt is gone.
  await page.getByTestId('system').fill('Be brief.');
  assert.equal(await page.getByTestId('preset').inputValue(), 'own');
  assert.match(await page.getByTestId('settings-summary').textContent(), /^own prompt and system prompt, /);
  await page.getByTestId('preset').selectOption('default');
  assert.equal(await page.getByTestId('system').inputValue(), '');
  assert.match(await page.getByTestId('settings-summary').textContent(), /^default prompt, /);
  assert.equal(errors.length, 0, errors.join('\n'));
  await page.close();
});

test('no accessibility violations (axe-core, WCAG 2.1 AA) in light or dark, before, during and after a run', async () => {
  for (const colorScheme of ['light', 'dark']) {
    const device = colorScheme === 'light' ? 'webgpu' : 'cpu';
    const { page } = await suite.openPage(`/?model=/fixtures/tiny-b/&device=${device}`, suite.browser, { folded: true });
    await page.emulateMedia({ colorScheme });
    await page.setViewportSize({ width: 1280, height: 900 });
    await waitForText(page, 'model-status', /Model ready|could not/);
    await assertAccessible(page, `${colorScheme}, first open`);
    if (colorScheme === 'light') await shoot(page, 'first-open');
    await page.evaluate(() => document.querySelectorAll('details').forEach((d) => (d.open = true)));
    await assertAccessible(page, `${colorScheme}, every block open`);

    await page.getByTestId('max-tokens').fill('16');
    await page.getByTestId('temperature').fill('0');
    // (Outputs are kept in this browser by their rows: another seed per pass makes each a run.)
    await page.getByTestId('seed').fill(colorScheme === 'light' ? '1' : '2');
    await page.getByTestId('images').setInputFiles(examplePictures);
    await page.getByTestId('jsonl').setInputFiles(example);
    await waitForText(page, 'input-status', /12 row\(s\)/);
    await page.getByTestId('run').click();
    if (colorScheme === 'light') {
      // On WebGPU (SwiftShader) a row takes seconds, so the page is seen mid-run.
      await waitForText(page, 'progress-text', /^[1-9]\d* of 12 rows/);
      // The row being captioned is marked, busy, and in view.
      const currentRow = page.locator('[data-testid="row"].current');
      await currentRow.waitFor();
      assert.equal(await currentRow.getAttribute('aria-busy'), 'true');
      assert.ok(await currentRow.evaluate((li) => {
        const box = li.getBoundingClientRect();
        return box.bottom > 0 && box.top < window.innerHeight;
      }), 'the row being captioned is out of view');
      await shoot(page, 'mid-run');
      await assertAccessible(page, `${colorScheme}, mid-run`);
    }
    await waitForText(page, 'progress-text', /^Done: 12 of 12 rows/);
    assert.equal(await page.locator('[data-testid="row"].current').count(), 0);
    if (colorScheme === 'light') {
      // The filters show a part of the rows, with their counts; the download keeps every row.
      const rows = page.locator('[data-testid="row"]:visible');
      assert.match(await page.getByTestId('show').textContent(), /All \(12\).*Failed \(7\).*Edited by hand \(0\).*Not finished \(0\)/s);
      await page.getByRole('radio', { name: /^Failed/ }).check();
      assert.equal(await rows.count(), 7);
      for (const text of await rows.locator('.caption').allTextContents()) assert.notEqual(text, '');
      await page.getByRole('radio', { name: /^All/ }).check();
      const caption = page.locator('[data-testid="row"] .caption[contenteditable="plaintext-only"]').first();
      await caption.click();
      await page.keyboard.press('Control+End');
      await page.keyboard.type(' (checked)');
      await page.getByRole('radio', { name: /^Edited by hand/ }).check();
      assert.equal(await rows.count(), 1);
      assert.match(await rows.locator('.caption').textContent(), /\(checked\)$/);
      assert.match(await page.getByTestId('show').textContent(), /Edited by hand \(1\)/);
      assert.equal(rowsOf((await downloadOf(page)).toString('utf8')).length, 12);
      await assertAccessible(page, 'edited rows shown');
      await page.getByRole('radio', { name: /^All/ }).check();
    }
    // Captions, error rows and the export buttons, all enabled.
    await assertAccessible(page, `${colorScheme}, done`);
    if (colorScheme === 'dark') await shoot(page, 'done-dark');
    await page.close();
  }
});

test('on a phone the page is one column with nothing wider than the screen', async () => {
  const { page } = await suite.openPage('/', suite.browser, { folded: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.getByTestId('images').setInputFiles(examplePictures);
  await waitForText(page, 'input-status', /10 image file\(s\)/);
  const { overflow, wide } = await page.evaluate(() => {
    const width = document.documentElement.clientWidth;
    const wide = [...document.querySelectorAll('body *')]
      .filter((e) => e.getBoundingClientRect().right > width)
      .map((e) => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}.${e.className}`);
    return { overflow: document.documentElement.scrollWidth - width, wide };
  });
  assert.ok(overflow <= 0, `the page is ${overflow} px wider than the screen: ${wide.join(', ')}`);
  // The cards stack: each starts below the one before.
  const boxes = await page.locator('section.card').evaluateAll((cards) => cards.map((c) => c.getBoundingClientRect().toJSON()));
  for (let i = 1; i < boxes.length; i++) assert.ok(boxes[i].top >= boxes[i - 1].bottom, `card ${i + 1} beside card ${i}`);
  await assertAccessible(page, 'phone');
  await shoot(page, 'phone');
  await page.close();
});

test('a run follows the row being captioned, but not while the user scrolls', async () => {
  const { page } = await suite.pageWithModel('cpu', 501, 8);
  // Short and narrow: the twelve rows reach far below the fold.
  await page.setViewportSize({ width: 560, height: 480 });
  await page.getByTestId('images').setInputFiles(examplePictures);
  await page.getByTestId('jsonl').setInputFiles(example);
  await waitForText(page, 'input-status', /12 row\(s\)/);
  // Which row the user sees in the middle of the screen (rows out of view may change height as
  // they are painted, and the browser's scroll anchoring moves scrollY to keep the view).
  const rowInView = () => page.evaluate(() => document.elementFromPoint(280, 300)?.closest('li')?.dataset.index ?? null);
  const lastRowInView = () => page.locator('[data-testid="row"]').last().evaluate((li) => {
    const box = li.getBoundingClientRect();
    return box.bottom > 0 && box.top < window.innerHeight;
  });

  // Left alone, the page follows the run down to its last rows.
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.getByTestId('run').click();
  await waitForText(page, 'progress-text', /^Done: 12 of 12 rows/);
  assert.ok(await lastRowInView(), 'the page did not follow the run');

  // Scrolled by the user (the wheel) just before the run: it stays where the user put it.
  // (The same rows again, under another seed so that none is restored as finished.)
  await page.getByTestId('clear').click();
  await page.getByTestId('seed').fill('502');
  await page.getByTestId('images').setInputFiles(examplePictures);
  await page.getByTestId('jsonl').setInputFiles(example);
  const status = await waitForText(page, 'input-status', /^10 image file\(s\), 12 row\(s\) from rows\.jsonl\./);
  assert.doesNotMatch(status, /restored|finished row/, status);
  await page.evaluate(() => document.querySelector('[data-testid="results"]').scrollIntoView({ block: 'start' }));
  await page.mouse.move(100, 100);
  await page.mouse.wheel(0, -40);
  await page.waitForTimeout(100);
  const before = await rowInView();
  assert.notEqual(before, null);
  await page.getByTestId('run').click();
  await waitForText(page, 'progress-text', /^Done: 12 of 12 rows/);
  assert.equal(await rowInView(), before);
  assert.ok(!(await lastRowInView()), 'the page followed the run');
  await page.close();
});

test('the whole path by keyboard alone, every stop showing where the focus is: load, pick, set, run, edit, filter, download', async () => {
  const { page, errors } = await suite.openPage('/?model=/fixtures/tiny-b/&device=cpu', suite.browser, { folded: true });
  // Listened for from the start: Playwright turns its file chooser interception on when the
  // first listener is added and does not wait for Chromium to confirm, so a listener added
  // with the key press can miss the chooser (it did, in about one run of three).
  const chooser = new Promise((resolve) => page.once('filechooser', resolve));
  const stops = [];
  /**
   * Presses Tab (Shift+Tab with `back`) until `target` has the focus, as a keyboard user
   * reaches it; every element passed on the way must show a focus ring.
   */
  async function tabTo(target, { back = false } = {}) {
    for (let i = 0; i < 80; i++) {
      await page.keyboard.press(back ? 'Shift+Tab' : 'Tab');
      const stop = await page.evaluate(() => {
        const el = document.activeElement;
        const style = getComputedStyle(el);
        const ring = style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2;
        return { what: `${el.tagName.toLowerCase()}#${el.id || el.dataset.testid || ''}`, ring };
      });
      stops.push(stop.what);
      assert.ok(stop.ring, `no visible focus on ${stop.what}`);
      if (await target.evaluate((el) => el === document.activeElement)) return;
    }
    assert.fail(`Tab never reached ${target}; it went through ${stops.join(', ')}`);
  }

  await tabTo(page.getByTestId('load-model'));
  await page.keyboard.press('Enter');
  await waitForText(page, 'model-status', /Model ready/);
  // The drop zone opens the image picker on Enter.
  await tabTo(page.getByTestId('drop'));
  await page.keyboard.press('Enter');
  const opened = await Promise.race([chooser, sleep(30_000, null, { ref: false })]);
  assert.ok(opened, 'Enter on the drop zone opened no file chooser');
  await opened.setFiles(examplePictures.slice(0, 3));
  await waitForText(page, 'input-status', /^3 image file\(s\), one row each/);
  // The folded settings open from their summary; short, greedy captions.
  await tabTo(page.locator('#advanced > summary'));
  await page.keyboard.press('Enter');
  assert.equal(await page.getByTestId('advanced').evaluate((d) => d.open), true);
  for (const [field, value] of [['max-tokens', '8'], ['temperature', '0']]) {
    await tabTo(page.getByTestId(field));
    await page.keyboard.press('ControlOrMeta+a');
    await page.keyboard.type(value);
  }
  await tabTo(page.getByTestId('run'));
  await page.keyboard.press('Enter');
  await waitForText(page, 'progress-text', /^Done: 3 of 3 rows \(3 captioned/);
  // The run's end hands the focus to Download; the first caption is the next text to edit.
  assert.equal(await page.getByTestId('download').evaluate((el) => el === document.activeElement), true);
  const caption = page.getByTestId('row').first().getByTestId('caption');
  const captioned = await caption.textContent();
  await tabTo(caption);
  await page.keyboard.press('ControlOrMeta+End');
  await page.keyboard.type(' (checked)');
  // The filter's radios move with the arrow keys: Failed shows no row, Edited by hand one.
  await tabTo(page.getByRole('radio', { name: /^All/ }), { back: true });
  await page.keyboard.press('ArrowRight');
  assert.equal(await page.getByTestId('results').getAttribute('data-show'), 'failed');
  await page.keyboard.press('ArrowRight');
  assert.equal(await page.getByTestId('results').getAttribute('data-show'), 'edited');
  assert.equal(await page.locator('[data-testid="row"]:visible').count(), 1);
  await tabTo(page.getByTestId('download'), { back: true });
  const [download] = await Promise.all([page.waitForEvent('download'), page.keyboard.press('Enter')]);
  const rows = rowsOf(readFileSync(await download.path(), 'utf8'));
  assert.equal(rows.length, 3);
  assert.equal(rows[0].caption, `${captioned} (checked)`);
  assert.equal(errors.length, 0, errors.join('\n'));
  await page.close();
});
