/**
 * Snapshot data for state machines that keep all their state as key-value
 * pairs in their group's RocksDB key space: the pairs, each as key length
 * u32, value length u32, key, value (big-endian).
 */
import { setImmediate as eventLoopTurn } from "node:timers/promises";
import type { GroupStore } from "../storage/storage-engine.ts";

/** Bytes of pairs read between two turns of the event loop. */
const yieldEveryBytes = 1 << 20;

/**
 * Reads every pair of the group's state machine data into snapshot bytes. The
 * RocksDB iterator (a point-in-time view) is made synchronously by this call,
 * before its first await, so later writes do not leak into the snapshot.
 */
export async function snapshotPairs(store: Pick<GroupStore, "scan">): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  let sizeAtLastYield = 0;
  for await (const [key, value] of store.scan(new Uint8Array(0))) {
    // The iterator hands out buffered pairs as microtasks, which never let the event loop in:
    // without a turn every MiB, a 64 MiB state held up heartbeats for a good part of a second.
    if (size - sizeAtLastYield >= yieldEveryBytes) {
      sizeAtLastYield = size;
      await eventLoopTurn();
    }
    const header = new Uint8Array(8);
    const view = new DataView(header.buffer);
    view.setUint32(0, key.byteLength);
    view.setUint32(4, value.byteLength);
    chunks.push(header, key, value);
    size += 8 + key.byteLength + value.byteLength;
  }
  const out = new Uint8Array(size);
  let at = 0;
  let atLastYield = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.byteLength;
    if (at - atLastYield >= yieldEveryBytes) {
      atLastYield = at;
      await eventLoopTurn();
    }
  }
  return out;
}

/** Decodes snapshot bytes written by {@link snapshotPairs}; throws on malformed data. */
export function decodePairs(data: Uint8Array): Array<[Uint8Array, Uint8Array]> {
  const pairs: Array<[Uint8Array, Uint8Array]> = [];
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let at = 0;
  while (at < data.byteLength) {
    if (at + 8 > data.byteLength) throw new Error("truncated key-value snapshot");
    const keyLength = view.getUint32(at);
    const valueLength = view.getUint32(at + 4);
    at += 8;
    if (at + keyLength + valueLength > data.byteLength) throw new Error("truncated key-value snapshot");
    pairs.push([data.slice(at, at + keyLength), data.slice(at + keyLength, at + keyLength + valueLength)]);
    at += keyLength + valueLength;
  }
  return pairs;
}
