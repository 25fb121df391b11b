/**
 * The inbox queue logic over real RocksDB: order and sequence numbers, stable
 * ids, acks deleting for good, the per-device bound and its gap policy, and
 * recovery after reopening the database.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { EntryKind, GapReason } from "../../src/gen/epochd/inbox/v1/inbox_pb.ts";
import { inboxNamespace } from "../../src/inbox/inbox-keys.ts";
import type { InboxLimits } from "../../src/inbox/inbox-limits.ts";
import { InboxStore, type NewEntry } from "../../src/inbox/inbox-store.ts";
import { localWriter } from "../../src/inbox/local-write.ts";
import type { GroupStore, KvWrite } from "../../src/storage/storage-engine.ts";
import { StorageEngine } from "../../src/storage/storage-engine.ts";

const dirs: string[] = [];
const engines: StorageEngine[] = [];

afterEach(async () => {
  for (const engine of engines.splice(0)) await engine.close();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

const roomy: InboxLimits = { entriesMax: 1000, bytesMax: 1 << 20, directBytesMax: 1024 };

async function open(dir: string, limits: InboxLimits = roomy): Promise<{ engine: StorageEngine; group: GroupStore; inbox: InboxStore }> {
  const engine = await StorageEngine.open(dir, { sync: false });
  engines.push(engine);
  const group = await engine.openGroup("cluster", ["hs1"]);
  const inbox = new InboxStore({ scan: (p, l, f) => group.scan(p, l, f), write: localWriter(engine, group) }, limits);
  await inbox.load();
  return { engine, group, inbox };
}

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "epochd-inbox-"));
  dirs.push(dir);
  return dir;
}

/** One apply round: appends, written with the next applied index in one batch, then made visible. */
async function applyRound(engine: StorageEngine, group: GroupStore, inbox: InboxStore, append: (writes: KvWrite[]) => void): Promise<void> {
  const writes: KvWrite[] = [];
  append(writes);
  await engine.apply([{ group, appliedIndex: group.appliedIndex + 1, writes }]);
  inbox.markDurable();
}

const message = (channelId: string, sequence: number, bytes = 10): NewEntry => ({
  kind: EntryKind.MESSAGE,
  channelId,
  channelSequence: BigInt(sequence),
  payload: new Uint8Array(bytes).fill(sequence % 256),
  messageId: `${channelId}#${sequence}`,
});

async function inboxKeys(group: GroupStore): Promise<number> {
  let count = 0;
  for await (const _ of group.scan(Uint8Array.of(inboxNamespace, 0x65))) count++;
  return count;
}

describe("inbox store", () => {
  it("keeps each device's entries in append order with consecutive sequences, across a reopen", async () => {
    const dir = tempDir();
    const first = await open(dir);
    for (let round = 0; round < 5; round++) {
      await applyRound(first.engine, first.group, first.inbox, (writes) => {
        for (let i = 0; i < 4; i++) {
          const sequence = round * 4 + i + 1;
          first.inbox.append("a@hs1", message("c1", sequence), writes);
          if (sequence % 2 === 0) first.inbox.append("b@hs1", message("c2", sequence), writes);
        }
      });
    }
    const a = await first.inbox.read("a@hs1", 0n, 100);
    expect(a.map((e) => e.sequence)).toEqual(Array.from({ length: 20 }, (_, i) => BigInt(i + 1)));
    expect(a.map((e) => e.messageId)).toEqual(Array.from({ length: 20 }, (_, i) => `c1#${i + 1}`));
    expect((await first.inbox.read("b@hs1", 0n, 100)).map((e) => e.messageId)).toEqual([2, 4, 6, 8, 10, 12, 14, 16, 18, 20].map((n) => `c2#${n}`));
    expect((await first.inbox.read("a@hs1", 15n, 3)).map((e) => e.sequence)).toEqual([16n, 17n, 18n]);
    await first.engine.close();
    engines.length = 0;

    const second = await open(dir);
    expect(second.inbox.position("a@hs1")).toEqual(first.inbox.position("a@hs1"));
    expect((await second.inbox.read("a@hs1", 0n, 100)).map((e) => e.messageId)).toEqual(a.map((e) => e.messageId));
    await applyRound(second.engine, second.group, second.inbox, (writes) => second.inbox.append("a@hs1", message("c1", 21), writes));
    expect(second.inbox.position("a@hs1").lastSequence).toBe(21n);
  });

  it("shows appended entries to readers only once their batch is written", async () => {
    const { engine, group, inbox } = await open(tempDir());
    const writes: KvWrite[] = [];
    inbox.append("a@hs1", message("c1", 1), writes);
    expect(await inbox.read("a@hs1", 0n, 10)).toEqual([]);
    expect(inbox.position("a@hs1").lastSequence).toBe(0n);
    await engine.apply([{ group, appliedIndex: 1, writes }]);
    inbox.markDurable();
    expect((await inbox.read("a@hs1", 0n, 10)).length).toBe(1);
  });

  it("deletes acked entries from RocksDB, refuses acks beyond the end, and keeps sequences after a reopen", async () => {
    const dir = tempDir();
    const first = await open(dir);
    await applyRound(first.engine, first.group, first.inbox, (writes) => {
      for (let i = 1; i <= 10; i++) first.inbox.append("a@hs1", message("c1", i), writes);
    });
    await expect(first.inbox.ack("a@hs1", 11n)).rejects.toThrow(RangeError);
    const position = await first.inbox.ack("a@hs1", 6n);
    expect(position).toMatchObject({ lastSequence: 10n, ackedSequence: 6n, entries: 4 });
    expect(await inboxKeys(first.group)).toBe(4);
    expect((await first.inbox.read("a@hs1", 0n, 100)).map((e) => e.sequence)).toEqual([7n, 8n, 9n, 10n]);
    expect(await first.inbox.ack("a@hs1", 3n)).toMatchObject({ ackedSequence: 6n, entries: 4 });
    await first.inbox.ack("a@hs1", 10n);
    expect(await inboxKeys(first.group)).toBe(0);
    await first.engine.close();
    engines.length = 0;

    const second = await open(dir);
    expect(second.inbox.position("a@hs1")).toEqual({ lastSequence: 10n, ackedSequence: 10n, entries: 0, bytes: 0 });
    await applyRound(second.engine, second.group, second.inbox, (writes) => second.inbox.append("a@hs1", message("c1", 11), writes));
    expect((await second.inbox.read("a@hs1", 0n, 10)).map((e) => e.sequence)).toEqual([11n]);
  });

  it("refuses direct messages to a full inbox and replaces channel events by one gap marker per channel", async () => {
    const { engine, group, inbox } = await open(tempDir(), { entriesMax: 3, bytesMax: 1 << 20, directBytesMax: 1024 });
    const outcomes: unknown[] = [];
    await applyRound(engine, group, inbox, (writes) => {
      for (let i = 1; i <= 5; i++) outcomes.push(inbox.append("a@hs1", message("c1", i), writes));
      outcomes.push(inbox.append("a@hs1", message("c2", 1), writes));
      outcomes.push(inbox.append("a@hs1", { kind: EntryKind.DIRECT, payload: Uint8Array.of(1), messageId: "direct/x/01" }, writes));
    });
    expect(outcomes.map((o) => (o as { queued: boolean; reason?: string }).reason ?? "queued")).toEqual(["queued", "queued", "queued", "full", "covered-by-gap", "full", "full"]);
    const held = await inbox.read("a@hs1", 0n, 100);
    expect(held.map((e) => [e.kind, e.channelId])).toEqual([
      [EntryKind.MESSAGE, "c1"],
      [EntryKind.MESSAGE, "c1"],
      [EntryKind.MESSAGE, "c1"],
      [EntryKind.GAP, "c1"],
      [EntryKind.GAP, "c2"],
    ]);
    expect(held[3]!.gapReason).toBe(GapReason.INBOX_FULL);
    expect(inbox.hasRoom("a@hs1", 1)).toBe(false);
    await inbox.ack("a@hs1", 5n);
    await applyRound(engine, group, inbox, (writes) => outcomes.push(inbox.append("a@hs1", message("c1", 6), writes)));
    expect((await inbox.read("a@hs1", 0n, 100)).map((e) => e.messageId)).toEqual(["c1#6"]);
  });

  it("bounds bytes as well as entries", async () => {
    const { engine, group, inbox } = await open(tempDir(), { entriesMax: 100, bytesMax: 300, directBytesMax: 1024 });
    let queued = 0;
    await applyRound(engine, group, inbox, (writes) => {
      for (let i = 1; i <= 10; i++) if (inbox.append("a@hs1", { kind: EntryKind.DIRECT, payload: new Uint8Array(100), messageId: `d${i}` }, writes).queued) queued++;
    });
    expect(queued).toBe(2);
    expect(inbox.position("a@hs1").bytes).toBeLessThanOrEqual(300);
  });

  it("orders acks (local writes) with concurrent apply batches without losing either", async () => {
    const { engine, group, inbox } = await open(tempDir());
    await applyRound(engine, group, inbox, (writes) => {
      for (let i = 1; i <= 50; i++) inbox.append("a@hs1", message("c1", i), writes);
    });
    const work: Promise<unknown>[] = [];
    for (let round = 0; round < 20; round++) {
      const writes: KvWrite[] = [];
      inbox.append("a@hs1", message("c1", 51 + round), writes);
      work.push(engine.apply([{ group, appliedIndex: group.appliedIndex + 1 + round, writes }]));
      work.push(inbox.ack("a@hs1", BigInt(2 + round * 2)));
    }
    await Promise.all(work);
    inbox.markDurable();
    expect(inbox.position("a@hs1")).toMatchObject({ ackedSequence: 40n, lastSequence: 70n, entries: 30 });
    expect(await inboxKeys(group)).toBe(30);
  });
});
