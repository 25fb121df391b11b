import { describe, expect, it } from "vitest";
import { MessageType } from "../../src/raft/types.ts";
import { TestCluster, text } from "./harness.ts";

const heartbeatTicks = 2;

/** Heartbeats the leader sent since `from` (an index into `c.sent`). */
function heartbeatsSince(c: TestCluster, from: number) {
  return c.sent.slice(from).filter((m) => m.type === MessageType.Heartbeat);
}

describe("heartbeats under load", () => {
  it("a leader replicating to a follower leaves out its plain heartbeats; an idle one heartbeats", () => {
    const c = new TestCluster(["a", "b", "c"], { heartbeatTicks, electionTimeoutTicks: 10 });
    c.elect("a");
    let mark = c.sent.length;
    // An entry before every tick: every follower got an Append since the last heartbeat tick.
    for (let tick = 0; tick < 5 * heartbeatTicks; tick++) {
      c.get("a").node.propose(text(`x${tick}`));
      c.tickAll(1);
    }
    expect(heartbeatsSince(c, mark)).toEqual([]);
    expect(c.leaders()).toEqual(["a"]);
    mark = c.sent.length;
    c.tickAll(3 * heartbeatTicks);
    // Three heartbeat intervals of idleness: three heartbeats each, less one for a follower whose last
    // Append (one with entries; an unanswered commit-only Append does not count) came in the first.
    const beats = heartbeatsSince(c, mark).map((m) => m.to);
    for (const id of ["b", "c"]) expect(beats.filter((to) => to === id).length, id).toBeGreaterThanOrEqual(2);
    expect(beats.length).toBeLessThanOrEqual(6);
  });

  it("still heartbeats a follower whose Appends are paused, and every follower when a read waits", () => {
    const c = new TestCluster(["a", "b", "c"], { heartbeatTicks, electionTimeoutTicks: 10, maxInflightMessages: 1 });
    c.elect("a");
    c.isolate("c");
    let mark = c.sent.length;
    for (let tick = 0; tick < 2 * heartbeatTicks; tick++) {
      c.get("a").node.propose(text(`x${tick}`));
      c.stabilize();
      c.tickAll(1);
    }
    // c (isolated: one Append unanswered fills its window, so it is paused) keeps getting heartbeats; b does not.
    expect(heartbeatsSince(c, mark).map((m) => m.to)).toEqual(["c", "c"]);
    c.heal();
    c.stabilize();
    mark = c.sent.length;
    c.get("a").node.propose(text("y"));
    c.get("a").node.readIndex(text("r1"));
    c.tickAll(heartbeatTicks);
    expect(heartbeatsSince(c, mark).filter((m) => m.context.byteLength > 0).map((m) => m.to).sort()).toEqual(["b", "c"]);
  });
});
