/**
 * Promise wrappers over the callback API of the `rocksdb` package (a
 * leveldown-style binding), typed at this one boundary. Keys and values are
 * always Buffers: the binding turns anything else into a string.
 */
import { createRequire } from "node:module";

/** One operation of an atomic write batch. */
export type RawBatchOp = { type: "put"; key: Buffer; value: Buffer } | { type: "del"; key: Buffer };

type Callback<T = void> = (error: Error | undefined | null, value: T) => void;

interface LeveldownIterator {
  next(callback: (error: Error | undefined | null, key?: Buffer, value?: Buffer) => void): void;
  end(callback: (error: Error | undefined | null) => void): void;
}

interface Leveldown {
  open(options: { createIfMissing: boolean; errorIfExists: boolean }, callback: Callback): void;
  close(callback: Callback): void;
  get(key: Buffer, options: { asBuffer: true; fillCache: boolean }, callback: Callback<Buffer>): void;
  batch(ops: RawBatchOp[], options: { sync: boolean }, callback: Callback): void;
  iterator(options: {
    gte: Buffer;
    lt?: Buffer;
    limit: number;
    keys: boolean;
    values: boolean;
    keyAsBuffer: true;
    valueAsBuffer: boolean;
  }): LeveldownIterator;
  approximateSize(start: Buffer, end: Buffer, callback: Callback<number>): void;
}

const require = createRequire(import.meta.url);
const leveldown = require("rocksdb") as (location: string) => Leveldown;

/** A Uint8Array as a Buffer over the same memory (no copy). */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}

function settle<T>(resolve: (value: T) => void, reject: (error: Error) => void): Callback<T> {
  return (error, value) => (error ? reject(error) : resolve(value));
}

/** An open RocksDB database. Not safe to use after {@link close}. */
export class RawDb {
  private constructor(private readonly db: Leveldown, readonly location: string) {}

  /** Opens (creating if missing) the database in `location`, which must exist. */
  static async open(location: string): Promise<RawDb> {
    const db = leveldown(location);
    await new Promise<void>((resolve, reject) =>
      db.open({ createIfMissing: true, errorIfExists: false }, settle(resolve, reject)),
    );
    return new RawDb(db, location);
  }

  /** The value under `key`, or undefined when there is none. */
  get(key: Uint8Array): Promise<Buffer | undefined> {
    return new Promise((resolve, reject) =>
      this.db.get(asBuffer(key), { asBuffer: true, fillCache: true }, (error, value) => {
        if (error && /^NotFound/.test(error.message)) resolve(undefined);
        else if (error) reject(error);
        else resolve(value);
      }),
    );
  }

  /** Writes `ops` atomically; with `sync`, returns only once they are on disk (fsync of the WAL). */
  batch(ops: RawBatchOp[], sync: boolean): Promise<void> {
    if (ops.length === 0) return Promise.resolve();
    return new Promise((resolve, reject) => this.db.batch(ops, { sync }, settle(resolve, reject)));
  }

  /**
   * Key-value pairs with `gte <= key < lt` in key order, at most `limit` (-1: all).
   * Breaking out of the loop ends the underlying iterator.
   */
  async *iterate(gte: Uint8Array, lt: Uint8Array | undefined, limit = -1): AsyncGenerator<[Buffer, Buffer]> {
    const options = { gte: asBuffer(gte), limit, keys: true, values: true, keyAsBuffer: true, valueAsBuffer: true } as const;
    const iterator = this.db.iterator(lt === undefined ? options : { ...options, lt: asBuffer(lt) });
    try {
      for (;;) {
        const pair = await new Promise<[Buffer, Buffer] | undefined>((resolve, reject) =>
          iterator.next((error, key, value) => {
            if (error) reject(error);
            else resolve(key === undefined || value === undefined ? undefined : [key, value]);
          }),
        );
        if (pair === undefined) return;
        yield pair;
      }
    } finally {
      // Not awaited: ending only releases the iterator (RocksDB's close ends any still open), and
      // waiting for it would add a round trip to the thread pool to every read of a range.
      iterator.end(ignoreEndError);
    }
  }

  /** The keys with `gte <= key < lt` in key order, without reading their values. */
  async *keys(gte: Uint8Array, lt: Uint8Array | undefined): AsyncGenerator<Buffer> {
    const options = { gte: asBuffer(gte), limit: -1, keys: true, values: false, keyAsBuffer: true, valueAsBuffer: false } as const;
    const iterator = this.db.iterator(lt === undefined ? options : { ...options, lt: asBuffer(lt) });
    try {
      for (;;) {
        const key = await new Promise<Buffer | undefined>((resolve, reject) =>
          iterator.next((error, found) => {
            if (error) reject(error);
            else resolve(found);
          }),
        );
        if (key === undefined) return;
        yield key;
      }
    } finally {
      iterator.end(ignoreEndError);
    }
  }

  /** RocksDB's estimate of the bytes stored for keys in [start, end). */
  approximateSize(start: Uint8Array, end: Uint8Array): Promise<number> {
    return new Promise((resolve, reject) =>
      this.db.approximateSize(asBuffer(start), asBuffer(end), settle(resolve, reject)),
    );
  }

  close(): Promise<void> {
    return new Promise((resolve, reject) => this.db.close(settle(resolve, reject)));
  }
}

/** An error ending an iterator leaves nothing to undo: its reads were already answered. */
function ignoreEndError(): void {}
