/**
 * The inbox store's in-memory tail and batched acks, over real RocksDB: reads and acks inside the tail
 * touch no iterator, those beyond it (the oldest entries of a long-offline device) scan RocksDB, and both
 * give what a freshly loaded store (scan only) gives; acks of many devices in one turn are one write.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { EntryKind } from "../../src/gen/epochd/inbox/v1/inbox_pb.ts";
import { inboxNamespace } from "../../src/inbox/inbox-keys.ts";
import { InboxStore, tailEntriesMax, type NewEntry } from "../../src/inbox/inbox-store.ts";
import { localWriter } from "../../src/inbox/local-write.ts";
import { StorageEngine, type GroupStore, type KvWrite } from "../../src/storage/storage-engine.ts";

const dirs: string[] = [];
const engines: StorageEngine[] = [];

afterEach(async () => {
  for (const engine of engines.splice(0)) await engine.close();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A store over `dir` that counts its RocksDB scans and local writes. */
async function open(dir: string) {
  const engine = await StorageEngine.open(dir, { sync: false });
  engines.push(engine);
  const group = await engine.openGroup("cluster", ["hs1"]);
  const counts = { scans: 0, writes: 0 };
  const write = localWriter(engine, group);
  const inbox = new InboxStore(
    {
      scan: (prefix, limit, from) => {
        counts.scans++;
        return group.scan(prefix, limit, from);
      },
      write: (writes) => {
        counts.writes++;
        return write(writes);
      },
    },
    { entriesMax: 10_000, bytesMax: 1 << 24, directBytesMax: 1024 },
  );
  await inbox.load();
  counts.scans = 0;
  return { engine, group, inbox, counts };
}

async function appendRound(engine: StorageEngine, group: GroupStore, inbox: InboxStore, entries: Array<[string, NewEntry]>): Promise<void> {
  const writes: KvWrite[] = [];
  for (const [deviceId, entry] of entries) inbox.append(deviceId, entry, writes);
  await engine.apply([{ group, appliedIndex: group.appliedIndex + 1, writes }]);
  inbox.markDurable();
}

const message = (channelId: string, sequence: number): NewEntry => ({
  kind: EntryKind.MESSAGE,
  channelId,
  channelSequence: BigInt(sequence),
  payload: new Uint8Array(20).fill(sequence % 256),
  messageId: `${channelId}#${sequence}`,
});

async function storedEntries(group: GroupStore): Promise<number> {
  let count = 0;
  for await (const _ of group.scan(Uint8Array.of(inboxNamespace, 0x65))) count++;
  return count;
}

describe("inbox store tail", () => {
  it("serves recent entries from memory and older ones from RocksDB, the same either way", async () => {
    const dir = mkdtempSync(join(tmpdir(), "epochd-inbox-tail-"));
    dirs.push(dir);
    const { engine, group, inbox, counts } = await open(dir);
    const total = tailEntriesMax + 64; // a multiple of the 20 per round
    for (let round = 0; round < total / 20; round++) {
      await appendRound(engine, group, inbox, Array.from({ length: 20 }, (_, i) => ["a@hs1", message("c1", round * 20 + i + 1)] as [string, NewEntry]));
    }
    // Recent entries: from memory.
    const recent = await inbox.read("a@hs1", BigInt(total - 10), 100);
    expect(recent.map((e) => e.sequence)).toEqual(Array.from({ length: 10 }, (_, i) => BigInt(total - 9 + i)));
    expect(counts.scans).toBe(0);
    // The oldest ones left the tail: from RocksDB.
    const oldest = await inbox.read("a@hs1", 0n, 30);
    expect(counts.scans).toBe(1);
    expect(oldest.map((e) => e.messageId)).toEqual(Array.from({ length: 30 }, (_, i) => `c1#${i + 1}`));
    // An ack of entries beyond the tail scans; one inside it does not; both delete for good.
    // (The tail holds the newest tailEntriesMax entries: 65 and up.)
    expect(await inbox.ack("a@hs1", 64n)).toMatchObject({ ackedSequence: 64n, entries: total - 64 });
    expect(counts.scans).toBe(2);
    expect(await inbox.ack("a@hs1", BigInt(total - 5))).toMatchObject({ ackedSequence: BigInt(total - 5), entries: 5 });
    expect(counts.scans).toBe(2);
    expect(await storedEntries(group)).toBe(5);
    // A reloaded store (no tail) reads the same entries and counts.
    await engine.close();
    engines.splice(engines.indexOf(engine), 1);
    const reopened = await open(dir);
    expect(reopened.inbox.position("a@hs1")).toEqual(inbox.position("a@hs1"));
    expect((await reopened.inbox.read("a@hs1", 0n, 100)).map((e) => e.messageId)).toEqual((await inbox.read("a@hs1", 0n, 100)).map((e) => e.messageId));
  });

  it("writes the acks of many devices in one turn as one batch", async () => {
    const dir = mkdtempSync(join(tmpdir(), "epochd-inbox-tail-"));
    dirs.push(dir);
    const { engine, group, inbox, counts } = await open(dir);
    const devices = Array.from({ length: 30 }, (_, i) => `d${i}@hs1`);
    for (let sequence = 1; sequence <= 4; sequence++) await appendRound(engine, group, inbox, devices.map((d) => [d, message("c1", sequence)] as [string, NewEntry]));
    expect(await storedEntries(group)).toBe(120);
    const positions = await Promise.all(devices.map((d, i) => inbox.ack(d, BigInt(1 + (i % 4)))));
    expect(counts.writes).toBe(1);
    expect(counts.scans).toBe(0);
    expect(positions.map((p) => p.ackedSequence)).toEqual(devices.map((_, i) => BigInt(1 + (i % 4))));
    expect(await storedEntries(group)).toBe(devices.reduce((n, _, i) => n + 3 - (i % 4), 0));
    // Acking again what is acked changes nothing and writes nothing.
    expect(await inbox.ack("d3@hs1", 2n)).toMatchObject({ ackedSequence: 4n, entries: 0 });
    expect(counts.writes).toBe(1);
  });
});
