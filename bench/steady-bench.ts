/**
 * `npm run bench -- steady [--minutes 10] [--concurrency 16]`: a local
 * 3-homeserver cluster under a steady write load for a while; reports whether
 * leadership ever changed (it should not: no faults, so no elections), the
 * write rate, latency and longest event-loop stall per minute, and each
 * homeserver's peak memory.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { unaryClient } from "../src/api/grpc-service.ts";
import { readLocalCluster } from "../src/cli/cluster-layout.ts";
import { KvService } from "../src/gen/epochd/kv/v1/kv_pb.ts";
import { parseMetricsText } from "../src/node/metrics.ts";

const bin = resolve(import.meta.dirname, "../bin/epochd.mjs");

interface StatusJson {
  leader: string | null;
  homeservers: Array<{ id: string; groups: Array<{ term: number; leader: string; applied: number }> }>;
}

function status(dataDir: string): StatusJson {
  return JSON.parse(execFileSync(process.execPath, [bin, "status", "--data", dataDir, "--json"], { encoding: "utf8" })) as StatusJson;
}

function peakRssMb(pid: number): number {
  try {
    const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmHWM:"));
    return line === undefined ? 0 : Math.round(Number(line.split(/\s+/)[1]) / 1024);
  } catch {
    return 0;
  }
}

/** A homeserver's longest event-loop delay since its metrics were last read, in ms (0 when unreadable). */
async function loopLagMaxMs(metricsAddress: string): Promise<number> {
  try {
    const response = await fetch(`http://${metricsAddress}/metrics`, { signal: AbortSignal.timeout(2000) });
    const seconds = parseMetricsText(await response.text()).get("epochd_process_nodejs_eventloop_lag_max_seconds");
    return seconds === undefined || !Number.isFinite(seconds) ? 0 : seconds * 1000;
  } catch {
    return 0;
  }
}

function percentile(sorted: number[], p: number): number {
  return sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export async function run(args: string[]): Promise<void> {
  const flag = (name: string, fallback: number) => {
    const at = args.indexOf(`--${name}`);
    return at < 0 ? fallback : Number(args[at + 1]);
  };
  const minutes = flag("minutes", 10);
  const concurrency = flag("concurrency", 16);
  const dataDir = mkdtempSync(join(tmpdir(), "epochd-steady-"));
  let keep = false;
  try {
    execFileSync(process.execPath, [bin, "cluster", "up", "--data", dataDir, "--base-port", String(flag("base-port", 7700)), "--detach"], { stdio: "inherit" });
    const cluster = readLocalCluster(dataDir)!;
    const before = status(dataDir);
    const leader = before.leader!;
    // Writes go to the leader; after a leader change (the run then fails anyway), to the new one.
    const clientOf = (id: string) =>
      unaryClient(KvService, cluster.homeservers.find((h) => h.id === id)!.clientAddress, grpc.credentials.createSsl(readFileSync(cluster.caCert)), { "grpc.ssl_target_name_override": "localhost" });
    let client = clientOf(leader);
    const value = new Uint8Array(1024);
    const endAt = Date.now() + minutes * 60_000;
    const perMinute: Array<{ writes: number; errors: number; latencies: number[]; loopLagMaxMs?: number }> = [];
    const minuteNow = () => Math.floor((Date.now() - (endAt - minutes * 60_000)) / 60_000);
    /** Failed writes by what failed them (gRPC status and message), for the summary. */
    const errorKinds = new Map<string, number>();
    let leaderChanges = 0;
    let lastLeader = leader;
    const workers = Array.from({ length: concurrency }, async (_, w) => {
      for (let i = 0; Date.now() < endAt; i++) {
        const bucket = (perMinute[minuteNow()] ??= { writes: 0, errors: 0, latencies: [] });
        const started = performance.now();
        try {
          await client.put({ key: new TextEncoder().encode(`k${w}-${i % 1000}`), value }, { deadlineMs: 5000 });
          bucket.writes++;
          bucket.latencies.push(performance.now() - started);
        } catch (error) {
          bucket.errors++;
          const kind = errorKind(error);
          errorKinds.set(kind, (errorKinds.get(kind) ?? 0) + 1);
        }
      }
    });
    const watcher = (async () => {
      while (Date.now() < endAt) {
        await new Promise((r) => setTimeout(r, 5000));
        // The longest event-loop stall of any homeserver since the last scrape (prom-client resets it on each).
        const lagMs = Math.max(...(await Promise.all(cluster.homeservers.map((h) => loopLagMaxMs(h.metricsAddress)))));
        const bucket = perMinute[Math.min(minuteNow(), minutes - 1)];
        if (bucket !== undefined) bucket.loopLagMaxMs = Math.max(bucket.loopLagMaxMs ?? 0, lagMs);
        const now = status(dataDir).leader;
        if (now !== null && now !== lastLeader) {
          leaderChanges++;
          lastLeader = now;
          const previous = client;
          client = clientOf(now);
          previous.close();
        }
      }
    })();
    await Promise.all([...workers, watcher]);
    client.close();
    const after = status(dataDir);
    const termOf = (s: StatusJson) => Math.max(...s.homeservers.flatMap((h) => h.groups.map((g) => g.term)));
    console.log(`\nsteady run: ${minutes} min, ${concurrency} writers of 1 KiB to the leader (${leader} at the start)`);
    console.log("minute  writes/s  p50 ms  p99 ms  errors  loop stall max ms");
    perMinute.forEach((m, i) => {
      const sorted = m.latencies.sort((a, b) => a - b);
      const lag = m.loopLagMaxMs === undefined ? "-" : String(Math.round(m.loopLagMaxMs));
      console.log(`${String(i + 1).padStart(6)}  ${String(Math.round(m.writes / 60)).padStart(8)}  ${percentile(sorted, 50).toFixed(2).padStart(6)}  ${percentile(sorted, 99).toFixed(2).padStart(6)}  ${String(m.errors).padStart(6)}  ${lag.padStart(17)}`);
    });
    console.log("(loop stall: the longest event-loop delay of any homeserver, from its metrics; the election timeout is 1,000 ms)");
    for (const [kind, count] of [...errorKinds].sort((a, b) => b[1] - a[1]).slice(0, 5)) console.log(`errors: ${count} x ${kind}`);
    console.log(`term before ${termOf(before)}, after ${termOf(after)}; leader before ${leader}, after ${after.leader}; leader changes seen: ${leaderChanges}`);
    console.log(`peak RSS (MB): ${cluster.homeservers.map((h) => `${h.id} ${peakRssMb(h.pid ?? 0)}`).join(", ")}`);
    const steady = termOf(after) === termOf(before) && after.leader === leader;
    console.log(steady ? "no leader change" : `LEADERSHIP CHANGED; homeserver logs kept in ${dataDir}`);
    keep = !steady;
  } finally {
    execFileSync(process.execPath, [bin, "cluster", "down", "--data", dataDir], { stdio: "inherit" });
    if (!keep) rmSync(dataDir, { recursive: true, force: true });
  }
}

/** A failed write's gRPC status name and message, with numbers blanked so that alike failures group. */
function errorKind(error: unknown): string {
  const code = (error as { code?: number }).code;
  const name = code === undefined ? "no status" : (grpc.status[code] ?? String(code));
  const details = String((error as { details?: string }).details ?? (error as Error).message ?? error).replace(/\d+/g, "N");
  return `${name}: ${details.slice(0, 160)}`;
}
