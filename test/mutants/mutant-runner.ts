/**
 * Runs the simulator of a source tree (normally a mutated copy of src/) over
 * consecutive seeds until a violation or a budget is reached, and prints one
 * JSON line: { caught, seed, invariant, message, seedsRun, ms }.
 *
 * usage: node --import tsx test/mutants/mutant-runner.ts <root> <maxSeeds> <budgetMs>
 * where <root>/src/sim/index.ts is the simulator to run.
 */
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import type * as SimModule from "../../src/sim/index.ts";

/** Configurations cycled through by seed: small and larger clusters, all faults. */
const configs = [
  { nodes: 3, steps: 400 },
  { nodes: 5, steps: 600 },
];

async function main(): Promise<void> {
  const [root, maxSeedsText, budgetText] = process.argv.slice(2);
  if (root === undefined) throw new Error("usage: mutant-runner.ts <root> [maxSeeds] [budgetMs]");
  const maxSeeds = Number(maxSeedsText ?? "200");
  const budgetMs = Number(budgetText ?? "60000");
  const sim = (await import(pathToFileURL(join(root, "src/sim/index.ts")).href)) as typeof SimModule;
  const faults = new Set(sim.faultKinds);
  const started = performance.now();
  for (let seed = 1; seed <= maxSeeds; seed++) {
    const config = configs[seed % configs.length]!;
    const result = sim.runSimulation({ seed, nodes: config.nodes, steps: config.steps, faults });
    const v = result.violations[0];
    const ms = Math.round(performance.now() - started);
    if (v !== undefined) {
      console.log(JSON.stringify({ caught: true, seed, nodes: config.nodes, invariant: v.invariant, message: v.message, seedsRun: seed, ms }));
      return;
    }
    if (ms > budgetMs) {
      console.log(JSON.stringify({ caught: false, seedsRun: seed, ms }));
      return;
    }
  }
  console.log(JSON.stringify({ caught: false, seedsRun: maxSeeds, ms: Math.round(performance.now() - started) }));
}

await main();
