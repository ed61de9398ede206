#!/usr/bin/env node
// Where a caption's time goes on the browser's WebGPU: the embedding API (www/captioner.js) in
// headless Chromium (WebGPU on SwiftShader here) loads the tiny test model at a precision and
// captions two pictures twice, greedy, printing the load, each caption's first token (its
// prefill, and for the first caption the shaders compiled) and the rest of its tokens.
//
//   node tools/time_captions.mjs [--precision q8_0|q4_0|f32] [--tokens N] [--model PATH]
//
// Needs www/pkg/ built (scripts/build-web.sh webgpu) and Chromium (scripts/setup-browser.sh).
// BENCHMARKS.md, "Lanes fitted to short rows", has what it printed.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { launchChromium } from './chromium.mjs';
import { serve } from './serve.mjs';

const repo = fileURLToPath(new URL('..', import.meta.url));
const { values: options } = parseArgs({
  options: {
    precision: { type: 'string', default: 'q8_0' },
    tokens: { type: 'string', default: '8' },
    model: { type: 'string', default: join(repo, 'tests/fixtures/tiny-b') },
  },
});
const pictures = ['small_100x80.png', 'photo_640x480.jpg'].map((p) => join(repo, 'tests/fixtures/images', p));

const profile = mkdtempSync(join(tmpdir(), 'captioner-time-'));
const { server, url } = await serve({ root: join(repo, 'www'), mounts: { '/model/': options.model }, isolated: true });
const browser = await launchChromium(profile, { webgpu: true });
try {
  const page = await browser.newPage();
  page.on('console', (m) => console.log(m.text()));
  await page.goto(`${url}/examples/embed.html`);
  await page.getByTestId('files').setInputFiles(pictures);
  await page.evaluate(async ({ precision, maxTokens }) => {
    const { Captioner } = await import('/captioner.js');
    const files = [...document.querySelector('[data-testid=files]').files];
    let last = performance.now();
    const lap = () => {
      const now = performance.now();
      const seconds = ((now - last) / 1000).toFixed(2);
      last = now;
      return seconds;
    };
    const captioner = await Captioner.load({ modelUrl: new URL('/model/', location.href).href, precision, device: 'webgpu' });
    console.log(`${precision} on ${captioner.device}: load ${lap()} s`);
    for (const file of [...files, ...files]) {
      let first = null;
      let tokens = 0;
      await captioner.caption(file, {
        temperature: 0,
        maxTokens,
        onToken: () => {
          tokens += 1;
          if (first === null) first = lap();
        },
      });
      const rest = lap();
      console.log(`  ${file.name}: first token ${first} s, ${tokens - 1} more in ${rest} s`);
    }
    captioner.dispose();
  }, { precision: options.precision, maxTokens: Number(options.tokens) });
} finally {
  await browser.close();
  server.close();
  rmSync(profile, { recursive: true, force: true });
}
