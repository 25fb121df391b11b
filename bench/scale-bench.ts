/**
 * `npm run bench -- scale [--channels N] [--idle-seconds S] [--seconds S] [--concurrency C]`: one Raft
 * group per channel at scale. Starts a local 3-homeserver cluster (`epochd cluster up`, TLS, fsync on),
 * creates N channels (default 10,000) of encrypted handshakes as alice@hs1, and gives each members on
 * hs2 (every channel) and hs3 (every other one) with its first commit, so each channel's group grows to
 * 2 or 3 homeservers through learner catch-up and promotion. Waits until the groups have hibernated, then
 * measures per process the idle CPU (% of one core over S seconds, default 120) and resident memory at its end, and commits/s (accepted and certified) spread
 * over all N channels next to commits/s in a single channel, at concurrency C (default 64).
 * Prints tables; writes bench/results/scale.json.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { HandshakeMode } from "../src/gen/epochd/channel/v1/channel_pb.ts";
import { BenchDevice } from "./lib/bench-device.ts";
import { makeEncryptedChannels, type EncryptedChannel } from "./lib/commit-framing.ts";
import { measureCommitRow } from "./lib/commit-load.ts";
import { createChannels, firstCommits } from "./lib/commit-setup.ts";
import { epochdCommitTarget, type CommitSource } from "./lib/commit-targets.ts";
import { epochdChannel, findEpochdLeader, startEpochdCluster, stopEpochdCluster } from "./lib/epochd-cluster.ts";
import { positiveOption } from "./lib/options.ts";
import { cpuTimeMs, rssMiB } from "./lib/proc.ts";
import { fixed, formatTable, integer } from "./lib/table.ts";

interface Options {
  readonly channels: number;
  readonly idleSeconds: number;
  readonly seconds: number;
  readonly concurrency: number;
}

function parseOptions(args: string[]): Options {
  const value = (name: string, fallback: number) => positiveOption(args, name, fallback);
  return { channels: value("channels", 10_000), idleSeconds: value("idle-seconds", 120), seconds: value("seconds", 10), concurrency: value("concurrency", 64) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function source(channels: readonly EncryptedChannel[]): CommitSource {
  return (index, epoch) => ({ commit: channels[index]!.commit(epoch), nextGroupInfo: channels[index]!.groupInfo(epoch + 1) });
}

/** The JavaScript heap in use, the memory outside it (buffers, native), MiB, and the groups hibernating, of a homeserver, from its metrics. */
async function heapOf(metricsAddress: string): Promise<{ heapUsedMiB: number; externalMiB: number; hibernating: number }> {
  const text = await (await fetch(`http://${metricsAddress}/metrics`)).text();
  const gauge = (name: string) => Number(text.split("\n").find((line) => line.startsWith(`${name} `))?.split(" ")[1] ?? NaN);
  return {
    heapUsedMiB: gauge("epochd_process_nodejs_heap_size_used_bytes") / 1_048_576,
    externalMiB: gauge("epochd_process_nodejs_external_memory_bytes") / 1_048_576,
    hibernating: gauge('epochd_raft_groups{state="hibernating"}'),
  };
}

/**
 * Waits until the groups have gone quiet and hibernated (see hibernateAfterMs): at least `minMs`, then
 * until no homeserver's count of hibernating groups changed for 6 s, at most `maxMs`.
 */
async function untilHibernationSettles(metricsAddresses: readonly string[], minMs: number, maxMs: number): Promise<void> {
  const start = Date.now();
  let last = "";
  let stableSince = Date.now();
  while (Date.now() - start < maxMs) {
    await sleep(2000);
    const now = JSON.stringify(await Promise.all(metricsAddresses.map((a) => heapOf(a).then((h) => h.hibernating, () => NaN))));
    if (now !== last) {
      last = now;
      stableSince = Date.now();
    } else if (Date.now() - start >= minMs && Date.now() - stableSince >= 6000) {
      return;
    }
  }
}

/** Retries `register` while the homeservers register themselves in the directory (bounded). */
async function registered<T>(register: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await register();
    } catch (error) {
      if (attempt >= 60) throw error;
      await sleep(500);
    }
  }
}

/** Runs the benchmark. */
export async function run(args: string[]): Promise<void> {
  const options = parseOptions(args);
  const workDir = mkdtempSync(join(tmpdir(), "epochd-scale-"));
  console.error(`material for ${integer(options.channels)} channels ...`);
  const half = Math.ceil(options.channels / 2);
  const two = await makeEncryptedChannels("scale2", half, 1024, ["alice@hs1", "bob@hs2"]);
  const three = await makeEncryptedChannels("scale3", options.channels - half, 1024, ["alice@hs1", "bob@hs2", "carol@hs3"]);
  const channels = [...two, ...three];
  // This bench measures what hibernating groups cost: they leave memory after 10 s quiet here, not
  // the default minute, so that the idle window starts with every group unloaded.
  const cluster = await startEpochdCluster({ dataDir: join(workDir, "epochd"), insecure: false, nodes: 3, env: { EPOCHD_HIBERNATE_AFTER_MS: "10000" } });
  try {
    await findEpochdLeader(cluster);
    const entry = cluster.homeservers.find((h) => h.id === "hs1")!.clientAddress;
    const device = await registered(() => BenchDevice.register(cluster));
    const auth = await device.at(entry);
    const pids = cluster.homeservers.map((h) => h.pid);
    const rssEmpty = pids.map((pid) => rssMiB(pid));
    const setupStart = performance.now();
    console.error(`creating ${integer(channels.length)} channels on hs1 and adding their members on hs2 and hs3 ...`);
    await createChannels(entry, cluster.credentials, cluster.channelOptions, auth, channels, HandshakeMode.ENCRYPTED, 64);
    const createdMs = performance.now() - setupStart;
    const epochs = channels.map(() => 0);
    const connection = epochdChannel(cluster, entry);
    const target = epochdCommitTarget(connection, channels.map((c) => c.channelId), source(channels), auth, 60_000);
    await firstCommits(target, epochs, 64);
    const setupMs = performance.now() - setupStart;
    console.error(`set up in ${fixed(setupMs / 1000, 1)} s (created in ${fixed(createdMs / 1000, 1)} s); letting the groups go quiet and hibernate ...`);
    const layout = JSON.parse(readFileSync(join(cluster.dataDir, "cluster.json"), "utf8")) as { homeservers: Array<{ id: string; metricsAddress: string }> };
    const metricsAddresses = cluster.homeservers.map((h) => layout.homeservers.find((l) => l.id === h.id)!.metricsAddress);
    // The groups hibernate after hibernateAfterMs (10 s here) quiet; slower settings take longer.
    await untilHibernationSettles(metricsAddresses, 15_000, 180_000);
    const cpuStart = pids.map((pid) => cpuTimeMs(pid) ?? 0);
    const idleStart = performance.now();
    await sleep(options.idleSeconds * 1000);
    const idleMs = performance.now() - idleStart;
    const idleCpu = pids.map((pid, i) => (100 * ((cpuTimeMs(pid) ?? 0) - cpuStart[i]!)) / idleMs);
    const rssIdle = pids.map((pid) => rssMiB(pid));
    const heaps = await Promise.all(metricsAddresses.map((address) => heapOf(address).catch(() => ({ heapUsedMiB: NaN, externalMiB: NaN, hibernating: NaN }))));
    console.error(`idle: CPU % of a core ${idleCpu.map((c) => fixed(c, 2)).join(" / ")}, RSS MiB ${rssIdle.map((r) => fixed(r, 0)).join(" / ")} (hs1 / hs2 / hs3)`);
    console.error(`measuring commits for ${options.seconds} s over all channels, then in one channel ...`);
    const processes = cluster.homeservers.map((h) => ({ name: h.id, pid: h.pid }));
    const phase = { concurrency: options.concurrency, warmupMs: 2000, measureMs: options.seconds * 1000 };
    const spread = await measureCommitRow(target, epochs, processes, phase);
    const oneChannel = epochdCommitTarget(connection, [channels[0]!.channelId], source([channels[0]!]), auth, 60_000);
    // One channel orders one commit at a time (each builds on the last): concurrency 1.
    const single = await measureCommitRow(oneChannel, [epochs[0]!], processes, { ...phase, concurrency: 1 });
    connection.close();
    const rows = cluster.homeservers.map((h, i) => ({ homeserver: h.id, channels: channels.length, idleCpuPercentOfCore: idleCpu[i]!, rssEmptyMiB: rssEmpty[i]!, rssIdleMiB: rssIdle[i]!, heapUsedMiB: heaps[i]!.heapUsedMiB, externalMiB: heaps[i]!.externalMiB, hibernating: heaps[i]!.hibernating }));
    console.log(
      formatTable(
        ["homeserver", "channels in cluster", "groups hibernating", "idle CPU % of a core", "RSS empty MiB", "RSS idle MiB", "JS heap used MiB", "external MiB"],
        rows.map((r) => [r.homeserver, integer(r.channels), integer(r.hibernating), fixed(r.idleCpuPercentOfCore, 2), fixed(r.rssEmptyMiB, 0), fixed(r.rssIdleMiB, 0), fixed(r.heapUsedMiB, 0), fixed(r.externalMiB, 0)]),
        new Set([1, 2, 3, 4, 5, 6, 7]),
      ),
    );
    console.log(
      formatTable(
        ["commits", "concurrency", "commits/s", "p50 ms", "p99 ms", "errors"],
        [
          [`spread over ${integer(channels.length)} channels`, String(options.concurrency), integer(spread.commitsPerSecond), fixed(spread.p50Ms, 1), fixed(spread.p99Ms, 1), integer(spread.errors)],
          ["one channel", "1", integer(single.commitsPerSecond), fixed(single.p50Ms, 1), fixed(single.p99Ms, 1), integer(single.errors)],
        ],
        new Set([1, 2, 3, 4, 5]),
      ),
    );
    const result = { bench: "scale", options, setupSeconds: setupMs / 1000, rows: [...rows, { homeserver: "all", load: "spread", ...spread }, { homeserver: "all", load: "one channel", ...single }], at: new Date().toISOString() };
    const resultsDir = resolve(import.meta.dirname, "results");
    mkdirSync(resultsDir, { recursive: true });
    writeFileSync(join(resultsDir, "scale.json"), JSON.stringify(result, null, 2) + "\n");
  } finally {
    await stopEpochdCluster(cluster);
    rmSync(workDir, { recursive: true, force: true });
  }
}
