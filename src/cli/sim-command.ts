/**
 * `epochd sim`: runs the deterministic cluster simulator for one or more
 * seeds and reports elections, commits and invariant violations. Exit code 0
 * when every run is safe and live, 1 on any violation, 2 on bad arguments.
 */
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { Worker } from "node:worker_threads";
import { faultKinds, parseFaultKinds, runSimulation, type FaultKind, type SimResult, type Violation } from "../sim/index.ts";
import type { WorkerRequest } from "../sim/sim-worker.ts";
import { boundedInteger } from "./args.ts";
import { projectRoot } from "./project-root.ts";

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
  --lost-disks    about every other crash also loses the node's disk (it restarts as new)
  --fault-rate P  chance per tick that a fault starts, in (0, 1] (default 0.06; 0.15 is a
                  harsh campaign: a fault every 7 ticks)
  --stop          stop after the first seed with a violation
  --workers W     run seeds on W threads (default: cores, at most 4; 1 runs in this thread)
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
  workers: number;
  /** The `lostDisks` knob. */
  lostDisks: boolean;
  /** The `faultChancePerTick` knob, when given. */
  faultRate?: number;
}

function probability(name: string, text: string): number {
  const value = Number(text);
  if (!/^\d*\.?\d+$/.test(text) || !(value > 0 && value <= 1)) throw new RangeError(`--${name} must be a number in (0, 1], got "${text}"`);
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
      "lost-disks": { type: "boolean" },
      "fault-rate": { type: "string" },
      json: { type: "boolean" },
      stop: { type: "boolean" },
      workers: { type: "string" },
      verbose: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help === true) return "help";
  return {
    seed: boundedInteger("seed", values.seed, 1, 0, 2 ** 31 - 1),
    seeds: boundedInteger("seeds", values.seeds, 1, 1, 10_000_000),
    nodes: boundedInteger("nodes", values.nodes, 5, 1, 9),
    steps: boundedInteger("steps", values.steps, 1000, 1, 100_000_000),
    faults: parseFaultKinds(values.faults ?? "all"),
    json: values.json === true,
    verbose: values.verbose === true,
    stop: values.stop === true,
    workers: boundedInteger("workers", values.workers, Math.min(4, availableParallelism()), 1, 64),
    lostDisks: values["lost-disks"] === true,
    ...(values["fault-rate"] === undefined ? {} : { faultRate: probability("fault-rate", values["fault-rate"]) }),
  };
}

/** The knobs the command line sets. */
function knobsOf(args: Pick<SimArgs, "lostDisks" | "faultRate">): { lostDisks: boolean; faultChancePerTick?: number } {
  return { lostDisks: args.lostDisks, ...(args.faultRate === undefined ? {} : { faultChancePerTick: args.faultRate }) };
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
export function formatViolation(v: Violation, args: Pick<SimArgs, "nodes" | "steps" | "faults"> & { lostDisks?: boolean; faultRate?: number }): string {
  const faults = args.faults.size === faultKinds.length ? "all" : [...args.faults].join(",") || "none";
  return [
    `VIOLATION of ${v.invariant} (seed ${v.seed}, at ${v.atMs.toFixed(1)} virtual ms): ${v.message}`,
    `  reproduce: npx epochd sim --seed ${v.seed} --nodes ${args.nodes} --steps ${args.steps} --faults ${faults}${args.lostDisks === true ? " --lost-disks" : ""}${args.faultRate === undefined ? "" : ` --fault-rate ${args.faultRate}`}`,
    `  last events:`,
    ...v.trace.map((line) => `    ${line}`),
  ].join("\n");
}

/** A finished seed. */
interface SeedRun {
  readonly result: SimResult;
  readonly ms: number;
}

/**
 * Runs the seeds, on worker threads when `workers` > 1, and hands each
 * result to `report` in seed order. Stops early when `report` returns false.
 */
async function runSeeds(args: SimArgs, report: (run: SeedRun) => boolean): Promise<void> {
  const seeds = Array.from({ length: args.seeds }, (_, i) => args.seed + i);
  const faults = [...args.faults].join(",");
  if (args.workers <= 1 || seeds.length === 1) {
    for (const seed of seeds) {
      const started = performance.now();
      const result = runSimulation({ seed, nodes: args.nodes, steps: args.steps, faults: args.faults, knobs: knobsOf(args) });
      if (!report({ result, ms: performance.now() - started })) return;
    }
    return;
  }
  const done = new Map<number, SeedRun>();
  let nextToReport = 0;
  let nextToStart = 0;
  let stopped = false;
  const workerUrl = pathToFileURL(join(projectRoot(), "src/sim/sim-worker-boot.mjs"));
  const workers = Array.from({ length: Math.min(args.workers, seeds.length) }, () => new Worker(workerUrl));
  try {
    await Promise.all(
      workers.map(
        (worker) =>
          new Promise<void>((resolve, reject) => {
            const startNext = (): void => {
              if (stopped || nextToStart >= seeds.length) return resolve();
              const index = nextToStart++;
              const request: WorkerRequest = { seed: seeds[index]!, nodes: args.nodes, steps: args.steps, faults, knobs: knobsOf(args) };
              worker.once("message", (run: SeedRun) => {
                done.set(index, run);
                for (let r = done.get(nextToReport); r !== undefined && !stopped; r = done.get(nextToReport)) {
                  done.delete(nextToReport++);
                  if (!report(r)) stopped = true;
                }
                startNext();
              });
              worker.postMessage(request);
            };
            worker.once("error", reject);
            startNext();
          }),
      ),
    );
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
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
  const a = args;
  const totals = { steps: 0, ticks: 0, nodeTicks: 0, elections: 0, commits: 0, acked: 0, faults: 0, disksLost: 0 };
  const violations: Violation[] = [];
  const started = performance.now();
  let seedsRun = 0;
  await runSeeds(a, ({ result: r, ms }) => {
    seedsRun++;
    for (const key of Object.keys(totals) as (keyof typeof totals)[]) totals[key] += r[key];
    violations.push(...r.violations);
    if (!a.json || a.verbose) console.log(seedLine(r, ms));
    for (const v of r.violations) (a.json ? console.error : console.log)(formatViolation(v, a));
    return !(a.stop && r.violations.length > 0);
  });
  const seconds = (performance.now() - started) / 1000;
  const summary = {
    seeds: seedsRun,
    firstSeed: a.seed,
    nodes: a.nodes,
    faultKinds: [...a.faults],
    ...(a.faultRate === undefined ? {} : { faultRate: a.faultRate }),
    ...(a.lostDisks ? { lostDisks: true } : {}),
    workers: a.workers,
    ...totals,
    violations,
    seconds: Number(seconds.toFixed(3)),
    stepsPerSecond: Math.round(totals.ticks / seconds),
    nodeTicksPerSecond: Math.round(totals.nodeTicks / seconds),
  };
  if (a.json) {
    console.log(JSON.stringify(summary));
  } else {
    console.log(
      `${seedsRun} seeds, ${totals.ticks} steps, ${totals.elections} elections, ${totals.commits} commits, ` +
        `${a.lostDisks ? `${totals.disksLost} disks lost, ` : ""}${violations.length} violations in ${seconds.toFixed(1)}s on ${a.workers} threads ` +
        `(${summary.stepsPerSecond} steps/s, ${summary.nodeTicksPerSecond} node-ticks/s)`,
    );
  }
  return violations.length > 0 ? 1 : 0;
}
