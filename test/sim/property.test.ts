/**
 * fast-check drives the simulator with generated fault schedules. A failing
 * schedule shrinks to a minimal one (fewer events, earlier ticks, smaller
 * choices); the fast-check seed is printed so `FC_SEED=<seed>` reproduces it.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { faultKinds, runSimulation, type FaultEvent, type InvariantFactory } from "../../src/sim/index.ts";

const fcSeed = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : Date.now() % 2 ** 31;
console.log(`fast-check seed ${fcSeed} (set FC_SEED=${fcSeed} to reproduce)`);

const steps = 240;

/** One fault event; the choices are multiples of 1/1000 so they shrink toward 0. */
const faultEvent: fc.Arbitrary<FaultEvent> = fc.record({
  atTick: fc.integer({ min: 0, max: steps - 1 }),
  kind: fc.constantFrom(...faultKinds),
  durationTicks: fc.integer({ min: 1, max: 80 }),
  a: fc.integer({ min: 0, max: 999 }).map((n) => n / 1000),
  b: fc.integer({ min: 0, max: 999 }).map((n) => n / 1000),
});

/** A run: the simulator's seed (knobs, latencies, clients), the cluster size and the fault schedule. */
const scenario = fc.record({
  seed: fc.integer({ min: 1, max: 1_000_000 }),
  nodes: fc.constantFrom(3, 5),
  schedule: fc.array(faultEvent, { maxLength: 40 }),
});

describe("simulator properties", () => {
  it("every generated fault schedule is safe, and the healed cluster is live", () => {
    fc.assert(
      fc.property(scenario, ({ seed, nodes, schedule }) => {
        const r = runSimulation({ seed, nodes, steps, faults: new Set(), schedule });
        if (r.violations.length > 0) {
          const v = r.violations[0]!;
          throw new Error(`seed ${seed}: ${v.invariant}: ${v.message}\n${v.trace.join("\n")}`);
        }
        return r.commits > 0 && r.recoveryTicks >= 0;
      }),
      { seed: fcSeed, numRuns: 60, endOnFailure: false },
    );
  });

  it("shrinks a failing schedule to a minimal one", () => {
    // A deliberately over-strict invariant: "the first leader leads forever".
    // Only a fault that moves leadership breaks it, so the minimal
    // counterexample is a single such event.
    const firstLeaderForever: InvariantFactory = (violate) => {
      let first = "";
      return {
        leaderElected(node) {
          if (first === "") first = node;
          else if (node !== first) violate(`${node} took over from ${first}`);
        },
      };
    };
    const property = fc.property(scenario, ({ seed, nodes, schedule }) => {
      const r = runSimulation({ seed, nodes, steps, faults: new Set(), schedule, extraInvariants: { "first-leader-forever": firstLeaderForever } });
      return r.violations.length === 0;
    });
    const details = fc.check(property, { seed: fcSeed, numRuns: 200 });
    expect(details.failed).toBe(true);
    const [minimal] = details.counterexample!;
    // Usually one event. Shrinking is greedy and a run is chaotic (removing an event shifts every
    // later random draw), so a few seeds in 30 stop at a small set that fails only together: a local
    // minimum. What matters is that the schedule (up to 40 events) shrank to a handful that replays.
    expect(minimal.schedule.length).toBeGreaterThanOrEqual(1);
    expect(minimal.schedule.length).toBeLessThanOrEqual(8);
    for (const event of minimal.schedule) expect(["crash", "partition", "pause", "transfer", "membership", "drop", "dup", "reorder"]).toContain(event.kind);
    // The shrunk schedule alone still fails.
    const again = runSimulation({
      seed: minimal.seed,
      nodes: minimal.nodes,
      steps,
      faults: new Set(),
      schedule: minimal.schedule,
      extraInvariants: { "first-leader-forever": firstLeaderForever },
    });
    expect(again.violations[0]?.invariant).toBe("first-leader-forever");
  });
});
