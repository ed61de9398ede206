// The engine's wasm modules as linked: what no page test would notice until it is slow.
//
// Needs: both wasm builds with their function names (scripts/build-web.sh at WASM_PROFILE=wasm-dev,
// as scripts/test.sh builds them; a shipped build drops the names).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repo } from './page.mjs';

/** Reads an unsigned LEB128 at `at`; returns [value, next offset]. */
function leb(bytes, at) {
  let value = 0;
  let scale = 1;
  for (;;) {
    const b = bytes[at++];
    value += (b & 0x7f) * scale;
    if (b < 0x80) return [value, at];
    scale *= 128;
  }
}

/** The function names in a module's `name` section (an empty list where it has none). */
function functionNames(bytes) {
  const text = new TextDecoder();
  const readName = (at) => {
    const [n, start] = leb(bytes, at);
    return [text.decode(bytes.subarray(start, start + n)), start + n];
  };
  let at = 8; // magic and version
  while (at < bytes.length) {
    const id = bytes[at];
    const [size, body] = leb(bytes, at + 1);
    at = body + size;
    if (id !== 0) continue;
    const [section, inner] = readName(body);
    if (section !== 'name') continue;
    // Subsections: 1 holds the function names, as a vector of (index, name).
    for (let sub = inner; sub < at;) {
      const subId = bytes[sub];
      const [subSize, subBody] = leb(bytes, sub + 1);
      sub = subBody + subSize;
      if (subId !== 1) continue;
      let [count, p] = leb(bytes, subBody);
      const names = [];
      for (; count > 0; count--) {
        let name;
        [, p] = leb(bytes, p);
        [name, p] = readName(p);
        names.push(name);
      }
      return names;
    }
  }
  return [];
}

for (const pkg of ['pkg', 'pkg-threads']) {
  test(`www/${pkg} runs its static constructors once, not on every call from JS`, () => {
    // A module that never calls `__wasm_call_ctors` itself is linked as a command: wasm-ld
    // wraps every export as `<name>.command_export`, which runs all the constructors first
    // (4,892 of cubecl's in the WebGPU build), on every call wasm-bindgen's glue makes. The
    // engine's start function calls them once instead (src/web.rs).
    const names = functionNames(readFileSync(join(repo, 'www', pkg, 'captioner_bg.wasm')));
    assert.ok(names.length > 1000, `www/${pkg} has no function names: build it with WASM_PROFILE=wasm-dev (what test.sh builds)`);
    assert.ok(names.includes('__wasm_call_ctors'), 'the constructors are gathered in __wasm_call_ctors');
    const wrapped = names.filter((n) => n.endsWith('.command_export'));
    assert.deepEqual(wrapped, [], `exports wrapped to run the constructors on every call: ${wrapped.slice(0, 5).join(', ')}`);
  });
}
