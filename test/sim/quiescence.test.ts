import { describe, expect, it } from "vitest";
import { faultKinds, Simulator, runSimulation, type FaultEvent, type InvariantFactory } from "../../src/sim/index.ts";

const tickMs = 10;

/** Runs `schedule` on 3 quiescing nodes, recording when messages were sent and when leaders were elected. */
function observedRun(seed: number, schedule: FaultEvent[], steps: number) {
  return observedRunWith(seed, schedule, steps, {});
}

function observedRunWith(seed: number, schedule: FaultEvent[], steps: number, knobs: { hibernateAfterTicks?: number }) {
  const sentAtMs: number[] = [];
  const electedAtMs: { term: number; atMs: number; node: string }[] = [];
  let sim: Simulator | undefined;
  const spy: InvariantFactory = () => ({
    messageSent: () => sentAtMs.push(sim!.nowMs),
    leaderElected: (node, term) => electedAtMs.push({ node, term, atMs: sim!.nowMs }),
  });
  sim = new Simulator({ seed, nodes: 3, steps, faults: new Set(), schedule, knobs: { quiesce: true, tickMs, hibernateAfterTicks: 0, ...knobs }, extraInvariants: { spy } });
  const result = sim.run();
  return { result, sentAtMs, electedAtMs };
}

describe("simulator with quiescence", () => {
  it("stays safe and live under every fault kind while groups quiesce and wake", () => {
    let quiesced = 0;
    for (let seed = 1; seed <= 16; seed++) {
      const r = runSimulation({ seed, nodes: 5, steps: 300, faults: new Set(faultKinds), knobs: { quiesce: true } });
      expect(r.violations, `seed ${seed}`).toEqual([]);
      expect(r.recoveryTicks, `seed ${seed}`).toBeGreaterThanOrEqual(0);
      if (r.quiescedTicks > 0) quiesced++;
    }
    // Idle gaps between client bursts: nearly every run has quiet groups.
    expect(quiesced).toBeGreaterThanOrEqual(13);
  });

  it("stays safe and live while quiet nodes are unloaded and rebuilt from disk in their quiet role", () => {
    let hibernations = 0;
    let elections = 0;
    for (let seed = 1; seed <= 16; seed++) {
      const r = runSimulation({ seed, nodes: 5, steps: 300, faults: new Set(faultKinds), knobs: { quiesce: true, hibernateAfterTicks: 1 + (seed % 4) } });
      expect(r.violations, `seed ${seed}`).toEqual([]);
      expect(r.recoveryTicks, `seed ${seed}`).toBeGreaterThanOrEqual(0);
      hibernations += r.hibernations;
      elections += r.elections;
    }
    expect(hibernations).toBeGreaterThan(100);
    void elections;
  });

  it("a group whose nodes were all unloaded while quiet resumes without an election", () => {
    const { result, electedAtMs } = observedRunWith(7, [], 300, { hibernateAfterTicks: 2 });
    expect(result.violations).toEqual([]);
    expect(result.hibernations).toBeGreaterThan(10);
    // One election at the start; every later burst is served by the same leader in the same term.
    expect(new Set(electedAtMs.map((e) => e.term)).size).toBe(1);
  });

  it("a leader crash while the group is quiet is followed by a new leader within a few election timeouts, before any heal", () => {
    const crashTick = 150;
    // Clients propose in ticks [120, 140); by 150 the group has been idle for 10 ticks.
    const schedule: FaultEvent[] = [{ atTick: crashTick, kind: "crash", durationTicks: 200, a: 0, b: 0 }];
    for (const seed of [1, 2, 3, 4]) {
      const { result, sentAtMs, electedAtMs } = observedRun(seed, schedule, 400);
      expect(result.violations, `seed ${seed}`).toEqual([]);
      const crashMs = (crashTick + 0.5) * tickMs;
      // Quiet before the crash: not one message (an awake leader heartbeats every tick).
      expect(sentAtMs.filter((t) => t > crashMs - 5 * tickMs && t < crashMs), `seed ${seed}`).toEqual([]);
      const before = electedAtMs.filter((e) => e.atMs < crashMs);
      const oldLeader = before[before.length - 1]!;
      const next = electedAtMs.find((e) => e.atMs > crashMs);
      expect(next, `seed ${seed}: no leader after the crash of ${oldLeader.node}`).toBeDefined();
      expect(next!.node).not.toBe(oldLeader.node);
      // Detection (2 ticks) plus a campaign: well within 3 election timeouts (10 ticks each), long before the heal at 400.
      expect(next!.atMs - crashMs).toBeLessThan(30 * tickMs);
    }
  });

  it("a quiet group stays quiet: the leader stops sending and nodes stop ticking", () => {
    const { result, sentAtMs } = observedRun(7, [], 300);
    expect(result.violations).toEqual([]);
    expect(result.quiescedTicks).toBeGreaterThan(result.nodeTicks / 3);
    // Ticks [20, 60) of each window of 60 are idle: [280, 290) hears nothing at all.
    const idle = sentAtMs.filter((t) => t >= 280 * tickMs && t < 290 * tickMs);
    expect(idle).toEqual([]);
  });
});
