/**
 * `npm run bench -- raft`: committed 1 KiB writes per second and per-write
 * latency on a fresh local 3-homeserver epochd cluster (TLS, fsync on), at
 * concurrency 1, 16, 64 and 256 over PutStream (plus unary Put at 1 and 16
 * for reference), and the same workload against a local 3-member etcd cluster
 * when `etcd` is on PATH. Prints a table and writes bench/results/raft.json.
 * Options: see `help` below and docs/benchmarks.md.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { intFlag, parseArgs } from "../src/cli/args.ts";
import { summariseProfile } from "./lib/cpu-profile.ts";
import { etcdVersion } from "./lib/etcd-cluster.ts";
import type { PhaseOptions } from "./lib/load.ts";
import { measureRow, type MeasuredRow } from "./lib/measure.ts";
import { probeFsyncMs } from "./lib/fsync-probe.ts";
import { peakRssMiB, signalPid } from "./lib/proc.ts";
import { startEpochd, startEtcd, type SystemUnderTest, type WriteMode } from "./lib/systems.ts";
import { fixed, formatTable, integer } from "./lib/table.ts";
import { concurrencyListOption } from "./lib/options.ts";

const help = `usage: npm run bench -- raft [--seconds N] [--warmup-seconds N] [--concurrency 1,16,64,256]
                             [--unary-concurrency 1,16] [--keys N] [--value-bytes N]
                             [--insecure] [--etcd-tls] [--no-etcd] [--only-etcd] [--profile] [--keep]`;

const benchDir = dirname(fileURLToPath(import.meta.url));
const resultsDir = join(benchDir, "results");

/** etcd 3.4, 3 members on this 2-core machine, 1 KiB puts (issue 3): writes/s by concurrency. */
const etcdReferenceWritesPerSecond: Readonly<Record<number, number>> = { 1: 560, 16: 1800, 64: 2300, 256: 2800 };

interface BenchOptions {
  readonly phase: Omit<PhaseOptions, "concurrency">;
  readonly concurrencies: readonly number[];
  readonly unaryConcurrencies: readonly number[];
  readonly insecure: boolean;
  /** etcd with TLS as epochd runs it (client TLS, mutual TLS between members), instead of plaintext. */
  readonly etcdTls: boolean;
  readonly etcd: boolean;
  readonly epochd: boolean;
  readonly profile: boolean;
  readonly keep: boolean;
}

/** What one system's run produced. */
interface SystemRun {
  readonly system: string;
  readonly version: string;
  readonly processes: Array<{ name: string; pid: number; role: string; peakRssMiB: number | undefined }>;
  readonly rows: BenchRow[];
  readonly skipped?: string;
}

/** The machine just before the run: 1-minute load average and a 1 KiB write+fdatasync probe. */
interface MachineConditions {
  readonly loadAverage1m: number;
  readonly fsyncP50Ms: number;
  readonly fsyncP99Ms: number;
}

function probeConditions(dir: string): MachineConditions {
  const fsync = probeFsyncMs(dir);
  return { loadAverage1m: loadavg()[0] ?? 0, fsyncP50Ms: fsync.p50Ms, fsyncP99Ms: fsync.p99Ms };
}

function parseOptions(args: string[]): BenchOptions {
  const { flags } = parseArgs(args, new Set(["insecure", "etcd-tls", "no-etcd", "only-etcd", "profile", "keep", "help"]));
  if (flags.has("help")) {
    console.log(help);
    process.exit(0);
  }
  const seconds = Number(flags.get("seconds") ?? 10);
  const warmupSeconds = Number(flags.get("warmup-seconds") ?? 2);
  if (!(seconds > 0 && seconds <= 600) || !(warmupSeconds >= 0 && warmupSeconds <= 60)) throw new Error("--seconds must be in (0, 600], --warmup-seconds in [0, 60]");
  return {
    phase: {
      warmupMs: warmupSeconds * 1000,
      measureMs: seconds * 1000,
      keySpace: intFlag(flags, "keys", 10_000),
      valueBytes: intFlag(flags, "value-bytes", 1024),
    },
    concurrencies: concurrencyListOption(flags.get("concurrency"), [1, 16, 64, 256]),
    unaryConcurrencies: concurrencyListOption(flags.get("unary-concurrency"), [1, 16]),
    insecure: flags.has("insecure"),
    etcdTls: flags.has("etcd-tls"),
    etcd: !flags.has("no-etcd"),
    epochd: !flags.has("only-etcd"),
    profile: flags.has("profile"),
    keep: flags.has("keep"),
  };
}

/** Stops whatever is running when the process is interrupted. */
const cleanups = new Set<() => Promise<void>>();

function printProgress(row: BenchRow): void {
  const errors = row.errors > 0 ? `  errors ${row.errors} (${row.firstError ?? ""})` : "";
  console.error(`  ${row.system} ${row.mode} c=${row.concurrency} (leader ${row.leader}): ${integer(row.writesPerSecond)} writes/s  p50 ${fixed(row.p50Ms, 2)} ms  p99 ${fixed(row.p99Ms, 2)} ms${errors}`);
}

/** Starts the systems to compare, each stopped again by `cleanups` if a later one fails. */
async function startSystems(options: BenchOptions, workDir: string, profileDir: string | undefined): Promise<{ systems: SystemUnderTest[]; skipped: string[] }> {
  const systems: SystemUnderTest[] = [];
  const skipped: string[] = [];
  if (options.epochd) {
    const hook = join(benchDir, "lib", "cpu-profiler-hook.mjs");
    const env: Record<string, string> =
      profileDir === undefined ? {} : { NODE_OPTIONS: `${process.env["NODE_OPTIONS"] ?? ""} --import ${hook}`.trim(), EPOCHD_BENCH_CPU_PROFILE_DIR: profileDir };
    console.error(`epochd: starting 3 homeservers (${options.insecure ? "plaintext" : "TLS"}, fsync on) in ${join(workDir, "epochd")}`);
    const epochd = await startEpochd(join(workDir, "epochd"), options.insecure, env);
    cleanups.add(epochd.stop);
    systems.push(epochd);
  }
  if (options.etcd) {
    const version = etcdVersion();
    if (version === undefined) {
      console.error("etcd: etcd not installed, skipped");
      skipped.push("etcd not installed, skipped");
    } else {
      console.error(`etcd ${version}: starting 3 members (${options.etcdTls ? "TLS" : "plaintext"}) in ${join(workDir, "etcd")}`);
      const etcd = await startEtcd(join(workDir, "etcd"), options.etcdTls);
      cleanups.add(etcd.stop);
      systems.push(etcd);
    }
  }
  return { systems, skipped };
}

/** A measured row and the leader it wrote to. */
type BenchRow = MeasuredRow & { readonly leader: string };

/** One phase of `mode` at `concurrency` against `system`'s current leader, on a fresh connection. */
async function runRow(system: SystemUnderTest, mode: WriteMode, concurrency: number, options: BenchOptions): Promise<BenchRow> {
  const open = await system.open(mode);
  try {
    const row = { ...(await measureRow(system.system, mode, open.target, system.processes, { ...options.phase, concurrency })), leader: open.leaderName };
    printProgress(row);
    return row;
  } finally {
    open.close();
  }
}

/**
 * Every row: for each concurrency, each system's primary mode in turn (so a
 * change in machine load hits both alike), then epochd's unary reference rows.
 */
async function runRows(systems: readonly SystemUnderTest[], options: BenchOptions): Promise<Map<SystemUnderTest, BenchRow[]>> {
  const rows = new Map<SystemUnderTest, BenchRow[]>(systems.map((s) => [s, []]));
  for (const concurrency of options.concurrencies) {
    for (const system of systems) rows.get(system)!.push(await runRow(system, system.modes[0]!, concurrency, options));
  }
  for (const concurrency of options.unaryConcurrencies) {
    for (const system of systems) {
      if (system.modes[0] !== "unary" && system.modes.includes("unary")) rows.get(system)!.push(await runRow(system, "unary", concurrency, options));
    }
  }
  return rows;
}

/** "leader" for the process that led every row, "leader of some rows" after a leader change, else "follower". */
function roleOf(name: string, rows: readonly BenchRow[]): string {
  const led = rows.filter((r) => r.leader === name).length;
  return led === 0 ? "follower" : led === rows.length ? "leader" : `leader of ${led}/${rows.length} rows`;
}

/** Starts the systems, measures, records peak memory, and stops them by pid. */
async function benchSystems(options: BenchOptions, workDir: string, profileDir: string | undefined): Promise<SystemRun[]> {
  const { systems, skipped } = await startSystems(options, workDir, profileDir);
  try {
    // The profiler hook starts sampling on SIGUSR2: from here on, start-up excluded.
    if (profileDir !== undefined) for (const p of systems.find((s) => s.system === "epochd")?.processes ?? []) signalPid(p.pid, "SIGUSR2");
    const rows = await runRows(systems, options);
    const runs: SystemRun[] = systems.map((system) => ({
      system: system.system,
      version: system.version,
      processes: system.processes.map((p) => ({ ...p, role: roleOf(p.name, rows.get(system) ?? []), peakRssMiB: peakRssMiB(p.pid) })),
      rows: rows.get(system) ?? [],
    }));
    if (options.etcd && skipped.length > 0) runs.push({ system: "etcd", version: "", processes: [], rows: [], skipped: skipped[0]! });
    return runs;
  } finally {
    for (const system of systems) {
      await system.stop();
      cleanups.delete(system.stop);
    }
  }
}

function leaderCpu(row: BenchRow): number | undefined {
  return row.cpuPercent[row.leader];
}

function followerCpu(row: BenchRow): number | undefined {
  const values = Object.entries(row.cpuPercent).filter(([name]) => name !== row.leader).map(([, cpu]) => cpu);
  return values.length === 0 ? undefined : Math.max(...values);
}

/** The results table: one row per (system, mode, concurrency). */
function renderTable(runs: readonly SystemRun[]): string {
  const etcd = runs.find((r) => r.system === "etcd");
  const headers = ["system", "mode", "conc", "writes/s", "p50 ms", "p99 ms", "ours/etcd", "aim w/s", "errors", "leader", "leader cpu%", "follower cpu%", "client cpu%"];
  const rows: string[][] = [];
  for (const run of runs) {
    for (const row of run.rows) {
      const etcdRow = etcd?.rows.find((r) => r.concurrency === row.concurrency);
      const ratio = run.system !== "etcd" && etcdRow !== undefined ? row.writesPerSecond / etcdRow.writesPerSecond : undefined;
      const reference = etcdReferenceWritesPerSecond[row.concurrency];
      const aim = run.system === "epochd" && reference !== undefined ? 2 * reference : undefined;
      rows.push([
        run.system, row.mode, String(row.concurrency), integer(row.writesPerSecond), fixed(row.p50Ms, 2), fixed(row.p99Ms, 2),
        ratio === undefined ? "" : `${ratio.toFixed(2)}x`, aim === undefined ? "" : integer(aim), String(row.errors), row.leader,
        fixed(leaderCpu(row), 0), fixed(followerCpu(row), 0), fixed(row.clientCpuPercent, 0),
      ]);
    }
  }
  return formatTable(headers, rows, new Set([2, 3, 4, 5, 6, 7, 8, 10, 11, 12]));
}

function renderProcesses(runs: readonly SystemRun[]): string {
  const rows = runs.flatMap((run) => run.processes.map((p) => [run.system, p.name, p.role, fixed(p.peakRssMiB, 1)]));
  return formatTable(["system", "process", "role", "peak RSS MiB"], rows, new Set([3]));
}

function renderConditions(c: MachineConditions): string {
  return `machine before the run: load average ${c.loadAverage1m.toFixed(2)}, 1 KiB write+fdatasync p50 ${fixed(c.fsyncP50Ms, 2)} ms, p99 ${fixed(c.fsyncP99Ms, 2)} ms`;
}

function machineInfo(conditions: MachineConditions): Record<string, unknown> {
  const cores = cpus();
  return {
    cores: cores.length,
    cpuModel: cores[0]?.model ?? "",
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
    date: new Date().toISOString(),
    ...conditions,
  };
}

function reportProfiles(profileDir: string, run: SystemRun | undefined): Record<string, unknown> {
  const summaries: Record<string, unknown> = {};
  for (const process of run?.processes ?? []) {
    const file = readdirSync(profileDir).find((f) => f.endsWith(".cpuprofile") && f.includes(`.${process.pid}.`));
    if (file === undefined) continue;
    const summary = summariseProfile(join(profileDir, file), 25);
    summaries[process.name] = { file: join(profileDir, file), role: process.role, ...summary };
    if (!process.role.startsWith("leader")) continue;
    console.log(`\nCPU profile of the leader ${process.name} (${join(profileDir, file)}), ${(summary.sampledMs / 1000).toFixed(1)} s sampled:`);
    console.log(`busy ${summary.busyPercent.toFixed(0)}% of the time; self time by module, percent of busy time:`);
    console.log(formatTable(["busy %", "module"], summary.byModule.slice(0, 15).map((m) => [m.selfPercentOfBusy.toFixed(1), m.module]), new Set([0])));
    console.log("top functions by self time, percent of all samples:");
    console.log(formatTable(["self %", "total %", "function"], summary.bySelf.map((h) => [h.selfPercent.toFixed(1), h.totalPercent.toFixed(1), h.name]), new Set([0, 1])));
  }
  return summaries;
}

/** Entry point called by bench/run.ts. */
export async function run(args: string[]): Promise<void> {
  const options = parseOptions(args);
  const workDir = mkdtempSync(join(tmpdir(), "epochd-bench-"));
  const conditions = probeConditions(workDir);
  if (conditions.loadAverage1m > 0.5) console.error(`warning: load average ${conditions.loadAverage1m.toFixed(2)} before start; other work on this machine will skew the numbers`);
  const profileDir = options.profile ? resolve(resultsDir, "profiles", new Date().toISOString().replace(/[:.]/g, "-")) : undefined;
  if (profileDir !== undefined) mkdirSync(profileDir, { recursive: true });
  const interrupt = () => {
    console.error("interrupted: stopping clusters");
    void Promise.all([...cleanups].map((c) => c())).finally(() => process.exit(130));
  };
  process.once("SIGINT", interrupt);
  process.once("SIGTERM", interrupt);
  let runs: SystemRun[];
  try {
    runs = await benchSystems(options, workDir, profileDir);
  } catch (error) {
    console.error(`bench raft failed: ${error instanceof Error ? error.message : String(error)}`);
    process.exitCode = 1;
    return;
  } finally {
    if (!options.keep) rmSync(workDir, { recursive: true, force: true });
    else console.error(`kept data in ${workDir}`);
    process.removeListener("SIGINT", interrupt);
    process.removeListener("SIGTERM", interrupt);
  }
  const seconds = options.phase.measureMs / 1000;
  console.log(`\n1 KiB puts, ${options.phase.keySpace} keys, ${seconds} s per row after ${options.phase.warmupMs / 1000} s warm-up, 3 members each, ${cpus().length} cores shared with the client`);
  console.log(renderTable(runs));
  for (const run of runs) if (run.skipped !== undefined) console.log(`${run.system}: ${run.skipped}`);
  console.log(`\n${renderProcesses(runs)}`);
  console.log(`\n${renderConditions(conditions)}`);
  const profiles = profileDir === undefined ? undefined : reportProfiles(profileDir, runs.find((r) => r.system === "epochd"));
  mkdirSync(resultsDir, { recursive: true });
  const json = { machine: machineInfo(conditions), options, etcdReferenceWritesPerSecond, runs, profiles };
  writeFileSync(join(resultsDir, "raft.json"), `${JSON.stringify(json, null, 2)}\n`);
  console.log(`\nwrote ${join(resultsDir, "raft.json")}`);
}
