// What the page's browser tests share: a served app in headless Chromium, pages that record
// their requests, waiting on a status line, and the native program's output to compare with.
//
// Needs: `www/pkg/` built (scripts/test.sh does it), the native `captioner` binary
// (CAPTIONER_BIN), Chromium at /usr/bin/chromium (CHROMIUM overrides).

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { crc32, deflateSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchChromium } from '../../tools/chromium.mjs';
import { serve } from '../../tools/serve.mjs';

export const repo = fileURLToPath(new URL('../..', import.meta.url));
export const fixtures = join(repo, 'tests/fixtures');
export const images = join(fixtures, 'images');
/** The example rows, every kind of good and bad row, and the pictures they name (photos/missing.jpg
 * is missing on purpose). */
export const example = join(repo, 'examples/rows.jsonl');
export const examplePictures = ['photo_640x480.jpg', 'small_100x80.png', 'photo_300x500.jpg',
  'rgba_160x120.png', 'truncated.jpg', 'not_an_image.jpg', 'photo_90x60.bmp', 'gray_200x150.png',
  'palette_120x90.gif', 'huge_header.png'].map((p) => join(images, p));

/**
 * Serves www/ (cross-origin isolated, as tools/serve.mjs serves the app, with the fixtures at
 * /fixtures/ and a scratch folder at /scratch/) and opens Chromium with WebGPU on SwiftShader,
 * for the tests of the calling file. The returned object's fields are set once `before` ran.
 */
export function pageSuite() {
  const suite = { origin: null, browser: null, scratch: null, server: null };
  before(async () => {
    suite.scratch = mkdtempSync(join(tmpdir(), 'captioner-browser-'));
    ({ server: suite.server, url: suite.origin } = await serve({
      root: join(repo, 'www'),
      mounts: { '/fixtures/': fixtures, '/scratch/': suite.scratch },
      isolated: true,
    }));
    suite.browser = await suite.launch('profile', { webgpu: true });
  });
  after(async () => {
    await suite.browser?.close();
    suite.server?.close();
    if (suite.scratch) rmSync(suite.scratch, { recursive: true, force: true });
  });
  /** Headless Chromium with a fresh profile; WebGPU (SwiftShader) only when asked. */
  suite.launch = (profile, { webgpu }) => launchChromium(join(suite.scratch, profile), { webgpu });
  /**
   * A page at `path` that records every request it makes (`downloads`: the GETs among them,
   * not the HEADs that size a download before it starts) and every uncaught error. The page's
   * folded blocks (settings, model options) are opened, as a user opens them to reach their
   * fields, unless `folded`.
   */
  suite.openPage = async (path, context = suite.browser, { folded = false } = {}) => {
    const page = await context.newPage();
    const requests = [];
    const downloads = [];
    page.on('request', (r) => {
      requests.push(r.url());
      if (r.method() === 'GET') downloads.push(r.url());
    });
    page.on('worker', (w) => w.on('console', () => {}));
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(suite.origin + path);
    if (!folded) await page.evaluate(() => document.querySelectorAll('details').forEach((d) => (d.open = true)));
    return { page, requests, downloads, errors };
  };
  /**
   * The page with the tiny model loaded on `device`, greedy with `maxTokens` new tokens, `seed`
   * keeping the runs that pages save in the browser apart.
   */
  suite.pageWithModel = async (device, seed, maxTokens) => {
    const opened = await suite.openPage(`/?model=/fixtures/tiny-b/&device=${device}`);
    const status = await waitForText(opened.page, 'model-status', /Model ready|could not/);
    if (!/Model ready/.test(status)) throw new Error(`the model did not load: ${status}`);
    await opened.page.getByTestId('max-tokens').fill(String(maxTokens));
    await opened.page.getByTestId('temperature').fill('0');
    await opened.page.getByTestId('seed').fill(String(seed));
    return opened;
  };
  /** Every request went to the page's origin (blob: URLs are the page's own thumbnails). */
  suite.isLocal = (url) => url.startsWith(suite.origin + '/') || url.startsWith(`blob:${suite.origin}/`);
  /** Some requests were made, every one of them to the page's origin. */
  suite.assertLocal = (requests) => {
    assert.ok(requests.length > 0);
    for (const url of requests) assert.ok(suite.isLocal(url), `request to ${url}`);
  };
  let nativeRuns = 0;
  /** What the native program writes for the example rows (see `nativeCaptions`), as text. */
  suite.nativeOutput = ({ maxTokens, extra = [], model = join(fixtures, 'tiny-b') }) => {
    const out = join(suite.scratch, `native-${++nativeRuns}.jsonl`);
    return nativeCaptions({ input: example, out, maxTokens, model, extra }).toString('utf8');
  };
  return suite;
}

/** Waits until the element `testid`'s text matches `pattern`; resolves to that text. */
export async function waitForText(page, testid, pattern, timeout = 300_000) {
  await page.waitForFunction(
    ([id, source]) => new RegExp(source).test(document.querySelector(`[data-testid="${id}"]`)?.textContent ?? ''),
    [testid, pattern.source],
    { timeout, polling: 200 },
  );
  return page.getByTestId(testid).textContent();
}

/** Drops files (name, type and bytes) on the drop zone, as a user dragging them from a file manager. */
export async function dropFiles(page, files) {
  const transfer = await page.evaluateHandle((list) => {
    const t = new DataTransfer();
    for (const { name, type, bytes } of list) t.items.add(new File([new Uint8Array(bytes)], name, { type }));
    return t;
  }, files);
  await page.getByTestId('drop').dispatchEvent('drop', { dataTransfer: transfer });
}

/** Runs the native program. */
export const captioner = (args, options = {}) =>
  execFileSync(process.env.CAPTIONER_BIN ?? join(repo, 'target/debug/captioner'), args, options);

/**
 * What `captioner caption-jsonl` writes for `input` (its bytes), greedy, with `maxTokens` new
 * tokens, images under tests/fixtures/images, into `out`.
 */
export function nativeCaptions({ input, out, maxTokens, model = join(fixtures, 'tiny-b'), extra = [] }) {
  captioner([
    'caption-jsonl', '--model', model, '--input', input, '--output', out,
    '--image-root', images, '--temperature', '0', '--max-tokens', String(maxTokens), ...extra,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  return readFileSync(out);
}

/**
 * Native output as the page writes it: the one difference is where a missing image was looked
 * for (the disk under --image-root, or the files the user picked).
 */
export const asInBrowser = (native) =>
  native.toString('utf8').replace(/ not found \(looked for [^)"]*\)/g, ' not found among the picked files');

/** The rows of JSONL text (blank lines left out). */
export const rowsOf = (text) => text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));

/** Clicks `testid` and resolves to the bytes of the download it starts. */
export async function downloadOf(page, testid = 'download') {
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByTestId(testid).click()]);
  return readFileSync(await download.path());
}

/** A PNG (8-bit RGBA, unfiltered) of `rgba` pixels: the browser's decode, as a file the engine reads. */
export function pngOf(width, height, rgba) {
  const chunk = (type, data) => {
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const out = Buffer.alloc(body.length + 8);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(crc32(body), body.length + 4);
    return out;
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bits per sample
  header[9] = 6; // RGBA
  const stride = width * 4;
  const raw = Buffer.alloc((stride + 1) * height);
  for (let y = 0; y < height; y++) Buffer.from(rgba.subarray(y * stride, (y + 1) * stride)).copy(raw, y * (stride + 1) + 1);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0)),
  ]);
}

/**
 * The pixels Pillow decodes tests/fixtures/formats/`name` to (goldens.safetensors, U8):
 * `{width, height, rgb}`.
 */
export function pillowRgb(name) {
  const file = readFileSync(join(fixtures, 'formats', 'goldens.safetensors'));
  const size = Number(file.readBigUInt64LE(0));
  const { shape: [height, width], data_offsets: [from, to] } = JSON.parse(file.subarray(8, 8 + size).toString('utf8'))[name];
  return { width, height, rgb: file.subarray(8 + size + from, 8 + size + to) };
}
