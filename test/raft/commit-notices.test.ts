/**
 * How followers learn a new commit index: by default in an empty Append the
 * leader sends at once; with `lazyCommitNotices`, in the next Append (which
 * carries it anyway) or at the leader's next tick, never later.
 */
import { describe, expect, it } from "vitest";
import { MessageType, type Message } from "../../src/raft/types.ts";
import { TestCluster, text } from "./harness.ts";

const config = { heartbeatTicks: 3, electionTimeoutTicks: 10 };

/** Appends without entries sent since `from` (an index into `c.sent`): commit notices. */
function emptyAppendsSince(c: TestCluster, from: number): Message[] {
  return c.sent.slice(from).filter((m) => m.type === MessageType.Append && m.entries.length === 0);
}

/** Three nodes told commits lazily, "a" leading, the followers told (at a tick) of the election's entry. */
function lazyCluster(): TestCluster {
  const c = new TestCluster(["a", "b", "c"], { ...config, lazyCommitNotices: true });
  c.elect("a");
  c.tickAll(1);
  return c;
}

describe("commit notices", () => {
  it("by default tell every follower a new commit index at once, in an empty Append", () => {
    const c = new TestCluster(["a", "b", "c"], config);
    c.elect("a");
    const mark = c.sent.length;
    c.get("a").node.propose(text("x"));
    c.stabilize();
    expect(emptyAppendsSince(c, mark).map((m) => m.to).sort()).toEqual(["b", "c"]);
    for (const id of ["a", "b", "c"]) expect(c.appliedText(id), id).toEqual(["x"]);
  });

  it("with lazyCommitNotices come with the next Append, or at the leader's next tick when none follows", () => {
    const c = lazyCluster();
    let mark = c.sent.length;
    c.get("a").node.propose(text("x"));
    c.stabilize();
    // Committed and applied on the leader; the followers store x but do not know it is committed.
    expect(c.appliedText("a")).toEqual(["x"]);
    for (const id of ["b", "c"]) expect(c.appliedText(id), id).toEqual([]);
    expect(emptyAppendsSince(c, mark)).toEqual([]);
    // The next entry's Append carries x's commit: each follower applies x as it stores y.
    c.get("a").node.propose(text("y"));
    c.stabilize();
    for (const id of ["b", "c"]) expect(c.appliedText(id), id).toEqual(["x"]);
    expect(emptyAppendsSince(c, mark)).toEqual([]);
    // Nothing follows: the next tick tells them (before any heartbeat is due).
    mark = c.sent.length;
    c.tickAll(1);
    expect(emptyAppendsSince(c, mark).map((m) => m.to).sort()).toEqual(["b", "c"]);
    for (const id of ["a", "b", "c"]) expect(c.appliedText(id), id).toEqual(["x", "y"]);
    // Told once: further ticks send no notice.
    mark = c.sent.length;
    c.tickAll(config.heartbeatTicks - 1);
    expect(emptyAppendsSince(c, mark)).toEqual([]);
  });

  it("with lazyCommitNotices, a tick tells only the followers no Append has told since the commit moved", () => {
    const c = lazyCluster();
    c.get("a").node.propose(text("x"));
    c.stabilize();
    // y's Append carries x's commit to both followers; their answers are lost, so y is not committed.
    c.filter = (m) => m.type !== MessageType.AppendResponse;
    c.get("a").node.propose(text("y"));
    c.stabilize();
    for (const id of ["b", "c"]) expect(c.appliedText(id), id).toEqual(["x"]);
    expect(c.get("a").node.commitNoticePending()).toBe(false); // nothing for a runtime's flush to send either
    const mark = c.sent.length;
    c.tickAll(1);
    expect(emptyAppendsSince(c, mark)).toEqual([]);
  });

  it("with lazyCommitNotices, flushCommitNotices tells the untold followers before the tick, once, and only on a leader", () => {
    const c = lazyCluster();
    c.get("a").node.propose(text("x"));
    c.stabilize();
    expect(c.get("a").node.commitNoticePending()).toBe(true);
    for (const id of ["b", "c"]) {
      expect(c.get(id).node.commitNoticePending(), id).toBe(false);
      c.get(id).node.flushCommitNotices(); // a follower has nothing to tell
    }
    let mark = c.sent.length;
    c.stabilize();
    expect(emptyAppendsSince(c, mark)).toEqual([]);
    c.get("a").node.flushCommitNotices();
    c.stabilize();
    expect(emptyAppendsSince(c, mark).map((m) => m.to).sort()).toEqual(["b", "c"]);
    for (const id of ["a", "b", "c"]) expect(c.appliedText(id), id).toEqual(["x"]);
    expect(c.get("a").node.commitNoticePending()).toBe(false);
    // Told: neither a second flush nor the tick sends another notice.
    mark = c.sent.length;
    c.get("a").node.flushCommitNotices();
    c.tickAll(1);
    expect(emptyAppendsSince(c, mark)).toEqual([]);
  });
});
