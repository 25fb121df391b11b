import { describe, expect, it } from "vitest";
import { MessageType } from "../../src/raft/types.ts";
import { TestCluster, text } from "./harness.ts";

const quiet = { quiesce: true } as const;

/** Messages sent since `from` (an index into `c.sent`). */
function sentSince(c: TestCluster, from: number) {
  return c.sent.slice(from);
}

describe("quiescence", () => {
  it("an idle group goes quiet after one marked heartbeat: no messages on later ticks", () => {
    const c = new TestCluster(["a", "b", "c"], quiet);
    c.elect("a");
    c.get("a").node.propose(text("x"));
    c.stabilize();
    c.tickAll(1);
    for (const id of ["a", "b", "c"]) expect(c.get(id).node.isQuiesced(), id).toBe(true);
    const mark = c.sent.length;
    c.tickAll(50);
    expect(sentSince(c, mark)).toEqual([]);
    expect(c.leaders()).toEqual(["a"]);
  });

  it("is off by default: the leader keeps heartbeating", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    c.tickAll(3);
    expect(c.get("a").node.isQuiesced()).toBe(false);
    const mark = c.sent.length;
    c.tickAll(5);
    expect(sentSince(c, mark).filter((m) => m.type === MessageType.Heartbeat).length).toBeGreaterThanOrEqual(10);
  });

  it("does not go quiet while a follower lags; goes quiet once it caught up", () => {
    const c = new TestCluster(["a", "b", "c"], quiet);
    c.elect("a");
    c.isolate("c");
    c.get("a").node.propose(text("x"));
    c.stabilize();
    c.tickAll(5);
    expect(c.get("a").node.isQuiesced()).toBe(false);
    c.heal();
    c.tickAll(3);
    expect(c.get("a").node.isQuiesced()).toBe(true);
    expect(c.get("c").node.isQuiesced()).toBe(true);
    expect(c.appliedText("c")).toEqual(["x"]);
  });

  it("a proposal wakes the group and commits; then it goes quiet again", () => {
    const c = new TestCluster(["a", "b", "c"], quiet);
    c.elect("a");
    c.tickAll(2);
    expect(c.get("b").node.isQuiesced()).toBe(true);
    c.get("a").node.propose(text("y"));
    expect(c.get("a").node.isQuiesced()).toBe(false);
    c.stabilize();
    expect(c.appliedText("b")).toEqual(["y"]);
    c.tickAll(2);
    for (const id of ["a", "b", "c"]) expect(c.get(id).node.isQuiesced(), id).toBe(true);
  });

  it("a follower whose leader is lost wakes (forgetLeader) and the others elect a new leader", () => {
    const c = new TestCluster(["a", "b", "c"], quiet);
    c.elect("a");
    c.tickAll(2);
    c.isolate("a");
    // Without a wake-up the quiet followers would wait forever.
    c.tickAll(100);
    expect(c.leaders()).toEqual(["a"]);
    for (const id of ["b", "c"]) c.get(id).node.forgetLeader();
    c.tickAll(40);
    const leaders = c.leaders().filter((id) => id !== "a");
    expect(leaders).toHaveLength(1);
    c.get(leaders[0]!).node.propose(text("after"));
    c.stabilize();
    expect(c.appliedText(leaders[0] === "b" ? "c" : "b")).toEqual(["after"]);
  });

  it("a follower woken by another node wakes its leader, which heartbeats before any election", () => {
    const c = new TestCluster(["a", "b", "c"], quiet);
    c.elect("a");
    c.tickAll(2);
    const term = c.get("a").node.status().term;
    // c restarts (a fresh core over its disk: no leader known) and campaigns at once.
    c.restart("c");
    c.tickAll(40);
    expect(c.leaders()).toEqual(["a"]);
    expect(c.get("a").node.status().term).toBe(term);
    for (const id of ["a", "b", "c"]) expect(c.get(id).node.isQuiesced(), id).toBe(true);
  });

  it("a woken leader that lost its quorum steps down within an election timeout (CheckQuorum)", () => {
    const c = new TestCluster(["a", "b", "c"], quiet);
    c.elect("a");
    c.tickAll(2);
    c.isolate("a");
    c.get("a").node.propose(text("lost"));
    c.tickAll(25);
    expect(c.leaders()).toEqual([]);
  });

  it("a read or a transfer keeps the leader awake until done", () => {
    const c = new TestCluster(["a", "b", "c"], quiet);
    c.elect("a");
    c.tickAll(2);
    c.get("a").node.readIndex(text("r1"));
    expect(c.get("a").node.isQuiesced()).toBe(false);
    c.stabilize();
    expect(c.get("a").readStates.map((r) => new TextDecoder().decode(r.context))).toEqual(["r1"]);
    c.get("a").node.transferLeadership("b");
    c.stabilize();
    expect(c.leaders()).toEqual(["b"]);
    c.tickAll(3);
    for (const id of ["a", "b", "c"]) expect(c.get(id).node.isQuiesced(), id).toBe(true);
  });

  it("the reserved quiesce context is not accepted as a read", () => {
    const c = new TestCluster(["a", "b", "c"], quiet);
    c.elect("a");
    c.get("a").node.readIndex(text("quiesce"));
    c.stabilize();
    c.tickAll(2);
    expect(c.get("a").readStates).toEqual([]);
  });
});
