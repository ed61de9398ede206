// A small static server for the app: `www/` at `/`, and other folders under prefixes (the tests
// serve `tests/fixtures/` as `/fixtures/`). Loopback only; no directory listings.
//
//   node tools/serve.mjs [--port 8080] [--mount /fixtures/=tests/fixtures]

import { createServer } from 'node:http';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.jsonl': 'application/jsonl',
  '.jinja': 'text/plain; charset=utf-8',
  '.wasm': 'application/wasm',
  '.ts': 'text/plain; charset=utf-8',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.webp': 'image/webp',
  '.gif': 'image/gif',
  '.bmp': 'image/bmp',
  '.safetensors': 'application/octet-stream',
  '.gguf': 'application/octet-stream',
};

/**
 * The Content-Security-Policy of a page or worker: scripts and everything else from this origin
 * only; network reads (connect-src) from this origin, the Hugging Face hub (the default model)
 * and the origin of the model URL in the request's `?model=`. The worker is started as
 * `worker.js?model=<url>`, so the one context that downloads can reach the chosen model and
 * nothing else.
 */
export function contentSecurityPolicy(modelUrl) {
  const connect = ["'self'", 'https://huggingface.co', 'https://*.huggingface.co', 'https://*.hf.co'];
  try {
    const url = new URL(modelUrl);
    if (url.protocol === 'https:' || url.protocol === 'http:') connect.push(url.origin);
  } catch {
    // A relative model URL is this origin.
  }
  return [
    "default-src 'self'",
    "script-src 'self' 'wasm-unsafe-eval'",
    // blob: for the threaded engine's helper workers, which wasm-bindgen-rayon starts from a
    // copy of its own (same-origin) script.
    "worker-src 'self' blob:",
    "img-src 'self' blob: data:",
    "style-src 'self'",
    `connect-src ${connect.join(' ')}`,
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
  ].join('; ');
}

/**
 * Starts serving; resolves to `{server, url}`. `mounts` maps URL prefixes to folders. `isolated`
 * adds the cross-origin isolation headers (COOP/COEP) that shared-memory threads in the page
 * need: the app's threaded CPU engine (www/engine.js) and wllama's multi-threaded build. `policy: false`
 * leaves out the Content-Security-Policy (the same script serves wllama's page, which starts
 * its worker from a blob: URL).
 */
export function serve({ root, mounts = {}, port = 0, host = '127.0.0.1', isolated = false, policy = true }) {
  const table = [...Object.entries(mounts), ['/', root]]
    .map(([prefix, dir]) => [prefix, resolve(dir)])
    .sort((a, b) => b[0].length - a[0].length);
  const server = createServer(async (req, res) => {
    const requested = new URL(req.url, 'http://x');
    const path = decodeURIComponent(requested.pathname);
    const [prefix, dir] = table.find(([p]) => path.startsWith(p));
    let file = join(dir, normalize(path.slice(prefix.length)));
    if (!file.startsWith(dir + sep) && file !== dir) return send(res, 403, 'forbidden');
    try {
      let info = await stat(file);
      if (info.isDirectory()) {
        file = join(file, 'index.html');
        info = await stat(file);
      }
      const headers = {
        'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
        'content-length': info.size,
        'cache-control': 'no-cache',
        'accept-ranges': 'bytes',
        'x-content-type-options': 'nosniff',
        'referrer-policy': 'no-referrer',
      };
      if (isolated) {
        headers['cross-origin-opener-policy'] = 'same-origin';
        headers['cross-origin-embedder-policy'] = 'require-corp';
        headers['cross-origin-resource-policy'] = 'same-origin';
      }
      if (policy && /\.(html|js)$/.test(file)) {
        headers['content-security-policy'] = contentSecurityPolicy(requested.searchParams.get('model'));
      }
      // One byte range, as the hub answers one (the page reads safetensors headers so), else
      // the whole file.
      const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
      if (range && req.method === 'GET') {
        const start = Number(range[1]);
        const end = Math.min(range[2] ? Number(range[2]) : info.size - 1, info.size - 1);
        if (start > end) {
          res.writeHead(416, { 'content-range': `bytes */${info.size}` });
          return res.end();
        }
        headers['content-range'] = `bytes ${start}-${end}/${info.size}`;
        headers['content-length'] = end - start + 1;
        res.writeHead(206, headers);
        return createReadStream(file, { start, end }).pipe(res);
      }
      res.writeHead(200, headers);
      if (req.method === 'HEAD') return res.end();
      createReadStream(file).pipe(res);
    } catch {
      send(res, 404, 'not found');
    }
  });
  return new Promise((ok) =>
    server.listen(port, host, () => ok({ server, url: `http://${host}:${server.address().port}` })),
  );
}

function send(res, status, text) {
  res.writeHead(status, { 'content-type': 'text/plain' });
  res.end(text);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const mounts = {};
  let port = Number(process.env.PORT ?? 8080);
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--port') port = Number(args[++i]);
    else if (args[i] === '--mount') {
      const [prefix, dir] = args[++i].split('=');
      mounts[prefix] = dir;
    }
  }
  const here = fileURLToPath(new URL('..', import.meta.url));
  // Cross-origin isolated, so the CPU engine gets its threads (www/engine.js).
  const { url } = await serve({ root: join(here, 'www'), mounts, port, isolated: true });
  console.log(`Captioner is served at ${url}/ (Ctrl-C to stop)`);
}
