/**
 * Model-based property: random sequences of Readies (appends that overwrite
 * the tail, leaders' snapshots), snapshot creation with compaction and
 * restarts, run against the engine and against a plain MemoryStorage. After
 * every step, and after every reload from disk, the LogStorage contract
 * (firstIndex, lastIndex, term from firstIndex - 1 on, entries, snapshot, hard
 * state) must read the same from both.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MemoryStorage } from "../../src/raft/memory-storage.ts";
import type { ConfState, HardState, Ready, Snapshot } from "../../src/raft/types.ts";
import { StorageEngine, type GroupStore } from "../../src/storage/storage-engine.ts";
import { dumpLog, entries, makeTempDir, propertySeed, ready, removeDir } from "./helpers.ts";

const conf: ConfState = { voters: ["hs1", "hs2"], votersOutgoing: [], learners: ["hs3"], learnersNext: [] };

type Op =
  | { kind: "append"; back: number; count: number; bumpTerm: boolean }
  | { kind: "leader-snapshot"; ahead: number; count: number }
  | { kind: "create-snapshot"; pick: number; keep: number }
  | { kind: "reopen" };

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant("append" as const), back: fc.nat(8), count: fc.integer({ min: 0, max: 5 }), bumpTerm: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("leader-snapshot" as const), ahead: fc.integer({ min: -3, max: 6 }), count: fc.nat(3) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("create-snapshot" as const), pick: fc.nat(), keep: fc.nat(4) }) },
  { weight: 1, arbitrary: fc.constant({ kind: "reopen" as const }) },
);

/** Turns an abstract op into a Ready (or a snapshot to create) relative to the model's current log. */
function plan(model: MemoryStorage, operation: Op, term: number): { ready?: Ready; create?: { index: number; keep: number } } {
  const first = model.firstIndex();
  const last = model.lastIndex();
  const hardState = (commitMax: number): HardState => ({ term, vote: "hs1", commit: Math.min(commitMax, model.getHardState().commit + 1) });
  switch (operation.kind) {
    case "append": {
      // Raft never replaces a committed entry; everything up to the snapshot is committed.
      const start = Math.max(1, last + 1 - operation.back, model.getHardState().commit + 1, model.snapshot().metadata.index + 1);
      const newLast = start + operation.count - 1;
      return { ready: ready({ entries: entries(start, newLast, term), hardState: hardState(Math.max(newLast, first - 1)) }) };
    }
    case "leader-snapshot": {
      const snapIndex = model.snapshot().metadata.index;
      const index = Math.max(snapIndex + 1, last + operation.ahead);
      const snapshot: Snapshot = { metadata: { index, term, confState: conf }, data: new TextEncoder().encode(`leader@${index}`) };
      const follow = entries(index + 1, index + operation.count, term);
      return { ready: ready({ snapshot, entries: follow, hardState: { term, vote: "", commit: index } }) };
    }
    case "create-snapshot": {
      // The application snapshots what it applied, which is committed.
      const snapIndex = model.snapshot().metadata.index;
      const commit = model.getHardState().commit;
      if (commit <= snapIndex) return {};
      return { create: { index: snapIndex + 1 + (operation.pick % (commit - snapIndex)), keep: operation.keep } };
    }
    case "reopen":
      return {};
  }
}

describe("LogStorage contract across reloads", () => {
  it("matches an in-memory model after every step and every restart", async () => {
    const seed = propertySeed("log contract model");
    const dir = makeTempDir("model");
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 30 }), async (ops) => {
          removeDir(dir);
          let engine = await StorageEngine.open(dir, { sync: false });
          let group: GroupStore = await engine.openGroup("model", conf.voters);
          const model = new MemoryStorage(conf.voters);
          let term = 1;
          try {
            for (const operation of ops) {
              if (operation.kind === "append" && operation.bumpTerm) term++;
              if (operation.kind === "reopen") {
                await engine.close();
                engine = await StorageEngine.open(dir, { sync: false });
                group = await engine.openGroup("model");
              }
              const { ready: next, create } = plan(model, operation, term);
              if (next !== undefined) {
                await engine.persistReadies([{ group, ready: next }]);
                if (next.snapshot !== null) model.applySnapshot(next.snapshot);
                model.append(next.entries);
                if (next.hardState !== null) model.setHardState(next.hardState);
              }
              if (create !== undefined) {
                const data = new TextEncoder().encode(`app@${create.index}`);
                await group.createSnapshot(create.index, conf, data, create.keep);
                model.createSnapshot(create.index, conf, data);
                model.compact(create.index - create.keep);
              }
              expect(dumpLog(group.log)).toEqual(dumpLog(model));
            }
            await engine.close();
            engine = await StorageEngine.open(dir, { sync: false });
            expect(dumpLog((await engine.openGroup("model")).log)).toEqual(dumpLog(model));
          } finally {
            await engine.close();
          }
        }),
        { seed, numRuns: 40 },
      );
    } finally {
      removeDir(dir);
    }
  });
});
