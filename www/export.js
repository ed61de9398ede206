// The captioned rows in the other forms people use them in: a CSV for spreadsheets, and one
// `.txt` caption file beside each image (the layout kohya-ss, OneTrainer, TagGUI and qapyq read)
// in a zip. Both are made from the very JSON lines the JSONL download holds. No DOM here: the
// page calls these, and tests run them in Node.

/**
 * CSV (RFC 4180: CRLF line ends, fields quoted where they must be) of `lines`, the output rows
 * as JSON text. One column per field, in the order the fields first appear; a string is its
 * text, anything else (the image list, a number, null) its JSON as the line writes it, so a
 * number keeps every digit. A text starting with `=`, `+`, `-`, `@`, a tab or a carriage
 * return gets a `'` before it, which a spreadsheet shows as text instead of running it as a
 * formula (a caption comes from a model that text in a picture can steer). A line that is not
 * a JSON object goes out whole in a `line` column. Starts with a UTF-8 byte order mark, which
 * spreadsheet programs take for UTF-8.
 */
export function csvOf(lines) {
  const rows = lines.map((line) => members(line) ?? new Map([['line', JSON.stringify(line)]]));
  const columns = [...new Set(rows.flatMap((row) => [...row.keys()]))];
  const cell = (raw) => {
    if (raw === undefined) return '';
    let text = raw;
    if (raw.startsWith('"')) {
      text = JSON.parse(raw);
      if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`;
    }
    return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
  };
  const out = [columns.map((c) => cell(JSON.stringify(c))).join(',')];
  for (const row of rows) out.push(columns.map((c) => cell(row.get(c))).join(','));
  return '\ufeff' + out.join('\r\n') + '\r\n';
}

// A JSON string, number or literal, from where the pattern is tried (sticky). (The string's
// loop runs over runs of plain characters, not one character at a time: a long string must not
// exhaust the regular expression engine's stack.)
const SCALAR = /"[^"\\]*(?:\\.[^"\\]*)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null/y;
const SPACE = /[ \t\n\r]*/y;

/**
 * The fields of a line holding a JSON object, each with its value's JSON text as written
 * (a key given twice keeps its last value, as `JSON.parse` does); null for any other line.
 */
function members(line) {
  line = line.replace(/^\ufeff/, '');
  try {
    const value = JSON.parse(line);
    if (!value || typeof value !== 'object' || Array.isArray(value)) return null;
  } catch {
    return null;
  }
  // Valid JSON from here on: only where each value ends needs finding.
  let at = 0;
  const skip = (pattern) => {
    pattern.lastIndex = at;
    const m = pattern.exec(line);
    at += m[0].length;
    return m[0];
  };
  const value = () => {
    skip(SPACE);
    const start = at;
    if (line[at] !== '{' && line[at] !== '[') return skip(SCALAR);
    let depth = 0;
    do {
      if (line[at] === '"') {
        skip(SCALAR);
        continue;
      }
      if (line[at] === '{' || line[at] === '[') depth++;
      if (line[at] === '}' || line[at] === ']') depth--;
      at++;
    } while (depth > 0 && at < line.length);
    return line.slice(start, at);
  };
  const fields = new Map();
  skip(SPACE);
  at++; // {
  for (;;) {
    skip(SPACE);
    if (line[at] === '}') break;
    const key = JSON.parse(skip(SCALAR));
    skip(SPACE);
    at++; // :
    fields.delete(key);
    fields.set(key, value());
    skip(SPACE);
    if (line[at] === ',') at++;
  }
  return fields;
}

/**
 * The caption files of `lines` (output rows as JSON text): for each row with a caption and one
 * image, `{name, text}` where `name` is the image's path (inside the zip: no drive, root or
 * `..`) with `.txt` for its extension. Rows without a caption, without an image or with
 * several (one caption for the set fits none of them alone) are left out and counted; so is a
 * row whose file another row's takes (the same image, or one of the same name but another
 * extension or case, which would overwrite each other where they are unpacked).
 * `notOnWindows` names the files written whose names Windows cannot hold (`windowsCanHold`).
 */
export function captionFiles(lines, { imageKey = 'image', captionKey = 'caption' } = {}) {
  const files = new Map();
  const notOnWindows = [];
  const taken = new Set();
  const left = { uncaptioned: 0, noImage: 0, severalImages: 0, sameFile: 0 };
  for (const line of lines) {
    let row;
    try {
      row = JSON.parse(line);
    } catch {
      left.uncaptioned++;
      continue;
    }
    const caption = row?.[captionKey];
    if (typeof caption !== 'string') {
      left.uncaptioned++;
      continue;
    }
    const images = [row[imageKey] ?? []].flat();
    if (images.length > 1) {
      left.severalImages++;
      continue;
    }
    // Inside the zip whatever the path says: no drive, no root, no '..'.
    const segments = typeof images[0] === 'string'
      ? images[0].split(/[\\/]/).filter((s, i) => s && s !== '.' && s !== '..' && !(i === 0 && /^[A-Za-z]:$/.test(s)))
      : [];
    if (!segments.length) {
      left.noImage++;
      continue;
    }
    const name = segments.join('/').replace(/(\.[^./]*)?$/, '.txt');
    const key = name.normalize('NFC').toLowerCase();
    if (taken.has(key)) {
      left.sameFile++;
      continue;
    }
    taken.add(key);
    files.set(name, caption);
    if (name.split('/').some((segment) => !windowsCanHold(segment))) notOnWindows.push(name);
  }
  return { files: [...files].map(([name, text]) => ({ name, text })), left, notOnWindows };
}

/**
 * Whether Windows can create a file or folder of this name: none of `<>:"/\|?*` or control
 * characters, no trailing dot or space, and not a device name (CON, PRN, AUX, NUL, COM1–9,
 * LPT1–9 and the superscript forms, in any case, whatever follows a dot). A caption file is
 * named after its image, so such a name comes from images kept elsewhere: the file is still
 * written (it belongs beside its image there), and the page says which cannot be unpacked on
 * Windows.
 */
export function windowsCanHold(segment) {
  if (/[<>:"/\\|?*\u0000-\u001f]/.test(segment) || /[. ]$/.test(segment)) return false;
  const stem = segment.split('.')[0].trimEnd();
  return !/^(con|prn|aux|nul|(com|lpt)[0-9¹²³])$/i.test(stem);
}

/** The most files one zip holds without ZIP64, which this writer leaves out. */
export const MAX_ZIP_FILES = 0xffff;

/** A zip (stored, not compressed: captions are small) of `files`, `[{name, text}]`, UTF-8. */
export function zipOf(files) {
  if (files.length > MAX_ZIP_FILES) {
    throw new Error(`${files.length} caption files are more than one zip holds here (${MAX_ZIP_FILES})`);
  }
  const encoder = new TextEncoder();
  const parts = [];
  const central = [];
  let offset = 0;
  // MS-DOS date and time: now, to the two seconds the format holds.
  const now = new Date();
  const time = (now.getHours() << 11) | (now.getMinutes() << 5) | (now.getSeconds() >> 1);
  const date = ((Math.max(now.getFullYear(), 1980) - 1980) << 9) | ((now.getMonth() + 1) << 5) | now.getDate();
  for (const { name, text } of files) {
    const nameBytes = encoder.encode(name).subarray(0, 0xffff);
    const data = encoder.encode(text);
    const crc = crc32(data);
    // Version 2.0, bit 11: the name is UTF-8, method 0: stored.
    const common = [20, 0x0800, 0, time, date];
    const local = header(0x04034b50, [...common], [crc, data.length, data.length], [nameBytes.length, 0]);
    parts.push(local, nameBytes, data);
    central.push(
      header(0x02014b50, [20, ...common], [crc, data.length, data.length], [nameBytes.length, 0, 0, 0, 0], [0, offset]),
      nameBytes,
    );
    offset += local.length + nameBytes.length + data.length;
  }
  const size = central.reduce((n, part) => n + part.length, 0);
  const end = header(0x06054b50, [0, 0, files.length, files.length], [size, offset], [0]);
  return new Blob([...parts, ...central, end], { type: 'application/zip' });
}

/** A little-endian record: its signature, then 16-bit, 32-bit, 16-bit and 32-bit fields. */
function header(signature, shorts, longs, moreShorts = [], moreLongs = []) {
  const fields = [[signature, 4], ...shorts.map((v) => [v, 2]), ...longs.map((v) => [v, 4]),
    ...moreShorts.map((v) => [v, 2]), ...moreLongs.map((v) => [v, 4])];
  const bytes = new Uint8Array(fields.reduce((n, [, width]) => n + width, 0));
  const view = new DataView(bytes.buffer);
  let at = 0;
  for (const [value, width] of fields) {
    if (width === 2) view.setUint16(at, value, true);
    else view.setUint32(at, value >>> 0, true);
    at += width;
  }
  return bytes;
}

let table = null;

/** CRC-32 (the zip and PNG one, polynomial 0xEDB88320). */
function crc32(bytes) {
  if (!table) {
    table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (const b of bytes) crc = table[(crc ^ b) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}
