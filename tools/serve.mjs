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

/** Starts serving; resolves to `{server, url}`. `mounts` maps URL prefixes to folders. */
export function serve({ root, mounts = {}, port = 0, host = '127.0.0.1' }) {
  const table = [...Object.entries(mounts), ['/', root]]
    .map(([prefix, dir]) => [prefix, resolve(dir)])
    .sort((a, b) => b[0].length - a[0].length);
  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const [prefix, dir] = table.find(([p]) => path.startsWith(p));
    let file = join(dir, normalize(path.slice(prefix.length)));
    if (!file.startsWith(dir + sep) && file !== dir) return send(res, 403, 'forbidden');
    try {
      let info = await stat(file);
      if (info.isDirectory()) {
        file = join(file, 'index.html');
        info = await stat(file);
      }
      res.writeHead(200, {
        'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
        'content-length': info.size,
        'cache-control': 'no-cache',
        'x-content-type-options': 'nosniff',
      });
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
  const { url } = await serve({ root: join(here, 'www'), mounts, port });
  console.log(`Captioner is served at ${url}/ (Ctrl-C to stop)`);
}
