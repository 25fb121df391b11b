import { describe, expect, it } from "vitest";
import { EntryType, MessageType, message, type ConfState, type Entry, type HardState } from "../../src/raft/types.ts";
import {
  commitDurability,
  commitRule,
  durability,
  electionSafety,
  leaderCompleteness,
  logMatching,
  stateMachineSafety,
  voteDurability,
  type ClusterView,
  type Invariant,
  type InvariantFactory,
  type LogView,
} from "../../src/sim/invariants.ts";
import { applyEntry } from "../../src/sim/state-machine.ts";

function entry(index: number, term: number, text = `e${index}@${term}`): Entry {
  return { index, term, type: EntryType.Normal, data: new TextEncoder().encode(text) };
}

/** A log view over a plain array of terms (terms[i] is the term at index i; index 0 is the snapshot). */
function logOf(terms: number[], snapshotIndex = 0): LogView {
  return {
    term: (i) => (i >= snapshotIndex && i < terms.length ? terms[i] : undefined),
    lastIndex: () => terms.length - 1,
    snapshotIndex: () => snapshotIndex,
  };
}

/** Instantiates an invariant with a recorder of its violations. */
function check(make: InvariantFactory): { inv: Invariant; violations: string[] } {
  const violations: string[] = [];
  return { inv: make((m) => violations.push(m)), violations };
}

const conf3: ConfState = { voters: ["a", "b", "c"], votersOutgoing: [], learners: [], learnersNext: [] };

/** A cluster of durable logs (term arrays) and hard states, all with `conf`. */
function cluster(logs: Record<string, number[]>, hard: Record<string, HardState> = {}, confs: Record<string, ConfState> = {}): ClusterView {
  return {
    nodes: () => Object.keys(logs),
    campaignConfsOf: (id) => [confs[id] ?? conf3],
    lastOf: (id) => {
      const terms = logs[id];
      return terms === undefined ? undefined : { index: terms.length - 1, term: terms[terms.length - 1]! };
    },
    hardStateOf: (id) => hard[id],
    holds: (id, index, term) => logs[id]?.[index] === term,
  };
}

describe("election safety", () => {
  it("flags two leaders in one term, by election or by what they send", () => {
    const a = check(electionSafety);
    a.inv.leaderElected!("a", 3);
    a.inv.leaderElected!("a", 3);
    a.inv.leaderElected!("b", 4);
    expect(a.violations).toEqual([]);
    a.inv.leaderElected!("b", 3);
    expect(a.violations).toHaveLength(1);

    const b = check(electionSafety);
    b.inv.leaderElected!("a", 5);
    b.inv.messageSent!(message({ type: MessageType.Vote, groupId: "g", from: "b", to: "a", term: 5 }));
    expect(b.violations).toEqual([]);
    b.inv.messageSent!(message({ type: MessageType.Heartbeat, groupId: "g", from: "b", to: "a", term: 5 }));
    expect(b.violations[0]).toMatch(/b and a are both leaders of term 5/);
  });
});

describe("log matching", () => {
  it("flags a different entry at a known (index, term)", () => {
    const { inv, violations } = check(logMatching);
    inv.entriesPersisted!("a", [entry(1, 1), entry(2, 1)], logOf([0, 1, 1]));
    inv.entriesPersisted!("b", [entry(1, 1), entry(2, 1)], logOf([0, 1, 1]));
    expect(violations).toEqual([]);
    inv.entriesPersisted!("c", [entry(2, 1, "other")], logOf([0, 1, 1]));
    expect(violations[0]).toMatch(/entry 2@1 on c differs/);
  });

  it("flags the same (index, term) following a different previous term", () => {
    const { inv, violations } = check(logMatching);
    inv.entriesPersisted!("a", [entry(3, 2)], logOf([0, 1, 1, 2]));
    inv.entriesPersisted!("b", [entry(3, 2)], logOf([0, 1, 2, 2]));
    expect(violations[0]).toMatch(/follows term 2 on b but term 1 on a/);
  });
});

describe("leader completeness", () => {
  it("flags a leader lacking an entry committed in an earlier term", () => {
    const { inv, violations } = check(leaderCompleteness);
    inv.entriesCommitted!("a", 2, [entry(1, 1), entry(2, 2)]);
    inv.leaderLogPersisted!("b", 3, logOf([0, 1, 2, 3]));
    expect(violations).toEqual([]);
    inv.leaderLogPersisted!("c", 4, logOf([0, 1, 3, 4]));
    expect(violations[0]).toMatch(/leader c of term 4 lacks committed entry 2@2: it has term 3/);
    inv.leaderLogPersisted!("d", 5, logOf([0, 1]));
    expect(violations[1]).toMatch(/no entry/);
  });

  it("does not require entries committed in the leader's own or a later term (a legal stale leader)", () => {
    const { inv, violations } = check(leaderCompleteness);
    inv.entriesCommitted!("a", 7, [entry(1, 7)]);
    inv.leaderLogPersisted!("b", 6, logOf([0]));
    expect(violations).toEqual([]);
  });
});

describe("state machine safety", () => {
  it("flags two nodes applying different entries at one index", () => {
    const { inv, violations } = check(stateMachineSafety);
    const zero = { index: 0, hash: 0 };
    inv.entryApplied!("a", entry(1, 1), zero, applyEntry(zero, entry(1, 1)));
    inv.entryApplied!("b", entry(1, 1), zero, applyEntry(zero, entry(1, 1)));
    expect(violations).toEqual([]);
    inv.entryApplied!("c", entry(1, 2), zero, applyEntry(zero, entry(1, 2)));
    expect(violations[0]).toMatch(/c applied state at index 1/);
  });

  it("flags a gap in applied indexes and a snapshot that rolls state back", () => {
    const { inv, violations } = check(stateMachineSafety);
    const s2 = { index: 2, hash: 5 };
    inv.entryApplied!("a", entry(4, 1), s2, applyEntry(s2, entry(4, 1)));
    expect(violations[0]).toMatch(/applied index 4 right after 2/);
    inv.snapshotRestored!("a", { index: 2, term: 1, confState: conf3 }, s2, { index: 4, hash: 1 });
    expect(violations[1]).toMatch(/restored a snapshot at 2 over applied state at 4/);
  });
});

describe("commit durability", () => {
  it("flags a commit that is not on a majority's disks", () => {
    const { inv, violations } = check(commitDurability);
    inv.commitAdvanced!("a", 2, 1, 2, conf3, cluster({ a: [0, 2], b: [0], c: [0] }));
    expect(violations[0]).toMatch(/only \[a\] of \[a,b,c\] have it on disk/);
  });

  it("flags a commit a node lacking it could still undo by winning an election (figure 8)", () => {
    const { inv, violations } = check(commitDurability);
    // Entry 2@2 is on a and b, but c holds 2@3 and its log beats both.
    inv.commitAdvanced!("a", 4, 2, 2, conf3, cluster({ a: [0, 1, 2], b: [0, 1, 2], c: [0, 1, 3] }));
    expect(violations[0]).toMatch(/c \(log ends 2@3\) lacks it and could still win/);
  });

  it("accepts a commit on a majority that no lacking node can overturn", () => {
    const { inv, violations } = check(commitDurability);
    inv.commitAdvanced!("a", 4, 3, 4, conf3, cluster({ a: [0, 1, 2, 4], b: [0, 1, 2, 4], c: [0, 1, 3] }));
    expect(violations).toEqual([]);
  });

  it("accepts a commit counted with the membership before a removal that took effect while its Ready was in flight, and no other short one", () => {
    // a counted {a,b,e} of {a,b,c,d,e}; the removal of e, committed just before, took effect in the
    // Ready before this check. The old majority meets every majority of {a,b,c,d}, so nothing is lost.
    const five: ConfState = { voters: ["a", "b", "c", "d", "e"], votersOutgoing: [], learners: [], learnersNext: [] };
    const four: ConfState = { voters: ["a", "b", "c", "d"], votersOutgoing: [], learners: [], learnersNext: [] };
    const logs = { a: [0, 2], b: [0, 2], c: [0], d: [0], e: [0, 2] };
    const confs = { a: four, b: four, c: four, d: four };
    const accepted = check(commitDurability);
    accepted.inv.commitAdvanced!("a", 2, 1, 2, four, cluster(logs, {}, confs), five);
    expect(accepted.violations).toEqual([]);
    // Short in the membership before as well: flagged.
    const flagged = check(commitDurability);
    flagged.inv.commitAdvanced!("a", 2, 1, 2, four, cluster({ ...logs, e: [0] }, {}, confs), five);
    expect(flagged.violations[0]).toMatch(/only \[a,b\] of \[a,b,c,d\]/);
  });

  it("needs both majorities in a joint configuration", () => {
    const { inv, violations } = check(commitDurability);
    const joint: ConfState = { voters: ["a", "d", "e"], votersOutgoing: ["a", "b", "c"], learners: [], learnersNext: [] };
    const logs = { a: [0, 2], b: [0], c: [0], d: [0, 2], e: [0, 2] };
    inv.commitAdvanced!("a", 2, 1, 2, joint, cluster(logs, {}, { a: joint, b: joint, c: joint, d: joint, e: joint }));
    expect(violations[0]).toMatch(/only \[a\] of \[a,b,c\]/);
  });
});

describe("commit rule", () => {
  it("flags a leader moving its commit index to an older term's entry", () => {
    const { inv, violations } = check(commitRule);
    inv.commitAdvanced!("a", 3, 5, 3, conf3, cluster({}));
    expect(violations).toEqual([]);
    inv.commitAdvanced!("a", 4, 6, 3, conf3, cluster({}));
    expect(violations[0]).toMatch(/leader of term 4, moved its commit index to 6, an entry of term 3/);
  });
});

describe("vote durability", () => {
  it("flags a leader whose majority of votes is not on disk", () => {
    const { inv, violations } = check(voteDurability);
    const logs = { a: [0], b: [0], c: [0] };
    inv.leaderElectedIn!("a", 3, conf3, cluster(logs, { b: { term: 3, vote: "a", commit: 0 }, c: { term: 2, vote: "", commit: 0 } }));
    expect(violations).toEqual([]);
    inv.leaderElectedIn!("a", 4, conf3, cluster(logs, { b: { term: 4, vote: "", commit: 0 }, c: { term: 4, vote: "c", commit: 0 } }));
    expect(violations[0]).toMatch(/only 1 of \[a,b,c\] durably voted/);
  });
});

describe("durability of acknowledged entries", () => {
  it("flags a voter that ends behind an acknowledged entry, or a replaced acknowledged entry", () => {
    const { inv, violations } = check(durability);
    const zero = { index: 0, hash: 0 };
    inv.clientAcked!("a", entry(1, 1));
    inv.entryApplied!("a", entry(1, 2), zero, applyEntry(zero, entry(1, 2)));
    inv.finished!({ voters: [{ id: "b", applied: zero }] });
    expect(violations.some((v) => /b applied up to 0 but 1 was acknowledged/.test(v))).toBe(true);
    expect(violations.some((v) => /acknowledged entry 1@1 was replaced by 1@2/.test(v))).toBe(true);
  });
});
