// Makes a wasm-bindgen glue module self-contained: each `import { … } from './snippets/…'` is
// replaced by that snippet's code, and the snippets folder removed.
//
//   node tools/inline_snippets.mjs www/pkg-threads.new
//
// Why: the threaded build's snippet (wasm-bindgen-rayon's `no-bundler` helpers) starts each
// helper worker from a copy of its own script and has it import the glue by URL. Where a
// bundler copies the glue as an asset (www/engine.js names it with `new URL(…, import.meta.url)`)
// a snippet beside it would be lost; inlined, the helper's copy is the glue itself, which works
// there and unbundled alike.

import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node tools/inline_snippets.mjs <glue folder>');
  process.exit(2);
}
const gluePath = join(dir, 'captioner.js');
let glue = readFileSync(gluePath, 'utf8');
const imports = /^import \{([^}]*)\} from '(\.\/snippets\/[^']+)';\n/gm;
const inlined = [];
glue = glue.replace(imports, (_, names, path) => {
  let code = readFileSync(join(dir, path), 'utf8');
  if (/^\s*import[\s{(*]/m.test(code)) throw new Error(`${path} imports other modules; it cannot be inlined`);
  // Its exports become the glue's own declarations.
  code = code.replace(/^export (?=(async )?function |const |let |class )/gm, '');
  for (const name of names.split(',').map((n) => n.trim()).filter(Boolean)) {
    if (!new RegExp(`^(async )?function ${name}\\b|^(const|let|class) ${name}\\b`, 'm').test(code)) {
      throw new Error(`${path} does not declare ${name}`);
    }
  }
  inlined.push(path);
  return `// ${path}, inlined (tools/inline_snippets.mjs)\n${code}\n`;
});
if (/from '\.\/snippets\//.test(glue)) throw new Error(`${gluePath} still imports a snippet`);
writeFileSync(gluePath, glue);
rmSync(join(dir, 'snippets'), { recursive: true, force: true });
console.log(`${gluePath}: ${inlined.length ? inlined.join(', ') : 'no snippets'} inlined`);
