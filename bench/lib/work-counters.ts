/**
 * Work per operation, read from the homeservers' Prometheus counters: peer
 * messages, Ready rounds, synced writes, entries and group loads summed over
 * every homeserver. Counts of work move far less between runs on a shared
 * machine than rates do, so they are what an A/B comparison of a change to
 * the commit path rests on (see docs/benchmarks.md).
 */

import { parseMetricsText } from "../../src/node/metrics.ts";

/** The counters read, by column name: each sums these series (a prefix match on `name{labels}`) over all homeservers. */
const series: Readonly<Record<string, readonly string[]>> = {
  "msgs": ['epochd_peer_messages_total{direction="sent"}'],
  "heartbeats": ['epochd_peer_heartbeats_total{direction="sent"}'],
  "batches": ['epochd_peer_batches_total{direction="sent"}'],
  "rounds": ["epochd_raft_ready_rounds_total"],
  "fsyncs": ["epochd_fsync_latency_seconds_count"],
  "entries": ["epochd_committed_entries_total"],
  "loads": ["epochd_raft_group_loads_total"],
};

/** The column names, in print order. */
export const workColumns: readonly string[] = Object.keys(series);

/** The stages of a SubmitCommit the homeservers time (`epochd_commit_stage_seconds`), in order. */
export const commitStages: readonly string[] = ["admit", "order", "certify", "settle"];

/** The histogram series of each stage, read with the counters (not work columns themselves). */
const stageSeries: Readonly<Record<string, readonly string[]>> = Object.fromEntries(
  commitStages.flatMap((stage) => [
    [`${stage} sum`, [`epochd_commit_stage_seconds_sum{stage="${stage}"}`]],
    [`${stage} count`, [`epochd_commit_stage_seconds_count{stage="${stage}"}`]],
  ]),
);

/** Counter totals over all homeservers, by column. */
export type WorkTotals = Record<string, number>;

async function scrapeOne(address: string): Promise<Map<string, number>> {
  const response = await fetch(`http://${address}/metrics`, { signal: AbortSignal.timeout(5000) });
  return parseMetricsText(await response.text());
}

/** Reads the counters of every homeserver at `metricsAddresses` and sums them per column. */
export async function readWorkTotals(metricsAddresses: readonly string[]): Promise<WorkTotals> {
  const scraped = await Promise.all(metricsAddresses.map(scrapeOne));
  const totals: WorkTotals = {};
  for (const [column, names] of [...Object.entries(series), ...Object.entries(stageSeries)]) {
    let sum = 0;
    for (const samples of scraped) {
      for (const [key, value] of samples) if (names.some((name) => key === name || (!name.includes("{") && key.startsWith(`${name}{`)))) sum += value;
    }
    totals[column] = sum;
  }
  return totals;
}

/** (after - before) / operations, per column. */
export function perOperation(before: WorkTotals, after: WorkTotals, operations: number): WorkTotals {
  const per: WorkTotals = {};
  for (const column of workColumns) per[column] = operations > 0 ? ((after[column] ?? 0) - (before[column] ?? 0)) / operations : Number.NaN;
  return per;
}

/** Mean ms of each SubmitCommit stage over the calls served between `before` and `after`, all homeservers together. */
export function stageMeansMs(before: WorkTotals, after: WorkTotals): Record<string, number> {
  const means: Record<string, number> = {};
  for (const stage of commitStages) {
    const delta = (suffix: string) => (after[`${stage} ${suffix}`] ?? 0) - (before[`${stage} ${suffix}`] ?? 0);
    means[stage] = delta("count") > 0 ? (1000 * delta("sum")) / delta("count") : Number.NaN;
  }
  return means;
}
