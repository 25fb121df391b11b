import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { peerServicePaths } from "../../src/transport/peer-service.ts";
import { KvWriter } from "./kv-writer.ts";
import { ProcessCluster } from "./process-cluster.ts";

const text = (s: string) => new TextEncoder().encode(s);

/** Every acknowledged write is readable, linearizably, through homeserver `id`. */
async function expectAllReadable(cluster: ProcessCluster, id: string, acked: ReadonlyMap<string, string>): Promise<void> {
  const client = cluster.kv(id);
  try {
    for (const [key, value] of acked) {
      const response = await client.get({ key: text(key) }, { deadlineMs: 5000 });
      expect(response.found, `${key} on ${id}`).toBe(true);
      expect(new TextDecoder().decode(response.value)).toBe(value);
    }
  } finally {
    client.close();
  }
}

/** A failover slower than this prints what the survivors logged meanwhile (the median is about 0.1 s). */
const slowFailoverMs = 1000;

/** The survivors' log lines from `fromMs` to `toMs` (pino's `time`), for a failover that took long. */
function printLogsBetween(cluster: ProcessCluster, ids: readonly string[], fromMs: number, toMs: number): void {
  for (const id of ids) {
    const lines = cluster.log(id).split("\n").filter((line) => {
      try {
        const time = (JSON.parse(line) as { time?: number }).time ?? 0;
        return time >= fromMs - 100 && time <= toMs + 100;
      } catch {
        return false;
      }
    });
    console.log(`slow failover: ${id} logged ${lines.length} lines from ${new Date(fromMs).toISOString()} to ${new Date(toMs).toISOString()}:\n${lines.slice(-60).join("\n")}`);
  }
}

describe("a real 3-homeserver cluster (processes, RocksDB, gRPC with mutual TLS)", () => {
  let cluster: ProcessCluster;
  let writer: KvWriter;

  beforeAll(async () => {
    cluster = await ProcessCluster.create(3, ["--snapshot-every-entries", "200", "--snapshot-keep-entries", "20"]);
    cluster.startAll();
    writer = new KvWriter(cluster, await cluster.waitForLeader());
  });

  afterAll(async () => {
    writer?.close();
    await cluster?.close();
  });

  it("after kill -9 of the leader elects a new one and commits again; the killed one restarts and catches up", async () => {
    const failoversMs: number[] = [];
    let n = 0;
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 50; i++) await writer.putUntilAcked(`k${n++}`, `v${round}-${i}`);
      const leader = await cluster.waitForLeader();
      const killedAt = Date.now();
      await cluster.kill(leader, "SIGKILL");
      const ackedAt = await writer.putUntilAcked(`k${n++}`, `after-kill-${round}`);
      failoversMs.push(ackedAt - killedAt);
      const survivors = [...cluster.nodes.keys()].filter((id) => id !== leader);
      // From a little before the previous round's restart: what the links did then shows in a slow failover.
      if (ackedAt - killedAt > slowFailoverMs) printLogsBetween(cluster, survivors, killedAt - 5000, ackedAt);
      expect(await cluster.waitForLeader(survivors)).not.toBe(leader);
      cluster.start(leader);
      await cluster.waitForLeader();
    }
    failoversMs.sort((a, b) => a - b);
    console.log(`failover after kill -9 of the leader, ms (sorted): ${failoversMs.join(", ")}; median ${failoversMs[1]} ms`);
    for (const id of cluster.nodes.keys()) await expectAllReadable(cluster, id, writer.acked);
  });

  it("a homeserver whose data directory was wiped rejoins through a snapshot", async () => {
    const leader = await cluster.waitForLeader();
    const victim = [...cluster.nodes.keys()].find((id) => id !== leader)!;
    expect(await cluster.kill(victim, "SIGTERM")).toBe(0);
    cluster.wipe(victim);
    for (let i = 0; i < 250; i++) await writer.putUntilAcked(`w${i}`, `while-wiped-${i}`);
    cluster.start(victim);
    await cluster.waitForLeader();
    await expectAllReadable(cluster, victim, writer.acked);
    expect(cluster.log(victim)).toMatch(/installing snapshot from leader/);
    // It knew it had lost its data, so it voted only once caught up (lost-disk.test.ts).
    expect(cluster.log(victim)).toMatch(/lost its data/);
    expect(cluster.log(victim)).toMatch(/caught up with the cluster: voting/);
  });

  it("drops a malformed Raft batch from a known peer with a log line, and keeps serving", async () => {
    const target = await cluster.waitForLeader();
    const sender = [...cluster.nodes.keys()].find((id) => id !== target)!;
    const ca = readFileSync(join(cluster.root, "certs", "ca.crt"));
    const key = readFileSync(join(cluster.root, "certs", `${sender}.key`));
    const cert = readFileSync(join(cluster.root, "certs", `${sender}.crt`));
    const client = new grpc.Client(cluster.get(target).peerAddress, grpc.credentials.createSsl(ca, key, cert), { "grpc.ssl_target_name_override": "localhost" });
    const call = client.makeBidiStreamRequest(peerServicePaths.stream, (b: Buffer) => b, (b: Buffer) => b);
    call.on("error", () => undefined);
    call.on("data", () => undefined);
    // A StreamRequest whose batch field holds bytes that are no MessageBatch.
    call.write(Buffer.from([0x0a, 0x03, 0xff, 0xff, 0xff]));
    call.write(Buffer.from([0x0a, 0x02, 0x0a, 0x00]));
    await new Promise((r) => setTimeout(r, 300));
    call.end();
    client.close();
    expect(cluster.log(target)).toMatch(/malformed|dropp/i);
    await writer.putUntilAcked("after-garbage", "ok");
    expect(await cluster.waitForLeader()).toBe(target);
  });
});
