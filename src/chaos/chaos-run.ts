/**
 * One chaos run, start to end: start a cluster of real homeserver processes, set up the channels, run
 * the workload while the seeded fault schedule plays, heal everything, let the devices catch up, read
 * every homeserver's final state, check the history, write the JSON and HTML reports, stop every
 * process. Returns the report; the caller decides what a violation means (exit code, test failure).
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { ChaosCluster } from "./chaos-cluster.ts";
import type { ChaosConfig } from "./chaos-config.ts";
import { bucketize, chaosReportPage, countOps, type ChaosReport } from "./chaos-report.ts";
import { checkHistory } from "./checker.ts";
import { readFinalState } from "./final-state.ts";
import { HistoryRecorder, type HomeserverFinal } from "./history.ts";
import { FaultInjector } from "./injector.ts";
import { LeaderPoller } from "./leader-poller.ts";
import { renderReportHtml } from "./report-html.ts";
import { drawSchedule } from "./schedule.ts";
import { Workload } from "./workload.ts";

/** Where a run's files went. */
export interface ChaosRunResult {
  readonly report: ChaosReport;
  readonly jsonPath: string;
  readonly htmlPath: string;
  /** The cluster's directory (data, logs), when kept. */
  readonly keptRoot: string | undefined;
}

/** Extra knobs for tests. */
export interface ChaosRunOptions {
  /** The project whose bin/epochd.mjs runs the homeservers (default: this one). */
  readonly projectRoot?: string;
  readonly log?: (line: string) => void;
}

/** This project's root: bin/epochd.mjs sets EPOCHD_ROOT (the code may run from a bundle under .build/). */
const projectRootOfThisFile = process.env.EPOCHD_ROOT ?? resolve(import.meta.dirname, "../..");

/** Lifts every fault: restarts stopped homeservers, resumes paused ones, heals the network, resets controls. */
async function healAll(cluster: ChaosCluster): Promise<void> {
  cluster.network.healAll();
  for (const id of cluster.ids()) {
    cluster.setControl(id, { syncDelayMs: 0, clockOffsetMs: 0 });
    if (cluster.get(id).paused) cluster.setPaused(id, false);
    if (!cluster.isRunning(id)) cluster.start(id);
  }
}

/** Runs one chaos run with `config` (seed drawn and printed when absent). */
export async function runChaos(config: ChaosConfig, options: ChaosRunOptions = {}): Promise<ChaosRunResult> {
  const log = options.log ?? ((line: string) => console.log(line));
  const seed = config.seed ?? randomBytes(4).readUInt32BE() % 1_000_000_000;
  const runStarted = Date.now();
  const runTag = `${seed}-${runStarted.toString(36)}`;
  log(`chaos: seed ${seed} (reproduce with --seed ${seed}), ${config.nodes} homeservers, ${config.durationSeconds} s, faults ${config.faults.join(",")}`);
  const root = join(tmpdir(), `epochd-chaos-${runTag}`);
  const cluster = await ChaosCluster.create({
    nodes: config.nodes,
    root,
    projectRoot: options.projectRoot ?? projectRootOfThisFile,
    clockPreloadPath: join(projectRootOfThisFile, "src/chaos/clock-preload.mjs"),
    electionTimeoutMs: config.electionTimeoutMs,
    heartbeatIntervalMs: config.heartbeatIntervalMs,
    tickIntervalMs: config.tickIntervalMs,
    hibernateAfterMs: config.hibernateAfterMs,
  });
  let keep = config.keep;
  try {
    cluster.startAll();
    log(`chaos: cluster up, leader ${await cluster.waitForLeader(90_000)} (${Date.now() - runStarted} ms); files in ${root}`);
    await cluster.waitForDirectory(60_000);
    const history = new HistoryRecorder();
    const access = { homeservers: cluster.ids(), clientAddress: (id: string) => cluster.get(id).clientAddress, channels: (id: string) => cluster.channels(id), caPem: cluster.caPem() };
    const workload = new Workload(
      { seed, channels: config.channels, membersPerChannel: config.membersPerChannel, localChannelEvery: config.localChannelEvery, actionPauseMsMin: config.actionPauseMsMin, actionPauseMsMax: config.actionPauseMsMax },
      access,
      history,
    );
    await workload.setUp(runTag);
    const workloadStarted = Date.now();
    const now = () => Date.now() - history.startedAtMs;
    const durationMs = config.durationSeconds * 1000;
    // Drawn relative to the workload's start, so the same seed gives the same schedule; played shifted.
    const schedule = drawSchedule({
      seed, nodes: config.nodes, kinds: config.faults,
      faultsStartMs: config.faultsStartMs, faultsEndMs: durationMs - 1_000,
      gapMsMin: config.faultGapMsMin, gapMsMax: config.faultGapMsMax,
      durationMsMin: config.faultDurationMsMin, durationMsMax: config.faultDurationMsMax,
    });
    log(`chaos: ${config.channels} channels set up; ${schedule.length} faults scheduled`);
    const poller = new LeaderPoller(cluster, now);
    poller.start();
    const offsetMs = now();
    const injector = new FaultInjector(cluster, schedule.map((f) => ({ ...f, atMs: f.atMs + offsetMs })), now, (line) => log(`chaos: ${Math.round(now() / 100) / 10} s ${line}`));
    const injecting = injector.run();
    const stopAt = workloadStarted + durationMs;
    await workload.run(() => Date.now() >= stopAt);
    const workloadMs = now();
    await injector.stop();
    await injecting;
    await healAll(cluster);
    log(`chaos: workload done (${history.ops.length} operations); healed, waiting for the cluster`);
    // A homeserver that cannot come back is not an error of the harness: the final reads report it.
    await cluster.waitForLeader(30_000).catch((error: unknown) => log(`chaos: after the heal: ${(error as Error).message}`));
    await workload.settle(30, 30_000);
    poller.stop();
    const final: Record<string, HomeserverFinal> = {};
    // Each channel from every homeserver hosting its group (those of its members at the end).
    await Promise.all(
      cluster.ids().map(async (id) => {
        const hosted = workload.channelIds().filter((channelId) => workload.hostsOf(channelId).includes(id));
        final[id] = await readFinalState(cluster.channels(id), hosted, 30_000, (channelId) => workload.readerMetadata(channelId, id));
      }),
    );
    await workload.finish(20_000);
    workload.close();
    const check = checkHistory({ ops: history.ops, deliveries: history.deliveries, final, sentTexts: history.sentTexts });
    const faultsPerKind: Record<string, number> = {};
    for (const f of injector.injected) faultsPerKind[f.kind] = (faultsPerKind[f.kind] ?? 0) + 1;
    const report: ChaosReport = {
      seed,
      config: { ...config, seed },
      startedAt: new Date(runStarted).toISOString(),
      workloadMs,
      totalMs: Date.now() - runStarted,
      schedule,
      faults: injector.injected,
      faultsPerKind,
      leaderChanges: poller.changes,
      ops: { total: history.ops.length, byKindOutcome: countOps(history.ops) },
      workload: workload.stats,
      buckets: bucketize(history.ops, workloadMs, Math.max(1_000, Math.round(workloadMs / 120 / 1000) * 1000)),
      check,
    };
    keep ||= check.violations.length > 0;
    mkdirSync(config.reportDir, { recursive: true });
    const base = join(config.reportDir, `chaos-${seed}`);
    writeFileSync(`${base}.json`, JSON.stringify({ ...report, history: check.violations.length > 0 ? history.ops : undefined }, null, 1));
    writeFileSync(`${base}.html`, renderReportHtml(chaosReportPage(report)));
    log(`chaos: ${report.ops.total} operations, faults ${JSON.stringify(faultsPerKind)}, ${poller.changes.length} leader changes, ${check.violations.length} violation(s); report ${base}.html`);
    for (const v of check.violations.slice(0, 10)) log(`VIOLATION ${v.check}${v.channel === undefined ? "" : ` ${v.channel}`}: ${v.message}`);
    return { report, jsonPath: `${base}.json`, htmlPath: `${base}.html`, keptRoot: keep ? root : undefined };
  } catch (error) {
    keep = true;
    for (const id of cluster.ids()) log(`--- ${id} log tail\n${cluster.logTail(id, 10)}`);
    throw error;
  } finally {
    await cluster.close(keep);
  }
}
