/**
 * Snapshot data staged in RocksDB as it arrives: read back whole and checked,
 * refused when a staged chunk is damaged, deleted when aborted, restored or no
 * longer named; and a restore in many batches that a crash part-way leaves
 * to be done again.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { collectChunks, decodePairChunks, snapshotChunks } from "../../src/multiraft/pairs-snapshot.ts";
import type { ConfState } from "../../src/raft/types.ts";
import { EngineKind, KeySpace, prefixEnd } from "../../src/storage/keys.ts";
import { RawDb } from "../../src/storage/rocksdb-promises.ts";
import { restoreBatchBytes } from "../../src/storage/group-store.ts";
import { CorruptionError, parseStagedDescriptor, StorageEngine } from "../../src/storage/storage-engine.ts";
import { makeTempDir, ready, removeDir } from "./helpers.ts";

const conf: ConfState = { voters: ["hs1", "hs2"], votersOutgoing: [], learners: [], learnersNext: [] };
const bytes = (text: string): Uint8Array => new TextEncoder().encode(text);
const stagingPrefix = Uint8Array.of(KeySpace.Engine, EngineKind.StagedSnapshot);

let dir: string;
let engine: StorageEngine;

beforeEach(async () => {
  dir = makeTempDir("staging");
  engine = await StorageEngine.open(dir);
});

afterEach(async () => {
  await engine.close();
  removeDir(dir);
});

/** Closes and opens the engine again (which sweeps staged transfers no snapshot names). */
async function reopen(): Promise<void> {
  await engine.close();
  engine = await StorageEngine.open(dir);
}

/** Counts the staged records in the database as it is now (the engine is closed for it, and opened again after). */
async function stagedRecords(): Promise<number> {
  await engine.close();
  const db = await RawDb.open(dir);
  let count = 0;
  for await (const _ of db.iterate(stagingPrefix, prefixEnd(stagingPrefix))) count += 1;
  await db.close();
  engine = await StorageEngine.open(dir);
  return count;
}

async function stage(groupId: string, chunks: readonly Uint8Array[]): Promise<Uint8Array> {
  const staging = engine.stageSnapshot(groupId);
  for (const chunk of chunks) await staging.add(chunk);
  return staging.finish();
}

const someChunks = [new Uint8Array(1000).fill(1), new Uint8Array(0), new Uint8Array(70_000).fill(2), bytes("tail")];

describe("staged snapshots", () => {
  it("read back as they were staged, through a 32-byte descriptor", async () => {
    const descriptor = await stage("c1", someChunks);
    expect(descriptor.byteLength).toBe(32);
    expect(parseStagedDescriptor(descriptor)).toMatchObject({ chunks: 4, bytes: 71_004 });
    const read = await collectChunks(engine.snapshotChunks(descriptor));
    expect(Buffer.from(read).equals(Buffer.concat(someChunks))).toBe(true);
    // Data held whole is not a descriptor, and reads as itself.
    expect(parseStagedDescriptor(bytes("plain data"))).toBeUndefined();
    expect(await collectChunks(engine.snapshotChunks(bytes("plain data")))).toEqual(bytes("plain data"));
  });

  it("refuse a damaged or missing chunk with a CorruptionError", async () => {
    for (const damage of ["flip a bit", "drop a chunk"] as const) {
      const groupId = damage === "flip a bit" ? "c1" : "c2";
      const group = await engine.openGroup(groupId, ["hs1", "hs2"]);
      const descriptor = await stage(groupId, someChunks);
      // Named by the group's stored snapshot, so that the sweep at open keeps it.
      await engine.persistReadies([{ group, ready: ready({ snapshot: { metadata: { index: 10, term: 2, confState: conf }, data: descriptor }, hardState: { term: 2, vote: "", commit: 10 } }) }]);
      await engine.close();
      const db = await RawDb.open(dir);
      const transfer = parseStagedDescriptor(descriptor)!.transferId;
      const keys: Buffer[] = [];
      for await (const [key] of db.iterate(stagingPrefix, prefixEnd(stagingPrefix))) if (key.subarray(2, 10).toString("hex") === transfer) keys.push(key);
      if (damage === "flip a bit") {
        const value = Buffer.from((await db.get(keys[2]!))!);
        value[100] = value[100]! ^ 0x01;
        await db.batch([{ type: "put", key: keys[2]!, value }], true);
      } else {
        await db.batch([{ type: "del", key: keys[1]! }], true);
      }
      await db.close();
      engine = await StorageEngine.open(dir);
      await expect(collectChunks(engine.snapshotChunks(descriptor)), damage).rejects.toThrow(CorruptionError);
    }
  });

  it("are deleted when aborted, when discarded after a restore, and at open when no stored snapshot names them", async () => {
    const aborted = engine.stageSnapshot("c1");
    await aborted.add(new Uint8Array(5000));
    await aborted.abort();
    expect(await stagedRecords()).toBe(0);

    await stage("c1", someChunks);
    expect(await stagedRecords()).toBe(5);
    await reopen();
    expect(await stagedRecords()).toBe(0); // swept: no snapshot of c1 names it

    // Named by the group's stored snapshot (installed, not yet restored): kept across a restart.
    const group = await engine.openGroup("c1", ["hs1", "hs2"]);
    const named = await stage("c1", someChunks);
    await engine.persistReadies([{ group, ready: ready({ snapshot: { metadata: { index: 10, term: 2, confState: conf }, data: named }, hardState: { term: 2, vote: "", commit: 10 } }) }]);
    const cutOff = engine.stageSnapshot("c1");
    await cutOff.add(new Uint8Array(100)); // never finished: its transfer was cut off
    await reopen();
    expect(await stagedRecords()).toBe(5); // the named transfer's 4 chunks and header; the cut-off one swept
    const reopened = await engine.openGroup("c1");
    expect(Buffer.from(reopened.log.snapshot().data).equals(Buffer.from(named))).toBe(true);
    await engine.discardStagedSnapshot(named);
    expect(await stagedRecords()).toBe(0);
  });
});

describe("restoring a state machine from a stream of pairs", () => {
  it("writes a large state in several batches and keeps what `keep` names; the applied index moves only when the restore is recorded", async () => {
    const group = await engine.openGroup("c1", ["hs1"]);
    await engine.apply([{ group, appliedIndex: 3, writes: [{ key: bytes("old"), value: bytes("x") }, { key: bytes("local/1"), value: bytes("mine") }] }]);
    const value = new Uint8Array(64 * 1024).fill(9);
    const count = Math.ceil((3 * restoreBatchBytes) / value.byteLength);
    async function* pairs() {
      for (let i = 0; i < count; i++) yield [bytes(`k${String(i).padStart(5, "0")}`), value] as const;
    }
    const before = engine.stats().batches;
    await group.restoreStateMachine(pairs(), (key) => new TextDecoder().decode(key).startsWith("local/"));
    expect(engine.stats().batches - before).toBeGreaterThanOrEqual(3);
    expect(group.appliedIndex).toBe(3);
    await group.recordRestored(50);
    expect(group.appliedIndex).toBe(50);
    const keys: string[] = [];
    for await (const [key] of group.scan(new Uint8Array(0))) keys.push(new TextDecoder().decode(key));
    expect(keys).toHaveLength(count + 1);
    expect(keys).toContain("local/1");
    expect(keys).not.toContain("old");
  });

  it("left part-way (a crash) keeps the old applied index, and a second restore gives exactly the snapshot's state", async () => {
    const group = await engine.openGroup("c1", ["hs1"]);
    await engine.apply([{ group, appliedIndex: 3, writes: [{ key: bytes("old"), value: bytes("x") }] }]);
    const value = new Uint8Array(64 * 1024).fill(9);
    const count = Math.ceil((2 * restoreBatchBytes) / value.byteLength);
    async function* pairs(failAt?: number) {
      for (let i = 0; i < count; i++) {
        if (i === failAt) throw new Error("crash");
        yield [bytes(`k${String(i).padStart(5, "0")}`), value] as const;
      }
    }
    await expect(group.restoreStateMachine(pairs(count - 3))).rejects.toThrow("crash");
    await engine.close();
    engine = await StorageEngine.open(dir);
    const again = await engine.openGroup("c1");
    expect(again.appliedIndex).toBe(3); // so the driver restores again on start
    await again.restoreStateMachine(pairs());
    await again.recordRestored(50);
    let keys = 0;
    for await (const _ of again.scan(new Uint8Array(0))) keys += 1;
    expect(keys).toBe(count);
    expect(again.appliedIndex).toBe(50);
  });

  it("round-trips a group's state through snapshot chunks, staging and a restore into another group", async () => {
    const source = await engine.openGroup("a", ["hs1"]);
    const writes = Array.from({ length: 3000 }, (_, i) => ({ key: bytes(`key-${i}`), value: new Uint8Array(700).fill(i % 256) }));
    await engine.apply([{ group: source, appliedIndex: 9, writes }]);
    const staging = engine.stageSnapshot("b");
    for await (const chunk of snapshotChunks((prefix) => source.scan(prefix))) await staging.add(chunk);
    const descriptor = await staging.finish();
    const target = await engine.openGroup("b", ["hs1"]);
    await target.restoreStateMachine(decodePairChunks(engine.snapshotChunks(descriptor)));
    const read: Array<[Uint8Array, Uint8Array]> = [];
    for await (const pair of target.scan(new Uint8Array(0))) read.push(pair);
    const expected: Array<[Uint8Array, Uint8Array]> = [];
    for await (const pair of source.scan(new Uint8Array(0))) expected.push(pair);
    expect(read).toEqual(expected);
  });
});
