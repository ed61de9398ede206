#!/usr/bin/env node
// Whether the page stays responsive with thousands of rows: a rows file of N rows (default
// 2,000) over the example pictures, captioned by the tiny test model on the CPU with a few
// tokens each (so the page's own work per row dominates, not the model's), in headless
// Chromium, while a user types into a finished caption every 250 ms.
//
//   node tools/bench_page.mjs [NAME=WWW ...] [--rows N] [--tokens T]
//
// A WWW is a www/ folder with its pkg/ and pkg-threads/ built (scripts/build-web.sh), an older
// checkout's for a before/after (default: this checkout's). Printed per build: the time until
// the grid shows the rows, the run's time, the page's input delay (from a key press to its
// handler: the main thread's queue) and its longest task while the run goes, the JS heap and the
// DOM's node count at the end; and on stderr what the three longest frames spent their time on
// (the Long Animation Frames API: scripts, forced layout, rendering).

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchChromium } from './chromium.mjs';
import { serve } from './serve.mjs';

const repo = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  if (i < 0) return fallback;
  const [, value] = args.splice(i, 2);
  return Number(value);
};
const rows = option('--rows', 2000);
const tokens = option('--tokens', 4);
const builds = args.map((a) => a.split('='));
if (!builds.length) builds.push(['this checkout', join(repo, 'www')]);

const images = join(repo, 'tests/fixtures/images');
const pictures = ['photo_640x480.jpg', 'small_100x80.png', 'photo_300x500.jpg', 'rgba_160x120.png', 'gray_200x150.png'];

const scratch = mkdtempSync(join(tmpdir(), 'bench-page-'));
try {
  const input = join(scratch, 'rows.jsonl');
  const lines = Array.from({ length: rows }, (_, i) => JSON.stringify({ id: i, image: [pictures[i % pictures.length]], note: `row ${i}` }));
  writeFileSync(input, lines.join('\n') + '\n');
  console.log(`${rows} rows over ${pictures.length} pictures, ${tokens} new tokens each, tiny-b on the CPU`);
  console.log('| build | grid shown | run | rows/s | input delay p50 / p95 / max | longest task | JS heap | DOM nodes |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const [name, www] of builds) {
    const { server, url } = await serve({ root: www, mounts: { '/fixtures/': join(repo, 'tests/fixtures') }, isolated: true });
    const browser = await launchChromium(join(scratch, `profile-${name.replace(/\W/g, '_')}`), { webgpu: false });
    try {
      const page = await browser.newPage();
      await page.setViewportSize({ width: 1280, height: 900 });
      await page.goto(`${url}/?model=/fixtures/tiny-b/&device=cpu`);
      await page.waitForFunction(() => /Model ready|could not/.test(document.querySelector('[data-testid="model-status"]').textContent), null, { timeout: 120_000 });
      await page.evaluate(() => document.querySelectorAll('details').forEach((d) => (d.open = true)));
      await page.getByTestId('max-tokens').fill(String(tokens));
      await page.getByTestId('temperature').fill('0');
      await page.getByTestId('images').setInputFiles(pictures.map((p) => join(images, p)));
      const shown = Date.now();
      await page.getByTestId('jsonl').setInputFiles(input);
      await page.waitForFunction((n) => document.querySelector('[data-testid="input-status"]').textContent.includes(`, ${n} row(s) from`), rows, { timeout: 600_000 });
      const gridMs = Date.now() - shown;

      // Input delay: each key press's wait from the event's time stamp to its handler.
      await page.evaluate(() => {
        window.benchDelays = [];
        window.benchLongest = 0;
        document.addEventListener('keydown', (e) => window.benchDelays.push(performance.now() - e.timeStamp), true);
        new PerformanceObserver((list) => {
          for (const e of list.getEntries()) window.benchLongest = Math.max(window.benchLongest, e.duration);
        }).observe({ type: 'longtask' });
        // What the longest frames spent their time on (Long Animation Frames: the scripts that
        // ran in them, and the style and layout they forced), kept for the three longest.
        window.benchFrames = [];
        new PerformanceObserver((list) => {
          for (const e of list.getEntries()) {
            window.benchFrames.push({
              duration: e.duration,
              blocking: e.blockingDuration,
              renderMs: e.renderStart ? e.startTime + e.duration - e.renderStart : 0,
              styleAndLayoutMs: e.styleAndLayoutStart ? e.startTime + e.duration - e.styleAndLayoutStart : 0,
              scripts: e.scripts.map((s) => ({
                ms: s.duration,
                forcedLayoutMs: s.forcedStyleAndLayoutDuration,
                invoker: s.invoker,
                fn: `${s.sourceFunctionName || '?'} (${s.sourceURL.split('/').pop()}:${s.sourceCharPosition})`,
              })),
            });
            window.benchFrames.sort((a, b) => b.duration - a.duration);
            window.benchFrames.length = Math.min(window.benchFrames.length, 3);
          }
        }).observe({ type: 'long-animation-frame' });
      });
      const started = Date.now();
      await page.getByTestId('run').click();
      // A finished caption to type into, as a user correcting captions while the run goes.
      const caption = page.locator('[data-testid="row"] .caption[contenteditable="plaintext-only"]').first();
      await caption.waitFor({ timeout: 120_000 });
      // (Focused, not clicked: a page that scrolls to each new row never holds it still.)
      await caption.focus();
      const done = () => page.evaluate(() => /^(Done|Paused|The run stopped)/.test(document.querySelector('[data-testid="progress-text"]').textContent));
      while (!(await done())) {
        await page.keyboard.press('x');
        await new Promise((r) => setTimeout(r, 250));
      }
      const runMs = Date.now() - started;
      const status = await page.getByTestId('progress-text').textContent();
      if (!status.startsWith(`Done: ${rows} of ${rows}`)) throw new Error(`${name}: ${status}`);
      const { delays, longest, frames } = await page.evaluate(() => ({
        delays: window.benchDelays,
        longest: window.benchLongest,
        frames: window.benchFrames,
      }));
      const cdp = await page.context().newCDPSession(page);
      await cdp.send('Performance.enable');
      const { metrics } = await cdp.send('Performance.getMetrics');
      const metric = (n) => metrics.find((m) => m.name === n)?.value;
      delays.sort((a, b) => a - b);
      const at = (q) => delays[Math.min(delays.length - 1, Math.floor(q * delays.length))];
      const ms = (v) => `${v.toFixed(0)} ms`;
      console.log(
        `| ${name} | ${ms(gridMs)} | ${(runMs / 1000).toFixed(1)} s | ${(rows / (runMs / 1000)).toFixed(1)} | ` +
          `${ms(at(0.5))} / ${ms(at(0.95))} / ${ms(delays.at(-1))} (${delays.length} keys) | ${ms(longest)} | ` +
          `${(metric('JSHeapUsedSize') / 1e6).toFixed(0)} MB | ${metric('Nodes')} |`,
      );
      for (const f of frames) {
        const scripts = f.scripts
          .filter((x) => x.ms >= 5)
          .map((x) => `${x.fn} ${x.ms.toFixed(0)} ms${x.forcedLayoutMs >= 1 ? ` (forced layout ${x.forcedLayoutMs.toFixed(0)} ms)` : ''} [${x.invoker}]`);
        console.error(
          `  ${name}: a ${f.duration.toFixed(0)} ms frame: rendering ${f.renderMs.toFixed(0)} ms ` +
            `(style and layout ${f.styleAndLayoutMs.toFixed(0)} ms); scripts: ${scripts.join('; ') || 'none over 5 ms'}`,
        );
      }
    } finally {
      await browser.close();
      server.close();
    }
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
