// What the page and the worker must agree on about the user's files: how a row's image path
// finds a picked file, and how a rows file's bytes become lines (the native program's rules).

/** A row's path or a picked file's relative path, normalised for matching. */
export function normalisePath(path) {
  return path.replace(/\\/g, '/').replace(/^(\.\/)+/, '').replace(/^\/+/, '');
}

/**
 * Finds picked files by a row's path: the exact relative path, then the path without the picked
 * folder's own name, then the file name when only one picked file has it. `entries` are
 * `[path, File]` pairs. The finder returns the File, or throws the message for the row's error.
 */
export function fileFinder(entries) {
  const byPath = new Map();
  const byName = new Map();
  for (const [path, file] of entries) {
    const p = normalisePath(path);
    byPath.set(p, file);
    const inner = p.includes('/') ? p.slice(p.indexOf('/') + 1) : null;
    if (inner && !byPath.has(inner)) byPath.set(inner, file);
    const name = p.split('/').pop();
    byName.set(name, byName.has(name) ? null : file);
  }
  return (path) => {
    const p = normalisePath(path);
    const file = byPath.get(p) ?? byName.get(p.split('/').pop());
    if (file === null) {
      throw `image '${path}' matches several picked files by name; give its folder in the path`;
    }
    if (!file) throw `image '${path}' not found among the picked files`;
    return file;
  };
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * The lines of a JSONL file's bytes, split at `\n` as the native program splits them: each a
 * string, or its bytes (a Uint8Array) where it is not UTF-8, so that the engine turns it into
 * the same error row `caption-jsonl` writes instead of a row with U+FFFD in it. A BOM and `\r`
 * stay for the engine to strip. A final newline ends the last line; it starts no new one.
 */
export function jsonlLines(bytes) {
  const lines = [];
  let start = 0;
  while (start < bytes.length) {
    let end = bytes.indexOf(0x0a, start);
    if (end < 0) end = bytes.length;
    const line = bytes.subarray(start, end);
    try {
      lines.push(utf8.decode(line));
    } catch {
      lines.push(line.slice());
    }
    start = end + 1;
  }
  return lines;
}

/**
 * Whether line `index` (0-based) holds no row, by the engine's rule (`rows::is_blank`): after a
 * BOM on the first line, nothing but JSON's white space (space, tab, CR, LF). Other white space
 * (U+0085, U+00A0, U+2028, VT, FF) is not JSON: its line is an error row that keeps it. Bytes
 * that are not UTF-8 always hold a row: the error row.
 */
export function isBlank(line, index) {
  if (typeof line !== 'string') return false;
  const text = index === 0 ? line.replace(/^\uFEFF/, '') : line;
  return /^[ \t\r\n]*$/.test(text);
}

/** A line as text, for showing it (invalid bytes replaced). */
export function lineText(line) {
  return typeof line === 'string' ? line : new TextDecoder().decode(line);
}

const IMAGE_NAME = /\.(jpe?g|jfif|png|apng|webp|gif|bmp|dib|tiff?|avif|heic|heif|ico|pbm|pgm|ppm|pnm|qoi|tga|dds|exr|hdr)$/i;

/** Whether a picked file is offered as an image (by its type, else its name). */
export function looksLikeImage(file) {
  return file.type.startsWith('image/') || IMAGE_NAME.test(file.name);
}

/** Whether a dropped file, or one in a picked folder, is a rows file (by its name or type). */
export function looksLikeRows(file) {
  return /\.(jsonl?|ndjson)$/i.test(file.name) || /^application\/(jsonl|x-ndjson)$/.test(file.type);
}
