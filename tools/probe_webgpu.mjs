#!/usr/bin/env node
// What one WebGPU dispatch, one read-back and one matrix-vector product cost in this browser, on
// this adapter: the three candidates for where a decode step's time goes. Plain WGSL, no
// Captioner code, so the figures describe the browser and the adapter alone.
//
//   node tools/probe_webgpu.mjs [--rows 1536] [--cols 576] [--reps 20]
//
// - `dispatch`: a kernel that does nothing, timed per dispatch, one dispatch per submit and
//   `reps` dispatches per submit (Chromium's GPU-process round trip vs the adapter's own cost).
// - `readback`: copy `rows` floats to a mappable buffer and map it (what each sampled token
//   costs at least).
// - `matvec serial` / `matvec 32-lane`: y = W x for an f32 `rows` x `cols` W (SmolLM2's
//   MLP shape by default), one invocation per output element, or 32 invocations per element
//   meeting in workgroup memory behind barriers (the shape a GPU wants, and that of Captioner's
//   packed kernel). Both are checked against a JS product first.
//
// Prints JSON: the adapter, then milliseconds per operation (median of `reps`) and the implied
// weight bandwidth of each product.

import { createServer } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { launchChromium } from './chromium.mjs';

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '1536' },
    cols: { type: 'string', default: '576' },
    reps: { type: 'string', default: '20' },
  },
});

// A secure context for navigator.gpu: an empty page on localhost.
const server = createServer((_, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html>'));
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const profile = mkdtempSync(join(tmpdir(), 'probe-webgpu-'));
const browser = await launchChromium(profile);
try {
  const page = await browser.newPage();
  page.on('console', (m) => console.error(`[page] ${m.text()}`));
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
  const result = await page.evaluate(probe, { rows: Number(args.rows), cols: Number(args.cols), reps: Number(args.reps) });
  console.log(JSON.stringify({ userAgent: await page.evaluate(() => navigator.userAgent), ...result }, null, 2));
} finally {
  await browser.close();
  server.close();
  rmSync(profile, { recursive: true, force: true });
}

// Runs in the page.
async function probe({ rows, cols, reps }) {
  const adapter = await navigator.gpu?.requestAdapter();
  if (!adapter) return { error: 'no WebGPU adapter' };
  const device = await adapter.requestDevice();
  const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

  const w = Float32Array.from({ length: rows * cols }, () => Math.random() - 0.5);
  const x = Float32Array.from({ length: cols }, () => Math.random() - 0.5);
  const upload = (data) => {
    const buffer = device.createBuffer({ size: data.byteLength, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
    device.queue.writeBuffer(buffer, 0, data);
    return buffer;
  };
  const wBuf = upload(w);
  const xBuf = upload(x);
  const yBuf = device.createBuffer({ size: rows * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const readBuf = device.createBuffer({ size: rows * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });

  async function readY() {
    const encoder = device.createCommandEncoder();
    encoder.copyBufferToBuffer(yBuf, 0, readBuf, 0, rows * 4);
    device.queue.submit([encoder.finish()]);
    await readBuf.mapAsync(GPUMapMode.READ);
    const y = new Float32Array(readBuf.getMappedRange().slice(0));
    readBuf.unmap();
    return y;
  }

  const header = `
@group(0) @binding(0) var<storage, read> w: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
const ROWS: u32 = ${rows}u;
const COLS: u32 = ${cols}u;`;
  const kernels = {
    // Touches every binding so the layout is the same as the products'.
    dispatch: {
      groups: 1,
      code: `${header}
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x == 0xffffffffu) { y[0] = w[0] + x[0]; }
}`,
    },
    'matvec serial': {
      groups: Math.ceil(rows / 64),
      code: `${header}
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let row = g.x;
  if (row >= ROWS) { return; }
  var acc = 0.0;
  for (var k = 0u; k < COLS; k++) { acc += w[row * COLS + k] * x[k]; }
  y[row] = acc;
}`,
    },
    'matvec 32-lane': {
      groups: Math.ceil(rows / 2),
      code: `${header}
var<workgroup> partial: array<f32, 64>;
@compute @workgroup_size(32, 2) fn main(@builtin(local_invocation_id) l: vec3<u32>,
                                         @builtin(workgroup_id) wg: vec3<u32>) {
  let row = wg.x * 2u + l.y;
  let slot = l.y * 32u + l.x;
  var acc = 0.0;
  if (row < ROWS) {
    for (var k = l.x; k < COLS; k += 32u) { acc += w[row * COLS + k] * x[k]; }
  }
  partial[slot] = acc;
  workgroupBarrier();
  for (var half = 16u; half > 0u; half /= 2u) {
    if (l.x < half) { partial[slot] += partial[slot + half]; }
    workgroupBarrier();
  }
  if (l.x == 0u && row < ROWS) { y[row] = partial[slot]; }
}`,
    },
  };

  const expected = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let acc = 0;
    for (let k = 0; k < cols; k++) acc += w[r * cols + k] * x[k];
    expected[r] = acc;
  }

  const info = adapter.info ?? {};
  const out = {
    adapter: { vendor: info.vendor, architecture: info.architecture, description: info.description, fallback: info.isFallbackAdapter ?? adapter.isFallbackAdapter },
    shape: { rows, cols, weight_bytes: rows * cols * 4 },
    ms: {},
  };
  for (const [name, { code, groups }] of Object.entries(kernels)) {
    const module = device.createShaderModule({ code });
    const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
    const bindGroup = device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [wBuf, xBuf, yBuf].map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
    const encode = (encoder) => {
      const pass = encoder.beginComputePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(groups);
      pass.end();
    };
    // One submit of `perSubmit` dispatches, timed to the queue being idle again.
    const time = async (perSubmit) => {
      const t0 = performance.now();
      const encoder = device.createCommandEncoder();
      for (let i = 0; i < perSubmit; i++) encode(encoder);
      device.queue.submit([encoder.finish()]);
      await device.queue.onSubmittedWorkDone();
      return (performance.now() - t0) / perSubmit;
    };
    await time(1); // pipeline creation and first-use costs are not counted
    if (name !== 'dispatch') {
      const y = await readY();
      const worst = y.reduce((m, v, i) => Math.max(m, Math.abs(v - expected[i])), 0);
      if (!(worst < 1e-3)) return { error: `${name}: wrong result, max |error| ${worst}` };
    }
    const single = [];
    for (let i = 0; i < reps; i++) single.push(await time(1));
    const batched = await time(reps);
    out.ms[name] = { one_per_submit: median(single), [`${reps}_per_submit`]: batched };
    // null when the product took less than the timer's resolution (0.1 ms in a page).
    if (name !== 'dispatch') out.ms[name].weight_gb_per_s = median(single) > 0 ? (rows * cols * 4) / (median(single) * 1e6) : null;
  }
  const readback = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await readY();
    readback.push(performance.now() - t0);
  }
  out.ms.readback = median(readback);
  return out;
}
