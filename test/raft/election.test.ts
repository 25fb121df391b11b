import { describe, expect, it } from "vitest";
import { MemoryStorage } from "../../src/raft/memory-storage.ts";
import { ConfChangeType, MessageType, Role, message } from "../../src/raft/types.ts";
import { text, TestCluster, type TestNode } from "./harness.ts";

describe("leader election", () => {
  it("elects exactly one leader among three nodes by ticking", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.tickAll(40);
    expect(c.leaders()).toHaveLength(1);
    const leader = c.get(c.leaders()[0]!).node.status();
    for (const t of c.nodes.values()) expect(t.node.status().leader).toBe(leader.id);
    // PreVote: the successful pre-election does not burn a term (bootstrap is term 1).
    expect(leader.term).toBe(2);
  });

  it("a single voter elects itself at once", () => {
    const c = new TestCluster(["a"]);
    c.elect("a");
    expect(c.leaders()).toEqual(["a"]);
  });

  it("PreVote: an isolated node does not raise its term, and rejoining does not disrupt the leader", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    const term = c.get("a").node.status().term;
    c.isolate("c");
    c.tickAll(100);
    expect(c.get("c").node.status().term).toBe(term);
    c.heal();
    c.tickAll(30);
    expect(c.leaders()).toEqual(["a"]);
    expect(c.get("a").node.status().term).toBe(term);
  });

  it("without PreVote and CheckQuorum, a learner ahead in term tells the leader, which it cannot campaign to reach", () => {
    const c = new TestCluster(["a", "b", "c"], { preVote: false, checkQuorum: false });
    c.elect("a");
    c.add("d");
    c.get("a").node.proposeConfChange({ steps: [{ type: ConfChangeType.AddLearner, nodeId: "d" }], leaveJoint: false });
    c.stabilize();
    // d hears of a later term: a vote asked by a candidate since removed ("x", gone for good).
    const term = c.get("a").node.status().term;
    c.get("d").node.step(message({ type: MessageType.Vote, groupId: "g", from: "x", to: "d", term: term + 5, index: 1, logTerm: 1 }));
    c.stabilize();
    expect(c.get("d").node.status().term).toBe(term + 5);
    // Answering the leader's appends with its term, d makes the group move to a term it can follow.
    c.tickAll(60);
    c.get(c.leaders()[0]!).node.propose(text("after"));
    c.stabilize();
    expect(c.appliedText("d").at(-1)).toBe("after");
  });

  it("without PreVote an isolated node's term climbs (the problem PreVote solves)", () => {
    const c = new TestCluster(["a", "b", "c"], { preVote: false, checkQuorum: false });
    c.elect("a");
    c.isolate("c");
    c.tickAll(100);
    expect(c.get("c").node.status().term).toBeGreaterThan(c.get("a").node.status().term);
  });

  it("CheckQuorum: a leader cut off from the quorum steps down", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    c.isolate("a");
    c.tickAll(25);
    expect(c.get("a").node.status().role).not.toBe(Role.Leader);
    expect(c.leaders().filter((id) => id !== "a")).toHaveLength(1);
  });

  it("CheckQuorum lease: followers ignore a vote request while they hear from a leader", () => {
    const c = new TestCluster(["a", "b", "c"], { preVote: false });
    c.elect("a");
    const term = c.get("a").node.status().term;
    c.get("b").node.step(message({ type: MessageType.Vote, groupId: "g", from: "c", to: "b", term: term + 5, index: 100, logTerm: term + 4 }));
    expect(c.get("b").node.status().term).toBe(term);
  });

  it("refuses to vote for a candidate whose log is behind", () => {
    const c = new TestCluster(["a", "b", "c"], { checkQuorum: false });
    c.elect("a");
    c.isolate("c");
    c.get("a").node.propose(new Uint8Array([1]));
    c.stabilize();
    c.heal();
    // c has a shorter log: it cannot win, even with a higher term.
    c.filter = (m) => !(m.from === "a" && m.type !== MessageType.VoteResponse && m.type !== MessageType.PreVoteResponse);
    c.elect("c");
    expect(c.get("c").node.status().role).not.toBe(Role.Leader);
  });

  it("grants at most one vote per term, and the vote is in the hard state of the Ready that answers", () => {
    const c = new TestCluster(["a", "b", "c"], { preVote: false, checkQuorum: false });
    c.processReadies();
    const b = c.get("b").node;
    b.step(message({ type: MessageType.Vote, groupId: "g", from: "a", to: "b", term: 2, index: 1, logTerm: 1 }));
    b.step(message({ type: MessageType.Vote, groupId: "g", from: "c", to: "b", term: 2, index: 1, logTerm: 1 }));
    const ready = b.ready();
    const answers = ready.messages.filter((m) => m.type === MessageType.VoteResponse);
    expect(answers.map((m) => [m.to, m.reject])).toEqual([
      ["a", false],
      ["c", true],
    ]);
    expect(ready.hardState).toEqual({ term: 2, vote: "a", commit: 1 });
    expect(ready.mustSync).toBe(true);
  });

  it("a restarted node remembers its term and vote", () => {
    const c = new TestCluster(["a", "b", "c"], { preVote: false, checkQuorum: false });
    c.get("b").node.step(message({ type: MessageType.Vote, groupId: "g", from: "a", to: "b", term: 3, index: 1, logTerm: 1 }));
    c.processReadies();
    const b = c.restart("b");
    b.node.step(message({ type: MessageType.Vote, groupId: "g", from: "c", to: "b", term: 3, index: 1, logTerm: 1 }));
    const ready = b.node.ready();
    expect(ready.messages[0]).toMatchObject({ type: MessageType.VoteResponse, to: "c", reject: true });
    expect(b.node.status()).toMatchObject({ term: 3, vote: "a" });
  });

  it("ignores messages of another group, addressed to another node, or from itself", () => {
    const c = new TestCluster(["a", "b", "c"]);
    const b = c.get("b").node;
    b.step(message({ type: MessageType.Vote, groupId: "other", from: "a", to: "b", term: 9 }));
    b.step(message({ type: MessageType.Vote, groupId: "g", from: "a", to: "c", term: 9 }));
    b.step(message({ type: MessageType.Vote, groupId: "g", from: "b", to: "b", term: 9 }));
    c.processReadies();
    expect(b.status().term).toBe(1);
    expect(b.hasReady()).toBe(false);
  });
});

describe("forgetting a lost leader", () => {
  it("followers that lose the leader's connection elect a new leader within a few ticks", () => {
    const c = new TestCluster(["a", "b", "c"], { electionTimeoutTicks: 20, heartbeatTicks: 2 });
    c.elect("a");
    c.isolate("a");
    c.get("b").node.forgetLeader();
    c.get("c").node.forgetLeader();
    let ticks = 0;
    while (c.leaders().filter((id) => id !== "a").length === 0 && ticks < 40) {
      for (const id of ["b", "c"]) c.get(id).node.tick();
      c.stabilize();
      ticks++;
    }
    expect(c.leaders().filter((id) => id !== "a")).toHaveLength(1);
    expect(ticks).toBeLessThanOrEqual(6);
  });

  it("followers of a lost leader campaign one after another, so the vote is never split (100 seeds, 3 and 5 voters)", () => {
    for (const ids of [["a", "b", "c"], ["a", "b", "c", "d", "e"]]) {
      for (let seed = 1; seed <= 100; seed++) {
        const c = new TestCluster(ids, { electionTimeoutTicks: 20, heartbeatTicks: 2 }, seed);
        c.elect("a");
        const term = c.get("b").node.status().term;
        c.isolate("a");
        const followers = ids.slice(1);
        for (const id of followers) c.get(id).node.forgetLeader();
        let ticks = 0;
        while (c.leaders().filter((id) => id !== "a").length === 0 && ticks < 40) {
          for (const id of followers) c.get(id).node.tick();
          c.stabilize();
          ticks++;
        }
        const [leader] = c.leaders().filter((id) => id !== "a");
        expect(leader, `seed ${seed}, ${ids.length} voters`).toBeDefined();
        // One election, won at once: a split vote would have taken a second term and a whole timeout.
        expect(c.get(leader!).node.status().term, `seed ${seed}, ${ids.length} voters`).toBe(term + 1);
        expect(ticks, `seed ${seed}, ${ids.length} voters`).toBeLessThanOrEqual(1 + (ids.length - 1) * 2);
      }
    }
  });

  it("a follower that grants a pre-vote after losing the leader lets that candidate run instead of campaigning too", () => {
    const c = new TestCluster(["a", "b", "c"], { electionTimeoutTicks: 20, heartbeatTicks: 2 });
    c.elect("a");
    c.isolate("a");
    // c learns of the loss first and campaigns in its slot; b learns of it just before c's pre-vote arrives.
    c.get("c").node.forgetLeader();
    for (let i = 0; i < 10 && c.get("c").node.status().role !== Role.PreCandidate; i++) c.get("c").node.tick();
    expect(c.get("c").node.status().role).toBe(Role.PreCandidate);
    c.get("b").node.forgetLeader();
    // b's answers are held back, so the only thing that can keep b from campaigning is the grant itself.
    c.filter = (m) => m.from !== "b";
    c.stabilize();
    for (let i = 0; i < 5; i++) {
      c.get("b").node.tick();
      c.stabilize();
    }
    expect(c.get("b").node.status().role).toBe(Role.Follower);
  });

  it("pre-candidates that meet settle who runs: one election at once, never a split vote (3 and 5 voters)", () => {
    // Followers of a lost leader notice it at different moments, so their staggered campaigns can still
    // start together; here all of them start at the very same moment, the worst case.
    for (const ids of [["a", "b", "c"], ["a", "b", "c", "d", "e"]]) {
      const c = new TestCluster(ids, { electionTimeoutTicks: 20, heartbeatTicks: 2 });
      c.elect("a");
      const term = c.get("b").node.status().term;
      c.isolate("a");
      const followers = ids.slice(1);
      for (const id of followers) c.get(id).node.campaign();
      c.stabilize();
      // Equal logs: the lowest id runs; the others granted its pre-vote and stood down.
      expect(c.leaders().filter((id) => id !== "a"), `${ids.length} voters`).toEqual(["b"]);
      expect(c.get("b").node.status().term, `${ids.length} voters`).toBe(term + 1);
    }
  });

  it("between pre-candidates that meet, the better log runs whatever the ids", () => {
    const c = new TestCluster(["a", "b", "c"], { electionTimeoutTicks: 20, heartbeatTicks: 2 });
    c.elect("a");
    const term = c.get("b").node.status().term;
    // c takes one more entry than b before a is lost.
    c.filter = (m) => !(m.from === "a" && m.to === "b");
    c.get("a").node.propose(new TextEncoder().encode("only c has it"));
    c.stabilize();
    c.filter = () => true;
    c.isolate("a");
    c.get("b").node.campaign();
    c.get("c").node.campaign();
    c.stabilize();
    expect(c.leaders().filter((id) => id !== "a")).toEqual(["c"]);
    expect(c.get("c").node.status().term).toBe(term + 1);
  });

  it("does nothing on a node that has no leader or leads", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    c.get("a").node.forgetLeader();
    expect(c.leaders()).toEqual(["a"]);
  });
});

describe("a copy that knows no membership yet", () => {
  it("refuses votes and pre-votes until it learns one: its homeserver may be a wiped former voter", () => {
    const c = new TestCluster(["a", "b", "c"]);
    // "d" hosts the group empty, as a homeserver asked to host it does before its first snapshot.
    const d = c.add("d");
    for (const type of [MessageType.PreVote, MessageType.Vote]) {
      d.node.step(message({ type, groupId: "g", from: "b", to: "d", term: 9, index: 1, logTerm: 1 }));
    }
    const answers = d.node.ready().messages.filter((m) => m.type === MessageType.PreVoteResponse || m.type === MessageType.VoteResponse);
    d.node.advance();
    expect(answers.map((m) => [m.type, m.reject])).toEqual([
      [MessageType.PreVoteResponse, true],
      [MessageType.VoteResponse, true],
    ]);
    // A member (here without a leader) votes as before.
    c.get("c").node.step(message({ type: MessageType.PreVote, groupId: "g", from: "b", to: "c", term: 9, index: 99, logTerm: 9 }));
    expect(c.get("c").node.ready().messages.find((m) => m.type === MessageType.PreVoteResponse)?.reject).toBe(false);
  });
});

describe("a copy made anew catching up from the log", () => {
  const change = (type: ConfChangeType, nodeId: string) => ({ steps: [{ type, nodeId }], leaveJoint: false });

  /** What the homeserver asking for a copy names as its catch-up floor: its commit index and last term. */
  const floorOf = (t: TestNode) => ({ index: t.node.status().commit, term: t.node.status().lastTerm });

  /**
   * A group made with a alone (its first entry), then b and c added, writes, b leads. a loses its copy:
   * b removes it and adds it back; its new copy gets one entry per Append (the first makes a the only
   * voter), then is cut off.
   */
  function freshCopyOfTheFirstVoter(withFloor: boolean) {
    const c = new TestCluster(["a"], { maxMessageBytes: 1 });
    c.elect("a");
    const a = c.get("a");
    for (const id of ["b", "c"]) {
      c.add(id);
      a.node.proposeConfChange(change(ConfChangeType.AddLearner, id));
      c.stabilize();
      a.node.proposeConfChange(change(ConfChangeType.AddVoter, id));
      c.stabilize();
    }
    for (const w of ["w1", "w2", "w3"]) {
      a.node.propose(text(w));
      c.stabilize();
    }
    a.node.transferLeadership("b");
    c.stabilize();
    const b = c.get("b");
    c.isolate("a");
    b.node.proposeConfChange(change(ConfChangeType.RemoveNode, "a"));
    c.stabilize();
    const fresh = c.add("a", new MemoryStorage());
    const floor = floorOf(b);
    if (withFloor) fresh.node.raiseCatchUpFloor(floor);
    b.node.proposeConfChange(change(ConfChangeType.AddVoter, "a"));
    c.heal();
    for (let round = 0; round < 6; round++) {
      c.processReadies();
      c.deliver();
    }
    c.isolate("a");
    c.tickAll(60);
    return { c, fresh, b, floor };
  }

  it("without a catch-up floor, made from the group's first entry, it is the only voter and elects itself (the hazard)", () => {
    const { fresh, b } = freshCopyOfTheFirstVoter(false);
    expect(fresh.node.status().role).toBe(Role.Leader);
    const index = fresh.node.status().commit;
    expect(b.storage.term(index)).not.toBe(fresh.storage.term(index));
  });

  it("with its host's commit index and last term as its catch-up floor, it campaigns not and votes for no log behind the floor until it applied that far", () => {
    const { c, fresh, b, floor } = freshCopyOfTheFirstVoter(true);
    expect(fresh.node.status().role).toBe(Role.Follower);
    expect(fresh.node.catchingUp()).toBe(true);
    fresh.node.forgetLeader(); // so that the vote request is not ignored as disrupting a leader it hears
    // A candidate whose log is behind the floor (here: a member that missed a's removal) gets no vote.
    fresh.node.step(message({ type: MessageType.PreVote, groupId: "g", from: "c", to: "a", term: 99, index: floor.index - 1, logTerm: floor.term }));
    expect(fresh.node.ready().messages.find((m) => m.type === MessageType.PreVoteResponse)?.reject).toBe(true);
    fresh.node.advance();
    // Once caught up it is an ordinary voter.
    c.heal();
    c.tickAll(5);
    expect(fresh.node.catchingUp()).toBe(false);
    expect(fresh.node.status().applied).toBe(b.node.status().applied);
    expect(c.leaders()).toEqual(["b"]);
  });

  it("votes for a candidate whose log is past its floor: a voter of three re-added with a new copy does not stall the group when the leader fails", () => {
    const c = new TestCluster(["a", "b", "c"], { maxMessageBytes: 1 });
    c.elect("b");
    const b = c.get("b");
    for (let i = 0; i < 20; i++) {
      b.node.propose(text(`w${i}`));
      c.stabilize();
    }
    // a loses its copy: b removes it and adds it back as a voter at once; the new copy gets the first entries only.
    c.isolate("a");
    b.node.proposeConfChange(change(ConfChangeType.RemoveNode, "a"));
    c.stabilize();
    const fresh = c.add("a", new MemoryStorage());
    fresh.node.raiseCatchUpFloor(floorOf(b));
    b.node.proposeConfChange(change(ConfChangeType.AddVoter, "a"));
    c.heal();
    c.filter = (m) => !(m.to === "a" && m.type === MessageType.Append && m.entries.some((e) => e.index > 5));
    for (let round = 0; round < 30; round++) {
      c.processReadies();
      c.deliver();
    }
    expect(fresh.node.catchingUp()).toBe(true);
    expect([...fresh.node.confState().voters].sort()).toEqual(["a", "b", "c"]);
    // b fails for good: c, which holds everything b committed, is elected with a's vote.
    c.isolate("b");
    c.filter = () => true;
    c.tickAll(60);
    expect(c.leaders().filter((id) => id !== "b")).toEqual(["c"]);
    c.tickAll(5);
    expect(fresh.node.catchingUp()).toBe(false);
  });

  it("in a two-voter group whose leader lost its copy, votes for the other voter, which holds every committed entry", () => {
    const c = new TestCluster(["a", "b"]);
    c.elect("a");
    c.get("a").node.propose(text("committed by a and b"));
    c.stabilize();
    c.get("a").node.transferLeadership("b");
    c.stabilize();
    expect(c.leaders()).toEqual(["b"]);
    // b loses its copy; a, a follower that can be elected only with b's vote, asks b to host a new one.
    const fresh = c.add("b");
    fresh.node.raiseCatchUpFloor(floorOf(c.get("a")));
    expect(fresh.node.catchingUp()).toBe(true);
    c.tickAll(60);
    expect(c.leaders()).toEqual(["a"]);
    expect(c.appliedText("b")).toEqual(["committed by a and b"]);
  });
});

describe("a copy made anew starts in its catch-up floor's term", () => {
  it.each([
    ["opened with its floor, as a homeserver opens the copy it was asked to host", "opened"],
    ["given its floor after it was made", "raised"],
  ])("so a leader deposed before the copy was asked for, cut off with it alone, gets no acknowledgement and commits nothing of its own (%s)", (_how, path) => {
    // Without CheckQuorum a deposed leader keeps leading for good: the window the fence closes, made wide.
    const c = new TestCluster(["a", "b", "c"], { checkQuorum: false });
    c.elect("a");
    c.get("a").node.propose(text("w1"));
    c.stabilize();
    // a is cut off and appends an entry nobody else gets; b is elected and commits another one there.
    c.isolate("a");
    c.get("a").node.propose(text("a alone"));
    c.stabilize();
    c.elect("b");
    const b = c.get("b");
    b.node.propose(text("b's"));
    c.stabilize();
    expect(c.appliedText("b")).toEqual(["w1", "b's"]);
    // c loses its copy; b asks for a new one (its commit index and last term as the floor).
    const floor = { index: b.node.status().commit, term: b.node.status().lastTerm };
    const fresh = path === "opened" ? c.add("c", new MemoryStorage(), 7, 0, { catchUpFloor: floor }) : c.add("c", new MemoryStorage());
    if (path === "raised") fresh.node.raiseCatchUpFloor(floor);
    expect(fresh.node.status().term).toBe(floor.term);
    // Only a reaches the new copy. a still counts c as a voter and leads in its old term.
    c.heal();
    c.filter = (m) => (m.from === "a" && m.to === "c") || (m.from === "c" && m.to === "a");
    c.tickAll(30);
    expect(fresh.storage.lastIndex()).toBe(0);
    expect(c.appliedText("a")).not.toContain("a alone");
    // Told of the later term, a stepped down.
    expect(c.get("a").node.status().role).not.toBe(Role.Leader);
    expect(c.get("a").node.status().term).toBeGreaterThanOrEqual(floor.term);
  });

  it("also when opened with its floor, as a homeserver opens the copy it was asked to host, and stores that term", () => {
    const storage = new MemoryStorage();
    const fresh = new TestCluster(["b"], { catchUpFloor: { index: 4, term: 6 } }).add("x", storage);
    expect(fresh.node.status().term).toBe(6);
    const ready = fresh.node.ready();
    expect(ready.hardState).toMatchObject({ term: 6, vote: "" });
  });
});

describe("a voter whose storage was made anew from the bootstrap configuration", () => {
  const text = (s: string) => new TextEncoder().encode(s);

  /** a leads; "w" is committed by a and b while c is cut off; then b loses its storage and a goes down. */
  function bLosesItsDisk(holdVotes: boolean): TestCluster {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    c.isolate("c");
    c.get("a").node.propose(text("w"));
    c.stabilize();
    expect(c.appliedText("a")).toEqual(["w"]);
    const b = c.add("b", new MemoryStorage(["a", "b", "c"]));
    b.node.holdVotes(holdVotes);
    c.heal();
    c.isolate("a");
    c.tickAll(100);
    return c;
  }

  it("without holding its votes, elects a member that lacks a committed entry (the hazard)", () => {
    const c = bLosesItsDisk(false);
    expect(c.leaders()).toEqual(["c"]);
    const committed = c.get("a").applied.find((e) => new TextDecoder().decode(e.data) === "w")!;
    // a applied "w" as committed at this index; the new leader holds another entry there, and lacks "w".
    expect(c.get("c").storage.entries(committed.index, committed.index + 1, Infinity)[0]?.term).not.toBe(committed.term);
    expect(c.get("c").storage.entries(1, c.get("c").storage.lastIndex() + 1, Infinity).map((e) => new TextDecoder().decode(e.data))).not.toContain("w");
  });

  it("holding its votes, neither votes nor campaigns; a comes back, leads, and nothing is lost", () => {
    const c = bLosesItsDisk(true);
    expect(c.leaders()).toEqual([]);
    expect(c.get("b").node.status().vote).toBe("");
    expect(c.sent.filter((m) => m.from === "b" && (m.type === MessageType.PreVote || m.type === MessageType.Vote))).toEqual([]);
    c.heal();
    c.tickAll(60);
    expect(c.leaders()).toEqual(["a"]);
    for (const id of ["a", "b", "c"]) expect(c.appliedText(id)).toEqual(["w"]);
    // Caught up, it votes again.
    c.get("b").node.holdVotes(false);
    c.isolate("a");
    c.tickAll(100);
    expect(c.leaders()).toHaveLength(1);
    expect(c.leaders()[0]).not.toBe("a");
  });
});

describe("a node learning the group's term after losing its storage", () => {
  it("steps nothing until it adopts a term; then counts its vote there as cast and refuses older leaders", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    const d = c.add("d", new MemoryStorage(["a", "b", "c", "d"]));
    d.node.awaitTerm();
    c.stabilize(); // its bootstrap entry applied
    d.node.step(message({ type: MessageType.Vote, groupId: "g", from: "b", to: "d", term: 5, index: 1, logTerm: 1 }));
    d.node.step(message({ type: MessageType.Append, groupId: "g", from: "a", to: "d", term: 2, index: 1, logTerm: 1, commit: 1 }));
    expect(d.node.hasReady()).toBe(false);
    expect(d.node.status().term).toBe(1);

    d.node.adoptTerm(5);
    expect(d.node.status()).toMatchObject({ term: 5, vote: "d", role: Role.Follower });
    // Its vote in term 5 counts as cast: another candidate of term 5 is refused, one of term 6 is not.
    d.node.step(message({ type: MessageType.Vote, groupId: "g", from: "b", to: "d", term: 5, index: 9, logTerm: 5 }));
    d.node.step(message({ type: MessageType.Vote, groupId: "g", from: "c", to: "d", term: 6, index: 9, logTerm: 5 }));
    // A leader of an older term is answered with the newer one, not obeyed.
    d.node.step(message({ type: MessageType.Append, groupId: "g", from: "a", to: "d", term: 2, index: 1, logTerm: 1, commit: 1 }));
    const ready = d.node.ready();
    expect(ready.hardState).toMatchObject({ term: 6, vote: "c" });
    const answers = ready.messages.map((m) => [m.type, m.to, m.term, m.reject ?? false]);
    expect(answers).toContainEqual([MessageType.VoteResponse, "b", 5, true]);
    expect(answers).toContainEqual([MessageType.VoteResponse, "c", 6, false]);
    // Not obeyed: the answer carries the newer term (which deposes a), and nothing was appended.
    expect(answers.filter(([type]) => type === MessageType.AppendResponse)).toEqual([[MessageType.AppendResponse, "a", 6, false]]);
    expect(ready.entries).toEqual([]);
    expect(d.node.status()).toMatchObject({ term: 6, leader: "" });
    expect(d.node.storedCommitted()).toEqual({ index: 1, term: 1 });
  });

  it("keeps its vote when the term it adopts is its own and it already voted", () => {
    const c = new TestCluster(["a", "b", "c"]);
    c.elect("a");
    const b = c.get("b").node;
    const { term, vote } = b.status();
    b.adoptTerm(term);
    expect(b.status()).toMatchObject({ term, vote });
  });
});
