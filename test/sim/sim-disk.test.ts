import { describe, expect, it } from "vitest";
import { encodeConfChange } from "../../src/raft/conf-change.ts";
import { MemoryStorage } from "../../src/raft/memory-storage.ts";
import { ConfChangeType, EntryType, type Entry } from "../../src/raft/types.ts";
import { copyStorage, SimDisk } from "../../src/sim/sim-disk.ts";

function entries(from: number, to: number, term: number): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++) out.push({ index: i, term, type: EntryType.Normal, data: new Uint8Array([i & 255]) });
  return out;
}

describe("SimDisk crash semantics", () => {
  it("keeps synced writes and loses unsynced ones on crash", () => {
    const disk = new SimDisk(["a", "b"]);
    disk.write(null, entries(2, 4, 2), { term: 2, vote: "a", commit: 1 }, true);
    disk.write(null, entries(5, 6, 2), { term: 3, vote: "b", commit: 1 }, false);
    expect(disk.live.lastIndex()).toBe(6);
    expect(disk.pendingWrites()).toBe(1);
    disk.crash();
    expect(disk.live.lastIndex()).toBe(4);
    expect(disk.live.getHardState()).toEqual({ term: 2, vote: "a", commit: 1 });
    expect(disk.pendingWrites()).toBe(0);
  });

  it("a synced write makes earlier unsynced writes durable too, like an fsync", () => {
    const disk = new SimDisk(["a"]);
    disk.write(null, [], { term: 1, vote: "", commit: 1 }, false);
    disk.write(null, entries(2, 3, 1), null, false);
    disk.write(null, [], { term: 2, vote: "a", commit: 1 }, true);
    disk.crash();
    expect(disk.live.lastIndex()).toBe(3);
    expect(disk.durableHardState().term).toBe(2);
  });

  it("saving the applied state flushes pending writes and survives a crash", () => {
    const disk = new SimDisk(["a"]);
    disk.write(null, entries(2, 5, 1), { term: 1, vote: "", commit: 5 }, false);
    disk.saveApplied({ index: 5, hash: 1234 });
    disk.crash();
    expect(disk.applied()).toEqual({ index: 5, hash: 1234 });
    expect(disk.live.lastIndex()).toBe(5);
  });

  it("after a crash the live log is a separate copy: new unsynced writes are lost again", () => {
    const disk = new SimDisk(["a"]);
    disk.crash();
    disk.write(null, entries(2, 2, 1), null, false);
    disk.crash();
    expect(disk.live.lastIndex()).toBe(1);
  });

  it("answers durable questions from the durable copy only", () => {
    const disk = new SimDisk(["a"]);
    disk.write(null, entries(2, 3, 2), null, true);
    disk.write(null, entries(4, 4, 3), null, false);
    expect(disk.durableLast()).toEqual({ index: 3, term: 2 });
    expect(disk.durableHolds(3, 2)).toBe(true);
    expect(disk.durableHolds(3, 3)).toBe(false);
    expect(disk.durableHolds(4, 3)).toBe(false);
  });

  it("snapshots and compaction are durable at once and survive a crash", () => {
    const disk = new SimDisk(["a"]);
    disk.write(null, entries(2, 10, 1), null, true);
    disk.snapshotAndCompact(8, { voters: ["a"], votersOutgoing: [], learners: [], learnersNext: [] }, new Uint8Array(12), 6);
    disk.crash();
    expect(disk.live.snapshot().metadata.index).toBe(8);
    expect(disk.live.firstIndex()).toBe(7);
    expect(disk.live.lastIndex()).toBe(10);
    expect(disk.durableHolds(5, 99)).toBe(true); // covered by the snapshot
  });
});

describe("copyStorage", () => {
  it("copies log, compaction point, snapshot and hard state", () => {
    const source = new MemoryStorage(["a", "b"]);
    source.append(entries(2, 12, 3));
    source.createSnapshot(9, { voters: ["a", "b"], votersOutgoing: [], learners: [], learnersNext: [] }, new Uint8Array([7]));
    source.compact(6);
    source.setHardState({ term: 3, vote: "b", commit: 11 });
    const copy = copyStorage(source);
    expect(copy.firstIndex()).toBe(source.firstIndex());
    expect(copy.lastIndex()).toBe(12);
    expect(copy.snapshot()).toEqual(source.snapshot());
    expect(copy.entries(7, 13, Infinity)).toEqual(source.entries(7, 13, Infinity));
    expect(copy.term(6)).toBe(3);
    expect(copy.getHardState()).toEqual({ term: 3, vote: "b", commit: 11 });
    copy.append(entries(13, 13, 4));
    expect(source.lastIndex()).toBe(12);
  });
});

describe("the membership a restart would campaign with", () => {
  const removeC: Entry = { index: 3, term: 2, type: EntryType.ConfChange, data: encodeConfChange({ steps: [{ type: ConfChangeType.RemoveNode, nodeId: "c" }], leaveJoint: false }) };

  it("includes the durable conf changes up to the durable commit index, which a restart applies before campaigning", () => {
    const disk = new SimDisk(["a", "b", "c"]);
    disk.write(null, [...entries(2, 2, 2), removeC, ...entries(4, 4, 2)], { term: 2, vote: "a", commit: 2 }, true);
    expect(disk.durableCampaignConf().voters).toEqual(["a", "b", "c"]);
    disk.write(null, [], { term: 2, vote: "a", commit: 3 }, false);
    expect(disk.durableCampaignConf().voters).toEqual(["a", "b", "c"]);
    disk.write(null, [], { term: 2, vote: "a", commit: 4 }, true);
    expect(disk.durableCampaignConf().voters).toEqual(["a", "b"]);
  });
});
