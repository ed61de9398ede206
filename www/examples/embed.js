// How an annotation tool embeds Captioner: load once, caption a file, caption rows.
import { Captioner } from '../captioner.js';

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const params = new URLSearchParams(location.search);
const model = params.get('model');

$('go').addEventListener('click', async () => {
  const output = $('output');
  try {
    const files = [...$('files').files];
    output.textContent = 'loading the model…';
    const captioner = await Captioner.load({
      modelUrl: model ? new URL(model, location.href).href : undefined, // default: the hub
      precision: params.get('precision') ?? 'auto', // or 'q8_0', 'q4_0', 'mixed', 'f32'
      device: params.get('device') ?? 'auto', // or 'webgpu', 'cpu'
      onProgress: (p) => (output.textContent = `loading: ${p.phase} ${p.loaded ?? ''}`),
    });
    const greedy = { temperature: 0, maxTokens: 8 };
    let streamed = '';
    const caption = await captioner.caption(files[0], {
      ...greedy,
      onToken: (text) => (streamed += text),
    });
    const rows = [];
    const input = [{ id: 'a', image: files[0].name }, { id: 'b', image: [files[1].name] }];
    for await (const row of captioner.captionRows(input, files, greedy)) rows.push(row);
    captioner.dispose();
    const { device, deviceNote, threads, threadNote, lastDecodedByBrowser } = captioner;
    $('result').textContent = JSON.stringify({
      caption, streamed: streamed.trim(), rows, device, deviceNote, threads, threadNote,
      decodedByBrowser: lastDecodedByBrowser,
    });
    output.textContent = 'done';
  } catch (e) {
    output.textContent = `failed: ${e.message}`;
  }
});
