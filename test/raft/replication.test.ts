import { describe, expect, it } from "vitest";
import { MemoryStorage } from "../../src/raft/memory-storage.ts";
import { EntryType, MessageType, type Entry } from "../../src/raft/types.ts";
import { TestCluster, text } from "./harness.ts";

/** A member's storage: the bootstrap entry (index 1, term 1), then entries of the given terms. */
function storageWith(terms: number[], term: number): MemoryStorage {
  const storage = new MemoryStorage(["a", "b", "c"]);
  const log: Entry[] = terms.map((t, i) => ({ term: t, index: i + 2, type: EntryType.Normal, data: text(`t${t}i${i + 2}`) }));
  storage.append(log);
  storage.setHardState({ term, vote: "", commit: 1 });
  return storage;
}

describe("log replication", () => {
  it("replicates and applies proposals in order on every node", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    for (let i = 0; i < 20; i++) expect(c.get("a").node.propose(text(`p${i}`)).ok).toBe(true);
    c.stabilize();
    const expected = Array.from({ length: 20 }, (_, i) => `p${i}`);
    for (const id of ["a", "b", "c"]) expect(c.appliedText(id)).toEqual(expected);
  });

  it("answers a proposal on a follower with the leader's id", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    expect(c.get("b").node.propose(text("x"))).toEqual({ ok: false, reason: "not-leader", leader: "a" });
  });

  it("commits only by counting replicas of an entry of the leader's own term", () => {
    // After the bootstrap entry, a has an entry of term 1 at index 2 that b and c
    // lack. a leads term 2 and appends its empty entry at index 3. When b holds index 2 but not 3, a
    // majority holds index 2, yet it must not commit: it is of an older term.
    const c = new TestCluster([], { preVote: false, checkQuorum: false, maxMessageBytes: 1, maxInflightMessages: 1 });
    c.add("a", storageWith([1], 1));
    c.add("b", storageWith([], 1));
    c.add("c", storageWith([], 1));
    c.stabilize();
    // The first Append carrying index 3 reaches b (b lacks 2, so it rejects and
    // the leader backs up); later ones carrying index 3 are lost.
    let appendsOfThreeToB = 0;
    c.filter = (m) => {
      if (m.type !== MessageType.Append) return true;
      if (m.to === "c") return false;
      if (m.to === "b" && m.entries.some((e) => e.index === 3)) return ++appendsOfThreeToB === 1;
      return true;
    };
    c.elect("a");
    expect(c.leaders()).toEqual(["a"]);
    expect(c.get("a").node.status().progress.get("b")?.match).toBe(2);
    expect(c.get("a").node.status().commit).toBe(1);
    c.filter = () => true;
    c.tickAll(2);
    expect(c.get("a").node.status().commit).toBe(3);
  });

  it("fast backtracking skips a whole divergent term per round trip", () => {
    // b holds 50 entries of a stale term 2 after index 1; the leader's log has term 3 there.
    const c = new TestCluster([], { preVote: false, checkQuorum: false });
    const leaderLog = Array<number>(10).fill(3);
    c.add("a", storageWith(leaderLog, 3));
    c.add("b", storageWith(Array<number>(50).fill(2), 3));
    c.add("c", storageWith(leaderLog, 3));
    c.stabilize();
    c.elect("a");
    c.stabilize();
    const rejections = c.sent.filter((m) => m.type === MessageType.AppendResponse && m.from === "b" && m.reject);
    expect(rejections.length).toBeLessThanOrEqual(2);
    expect(c.get("b").storage.lastIndex()).toBe(12);
    expect(c.get("b").storage.term(12)).toBe(4);
  });

  it("limits entry bytes per Append and Appends in flight per follower", () => {
    const c = new TestCluster(["a", "b", "c"], { maxMessageBytes: 2 * (1024 + 24), maxInflightMessages: 3 });
    c.elect("a");
    c.cutLink("a", "c");
    c.sent.length = 0;
    const payload = new Uint8Array(1024);
    for (let i = 0; i < 30; i++) c.get("a").node.propose(payload);
    c.stabilize();
    const appends = c.sent.filter((m) => m.type === MessageType.Append && m.from === "a");
    for (const m of appends) {
      expect(m.entries.length).toBeLessThanOrEqual(2);
    }
    // c never answers: the leader stops after its in-flight limit.
    expect(appends.filter((m) => m.to === "c" && m.entries.length > 0).length).toBeLessThanOrEqual(3);
    expect(c.get("b").storage.lastIndex()).toBe(32);
    c.heal();
    c.tickAll(3);
    expect(c.get("c").storage.lastIndex()).toBe(32);
  });

  it("a follower discards an uncommitted conflicting suffix", () => {
    const c = new TestCluster(["a", "b", "c"], { checkQuorum: false });
    c.elect("a");
    c.isolate("a");
    c.get("a").node.propose(text("lost"));
    c.stabilize();
    c.elect("b");
    c.get("b").node.propose(text("kept"));
    c.stabilize();
    c.heal();
    c.tickAll(5);
    expect(c.leaders()).toEqual(["b"]);
    for (const id of ["a", "b", "c"]) expect(c.appliedText(id)).toEqual(["kept"]);
  });

  it("refuses proposals over the uncommitted byte limit", () => {
    const c = new TestCluster(["a", "b", "c"], { maxUncommittedBytes: 4096 });
    c.elect("a");
    c.isolate("a");
    const results = Array.from({ length: 10 }, () => c.get("a").node.propose(new Uint8Array(1024)));
    expect(results.filter((r) => r.ok).length).toBeLessThan(10);
    expect(results.some((r) => !r.ok && r.reason === "overloaded")).toBe(true);
  });
});

describe("the Append that only moves the commit index", () => {
  it("goes unanswered by a follower known to hold everything: per write, one answer less from each", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    const mark = c.sent.length;
    c.get("a").node.propose(text("w"));
    c.stabilize();
    const sent = c.sent.slice(mark);
    const appends = sent.filter((m) => m.type === MessageType.Append);
    expect(appends.filter((m) => m.entries.length > 0).map((m) => m.to).sort()).toEqual(["b", "c"]);
    expect(appends.filter((m) => m.entries.length === 0).map((m) => m.to).sort()).toEqual(["b", "c"]);
    expect(sent.filter((m) => m.type === MessageType.AppendResponse).map((m) => m.from).sort()).toEqual(["b", "c"]);
    for (const id of ["a", "b", "c"]) expect(c.appliedText(id)).toEqual(["w"]);
  });

  it("is answered by a follower that did not know it matched so far (restarted), and probes always are", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    c.get("a").node.propose(text("w"));
    c.stabilize();
    const commitOnly = c.sent.filter((m) => m.type === MessageType.Append && m.to === "b" && m.entries.length === 0).at(-1)!;
    const answersOf = (id: string) => {
      const ready = c.get(id).node.ready();
      c.get(id).node.advance();
      return ready.messages.filter((m) => m.type === MessageType.AppendResponse);
    };
    // The same message again to b as it is (b knows it matches): no answer. After a restart b knows nothing.
    c.get("b").node.step(commitOnly);
    expect(answersOf("b")).toEqual([]);
    c.restart("b");
    c.get("b").node.step(commitOnly);
    expect(answersOf("b").map((m) => [m.index, m.reject])).toEqual([[commitOnly.index, false]]);
    // A probe (an empty Append without the mark) is answered even by a follower that knows it matches.
    c.get("b").node.step({ ...commitOnly, context: new Uint8Array(0) });
    expect(answersOf("b").map((m) => [m.index, m.reject])).toEqual([[commitOnly.index, false]]);
  });

  it("is never a probe: a follower whose answer was lost gets an unmarked Append after a heartbeat, and answers it", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    // b's answer to the entry is lost: the leader commits with c, and must still learn that b holds it.
    c.filter = (m) => !(m.from === "b" && m.type === MessageType.AppendResponse);
    c.get("a").node.propose(text("w"));
    c.stabilize();
    c.filter = () => true;
    const lastIndex = c.get("a").node.status().lastIndex;
    expect(c.get("a").node.status().progress.get("b")!.match).toBeLessThan(lastIndex);
    c.tickAll(5);
    expect(c.get("a").node.status().progress.get("b")!.match).toBe(lastIndex);
  });
});

describe("proposal forwarding", () => {
  it("a follower forwards a proposal to the leader, which appends it", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    expect(c.get("b").node.proposeAnywhere(text("from b"))).toBe(true);
    c.stabilize();
    for (const id of ["a", "b", "c"]) expect(c.appliedText(id)).toEqual(["from b"]);
  });

  it("returns false with no leader to forward to", () => {
    const c = new TestCluster(["a", "b", "c"]);
    expect(c.get("b").node.proposeAnywhere(text("nowhere"))).toBe(false);
  });
});
