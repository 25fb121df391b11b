/**
 * `npm run bench -- groups [--groups N] [--idle-seconds S] [--write-seconds S] [--inflight K]`:
 * many Raft groups in one process. Starts 3 real homeservers (`epochd start`,
 * mutual TLS, fsync on), creates N test groups (default 10,000) with all 3 as
 * voters through TestGroupService (test-only, peer port), waits until every
 * group has a leader and every group is quiet, then measures per process the
 * idle CPU (% of one core over S seconds, default 30), RSS, the time to
 * create the groups, and writes/s spread over all groups vs in one group.
 * Prints a table; writes bench/results/groups.json.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { GroupsClient } from "../test/integration/groups-client.ts";
import { ProcessCluster } from "../test/integration/process-cluster.ts";
import { positiveOption } from "./lib/options.ts";
import { cpuTimeMs, rssMiB } from "./lib/proc.ts";
import { fixed, formatTable, integer } from "./lib/table.ts";

interface Options {
  readonly groups: number;
  readonly idleSeconds: number;
  readonly writeSeconds: number;
  readonly inflight: number;
  /** Groups created per step; the next step waits until these are led and quiet, as channels appear over time. */
  readonly chunk: number;
}

function parseOptions(args: string[]): Options {
  const value = (name: string, fallback: number) => positiveOption(args, name, fallback);
  return { groups: value("groups", 10_000), idleSeconds: value("idle-seconds", 30), writeSeconds: value("write-seconds", 10), inflight: value("inflight", 64), chunk: value("chunk", 500) };
}

const ids = ["hs1", "hs2", "hs3"];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls until every group has a leader and only the cluster group is awake; returns ms waited. */
async function waitQuiet(client: GroupsClient, groups: number, timeoutMs: number): Promise<number> {
  const start = performance.now();
  let last = "";
  while (performance.now() - start < timeoutMs) {
    client.leaders.clear();
    const counts = await client.refreshLeaders(ids).catch(() => undefined);
    if (counts !== undefined) {
      last = ids.map((id) => `${id}: awake ${counts.get(id)?.awake}/${counts.get(id)?.groups}, leads ${counts.get(id)?.leading}`).join("; ");
      if (client.leaders.size === groups && ids.every((id) => (counts.get(id)?.awake ?? Infinity) <= 1)) return performance.now() - start;
    }
    await sleep(250);
  }
  throw new Error(`groups not all led and quiet within ${timeoutMs} ms (${last})`);
}

/** Writes for `seconds` with `inflight` writers, each picking its group from `pick`; returns acked writes/s. */
async function writeLoad(client: GroupsClient, seconds: number, inflight: number, pick: (i: number) => number): Promise<number> {
  const until = performance.now() + seconds * 1000;
  let acked = 0;
  let seq = 0;
  const writer = async (w: number) => {
    for (let i = 0; performance.now() < until && i < 10_000_000; i++) {
      const n = pick(w * 1_000_003 + i);
      if (await client.put(n, `k${seq++ % 100}`, "v".repeat(64), ids)) acked++;
    }
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: inflight }, (_, w) => writer(w)));
  return acked / ((performance.now() - start) / 1000);
}

/** Runs the benchmark. */
export async function run(args: string[]): Promise<void> {
  const options = parseOptions(args);
  const cluster = await ProcessCluster.create(3);
  const client = new GroupsClient(cluster);
  try {
    cluster.startAll();
    await cluster.waitForLeader(ids, 60_000);
    const pids = ids.map((id) => cluster.get(id).child!.pid!);
    await sleep(3000);
    const baselineSeconds = Math.min(options.idleSeconds, 10);
    const baselineStart = pids.map((pid) => cpuTimeMs(pid) ?? 0);
    await sleep(baselineSeconds * 1000);
    const baselineCpuPercent = pids.map((pid, i) => ((cpuTimeMs(pid) ?? 0) - baselineStart[i]!) / (baselineSeconds * 10));
    const rssBefore = pids.map((pid) => rssMiB(pid));
    console.log(`creating ${integer(options.groups)} groups on each of ${ids.length} homeservers ...`);
    const createStart = performance.now();
    for (let first = 0; first < options.groups; first += options.chunk) {
      const count = Math.min(options.chunk, options.groups - first);
      await client.create(first, count, ids);
      await waitQuiet(client, first + count, 600_000);
    }
    const createMs = performance.now() - createStart;
    const quietMs = await waitQuiet(client, options.groups, 600_000);
    const leading = ids.map((id) => [...client.leaders.values()].filter((l) => l === id).length);
    console.log(`created in ${fixed(createMs / 1000, 1)} s; every group led and quiet ${fixed(quietMs / 1000, 1)} s later; measuring idle for ${options.idleSeconds} s ...`);
    await sleep(2000);
    const cpuStart = pids.map((pid) => cpuTimeMs(pid) ?? 0);
    const idleStart = performance.now();
    await sleep(options.idleSeconds * 1000);
    const idleMs = performance.now() - idleStart;
    const idleCpuPercent = pids.map((pid, i) => (100 * ((cpuTimeMs(pid) ?? 0) - cpuStart[i]!)) / idleMs);
    const rssIdle = pids.map((pid) => rssMiB(pid));
    console.log(`writing for ${options.writeSeconds} s spread over all groups, then ${options.writeSeconds} s to one group, ${options.inflight} in flight ...`);
    let state = 12345;
    const spreadPerSecond = await writeLoad(client, options.writeSeconds, options.inflight, () => {
      state = (state * 1103515245 + 12345) % 2147483648;
      return state % options.groups;
    });
    const onePerSecond = await writeLoad(client, options.writeSeconds, options.inflight, () => 0);
    const rssAfter = pids.map((pid) => rssMiB(pid));
    const rows = ids.map((id, i) => ({
      homeserver: id,
      groups: options.groups,
      leads: leading[i]!,
      createSeconds: createMs / 1000,
      idleCpuPercentOfCore: idleCpuPercent[i]!,
      idleCpuPercentWithoutGroups: baselineCpuPercent[i]!,
      rssBeforeMiB: rssBefore[i],
      rssIdleMiB: rssIdle[i],
      rssAfterWritesMiB: rssAfter[i],
    }));
    console.log(
      formatTable(
        ["homeserver", "groups", "leads", "create s", "idle CPU % core (no groups)", "idle CPU % core", "RSS before MiB", "RSS idle MiB", "RSS after writes MiB"],
        rows.map((r) => [r.homeserver, integer(r.groups), integer(r.leads), fixed(r.createSeconds, 1), fixed(r.idleCpuPercentWithoutGroups, 2), fixed(r.idleCpuPercentOfCore, 2), fixed(r.rssBeforeMiB, 0), fixed(r.rssIdleMiB, 0), fixed(r.rssAfterWritesMiB, 0)]),
        new Set([1, 2, 3, 4, 5, 6, 7, 8]),
      ),
    );
    console.log(
      formatTable(
        ["writes", "writes/s"],
        [[`spread over ${integer(options.groups)} groups`, integer(spreadPerSecond)], ["one group", integer(onePerSecond)]],
        new Set([1]),
      ),
    );
    const result = {
      bench: "groups",
      options,
      quietSeconds: quietMs / 1000,
      rows: [
        ...rows,
        { homeserver: "all", writes: "spread", writesPerSecond: spreadPerSecond },
        { homeserver: "all", writes: "one group", writesPerSecond: onePerSecond },
      ],
      at: new Date().toISOString(),
    };
    const resultsDir = resolve(import.meta.dirname, "results");
    mkdirSync(resultsDir, { recursive: true });
    writeFileSync(join(resultsDir, "groups.json"), JSON.stringify(result, null, 2) + "\n");
  } finally {
    client.close();
    await cluster.close();
  }
}
