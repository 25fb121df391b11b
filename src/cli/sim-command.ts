/**
 * `epochd sim`: runs the deterministic cluster simulator for one or more
 * seeds and reports elections, commits and invariant violations. Exit code 0
 * when every run is safe and live, 1 on any violation, 2 on bad arguments.
 */
import { parseArgs } from "node:util";
import { faultKinds, parseFaultKinds, runSimulation, type FaultKind, type SimResult, type Violation } from "../sim/index.ts";

const usage = `usage: epochd sim [options]

Runs N real Raft cores in virtual time under injected faults and checks the
Raft safety invariants after every event, then liveness once faults heal.
A step is one tick of the whole cluster (every node ticks once; 10 virtual ms).

options:
  --seed S        first seed (default 1)
  --seeds M       run M consecutive seeds S, S+1, ... (default 1)
  --nodes N       initial voters, 1-9 (default 5)
  --steps K       ticks of the fault phase per seed (default 1000)
  --faults LIST   comma-separated: ${faultKinds.join(",")}; or all, none (default all)
  --stop          stop after the first seed with a violation
  --json          print one JSON object as the last line
  --verbose       print one line per seed even with --json
  --help          this text`;

interface SimArgs {
  seed: number;
  seeds: number;
  nodes: number;
  steps: number;
  faults: Set<FaultKind>;
  json: boolean;
  verbose: boolean;
  stop: boolean;
}

function integer(name: string, text: string | undefined, fallback: number, min: number, max: number): number {
  if (text === undefined) return fallback;
  if (!/^-?\d+$/.test(text)) throw new RangeError(`--${name} must be an integer, got "${text}"`);
  const value = Number(text);
  if (value < min || value > max) throw new RangeError(`--${name} must be in [${min}, ${max}], got ${value}`);
  return value;
}

/** Parses the command line; throws RangeError (or parseArgs' TypeError) on bad input. */
export function parseSimArgs(args: string[]): SimArgs | "help" {
  const { values } = parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: {
      seed: { type: "string" },
      seeds: { type: "string" },
      nodes: { type: "string" },
      steps: { type: "string" },
      faults: { type: "string" },
      json: { type: "boolean" },
      stop: { type: "boolean" },
      verbose: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help === true) return "help";
  return {
    seed: integer("seed", values.seed, 1, 0, 2 ** 31 - 1),
    seeds: integer("seeds", values.seeds, 1, 1, 10_000_000),
    nodes: integer("nodes", values.nodes, 5, 1, 9),
    steps: integer("steps", values.steps, 1000, 1, 100_000_000),
    faults: parseFaultKinds(values.faults ?? "all"),
    json: values.json === true,
    verbose: values.verbose === true,
    stop: values.stop === true,
  };
}

function seedLine(r: SimResult, ms: number): string {
  const status = r.violations.length === 0 ? "ok" : `VIOLATION ${r.violations[0]!.invariant}`;
  return (
    `seed ${String(r.seed).padStart(6)}  ticks ${String(r.ticks).padStart(5)}  elections ${String(r.elections).padStart(3)}  ` +
    `commits ${String(r.commits).padStart(5)}  acked ${String(r.acked).padStart(5)}  faults ${String(r.faults).padStart(3)}  ` +
    `recovery ${String(r.recoveryTicks).padStart(4)}t  ${ms.toFixed(0).padStart(5)}ms  ${status}`
  );
}

/** A violation as readable text: what broke, how to reproduce, and the trace. */
export function formatViolation(v: Violation, args: Pick<SimArgs, "nodes" | "steps" | "faults">): string {
  const faults = args.faults.size === faultKinds.length ? "all" : [...args.faults].join(",") || "none";
  return [
    `VIOLATION of ${v.invariant} (seed ${v.seed}, at ${v.atMs.toFixed(1)} virtual ms): ${v.message}`,
    `  reproduce: npx epochd sim --seed ${v.seed} --nodes ${args.nodes} --steps ${args.steps} --faults ${faults}`,
    `  last events:`,
    ...v.trace.map((line) => `    ${line}`),
  ].join("\n");
}

/** The `sim` subcommand. */
export async function simCommand(argv: string[]): Promise<number> {
  let args: SimArgs | "help";
  try {
    args = parseSimArgs(argv);
  } catch (error) {
    console.error(`epochd sim: ${error instanceof Error ? error.message : String(error)}\n\n${usage}`);
    return 2;
  }
  if (args === "help") {
    console.log(usage);
    return 0;
  }
  const totals = { steps: 0, ticks: 0, nodeTicks: 0, elections: 0, commits: 0, acked: 0, faults: 0 };
  const violations: Violation[] = [];
  const started = performance.now();
  let seedsRun = 0;
  for (let seed = args.seed; seed < args.seed + args.seeds; seed++) {
    seedsRun++;
    const t0 = performance.now();
    const r = runSimulation({ seed, nodes: args.nodes, steps: args.steps, faults: args.faults });
    for (const key of Object.keys(totals) as (keyof typeof totals)[]) totals[key] += r[key];
    violations.push(...r.violations);
    if (!args.json || args.verbose) console.log(seedLine(r, performance.now() - t0));
    for (const v of r.violations) (args.json ? console.error : console.log)(formatViolation(v, args));
    if (args.stop && r.violations.length > 0) break;
  }
  const seconds = (performance.now() - started) / 1000;
  const summary = {
    seeds: seedsRun,
    firstSeed: args.seed,
    nodes: args.nodes,
    faultKinds: [...args.faults],
    ...totals,
    violations,
    seconds: Number(seconds.toFixed(3)),
    stepsPerSecond: Math.round(totals.ticks / seconds),
    nodeTicksPerSecond: Math.round(totals.nodeTicks / seconds),
  };
  if (args.json) {
    console.log(JSON.stringify(summary));
  } else {
    console.log(
      `${seedsRun} seeds, ${totals.ticks} steps, ${totals.elections} elections, ${totals.commits} commits, ` +
        `${violations.length} violations in ${seconds.toFixed(1)}s (${summary.stepsPerSecond} steps/s, ${summary.nodeTicksPerSecond} node-ticks/s)`,
    );
  }
  return violations.length > 0 ? 1 : 0;
}
