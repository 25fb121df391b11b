/**
 * Snapshot data for state machines that keep all their state as key-value
 * pairs in their group's RocksDB key space: the pairs, each as key length
 * u32, value length u32, key, value (big-endian), streamed in chunks of about
 * {@link pairChunkBytes} so that neither the sender nor the receiver ever
 * holds the whole state in memory. A pair may span chunks.
 */
import { setImmediate as eventLoopTurn } from "node:timers/promises";
import type { GroupStore } from "../storage/storage-engine.ts";
import type { SnapshotChunks } from "./state-machine.ts";

/** About the bytes of one chunk of pairs (one is cut after the pair that reaches this size). */
export const pairChunkBytes = 1 << 20;

/** A source of state machine pairs in key order, as `GroupStore.scan` is. */
export type PairScan = Pick<GroupStore, "scan">["scan"];

/**
 * Streams every pair of the group's state machine data as snapshot chunks.
 * The RocksDB iterator (a point-in-time view) is made synchronously by this
 * call, so writes after it do not leak into the snapshot however slowly the
 * chunks are consumed.
 */
export function snapshotChunks(scan: PairScan): SnapshotChunks & AsyncIterator<Uint8Array> {
  const pairs = scan(new Uint8Array(0))[Symbol.asyncIterator]();
  // Starting the generator runs it up to its first await: the iterator exists from here on.
  const first = pairs.next();
  // Awaited only if the chunks are read; a transfer abandoned before that must not leave its failure unhandled.
  first.catch(() => undefined);
  const chunks = (async function* chunks(): AsyncGenerator<Uint8Array> {
    let parts: Uint8Array[] = [];
    let size = 0;
    for (let next = await first; next.done !== true; next = await pairs.next()) {
      const [key, value] = next.value;
      const header = new Uint8Array(8);
      const view = new DataView(header.buffer);
      view.setUint32(0, key.byteLength);
      view.setUint32(4, value.byteLength);
      parts.push(header, key, value);
      size += 8 + key.byteLength + value.byteLength;
      if (size >= pairChunkBytes) {
        yield concat(parts, size);
        parts = [];
        size = 0;
        // The iterator hands out buffered pairs as microtasks, which never let the event loop in.
        await eventLoopTurn();
      }
    }
    if (size > 0) yield concat(parts, size);
  })();
  // A consumer that stops early (a failed transfer), or never starts, must end the storage iterator.
  return {
    [Symbol.asyncIterator]() {
      return this;
    },
    next: () => chunks.next(),
    async return(): Promise<IteratorResult<Uint8Array>> {
      await pairs.return?.(undefined);
      return chunks.return(undefined);
    },
  };
}

function concat(parts: readonly Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.byteLength;
  }
  return out;
}

/** Thrown for snapshot data that is not a sequence of whole pairs. */
export class MalformedPairsError extends Error {
  constructor(reason: string) {
    super(`malformed key-value snapshot: ${reason}`);
    this.name = "MalformedPairsError";
  }
}

/**
 * Decodes the pairs of snapshot chunks written by {@link snapshotChunks},
 * whatever the chunk boundaries, holding at most one pair and one chunk at a
 * time. Throws {@link MalformedPairsError} on data that ends inside a pair.
 */
export async function* decodePairChunks(chunks: AsyncIterable<Uint8Array>): AsyncGenerator<[Uint8Array, Uint8Array]> {
  let rest: Uint8Array = new Uint8Array(0); // bytes after the last whole pair decoded
  const waiting: Uint8Array[] = []; // chunks that do not yet complete the next pair, joined only once they do
  let waitingBytes = 0;
  let nextPairBytes = 8; // the next pair needs at least this many bytes from the start of `rest`
  for await (const chunk of chunks) {
    waiting.push(chunk);
    waitingBytes += chunk.byteLength;
    if (rest.byteLength + waitingBytes < nextPairBytes) continue;
    const data = concat([rest, ...waiting], rest.byteLength + waitingBytes);
    waiting.length = 0;
    waitingBytes = 0;
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    let at = 0;
    for (;;) {
      if (data.byteLength - at < 8) {
        nextPairBytes = 8;
        break;
      }
      const keyLength = view.getUint32(at);
      const end = at + 8 + keyLength + view.getUint32(at + 4);
      if (end > data.byteLength) {
        nextPairBytes = end - at;
        break;
      }
      yield [data.slice(at + 8, at + 8 + keyLength), data.slice(at + 8 + keyLength, end)];
      at = end;
    }
    rest = data.subarray(at);
  }
  const left = rest.byteLength + waitingBytes;
  if (left > 0) throw new MalformedPairsError(`${left} bytes after the last whole pair`);
}

/** Reads snapshot chunks whole into one array: for tests and small states only. */
export async function collectChunks(chunks: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of chunks) {
    parts.push(chunk);
    size += chunk.byteLength;
  }
  return concat(parts, size);
}
