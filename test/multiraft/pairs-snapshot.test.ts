import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { collectChunks, decodePairChunks, MalformedPairsError, pairChunkBytes, snapshotChunks } from "../../src/multiraft/pairs-snapshot.ts";
import { StorageEngine } from "../../src/storage/storage-engine.ts";

const text = (s: string) => new TextEncoder().encode(s);

async function decodeAll(chunks: AsyncIterable<Uint8Array>): Promise<Array<[string, Uint8Array]>> {
  const pairs: Array<[string, Uint8Array]> = [];
  for await (const [key, value] of decodePairChunks(chunks)) pairs.push([new TextDecoder().decode(key), value]);
  return pairs;
}

async function* split(data: Uint8Array, sizes: readonly number[]): AsyncGenerator<Uint8Array> {
  let at = 0;
  for (let i = 0; at < data.byteLength; i++) {
    const size = sizes[i % sizes.length]!;
    yield data.subarray(at, at + size);
    at += size;
  }
}

describe("snapshot data of a key-value state machine", () => {
  const dir = mkdtempSync(join(tmpdir(), "epochd-pairs-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("is the state at the call, even when writes land while it is being read", async () => {
    const engine = await StorageEngine.open(join(dir, "at-call"), { sync: false });
    try {
      const group = await engine.openGroup("g", ["a"]);
      await engine.apply([{ group, appliedIndex: 1, writes: Array.from({ length: 500 }, (_, i) => ({ key: text(`k${i}`), value: text("before") })) }]);
      const snapshot = snapshotChunks((prefix) => group.scan(prefix));
      await engine.apply([{ group, appliedIndex: 1, writes: [{ key: text("k0"), value: text("after") }, { key: text("new"), value: text("after") }] }]);
      const pairs = await decodeAll(snapshot);
      expect(pairs).toHaveLength(500);
      expect(pairs.every(([, value]) => new TextDecoder().decode(value) === "before")).toBe(true);
    } finally {
      await engine.close();
    }
  });

  it("streams a state larger than one chunk in chunks of about pairChunkBytes, and decodes it whatever the chunk boundaries", async () => {
    const engine = await StorageEngine.open(join(dir, "large"), { sync: false });
    try {
      const group = await engine.openGroup("g", ["a"]);
      const value = new Uint8Array(10_000).fill(7);
      const count = 400; // about 4 MB: four chunks or so
      await engine.apply([{ group, appliedIndex: 1, writes: Array.from({ length: count }, (_, i) => ({ key: text(`k${String(i).padStart(4, "0")}`), value })) }]);
      const chunkSizes: number[] = [];
      const chunks: Uint8Array[] = [];
      for await (const chunk of snapshotChunks((prefix) => group.scan(prefix))) {
        chunkSizes.push(chunk.byteLength);
        chunks.push(chunk);
      }
      expect(chunkSizes.length).toBeGreaterThan(2);
      for (const size of chunkSizes.slice(0, -1)) expect(size).toBeLessThan(pairChunkBytes + 10_100);
      const whole = await collectChunks((async function* () { yield* chunks; })());
      // Odd boundaries, splitting headers, keys and values alike.
      for (const sizes of [[1], [3, 7, 11], [4096], [whole.byteLength]]) {
        const pairs = await decodeAll(split(whole, sizes.length === 1 && sizes[0] === 1 ? [977] : sizes));
        expect(pairs).toHaveLength(count);
        expect(pairs[count - 1]![0]).toBe(`k${String(count - 1).padStart(4, "0")}`);
        expect(pairs.every(([, v]) => v.byteLength === 10_000 && v[9_999] === 7)).toBe(true);
      }
    } finally {
      await engine.close();
    }
  });

  it("refuses data that ends inside a pair", async () => {
    const engine = await StorageEngine.open(join(dir, "truncated"), { sync: false });
    try {
      const group = await engine.openGroup("g", ["a"]);
      await engine.apply([{ group, appliedIndex: 1, writes: [{ key: text("a"), value: text("1") }, { key: text("b"), value: text("2") }] }]);
      const whole = await collectChunks(snapshotChunks((prefix) => group.scan(prefix)));
      await expect(decodeAll(split(whole.subarray(0, whole.byteLength - 1), [5]))).rejects.toThrow(MalformedPairsError);
    } finally {
      await engine.close();
    }
  });
});
