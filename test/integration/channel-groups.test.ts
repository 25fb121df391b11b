/**
 * One Raft group per channel, on real processes (RocksDB, gRPC over TLS on 127.0.0.1, ts-mls devices):
 * a channel's group is made of the homeservers of its members and follows MLS adds and removes before
 * the commit is acknowledged; a certificate counts exactly the voters of its epoch; a homeserver whose
 * last member was removed drops the group. Killing one homeserver leaves every channel whose group keeps
 * a majority accepting commits, and the channels it is not in are not affected at all (same leader, same
 * term). Devices talk to their own homeserver only. Groups hibernate after 300 ms quiet here, so
 * every step also crosses unloads and reloads; the last test checks hibernation itself.
 */
import { createHash, type KeyObject } from "node:crypto";
import { fromBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { unaryClient } from "../../src/api/grpc-service.ts";
import { isCertified } from "../../src/channel/certificate.ts";
import { importEd25519PublicKey, verifyCertificate, verifyUnderDirectory } from "../../src/client/certificate.ts";
import { ChannelService, CommitConflictSchema, type Certificate } from "../../src/gen/epochd/channel/v1/channel_pb.ts";
import { applyAcceptedCommit, buildGroup, joinFromWelcome, makeCommit, makeDevice, memberOf, type PendingCommit, type TestGroup } from "../fixtures/mls-group.ts";
import { DeviceLogins } from "./device-login.ts";
import { wakeChannelGroupTopic } from "../../src/node/channel-groups.ts";
import { encodeBatch } from "../../src/transport/codec.ts";
import { peerServicePaths } from "../../src/transport/peer-service.ts";
import { ProcessCluster } from "./process-cluster.ts";

type ChannelClient = ReturnType<typeof unaryClient<(typeof ChannelService)["method"]>>;

const homeOf = (deviceId: string) => deviceId.slice(deviceId.indexOf("@") + 1);
const sorted = (ids: Iterable<string>) => [...ids].sort();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const hibernateAfterMs = 300;

describe("one Raft group per channel, made of its members' homeservers (real processes)", () => {
  let cluster: ProcessCluster;
  let logins: DeviceLogins;
  let clusterId = "";
  const clients = new Map<string, ChannelClient>();

  beforeAll(async () => {
    // Leader balancing off: the kill test checks that channels without the killed homeserver keep their leader and term.
    cluster = await ProcessCluster.create(3, ["--hibernate-after-ms", String(hibernateAfterMs), "--balance-leaders-every-ms", "0"]);
    cluster.startAll();
    await cluster.waitForLeader();
    for (const id of ["hs1", "hs2", "hs3"]) clients.set(id, unaryClient(ChannelService, cluster.get(id).clientAddress, cluster.clientCredentials(), { "grpc.ssl_target_name_override": "localhost" }));
    // Every homeserver registers its signing key before certificates can be checked.
    for (let attempt = 0; attempt < 150; attempt++) {
      const directory = await clients.get("hs1")!.listHomeservers({});
      clusterId = directory.clusterId;
      if (directory.homeservers.filter((h) => h.signingKey.byteLength === 32).length === 3) break;
      await sleep(100);
    }
    logins = new DeviceLogins(cluster, clusterId);
  }, 60_000);

  afterAll(async () => {
    logins?.close();
    for (const client of clients.values()) client.close();
    await cluster?.close();
  });

  /** Call options authenticating `deviceId` at its own homeserver. */
  const as = async (deviceId: string, deadlineMs = 15_000) => ({ deadlineMs, metadata: await logins.metadata(deviceId, homeOf(deviceId)) });
  const clientOf = (deviceId: string) => clients.get(homeOf(deviceId))!;

  async function submit(channelId: string, group: TestGroup, pending: PendingCommit, by: string, deadlineMs = 15_000) {
    const epoch = memberOf(group, by).state.groupContext.epoch;
    const request = { channelId, epoch, commit: pending.commit, nextGroupInfo: pending.nextGroupInfo, welcome: pending.welcome ?? new Uint8Array(0) };
    return clientOf(by).submitCommit(request, await as(by, deadlineMs));
  }

  /** Creates `channelId` by `creator` (on its homeserver) and adds `joiners` in one commit; returns the group and that commit's certificate. */
  async function createChannel(channelId: string, creator: string, joiners: string[], witnesses: string[] = []): Promise<{ group: TestGroup; addCertificate: Certificate | undefined }> {
    const group = await buildGroup([creator], undefined, witnesses);
    const devices = await Promise.all(joiners.map((id) => makeDevice(id)));
    await Promise.all([memberOf(group, creator).device, ...devices.map((d) => d.device)].map((d) => logins.publish(d)));
    await clientOf(creator).createChannel({ channelId, groupInfo: group.initialGroupInfo, contentType: "text/plain" }, await as(creator));
    if (joiners.length === 0) return { group, addCertificate: undefined };
    const add = await makeCommit(memberOf(group, creator).state, { add: devices.map((d) => d.keyPackage.publicPackage) });
    const added = await submit(channelId, group, add, creator);
    await applyAcceptedCommit(group, creator, add);
    for (const joiner of devices) group.members.set(joiner.device.deviceId, { device: joiner.device, state: await joinFromWelcome(joiner.keyPackage, add.welcome!) });
    return { group, addCertificate: added.certificate };
  }

  /** `step`, whose failure also prints what `ids` logged about `channelId` (for a failure seen only under CI's load). */
  async function withChannelLogs<T>(channelId: string, ids: string[], step: Promise<T>): Promise<T> {
    try {
      return await step;
    } catch (error) {
      for (const id of ids) console.log(`--- ${id} on ${channelId}\n${cluster.log(id).split("\n").filter((line) => line.includes(channelId)).slice(-40).join("\n")}`);
      throw error;
    }
  }

  /** `by` updates its keys; returns the accepted commit's certificate. */
  async function update(channelId: string, group: TestGroup, by: string): Promise<Certificate> {
    const pending = await makeCommit(memberOf(group, by).state);
    const accepted = await submit(channelId, group, pending, by);
    await applyAcceptedCommit(group, by, pending);
    expectCertificate(accepted.certificate, channelId, pending.commit);
    return accepted.certificate!;
  }

  /** With `down` killed, `by` updates its keys in `channelId`: who signed the certificate, sorted. `down` is started again after. */
  async function signersWithout(down: string, channelId: string, group: TestGroup, by: string): Promise<string[]> {
    await cluster.kill(down, "SIGKILL");
    try {
      const certificate = await update(channelId, group, by);
      return certificate.signatures.map((s) => s.homeserverId).sort();
    } finally {
      cluster.start(down);
    }
  }

  function expectCertificate(certificate: Certificate | undefined, channelId: string, commit: Uint8Array): void {
    expect(certificate).toMatchObject({ channelId });
    expect(Buffer.from(certificate!.commitHash).toString("hex")).toBe(createHash("sha256").update(commit).digest("hex"));
    expect(isCertified(certificate!)).toBe(true);
    for (const signature of certificate!.signatures) expect(certificate!.voters).toContain(signature.homeserverId);
  }

  /** The homeservers' signing keys as the cluster directory lists them now. */
  async function directoryKeys(): Promise<Map<string, KeyObject>> {
    const { homeservers } = await clients.get("hs1")!.listHomeservers({});
    return new Map(homeservers.map((h) => [h.homeserverId, importEd25519PublicKey(h.signingKey)]));
  }

  /** The status of the channel's group at homeserver `id`, or undefined when `id` does not host it. */
  async function groupAt(id: string, channelId: string) {
    const admin = cluster.admin(id);
    try {
      return (await admin.status({ groupIds: [`channel/${channelId}`] }, { deadlineMs: 5000 })).groups[0];
    } finally {
      admin.close();
    }
  }

  /** Which homeservers host the channel's group, and the voters each sees. */
  async function hosting(channelId: string): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>();
    for (const id of ["hs1", "hs2", "hs3"]) {
      const group = await groupAt(id, channelId);
      if (group !== undefined) out.set(id, sorted(group.voters));
    }
    return out;
  }

  async function waitUntil(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > until) throw new Error(`timed out waiting until ${what}`);
      await sleep(50);
    }
  }

  it("a channel's group is its members' homeservers: it follows adds and removes before the commit is acknowledged, and certificates count only that epoch's voters", async () => {
    // One member on hs1: only hs1 hosts the group.
    const solo = await createChannel("cg-solo", "ann@hs1", []);
    expect(await hosting("cg-solo")).toEqual(new Map([["hs1", ["hs1"]]]));
    await update("cg-solo", solo.group, "ann@hs1");

    // Adding bob@hs2: the add is certified by hs1 alone (the voters of epoch 0); once it is acknowledged
    // hs2 votes, and the next commit is certified by hs1 and hs2. hs3 never sees the channel.
    const pair = await createChannel("cg-pair", "amy@hs1", ["bob@hs2"]);
    expect(pair.addCertificate!.voters).toEqual(["hs1"]);
    expect(pair.addCertificate!.signatures.map((s) => s.homeserverId)).toEqual(["hs1"]);
    expect(await hosting("cg-pair")).toEqual(new Map([["hs1", ["hs1", "hs2"]], ["hs2", ["hs1", "hs2"]]]));
    const pairUpdate = await update("cg-pair", pair.group, "bob@hs2");
    expect(pairUpdate.voters).toEqual(["hs1", "hs2"]);

    // Three homeservers; then the owner removes the only member of hs3: the removal is certified by the
    // three voters of its epoch, hs3 leaves the group (and drops its copy) before the removal is
    // acknowledged, and later commits count hs1 and hs2 only.
    const trio = await createChannel("cg-trio", "ada@hs1", ["ben@hs2", "cy@hs3"]);
    expect(await hosting("cg-trio")).toEqual(new Map([["hs1", ["hs1", "hs2", "hs3"]], ["hs2", ["hs1", "hs2", "hs3"]], ["hs3", ["hs1", "hs2", "hs3"]]]));
    const cyLeaf = memberOf(trio.group, "cy@hs3").state.privatePath.leafIndex;
    const removal = await makeCommit(memberOf(trio.group, "ada@hs1").state, { remove: [cyLeaf] });
    const removed = await submit("cg-trio", trio.group, removal, "ada@hs1");
    expect(removed.certificate!.voters).toEqual(["hs1", "hs2", "hs3"]);
    await applyAcceptedCommit(trio.group, "ada@hs1", removal);
    expect((await groupAt("hs1", "cg-trio"))!.voters).toEqual(expect.arrayContaining(["hs1", "hs2"]));
    expect(sorted((await groupAt("hs1", "cg-trio"))!.voters)).toEqual(["hs1", "hs2"]);
    await waitUntil(async () => (await groupAt("hs3", "cg-trio")) === undefined, 10_000, "hs3 drops the group it was removed from");
    const after = await update("cg-trio", trio.group, "ben@hs2");
    expect(after.voters).toEqual(["hs1", "hs2"]);
    expect(after.signatures.map((s) => s.homeserverId).every((id) => id !== "hs3")).toBe(true);
    expect(await groupAt("hs3", "cg-trio")).toBeUndefined();
    // cy, removed, is refused at its own homeserver (which no longer hosts the channel).
    await expect(clientOf("cy@hs3").getChannel({ channelId: "cg-trio" }, await as("cy@hs3"))).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
  }, 120_000);

  it("killing a homeserver: channels keeping a majority accept commits, channels without it are not affected at all", async () => {
    const onlyHs1 = await createChannel("kill-1", "al@hs1", []);
    const hs1hs2 = await createChannel("kill-12", "ab@hs1", ["bo@hs2"]);
    const all = await createChannel("kill-123", "ac@hs1", ["bc@hs2", "cc@hs3"]);
    const ledByHs3 = await createChannel("kill-321", "cd@hs3", ["ad@hs1", "bd@hs2"]);
    const hs2hs3 = await createChannel("kill-23", "be@hs2", ["ce@hs3"]);
    const unaffected = ["kill-1", "kill-12"];
    const before = new Map(await Promise.all(unaffected.map(async (c) => [c, await groupAt("hs1", c)] as const)));
    expect((await groupAt("hs3", "kill-321"))!.leaderId).toBe("hs3");

    await cluster.kill("hs3", "SIGKILL");
    const killedAt = Date.now();
    const timings: string[] = [];
    const timed = async <T>(label: string, work: () => Promise<T>): Promise<T> => {
      const start = Date.now();
      const value = await work();
      timings.push(`${label} ${Date.now() - start} ms`);
      return value;
    };
    // Channels without hs3: commits as before.
    await timed("kill-1", () => update("kill-1", onlyHs1.group, "al@hs1"));
    await timed("kill-12", () => update("kill-12", hs1hs2.group, "bo@hs2"));
    // hs3's channels that keep a majority: accepted (the one hs3 led elects hs1 or hs2 first).
    await timed("kill-123", () => update("kill-123", all.group, "bc@hs2"));
    await timed("kill-321 (its leader killed)", () => update("kill-321", ledByHs3.group, "ad@hs1"));
    // hs2 + hs3 without hs3: no majority, nothing is acknowledged.
    const stuck = await makeCommit(memberOf(hs2hs3.group, "be@hs2").state);
    const refused = await submit("kill-23", hs2hs3.group, stuck, "be@hs2", 2500).then(() => undefined, (error: grpc.ServiceError) => error);
    expect([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED]).toContain(refused?.code);

    // Not affected at all: the same leader in the same term.
    for (const channelId of unaffected) {
      const now = await groupAt("hs1", channelId);
      expect({ leader: now!.leaderId, term: now!.term }).toEqual({ leader: before.get(channelId)!.leaderId, term: before.get(channelId)!.term });
    }

    // hs3 returns: the channel that had lost its majority orders commits again (the stuck commit, or its
    // acceptance, comes first), and hs3 catches up on the channels it is in.
    cluster.start("hs3");
    const recovered = Date.now();
    for (let attempt = 0; ; attempt++) {
      const outcome = await submit("kill-23", hs2hs3.group, stuck, "be@hs2", 5000).then(() => "accepted" as const, (error: grpc.ServiceError) => error);
      if (outcome === "accepted") break;
      if (outcome.code === grpc.status.FAILED_PRECONDITION) {
        const conflict = fromBinary(CommitConflictSchema, outcome.metadata.get("epochd-commit-conflict-bin")[0] as Buffer);
        expect(Buffer.from(conflict.winner!.commit).equals(Buffer.from(stuck.commit))).toBe(true);
        break;
      }
      if (attempt >= 20) throw outcome;
      await sleep(500);
    }
    timings.push(`kill-23 orders again ${Date.now() - recovered} ms after hs3 restarted`);
    await applyAcceptedCommit(hs2hs3.group, "be@hs2", stuck);
    await update("kill-23", hs2hs3.group, "ce@hs3");
    await waitUntil(async () => {
      const [leader, back] = [await groupAt("hs1", "kill-123"), await groupAt("hs3", "kill-123")];
      return back !== undefined && leader !== undefined && back.appliedIndex >= leader.commitIndex;
    }, 20_000, "hs3 catches up on kill-123");
    console.log(`[channel groups] hs3 killed ${recovered - killedAt} ms: ${timings.join("; ")}`);
  }, 180_000);

  it("a wake notice from a peer loads a hibernating channel group, with no Raft message and no election", async () => {
    await createChannel("wake-123", "ka@hs1", ["kb@hs2", "kc@hs3"]);
    const everywhere = async () => Promise.all(["hs1", "hs2", "hs3"].map((id) => groupAt(id, "wake-123")));
    await waitUntil(async () => (await everywhere()).every((g) => g?.hibernating === true), 15_000, "the group hibernates everywhere");
    const before = (await groupAt("hs3", "wake-123"))!;
    // What a homeserver waking the group for a command sends its peers first, here sent as hs1 to hs3 alone.
    const client = new grpc.Client(cluster.get("hs3").peerAddress, cluster.peerCredentials("hs1"), { "grpc.ssl_target_name_override": "localhost" });
    const call = client.makeBidiStreamRequest(peerServicePaths.stream, (b: Buffer) => b, (b: Buffer) => b);
    call.on("error", () => undefined);
    call.on("data", () => undefined);
    try {
      call.write(encodeBatch([], [{ topic: wakeChannelGroupTopic, payload: new TextEncoder().encode("wake-123") }]));
      await waitUntil(async () => (await groupAt("hs3", "wake-123"))?.hibernating === false, 10_000, "hs3 loads the group");
      const loaded = (await groupAt("hs3", "wake-123"))!;
      expect({ leader: loaded.leaderId, term: loaded.term }).toEqual({ leader: before.leaderId, term: before.term });
      // Nobody else was woken: the notice, not Raft traffic, loaded it.
      expect((await groupAt("hs2", "wake-123"))?.hibernating).toBe(true);
    } finally {
      call.end();
      client.close();
    }
  }, 60_000);

  it("a channel group hibernating on every homeserver takes the next commit in the same term; with its leader killed, it elects on the next commit", async () => {
    const trio = await createChannel("hib-123", "ha@hs1", ["hb@hs2", "hc@hs3"]);
    const everywhere = async (check: (g: Awaited<ReturnType<typeof groupAt>>) => boolean) =>
      (await Promise.all(["hs1", "hs2", "hs3"].map((id) => groupAt(id, "hib-123")))).every(check);
    await waitUntil(() => everywhere((g) => g?.hibernating === true), 15_000, "the group hibernates everywhere");
    const before = (await groupAt("hs1", "hib-123"))!;
    expect(before.leaderId).not.toBe("");

    // Loaded again by the commit, on every homeserver, in the same role: no election.
    const membershipLines = () => ["hs1", "hs2", "hs3"].map((id) => cluster.log(id).split("\n").filter((l) => l.includes("channel/hib-123") && l.includes("membership changed")).length);
    const linesBefore = membershipLines();
    await update("hib-123", trio.group, "hb@hs2");
    const after = (await groupAt("hs1", "hib-123"))!;
    expect({ leader: after.leaderId, term: after.term }).toEqual({ leader: before.leaderId, term: before.term });
    // Reloading replays the log's membership changes; that is not logged as one.
    expect(membershipLines()).toEqual(linesBefore);
    await waitUntil(() => everywhere((g) => g?.hibernating === true), 15_000, "the group hibernates again");

    // Its leader dies while the group hibernates: the survivors elect when the next commit needs them.
    const leader = before.leaderId;
    const survivor = ["hb@hs2", "hc@hs3", "ha@hs1"].find((d) => homeOf(d) !== leader)!;
    await cluster.kill(leader, "SIGKILL");
    const killedAt = Date.now();
    await update("hib-123", trio.group, survivor);
    const electedMs = Date.now() - killedAt;
    const elected = (await groupAt(homeOf(survivor), "hib-123"))!;
    expect(elected.leaderId).not.toBe(leader);
    expect(elected.term).toBeGreaterThan(before.term);

    // The killed homeserver restarts with the group unloaded (it knows no leader), and its own device's
    // commit loads it and is ordered by the new leader.
    cluster.start(leader);
    await waitUntil(async () => (await groupAt(leader, "hib-123").catch(() => undefined))?.hibernating === true, 20_000, `${leader} reopens the group unloaded`);
    const own = ["ha@hs1", "hb@hs2", "hc@hs3"].find((d) => homeOf(d) === leader)!;
    await update("hib-123", trio.group, own);
    console.log(`[channel groups] hibernation: commit after the leader of a hibernating group was killed ${electedMs} ms`);
  }, 120_000);

  it("a witness homeserver votes in a channel it sponsors no member of: with one of the two members' homeservers killed, the channel still orders commits", async () => {
    await cluster.waitForLeader(); // the test before restarted a homeserver
    // A witness must be a homeserver of the cluster: refused before anything is proposed.
    const stranger = await buildGroup(["wz@hs1"], undefined, ["hs9"]);
    await logins.publish(memberOf(stranger, "wz@hs1").device);
    const refused = clientOf("wz@hs1").createChannel({ channelId: "wit-9", groupInfo: stranger.initialGroupInfo, contentType: "text/plain" }, await as("wz@hs1"));
    await expect(refused).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringMatching(/hs9 are not homeservers/) });
    const pair = await createChannel("wit-12", "wa@hs1", ["wb@hs2"], ["hs3"]);
    // hs3 hosts and votes from the start; its certificate signature counts like the others'.
    expect(pair.addCertificate!.voters).toEqual(["hs1", "hs3"]);
    await waitUntil(async () => (await hosting("wit-12")).size === 3, 10_000, "hs3 hosts the witnessed channel");
    expect((await hosting("wit-12")).get("hs1")).toEqual(["hs1", "hs2", "hs3"]);
    const certificate = await update("wit-12", pair.group, "wb@hs2");
    expect(certificate.voters).toEqual(["hs1", "hs2", "hs3"]);
    // hs3 has no member: its devices are refused, and the channel's state names it as a witness only.
    const state = (await clientOf("wa@hs1").getChannel({ channelId: "wit-12" }, await as("wa@hs1"))).channel!;
    expect({ homeservers: state.homeservers, witnesses: state.witnesses }).toEqual({ homeservers: ["hs1", "hs2"], witnesses: ["hs3"] });

    // Without a witness, a channel on hs1 and hs2 stops when either dies; with hs3 as witness it goes on.
    expect(await signersWithout("hs2", "wit-12", pair.group, "wa@hs1")).toEqual(["hs1", "hs3"]);
  }, 120_000);

  it("a homeserver whose data directory was lost gets its channel groups back: their leaders remove it and add it again with a new copy", async () => {
    await cluster.waitForLeader(); // the test before restarted a homeserver
    const trio = await createChannel("lost-123", "la@hs1", ["lb@hs2", "lc@hs3"]);
    await waitUntil(async () => (await hosting("lost-123")).size === 3, 10_000, "all three host the channel");
    await update("lost-123", trio.group, "la@hs1");
    // A channel on hs1 and hs2 only: removing hs2 would need hs2, so its copy is rebuilt in place.
    const pair = await createChannel("lost-12", "lp@hs1", ["lq@hs2"]);
    await update("lost-12", pair.group, "lp@hs1");
    // A channel on hs1 and hs2 that hs2 created, so hs2 leads its group when it loses it.
    const pairLedByLost = await createChannel("lost-21", "lr@hs2", ["ls@hs1"]);
    await update("lost-21", pairLedByLost.group, "lr@hs2");
    expect((await groupAt("hs2", "lost-21"))?.leaderId).toBe("hs2");
    const keysBefore = await directoryKeys();
    expect(await cluster.kill("hs2", "SIGTERM")).toBe(0);
    cluster.wipe("hs2");
    cluster.start("hs2");
    await cluster.waitForLeader();
    // Before, hs2 held no copy for good: the group went on with hs1 and hs3 and stopped when either died.
    // The next commit's Append reaches hs2, which says it holds no copy; the leader removes it (a copy
    // rebuilt in place would vote before it held what it had acknowledged) and adds it back as a voter,
    // whose new copy catches up.
    await update("lost-123", trio.group, "la@hs1");
    const caughtUp = async () => {
      const [copy, leader] = [await groupAt("hs2", "lost-123"), await groupAt("hs1", "lost-123")];
      return copy !== undefined && copy.voters.includes("hs2") && copy.appliedIndex > 0n && copy.appliedIndex === leader?.appliedIndex;
    };
    await waitUntil(caughtUp, 30_000, "hs2's copy caught up and votes");
    expect((await hosting("lost-123")).get("hs2")).toEqual(["hs1", "hs2", "hs3"]);
    expect(cluster.log("hs1") + cluster.log("hs3")).toMatch(/holds no copy of it .*removing it, to add it back with a new copy/);
    // Removed, then a voter again at once, never a learner: the channel does not wait for its new copy.
    const changes = cluster
      .log("hs1")
      .split("\n")
      .filter((line) => line.includes('"membership changed"') && line.includes('"channel/lost-123"'))
      .map((line) => (JSON.parse(line) as { confState: { voters: string[]; learners: string[] } }).confState);
    const removal = changes.map((conf) => conf.voters.includes("hs2")).lastIndexOf(false);
    expect(removal).toBeGreaterThan(2);
    expect(changes.slice(removal).map((conf) => ({ voters: sorted(conf.voters), learners: conf.learners }))).toEqual([
      { voters: ["hs1", "hs3"], learners: [] },
      { voters: ["hs1", "hs2", "hs3"], learners: [] },
    ]);
    // The two-homeserver channel, stopped without hs2, orders commits again.
    const pairAfter = await withChannelLogs("lost-12", ["hs1", "hs2"], update("lost-12", pair.group, "lp@hs1"));
    expect(pairAfter.signatures.map((s) => s.homeserverId).sort()).toEqual(["hs1", "hs2"]);
    expect(cluster.log("hs1")).toMatch(/"channelId":"lost-12".*"leads":true.*holds no copy of it .*asking it to host the group again/);
    // hs2 signs with a new key now: a client holding the directory from before the loss looks at it again.
    const signed = { channelId: "lost-12", epoch: pairAfter.epoch, commitHash: pairAfter.commitHash };
    expect(verifyCertificate(pairAfter, { ...signed, clusterId }, ["hs1", "hs2"], keysBefore)).toMatchObject({ ok: false, keyFault: true });
    expect(await verifyUnderDirectory(pairAfter, signed, ["hs1", "hs2"], async (refresh) => ({ clusterId, keys: refresh ? await directoryKeys() : keysBefore }))).toEqual({ ok: true });
    // And the one whose leader hs2 lost its copy: hs1, which can be elected only with hs2's vote and
    // holds every committed entry, asks hs2 to host the group again.
    const pairLedAfter = await withChannelLogs("lost-21", ["hs1", "hs2"], update("lost-21", pairLedByLost.group, "ls@hs1"));
    expect(pairLedAfter.signatures.map((s) => s.homeserverId).sort()).toEqual(["hs1", "hs2"]);
    expect(cluster.log("hs1")).toMatch(/"channelId":"lost-21".*"leads":false.*holds no copy of it .*asking it to host the group again/);
    // Until its new copy applied as far as hs1 had committed, it voted only for a log at least as complete as hs1's.
    expect(cluster.log("hs2")).toMatch(/"channelId":"lost-21","from":"hs1","catchUpFloor":\{"index":[1-9]\d*,"term":[1-9]\d*\},"msg":"hosting a channel group at a member's request"/);
    // It counts again: with hs3 down the channel goes on with hs1 and hs2.
    expect(await signersWithout("hs3", "lost-123", trio.group, "la@hs1")).toEqual(["hs1", "hs2"]);
  }, 120_000);
});
