#!/usr/bin/env node
// What keeping a published model as its q8_0 pack costs the browser on the first visit: the
// page's own download-and-pack path (`model-store.js::fromUrl` with the engine's pack) on a
// SmolVLM-256M-shaped folder of bf16 safetensors (the published shapes and settings, random
// values: 513 MB), in headless Chromium, each build in a fresh profile.
//
//   node tools/bench_pack.mjs [NAME=WWW ...]     (default: this checkout's www/)
//
// A WWW is a www/ folder with its pkg/ built (scripts/build-web.sh), an older checkout's for a
// before/after. Printed per build: the time from the first request to the stored pack, the
// wasm heap afterwards (a wasm memory never shrinks, so this is its peak), and the peak
// resident memory of all Chromium processes above what they held before the load.

import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, openSync, writeSync, closeSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchChromium } from './chromium.mjs';
import { serve } from './serve.mjs';

const repo = fileURLToPath(new URL('..', import.meta.url));
const builds = process.argv.slice(2).map((a) => a.split('='));
if (!builds.length) builds.push(['this checkout', join(repo, 'www')]);

const scratch = mkdtempSync(join(tmpdir(), 'bench-pack-'));
try {
  const model = join(scratch, 'smolvlm-256m');
  const bytes = writeModel(model);
  console.log(`SmolVLM-256M-shaped folder: ${(bytes / 1e6).toFixed(1)} MB of bf16 safetensors`);
  const blank = join(scratch, 'blank');
  mkdirSync(blank);
  writeFileSync(join(blank, 'index.html'), '<!doctype html><title>bench_pack</title>');
  console.log('| build | download and pack | wasm heap after | peak RSS above idle | pack |');
  console.log('|---|---|---|---|---|');
  for (const [name, www] of builds) {
    const server = await serve({ root: www, mounts: { '/model/': model, '/blank/': blank }, policy: false });
    const browser = await launchChromium(join(scratch, `profile-${name.replace(/\W/g, '_')}`), { webgpu: false });
    try {
      const page = await browser.newPage();
      await page.goto(`${server.url}/blank/index.html`);
      const idle = chromiumRss();
      let peak = idle;
      const poll = setInterval(() => (peak = Math.max(peak, chromiumRss())), 50);
      const result = await page.evaluate(packInWorker, { base: `${server.url}/`, url: `${server.url}/model/` });
      clearInterval(poll);
      peak = Math.max(peak, chromiumRss());
      if (result.error) throw new Error(`${name}: ${result.error}`);
      const mb = (n) => `${(n / 1e6).toFixed(0)} MB`;
      const pack = result.files.map(([, n]) => n).reduce((a, b) => a + b, 0);
      console.log(`| ${name} | ${(result.ms / 1000).toFixed(1)} s | ${mb(result.wasmBytes)} | ${mb(peak - idle)} | ${result.form}, ${mb(pack)} |`);
    } finally {
      await browser.close();
      server.server.close();
    }
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

/** Runs in the page: packs the folder at `url` in a module worker, as the page's worker does. */
async function packInWorker({ base, url }) {
  const code = `
    const { fromUrl } = await import('${base}model-store.js');
    const pkg = await import('${base}pkg/captioner.js');
    const wasm = await pkg.default();
    const type = 'q8_0';
    const pack = {
      type,
      // The engine before PackStream: the whole download, then quantizePack.
      make: async (files, stem) =>
        pkg.quantizePack(files.map((f) => [f.name, f.bytes]), type, stem).map(([name, bytes]) => ({ name, bytes })),
      begin: (texts, stem) => {
        const s = new pkg.PackStream(texts.map((f) => [f.name, f.bytes]), type, stem);
        return {
          push: (b) => s.push(b),
          endFile: () => s.endFile(),
          finish: () => s.finish().map(([name, bytes]) => ({ name, bytes })),
          free: () => s.free(),
        };
      },
    };
    const started = performance.now();
    try {
      const out = await fromUrl('${url}', () => {}, { pack });
      postMessage({
        ms: performance.now() - started,
        wasmBytes: wasm.memory.buffer.byteLength,
        form: out.form,
        files: out.files.map((f) => [f.name, f.bytes.byteLength]),
      });
    } catch (e) {
      postMessage({ error: String(e?.message ?? e) });
    }`;
  const worker = new Worker(URL.createObjectURL(new Blob([code], { type: 'text/javascript' })), { type: 'module' });
  return new Promise((resolve) => {
    worker.onmessage = ({ data }) => resolve(data);
    worker.onerror = (e) => resolve({ error: e.message });
  });
}

/** Resident bytes of every Chromium process now (the browser, its renderers and GPU process). */
function chromiumRss() {
  const exe = process.env.CHROMIUM ?? '/usr/bin/chromium';
  let total = 0;
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (!cmd.startsWith(exe) && !cmd.includes('/chromium')) continue;
      const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (rss) total += Number(rss[1]) * 1024;
    } catch {
      // gone meanwhile
    }
  }
  return total;
}

/**
 * SmolVLM-256M's folder with random bf16 weights: the config, processor settings, tokenizer and
 * chat template it needs, and `model.safetensors` in the published tensors' names and shapes
 * (values about N(0, 0.02), norms 1). Returns the weights' size.
 */
function writeModel(dir) {
  mkdirSync(dir);
  const shapes = join(repo, 'src/bench/shapes/smolvlm-256m');
  for (const f of readdirSync(shapes)) copyFileSync(join(shapes, f), join(dir, f));
  const tiny = join(repo, 'tests/fixtures/tiny-b');
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'chat_template.json', 'generation_config.json']) {
    copyFileSync(join(tiny, f), join(dir, f));
  }
  const c = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  const t = c.text_config;
  const v = c.vision_config;
  const [H, I, V, q, kv] = [t.hidden_size, t.intermediate_size, t.vocab_size, t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim];
  const [D, Iv, P] = [v.hidden_size, v.intermediate_size, v.patch_size];
  const tensors = [['model.text_model.embed_tokens.weight', [V, H]], ['model.text_model.norm.weight', [H]], ['lm_head.weight', [V, H]]];
  for (let l = 0; l < t.num_hidden_layers; l++) {
    const p = `model.text_model.layers.${l}.`;
    tensors.push(
      [`${p}self_attn.q_proj.weight`, [q, H]], [`${p}self_attn.k_proj.weight`, [kv, H]],
      [`${p}self_attn.v_proj.weight`, [kv, H]], [`${p}self_attn.o_proj.weight`, [H, q]],
      [`${p}mlp.gate_proj.weight`, [I, H]], [`${p}mlp.up_proj.weight`, [I, H]], [`${p}mlp.down_proj.weight`, [H, I]],
      [`${p}input_layernorm.weight`, [H]], [`${p}post_attention_layernorm.weight`, [H]],
    );
  }
  const e = 'model.vision_model.embeddings.';
  const side = v.image_size / P;
  tensors.push([`${e}patch_embedding.weight`, [D, 3, P, P]], [`${e}patch_embedding.bias`, [D]], [`${e}position_embedding.weight`, [side * side, D]]);
  for (let l = 0; l < v.num_hidden_layers; l++) {
    const p = `model.vision_model.encoder.layers.${l}.`;
    for (const m of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) tensors.push([`${p}self_attn.${m}.weight`, [D, D]], [`${p}self_attn.${m}.bias`, [D]]);
    tensors.push([`${p}mlp.fc1.weight`, [Iv, D]], [`${p}mlp.fc1.bias`, [Iv]], [`${p}mlp.fc2.weight`, [D, Iv]], [`${p}mlp.fc2.bias`, [D]]);
    for (const n of ['layer_norm1', 'layer_norm2']) tensors.push([`${p}${n}.weight`, [D]], [`${p}${n}.bias`, [D]]);
  }
  tensors.push(['model.vision_model.post_layernorm.weight', [D]], ['model.vision_model.post_layernorm.bias', [D]]);
  tensors.push(['model.connector.modality_projection.proj.weight', [H, D * c.scale_factor * c.scale_factor]]);

  // Header, in the order safetensors writes (by name), then the data.
  tensors.sort((a, b) => (a[0] < b[0] ? -1 : 1));
  const header = {};
  let at = 0;
  for (const [name, shape] of tensors) {
    const n = 2 * shape.reduce((a, b) => a * b, 1);
    header[name] = { dtype: 'BF16', shape, data_offsets: [at, at + n] };
    at += n;
  }
  let json = Buffer.from(JSON.stringify(header));
  json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  const fd = openSync(join(dir, 'model.safetensors'), 'w');
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  writeSync(fd, length);
  writeSync(fd, json);
  let seed = 0x9e3779b9;
  for (const [name, shape] of tensors) {
    const n = shape.reduce((a, b) => a * b, 1);
    const out = new Uint16Array(n);
    if (shape.length === 1) {
      // Norm weights 1, biases 0 (bf16 of 1.0 is 0x3f80).
      out.fill(name.includes('norm') && name.endsWith('weight') ? 0x3f80 : 0);
    } else {
      const f = new Float32Array(1);
      const u = new Uint16Array(f.buffer);
      for (let i = 0; i < n; i++) {
        // A sum of four uniforms: about normal, scaled to a standard deviation of 0.02.
        let s = 0;
        for (let k = 0; k < 4; k++) {
          seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5;
          s += (seed >>> 0) / 4294967296;
        }
        f[0] = (s - 2) * 0.0346;
        out[i] = u[1];
      }
    }
    writeSync(fd, new Uint8Array(out.buffer));
  }
  closeSync(fd);
  return at;
}
