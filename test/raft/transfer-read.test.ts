import { describe, expect, it } from "vitest";
import type { RaftEvent } from "../../src/raft/raft.ts";
import { MessageType, Role } from "../../src/raft/types.ts";
import { TestCluster, text } from "./harness.ts";

describe("leadership transfer", () => {
  it("hands leadership to an up-to-date follower through TimeoutNow", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    const term = c.get("a").node.status().term;
    c.get("a").node.transferLeadership("b");
    c.stabilize();
    expect(c.sent.some((m) => m.type === MessageType.TimeoutNow && m.to === "b")).toBe(true);
    expect(c.leaders()).toEqual(["b"]);
    expect(c.get("b").node.status().term).toBe(term + 1);
  });

  it("catches the target up first, refusing proposals meanwhile", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    c.cutLink("a", "c");
    for (let i = 0; i < 5; i++) c.get("a").node.propose(text(`e${i}`));
    c.stabilize();
    c.get("a").node.transferLeadership("c");
    expect(c.get("a").node.propose(text("x"))).toMatchObject({ ok: false, reason: "leadership-transfer" });
    c.heal();
    c.tickAll(2);
    expect(c.leaders()).toEqual(["c"]);
    expect(c.appliedText("c")).toEqual(["e0", "e1", "e2", "e3", "e4"]);
  });

  it("a follower that stepped down to the new term without a leader reports the leader it then hears from", () => {
    const events: RaftEvent[] = [];
    const c = new TestCluster(["a", "b", "c"], { onEvent: (event) => events.push(event) });
    c.elect("a");
    const term = c.get("a").node.status().term;
    events.length = 0;
    c.get("a").node.transferLeadership("b");
    c.stabilize();
    expect(c.leaders()).toEqual(["b"]);
    // a and c step down on b's vote request (leader unknown), then learn b from its first append.
    const known = events.filter((e) => e.kind === "leader-known" || (e.kind === "became-follower" && e.leader !== ""));
    expect(known.map((e) => (e.kind === "leader-known" ? `${e.leader}@${e.term}` : ""))).toEqual([`b@${term + 1}`, `b@${term + 1}`]);
  });

  it("abandons a transfer that does not finish within an election timeout", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    c.isolate("c");
    c.get("a").node.transferLeadership("c");
    expect(c.get("a").node.propose(text("x")).ok).toBe(false);
    c.tickAll(12);
    expect(c.get("a").node.status().role).toBe(Role.Leader);
    expect(c.get("a").node.propose(text("y")).ok).toBe(true);
  });
});

describe("linearizable reads through ReadIndex", () => {
  it("the leader answers with its commit index after a quorum confirms it", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    c.get("a").node.propose(text("v1"));
    c.stabilize();
    c.get("a").node.readIndex(text("r1"));
    c.stabilize();
    const reads = c.get("a").readStates;
    expect(reads.map((r) => [r.index, new TextDecoder().decode(r.context)])).toEqual([[c.get("a").node.status().commit, "r1"]]);
  });

  it("a leader cut off from the quorum cannot answer a read", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    c.isolate("a");
    c.get("a").node.readIndex(text("r"));
    c.stabilize();
    expect(c.get("a").readStates).toHaveLength(0);
  });

  it("a follower's read is forwarded to the leader and answered", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    c.get("a").node.propose(text("v1"));
    c.stabilize();
    c.get("b").node.readIndex(text("rb"));
    c.stabilize();
    expect(c.get("b").readStates.map((r) => r.index)).toEqual([c.get("a").node.status().commit]);
  });
});
