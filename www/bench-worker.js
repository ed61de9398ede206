// Runs one benchmark (one model at one precision) and posts its report. The page starts a
// fresh worker per precision, so each run starts from empty memory.

import { loadEngine } from './engine.js';
import { fromUrl } from './model-store.js';

self.onmessage = async ({ data: { model, device, precision, threads, settings } }) => {
  try {
    // As the app runs it: the threaded build where the page is cross-origin isolated.
    // (`threads` undefined: every core.)
    const engine = await loadEngine({ cpu: device === 'cpu', threads });
    const { pkg } = engine;
    const { files } = await fromUrl(model);
    const report = await pkg.bench(
      files.map((f) => [f.name, f.bytes]),
      device,
      precision,
      undefined,
      settings,
    );
    // The CPU kernel's threads (the report's own fields are the native bench's).
    self.postMessage({ report: { ...report, kernel_threads: engine.threads } });
  } catch (e) {
    self.postMessage({ error: String(e?.message ?? e) });
  }
};
