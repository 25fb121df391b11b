import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ConfState } from "../../src/raft/types.ts";
import { GroupKeys } from "../../src/storage/keys.ts";
import { asBuffer, RawDb } from "../../src/storage/rocksdb-promises.ts";
import { CorruptionError, StorageEngine } from "../../src/storage/storage-engine.ts";
import { entries, makeTempDir, ready, removeDir } from "./helpers.ts";

const conf: ConfState = { voters: ["hs1"], votersOutgoing: [], learners: [], learnersNext: [] };
const bytes = (text: string): Uint8Array => new TextEncoder().encode(text);
const keys = new GroupKeys("chan");

let dir: string;

/** A store with group "chan": entries 1..6, a snapshot at 2 (log kept from 1), state machine data. */
beforeEach(async () => {
  dir = makeTempDir("corruption");
  const engine = await StorageEngine.open(dir);
  const group = await engine.openGroup("chan");
  await engine.persistReadies([{ group, ready: ready({ entries: entries(1, 6, 1, 100), hardState: { term: 1, vote: "hs1", commit: 6 } }) }]);
  await engine.apply([{ group, appliedIndex: 6, writes: [{ key: bytes("user/1"), value: bytes("alice") }] }]);
  await group.createSnapshot(2, conf, bytes("snapshot-data"), 1);
  await engine.openGroup("other");
  await engine.close();
});

afterEach(() => removeDir(dir));

/** Changes the stored value under `key` with `edit`, through a raw handle, as a bad disk would. */
async function tamper(key: Uint8Array, edit: (value: Buffer) => Buffer | undefined): Promise<void> {
  const raw = await RawDb.open(dir);
  try {
    const value = await raw.get(key);
    if (value === undefined) throw new Error("no record to tamper with");
    const edited = edit(Buffer.from(value));
    await raw.batch([edited === undefined ? { type: "del", key: asBuffer(key) } : { type: "put", key: asBuffer(key), value: edited }], true);
  } finally {
    await raw.close();
  }
}

function flipByte(offset: number): (value: Buffer) => Buffer {
  return (value) => {
    value[offset % value.length]! ^= 0x20;
    return value;
  };
}

async function openChan(): Promise<CorruptionError> {
  const engine = await StorageEngine.open(dir);
  try {
    await engine.openGroup("chan");
  } catch (error: unknown) {
    expect(error).toBeInstanceOf(CorruptionError);
    // The other group is intact and still loads: corruption is reported per group.
    await expect(engine.openGroup("other")).resolves.toBeDefined();
    return error as CorruptionError;
  } finally {
    await engine.close();
  }
  throw new Error("openGroup accepted a corrupted store");
}

describe("corruption detection", () => {
  it.each([
    ["log entry 4", keys.logEntry(4), 50, /group "chan" log entry 4 \(key 0x[0-9a-f]+\): checksum mismatch/],
    ["the checksum itself", keys.logEntry(5), 1, /group "chan" log entry 5 .*checksum mismatch/],
    ["hard state", keys.hardState, 5, /group "chan" hard state .*checksum mismatch/],
    ["snapshot metadata", keys.snapshotMetadata, 6, /group "chan" snapshot metadata .*checksum mismatch/],
    ["snapshot data", keys.snapshotData, 7, /group "chan" snapshot data .*checksum mismatch/],
    ["applied index", keys.appliedIndex, 4, /group "chan" applied index .*checksum mismatch/],
    ["state machine data", keys.stateMachine(bytes("user/1")), 6, /group "chan" state machine key 0x757365722f31 .*checksum mismatch/],
  ])("refuses to load when a byte of %s flips", async (_name, key, offset, message) => {
    await tamper(key, flipByte(offset));
    const error = await openChan();
    expect(error.message).toMatch(message);
    expect(error.message).toMatch(/Refusing to serve data from this store/);
  });

  it("detects a record moved to another key", async () => {
    const raw = await RawDb.open(dir);
    const value = (await raw.get(keys.logEntry(3)))!;
    await raw.batch([{ type: "put", key: asBuffer(keys.logEntry(4)), value }], true);
    await raw.close();
    expect((await openChan()).message).toMatch(/log entry 4 .*checksum mismatch/);
  });

  it("detects a log entry missing from the middle of the log", async () => {
    await tamper(keys.logEntry(4), () => undefined);
    expect((await openChan()).message).toMatch(/group "chan": log entry 4 is missing \(the log jumps to 5\)/);
  });

  it("detects a missing hard state record", async () => {
    await tamper(keys.hardState, () => undefined);
    expect((await openChan()).message).toMatch(/group "chan": its hard state record is missing/);
  });

  it("detects a truncated record", async () => {
    await tamper(keys.logStart, (value) => value.subarray(0, 2));
    expect((await openChan()).message).toMatch(/log start .*shorter than its checksum/);
  });

  it("checks state machine values on every read as well", async () => {
    const engine = await StorageEngine.open(dir);
    try {
      const group = await engine.openGroup("chan");
      expect(new TextDecoder().decode(await group.get(bytes("user/1")))).toBe("alice");
      // The disk goes bad after the group was loaded: write a bad record through the engine's own handle.
      const db = engine["db"];
      const key = keys.stateMachine(bytes("user/1"));
      const value = Buffer.from((await db.get(key))!);
      await db.batch([{ type: "put", key: asBuffer(key), value: flipByte(6)(value) }], true);
      await expect(group.get(bytes("user/1"))).rejects.toThrow(/group "chan" state machine key 0x757365722f31 .*checksum mismatch/);
      const scan = async (): Promise<void> => {
        for await (const _pair of group.scan(bytes("user/"))) void _pair;
      };
      await expect(scan()).rejects.toThrow(CorruptionError);
    } finally {
      await engine.close();
    }
  });
});
