// tools/probe_webgpu.mjs in a tiny configuration, so it cannot rot: it finds the browser's WebGPU
// adapter, its two products agree with a JS product (the tool checks that before timing), and
// every timing is there. The figures themselves go in BENCHMARKS.md.
//
// Needs: Chromium at /usr/bin/chromium with WebGPU (SwiftShader where there is no GPU).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const tool = fileURLToPath(new URL('../../tools/probe_webgpu.mjs', import.meta.url));

test('probe_webgpu.mjs times dispatches, a read-back and two checked products', () => {
  const stdout = execFileSync('node', [tool, '--rows', '100', '--cols', '70', '--reps', '3'], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 5 * 60 * 1000,
  });
  const r = JSON.parse(stdout);
  assert.equal(r.error, undefined, r.error);
  assert.ok(r.adapter.vendor, JSON.stringify(r.adapter));
  assert.deepEqual(r.shape, { rows: 100, cols: 70, weight_bytes: 100 * 70 * 4 });
  const ms = (x, what) => assert.ok(Number.isFinite(x) && x >= 0, `${what} = ${x}`);
  for (const name of ['dispatch', 'matvec serial', 'matvec 32-lane']) {
    ms(r.ms[name].one_per_submit, `${name}, one per submit`);
    ms(r.ms[name]['3_per_submit'], `${name}, 3 per submit`);
  }
  for (const name of ['matvec serial', 'matvec 32-lane']) {
    const { weight_gb_per_s: rate, one_per_submit: t } = r.ms[name];
    assert.ok(t > 0 ? rate > 0 : rate === null, `${name}: ${rate} GB/s in ${t} ms`);
  }
  ms(r.ms.readback, 'read-back');
});
