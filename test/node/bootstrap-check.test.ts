import { describe, expect, it } from "vitest";
import { bootstrapLog, MemoryStorage } from "../../src/raft/memory-storage.ts";
import { MessageType } from "../../src/raft/types.ts";
import { TestCluster } from "../raft/harness.ts";
import {
  answersNeeded,
  bootstrapAnswerOf,
  bootstrapVerdict,
  decodeBootstrapAnswer,
  encodeBootstrapAnswer,
  isAtBootstrapState,
  leaderAnswered,
  mayVoteAgain,
  type BootstrapAnswer,
} from "../../src/node/bootstrap-check.ts";

const three = ["hs1", "hs2", "hs3"];
const five = ["hs1", "hs2", "hs3", "hs4", "hs5"];

function answer(commit: number, lastIndex: number, term: number, voters = three, votersOutgoing: string[] = []): BootstrapAnswer {
  return { commit, lastIndex, term, voters, votersOutgoing, addresses: {} };
}

describe("bootstrap check", () => {
  it("needs answers from enough voters to meet every quorum containing the asker", () => {
    expect([1, 2, 3, 4, 5, 6, 7].map(answersNeeded)).toEqual([1, 1, 2, 2, 3, 3, 4]);
  });

  it("waits for the other initial voters before any answer, and for a quorum-meeting set after", () => {
    expect(bootstrapVerdict("hs1", ["hs2", "hs3"], new Map())).toEqual({ kind: "waiting", missing: ["hs2", "hs3"] });
    expect(bootstrapVerdict("hs1", ["hs2", "hs3"], new Map([["hs3", answer(1, 1, 1)]]))).toEqual({ kind: "waiting", missing: ["hs2"] });
    // Five voters: three of the four others.
    const two = new Map([["hs2", answer(40, 41, 6, five)], ["hs3", answer(40, 40, 6, five)]]);
    expect(bootstrapVerdict("hs1", ["hs2", "hs3", "hs4", "hs5"], two)).toEqual({ kind: "waiting", missing: ["hs4", "hs5"] });
    expect(bootstrapVerdict("hs1", ["hs2", "hs3", "hs4", "hs5"], new Map([...two, ["hs5", answer(12, 12, 4, five)]]))).toEqual({ kind: "ran", term: 6 });
  });

  it("calls the cluster new only when nothing past the bootstrap entry exists and no election happened", () => {
    expect(bootstrapVerdict("hs1", ["hs2", "hs3"], new Map([["hs2", answer(1, 1, 1)], ["hs3", answer(1, 1, 1)]]))).toEqual({ kind: "new", term: 1 });
    // An election happened: an answerer may not yet hold what its leader committed with the lost acknowledgement.
    expect(bootstrapVerdict("hs1", ["hs2", "hs3"], new Map([["hs2", answer(1, 1, 1)], ["hs3", answer(1, 1, 3)]]))).toEqual({ kind: "ran", term: 3 });
  });

  it("calls it one that ran when an answer holds an entry past the bootstrap entry, even one nobody knows committed", () => {
    expect(bootstrapVerdict("hs1", ["hs2", "hs3"], new Map([["hs2", answer(1, 2, 1)], ["hs3", answer(1, 1, 1)]]))).toEqual({ kind: "ran", term: 1 });
    expect(bootstrapVerdict("hs1", ["hs2", "hs3"], new Map([["hs2", answer(9, 9, 4)], ["hs3", answer(1, 1, 7)]]))).toEqual({ kind: "ran", term: 7 });
  });

  it("counts in the configuration of the most advanced answer, both halves of a joint one", () => {
    // The voters moved on from the initial ones: hs4 and hs5 answer for the new configuration.
    const now = ["hs1", "hs4", "hs5"];
    const answers = new Map([["hs4", answer(50, 50, 9, now)], ["hs2", answer(20, 20, 5)]]);
    expect(bootstrapVerdict("hs1", ["hs2", "hs3"], answers)).toEqual({ kind: "waiting", missing: ["hs5"] });
    expect(bootstrapVerdict("hs1", ["hs2", "hs3"], new Map([...answers, ["hs5", answer(50, 51, 9, now)]]))).toEqual({ kind: "ran", term: 9 });
    // Joint: the outgoing half needs its own answers too.
    const joint = new Map([["hs4", answer(50, 50, 9, now, three)], ["hs5", answer(50, 50, 9, now, three)]]);
    expect(bootstrapVerdict("hs1", ["hs2", "hs3"], joint)).toEqual({ kind: "waiting", missing: ["hs2", "hs3"] });
    // A homeserver no longer among the voters needs one answer.
    expect(bootstrapVerdict("hs9", ["hs2", "hs3"], new Map([["hs4", answer(50, 50, 9, now)]]))).toEqual({ kind: "ran", term: 9 });
  });

  it("lets a node that ran vote again once it stored a committed entry of a later term, or its leader's whole log", () => {
    const ran = { kind: "ran", term: 6 } as const;
    expect(mayVoteAgain({ kind: "new", term: 1 }, { index: 1, term: 1 })).toBe(true);
    expect(mayVoteAgain(ran, { index: 30, term: 5 })).toBe(false);
    // Of the answers' own term: a later entry of that term may have been committed with its help.
    expect(mayVoteAgain(ran, { index: 39, term: 6 })).toBe(false);
    expect(mayVoteAgain(ran, { index: 35, term: 7 })).toBe(true);
    expect(mayVoteAgain(ran, { index: 39, term: 6 }, { lastIndex: 40 })).toBe(false);
    expect(mayVoteAgain(ran, { index: 40, term: 6 }, { lastIndex: 40 })).toBe(true);
    expect(mayVoteAgain({ kind: "waiting", missing: ["hs2"] }, { index: 99, term: 9 })).toBe(false);
    // The leader view counts only an answer its leader gave in the term it leads, at or after the answers' term.
    const answers = new Map([["hs2", answer(30, 40, 6)]]);
    expect(leaderAnswered(ran, { leader: "hs2", term: 6 }, answers)).toEqual({ lastIndex: 40 });
    expect(leaderAnswered(ran, { leader: "hs2", term: 7 }, answers)).toBeUndefined();
    expect(leaderAnswered(ran, { leader: "hs3", term: 6 }, answers)).toBeUndefined();
    expect(leaderAnswered(ran, { leader: "", term: 6 }, answers)).toBeUndefined();
    expect(leaderAnswered({ kind: "ran", term: 8 }, { leader: "hs2", term: 6 }, answers)).toBeUndefined();
  });

  it("answers from a status, and reads back what it encodes, refusing anything else", () => {
    const status = { commit: 7, lastIndex: 9, term: 3, confState: { voters: ["hs1", "hs2"], votersOutgoing: [], learners: ["hs3"], learnersNext: [] } };
    const made = bootstrapAnswerOf(status, (id) => (id === "hs1" ? "127.0.0.1:7101" : undefined));
    expect(made).toEqual({ commit: 7, lastIndex: 9, term: 3, voters: ["hs1", "hs2"], votersOutgoing: [], addresses: { hs1: "127.0.0.1:7101" } });
    expect(decodeBootstrapAnswer(encodeBootstrapAnswer(made))).toEqual(made);
    const text = (value: unknown) => new TextEncoder().encode(typeof value === "string" ? value : JSON.stringify(value));
    for (const bad of [
      "",
      "12",
      "null",
      { ...made, commit: -1 },
      { ...made, commit: 10 }, // past its last index
      { ...made, term: 1.5 },
      { ...made, voters: "hs1" },
      { ...made, voters: ["bad id"] },
      { ...made, addresses: { hs1: 7 } },
      { ...made, addresses: [] },
      { ...made, voters: Array.from({ length: 65 }, (_, i) => `hs${i}`) },
    ]) {
      expect(decodeBootstrapAnswer(text(bad)), JSON.stringify(bad)).toBeUndefined();
    }
    expect(decodeBootstrapAnswer(new Uint8Array(70_000))).toBeUndefined();
  });

  it("checks a log at its bootstrap state with other initial voters, and nothing else", () => {
    expect(isAtBootstrapState(new MemoryStorage(three), three)).toBe(true);
    expect(isAtBootstrapState(new MemoryStorage(["hs1"]), ["hs1"])).toBe(false);
    // A voter that voted, or a log that grew past the bootstrap entry, has run.
    const voted = new MemoryStorage(three);
    voted.setHardState({ ...bootstrapLog(three).hardState, term: 2, vote: "hs2" });
    expect(isAtBootstrapState(voted, three)).toBe(false);
    const grown = new MemoryStorage(three);
    grown.append([{ index: 2, term: 2, type: 0, data: new Uint8Array(0) }]);
    expect(isAtBootstrapState(grown, three)).toBe(false);
    // A copy that joined (no bootstrap voters) is not checked: it has no membership to vote with.
    expect(isAtBootstrapState(new MemoryStorage(), [])).toBe(false);
  });

  it("does not call a five-voter cluster new after an election whose leader's entries reached only the lost node (from a review)", () => {
    // b is elected; its Appends reach only a, which acknowledges "w" and then loses its disk. c, d and e hold
    // nothing past the bootstrap entry, but they voted: their term shows that an election happened, and b
    // could still commit "w" with a's old acknowledgement and one more.
    const ids = ["a", "b", "c", "d", "e"];
    const c = new TestCluster(ids);
    c.filter = (m) => !(m.from === "b" && ["c", "d", "e"].includes(m.to) && (m.type === MessageType.Append || m.type === MessageType.Heartbeat));
    c.elect("b");
    c.get("b").node.propose(new TextEncoder().encode("w"));
    c.stabilize();
    expect(c.get("a").storage.lastIndex()).toBeGreaterThan(2);
    const answers = new Map(["c", "d", "e"].map((id) => [id, bootstrapAnswerOf(c.get(id).node.status(), () => undefined)] as const));
    expect(answers.get("c")).toMatchObject({ lastIndex: 1, commit: 1, term: 2 });
    const verdict = bootstrapVerdict("a", ["b", "c", "d", "e"], answers);
    expect(verdict).toEqual({ kind: "ran", term: 2 });
    // Its fresh copy does not vote yet: it knows no leader of term 2 whose whole log it holds.
    expect(mayVoteAgain(verdict, { index: 1, term: 1 }, leaderAnswered(verdict, { leader: "", term: 2 }, answers))).toBe(false);
  });
});
