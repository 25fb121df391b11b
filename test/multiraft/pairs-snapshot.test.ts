import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { decodePairs, snapshotPairs } from "../../src/multiraft/pairs-snapshot.ts";
import { StorageEngine } from "../../src/storage/storage-engine.ts";

describe("snapshot data of a key-value state machine", () => {
  const dir = mkdtempSync(join(tmpdir(), "epochd-pairs-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("is the state at the call, even when writes land while it is being read", async () => {
    const engine = await StorageEngine.open(dir, { sync: false });
    try {
      const group = await engine.openGroup("g", ["a"]);
      const text = (s: string) => new TextEncoder().encode(s);
      await engine.apply([{ group, appliedIndex: 1, writes: Array.from({ length: 500 }, (_, i) => ({ key: text(`k${i}`), value: text("before") })) }]);
      const snapshot = snapshotPairs(group);
      await engine.apply([{ group, appliedIndex: 1, writes: [{ key: text("k0"), value: text("after") }, { key: text("new"), value: text("after") }] }]);
      const pairs = decodePairs(await snapshot);
      expect(pairs).toHaveLength(500);
      expect(pairs.every(([, value]) => new TextDecoder().decode(value) === "before")).toBe(true);
    } finally {
      await engine.close();
    }
  });
});
