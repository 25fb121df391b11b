/**
 * Long snapshot restores under faults: a node given a leader's snapshot
 * restores it over many fsync delays (as the runtime restores a large one off
 * its Ready loop), meanwhile storing entries, voting and answering its leader
 * (`withholdApply`) but applying nothing and starting no election; a crash in
 * between restores again on start. Every invariant must hold and the group
 * must recover.
 */
import { describe, expect, it } from "vitest";
import { faultKinds, runSimulation } from "../../src/sim/index.ts";

describe("simulator with long snapshot restores", () => {
  it("stays safe and live under every fault kind while followers restore snapshots for a while", () => {
    let restores = 0;
    for (let seed = 1; seed <= 16; seed++) {
      const r = runSimulation({ seed, nodes: 5, steps: 300, faults: new Set(faultKinds), knobs: { restoreFsyncDelays: 20 + (seed % 3) * 20, snapshotIntervalEntries: 4, compactKeepEntries: 0 } });
      expect(r.violations, `seed ${seed}`).toEqual([]);
      expect(r.recoveryTicks, `seed ${seed}`).toBeGreaterThanOrEqual(0);
      restores += r.restoresTakenUp;
    }
    console.log(`long restores taken up over 16 seeds: ${restores}`);
    expect(restores).toBeGreaterThan(10);
  });
});
