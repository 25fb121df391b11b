/**
 * The Prometheus endpoint of a real homeserver: what operators (and the
 * benchmarks' work-per-commit columns) read. Three processes, real RocksDB,
 * real gRPC; the metrics are scraped over HTTP on 127.0.0.1 before and after
 * writes, and each counter must move with the work done.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseMetricsText } from "../../src/node/metrics.ts";
import { KvWriter } from "./kv-writer.ts";
import { freeLocalPort } from "../../src/transport/local-ports.ts";
import { ProcessCluster } from "./process-cluster.ts";

/** Every sample of the exposition text: `name{labels}` -> value. */
async function scrape(address: string): Promise<Map<string, number>> {
  const response = await fetch(`http://${address}/metrics`, { signal: AbortSignal.timeout(5000) });
  expect(response.status).toBe(200);
  return parseMetricsText(await response.text());
}

describe("metrics over HTTP", () => {
  let cluster: ProcessCluster;
  const metricsAddress = new Map<string, string>();

  beforeAll(async () => {
    cluster = await ProcessCluster.create(3);
    for (const id of ["hs1", "hs2", "hs3"]) {
      metricsAddress.set(id, `127.0.0.1:${await freeLocalPort()}`);
      cluster.start(id, ["--metrics-listen", metricsAddress.get(id)!]);
    }
  });

  afterAll(async () => {
    await cluster?.close();
  });

  it("count proposals, commits, Ready rounds, fsyncs and peer traffic as writes go through, and show the streams and groups", async () => {
    const leader = await cluster.waitForLeader();
    const writer = new KvWriter(cluster, leader);
    try {
      await writer.putUntilAcked("warm", "x");
      const address = metricsAddress.get(leader)!;
      const before = await scrape(address);
      const writes = 20;
      for (let i = 0; i < writes; i++) await writer.putUntilAcked(`k${i}`, "v");
      // A write may be acknowledged before its apply is written, and counted as committed only after:
      // scrape until the last one is counted (at most 2 s).
      let after = await scrape(address);
      const grew = (name: string) => (after.get(name) ?? 0) - (before.get(name) ?? 0);
      for (let tries = 0; tries < 20 && grew('epochd_committed_entries_total{group="cluster"}') < writes; tries++) {
        await new Promise((r) => setTimeout(r, 100));
        after = await scrape(address);
      }
      expect(grew('epochd_proposals_total{group="cluster"}')).toBeGreaterThanOrEqual(writes);
      expect(grew('epochd_committed_entries_total{group="cluster"}')).toBeGreaterThanOrEqual(writes);
      expect(grew("epochd_raft_ready_rounds_total")).toBeGreaterThanOrEqual(writes);
      expect(grew("epochd_fsync_latency_seconds_count")).toBeGreaterThanOrEqual(writes);
      // Each write (one at a time) is an Append the leader sends and a follower's answer it needs to commit.
      // Not always to and from both followers: one that fell behind for a moment gets the entries it
      // missed in one Append and answers them at once.
      expect(grew('epochd_peer_messages_total{direction="sent"}')).toBeGreaterThanOrEqual(writes);
      expect(grew('epochd_peer_messages_total{direction="received"}')).toBeGreaterThanOrEqual(writes);
      expect(grew('epochd_peer_batches_total{direction="sent"}')).toBeGreaterThan(0);
      expect(grew('epochd_peer_bytes_total{direction="sent"}')).toBeGreaterThan(writes * 10);
      for (const peer of ["hs1", "hs2", "hs3"].filter((id) => id !== leader)) expect(after.get(`epochd_peer_stream_connected{peer="${peer}"}`)).toBe(1);
      expect(after.get('epochd_raft_groups{state="hosted"}')).toBeGreaterThanOrEqual(1);
      expect(after.get('epochd_raft_groups{state="leaderless"}')).toBe(0);
      expect(after.get('epochd_peer_refused_total{kind="malformed"}')).toBe(0);
      // A follower counts what it received and persisted too.
      const follower = ["hs1", "hs2", "hs3"].find((id) => id !== leader)!;
      const followerAfter = await scrape(metricsAddress.get(follower)!);
      expect(followerAfter.get('epochd_peer_messages_total{direction="received"}')).toBeGreaterThanOrEqual(writes);
      expect(followerAfter.get("epochd_fsync_latency_seconds_count")).toBeGreaterThanOrEqual(writes);
    } finally {
      writer.close();
    }
  });
});
