import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GroupsClient } from "./groups-client.ts";
import { ProcessCluster } from "./process-cluster.ts";

const groupCount = 60;
const ids = ["hs1", "hs2", "hs3"];

/** Polls `check` every 100 ms until it returns true; fails after `timeoutMs`. */
async function eventually(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
}

describe("many Raft groups in 3 real homeserver processes", () => {
  let cluster: ProcessCluster;
  let groups: GroupsClient;

  beforeAll(async () => {
    cluster = await ProcessCluster.create(3);
    cluster.startAll();
    await cluster.waitForLeader();
    groups = new GroupsClient(cluster);
    await groups.create(0, groupCount, ids);
  });

  afterAll(async () => {
    groups?.close();
    await cluster?.close();
  });

  it("every group elects a leader, then goes quiet on every homeserver", async () => {
    await eventually("a leader for every group", async () => {
      await groups.refreshLeaders(ids);
      return groups.leaders.size === groupCount;
    });
    // Quiet: only the cluster group (which does not quiesce) stays awake.
    await eventually("all test groups quiesced", async () => [...(await groups.refreshLeaders(ids)).values()].every((c) => c.awake <= 1 && c.groups === groupCount + 1));
    const counts = await groups.refreshLeaders(ids);
    console.log(`test groups led per homeserver: ${ids.map((id) => `${id} ${counts.get(id)?.leading}`).join(", ")}`);
  });

  it("writes to many groups commit and reach every homeserver", async () => {
    const written = Array.from({ length: 15 }, (_, i) => i * 4);
    await Promise.all(written.map((n) => groups.putUntilAcked(n, "k", `v${n}`, ids)));
    for (const id of ids) {
      await eventually(`writes applied on ${id}`, async () => (await Promise.all(written.map((n) => groups.get(id, n, "k")))).every((v, i) => v === `v${written[i]}`));
    }
  });

  it("killing one homeserver leaves every group accepting writes on the other two", async () => {
    await groups.refreshLeaders(ids);
    const victim = "hs1";
    const ledByVictim = [...groups.leaders].filter(([, leader]) => leader === victim).length;
    await cluster.kill(victim, "SIGKILL");
    const survivors = ids.filter((id) => id !== victim);
    const took = await Promise.all(Array.from({ length: groupCount }, (_, n) => groups.putUntilAcked(n, "after-kill", `w${n}`, survivors, 30_000)));
    took.sort((a, b) => a - b);
    console.log(`after kill -9 of ${victim} (leading ${ledByVictim} groups): every group accepted a write; ms median ${took[took.length >> 1]}, max ${took[took.length - 1]}`);
    for (const id of survivors) {
      await eventually(`writes after the kill applied on ${id}`, async () => (await Promise.all(took.map((_, n) => groups.get(id, n, "after-kill")))).every((v, n) => v === `w${n}`));
    }
  });
});
