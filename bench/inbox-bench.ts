/**
 * `npm run bench -- inbox [--members 100] [--messages 500]`: end-to-end inbox
 * delivery on a local 3-homeserver cluster (TLS, fsync on). One real ts-mls
 * channel with `members` devices spread over the 3 homeservers, every member
 * subscribed to its inbox through the SDK (InboxClient); one member sends
 * `messages` application messages one after another. Reports the delivery
 * throughput (messages/s from the first send to the last receipt by every
 * member), the latency from a send to its receipt by the LAST member (p50,
 * p99), and each homeserver's peak RSS, with the CPU time each homeserver and
 * the load generator (this process: the sender and the 100 subscribers) used
 * while the messages flowed, and the load average. Members count receipt by
 * message id; they do not decrypt. `--profile` also samples each homeserver's
 * CPU over that phase and prints where it went.
 */
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { callUnary } from "../src/client/authed-call.ts";
import { Channel, ChannelClient, Device } from "../src/client/index.ts";
import { generateInboxKeyPair, signIdentityRecord } from "../src/client/identity-record.ts";
import { InboxClient } from "../src/client/inbox-client.ts";
import { DeviceSession } from "../src/client/session.ts";
import { IdentityService } from "../src/gen/epochd/identity/v1/identity_pb.ts";
import { EntryKind } from "../src/gen/epochd/inbox/v1/inbox_pb.ts";
import { findEpochdLeader, startEpochdCluster, stopEpochdCluster, type EpochdCluster } from "./lib/epochd-cluster.ts";
import { summariseProfile } from "./lib/cpu-profile.ts";
import { cpuTimeMs, peakRssMiB, signalPid } from "./lib/proc.ts";
import { fixed, formatTable, integer } from "./lib/table.ts";
import { LatencyRecorder, nowMs } from "./lib/stats.ts";

const channelId = "inbox-bench";
/** Members added per commit while building the channel. */
const addBatch = 25;

async function register(cluster: EpochdCluster, caPem: Buffer, clusterId: string, device: Device): Promise<DeviceSession> {
  const address = cluster.homeservers.find((h) => h.id === device.homeserver)!.clientAddress;
  const record = await signIdentityRecord(device, { clusterId, userName: `${device.id.split(".")[0]}@${device.homeserver}`, inboxPublicKey: generateInboxKeyPair().publicKeyRaw, sequence: 1n, createdAtMs: Date.now() });
  const channel = new grpc.Client(address, cluster.credentials, cluster.channelOptions);
  try {
    await callUnary(channel, IdentityService.method.publishIdentity, { records: [record] }, new grpc.Metadata(), 15_000);
  } finally {
    channel.close();
  }
  return new DeviceSession({ deviceId: device.id, sign: (m) => device.sign(m), address, credentials: grpc.credentials.createSsl(caPem), channelOptions: cluster.channelOptions });
}

export async function run(args: string[]): Promise<void> {
  const flag = (name: string, fallback: number) => {
    const at = args.indexOf(`--${name}`);
    return at < 0 ? fallback : Number(args[at + 1]);
  };
  const membersTotal = flag("members", 100);
  const messagesTotal = flag("messages", 500);
  const dataDir = mkdtempSync(join(tmpdir(), "epochd-inbox-bench-"));
  const profileDir = args.includes("--profile") ? join(dataDir, "profiles") : undefined;
  if (profileDir !== undefined) mkdirSync(profileDir);
  const hook = resolve(import.meta.dirname, "lib", "cpu-profiler-hook.mjs");
  const env: Record<string, string> = profileDir === undefined ? {} : { NODE_OPTIONS: `${process.env["NODE_OPTIONS"] ?? ""} --import ${hook}`.trim(), EPOCHD_BENCH_CPU_PROFILE_DIR: profileDir };
  const cluster = await startEpochdCluster({ dataDir, insecure: false, nodes: 3, env });
  const sessions: DeviceSession[] = [];
  const inboxes: InboxClient[] = [];
  let client: ChannelClient | undefined;
  try {
    const leaderAddress = await findEpochdLeader(cluster);
    const layout = JSON.parse(readFileSync(join(dataDir, "cluster.json"), "utf8")) as { caCert: string };
    const caPem = readFileSync(layout.caCert);
    const devices = await Promise.all(Array.from({ length: membersTotal }, (_, i) => Device.create(`m${i}.dev@hs${1 + (i % 3)}`)));
    // The sender's channel client (authenticated as devices[0]), at the leader.
    client = new ChannelClient({ device: devices[0]!, address: leaderAddress, tls: { caPem }, tlsServerName: "localhost", attemptsMax: 60 });
    // Homeservers register themselves in the directory shortly after the leader is elected; they sponsor DIRs only then.
    const directoryDeadline = Date.now() + 30_000;
    let directory = await client.directory(true);
    while (directory.keys.size < 3 && Date.now() < directoryDeadline) {
      await new Promise((r) => setTimeout(r, 100));
      directory = await client.directory(true);
    }
    const clusterId = directory.clusterId;
    // One at a time: concurrent PublishIdentity calls at a follower (which forwards and polls its index) timed out.
    for (const device of devices) sessions.push(await register(cluster, caPem, clusterId, device));
    console.log(`[inbox] ${membersTotal} devices registered`);

    const channel = await Channel.create(devices[0]!, client, channelId);
    for (let at = 1; at < devices.length; at += addBatch) {
      const keyPackages = await Promise.all(devices.slice(at, at + addBatch).map((d) => d.publishKeyPackage()));
      await channel.addMembers(keyPackages);
    }
    console.log(`[inbox] channel ${channelId} has ${channel.members().length} members at epoch ${channel.epoch()}`);

    // receipts.get(messageId) = receipt times (ms) by members so far; the last one completes it.
    const completedAtMs = new Map<string, number>();
    const receipts = new Map<string, number>();
    for (const session of sessions) {
      const inbox = new InboxClient({
        session,
        onEntry: (entry) => {
          if (entry.kind !== EntryKind.MESSAGE) return;
          const count = (receipts.get(entry.messageId) ?? 0) + 1;
          receipts.set(entry.messageId, count);
          if (count === membersTotal) completedAtMs.set(entry.messageId, nowMs());
        },
      });
      inbox.start();
      inboxes.push(inbox);
    }

    const sentAtMs = new Map<string, number>();
    if (profileDir !== undefined) for (const h of cluster.homeservers) signalPid(h.pid, "SIGUSR2");
    const cpuBefore = cluster.homeservers.map((h) => cpuTimeMs(h.pid) ?? 0);
    const ownCpuBefore = process.cpuUsage();
    const firstSendMs = nowMs();
    for (let i = 0; i < messagesTotal; i++) {
      const started = nowMs();
      const sequence = await channel.send(new TextEncoder().encode(`bench message ${i}`));
      sentAtMs.set(`${channelId}#${sequence}`, started);
    }
    const sendEndMs = nowMs();
    const deadline = Date.now() + 120_000;
    while ([...sentAtMs.keys()].some((id) => !completedAtMs.has(id)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const cpuSeconds = cluster.homeservers.map((h, i) => ((cpuTimeMs(h.pid) ?? 0) - cpuBefore[i]!) / 1000);
    const ownCpu = process.cpuUsage(ownCpuBefore);
    const loadGeneratorCpuSeconds = (ownCpu.user + ownCpu.system) / 1e6;
    const load = loadavg();
    const latency = new LatencyRecorder();
    let lastMs = firstSendMs;
    let complete = 0;
    for (const [id, sent] of sentAtMs) {
      const done = completedAtMs.get(id);
      if (done === undefined) continue;
      complete++;
      latency.record(done - sent);
      lastMs = Math.max(lastMs, done);
    }
    const [p50, p99] = latency.percentiles([50, 99]);
    const seconds = (lastMs - firstSendMs) / 1000;
    const rss = cluster.homeservers.map((h) => ({ id: h.id, peakRssMiB: peakRssMiB(h.pid) }));
    const result = {
      bench: "inbox",
      members: membersTotal,
      homeservers: 3,
      messages: messagesTotal,
      deliveredToAll: complete,
      sendRatePerSecond: messagesTotal / ((sendEndMs - firstSendMs) / 1000),
      deliveryRatePerSecond: complete / seconds,
      entriesDeliveredPerSecond: (complete * membersTotal) / seconds,
      latencyMs: { p50, p99 },
      peakRssMiB: Object.fromEntries(rss.map((r) => [r.id, r.peakRssMiB])),
      cpuSeconds: { ...Object.fromEntries(cluster.homeservers.map((h, i) => [h.id, cpuSeconds[i]])), loadGenerator: loadGeneratorCpuSeconds },
      loadAverage1m: load[0],
      at: new Date().toISOString(),
    };
    console.log(
      formatTable(
        ["members", "messages", "to all", "sent/s", "delivered msg/s", "entries/s", "p50 ms", "p99 ms", ...rss.map((r) => `${r.id} peak RSS MiB`), ...rss.map((r) => `${r.id} CPU s`), "loadgen CPU s", "load 1m"],
        [
          [
            String(membersTotal), String(messagesTotal), String(complete), fixed(result.sendRatePerSecond, 1), fixed(result.deliveryRatePerSecond, 1), integer(result.entriesDeliveredPerSecond), fixed(p50, 1), fixed(p99, 1),
            ...rss.map((r) => fixed(r.peakRssMiB, 0)), ...cpuSeconds.map((c) => fixed(c, 1)), fixed(loadGeneratorCpuSeconds, 1), fixed(load[0]!, 1),
          ],
        ],
        new Set(Array.from({ length: 17 }, (_, i) => i)),
      ),
    );
    console.log(`messages flowed for ${seconds.toFixed(1)} s`);
    const resultsDir = resolve(import.meta.dirname, "results");
    mkdirSync(resultsDir, { recursive: true });
    writeFileSync(join(resultsDir, "inbox.json"), JSON.stringify(result, null, 2) + "\n");
  } finally {
    await Promise.all(inboxes.map((inbox) => inbox.stop().catch(() => undefined)));
    for (const session of sessions) session.close();
    client?.close();
    await stopEpochdCluster(cluster);
    if (profileDir !== undefined) reportProfiles(profileDir, cluster.homeservers);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** Prints where each homeserver's CPU went while the messages flowed (written by the profiler hook at exit). */
function reportProfiles(profileDir: string, homeservers: ReadonlyArray<{ id: string; pid: number }>): void {
  for (const h of homeservers) {
    const file = readdirSync(profileDir).find((f) => f.endsWith(".cpuprofile") && f.includes(`.${h.pid}.`));
    if (file === undefined) continue;
    const summary = summariseProfile(join(profileDir, file), 25);
    console.log(`\nCPU profile of ${h.id}, ${(summary.sampledMs / 1000).toFixed(1)} s sampled, busy ${summary.busyPercent.toFixed(0)}%; self time by module, percent of busy time:`);
    console.log(formatTable(["busy %", "module"], summary.byModule.slice(0, 12).map((m) => [m.selfPercentOfBusy.toFixed(1), m.module]), new Set([0])));
    console.log("top functions by self time, percent of all samples:");
    console.log(formatTable(["self %", "total %", "function"], summary.bySelf.map((f) => [f.selfPercent.toFixed(1), f.totalPercent.toFixed(1), f.name]), new Set([0, 1])));
  }
}
