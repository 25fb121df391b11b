import { createHash } from "node:crypto";
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import fc from "fast-check";
import { methodPath, unaryClient } from "../../src/api/grpc-service.ts";
import { isCertified, statementBytes, verifyCommitSignature } from "../../src/channel/certificate.ts";
import {
  ChannelService,
  CommitConflictSchema,
  EventKind,
  SubmitCommitStreamRequestSchema,
  SubmitCommitStreamResponseSchema,
  type Certificate,
  type SubmitCommitRequestSchema,
  type SubmitCommitStreamResponse,
} from "../../src/gen/epochd/channel/v1/channel_pb.ts";
import {
  applyAcceptedCommit,
  buildGroup,
  epochAuthenticator,
  makeCommit,
  makeDevice,
  memberOf,
  joinFromWelcome,
  makeProposal,
  type PendingCommit,
  type TestDevice,
} from "../fixtures/mls-group.ts";
import { DeviceLogins } from "./device-login.ts";
import { ProcessCluster } from "./process-cluster.ts";

type ChannelClient = ReturnType<typeof unaryClient<(typeof ChannelService)["method"]>>;

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

describe("channels on a real 3-homeserver cluster", () => {
  let cluster: ProcessCluster;
  let entryClient: ChannelClient;
  let keys: Map<string, Uint8Array>;
  let clusterId: string;
  /** Where every call goes: hs1, whose devices create the test's channels (a channel's group starts on its creator's homeserver). */
  const entry = "hs1";
  let logins: DeviceLogins;
  /** Publishes fixture devices' identity records so they can log in. */
  const publish = (...devices: TestDevice[]) => Promise.all(devices.map((d) => logins.publish(d)));
  /** Call options authenticating `deviceId` at hs1. */
  const as = async (deviceId: string, deadlineMs = 10_000) => ({ deadlineMs, metadata: await logins.metadata(deviceId, entry) });

  beforeAll(async () => {
    cluster = await ProcessCluster.create(3);
    cluster.startAll();
    await cluster.waitForLeader();
    entryClient = unaryClient(ChannelService, cluster.get(entry).clientAddress, cluster.clientCredentials(), { "grpc.ssl_target_name_override": "localhost" });
    // Every homeserver registers its signing key in the directory.
    const deadline = Date.now() + 15_000;
    for (;;) {
      const directory = await entryClient.listHomeservers({});
      keys = new Map(directory.homeservers.filter((h) => h.signingKey.byteLength === 32).map((h) => [h.homeserverId, h.signingKey]));
      clusterId = directory.clusterId;
      if (keys.size === 3 || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(keys.size).toBe(3);
    logins = new DeviceLogins(cluster, clusterId);
  });

  afterAll(async () => {
    logins?.close();
    entryClient?.close();
    await cluster?.close();
  });

  function expectValidCertificate(certificate: Certificate | undefined, channelId: string, epoch: bigint, commit: Uint8Array, voters: string[]): void {
    expect(certificate).toBeDefined();
    const cert = certificate!;
    expect(cert).toMatchObject({ clusterId, channelId, epoch });
    expect(hex(cert.commitHash)).toBe(createHash("sha256").update(commit).digest("hex"));
    expect([...cert.voters].sort()).toEqual([...voters].sort());
    expect(isCertified(cert)).toBe(true);
    for (const signature of cert.signatures) {
      expect(cert.voters).toContain(signature.homeserverId);
      const statement = statementBytes(cert.clusterId, cert.channelId, cert.epoch, cert.commitHash, cert.logIndex);
      expect(verifyCommitSignature(keys.get(signature.homeserverId)!, statement, signature)).toBe(true);
    }
  }

  /** Submits `pending` to hs1 as device `by`. */
  async function submit(channelId: string, epoch: bigint, pending: PendingCommit, by: string) {
    return entryClient.submitCommit(
      { channelId, epoch, commit: pending.commit, nextGroupInfo: pending.nextGroupInfo, welcome: pending.welcome ?? new Uint8Array(0) },
      await as(by, 15_000),
    );
  }

  it("orders commits by epoch: certified acceptance, exactly one winner in a race, the loser converges", async () => {
    const group = await buildGroup(["alice@hs1"]);
    const channelId = "room-race";
    const bob = await makeDevice("bob@hs2");
    const carol = await makeDevice("carol@hs3");
    await publish(memberOf(group, "alice@hs1").device, bob.device, carol.device);
    const created = await entryClient.createChannel({ channelId, groupInfo: group.initialGroupInfo, contentType: "text/plain" }, await as("alice@hs1"));
    expect(created.channel?.epoch).toBe(0n);

    // Alice adds Bob (hs2) and Carol (hs3); only hs1 certifies epoch 0.
    const add = await makeCommit(memberOf(group, "alice@hs1").state, { add: [bob.keyPackage.publicPackage, carol.keyPackage.publicPackage] });
    const added = await submit(channelId, 0n, add, "alice@hs1");
    expect(added.epoch).toBe(1n);
    expectValidCertificate(added.certificate, channelId, 0n, add.commit, ["hs1"]);
    await applyAcceptedCommit(group, "alice@hs1", add);
    group.members.set("bob@hs2", { device: bob.device, state: await joinFromWelcome(bob.keyPackage, add.welcome!) });
    group.members.set("carol@hs3", { device: carol.device, state: await joinFromWelcome(carol.keyPackage, add.welcome!) });

    // Bob and Carol race key updates on epoch 1.
    const bobCommit = await makeCommit(memberOf(group, "bob@hs2").state);
    const carolCommit = await makeCommit(memberOf(group, "carol@hs3").state);
    const outcomes = await Promise.allSettled([submit(channelId, 1n, bobCommit, "bob@hs2"), submit(channelId, 1n, carolCommit, "carol@hs3")]);
    const accepted = outcomes.filter((o) => o.status === "fulfilled");
    const rejected = outcomes.filter((o): o is PromiseRejectedResult => o.status === "rejected");
    expect(accepted).toHaveLength(1);
    expect(rejected).toHaveLength(1);
    const error = rejected[0]!.reason as grpc.ServiceError;
    expect(error.code).toBe(grpc.status.FAILED_PRECONDITION);
    const conflict = fromBinary(CommitConflictSchema, error.metadata.get("epochd-commit-conflict-bin")[0] as Buffer);
    expect(conflict.currentEpoch).toBe(2n);
    const winnerIsBob = outcomes[0]!.status === "fulfilled";
    const [winnerId, winner, loserId] = winnerIsBob ? ["bob@hs2", bobCommit, "carol@hs3"] : ["carol@hs3", carolCommit, "bob@hs2"];
    expect(hex(conflict.winner!.commit)).toBe(hex(winner.commit));
    expectValidCertificate(conflict.winner!.certificate, channelId, 1n, winner.commit, ["hs1", "hs2", "hs3"]);

    // Everyone applies the winner; the loser processes it from its kept base state and retries on epoch 2.
    await applyAcceptedCommit(group, winnerId, winner);
    const retry = await makeCommit(memberOf(group, loserId).state);
    const retried = await submit(channelId, 2n, retry, loserId);
    expect(retried.epoch).toBe(3n);
    await applyAcceptedCommit(group, loserId, retry);

    const authenticators = new Set([...group.members.values()].map((m) => hex(epochAuthenticator(m.state))));
    expect(authenticators.size).toBe(1);
    const state = await entryClient.getChannel({ channelId }, await as("alice@hs1"));
    expect(state.channel?.epoch).toBe(3n);
    expect(state.channel?.homeservers).toEqual(["hs1", "hs2", "hs3"]);

    // The event log holds exactly one commit per epoch, each with a certificate.
    const events = await entryClient.listEvents({ channelId, afterSequence: 0n }, await as("alice@hs1"));
    const commits = events.events.filter((e) => e.kind === EventKind.COMMIT);
    expect(commits.map((e) => e.epoch)).toEqual([0n, 1n, 2n]);
    for (const event of commits) expect(isCertified(event.certificate!)).toBe(true);
  });

  it("enforces roles: a plain member cannot add or remove others; a removed member cannot commit; an outsider's commit is refused", async () => {
    const solo = await buildGroup(["olga@hs1"]);
    const soloId = "room-roles-2";
    const mia = await makeDevice("mia@hs2");
    const nils = await makeDevice("nils@hs3");
    await publish(memberOf(solo, "olga@hs1").device, mia.device, nils.device);
    await entryClient.createChannel({ channelId: soloId, groupInfo: solo.initialGroupInfo, contentType: "text/plain" }, await as("olga@hs1"));
    const add = await makeCommit(memberOf(solo, "olga@hs1").state, { add: [mia.keyPackage.publicPackage, nils.keyPackage.publicPackage] });
    await submit(soloId, 0n, add, "olga@hs1");
    await applyAcceptedCommit(solo, "olga@hs1", add);
    solo.members.set("mia@hs2", { device: mia.device, state: await joinFromWelcome(mia.keyPackage, add.welcome!) });
    solo.members.set("nils@hs3", { device: nils.device, state: await joinFromWelcome(nils.keyPackage, add.welcome!) });

    // Mia (a plain member) may not add anyone, nor remove Nils.
    const stranger = await makeDevice("zed@hs2");
    const miaAdds = await makeCommit(memberOf(solo, "mia@hs2").state, { add: [stranger.keyPackage.publicPackage] });
    await expect(submit(soloId, 1n, miaAdds, "mia@hs2")).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    const nilsLeaf = memberOf(solo, "nils@hs3").state.privatePath.leafIndex;
    const miaRemoves = await makeCommit(memberOf(solo, "mia@hs2").state, { remove: [nilsLeaf] });
    await expect(submit(soloId, 1n, miaRemoves, "mia@hs2")).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });

    // Olga (the owner) removes Nils; Nils may no longer submit, and his commit relayed by a member is refused at apply.
    const nilsStateBefore = memberOf(solo, "nils@hs3").state;
    const remove = await makeCommit(memberOf(solo, "olga@hs1").state, { remove: [nilsLeaf] });
    await submit(soloId, 1n, remove, "olga@hs1");
    await applyAcceptedCommit(solo, "olga@hs1", remove);
    const nilsCommit = await makeCommit(nilsStateBefore);
    const nilsSubmits = { channelId: soloId, epoch: 2n, commit: nilsCommit.commit, nextGroupInfo: nilsCommit.nextGroupInfo };
    await expectNotMember("nils@hs3", (client, options) => client.submitCommit(nilsSubmits, options));
    await expect(submit(soloId, 2n, nilsCommit, "mia@hs2")).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });

    // A device of another group with the same group id: not a member; its commit (relayed) is signed by a key not in this tree.
    const outsider = await buildGroup(["eve@hs1"], solo.groupId);
    await publish(memberOf(outsider, "eve@hs1").device);
    const forged = await makeCommit(memberOf(outsider, "eve@hs1").state);
    await expect(submit(soloId, 2n, forged, "eve@hs1")).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    await expect(submit(soloId, 2n, forged, "mia@hs2")).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });

    // The channel is unharmed: Mia can still update her own keys.
    const miaUpdate = await makeCommit(memberOf(solo, "mia@hs2").state);
    expect((await submit(soloId, 2n, miaUpdate, "mia@hs2")).epoch).toBe(3n);
  });

  /**
   * A device that is not a member (of the channel `call` is about) asks hs1: a device of another
   * homeserver is sent to its own (a leader hint naming it, whatever the channel), which refuses it with
   * PERMISSION_DENIED; a device of hs1 is refused there.
   */
  async function expectNotMember(deviceId: string, call: (client: ChannelClient, options: { deadlineMs: number; metadata: grpc.Metadata }) => Promise<unknown>): Promise<void> {
    const homeId = deviceId.slice(deviceId.indexOf("@") + 1);
    if (entry !== homeId) {
      const redirected = await call(entryClient, await as(deviceId)).then(() => undefined, (error: grpc.ServiceError) => error);
      expect(redirected).toMatchObject({ code: grpc.status.FAILED_PRECONDITION });
      expect(redirected?.metadata.get("epochd-leader-id")).toEqual([homeId]);
    }
    const home = unaryClient(ChannelService, cluster.get(homeId).clientAddress, cluster.clientCredentials(), { "grpc.ssl_target_name_override": "localhost" });
    try {
      await expect(call(home, { deadlineMs: 10_000, metadata: await logins.metadata(deviceId, homeId) })).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    } finally {
      home.close();
    }
  }

  it("an unauthenticated caller gets UNAUTHENTICATED and a non-member PERMISSION_DENIED, and neither changes the channel", async () => {
    const group = await buildGroup(["ursula@hs1"]);
    const channelId = "room-auth";
    const victor = await makeDevice("victor@hs2");
    const walt = await makeDevice("walt@hs3");
    await publish(memberOf(group, "ursula@hs1").device, victor.device, walt.device);
    // CreateChannel: only the GroupInfo's sole member may create it; a refused creation creates nothing.
    const request = { channelId, groupInfo: group.initialGroupInfo, contentType: "text/plain" };
    await expect(entryClient.createChannel(request, await as("walt@hs3"))).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    await expect(entryClient.createChannel(request)).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    await entryClient.createChannel(request, await as("ursula@hs1"));
    const add = await makeCommit(memberOf(group, "ursula@hs1").state, { add: [victor.keyPackage.publicPackage] });
    await submit(channelId, 0n, add, "ursula@hs1");
    await applyAcceptedCommit(group, "ursula@hs1", add);
    const before = await entryClient.listEvents({ channelId, afterSequence: 0n }, await as("ursula@hs1"));

    // A genuine commit of a member, submitted without a token, with a forged one, and by a non-member.
    const update = await makeCommit(memberOf(group, "ursula@hs1").state);
    const commit = { channelId, epoch: 1n, commit: update.commit, nextGroupInfo: update.nextGroupInfo };
    const forgedToken = new grpc.Metadata();
    forgedToken.set("authorization", "Bearer not-a-token");
    await expect(entryClient.submitCommit(commit)).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    await expect(entryClient.submitCommit(commit, { metadata: forgedToken })).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    await expectNotMember("walt@hs3", (client, options) => client.submitCommit(commit, options));
    // A token is valid only at the homeserver that issued it.
    const elsewhere = ["hs1", "hs2", "hs3"].find((id) => id !== entry)!;
    await expect(entryClient.submitCommit(commit, { metadata: await logins.metadata("ursula@hs1", elsewhere) })).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    // Reads and the other writes: the same.
    await expectNotMember("walt@hs3", (client, options) => client.listEvents({ channelId, afterSequence: 0n }, options));
    await expectNotMember("walt@hs3", (client, options) => client.getChannel({ channelId }, options));
    await expectNotMember("walt@hs3", (client, options) => client.getChannel({ channelId: "no-such-channel" }, options));
    await expect(entryClient.getCommit({ channelId, epoch: 0n })).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    await expectNotMember("walt@hs3", (client, options) => client.sendMessage({ channelId, epoch: 1n, message: update.commit }, options));
    await expectNotMember("walt@hs3", (client, options) => client.submitProposal({ channelId, epoch: 1n, proposal: update.commit }, options));

    // Nothing changed: same epoch, same log; the member's very same commit is still the epoch's one.
    const after = await entryClient.listEvents({ channelId, afterSequence: 0n }, await as("ursula@hs1"));
    expect(after.lastSequence).toBe(before.lastSequence);
    expect((await entryClient.getChannel({ channelId }, await as("victor@hs2"))).channel?.epoch).toBe(1n);
    expect((await entryClient.submitCommit(commit, await as("ursula@hs1"))).epoch).toBe(2n);
  });

  it("one member flooding proposals is throttled with a retry delay while another's commit is accepted", async () => {
    const solo = await buildGroup(["pia@hs1"]);
    const channelId = "room-flood";
    const quinn = await makeDevice("quinn@hs2");
    await publish(memberOf(solo, "pia@hs1").device, quinn.device);
    await entryClient.createChannel({ channelId, groupInfo: solo.initialGroupInfo, contentType: "text/plain" }, await as("pia@hs1"));
    const add = await makeCommit(memberOf(solo, "pia@hs1").state, { add: [quinn.keyPackage.publicPackage] });
    await submit(channelId, 0n, add, "pia@hs1");
    await applyAcceptedCommit(solo, "pia@hs1", add);
    solo.members.set("quinn@hs2", { device: quinn.device, state: await joinFromWelcome(quinn.keyPackage, add.welcome!) });

    const stranger = await makeDevice("spam@hs2");
    const { bytes: proposal } = await makeProposal(memberOf(solo, "quinn@hs2").state, { proposalType: "add", add: { keyPackage: stranger.keyPackage.publicPackage } });
    const asQuinn = await as("quinn@hs2");
    const flood = await Promise.allSettled(Array.from({ length: 60 }, () => entryClient.submitProposal({ channelId, epoch: 1n, proposal }, asQuinn)));
    const throttled = flood.filter((o): o is PromiseRejectedResult => o.status === "rejected" && (o.reason as grpc.ServiceError).code === grpc.status.RESOURCE_EXHAUSTED);
    expect(throttled.length).toBeGreaterThan(0);
    expect(Number((throttled[0]!.reason as grpc.ServiceError).metadata.get("retry-after-ms")[0])).toBeGreaterThan(0);
    // Pia's commit is not starved.
    const update = await makeCommit(memberOf(solo, "pia@hs1").state);
    expect((await submit(channelId, 1n, update, "pia@hs1")).epoch).toBe(2n);
  });

  it("fuzzed MLSMessage bytes and malformed requests get INVALID_ARGUMENT and the homeserver keeps serving (property)", async () => {
    const solo = await buildGroup(["fuzz@hs1"]);
    const channelId = "room-fuzz";
    await publish(memberOf(solo, "fuzz@hs1").device);
    const asFuzz = await as("fuzz@hs1", 15_000);
    await entryClient.createChannel({ channelId, groupInfo: solo.initialGroupInfo, contentType: "text/plain" }, asFuzz);
    const valid = await makeCommit(memberOf(solo, "fuzz@hs1").state);
    const seed = Number(process.env["FC_SEED"] ?? Date.now() % 2 ** 31);
    console.log(`fuzz property seed ${seed} (FC_SEED=${seed} reproduces)`);
    const codeOf = (call: Promise<unknown>) => call.then(() => grpc.status.OK, (e: grpc.ServiceError) => e.code);
    // Random bytes in every MLS field, and bytes that are not even a request message.
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 600 }), fc.constantFrom("commit", "proposal", "message", "groupInfo", "raw"), async (bytes, field) => {
        const call =
          field === "commit" ? entryClient.submitCommit({ channelId, epoch: 0n, commit: bytes, nextGroupInfo: valid.nextGroupInfo }, asFuzz)
          : field === "proposal" ? entryClient.submitProposal({ channelId, epoch: 0n, proposal: bytes }, asFuzz)
          : field === "message" ? entryClient.sendMessage({ channelId, epoch: 0n, message: bytes }, asFuzz)
          : field === "groupInfo" ? entryClient.createChannel({ channelId: `fuzz-${bytes.byteLength}`, groupInfo: bytes, contentType: "text/plain" }, asFuzz)
          : rawUnary(entryClient.channel, methodPath(ChannelService.method.submitCommit), Buffer.concat([Buffer.from([0x1a, 0xff, 0xff, 0xff, 0x7f]), Buffer.from(bytes)]));
        expect(await codeOf(call), field).toBe(grpc.status.INVALID_ARGUMENT);
      }),
      { seed, numRuns: 50 },
    );
    // One-byte mutations of a genuine commit: refused, unless the byte is one no signature covers (the
    // membership tag, which only members can check); such a commit is then accepted as the epoch's one.
    let epoch = 0n;
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: valid.commit.byteLength - 1 }), fc.integer({ min: 1, max: 255 }), async (at, xor) => {
        const bytes = new Uint8Array(valid.commit);
        bytes[at] = bytes[at]! ^ xor;
        // A real client waits out RESOURCE_EXHAUSTED (this sender's rate limit) and retries.
        let code = grpc.status.RESOURCE_EXHAUSTED;
        for (let attempt = 0; attempt < 20 && code === grpc.status.RESOURCE_EXHAUSTED; attempt++) {
          const error = await entryClient.submitCommit({ channelId, epoch, commit: bytes, nextGroupInfo: valid.nextGroupInfo }, asFuzz).then(
            () => undefined,
            (e: grpc.ServiceError) => e,
          );
          code = error?.code ?? grpc.status.OK;
          if (code === grpc.status.RESOURCE_EXHAUSTED) await new Promise((r) => setTimeout(r, Number(error!.metadata.get("retry-after-ms")[0] ?? 100)));
        }
        if (code === grpc.status.OK) epoch++;
        else expect([grpc.status.INVALID_ARGUMENT, grpc.status.FAILED_PRECONDITION]).toContain(code);
        if (code === grpc.status.FAILED_PRECONDITION) expect(epoch).toBeGreaterThan(0n);
      }),
      { seed, numRuns: 30 },
    );
    // Still serving.
    expect((await entryClient.getChannel({ channelId }, asFuzz)).channel?.epoch).toBe(epoch);
  });

  /** A SubmitCommitStream to hs1 with `metadata`: send raw items, take the answers as they come. */
  function commitStream(metadata: grpc.Metadata) {
    const call = entryClient.channel.makeBidiStreamRequest(methodPath(ChannelService.method.submitCommitStream), (b: Buffer) => b, (b: Buffer) => b, metadata);
    const answers: SubmitCommitStreamResponse[] = [];
    const waiting: Array<() => void> = [];
    call.on("data", (bytes: Buffer) => {
      answers.push(fromBinary(SubmitCommitStreamResponseSchema, bytes));
      for (const wake of waiting.splice(0)) wake();
    });
    const closed = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    call.on("error", () => undefined);
    return {
      send: (bytes: Uint8Array) => call.write(Buffer.from(bytes)),
      /** Item `requestId` with `commit` (none: an item without one). */
      item: (requestId: bigint, commit?: MessageInitShape<typeof SubmitCommitRequestSchema>) =>
        call.write(Buffer.from(toBinary(SubmitCommitStreamRequestSchema, create(SubmitCommitStreamRequestSchema, commit === undefined ? { requestId } : { requestId, commit })))),
      /** The answer to `requestId`, waiting at most 15 s. */
      async answer(requestId: bigint): Promise<SubmitCommitStreamResponse> {
        const until = Date.now() + 15_000;
        for (;;) {
          const found = answers.find((a) => a.requestId === requestId);
          if (found !== undefined) return found;
          if (Date.now() > until) throw new Error(`no answer to item ${requestId}`);
          await Promise.race([new Promise<void>((resolve) => waiting.push(resolve)), new Promise((resolve) => setTimeout(resolve, 200))]);
        }
      },
      end: () => call.end(),
      closed,
      answers,
    };
  }

  it("SubmitCommitStream orders and certifies like SubmitCommit; a refused or malformed item gets its status and the stream goes on", async () => {
    const group = await buildGroup(["sten@hs1"]);
    const channelId = "room-stream";
    const tove = await makeDevice("tove@hs2");
    const ulf = await makeDevice("ulf@hs3");
    await publish(memberOf(group, "sten@hs1").device, tove.device, ulf.device);
    await entryClient.createChannel({ channelId, groupInfo: group.initialGroupInfo, contentType: "text/plain" }, await as("sten@hs1"));
    const stream = commitStream((await as("sten@hs1")).metadata);

    // Accepted and certified, on the stream: Sten adds Tove (hs2) and Ulf (hs3), then updates his keys.
    const add = await makeCommit(memberOf(group, "sten@hs1").state, { add: [tove.keyPackage.publicPackage, ulf.keyPackage.publicPackage] });
    stream.item(1n, { channelId, epoch: 0n, commit: add.commit, nextGroupInfo: add.nextGroupInfo, welcome: add.welcome! });
    const added = await stream.answer(1n);
    expect(added.error).toBeUndefined();
    expect(added.result?.epoch).toBe(1n);
    expectValidCertificate(added.result?.certificate, channelId, 0n, add.commit, ["hs1"]);
    await applyAcceptedCommit(group, "sten@hs1", add);
    const update = await makeCommit(memberOf(group, "sten@hs1").state);
    const rival = await makeCommit(memberOf(group, "sten@hs1").state);
    stream.item(2n, { channelId, epoch: 1n, commit: update.commit, nextGroupInfo: update.nextGroupInfo });
    const updated = await stream.answer(2n);
    expect(updated.result?.epoch).toBe(2n);
    expectValidCertificate(updated.result?.certificate, channelId, 1n, update.commit, ["hs1", "hs2", "hs3"]);

    // A rival for epoch 1: FAILED_PRECONDITION with the conflict detail a unary call carries in metadata.
    stream.item(3n, { channelId, epoch: 1n, commit: rival.commit, nextGroupInfo: rival.nextGroupInfo });
    const lost = await stream.answer(3n);
    expect(lost.result).toBeUndefined();
    expect(lost.error).toMatchObject({ code: grpc.status.FAILED_PRECONDITION, conflict: { channelId, currentEpoch: 2n } });
    expect(hex(lost.error!.conflict!.winner!.commit)).toBe(hex(update.commit));
    expectValidCertificate(lost.error!.conflict!.winner!.certificate, channelId, 1n, update.commit, ["hs1", "hs2", "hs3"]);

    // Bytes that are no item, an item without a commit, and fuzzed MLS bytes: INVALID_ARGUMENT each.
    stream.send(Uint8Array.of(0x0a, 0xff, 0xff));
    stream.item(5n);
    stream.item(6n, { channelId, epoch: 2n, commit: Uint8Array.of(0, 1, 2, 3), nextGroupInfo: update.nextGroupInfo });
    expect((await stream.answer(0n)).error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect((await stream.answer(5n)).error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect((await stream.answer(6n)).error).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, message: expect.stringMatching(/commit/) });

    // The stream still serves, and ends cleanly once the client ends it and every item is answered.
    await applyAcceptedCommit(group, "sten@hs1", update);
    const next = await makeCommit(memberOf(group, "sten@hs1").state);
    stream.item(7n, { channelId, epoch: 2n, commit: next.commit, nextGroupInfo: next.nextGroupInfo });
    stream.end();
    expect((await stream.answer(7n)).result?.epoch).toBe(3n);
    expect((await stream.closed).code).toBe(grpc.status.OK);
    expect(stream.answers.map((a) => a.requestId).sort()).toEqual([0n, 1n, 2n, 3n, 5n, 6n, 7n]);

    // Without a token, or with a forged one, every item is UNAUTHENTICATED and changes nothing.
    await applyAcceptedCommit(group, "sten@hs1", next);
    const stray = await makeCommit(memberOf(group, "sten@hs1").state);
    const forged = new grpc.Metadata();
    forged.set("authorization", "Bearer not-a-token");
    for (const metadata of [new grpc.Metadata(), forged]) {
      const anonymous = commitStream(metadata);
      anonymous.item(1n, { channelId, epoch: 3n, commit: stray.commit, nextGroupInfo: stray.nextGroupInfo });
      expect((await anonymous.answer(1n)).error?.code).toBe(grpc.status.UNAUTHENTICATED);
      anonymous.end();
      await anonymous.closed;
    }
    expect((await entryClient.getChannel({ channelId }, await as("tove@hs2"))).channel?.epoch).toBe(3n);
  });
});

function rawUnary(channel: grpc.Client, path: string, body: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    channel.makeUnaryRequest(path, (b: Buffer) => b, (b: Buffer) => b, body, (error, response) => (error ? reject(error) : resolve(response!))),
  );
}
