import { describe, expect, it } from "vitest";
import { faultKinds, runSimulation, type FaultKind, type InvariantFactory } from "../../src/sim/index.ts";

describe("runSimulation", () => {
  it("is reproducible: the same options give the same run", () => {
    const options = { seed: 17, nodes: 5, steps: 300, faults: new Set(faultKinds) };
    const a = runSimulation(options);
    const b = runSimulation(options);
    expect(b).toEqual(a);
    expect(a.events).toBeGreaterThan(1000);
    expect(runSimulation({ ...options, seed: 18 }).events).not.toBe(a.events);
  });

  it.each(faultKinds.map((k) => [k]))("stays safe and live under %s faults alone", (kind: FaultKind) => {
    for (const seed of [1, 2]) {
      const r = runSimulation({ seed, nodes: 3, steps: 300, faults: new Set([kind]), knobs: { faultChancePerTick: 0.1 } });
      expect(r.violations).toEqual([]);
      expect(r.elections).toBeGreaterThan(0);
      expect(r.commits).toBeGreaterThan(0);
      expect(r.faults).toBeGreaterThan(0);
      expect(r.recoveryTicks).toBeGreaterThanOrEqual(0);
    }
  });

  // Seeds that failed before the fixes of the eighteenth session, every fault at a fault every 7 ticks:
  // a conf change applied again over a snapshot's membership (2053, liveness); commit-durability counting
  // a node's votes with a membership it would not campaign with (2131, 6052); a learner ahead in term
  // that the leader never heard of (923, without CheckQuorum and PreVote); and with lost disks, a
  // demoted leader handing over only to a voter holding its votes (906), a dead leader's late heartbeat
  // (1813, 2915), a disk lost before a membership change was applied everywhere (96), and two fresh
  // nodes made voters before either held anything (4261, a fault-model guard).
  it.each([
    [2053, 5, {}],
    [2131, 5, {}],
    [6052, 5, {}],
    [923, 5, { restoreFsyncDelays: 50, snapshotIntervalEntries: 4, compactKeepEntries: 0, checkQuorum: false, preVote: false }],
    [906, 5, { lostDisks: true }],
    [1813, 3, { lostDisks: true }],
    [2915, 5, { lostDisks: true }],
    [96, 5, { lostDisks: true }],
    [4261, 3, { lostDisks: true }],
  ] as const)("seed %i on %i nodes stays safe and live", (seed, nodes, knobs) => {
    const r = runSimulation({ seed, nodes, steps: 600, faults: new Set(faultKinds), knobs: { faultChancePerTick: 0.15, ...knobs } });
    expect(r.violations.map((v) => `${v.invariant}: ${v.message}`)).toEqual([]);
  });

  it("with lazy commit notices, the merged round (apply before the write) loses nothing acknowledged under crashes, a single voter's included", () => {
    // A single voter commits an entry as it appends it, so its Ready stores and commits the same entry:
    // the merged round must not apply that one before its write (mayApplyBeforePersist).
    // Busy clients and slow fsyncs keep a write in flight most of the time, so crashes land inside
    // merged rounds. Without the rule about half of the single-voter seeds lose an acknowledged entry;
    // the 3-node runs cover the merged round where the rule never decides (a follower or leader of 3).
    const knobs = { lazyCommitNotices: true, faultChancePerTick: 0.05, fsyncMaxMs: 4, clients: 3, clientPipeline: 16, proposalChancePerTick: 0.5 };
    for (const nodes of [1, 3]) {
      for (let seed = 1; seed <= 12; seed++) {
        const r = runSimulation({ seed, nodes, steps: 400, faults: new Set<FaultKind>(["crash", "pause"]), knobs });
        expect(r.violations, `nodes ${nodes}, seed ${seed}`).toEqual([]);
        expect(r.commits).toBeGreaterThan(0);
      }
    }
  });

  it("snapshots followers that fall behind an aggressively compacted log", () => {
    const r = runSimulation({
      seed: 4,
      nodes: 5,
      steps: 400,
      faults: new Set<FaultKind>(["crash", "partition"]),
      knobs: { snapshotIntervalEntries: 3, compactKeepEntries: 0, faultChancePerTick: 0.1 },
    });
    expect(r.violations).toEqual([]);
    expect(r.snapshotsInstalled).toBeGreaterThan(0);
  });

  it("reports a violation with its seed, invariant, message and a readable trace", () => {
    const secondLeaderIsABug: InvariantFactory = (violate) => {
      let first = "";
      return {
        leaderElected(node) {
          if (first === "") first = node;
          else if (node !== first) violate(`${node} is not ${first}`);
        },
      };
    };
    const r = runSimulation({
      seed: 3,
      nodes: 3,
      steps: 200,
      faults: new Set(),
      schedule: [{ atTick: 50, kind: "transfer", durationTicks: 1, a: 0, b: 0 }],
      extraInvariants: { "one-leader-forever": secondLeaderIsABug },
    });
    expect(r.violations).toHaveLength(1);
    const v = r.violations[0]!;
    expect(v).toMatchObject({ seed: 3, invariant: "one-leader-forever" });
    expect(v.message).toMatch(/is not n/);
    expect(v.trace.length).toBeGreaterThan(10);
    expect(v.trace.length).toBeLessThanOrEqual(40);
    expect(v.trace.some((line) => /fault +transfer/.test(line))).toBe(true);
    expect(v.trace.some((line) => /recv +n\d->n\d (Append|Heartbeat|TimeoutNow) t\d+/.test(line))).toBe(true);
  });

  it("rejects impossible options", () => {
    expect(() => runSimulation({ seed: 1, nodes: 0, steps: 10, faults: new Set() })).toThrow(RangeError);
    expect(() => runSimulation({ seed: 1, nodes: 3, steps: -1, faults: new Set() })).toThrow(RangeError);
  });
});
