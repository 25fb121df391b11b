/**
 * `npm run bench -- sim [--seconds N]`: how fast the deterministic simulator
 * runs on one core, in simulated node-ticks per second (a node-tick is one
 * `tick()` of one real Raft core, with all the messages, disk writes and
 * invariant checks that happen around it), per second of this process's CPU
 * time so a busy machine does not skew it (wall-clock rates are printed too).
 * Prints a table and writes
 * bench/results/sim.json. The aim is at least 50,000 node-ticks/s.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { faultKinds, runSimulation, type FaultKind } from "../src/sim/index.ts";

const resultsDir = join(dirname(fileURLToPath(import.meta.url)), "results");

interface Row {
  nodes: number;
  faults: string;
  seeds: number;
  /** Per second of this process's CPU time: the one-core rate, whatever else the machine runs. */
  nodeTicksPerSecond: number;
  /** Per second of wall-clock time (lower when other processes share the cores). */
  nodeTicksPerWallSecond: number;
  stepsPerSecond: number;
  eventsPerSecond: number;
  heapMiB: number;
}

function measure(nodes: number, faults: ReadonlySet<FaultKind>, label: string, seconds: number): Row {
  let nodeTicks = 0;
  let ticks = 0;
  let events = 0;
  let seeds = 0;
  let heap = 0;
  const started = performance.now();
  const cpuStarted = process.cpuUsage();
  while (performance.now() - started < seconds * 1000) {
    const r = runSimulation({ seed: ++seeds, nodes, steps: 1000, faults });
    nodeTicks += r.nodeTicks;
    ticks += r.ticks;
    events += r.events;
    heap = Math.max(heap, process.memoryUsage().heapUsed);
  }
  const wall = (performance.now() - started) / 1000;
  const used = process.cpuUsage(cpuStarted);
  const cpu = (used.user + used.system) / 1e6;
  return {
    nodes,
    faults: label,
    seeds,
    nodeTicksPerSecond: Math.round(nodeTicks / cpu),
    nodeTicksPerWallSecond: Math.round(nodeTicks / wall),
    stepsPerSecond: Math.round(ticks / cpu),
    eventsPerSecond: Math.round(events / cpu),
    heapMiB: Math.round(heap / 2 ** 20),
  };
}

function table(rows: readonly Row[]): string {
  const head = ["nodes", "faults", "seeds", "node-ticks/s", "(wall)", "steps/s", "events/s", "heap MB"];
  const body = rows.map((r) =>
    [r.nodes, r.faults, r.seeds, r.nodeTicksPerSecond, r.nodeTicksPerWallSecond, r.stepsPerSecond, r.eventsPerSecond, r.heapMiB].map(String),
  );
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 1 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  return [line(head), ...body.map(line)].join("\n");
}

/** Runs the benchmark; `args` may hold `--seconds N` (per configuration, default 4). */
export async function run(args: string[]): Promise<void> {
  const i = args.indexOf("--seconds");
  const seconds = i >= 0 ? Number(args[i + 1]) : 4;
  if (!(seconds > 0)) throw new RangeError("--seconds must be a positive number");
  const configs: [number, ReadonlySet<FaultKind>, string][] = [
    [3, new Set(), "none"],
    [3, new Set(faultKinds), "all"],
    [5, new Set(), "none"],
    [5, new Set(faultKinds), "all"],
    [7, new Set(faultKinds), "all"],
  ];
  // Warm up the JIT on every configuration first: the first runs are several times slower.
  const warmUntil = performance.now() + 1500;
  for (let seed = 1; performance.now() < warmUntil; seed++) {
    const [nodes, faults] = configs[seed % configs.length]!;
    runSimulation({ seed, nodes, steps: 300, faults });
  }
  const rows = configs.map(([nodes, faults, label]) => measure(nodes, faults, label, seconds));
  console.log(
    `simulator on one core, ${seconds}s per row, 1000-step seeds; rates per CPU-second, (wall) per wall-second ` +
      `(load average ${loadavg()[0]!.toFixed(2)})`,
  );
  console.log(table(rows));
  const aim = 50_000;
  const worst = Math.min(...rows.map((r) => r.nodeTicksPerSecond));
  console.log(worst >= aim ? `all rows at or above ${aim} node-ticks/s` : `below the aim of ${aim} node-ticks/s in some rows`);
  mkdirSync(resultsDir, { recursive: true });
  const result = { date: new Date().toISOString(), cpu: cpus()[0]?.model ?? "", loadAverage: loadavg()[0], secondsPerRow: seconds, aimNodeTicksPerSecond: aim, rows };
  writeFileSync(join(resultsDir, "sim.json"), `${JSON.stringify(result, null, 2)}\n`);
}
