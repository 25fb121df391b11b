/**
 * `npm run bench -- snapshot [--mib 256] [--value-kib 64] [--keep]`: how a
 * homeserver whose data directory was wiped rejoins a cluster holding a large
 * state, and what that costs in memory. Starts a local 3-homeserver cluster
 * (`epochd cluster up`, TLS, fsync on; logs compacted every 500 entries so
 * that the rejoin must go through a snapshot), writes `--mib` MiB of key-value
 * state in `--value-kib` KiB values, stops one follower (SIGTERM), wipes its
 * database and starts it again. Prints the time until it has applied the
 * leader's commit index, the transfer rate, and the resident memory of the
 * leader and the rejoining homeserver (before, and at their peak during the
 * rejoin, sampled every 50 ms). Writes bench/results/snapshot.json.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";
import { epochdChannel, findEpochdLeader, startEpochdCluster, stopEpochdCluster, type EpochdCluster } from "./lib/epochd-cluster.ts";
import { putStreamTarget } from "./lib/grpc-targets.ts";
import { positiveOption } from "./lib/options.ts";
import { cpuTimeMs, isAlive, rssMiB, signalPid, stopPids } from "./lib/proc.ts";
import { fixed, formatTable, integer } from "./lib/table.ts";

const binPath = resolve(dirname(fileURLToPath(import.meta.url)), "../bin/epochd.mjs");
const usage = "usage: npm run bench -- snapshot [--mib 256] [--value-kib 64] [--keep]";

/** The cluster group's status on one homeserver, from `epochd status --json`. */
async function clusterGroupStatus(dataDir: string): Promise<Map<string, { commit: number; applied: number; role: string }>> {
  const output = await new Promise<string>((resolvePromise) => {
    const child = spawn(process.execPath, [binPath, "status", "--data", dataDir, "--json"], { stdio: ["ignore", "pipe", "ignore"] });
    let text = "";
    child.stdout.on("data", (chunk: Buffer) => (text += chunk.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    child.once("exit", () => {
      clearTimeout(timer);
      resolvePromise(text);
    });
  });
  const statuses = new Map<string, { commit: number; applied: number; role: string }>();
  try {
    const parsed = JSON.parse(output) as { homeservers: Array<{ id: string; reachable: boolean; groups: Array<{ groupId: string; commit: number; applied: number; role: string }> }> };
    for (const h of parsed.homeservers) {
      const group = h.groups.find((g) => g.groupId === "cluster");
      if (h.reachable && group !== undefined) statuses.set(h.id, group);
    }
  } catch {
    // Not JSON (a homeserver starting): no statuses this time.
  }
  return statuses;
}

/** Writes `count` distinct keys of `valueBytes` each through one PutStream, `inflight` at a time. */
async function writeState(cluster: EpochdCluster, leaderAddress: string, count: number, valueBytes: number, inflight: number): Promise<void> {
  const channel = epochdChannel(cluster, leaderAddress);
  const target = putStreamTarget(channel);
  let next = 0;
  let failed: Error | undefined;
  const value = Buffer.alloc(valueBytes, 0x5a);
  await new Promise<void>((done) => {
    let running = 0;
    const pump = (): void => {
      while (running < inflight && next < count && failed === undefined) {
        const key = Buffer.from(`state/${String(next++).padStart(8, "0")}`);
        running += 1;
        target.write(key, value, (error) => {
          running -= 1;
          if (error !== null) failed ??= error;
          if ((next >= count || failed !== undefined) && running === 0) done();
          else pump();
        });
      }
    };
    pump();
  });
  target.close();
  channel.close();
  if (failed !== undefined) throw failed;
}

export async function run(args: string[]): Promise<void> {
  if (args.includes("--help")) {
    console.log(usage);
    return;
  }
  const mib = positiveOption(args, "mib", 256);
  const valueKib = positiveOption(args, "value-kib", 64);
  const keep = args.includes("--keep");
  const count = Math.ceil((mib * 1024) / valueKib);
  const workDir = mkdtempSync(join(tmpdir(), "epochd-bench-snapshot-"));
  const dataDir = join(workDir, "epochd");
  console.error(`epochd: starting 3 homeservers (TLS, fsync on, compaction every 500 entries) in ${dataDir}`);
  const cluster = await startEpochdCluster({ dataDir, insecure: false, nodes: 3, env: { EPOCHD_SNAPSHOT_EVERY_ENTRIES: "500", EPOCHD_SNAPSHOT_KEEP_ENTRIES: "100" } });
  const restarted: number[] = [];
  try {
    const leaderAddress = await findEpochdLeader(cluster);
    const leader = cluster.homeservers.find((h) => h.clientAddress === leaderAddress)!;
    const victim = cluster.homeservers.find((h) => h !== leader)!;
    console.error(`writing ${count} values of ${valueKib} KiB (${mib} MiB) through ${leader.id}`);
    const writeStarted = performance.now();
    await writeState(cluster, leaderAddress, count, valueKib * 1024, 16);
    const writeSeconds = (performance.now() - writeStarted) / 1000;

    const config = parseYaml(readFileSync(join(dataDir, `${victim.id}.yaml`), "utf8")) as { dataDir: string };
    const victimData = resolve(dataDir, config.dataDir);
    signalPid(victim.pid, "SIGTERM");
    const stopDeadline = Date.now() + 20_000;
    while (isAlive(victim.pid) && Date.now() < stopDeadline) await new Promise((r) => setTimeout(r, 50));
    if (isAlive(victim.pid)) await stopPids([victim.pid], 1000);
    rmSync(join(victimData, "db"), { recursive: true, force: true });
    const before = { leader: rssMiB(leader.pid) ?? 0 };
    const target = (await clusterGroupStatus(dataDir)).get(leader.id)?.commit ?? 0;
    if (target < count) throw new Error(`the leader's commit index ${target} is below the ${count} writes: status not read`);

    console.error(`${victim.id}: database wiped; starting it again (the leader's commit index is ${target})`);
    const log = openSync(join(dataDir, `${victim.id}.rejoin.log`), "a");
    const child = spawn(process.execPath, [binPath, "start", "--config", join(dataDir, `${victim.id}.yaml`)], { stdio: ["ignore", log, log], detached: true });
    child.unref();
    const pid = child.pid!;
    restarted.push(pid);
    const started = performance.now();
    const leaderCpuStartMs = cpuTimeMs(leader.pid) ?? 0;
    let victimCpuMs = 0;
    const peak = { leader: before.leader, victim: 0 };
    const sampler = setInterval(() => {
      peak.leader = Math.max(peak.leader, rssMiB(leader.pid) ?? 0);
      peak.victim = Math.max(peak.victim, rssMiB(pid) ?? 0);
      victimCpuMs = cpuTimeMs(pid) ?? victimCpuMs;
    }, 50);
    let caughtUpMs: number | undefined;
    const deadline = Date.now() + 600_000;
    while (caughtUpMs === undefined && Date.now() < deadline && isAlive(pid)) {
      await new Promise((r) => setTimeout(r, 200));
      const applied = (await clusterGroupStatus(dataDir)).get(victim.id)?.applied ?? 0;
      if (applied >= target) caughtUpMs = performance.now() - started;
    }
    clearInterval(sampler);
    const cpuPercent = { leader: (100 * ((cpuTimeMs(leader.pid) ?? 0) - leaderCpuStartMs)) / (caughtUpMs ?? 1), victim: (100 * (cpuTimeMs(pid) ?? victimCpuMs)) / (caughtUpMs ?? 1) };
    const victimLog = readFileSync(join(dataDir, `${victim.id}.rejoin.log`), "utf8");
    const throughSnapshot = victimLog.includes("installing snapshot from leader");
    if (caughtUpMs === undefined) throw new Error(`${victim.id} did not catch up (alive: ${isAlive(pid)}); its log:\n${victimLog.split("\n").slice(-20).join("\n")}`);
    const afterRss = rssMiB(pid) ?? 0;

    const rows = [[
      String(mib), integer(count), fixed(writeSeconds, 1), fixed(caughtUpMs / 1000, 2), fixed(mib / (caughtUpMs / 1000), 1),
      throughSnapshot ? "yes" : "no", integer(before.leader), integer(peak.leader), integer(peak.victim), integer(afterRss), integer(cpuPercent.leader), integer(cpuPercent.victim),
    ]];
    console.log(`\n${mib} MiB of key-value state (${valueKib} KiB values), 3 homeservers, TLS, fsync on; ${victim.id}'s database wiped, then started again\n`);
    console.log(formatTable(
      ["state MiB", "keys", "write s", "rejoin s", "MiB/s", "via snapshot", "leader RSS before", "leader RSS peak", "rejoiner RSS peak", "rejoiner RSS after", "leader cpu%", "rejoiner cpu%"],
      rows, new Set([0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]),
    ));
    const json = { options: { mib, valueKib, count }, leader: leader.id, rejoiner: victim.id, writeSeconds, rejoinSeconds: caughtUpMs / 1000, throughSnapshot, rssMiB: { leaderBefore: before.leader, leaderPeak: peak.leader, rejoinerPeak: peak.victim, rejoinerAfter: afterRss }, cpuPercent };
    const out = join(dirname(fileURLToPath(import.meta.url)), "results", "snapshot.json");
    writeFileSync(out, `${JSON.stringify(json, null, 2)}\n`);
    console.log(`\nwrote ${out}`);
  } finally {
    await stopPids(restarted.filter((pid) => isAlive(pid)), 5000);
    await stopEpochdCluster(cluster);
    if (!keep) rmSync(workDir, { recursive: true, force: true });
  }
}
