// The npm package (www/package.json) as an annotation tool uses it: packed with `npm pack`,
// installed from the tarball into a scratch app, built with Vite or webpack, served, and run in
// headless Chromium; its captions must be what `captioner caption-jsonl` writes natively.
//
// Needs: `www/pkg/` and `www/pkg-threads/` built (scripts/test.sh does it), Vite and webpack (npm ci),
// the native `captioner` binary (CAPTIONER_BIN), Chromium at /usr/bin/chromium.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { serve } from '../../tools/serve.mjs';
import { fixtures, images, pageSuite, repo, rowsOf, waitForText } from './page.mjs';

const suite = pageSuite();

/** Packs www/ and installs the tarball into a new app (in the scratch folder `name`) holding
 * the embedding example, importing the package by name; resolves to the app's folder. */
function scratchApp(name) {
  const packed = join(suite.scratch, name, 'packed');
  mkdirSync(packed, { recursive: true });
  const npm = (args, cwd) => execFileSync('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], { cwd });
  npm(['pack', '--pack-destination', packed], join(repo, 'www'));
  const [tarball] = readdirSync(packed);
  // One version for the crate and the package.
  const version = /^version = "([^"]+)"/m.exec(readFileSync(join(repo, 'Cargo.toml'), 'utf8'))[1];
  assert.equal(tarball, `captioner-web-${version}.tgz`);

  const app = join(suite.scratch, name, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'annotator', private: true, type: 'module' }));
  const example = readFileSync(join(repo, 'www/examples/embed.js'), 'utf8');
  const embed = example.replace("from '../captioner.js'", "from 'captioner-web'");
  assert.notEqual(embed, example, 'the example imports the API as the test expects');
  writeFileSync(join(app, 'embed.js'), embed);
  writeFileSync(join(app, 'index.html'), readFileSync(join(repo, 'www/examples/embed.html'), 'utf8'));
  // From the tarball alone: the package has no dependencies to fetch.
  npm(['install', '--offline', join(packed, tarball)], app);
  return app;
}

test('the npm package, installed from its tarball into a Vite app, captions like the native program', async () => {
  const native = rowsOf(suite.nativeOutput({ maxTokens: 8 }));
  const app = scratchApp('vite');
  const { build } = await import('vite');
  await build({ root: app, base: './', logLevel: 'warn' });
  const dist = join(app, 'dist');
  const built = readdirSync(join(dist, 'assets'));
  // Vite found the worker and bundled it with the engine's glue, and copied both wasm builds
  // and the threaded build's glue (www/engine.js says why that one stays as it ships).
  assert.ok(built.some((f) => /^worker-.*\.js$/.test(f)), built.join(' '));
  assert.equal(built.filter((f) => f.endsWith('.wasm')).length, 2, built.join(' '));
  await captionsLikeNative(dist, native);
});

test('the npm package, installed from its tarball into a webpack app, builds without a warning and captions like the native program', async () => {
  const native = rowsOf(suite.nativeOutput({ maxTokens: 8 }));
  const app = scratchApp('webpack');
  const { default: webpack } = await import('webpack');
  const dist = join(app, 'dist');
  // webpack's defaults, as `webpack --mode production` with the example as the entry.
  const stats = await new Promise((resolve, reject) =>
    webpack(
      {
        mode: 'production',
        context: app,
        entry: './embed.js',
        output: { path: dist, filename: 'embed.js', clean: true },
        performance: { hints: false }, // (its advice on assets over 244 KB: the engine is one)
      },
      (err, result) => (err ? reject(err) : resolve(result)),
    ),
  );
  const { errors, warnings, assets } = stats.toJson({ all: false, errors: true, warnings: true, assets: true });
  assert.deepEqual([...errors, ...warnings].map((e) => e.message), []);
  // Both wasm builds and the threaded glue emitted as files, the worker as a chunk of its own.
  const names = assets.map((a) => a.name);
  assert.equal(names.filter((f) => f.endsWith('.wasm')).length, 2, names.join(' '));
  writeFileSync(join(dist, 'index.html'), readFileSync(join(app, 'index.html'), 'utf8'));
  await captionsLikeNative(dist, native);
});

/**
 * Serves a built app as tools/serve.mjs serves the page (with its Content-Security-Policy):
 * not cross-origin isolated, as most annotation tools are, then isolated, where the CPU runs
 * on the threaded build and every core. The example's captions must be the native ones.
 */
async function captionsLikeNative(dist, native) {
  for (const isolated of [false, true]) {
    const { server, url } = await serve({ root: dist, mounts: { '/fixtures/': fixtures }, isolated });
    try {
      const page = await suite.browser.newPage();
      const requests = [];
      page.on('request', (r) => requests.push(r.url()));
      const errors = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(`${url}/index.html?model=/fixtures/tiny-b/&device=cpu`);
      assert.equal(await page.evaluate(() => self.crossOriginIsolated), isolated);
      await page.getByTestId('files').setInputFiles([join(images, 'small_100x80.png'), join(images, 'photo_640x480.jpg')]);
      await page.getByTestId('go').click();
      const out = await waitForText(page, 'output', /^(done|failed)/, 120_000);
      assert.match(out, /^done/, out);
      const result = JSON.parse(await page.getByTestId('result').textContent());
      // Row 2 of the example rows is small_100x80.png alone, row 1 photo_640x480.jpg.
      assert.equal(result.caption, native[1].caption);
      assert.deepEqual(result.rows.map((r) => r.caption), [native[1].caption, native[0].caption]);
      const cores = await page.evaluate(() => navigator.hardwareConcurrency);
      if (isolated) assert.deepEqual([result.threads, result.threadNote], [cores, '']);
      else assert.deepEqual([result.threads, result.threadNote], [1, 'the page is not cross-origin isolated, so the CPU runs on one thread']);
      assert.equal(errors.length, 0, errors.join('\n'));
      for (const r of requests) assert.ok(r.startsWith(url + '/') || r.startsWith('blob:'), `request to ${r}`);
      // The worker came from the bundle, not from a copy of the package's unbundled worker.js.
      assert.ok(!requests.some((r) => r.endsWith('/worker.js')), requests.join('\n'));
      await page.close();
    } finally {
      server.close();
    }
  }
}
