// Runs one benchmark (one model at one precision) and posts its report. The page starts a
// fresh worker per precision, so each run starts from empty memory. Messages out: `stage`
// (what the worker is doing, for the page's status), then `report` or `error`.

import { loadEngine, pickDevice } from './engine.js';
import { fromUrl } from './model-store.js';

self.onmessage = async ({ data: { model, device, precision, threads, settings } }) => {
  try {
    // As the app chooses: `auto` runs on the CPU where the only WebGPU adapter is software.
    const chosen = await pickDevice(device);
    // As the app runs it: the threaded build where the page is cross-origin isolated.
    // (`threads` undefined: every core.)
    const engine = await loadEngine({ cpu: chosen.device === 'cpu', threads });
    const { pkg } = engine;
    const { files } = await fromUrl(model, (p) => {
      if (p.phase === 'download') self.postMessage({ stage: 'download', loaded: p.loaded, total: p.total });
    });
    self.postMessage({ stage: 'bench', device: chosen.device, note: chosen.note, threads: engine.threads });
    const report = await pkg.bench(
      files.map((f) => [f.name, f.bytes]),
      chosen.device,
      precision,
      undefined,
      settings,
    );
    // The CPU kernel's threads and why this device (the report's own fields are the native
    // bench's).
    self.postMessage({ report: { ...report, kernel_threads: engine.threads, device_note: chosen.note } });
  } catch (e) {
    self.postMessage({ error: String(e?.message ?? e) });
  }
};
