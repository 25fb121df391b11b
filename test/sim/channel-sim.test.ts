/**
 * The multi-group simulator (src/sim/channel-sim.ts): channels created, homeservers added to and removed
 * from their groups by MLS adds and removes, crashes, partitions, loss and delay, with every check holding;
 * and the deliberately broken variants are caught. Seeds are printed; `runChannelSimulation({ seed })`
 * reproduces any run exactly.
 */
import { describe, expect, it } from "vitest";
import { runChannelSimulation, type ChannelSimResult } from "../../src/sim/channel-sim.ts";

const base = Number(process.env.CHANNEL_SIM_SEED ?? Math.floor(Math.random() * 1_000_000));
const seeds = Number(process.env.CHANNEL_SIM_SEEDS ?? 60);
const lostDiskSeeds = Number(process.env.CHANNEL_SIM_LOST_DISK_SEEDS ?? 6);

describe("multi-group simulation: one Raft group per channel", () => {
  it(`holds every check over ${seeds} seeds with faults`, () => {
    console.log(`channel sim: seeds ${base}..${base + seeds - 1} (CHANNEL_SIM_SEED=${base} reproduces)`);
    const totals = { commitsAccepted: 0, messagesAccepted: 0, conflicts: 0, busyRefusals: 0, membershipChanges: 0, removals: 0, crashes: 0, partitions: 0 };
    const failed: ChannelSimResult[] = [];
    for (let seed = base; seed < base + seeds; seed++) {
      const result = runChannelSimulation({ seed });
      if (result.violations.length > 0) failed.push(result);
      for (const key of Object.keys(totals) as Array<keyof typeof totals>) totals[key] += result[key];
    }
    console.log(`channel sim: ${JSON.stringify(totals)}`);
    expect(failed.map((r) => r.violations[0])).toEqual([]);
    // The runs did what they are for: homeservers joined and left groups under faults, commits raced.
    expect(totals.removals).toBeGreaterThan(seeds);
    expect(totals.membershipChanges).toBeGreaterThan(seeds * 10);
    expect(totals.crashes).toBeGreaterThan(0);
    expect(totals.partitions).toBeGreaterThan(0);
    expect(totals.conflicts).toBeGreaterThan(0);
  }, Math.max(120_000, seeds * 2_000)); // long runs (CHANNEL_SIM_SEEDS=1000) take about 300 ms a seed here

  it(`holds every check over ${lostDiskSeeds} seeds with lost disks`, () => {
    console.log(`channel sim, lost disks: seeds ${base}..${base + lostDiskSeeds - 1} (CHANNEL_SIM_SEED=${base} reproduces; faultScale 3)`);
    const failed: ChannelSimResult[] = [];
    let [lostDisks, lostCopies] = [0, 0];
    for (let seed = base; seed < base + lostDiskSeeds; seed++) {
      const result = runChannelSimulation({ seed, lostDisks: true, faultScale: 3 });
      if (result.violations.length > 0) failed.push(result);
      lostDisks += result.lostDisks;
      lostCopies += result.lostCopies;
    }
    console.log(`channel sim, lost disks: ${lostDisks} disks lost, ${lostCopies} copies removed to be added back`);
    expect(failed.map((r) => r.violations[0])).toEqual([]);
    expect(lostDisks).toBeGreaterThan(0);
    expect(lostCopies).toBeGreaterThan(0);
  }, Math.max(120_000, lostDiskSeeds * 20_000)); // about 4 s a seed here (copies catch up one entry per Append)

  it(`with disks lost during membership changes too, no replica diverges over ${lostDiskSeeds} seeds (a channel may stall: the open gap)`, () => {
    console.log(`channel sim, disks lost during changes: seeds ${base}..${base + lostDiskSeeds - 1} (CHANNEL_SIM_SEED=${base} reproduces; faultScale 5)`);
    const unsafe: ChannelSimResult[] = [];
    let [lostDisks, duringChanges, stalled] = [0, 0, 0];
    for (let seed = base; seed < base + lostDiskSeeds; seed++) {
      const result = runChannelSimulation({ seed, lostDisks: true, lostDisksDuringChanges: true, faultScale: 5 });
      if (result.violations.some((v) => v.check !== "liveness")) unsafe.push(result);
      if (result.violations.some((v) => v.check === "liveness")) stalled++;
      lostDisks += result.lostDisks;
      duringChanges += result.lostDisksDuringChanges;
    }
    console.log(`channel sim, disks lost during changes: ${lostDisks} disks lost, ${duringChanges} during a change; ${stalled} of ${lostDiskSeeds} runs left a channel stalled`);
    expect(unsafe.map((r) => r.violations.find((v) => v.check !== "liveness"))).toEqual([]);
    expect(duringChanges).toBeGreaterThan(0);
  }, Math.max(120_000, lostDiskSeeds * 20_000));

  it("catches copies made anew without a catch-up floor (no-catch-up-floor) with state-machine-safety", () => {
    const caught = [];
    // About four seeds in ten break safety (the rest mostly liveness): 25 miss with a chance under 1 in 10^5.
    for (let seed = base; seed < base + 25 && caught.length === 0; seed++) {
      const result = runChannelSimulation({ seed, lostDisks: true, faultScale: 5, broken: "no-catch-up-floor" });
      if (result.violations.some((v) => v.check === "state-machine-safety")) caught.push(seed);
    }
    expect(caught.length).toBe(1);
  }, 120_000);

  it("is deterministic: a seed replays to the same result", () => {
    expect(runChannelSimulation({ seed: base, steps: 800 })).toEqual(runChannelSimulation({ seed: base, steps: 800 }));
  });

  it.each([
    ["admit-unsettled", "removed-homeserver-gets-nothing"],
    ["no-busy", "certificate-voters"],
  ] as const)("catches a leader that breaks the rule (%s) with %s", (broken, check) => {
    const caught = [];
    for (let seed = base; seed < base + 10 && caught.length === 0; seed++) {
      const result = runChannelSimulation({ seed, broken });
      if (result.violations.length > 0) caught.push(result.violations[0]!);
    }
    expect(caught.map((v) => v.check)).toEqual([check]);
  });
});
