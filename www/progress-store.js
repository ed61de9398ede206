// The page's progress kept in this browser (IndexedDB), so that a reload, a crash or a closed
// tab loses no finished row and no caption typed by hand: one record per row, written as the
// row changes, not the whole run at once. localStorage, which held it before, allows about
// 5 MB per site and failed silently past it (a few thousand rows whose fields are long), and
// every save rewrote every row.
//
// A record's key is [settings key, row identity]. The settings key is a digest of everything
// that shapes a row's output (prompt, sampling, keys: see app.js's `settings`); a row's
// identity is its line and its files (app.js's `currentLines`). Each row's sampling is seeded
// on its own, so a row's output depends on nothing else, and a row removed or added does not
// touch the others' records.

const DB_NAME = 'captioner-progress';
const ROWS = 'rows'; // [settings key, identity] -> {output, edit?}
const KEYS = 'keys'; // settings key -> {used: ms since 1970}: what pruning goes by
/** Progress under settings not used for this long is deleted when the page opens. */
export const KEEP_MS = 30 * 24 * 3600 * 1000;
/** localStorage keys of the page before this store (one JSON value per run); deleted. */
const OLD_PREFIX = 'captioner-run:';

const request = (r) =>
  new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
const done = (tx) =>
  new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new DOMException('aborted', 'AbortError'));
  });
/** Every record of one settings key: arrays sort after strings, so [key] < [key, id] < [key, []]. */
const rowsOf = (key) => IDBKeyRange.bound([key], [key, []]);

/** Opens the store; null where the browser has no IndexedDB (the page then cannot resume). */
export async function openProgress() {
  try {
    for (const name of Object.keys(localStorage)) if (name.startsWith(OLD_PREFIX)) localStorage.removeItem(name);
  } catch {
    // No localStorage here (a sandboxed frame): nothing of the old page's to delete.
  }
  if (!globalThis.indexedDB) return null;
  const open = indexedDB.open(DB_NAME, 1);
  open.onupgradeneeded = () => {
    open.result.createObjectStore(ROWS);
    open.result.createObjectStore(KEYS);
  };
  const db = await request(open);
  const store = new ProgressStore(db);
  await store.prune(Date.now() - KEEP_MS);
  return store;
}

class ProgressStore {
  constructor(db) {
    this.db = db;
  }

  /**
   * The stored output (and hand edit, if any) of each identity in `ids` under `key`, as a Map
   * of identity -> {output, edit?}; identities with none are left out.
   */
  async read(key, ids) {
    const tx = this.db.transaction(ROWS, 'readonly');
    const rows = tx.objectStore(ROWS);
    const found = new Map();
    await Promise.all(
      ids.map(async (id) => {
        const record = await request(rows.get([key, id]));
        if (record?.output) found.set(id, record);
      }),
    );
    return found;
  }

  /** Writes `records` (identity -> {output, edit?}, or null to delete) under `key`, in one transaction. */
  async write(key, records) {
    const tx = this.db.transaction([ROWS, KEYS], 'readwrite');
    const rows = tx.objectStore(ROWS);
    for (const [id, record] of records) {
      if (record) rows.put(record, [key, id]);
      else rows.delete([key, id]);
    }
    tx.objectStore(KEYS).put({ used: Date.now() }, key);
    await done(tx);
  }

  /** Deletes the progress of settings last used before `before` (ms since 1970). */
  async prune(before) {
    const tx = this.db.transaction([ROWS, KEYS], 'readwrite');
    const keys = tx.objectStore(KEYS);
    const rows = tx.objectStore(ROWS);
    const all = await request(keys.getAllKeys());
    const used = await request(keys.getAll());
    all.forEach((key, i) => {
      if (!(used[i]?.used >= before)) {
        keys.delete(key);
        rows.delete(rowsOf(key));
      }
    });
    await done(tx);
  }
}
