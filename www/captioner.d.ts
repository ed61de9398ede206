// Type declarations for Captioner's embedding API (www/captioner.js).

export declare const DEFAULT_MODEL_URL: string;

/** Other tools' words, to spread into a call's options (`{ ...PRESETS.dataflow }`). */
export declare const PRESETS: {
  /** DataFlow's ImageCaptionGenerate: its system and user prompts. */
  readonly dataflow: { readonly system: string; readonly prompt: string };
};

export interface LoadProgress {
  phase: 'plan' | 'download' | 'packing' | 'cached' | 'building';
  file?: string;
  loaded?: number;
  total?: number | null;
  bytesPerSecond?: number;
}

export interface LoadOptions {
  /** A model folder's base URL (default: SmolVLM-256M-Instruct on the Hugging Face hub). */
  modelUrl?: string;
  /** The model folder's files, picked by the user (for offline use). */
  files?: Iterable<File>;
  /** `'auto'` (default) uses WebGPU when the browser has it, else the CPU. */
  device?: 'webgpu' | 'cpu' | 'auto';
  /** How the weights are held; a safetensors folder is quantized as it loads. */
  precision?: 'auto' | 'f32' | 'q8_0' | 'q4_0' | 'mixed';
  onProgress?: (progress: LoadProgress) => void;
  /**
   * Unbundled use only: start the worker as `worker.js?model=<url>`, so the server can let the
   * worker's downloads reach that model's origin and no other (its Content-Security-Policy).
   */
  modelInWorkerUrl?: boolean;
}

export interface CaptionOptions {
  prompt?: string;
  system?: string;
  /** Default 512. */
  maxTokens?: number;
  /** Default 0.7; 0 is greedy. */
  temperature?: number;
  /** Default 0.9. */
  topP?: number;
  /** Default 0 (off). */
  topK?: number;
  /** Default 42: the same inputs give the same captions. */
  seed?: number;
  /** Resize so the longest edge is at most this (fewer tiles, faster). */
  longestEdge?: number;
  onToken?: (text: string) => void;
}

export interface Progress {
  rowsDone: number;
  rowsTotal: number | null;
  captioned: number;
  skipped: number;
  failed: number;
  tokens: number;
  elapsedSeconds: number;
  tokensPerSecond: number;
  etaSeconds: number | null;
}

export interface RowEvent {
  /** The line's index in the input. */
  index: number;
  /** The output row's JSON, every input field kept byte for byte. */
  line: string;
  outcome: 'captioned' | 'skipped' | 'failed';
  caption: string | null;
  error: string | null;
  progress: Progress;
}

export interface RowOptions extends Omit<CaptionOptions, 'onToken'> {
  /** The field with the image path(s); default `image`. */
  imageKey?: string;
  /** The field the caption goes to; default `caption`. */
  captionKey?: string;
  /** The field saying why a row has no caption; default `error`. */
  errorKey?: string;
  /** Rows with more images get an error; default 4. */
  maxImages?: number;
  /** Caption rows that already have a caption too. */
  overwrite?: boolean;
  onRow?: (event: RowEvent) => void;
  onToken?: (text: string, index: number) => void;
  /** Lines an earlier run finished, as `[index, outcome]`: not run again, counted as they came out. */
  done?: Iterable<[number, 'captioned' | 'skipped' | 'failed']>;
}

export type FilesByPath =
  | Map<string, Blob>
  | Record<string, Blob>
  | Array<[string, Blob]>
  | File[]
  | FileList;

export declare class Captioner {
  static load(options?: LoadOptions): Promise<Captioner>;
  readonly device: 'webgpu' | 'cpu';
  readonly deviceNote: string;
  /** On the CPU, the threads its kernel runs on (several only where the page is cross-origin
   * isolated); null on WebGPU. */
  readonly threads: number | null;
  /** Why the CPU runs on one thread, when it does ('' otherwise). */
  readonly threadNote: string;
  /** How the weights are held: the precision asked for, where `'auto'` on WebGPU reads
   * `'auto (q8_0)'`. */
  readonly precision: string;
  readonly fromCache: boolean;
  /** The files loaded: `'original'` (the model's own) or the quantized pack the browser keeps
   * (`'q8_0'`). */
  readonly form: string | null;
  /** GPU memory the model holds after loading, in bytes; null on the CPU. */
  readonly gpuBytes: number | null;
  /** Captions one image, or several shown together. An image in a format the engine does not
   * read (AVIF; HEIC in Safari) is decoded by the browser, and listed in
   * `lastDecodedByBrowser`. */
  caption(image: Blob | Blob[], options?: CaptionOptions): Promise<string>;
  /** The images the browser decoded in the last `caption` (indexes among those given). */
  readonly lastDecodedByBrowser: number[];
  /** Answers a text prompt with the model's text part alone (no image). */
  chat(prompt: string, options?: Omit<CaptionOptions, 'prompt' | 'longestEdge'>): Promise<string>;
  /** `rows`: a JSONL file (its Blob, bytes or text; read as bytes, a line that is not UTF-8
   * becomes an error row) or an array of rows (objects, JSON lines, or a line's bytes). */
  captionRows(
    rows: Blob | ArrayBuffer | ArrayBufferView | string | Array<Record<string, unknown> | string | Uint8Array>,
    filesByPath: FilesByPath,
    options?: RowOptions,
  ): AsyncIterableIterator<Record<string, unknown>>;
  setCaptions(
    edits: Array<{ line: string; caption: string }>,
    keys?: { captionKey?: string; errorKey?: string },
  ): Promise<string[]>;
  outputsWithoutModel(
    lines: Array<{ index: number; line: string | Uint8Array }>,
    options?: RowOptions,
  ): Promise<Array<string | null>>;
  cancel(): void;
  dispose(): void;
}
