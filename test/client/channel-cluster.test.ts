/**
 * The SDK against real homeserver processes (3 homeservers, RocksDB, gRPC with TLS): the demo story.
 * Alice (hs1) creates a channel and adds Bob (hs2) and Carol (hs3); they exchange messages; Bob and Carol
 * race key updates from the same epoch; exactly one is accepted for that epoch and the other converges
 * through the SDK's retry; all end on the same epoch authenticator. Each device publishes its identity
 * record and talks to its own homeserver as an authenticated device, so two of them follow leader hints.
 */
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as grpc from "@grpc/grpc-js";
import { Channel } from "../../src/client/channel.ts";
import { ChannelClient } from "../../src/client/channel-client.ts";
import { Device } from "../../src/client/device.ts";
import { NotAMemberError } from "../../src/client/transport.ts";
import { runDemoOn, type DemoResult } from "../../src/client/demo.ts";
import { toHex } from "../../src/client/mls-codec.ts";
import { EventKind } from "../../src/gen/epochd/channel/v1/channel_pb.ts";
import { ProcessCluster } from "../integration/process-cluster.ts";

let cluster: ProcessCluster;
let caPem: Buffer;
/** Every client made, closed at the end; `demoClients` are Alice's, Bob's and Carol's. */
const allClients: ChannelClient[] = [];
let demoClients: ChannelClient[] = [];
let story: DemoResult | undefined;

/** A registered client for `device` at homeserver `homeserverId`. */
async function connect(device: Device, homeserverId: string): Promise<ChannelClient> {
  // Generous retries: on this shared 2-core machine an election after a kill can take seconds.
  const client = await ChannelClient.registered({ device, address: cluster.get(homeserverId).clientAddress, tls: { caPem }, tlsServerName: "localhost", attemptsMax: 40 });
  allClients.push(client);
  return client;
}

async function waitForDirectory(client: ChannelClient, count: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const directory = await client.directory(true).catch(() => undefined);
    if (directory !== undefined && directory.keys.size >= count) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the directory did not list ${count} homeservers with keys within ${timeoutMs} ms`);
}

beforeAll(async () => {
  cluster = await ProcessCluster.create(3);
  cluster.startAll();
  await cluster.waitForLeader(undefined, 60_000);
  caPem = readFileSync(join(cluster.root, "certs", "ca.crt"));
  // The directory needs no login: a client for a device that never registers is enough to read it.
  const observer = new ChannelClient({ device: await Device.create("observer@hs1"), address: cluster.get("hs1").clientAddress, tls: { caPem }, tlsServerName: "localhost" });
  allClients.push(observer);
  await waitForDirectory(observer, 3, 30_000);
}, 120_000);

afterAll(async () => {
  for (const client of allClients) client.close();
  await cluster?.close();
});

describe("SDK on a real 3-homeserver cluster", () => {
  it("create, add, exchange messages, race conflicting commits, converge", async () => {
    const lines: string[] = [];
    const result = await runDemoOn(async (device, i) => {
      const client = await connect(device, `hs${i + 1}`);
      demoClients[i] = client;
      return client;
    }, (line) => lines.push(line));
    expect(result.race.loserAttempts).toBe(2);
    const [first, ...rest] = result.devices;
    for (const device of rest) {
      expect(device.epoch).toBe(first!.epoch);
      expect(device.epochAuthenticatorHex).toBe(first!.epochAuthenticatorHex);
    }
    // Epochs: 0 create, 1 add Bob+Carol, 2 race winner, 3 loser's retry.
    expect(first!.epoch).toBe(3n);
    const ids = result.devices.map((d) => d.deviceId);
    expect(ids.map((id) => id.replace(/\.[0-9a-f]+@/, "@"))).toEqual(["alice@hs1", "bob@hs2", "carol@hs3"]);
    for (const id of ids) {
      const others = ids.filter((o) => o !== id).map((o) => `hello from ${o}`);
      expect(result.received.get(id)).toEqual([...others, ...others]);
    }
    // The cluster's log: exactly one certified commit per epoch, epochs 0, 1, 2 in order.
    const events = await demoClients[0]!.listEvents({ channelId: result.channelId, afterSequence: 0n, limit: 0 });
    const commits = events.events.filter((e) => e.kind === EventKind.COMMIT);
    expect(commits.map((c) => c.epoch)).toEqual([0n, 1n, 2n]);
    expect(lines.at(-1)).toBe("all devices agree on the epoch and its authenticator");
    // The channel has its own Raft group on the three homeservers of its members, with one leader.
    const groupStatuses = await Promise.all(["hs1", "hs2", "hs3"].map(async (id) => {
      const admin = cluster.admin(id);
      try {
        return (await admin.status({ groupIds: [`channel/${result.channelId}`] })).groups[0];
      } finally {
        admin.close();
      }
    }));
    for (const group of groupStatuses) expect([...(group?.voters ?? [])].sort()).toEqual(["hs1", "hs2", "hs3"]);
    expect(new Set(groupStatuses.map((g) => g?.leaderId)).size).toBe(1);
    story = result;
  }, 60_000);

  it("roles through the SDK: a plain member's add and remove are refused and leave it able to commit; a removed member cannot commit", async () => {
    const [ann, ben, cat, dan] = await Promise.all(["ann@hs1", "ben@hs2", "cat@hs3", "dan@hs2"].map((id) => Device.create(id)));
    const channelId = `roles-${Date.now()}`;
    const [annClient, benClient, catClient] = await Promise.all([connect(ann!, "hs1"), connect(ben!, "hs2"), connect(cat!, "hs3")]);
    const owner = await Channel.create(ann!, annClient!, channelId);
    const added = await owner.addMembers([await ben!.publishKeyPackage(), await cat!.publishKeyPackage()]);
    const member = await Channel.join(ben!, benClient!, channelId, added.welcome!);
    const removed = await Channel.join(cat!, catClient!, channelId, added.welcome!);
    await expect(member.removeMembers(["cat@hs3"])).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringMatching(/may not remove/) });
    await expect(member.addMembers([await dan!.publishKeyPackage()])).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringMatching(/may not add/) });
    expect(member.epoch()).toBe(1n);
    expect(member.members().map((m) => m.deviceId)).toEqual(["ann@hs1", "ben@hs2", "cat@hs3"]);
    // The refused commits consumed nothing the member still needs: it updates its own keys from the same state.
    expect((await member.updateKeys()).epoch).toBe(2n);
    expect((await owner.removeMembers(["cat@hs3"])).epoch).toBe(3n);
    await expect(removed.updateKeys()).rejects.toBeInstanceOf(NotAMemberError);
    expect(removed.isMember()).toBe(false);
    await member.sync();
    expect(toHex(member.epochAuthenticator())).toBe(toHex(owner.epochAuthenticator()));
    // The removed device may no longer read the channel; the owner may.
    await expect(catClient!.listEvents({ channelId, afterSequence: 0n, limit: 0 })).rejects.toBeInstanceOf(NotAMemberError);
    const commits = (await annClient!.listEvents({ channelId, afterSequence: 0n, limit: 0 })).events.filter((e) => e.kind === EventKind.COMMIT);
    expect(commits.map((c) => c.epoch)).toEqual([0n, 1n, 2n]);
  }, 60_000);

  it("after the leader is killed, commits still get certified by the two others and everybody converges", async () => {
    if (story === undefined) throw new Error("the story did not run");
    const leaderId = await cluster.waitForLeader(undefined, 30_000);
    await cluster.kill(leaderId, "SIGKILL");
    const [alice, bob, carol] = story.channels;
    const outcome = await alice!.updateKeys();
    expect(outcome.epoch).toBe(4n);
    expect(outcome.certificate!.voters).toEqual(["hs1", "hs2", "hs3"]);
    expect(outcome.certificate!.signatures.map((s) => s.homeserverId)).not.toContain(leaderId);
    await alice!.send(new TextEncoder().encode("after the failover"));
    for (const channel of [bob!, carol!]) {
      const received = await channel.sync();
      expect(received.flatMap((r) => (r.kind === "message" ? [new TextDecoder().decode(r.data)] : []))).toEqual(["after the failover"]);
    }
    expect(new Set([alice!, bob!, carol!].map((c) => `${c.epoch()}/${toHex(c.epochAuthenticator())}`)).size).toBe(1);
    expect(demoClients.reduce((n, c) => n + c.stats.addressSwitches, 0)).toBeGreaterThanOrEqual(1);
  }, 90_000);
});
