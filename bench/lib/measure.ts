/**
 * One measured benchmark row: runs a load phase while sampling the server
 * processes' CPU and memory and the load generator's own CPU, so every row
 * says not only how fast but what it cost and who was the bottleneck.
 */
import { runPhase, type PhaseOptions, type PhaseResult, type WriteTarget } from "./load.ts";
import { ProcessSampler } from "./proc.ts";

/** A server process under test. */
export interface ServerProcess {
  readonly name: string;
  readonly pid: number;
}

/** A phase's result plus resource use. */
export interface MeasuredRow extends PhaseResult {
  readonly system: string;
  readonly mode: string;
  /** CPU use per server process during the phase (warm-up included), percent of one core. */
  readonly cpuPercent: Record<string, number>;
  /** Highest resident memory sampled per server process during the phase, MiB. */
  readonly peakRssMiB: Record<string, number>;
  /** CPU use of the load generator (this process), percent of one core. */
  readonly clientCpuPercent: number;
}

/** Runs one phase of `mode` against `target` and samples `servers` meanwhile. */
export async function measureRow(system: string, mode: string, target: WriteTarget, servers: readonly ServerProcess[], options: PhaseOptions): Promise<MeasuredRow> {
  const sampler = new ProcessSampler(servers.map((s) => s.pid));
  const clientStart = process.cpuUsage();
  const startedMs = performance.now();
  sampler.start();
  const result = await runPhase(target, options);
  const samples = sampler.stop();
  const clientUsage = process.cpuUsage(clientStart);
  const elapsedMs = Math.max(1, performance.now() - startedMs);
  const cpuPercent: Record<string, number> = {};
  const peakRssMiB: Record<string, number> = {};
  for (const server of servers) {
    const sample = samples.get(server.pid);
    cpuPercent[server.name] = sample?.cpuPercent ?? 0;
    peakRssMiB[server.name] = sample?.peakRssMiB ?? 0;
  }
  return {
    ...result,
    system,
    mode,
    cpuPercent,
    peakRssMiB,
    clientCpuPercent: (100 * (clientUsage.user + clientUsage.system)) / 1000 / elapsedMs,
  };
}
