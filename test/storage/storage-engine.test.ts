import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MemoryStorage, SnapshotOutOfDateError } from "../../src/raft/memory-storage.ts";
import { EntryType, type ConfState } from "../../src/raft/types.ts";
import { encodeCounter } from "../../src/storage/codec.ts";
import { formatVersionKey } from "../../src/storage/keys.ts";
import { sealRecord, sealRecordInSlices, sealSliceBytes } from "../../src/storage/records.ts";
import { asBuffer, RawDb } from "../../src/storage/rocksdb-promises.ts";
import { StorageEngine, UnsupportedFormatError, type GroupStore } from "../../src/storage/storage-engine.ts";
import { dumpLog, entries, makeTempDir, ready, removeDir } from "./helpers.ts";

const conf: ConfState = { voters: ["hs1", "hs2", "hs3"], votersOutgoing: [], learners: [], learnersNext: [] };
const bytes = (text: string): Uint8Array => new TextEncoder().encode(text);
const text = (value: Uint8Array | undefined): string | undefined => (value === undefined ? undefined : new TextDecoder().decode(value));

let dir: string;
let engine: StorageEngine;

beforeEach(async () => {
  dir = makeTempDir("engine");
  engine = await StorageEngine.open(dir);
});

afterEach(async () => {
  await engine.close();
  removeDir(dir);
});

async function reopen(): Promise<void> {
  await engine.close();
  engine = await StorageEngine.open(dir);
}

async function collect(iterable: AsyncIterable<[Uint8Array, Uint8Array]>): Promise<[string, string][]> {
  const pairs: [string, string][] = [];
  for await (const [key, value] of iterable) pairs.push([text(key)!, text(value)!]);
  return pairs;
}

describe("StorageEngine", () => {
  it("creates a group with its bootstrap entry and recovers hard state, log and applied index", async () => {
    let group = await engine.openGroup("c1", conf.voters);
    const bootstrap = new MemoryStorage(conf.voters);
    expect(dumpLog(group.log)).toEqual(dumpLog(bootstrap));
    expect(group.log.entries(1, 2, 1000)[0]!.type).toBe(EntryType.ConfChange);
    await engine.persistReadies([{ group, ready: ready({ entries: entries(2, 5, 1), hardState: { term: 1, vote: "hs2", commit: 3 } }) }]);
    await engine.apply([{ group, appliedIndex: 3, writes: [{ key: bytes("a"), value: bytes("1") }, { key: bytes("b"), value: bytes("2") }] }]);
    await engine.apply([{ group, appliedIndex: 3, writes: [{ key: bytes("a"), delete: true }] }]);
    const before = dumpLog(group.log);
    await reopen();
    expect(await engine.listGroups()).toEqual(["c1"]);
    group = await engine.openGroup("c1", ["ignored"]);
    expect(dumpLog(group.log)).toEqual(before);
    expect(before).toMatchObject({ hardState: { term: 1, vote: "hs2", commit: 3 }, firstIndex: 1, lastIndex: 5 });
    expect(group.appliedIndex).toBe(3);
    expect(await group.get(bytes("a"))).toBeUndefined();
    expect(text(await group.get(bytes("b")))).toBe("2");
  });

  it("stores a round's entries and applies earlier ones in one synced batch, and recovers both", async () => {
    let group = await engine.openGroup("c1", conf.voters);
    const other = await engine.openGroup("c2", conf.voters);
    await engine.persistReadies([{ group, ready: ready({ entries: entries(2, 3, 1), hardState: { term: 1, vote: "hs2", commit: 3 } }) }]);
    const before = engine.stats();
    await engine.persistAndApply(
      [{ group, ready: ready({ entries: entries(4, 5, 1), hardState: { term: 1, vote: "hs2", commit: 5 } }) }],
      [{ group, appliedIndex: 3, writes: [{ key: bytes("a"), value: bytes("1") }] }],
      [{ group: other, writes: [{ key: bytes("q"), value: bytes("local") }] }],
    );
    expect(engine.stats()).toEqual({ batches: before.batches + 1, syncedBatches: before.syncedBatches + 1 });
    expect(group.appliedIndex).toBe(3);
    expect(group.log.lastIndex()).toBe(5);
    const stored = dumpLog(group.log);
    await reopen();
    group = await engine.openGroup("c1", ["ignored"]);
    expect(dumpLog(group.log)).toEqual(stored);
    expect(group.appliedIndex).toBe(3);
    expect(text(await group.get(bytes("a")))).toBe("1");
    expect(text(await (await engine.openGroup("c2", ["ignored"])).get(bytes("q")))).toBe("local");
  });

  it("creates a group without members for a homeserver added later", async () => {
    const group = await engine.openGroup("late");
    expect(dumpLog(group.log)).toEqual(dumpLog(new MemoryStorage()));
  });

  it("keeps a copy's catch-up floor in its registry record, raised only, across restarts and hibernation", async () => {
    const floor = (index: number, term: number) => ({ index, term });
    let group = await engine.openGroup("anew", [], floor(7, 2));
    expect(group.catchUpFloor).toEqual(floor(7, 2));
    const plain = await engine.openGroup("plain");
    expect(plain.catchUpFloor).toEqual(floor(0, 0));
    await reopen();
    group = await engine.openGroup("anew", [], floor(9, 1));
    expect(group.catchUpFloor).toEqual(floor(7, 2));
    await group.raiseCatchUpFloor(floor(9, 2));
    await group.raiseCatchUpFloor(floor(8, 2));
    engine.closeGroup(group);
    expect((await engine.reopenGroup("anew")).catchUpFloor).toEqual(floor(9, 2));
    await reopen();
    expect((await engine.openGroup("anew", [], floor(3, 4))).catchUpFloor).toEqual(floor(3, 4));
    expect((await engine.openGroup("plain")).catchUpFloor).toEqual(floor(0, 0));
    await reopen();
    expect((await engine.openGroup("anew")).catchUpFloor).toEqual(floor(3, 4));
    expect(await engine.listGroups()).toEqual(["anew", "plain"]);
  });

  it("replaces stored entries from the first new index on, on disk too", async () => {
    let group = await engine.openGroup("c1");
    await engine.persistReadies([{ group, ready: ready({ entries: entries(1, 6, 1) }) }]);
    await engine.persistReadies([{ group, ready: ready({ entries: entries(3, 4, 2), hardState: { term: 2, vote: "", commit: 2 } }) }]);
    expect(group.log.lastIndex()).toBe(4);
    await reopen();
    group = await engine.openGroup("c1");
    const dump = dumpLog(group.log);
    expect(dump.lastIndex).toBe(4);
    expect(dump.terms).toEqual([0, 1, 1, 2, 2]);
    expect(text(group.log.entries(4, 5, 1000)[0]!.data)).toBe("e4t2");
  });

  it("creates snapshots, compacts keeping entries for slow followers, and recovers both", async () => {
    let group = await engine.openGroup("c1");
    await engine.persistReadies([{ group, ready: ready({ entries: entries(1, 10, 1), hardState: { term: 1, vote: "", commit: 10 } }) }]);
    await engine.apply([{ group, appliedIndex: 10, writes: [] }]);
    const snapshot = await group.createSnapshot(8, conf, bytes("state@8"), 3);
    expect(snapshot.metadata).toEqual({ index: 8, term: 1, confState: conf });
    expect([group.log.firstIndex(), group.log.lastIndex(), group.log.term(5)]).toEqual([6, 10, 1]);
    await reopen();
    group = await engine.openGroup("c1");
    const dump = dumpLog(group.log);
    expect(dump).toMatchObject({ firstIndex: 6, lastIndex: 10, snapshot: { index: 8, term: 1 } });
    expect(text(group.log.snapshot().data)).toBe("state@8");
    await expect(group.createSnapshot(8, conf, bytes("again"))).rejects.toThrow(SnapshotOutOfDateError);
    await group.createSnapshot(10, conf, bytes("state@10"));
    expect([group.log.firstIndex(), group.log.lastIndex()]).toEqual([11, 10]);
    const compacted = dumpLog(group.log);
    await reopen();
    group = await engine.openGroup("c1");
    expect(dumpLog(group.log)).toEqual(compacted);
  });

  it("seals a large snapshot in slices, letting the event loop run, into the same record as in one piece", async () => {
    const key = bytes("some key");
    for (const length of [0, 1, sealSliceBytes - 1, sealSliceBytes, sealSliceBytes + 1, 3 * sealSliceBytes + 12_345]) {
      const payload = Uint8Array.from({ length }, (_, i) => (i * 131 + (i >> 9)) & 0xff);
      expect(Buffer.compare(await sealRecordInSlices(key, payload), sealRecord(key, payload))).toBe(0);
    }
    let group = await engine.openGroup("c1");
    await engine.persistReadies([{ group, ready: ready({ entries: entries(1, 4, 1), hardState: { term: 1, vote: "", commit: 4 } }) }]);
    await engine.apply([{ group, appliedIndex: 4, writes: [] }]);
    const data = Uint8Array.from({ length: 4 * sealSliceBytes + 7 }, (_, i) => (i * 7919) & 0xff);
    // Other work runs between the slices: a spinner on setImmediate gets a turn after each.
    let turns = 0;
    let sealing = true;
    const spin = (): void => {
      turns++;
      if (sealing) setImmediate(spin);
    };
    setImmediate(spin);
    const sealed = sealRecordInSlices(key, data).finally(() => (sealing = false));
    expect(turns).toBe(0);
    await sealed;
    expect(turns).toBeGreaterThanOrEqual(4);
    await group.createSnapshot(4, conf, data);
    await reopen();
    group = await engine.openGroup("c1");
    expect(Buffer.compare(group.log.snapshot().data, data)).toBe(0);
  });

  it("persists a leader's snapshot in place of the log and restores the state machine from it", async () => {
    let group = await engine.openGroup("c2");
    await engine.persistReadies([{ group, ready: ready({ entries: entries(1, 5, 1) }) }]);
    await engine.apply([{ group, appliedIndex: 2, writes: [{ key: bytes("old"), value: bytes("x") }] }]);
    const snapshot = { metadata: { index: 20, term: 3, confState: conf }, data: bytes("blob") };
    await engine.persistReadies([
      { group, ready: ready({ snapshot, entries: entries(21, 22, 3), hardState: { term: 3, vote: "", commit: 20 } }) },
    ]);
    // A crash here leaves appliedIndex behind the snapshot: the caller restores from log.snapshot().
    await reopen();
    group = await engine.openGroup("c2");
    expect(group.appliedIndex).toBe(2);
    expect(dumpLog(group.log)).toMatchObject({ firstIndex: 21, lastIndex: 22, terms: [3, 3, 3], snapshot: snapshot.metadata });
    await group.restoreStateMachine([[bytes("k1"), bytes("v1")], [bytes("k2"), bytes("v2")]]);
    // A crash here (the state written, not yet taken up) still leaves appliedIndex behind: restore again.
    await reopen();
    group = await engine.openGroup("c2");
    expect(group.appliedIndex).toBe(2);
    await group.restoreStateMachine([[bytes("k1"), bytes("v1")], [bytes("k2"), bytes("v2")]]);
    await group.recordRestored(20);
    await reopen();
    group = await engine.openGroup("c2");
    expect(group.appliedIndex).toBe(20);
    expect(await collect(group.scan(new Uint8Array(0)))).toEqual([["k1", "v1"], ["k2", "v2"]]);
  });

  it("scans a prefix in key order with a limit", async () => {
    const group = await engine.openGroup("c1");
    const writes = ["u/2", "u/1", "v/1", "u/3", "t/9"].map((key) => ({ key: bytes(key), value: bytes(key.toUpperCase()) }));
    await engine.apply([{ group, appliedIndex: 0, writes }]);
    expect(await collect(group.scan(bytes("u/")))).toEqual([["u/1", "U/1"], ["u/2", "U/2"], ["u/3", "U/3"]]);
    expect(await collect(group.scan(bytes("u/"), 2))).toEqual([["u/1", "U/1"], ["u/2", "U/2"]]);
  });

  it("writes many groups' Readies in one synced batch and reports its latency", async () => {
    await engine.close();
    const latenciesMs: number[] = [];
    engine = await StorageEngine.open(dir, { onSyncLatency: (ms) => latenciesMs.push(ms) });
    const groups: GroupStore[] = [];
    for (let i = 0; i < 20; i++) groups.push(await engine.openGroup(`g${String(i).padStart(2, "0")}`));
    const before = engine.stats();
    latenciesMs.length = 0;
    await engine.persistReadies(groups.map((group, i) => ({ group, ready: ready({ entries: entries(1, i + 1, 1), mustSync: i === 7 }) })));
    expect(engine.stats().syncedBatches - before.syncedBatches).toBe(1);
    expect(engine.stats().batches - before.batches).toBe(1);
    expect(latenciesMs).toHaveLength(1);
    await engine.persistReadies(groups.map((group) => ({ group, ready: ready({ hardState: { term: 1, vote: "", commit: 1 }, mustSync: false }) })));
    expect(engine.stats().syncedBatches - before.syncedBatches).toBe(1);
    await reopen();
    const ids = await engine.listGroups();
    expect(ids).toHaveLength(20);
    for (const [i, id] of ids.entries()) {
      const group = await engine.openGroup(id);
      expect([group.log.lastIndex(), group.log.initialState().hardState.commit]).toEqual([i + 1, 1]);
    }
  });

  it("keeps the order of apply calls that were not awaited one by one", async () => {
    const group = await engine.openGroup("c1");
    const pending: Promise<void>[] = [];
    for (let index = 1; index <= 50; index++) {
      pending.push(engine.apply([{ group, appliedIndex: index, writes: [{ key: bytes("last"), value: bytes(String(index)) }] }]));
    }
    await Promise.all(pending);
    await reopen();
    const reloaded = await engine.openGroup("c1");
    expect(reloaded.appliedIndex).toBe(50);
    expect(text(await reloaded.get(bytes("last")))).toBe("50");
  });

  it("drops a group with all its records, leaving the others", async () => {
    const a = await engine.openGroup("a");
    const b = await engine.openGroup("b");
    await engine.persistReadies([{ group: a, ready: ready({ entries: entries(1, 3, 1) }) }, { group: b, ready: ready({ entries: entries(1, 2, 1) }) }]);
    await engine.apply([{ group: a, appliedIndex: 1, writes: [{ key: bytes("k"), value: bytes("v") }] }]);
    await engine.dropGroup("a");
    await reopen();
    expect(await engine.listGroups()).toEqual(["b"]);
    const fresh = await engine.openGroup("a");
    expect([fresh.log.lastIndex(), fresh.appliedIndex, await fresh.get(bytes("k"))]).toEqual([0, 0, undefined]);
    expect((await engine.openGroup("b")).log.lastIndex()).toBe(2);
  });

  it("refuses a second engine on the same directory and a foreign format version", async () => {
    await expect(StorageEngine.open(dir)).rejects.toThrow(/lock/i);
    await engine.close();
    const raw = await RawDb.open(dir);
    await raw.batch([{ type: "put", key: asBuffer(formatVersionKey), value: sealRecord(formatVersionKey, encodeCounter(2)) }], true);
    await raw.close();
    await expect(StorageEngine.open(dir)).rejects.toThrow(UnsupportedFormatError);
    removeDir(dir);
    engine = await StorageEngine.open(dir);
  });

  it("refuses a group opened twice and a store used after close", async () => {
    const opening = engine.openGroup("c1");
    await expect(engine.openGroup("c1")).rejects.toThrow(/already open/);
    const group = await opening;
    await expect(engine.openGroup("c1")).rejects.toThrow(/already open/);
    await engine.close();
    await expect(group.get(bytes("k"))).rejects.toThrow(/closed/);
  });

  it("rejects a snapshot older than the stored one before writing anything", async () => {
    let group = await engine.openGroup("c1");
    const snapshot = (index: number): { metadata: { index: number; term: number; confState: ConfState }; data: Uint8Array } => ({
      metadata: { index, term: 2, confState: conf },
      data: bytes(`s${index}`),
    });
    await engine.persistReadies([{ group, ready: ready({ snapshot: snapshot(10), hardState: { term: 2, vote: "", commit: 10 } }) }]);
    const other = await engine.openGroup("c2");
    await expect(
      engine.persistReadies([
        { group: other, ready: ready({ entries: entries(1, 3, 1) }) },
        { group, ready: ready({ snapshot: snapshot(5) }) },
      ]),
    ).rejects.toThrow(SnapshotOutOfDateError);
    expect(other.log.lastIndex()).toBe(0);
    await reopen();
    group = await engine.openGroup("c1");
    expect([group.log.snapshot().metadata.index, (await engine.openGroup("c2")).log.lastIndex()]).toEqual([10, 0]);
  });

  it("reports an approximate size", async () => {
    const group = await engine.openGroup("c1");
    await engine.persistReadies([{ group, ready: ready({ entries: entries(1, 50, 1, 1024) }) }]);
    expect(await engine.approximateBytes()).toBeGreaterThanOrEqual(0);
  });
});
