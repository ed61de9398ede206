// The app's server sends a Content-Security-Policy that lets the worker reach this origin, the
// Hugging Face hub and the chosen model's origin, and nothing else.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve } from '../../tools/serve.mjs';

const repo = fileURLToPath(new URL('../..', import.meta.url));

test('the worker may connect to the chosen model origin only', async () => {
  const { server, url } = await serve({ root: join(repo, 'www') });
  try {
    const policy = async (path) => {
      const response = await fetch(url + path);
      assert.equal(response.status, 200, path);
      const csp = response.headers.get('content-security-policy');
      return csp.split(';').map((d) => d.trim()).find((d) => d.startsWith('connect-src'));
    };
    const chosen = await policy('/worker.js?model=' + encodeURIComponent('https://mirror.example:8443/SmolVLM/'));
    assert.match(chosen, /^connect-src 'self' /);
    assert.ok(chosen.includes(' https://mirror.example:8443'), chosen);
    assert.ok(chosen.includes(' https://huggingface.co'), chosen);
    const plain = await policy('/worker.js');
    assert.ok(!plain.includes('mirror.example'), plain);
    // A model on this origin adds nothing; a non-web URL is ignored.
    assert.equal(await policy('/worker.js?model=/fixtures/tiny-b/'), plain);
    assert.equal(await policy('/worker.js?model=' + encodeURIComponent('javascript:alert(1)')), plain);
    const page = await policy('/?model=' + encodeURIComponent('http://127.0.0.2:9000/m/'));
    assert.ok(page.includes(' http://127.0.0.2:9000'), page);
    // Paths outside the served folder are refused.
    for (const path of ['/../Cargo.toml', '/%2e%2e/Cargo.toml', '/..%2fCargo.toml']) {
      assert.notEqual((await fetch(url + path)).status, 200, path);
    }
  } finally {
    server.close();
  }
});
