/**
 * The report of a chaos run: one JSON document (configuration, seed, schedule, faults as injected, leader
 * changes, operation counts, throughput and latency per time bucket, checker statistics and violations)
 * and the HTML page drawn from it (report-html.ts).
 */
import type { CheckResult } from "./checker.ts";
import type { ChaosConfig } from "./chaos-config.ts";
import type { HistoryOp } from "./history.ts";
import type { InjectedFault } from "./injector.ts";
import type { LeaderChange } from "./leader-poller.ts";
import type { ReportPage, TimelineSpan } from "./report-html.ts";
import type { ScheduledFault } from "./schedule.ts";
import type { WorkloadStats } from "./workload.ts";

/** Throughput and latency of one time bucket. */
export interface Bucket {
  readonly startMs: number;
  readonly okCommits: number;
  readonly okMessages: number;
  readonly unknownOps: number;
  readonly commitP50Ms: number;
  readonly commitP99Ms: number;
}

/** Everything a chaos run reports. */
export interface ChaosReport {
  readonly seed: number;
  readonly config: ChaosConfig;
  readonly startedAt: string;
  /** Workload and faults, then the whole run including startup, heal, settle and checks. */
  readonly workloadMs: number;
  readonly totalMs: number;
  readonly schedule: readonly ScheduledFault[];
  readonly faults: readonly InjectedFault[];
  readonly faultsPerKind: Readonly<Record<string, number>>;
  readonly leaderChanges: readonly LeaderChange[];
  readonly ops: { readonly total: number; readonly byKindOutcome: Readonly<Record<string, number>> };
  readonly workload: WorkloadStats;
  readonly buckets: readonly Bucket[];
  readonly check: CheckResult;
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

/** Per-bucket throughput and commit latency from the history. */
export function bucketize(ops: readonly HistoryOp[], durationMs: number, bucketMs: number): Bucket[] {
  const buckets: Bucket[] = [];
  for (let start = 0; start < durationMs; start += bucketMs) {
    const inBucket = ops.filter((o) => o.endMs !== undefined && o.endMs >= start && o.endMs < start + bucketMs);
    const commits = inBucket.filter((o) => o.kind === "commit" && o.outcome === "ok");
    const latencies = commits.map((o) => o.endMs! - o.invokeMs).sort((a, b) => a - b);
    buckets.push({
      startMs: start,
      okCommits: commits.length,
      okMessages: inBucket.filter((o) => o.kind === "message" && o.outcome === "ok").length,
      unknownOps: inBucket.filter((o) => o.outcome === "unknown").length,
      commitP50Ms: percentile(latencies, 0.5),
      commitP99Ms: percentile(latencies, 0.99),
    });
  }
  return buckets;
}

/** Counts of operations by "kind/outcome". */
export function countOps(ops: readonly HistoryOp[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const o of ops) counts[`${o.kind}/${o.outcome}`] = (counts[`${o.kind}/${o.outcome}`] ?? 0) + 1;
  return counts;
}

function leaderSpans(changes: readonly LeaderChange[], group: string, endMs: number): TimelineSpan[] {
  const mine = changes.filter((c) => c.group === group);
  return mine.map((c, i) => ({ startMs: c.atMs, endMs: mine[i + 1]?.atMs ?? endMs, label: `${group}: ${c.leader} leads in term ${c.term}`, colorKey: `leader ${c.leader}` }));
}

/** The HTML page of a chaos report. */
export function chaosReportPage(report: ChaosReport): ReportPage {
  const end = report.workloadMs;
  const kinds = [...new Set(report.faults.map((f) => f.kind))];
  const groups = [...new Set(report.leaderChanges.map((c) => c.group))];
  const bucketSeconds = report.buckets.length > 1 ? (report.buckets[1]!.startMs - report.buckets[0]!.startMs) / 1000 : 1;
  const violations = report.check.violations;
  return {
    title: `epochd chaos run, seed ${report.seed}`,
    subtitle: `${report.config.nodes} homeservers, ${report.config.channels} channels, ${Math.round(report.workloadMs / 1000)} s of workload under faults; started ${report.startedAt}`,
    status: violations.length === 0 ? "ok" : "fail",
    summary: [
      ["violations", String(violations.length)],
      ["operations", String(report.ops.total)],
      ["acknowledged commits", String(report.check.stats.acknowledgedCommits)],
      ["acknowledged messages", String(report.check.stats.acknowledgedMessages)],
      ["faults injected", Object.entries(report.faultsPerKind).map(([k, n]) => `${k} ${n}`).join(", ") || "none"],
      ["leader changes", String(report.leaderChanges.length)],
      ["run length", `${Math.round(report.totalMs / 1000)} s in total, ${Math.round(report.workloadMs / 1000)} s under faults`],
      ["reproduce", `epochd chaos --seed ${report.seed} (same configuration)`],
    ],
    timeline: {
      durationMs: end,
      lanes: [
        ...kinds.map((kind) => ({ label: kind, spans: report.faults.filter((f) => f.kind === kind).map((f) => ({ startMs: f.startMs, endMs: f.endMs ?? end, label: `#${f.index} ${f.kind}: ${f.detail}`, colorKey: `fault ${f.target}` })) })),
        ...groups.map((g) => ({ label: `leader (${g})`, spans: leaderSpans(report.leaderChanges, g, end) })),
      ],
      markers: report.leaderChanges.map((c) => ({ atMs: c.atMs, label: `${c.group}: ${c.leader} term ${c.term}` })),
      series: [
        { label: "commits acknowledged", unit: "/s", points: report.buckets.map((b) => [b.startMs, b.okCommits / bucketSeconds] as const) },
        { label: "messages acknowledged", unit: "/s", points: report.buckets.map((b) => [b.startMs, b.okMessages / bucketSeconds] as const) },
        { label: "commit latency p50", unit: "ms", points: report.buckets.map((b) => [b.startMs, b.commitP50Ms] as const) },
        { label: "commit latency p99", unit: "ms", points: report.buckets.map((b) => [b.startMs, b.commitP99Ms] as const) },
      ],
    },
    bars: [],
    tables: [
      { title: "Operations", columns: ["kind/outcome", "count"], rows: Object.entries(report.ops.byKindOutcome).sort() },
      { title: "Faults", columns: ["#", "kind", "target", "start s", "end s", "what"], rows: report.faults.map((f) => [f.index, f.kind, f.target, f.startMs / 1000, (f.endMs ?? end) / 1000, f.detail]) },
      { title: "Workload actions", columns: ["action", "count"], rows: Object.entries(report.workload.actions) },
      { title: "Client errors (expected under faults; outcomes recorded as unknown)", columns: ["error", "count"], rows: Object.entries(report.workload.errors) },
      { title: "Checker", columns: ["statistic", "value"], rows: Object.entries(report.check.stats) },
    ],
    details: violations.length === 0 ? [] : [{ title: "Violations", text: JSON.stringify(violations.slice(0, 50), null, 2) }],
  };
}
