import { describe, expect, it } from "vitest";
import { MessageType, type Ready } from "../../src/raft/types.ts";
import { TestCluster, text } from "./harness.ts";

describe("log compaction and snapshots", () => {
  it("a follower far behind catches up from the leader's snapshot", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    c.isolate("c");
    for (let i = 0; i < 50; i++) c.get("a").node.propose(text(`e${i}`));
    c.stabilize();
    const a = c.get("a");
    const applied = a.node.status().applied;
    a.storage.createSnapshot(applied, a.node.confState(), text("state-at-" + applied));
    a.storage.compact(applied - 5);
    c.heal();
    c.tickAll(3);
    const snapshots = c.sent.filter((m) => m.type === MessageType.Snapshot && m.to === "c");
    expect(snapshots.length).toBeGreaterThan(0);
    const cs = c.get("c");
    expect(cs.storage.snapshot().metadata.index).toBeGreaterThanOrEqual(applied - 5);
    expect(cs.node.status().applied).toBe(a.node.status().applied);
    // Entries after the snapshot index arrive as usual.
    c.get("a").node.propose(text("after"));
    c.stabilize();
    expect(c.appliedText("c").at(-1)).toBe("after");
  });

  it("a snapshot older than what a follower has is not installed over newer entries", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    for (let i = 0; i < 10; i++) c.get("a").node.propose(text(`e${i}`));
    c.stabilize();
    const b = c.get("b");
    const before = b.storage.lastIndex();
    const a = c.get("a");
    const snap = a.storage.createSnapshot(5, a.node.confState(), text("s5"));
    const term = a.node.status().term;
    b.node.step({ type: MessageType.Snapshot, groupId: "g", from: "a", to: "b", term, logTerm: 0, index: 0, entries: [], commit: 0, reject: false, rejectHint: 0, rejectHintTerm: 0, snapshot: snap, context: new Uint8Array(0) });
    c.stabilize();
    expect(b.storage.lastIndex()).toBe(before);
    expect(b.storage.snapshot().metadata.index).toBe(0);
  });

  it("a restarted follower resumes from its snapshot and applied index", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    for (let i = 0; i < 10; i++) c.get("a").node.propose(text(`e${i}`));
    c.stabilize();
    const b = c.get("b");
    const appliedIndex = b.node.status().applied;
    b.storage.createSnapshot(appliedIndex, b.node.confState(), text("s"));
    b.storage.compact(appliedIndex);
    const restarted = c.restart("b");
    expect(restarted.node.status()).toMatchObject({ applied: appliedIndex, commit: appliedIndex });
    c.get("a").node.propose(text("next"));
    c.stabilize();
    expect(c.appliedText("b").at(-1)).toBe("next");
  });
});

describe("a follower that lost its storage", () => {
  it("is caught up again (by a snapshot) although the leader remembers it further ahead", async () => {
    const { MemoryStorage } = await import("../../src/raft/memory-storage.ts");
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    for (let i = 0; i < 30; i++) c.get("a").node.propose(text(`e${i}`));
    c.stabilize();
    const a = c.get("a");
    const applied = a.node.status().applied;
    a.storage.createSnapshot(applied, a.node.confState(), text("s"));
    a.storage.compact(applied - 2);
    // c's data directory is wiped: it restarts as a fresh initial member.
    const wiped = c.add("c", new MemoryStorage(["a", "b", "c"]), 5);
    wiped.applied = [];
    c.stabilize();
    c.get("a").node.propose(text("while wiped"));
    c.stabilize();
    c.tickAll(5);
    expect(c.sent.filter((m) => m.type === MessageType.Snapshot && m.to === "c").length).toBeGreaterThan(0);
    expect(wiped.node.status().applied).toBe(a.node.status().applied);
    c.get("a").node.propose(text("after wipe"));
    c.stabilize();
    expect(c.appliedText("c").at(-1)).toBe("after wipe");
    // Bounded traffic: no append/reject storm.
    expect(c.sent.length).toBeLessThan(500);
  });
});

describe("heartbeats commit only what matches the current leader", () => {
  it("a wiped follower holding a deposed leader's entries does not commit them on a heartbeat", async () => {
    const { MemoryStorage } = await import("../../src/raft/memory-storage.ts");
    const { EntryType, message } = await import("../../src/raft/types.ts");
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    for (let i = 0; i < 5; i++) c.get("a").node.propose(text(`good${i}`));
    c.stabilize();
    // c loses its disk and restarts at term 1; before it hears from a, a deposed
    // "leader" of term 1 hands it an entry that was never committed.
    const wiped = c.add("c", new MemoryStorage(["a", "b", "c"]), 5);
    wiped.applied = [];
    c.processReadies();
    wiped.node.step(message({ type: MessageType.Append, groupId: "g", from: "b", to: "c", term: 1, index: 1, logTerm: 1, commit: 1, entries: [{ term: 1, index: 2, type: EntryType.Normal, data: text("stale") }] }));
    c.processReadies();
    // a still believes c matches far ahead; its heartbeat must not commit "stale".
    c.get("a").node.tick();
    c.stabilize();
    c.tickAll(3);
    expect(c.appliedText("c")).not.toContain("stale");
    expect(c.appliedText("c")).toEqual(c.appliedText("a"));
  });
});

describe("a node that cannot apply for a while (restoring a snapshot it was handed)", () => {
  it("stores entries, answers its leader and wins a vote while applying nothing; what committed meanwhile is handed out once it applies again", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    c.withholding.add("b");
    c.isolate("c");
    for (let i = 0; i < 3; i++) c.get("a").node.propose(text(`w${i}`));
    c.stabilize();
    // a and b made the quorum, though b applied nothing.
    expect(c.appliedText("a").slice(-3)).toEqual(["w0", "w1", "w2"]);
    expect(c.appliedText("b")).not.toContain("w0");
    const b = c.get("b");
    expect(b.node.status().commit).toBe(c.get("a").node.status().commit);
    expect(b.node.hasReady({ withholdApply: true })).toBe(false);
    expect(b.node.hasReady()).toBe(true);
    // a is lost: b wins an election with c's vote (c's log is behind b's), still applying nothing.
    c.heal();
    c.isolate("a");
    for (let i = 0; i < 60 && b.node.status().role !== "leader"; i++) c.tickAll(1);
    expect(b.node.status().role).toBe("leader");
    expect(c.appliedText("b")).not.toContain("w0");
    c.withholding.delete("b");
    c.stabilize();
    expect(c.appliedText("b").filter((t) => t.startsWith("w"))).toEqual(["w0", "w1", "w2"]);
  });

  it("takes no Ready past a snapshot waiting to be installed, and a Ready carrying a snapshot hands out no committed entries", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    c.isolate("c");
    for (let i = 0; i < 20; i++) c.get("a").node.propose(text(`e${i}`));
    c.stabilize();
    const a = c.get("a");
    const applied = a.node.status().applied;
    a.storage.createSnapshot(applied, a.node.confState(), text("s"));
    a.storage.compact(applied);
    a.node.propose(text("just after"));
    c.stabilize();
    const [justAfter] = a.storage.entries(applied + 1, applied + 2, Number.MAX_SAFE_INTEGER);
    c.withholding.add("c");
    c.heal();
    c.tickAll(3);
    const cs = c.get("c");
    // The snapshot reached c, which may not take it while it withholds apply.
    expect(c.sent.some((m) => m.type === MessageType.Snapshot && m.to === "c")).toBe(true);
    expect(cs.node.hasReady({ withholdApply: true })).toBe(false);
    expect(cs.storage.snapshot().metadata.index).toBe(0);
    // The entry after the snapshot arrives, committed, before the snapshot's Ready is taken.
    const term = a.node.status().term;
    cs.node.step({ type: MessageType.Append, groupId: "g", from: "a", to: "c", term, logTerm: a.storage.term(applied), index: applied, entries: [justAfter!], commit: applied + 1, reject: false, rejectHint: 0, rejectHintTerm: 0, snapshot: null, context: new Uint8Array(0) });
    const readies: Ready[] = [];
    const ready = cs.node.ready.bind(cs.node);
    cs.node.ready = (options) => {
      const taken = ready(options);
      readies.push(taken);
      return taken;
    };
    c.withholding.delete("c");
    c.get("a").node.propose(text("after"));
    c.stabilize();
    expect(c.appliedText("c").at(-1)).toBe("after");
    const withSnapshot = readies.filter((r) => r.snapshot !== null);
    expect(withSnapshot.map((r) => r.snapshot!.metadata.index)).toEqual([applied]);
    expect(withSnapshot[0]!.committedEntries).toEqual([]);
    expect(c.appliedText("c").slice(-2)).toEqual(["just after", "after"]);
  });

  it("with campaigns held a node starts no election, by a caller or a leadership transfer, but still votes", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    const b = c.get("b");
    b.node.holdCampaigns(true);
    b.node.campaign();
    c.get("a").node.transferLeadership("b");
    c.stabilize();
    expect(c.leaders()).toEqual(["a"]);
    // a is lost: c is elected with b's vote.
    c.isolate("a");
    for (let i = 0; i < 60 && c.get("c").node.status().role !== "leader"; i++) c.tickAll(1);
    expect(c.get("c").node.status().role).toBe("leader");
    expect(b.node.status().role).toBe("follower");
    b.node.holdCampaigns(false);
    c.get("c").node.transferLeadership("b");
    c.stabilize();
    expect(b.node.status().role).toBe("leader");
  });
});
