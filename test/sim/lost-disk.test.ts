/**
 * Lost disks under faults (the `lostDisks` knob): about every other crash
 * also loses the node's disk, and it restarts as at its first start. An
 * initial voter then runs the bootstrap check as the runtime's cluster group
 * does (src/node/bootstrap-check.ts): it steps no message until enough peers
 * told it how far the terms went, and votes only once an entry of that term
 * is committed. Every invariant must hold; without the check they do not.
 */
import { describe, expect, it } from "vitest";
import { faultKinds, runSimulation, type FaultKind, type SimResult } from "../../src/sim/index.ts";

const crashes = new Set<FaultKind>(["crash", "partition", "drop", "reorder"]);

function run(seed: number, faults: ReadonlySet<FaultKind>, bootstrapCheck: boolean): SimResult {
  return runSimulation({ seed, nodes: seed % 2 === 1 ? 3 : 5, steps: 600, faults, knobs: { lostDisks: true, bootstrapCheck, faultChancePerTick: 0.15 } });
}

describe("simulator with lost disks", () => {
  it("keeps every invariant when a node that lost its disk holds its votes and messages until its peers answered", () => {
    let disksLost = 0;
    for (let seed = 1; seed <= 1000; seed++) {
      const r = run(seed, seed <= 600 ? crashes : new Set(faultKinds), true);
      expect(r.violations, `seed ${seed}`).toEqual([]);
      expect(r.recoveryTicks, `seed ${seed}`).toBeGreaterThanOrEqual(0);
      disksLost += r.disksLost;
    }
    console.log(`lost disks over 1000 seeds: ${disksLost}`);
    expect(disksLost).toBeGreaterThan(1500);
  });

  it("loses committed entries or elects two leaders in a term without the check (the broken variant is caught)", () => {
    const caught: string[] = [];
    for (let seed = 1; seed <= 300 && caught.length === 0; seed++) {
      const violation = run(seed, crashes, false).violations[0];
      if (violation !== undefined) caught.push(`seed ${seed}: ${violation.invariant}: ${violation.message}`);
    }
    console.log(`without the bootstrap check: ${caught[0]}`);
    expect(caught).toHaveLength(1);
  });
});
