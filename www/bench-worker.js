// Runs one benchmark (one model at one precision) and posts its report. The page starts a
// fresh worker per precision, so each run starts from empty memory.

import init, { bench } from './pkg/captioner.js';
import { fromUrl } from './model-store.js';

self.onmessage = async ({ data: { model, device, precision, settings } }) => {
  try {
    await init();
    const { files } = await fromUrl(model);
    const report = await bench(
      files.map((f) => [f.name, f.bytes]),
      device,
      precision,
      undefined,
      settings,
    );
    self.postMessage({ report });
  } catch (e) {
    self.postMessage({ error: String(e?.message ?? e) });
  }
};
