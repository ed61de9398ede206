// Loads the engine's wasm build into a worker. Two builds ship (scripts/build-web.sh):
//   pkg/          WebGPU, and the CPU on one thread;
//   pkg-threads/  the CPU only, its kernel on several threads: Web Workers sharing the module's
//                 memory. Browsers allow that only in a cross-origin isolated context (COOP and
//                 COEP headers), and WebGPU's objects cannot be shared between threads, so this
//                 build has no WebGPU.
// Both export the same API. Each build is loaded at most once per worker.

const builds = new Map();

/**
 * The build for running on the CPU (`cpu: true`: the threaded one where the context allows it)
 * or on WebGPU. Resolves to `{pkg, threads, note}`: the module's exports, the threads the CPU
 * kernel got (the calling worker included), and why it got only one, if it did.
 */
export function loadEngine({ cpu = false, threads = self.navigator.hardwareConcurrency ?? 1 } = {}) {
  if (!cpu || threads <= 1) return build('single', () => single(''));
  if (!self.crossOriginIsolated) {
    return build('single', () => single('')).then((b) => ({
      ...b,
      note: 'the page is not cross-origin isolated, so the CPU runs on one thread',
    }));
  }
  return build('threads', async () => {
    try {
      const pkg = await import(/* @vite-ignore */ /* webpackIgnore: true */ threadedBuild());
      await pkg.default({ module_or_path: new URL('./pkg-threads/captioner_bg.wasm', import.meta.url) });
      // The calling worker works too: it needs threads - 1 helpers.
      await pkg.initThreads(threads - 1);
      return { pkg, threads: pkg.kernelThreads(), note: '' };
    } catch (e) {
      return single(`the threaded engine did not start (${e?.message ?? e}), so the CPU runs on one thread`);
    }
  });
}

/**
 * The device to run on: WebGPU when the browser has a GPU adapter, else the CPU (with why).
 * A fallback adapter is a GPU emulated in software (SwiftShader): asked for `auto`, the CPU
 * runs instead, because there the wasm CPU path decodes about 80 times faster (BENCHMARKS.md,
 * "In the browser"). Asking for `webgpu` still gets it.
 */
export async function pickDevice(wanted) {
  if (wanted === 'cpu') return { device: 'cpu', note: '' };
  const adapter = self.navigator.gpu ? await self.navigator.gpu.requestAdapter() : null;
  const software = adapter?.info?.isFallbackAdapter === true;
  if (adapter && (!software || wanted === 'webgpu')) return { device: 'webgpu', note: '' };
  if (software) {
    return { device: 'cpu', note: 'the only WebGPU adapter is a software one: running on the CPU, which is faster there' };
  }
  const why = self.navigator.gpu
    ? 'this browser offers WebGPU but found no usable GPU adapter'
    : 'this browser has no WebGPU';
  if (wanted === 'webgpu') throw new Error(`${why}; choose the CPU instead (slower, but it works)`);
  return { device: 'cpu', note: `${why}: running on the CPU (slower)` };
}

/**
 * Where the threaded build's glue is. Its helper workers start from a copy of the glue and
 * import it by URL, so it must stay one file served as it ships (scripts/build-web.sh inlines
 * what it imported): named with `new URL(…, import.meta.url)`, as its wasm is above, a bundler
 * (Vite) copies both as they are, and the import is marked for bundlers to leave alone.
 */
function threadedBuild() {
  return new URL('./pkg-threads/captioner.js', import.meta.url).href;
}

function build(name, start) {
  if (!builds.has(name)) builds.set(name, start());
  return builds.get(name);
}

async function single(note) {
  const pkg = await import('./pkg/captioner.js');
  await pkg.default();
  return { pkg, threads: 1, note };
}
