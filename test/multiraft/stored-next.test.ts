/**
 * Signing at store time (src/multiraft/stored-next.ts): a node acts on an
 * entry before it commits only when it stored it in the entry's own term,
 * right after everything it applied. A quorum of such stores commits the
 * entry; a quorum of stores made in later terms does not (Raft's figure 8),
 * which the first test builds with real cores. The multi-group simulator
 * signs commits so and checks that every certificate a quorum signed states
 * what the log decided.
 */
import { describe, expect, it } from "vitest";
import { storedLogView, storedNextIndex } from "../../src/multiraft/stored-next.ts";
import { type Entry, type NodeId } from "../../src/raft/types.ts";
import { runChannelSimulation } from "../../src/sim/channel-sim.ts";
import { TestCluster, text, type TestNode } from "../raft/harness.ts";

/** The entry `storedNextIndex` lets `t` act on now, if any. */
function offered(t: TestNode): Entry | undefined {
  const applied = t.applied[t.applied.length - 1]?.index ?? 0;
  const index = storedNextIndex(storedLogView(t.storage, t.node), applied);
  return index === undefined ? undefined : t.storage.entries(index, index + 1, Number.MAX_SAFE_INTEGER)[0];
}

const payload = (e: Entry) => new TextDecoder().decode(e.data);

describe("acting on an entry before it commits", () => {
  it("a quorum that stored an entry in a later term than the entry's is not offered it: it is overwritten (Raft's figure 8)", () => {
    // Each Append carries one entry, so that a follower can store an old entry without the new leader's next one.
    // No PreVote or CheckQuorum: c votes for whoever asks with a log at least as up to date as its own.
    const c = new TestCluster(["a", "b", "c"], { maxMessageBytes: 1, preVote: false, checkQuorum: false });
    const offers = new Map<string, Set<NodeId>>(); // "index/term/payload" -> nodes offered it
    const watch = () => {
      for (const t of c.nodes.values()) {
        const e = offered(t);
        if (e === undefined || e.data.byteLength === 0) continue;
        const key = `${e.index}/${e.term}/${payload(e)}`;
        offers.set(key, (offers.get(key) ?? new Set()).add(t.id));
      }
    };
    // Looked at after every round of Readies, as the driver does.
    const processReadies = c.processReadies.bind(c);
    c.processReadies = () => {
      const readied = processReadies();
      watch();
      return readied;
    };
    c.elect("a");
    // a appends "x" but is cut off before any follower stores it.
    c.isolate("a");
    c.get("a").node.propose(text("x"));
    c.stabilize();
    // b is elected by c, appends its term's empty entry at the same index, and is cut off at once.
    c.heal();
    c.isolate("a");
    c.filter = (m) => !(m.from === "b" && m.entries.length > 0);
    c.elect("b");
    c.filter = () => true;
    c.isolate("b");
    // a comes back and is elected by c (a's last entry is newer than c's); c stores "x", from a's older term,
    // but not a's new term's entry, which never arrives.
    c.heal();
    c.isolate("b");
    const xIndex = c.get("a").storage.lastIndex();
    // (a's first Append, of its new entry, is refused by c, which lacks "x"; the one that follows carries "x".)
    c.filter = (m) => !(m.from === "a" && m.entries.some((e) => e.index > xIndex) && c.get("c").storage.lastIndex() >= xIndex);
    c.restart("a"); // a crashed while cut off: it comes back as a follower of its old term
    c.elect("a"); // refused: c voted for b in this term; a learns the term
    c.elect("a");
    expect(c.leaders()).toContain("a");
    expect(c.get("c").storage.term(xIndex)).toBe(c.get("a").storage.term(xIndex));
    expect(payload(c.get("c").storage.entries(xIndex, xIndex + 1, Number.MAX_SAFE_INTEGER)[0]!)).toBe("x");
    // a is lost; b (whose last entry is newer than c's "x") is elected by c and overwrites "x".
    c.filter = () => true;
    c.heal();
    c.isolate("a");
    c.restart("b");
    c.elect("b");
    c.elect("b");
    c.get("b").node.propose(text("y"));
    c.stabilize();
    const decided = c.appliedText("c");
    expect(decided).toContain("y");
    expect(decided).not.toContain("x");
    // "x" was stored by a quorum (a and c), on c in a later term than its own: only a, which stored it in
    // its own term, was offered it, and no quorum signed what the log overwrote.
    expect(offers.get(`${xIndex}/2/x`)).toEqual(new Set(["a"]));
    for (const [key, nodes] of offers) {
      const [index, , data] = key.split("/");
      const kept = c.get("c").applied.find((e) => e.index === Number(index));
      if (nodes.size >= 2) expect(kept === undefined ? undefined : payload(kept), `offered to ${[...nodes]} at ${key}`).toBe(data);
    }
  });

  it("an entry right after one of an earlier term is not offered: only a leader's own run of entries is", () => {
    // Terms by index (index 0 is the snapshot's): a leader of term 3 put its empty entry at 3 and a command at 4.
    const terms = [1, 1, 2, 3, 3];
    const view = (storedTerm: number) => ({ firstIndex: () => 1, lastIndex: () => terms.length - 1, term: (i: number) => terms[i]!, storedTerm: () => storedTerm, nodeTerm: () => storedTerm, leader: () => "b" });
    // Index 3 is the leader's first entry of term 3, after an entry of term 2: not offered. A signed statement
    // names an index, not a term, so without this, signatures of different entries at one index (the same commit
    // resent to another leader) could add up to a quorum (helper-28's five-voter schedule); with it, every signer
    // at an index stored the one entry that follows the committed entry of the same term before it.
    expect(storedNextIndex(view(3), 2)).toBeUndefined();
    expect(storedNextIndex(view(3), 3)).toBe(4);
    // Not in another term than the entry's, nor without a leader, nor past the last entry.
    expect(storedNextIndex(view(4), 3)).toBeUndefined();
    expect(storedNextIndex({ ...view(3), leader: () => "" }, 3)).toBeUndefined();
    expect(storedNextIndex(view(3), 4)).toBeUndefined();
  });

  const base = Number(process.env.CHANNEL_SIM_SEED ?? Math.floor(Math.random() * 1_000_000));

  it("in the multi-group simulator, every certificate a quorum signed at store time or at apply states what the log decided", () => {
    console.log(`stored-next: channel sim seeds ${base}..${base + 9} (CHANNEL_SIM_SEED=${base} reproduces)`);
    let ahead = 0;
    let commits = 0;
    for (let seed = base; seed < base + 10; seed++) {
      const result = runChannelSimulation({ seed, faultScale: 3 });
      // Safety only: liveness of the healed cluster is test/sim/channel-sim.test.ts's.
      expect(result.violations.filter((v) => v.check !== "liveness"), `seed ${seed}`).toEqual([]);
      ahead += result.signaturesAhead;
      commits += result.commitsAccepted;
    }
    // Most commits were signed ahead of their commit by at least two homeservers: the rule is exercised.
    expect(ahead).toBeGreaterThan(commits);
  }, 120_000);

  it("the simulator catches signing a stored commit as if the entries before it were applied (sign-past-applied)", () => {
    const caught = [];
    for (let seed = base; seed < base + 10 && caught.length === 0; seed++) {
      const result = runChannelSimulation({ seed, broken: "sign-past-applied" });
      if (result.violations.length > 0) caught.push(result.violations[0]!.check);
    }
    expect(caught).toEqual(["false-certificate"]);
  });
});
