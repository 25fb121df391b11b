import { describe, expect, it } from "vitest";
import { bootstrapLog, MemoryStorage } from "../../src/raft/memory-storage.ts";
import { bootstrapVerdict, decodeBootstrapAnswer, encodeBootstrapAnswer, isAtBootstrapState } from "../../src/node/bootstrap-check.ts";

describe("bootstrap check", () => {
  const peers = ["hs2", "hs3"];

  it("waits for every other initial voter while none has committed past the bootstrap entry", () => {
    expect(bootstrapVerdict(peers, new Map())).toEqual({ kind: "waiting", missing: ["hs2", "hs3"] });
    expect(bootstrapVerdict(peers, new Map([["hs3", 1]]))).toEqual({ kind: "waiting", missing: ["hs2"] });
  });

  it("calls the cluster new only when all of them are at the bootstrap state", () => {
    expect(bootstrapVerdict(peers, new Map([["hs2", 1], ["hs3", 1]]))).toEqual({ kind: "new" });
  });

  it("calls it one that ran as soon as one peer committed past the bootstrap entry, with the highest commit", () => {
    expect(bootstrapVerdict(peers, new Map([["hs2", 40]]))).toEqual({ kind: "ran", commit: 40, answeredBy: "hs2" });
    expect(bootstrapVerdict(peers, new Map([["hs2", 40], ["hs3", 57]]))).toEqual({ kind: "ran", commit: 57, answeredBy: "hs3" });
    expect(bootstrapVerdict(peers, new Map([["hs2", 1], ["hs3", 2]]))).toEqual({ kind: "ran", commit: 2, answeredBy: "hs3" });
  });

  it("ignores answers from homeservers that are not initial voters", () => {
    expect(bootstrapVerdict(peers, new Map([["hs9", 500], ["hs2", 1], ["hs3", 1]]))).toEqual({ kind: "new" });
  });

  it("reads back what it encodes, and refuses anything else", () => {
    expect(decodeBootstrapAnswer(encodeBootstrapAnswer(123456))).toBe(123456);
    for (const bad of ["", "-1", "1e3", "12a", "9".repeat(16), " 1"]) expect(decodeBootstrapAnswer(new TextEncoder().encode(bad))).toBeUndefined();
  });

  it("checks a log at its bootstrap state with other initial voters, and nothing else", () => {
    const voters = ["hs1", "hs2", "hs3"];
    expect(isAtBootstrapState(new MemoryStorage(voters), voters)).toBe(true);
    expect(isAtBootstrapState(new MemoryStorage(["hs1"]), ["hs1"])).toBe(false);
    // A voter that voted, or a log that grew past the bootstrap entry, has run.
    const voted = new MemoryStorage(voters);
    voted.setHardState({ ...bootstrapLog(voters).hardState, term: 2, vote: "hs2" });
    expect(isAtBootstrapState(voted, voters)).toBe(false);
    const grown = new MemoryStorage(voters);
    grown.append([{ index: 2, term: 2, type: 0, data: new Uint8Array(0) }]);
    expect(isAtBootstrapState(grown, voters)).toBe(false);
    // A copy that joined (no bootstrap voters) is not checked: it has no membership to vote with.
    expect(isAtBootstrapState(new MemoryStorage(), [])).toBe(false);
  });
});
