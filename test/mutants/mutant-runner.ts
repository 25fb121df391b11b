/**
 * Runs the simulator of a source tree (normally a mutated copy of src/) over
 * consecutive seeds until a violation or a budget is reached, and prints one
 * JSON line: { caught, seed, invariant, message, seedsRun, ms }.
 *
 * usage: node --import tsx test/mutants/mutant-runner.ts <root> <maxSeeds> <budgetMs> [runs]
 * where <root>/src/sim/index.ts is the simulator to run, and `runs` (JSON:
 * nodes, steps, faults, knobs) replaces the default configurations.
 */
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import type * as SimModule from "../../src/sim/index.ts";
import type { MutantRuns } from "./mutants.ts";

/** Configurations cycled through by seed: small and larger clusters, all faults. */
const configs = [
  { nodes: 3, steps: 400 },
  { nodes: 5, steps: 600 },
];

function fail(message: string): never {
  throw new Error(message);
}

async function main(): Promise<void> {
  const [root, maxSeedsText, budgetText, runsText] = process.argv.slice(2);
  if (root === undefined) throw new Error("usage: mutant-runner.ts <root> [maxSeeds] [budgetMs] [runs]");
  const maxSeeds = Number(maxSeedsText ?? "200");
  const budgetMs = Number(budgetText ?? "60000");
  const sim = (await import(pathToFileURL(join(root, "src/sim/index.ts")).href)) as typeof SimModule;
  const runs = runsText === undefined ? undefined : (JSON.parse(runsText) as MutantRuns);
  const faults = new Set<SimModule.FaultKind>(runs === undefined ? sim.faultKinds : runs.faults.map((f) => sim.faultKinds.find((k) => k === f) ?? fail(`no fault kind ${f}`)));
  const started = performance.now();
  const firstSeed = runs?.firstSeed ?? 1;
  for (let seed = firstSeed; seed < firstSeed + maxSeeds; seed++) {
    const config = runs ?? configs[seed % configs.length]!;
    const result = sim.runSimulation({ seed, nodes: config.nodes, steps: config.steps, faults, ...(runs === undefined ? {} : { knobs: runs.knobs }) });
    const v = result.violations[0];
    const ms = Math.round(performance.now() - started);
    if (v !== undefined) {
      console.log(JSON.stringify({ caught: true, seed, nodes: config.nodes, invariant: v.invariant, message: v.message, seedsRun: seed - firstSeed + 1, ms }));
      return;
    }
    if (ms > budgetMs) {
      console.log(JSON.stringify({ caught: false, seedsRun: seed - firstSeed + 1, ms }));
      return;
    }
  }
  console.log(JSON.stringify({ caught: false, seedsRun: maxSeeds, ms: Math.round(performance.now() - started) }));
}

await main();
