/**
 * Real processes: a homeserver killed (kill -9) while it restores a leader's
 * snapshot restores again when it starts, and then serves exactly what the
 * cluster acknowledged. The restore writes the state in batches, so the kill
 * leaves a mix of old and new records behind an applied index that has not
 * moved.
 */
import { afterAll, describe, expect, it } from "vitest";
import { KvWriter } from "./kv-writer.ts";
import { ProcessCluster } from "./process-cluster.ts";

const text = (s: string) => new TextEncoder().encode(s);
const restoredLine = "state machine restored from a leader's snapshot";
const redoLine = "restoring the state machine again from the stored snapshot";

async function waitForLog(cluster: ProcessCluster, id: string, line: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cluster.log(id).includes(line)) {
    if (Date.now() > deadline) throw new Error(`${id} did not log "${line}" within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe("a homeserver killed while it restores a leader's snapshot", () => {
  let cluster: ProcessCluster | undefined;
  afterAll(async () => {
    await cluster?.close();
  });

  it("restores again when it starts, and serves exactly the acknowledged state", async () => {
    cluster = await ProcessCluster.create(3, ["--snapshot-every-entries", "50", "--snapshot-keep-entries", "5"]);
    cluster.startAll();
    const leader = await cluster.waitForLeader();
    const writer = new KvWriter(cluster, leader);
    try {
      // 48 MiB of state, in 192 values of 256 KiB: a restore of a second or more.
      const value = (i: number) => `${i}:`.padEnd(256 * 1024, String.fromCharCode(97 + (i % 26)));
      for (let i = 0; i < 192; i++) await writer.putUntilAcked(`big${i}`, value(i));
      const victim = [...cluster.nodes.keys()].find((id) => id !== leader)!;
      expect(await cluster.kill(victim, "SIGTERM")).toBe(0);
      cluster.wipe(victim);
      cluster.start(victim);
      await waitForLog(cluster, victim, "snapshot received", 60_000);
      await new Promise((r) => setTimeout(r, 100)); // the snapshot stored, its restore under way
      await cluster.kill(victim, "SIGKILL");
      expect(cluster.log(victim), "the kill came after the restore finished").not.toContain(restoredLine);
      for (let i = 0; i < 20; i++) await writer.putUntilAcked(`after${i}`, `after-${i}`);
      cluster.start(victim);
      await waitForLog(cluster, victim, redoLine, 30_000);
      await cluster.waitForLeader(); // every homeserver answers again
      const client = cluster.kv(victim);
      try {
        for (const [key, expected] of writer.acked) {
          const response = await client.get({ key: text(key) }, { deadlineMs: 10_000 });
          expect(response.found, key).toBe(true);
          expect(new TextDecoder().decode(response.value) === expected, key).toBe(true);
        }
      } finally {
        client.close();
      }
    } finally {
      writer.close();
    }
  });
});
