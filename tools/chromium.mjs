// Headless Chromium as the browser tests and tools/bench_wllama.mjs run it: a fresh profile in
// `profileDir`, the flags this machine needs (no sandbox, no background traffic), and WebGPU
// (SwiftShader where there is no GPU) unless `webgpu: false`. `CHROMIUM` overrides the binary.

import { chromium } from 'playwright-core';

export function launchChromium(profileDir, { webgpu = true } = {}) {
  return chromium.launchPersistentContext(profileDir, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    ignoreDefaultArgs: true,
    acceptDownloads: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      ...(webgpu ? ['--enable-unsafe-webgpu'] : []),
      '--remote-debugging-pipe',
      '--no-startup-window',
    ],
  });
}
