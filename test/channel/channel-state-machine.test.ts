/**
 * The channel state machine on its own: real ts-mls devices, an in-memory key
 * space, commands applied in log order. What apply decides must not depend on
 * anything but the commands, and every rule has a test that breaks with it.
 */
import { generateKeyPairSync, sign, createPublicKey, type KeyObject } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { beforeAll, describe, expect, it } from "vitest";
import { ApplyBatch } from "../../src/multiraft/apply-batch.ts";
import { batchSigningMessage, statementBytes } from "../../src/channel/certificate.ts";
import { buildMerkleTree, merkleLeafHash } from "../../src/channel/merkle.ts";
import { ChannelStateMachine, type ChannelResult } from "../../src/channel/channel-state-machine.ts";
import { HandshakeMode, SignatureSchema, SubmitCommitRequestSchema, type Signature } from "../../src/gen/epochd/channel/v1/channel_pb.ts";
import { ChannelCommandSchema, type ChannelCommand } from "../../src/gen/epochd/state/v1/channel_state_pb.ts";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  applyAcceptedCommit,
  buildGroup,
  joinFromWelcome,
  makeApplicationMessage,
  makeCommit,
  makeDevice,
  makeProposal,
  processHandshake,
  memberOf,
  type PendingCommit,
  type TestGroup,
} from "../fixtures/mls-group.ts";

type CommandInit = NonNullable<MessageInitShape<typeof ChannelCommandSchema>["command"]>;

interface Homeserver {
  readonly id: string;
  readonly privateKey: KeyObject;
  readonly publicKeyRaw: Uint8Array;
}

function homeserver(id: string): Homeserver {
  const { privateKey } = generateKeyPairSync("ed25519");
  const spki = createPublicKey(privateKey).export({ format: "der", type: "spki" });
  return { id, privateKey, publicKeyRaw: new Uint8Array(spki.subarray(spki.length - 32)) };
}

/** A state machine over an in-memory key space, fed commands at increasing log indexes. */
class Harness {
  readonly stored = new Map<string, Uint8Array>();
  machine: ChannelStateMachine;
  index = 10;

  /** The voters of each channel's own group, when the test gives channels groups (see votersOf). */
  readonly groupVoters = new Map<string, string[]>();

  constructor(readonly homeservers: Map<string, Homeserver>, withGroups = false) {
    this.machine = new ChannelStateMachine({
      clusterId: "test-cluster",
      signingKeyOf: (id) => homeservers.get(id)?.publicKeyRaw,
      ...(withGroups ? { votersOf: (channelId: string) => this.groupVoters.get(channelId) } : {}),
    });
  }

  async apply(command: CommandInit): Promise<ChannelResult> {
    const batch = new ApplyBatch(0x43, async (key) => this.stored.get(Buffer.from(key).toString("hex")));
    const result = await this.machine.apply(create(ChannelCommandSchema, { command }) as ChannelCommand, ++this.index, batch);
    for (const write of batch.writes) {
      if ("value" in write) this.stored.set(Buffer.from(write.key).toString("hex"), write.value);
      else this.stored.delete(Buffer.from(write.key).toString("hex"));
    }
    return result;
  }

  /** A restart: a fresh state machine that loads what this one stored. */
  async reload(): Promise<void> {
    this.machine = new ChannelStateMachine({ clusterId: "test-cluster", signingKeyOf: (id) => this.homeservers.get(id)?.publicKeyRaw });
    const stored = this.stored;
    await this.machine.load(async function* (prefix) {
      const start = Buffer.concat([Buffer.from([0x43]), prefix]).toString("hex");
      for (const key of [...stored.keys()].sort()) if (key.startsWith(start)) yield [Buffer.from(key, "hex"), stored.get(key)!] as [Uint8Array, Uint8Array];
    });
  }

  /**
   * Applies a commit, previewed first (what a homeserver that stored its entry signs, see
   * ChannelStateMachine.previewCommit): the preview changes nothing and decides exactly what apply does.
   */
  async commit(channelId: string, epoch: bigint, pending: PendingCommit): Promise<ChannelResult> {
    const request = create(SubmitCommitRequestSchema, { channelId, epoch, commit: pending.commit, nextGroupInfo: pending.nextGroupInfo, welcome: pending.welcome ?? new Uint8Array(0) });
    const stored = new Map(this.stored);
    const record = structuredClone(this.machine.channel(channelId));
    const preview = await this.machine.previewCommit(request, BigInt(this.index + 1));
    expect(this.stored).toEqual(stored);
    expect(this.machine.channel(channelId)).toEqual(record);
    // A second preview runs while the commit is applied, as on a homeserver: it still decides on the state before.
    const during = this.machine.previewCommit(request, BigInt(this.index + 1));
    // Applied as another homeserver that did not preview it decodes it: its own object, checked anew.
    const result = await this.apply({ case: "submitCommit", value: create(SubmitCommitRequestSchema, request) });
    const accepted = result.ok && result.kind === "commit-accepted" ? { channelId, epoch: result.epoch, commitHash: result.commitHash, logIndex: BigInt(this.index), voters: result.voters } : undefined;
    expect(preview, `the preview of a commit at ${this.index} decides as its apply: ${JSON.stringify(result, (_, v: unknown) => (typeof v === "bigint" ? String(v) : v))}`).toEqual(accepted);
    expect(await during).toEqual(accepted);
    return result;
  }

  /** `signer`'s signature over the commit, as the second leaf of a batch of two (so the proof is used). */
  signature(signer: Homeserver, channelId: string, result: ChannelResult, logIndex: number, as: string = signer.id): { channelId: string; epoch: bigint; signature: Signature } {
    if (!result.ok || result.kind !== "commit-accepted") throw new Error("not an accepted commit");
    const statement = statementBytes("test-cluster", channelId, result.epoch, result.commitHash, BigInt(logIndex));
    const other = statementBytes("test-cluster", `${channelId}-other`, result.epoch, result.commitHash, BigInt(logIndex) - 1n);
    const tree = buildMerkleTree([merkleLeafHash(other), merkleLeafHash(statement)]);
    const signature = new Uint8Array(sign(null, batchSigningMessage(tree.root), signer.privateKey));
    return { channelId, epoch: result.epoch, signature: create(SignatureSchema, { homeserverId: as, signature, leafIndex: 1, leafCount: 2, proof: tree.proof(1) }) };
  }
}

/** A channel of alice@hs1 (owner), bob@hs2 and carol@hs3 at epoch 1, accepted through `harness`. */
async function threeMemberChannel(harness: Harness, channelId: string): Promise<TestGroup> {
  const group = await buildGroup(["alice@hs1"]);
  expect(await harness.apply({ case: "createChannel", value: { channelId, groupInfo: group.initialGroupInfo, contentType: "text/plain" } })).toMatchObject({ ok: true, kind: "created" });
  const bob = await makeDevice("bob@hs2");
  const carol = await makeDevice("carol@hs3");
  const add = await makeCommit(memberOf(group, "alice@hs1").state, { add: [bob.keyPackage.publicPackage, carol.keyPackage.publicPackage] });
  expect(await harness.commit(channelId, 0n, add)).toMatchObject({ ok: true, kind: "commit-accepted", voters: ["hs1"] });
  await applyAcceptedCommit(group, "alice@hs1", add);
  group.members.set("bob@hs2", { device: bob.device, state: await joinFromWelcome(bob.keyPackage, add.welcome!) });
  group.members.set("carol@hs3", { device: carol.device, state: await joinFromWelcome(carol.keyPackage, add.welcome!) });
  return group;
}

describe("the channel state machine", () => {
  let servers: Map<string, Homeserver>;

  beforeAll(() => {
    servers = new Map(["hs1", "hs2", "hs3", "hs4"].map((id) => [id, homeserver(id)]));
  });

  it("creates a channel once, owned by its creator", async () => {
    const h = new Harness(servers);
    const group = await buildGroup(["alice@hs1"]);
    const request = { channelId: "c1", groupInfo: group.initialGroupInfo, contentType: "text/plain" };
    expect(await h.apply({ case: "createChannel", value: request })).toMatchObject({ ok: true, kind: "created" });
    expect(await h.apply({ case: "createChannel", value: request })).toMatchObject({ ok: false, code: "exists" });
    expect(h.machine.channel("c1")).toMatchObject({ epoch: 0n, handshakeMode: HandshakeMode.PUBLIC, members: [{ deviceId: "alice@hs1", role: 3 }] });
    expect(await h.apply({ case: "createChannel", value: { ...request, channelId: "bad id!" } })).toMatchObject({ ok: false, code: "invalid" });
  });

  it("accepts exactly one commit per epoch: a rival, a replay and a future epoch are conflicts", async () => {
    const h = new Harness(servers);
    const group = await threeMemberChannel(h, "c2");
    const bobUpdate = await makeCommit(memberOf(group, "bob@hs2").state);
    const carolUpdate = await makeCommit(memberOf(group, "carol@hs3").state);
    expect(await h.commit("c2", 1n, carolUpdate)).toMatchObject({ ok: true, kind: "commit-accepted", epoch: 1n, voters: ["hs1", "hs2", "hs3"] });
    expect(await h.commit("c2", 1n, bobUpdate)).toMatchObject({ ok: false, code: "conflict", currentEpoch: 2n, builtOn: 1n });
    expect(await h.commit("c2", 1n, carolUpdate)).toMatchObject({ ok: false, code: "conflict", currentEpoch: 2n });
    expect(await h.commit("c2", 5n, bobUpdate)).toMatchObject({ ok: false, code: "conflict", currentEpoch: 2n, builtOn: 5n });
    // A commit built on the right epoch number but from a stale state does not verify.
    expect(await h.commit("c2", 2n, bobUpdate)).toMatchObject({ ok: false, code: "invalid" });
    expect(h.machine.channel("c2")?.epoch).toBe(2n);
  });

  it("owners and admins add and remove others; a member only updates itself; a removed member cannot commit", async () => {
    const h = new Harness(servers);
    const group = await threeMemberChannel(h, "c3");
    const dave = await makeDevice("dave@hs4");
    const bobAdds = await makeCommit(memberOf(group, "bob@hs2").state, { add: [dave.keyPackage.publicPackage] });
    expect(await h.commit("c3", 1n, bobAdds)).toMatchObject({ ok: false, code: "invalid", reason: expect.stringMatching(/may not add/) });
    const carolLeaf = memberOf(group, "carol@hs3").state.privatePath.leafIndex;
    const bobRemoves = await makeCommit(memberOf(group, "bob@hs2").state, { remove: [carolLeaf] });
    expect(await h.commit("c3", 1n, bobRemoves)).toMatchObject({ ok: false, code: "invalid", reason: expect.stringMatching(/may not remove/) });

    const carolBefore = memberOf(group, "carol@hs3").state;
    const aliceRemoves = await makeCommit(memberOf(group, "alice@hs1").state, { remove: [carolLeaf] });
    expect(await h.commit("c3", 1n, aliceRemoves)).toMatchObject({ ok: true, kind: "commit-accepted" });
    await applyAcceptedCommit(group, "alice@hs1", aliceRemoves);
    expect(h.machine.channel("c3")?.members.map((m) => m.deviceId).sort()).toEqual(["alice@hs1", "bob@hs2"]);
    const carolLate = await makeCommit(carolBefore);
    expect(await h.commit("c3", 2n, carolLate)).toMatchObject({ ok: false, code: "invalid" });
    const bobUpdate = await makeCommit(memberOf(group, "bob@hs2").state);
    expect(await h.commit("c3", 2n, bobUpdate)).toMatchObject({ ok: true, kind: "commit-accepted", voters: ["hs1", "hs2"] });
  });

  it("a member may commit, by reference, another member's proposal to leave; but not remove a third by value", async () => {
    const h = new Harness(servers);
    const group = await threeMemberChannel(h, "c8");
    const carol = memberOf(group, "carol@hs3");
    const { bytes: leave } = await makeProposal(carol.state, { proposalType: "remove", remove: { removed: carol.state.privatePath.leafIndex } });
    expect(await h.apply({ case: "submitProposal", value: { channelId: "c8", epoch: 1n, proposal: leave } })).toMatchObject({ ok: true, kind: "proposal-accepted" });
    const bob = memberOf(group, "bob@hs2");
    bob.state = await processHandshake(bob.state, leave);
    const aliceLeaf = memberOf(group, "alice@hs1").state.privatePath.leafIndex;
    const bobRemovesAlice = await makeCommit(bob.state, { remove: [aliceLeaf] });
    expect(await h.commit("c8", 1n, bobRemovesAlice)).toMatchObject({ ok: false, code: "invalid", reason: expect.stringMatching(/may not remove others/) });
    const bobCommitsLeave = await makeCommit(bob.state);
    expect(await h.commit("c8", 1n, bobCommitsLeave)).toMatchObject({ ok: true, kind: "commit-accepted" });
    expect(h.machine.channel("c8")?.members.map((m) => m.deviceId).sort()).toEqual(["alice@hs1", "bob@hs2"]);
  });

  it("certifies a commit once a majority of its voters signed, counting each voter once and only valid signatures", async () => {
    const h = new Harness(servers);
    const group = await threeMemberChannel(h, "c4");
    const update = await makeCommit(memberOf(group, "alice@hs1").state);
    const accepted = await h.commit("c4", 1n, update);
    const logIndex = h.index;
    const [hs1, hs2, hs3, hs4] = ["hs1", "hs2", "hs3", "hs4"].map((id) => servers.get(id)!);
    const sign = (s: Homeserver) => h.signature(s, "c4", accepted, logIndex);
    const signatures = (_s: Homeserver, items: Array<{ channelId: string; epoch: bigint; signature: Signature }>) =>
      h.apply({ case: "signatures", value: { items: items.map(({ channelId, epoch, signature }) => ({ channelId, epoch, signatures: [signature] })) } });

    // hs4 sponsors no member: not a voter. A signature by hs1's key sent as hs2 is not hs2's.
    expect(await signatures(hs4!, [sign(hs4!)])).toMatchObject({ ok: true, certified: [] });
    expect(await signatures(hs2!, [h.signature(hs1!, "c4", accepted, logIndex, "hs2")])).toMatchObject({ ok: true, certified: [] });
    const tampered = sign(hs1!);
    tampered.signature.signature[0]! ^= 1;
    expect(await signatures(hs1!, [tampered])).toMatchObject({ ok: true, certified: [] });
    // A valid batch signature with a proof for another leaf covers another statement.
    const misplaced = sign(hs1!);
    misplaced.signature.leafIndex = 0;
    expect(await signatures(hs1!, [misplaced])).toMatchObject({ ok: true, certified: [] });
    // hs1 twice is one vote of three, also across a restart.
    expect(await signatures(hs1!, [sign(hs1!)])).toMatchObject({ ok: true, certified: [] });
    await h.reload();
    expect(await signatures(hs1!, [sign(hs1!)])).toMatchObject({ ok: true, certified: [] });
    // hs3 makes a majority: certified, exactly once.
    expect(await signatures(hs3!, [sign(hs3!)])).toMatchObject({ ok: true, certified: [{ channelId: "c4", epoch: 1n }] });
    expect(await signatures(hs2!, [sign(hs2!)])).toMatchObject({ ok: true, certified: [] });
    const read = async (key: Uint8Array) => h.stored.get(Buffer.concat([Buffer.from([0x43]), key]).toString("hex"));
    const record = await h.machine.epochRecord(read, "c4", 1n);
    expect(record?.certificate?.signatures.map((s) => s.homeserverId).sort()).toEqual(["hs1", "hs3"]);
    await h.reload();
    expect((await h.machine.epochRecord(read, "c4", 1n))?.certificate?.signatures.map((s) => s.homeserverId)).toEqual(["hs1", "hs3"]);
    expect(await signatures(hs2!, [sign(hs2!)])).toMatchObject({ ok: true, certified: [] });
  });

  it("verifies a recorded signature against the key the log carries with it: a homeserver whose directory lags records it alike", async () => {
    const directory = new Map(servers);
    const h = new Harness(directory);
    const group = await threeMemberChannel(h, "c9");
    const accepted = await h.commit("c9", 1n, await makeCommit(memberOf(group, "alice@hs1").state));
    const logIndex = h.index;
    const [hs1, hs3, hs4] = ["hs1", "hs3", "hs4"].map((id) => servers.get(id)!);
    directory.delete("hs3"); // this homeserver has not applied hs3's registration yet
    const byHs1 = h.signature(hs1!, "c9", accepted, logIndex).signature;
    const byHs3 = h.signature(hs3!, "c9", accepted, logIndex).signature;
    const record = (signatures: Signature[], signerKeys: Uint8Array[]) => h.apply({ case: "signatures", value: { items: [{ channelId: "c9", epoch: 1n, signatures, signerKeys }] } });
    // A logged key the signature does not verify with counts for nothing.
    expect(await record([byHs3], [hs4!.publicKeyRaw])).toMatchObject({ ok: true, certified: [] });
    // Without a logged key, the directory decides: it does not know hs3 here.
    expect(await record([byHs1, byHs3], [hs1!.publicKeyRaw])).toMatchObject({ ok: true, certified: [] });
    // With it, hs3's signature counts here as on every homeserver that knows hs3.
    expect(await record([byHs3], [hs3!.publicKeyRaw])).toMatchObject({ ok: true, certified: [{ channelId: "c9", epoch: 1n }] });
  });

  it("an apply takes a preview's decision only for the same request on the same channel state", async () => {
    const h = new Harness(servers, true);
    h.groupVoters.set("p1", ["hs1"]);
    const group = await buildGroup(["alice@hs1"]);
    expect(await h.apply({ case: "createChannel", value: { channelId: "p1", groupInfo: group.initialGroupInfo, contentType: "text/plain", handshakeMode: HandshakeMode.ENCRYPTED } })).toMatchObject({ ok: true });
    const alice = memberOf(group, "alice@hs1").state;
    const [first, second] = [await makeCommit(alice, { publicMessage: false }), await makeCommit(alice, { publicMessage: false })];
    const request = (c: PendingCommit) => create(SubmitCommitRequestSchema, { channelId: "p1", epoch: 0n, commit: c.commit, nextGroupInfo: c.nextGroupInfo });
    const [a, b] = [request(first), request(second)];
    // Previewed while the group's voters are the members' homeservers: it would be accepted.
    expect(await h.machine.previewCommit(a, BigInt(h.index + 1))).toMatchObject({ epoch: 0n, voters: ["hs1"] });
    // The group's voters change before it is applied (a membership entry in between): the preview's decision
    // was made on other voters, and the same request object is now refused as busy, as everywhere.
    h.groupVoters.set("p1", ["hs1", "hs2"]);
    expect(await h.apply({ case: "submitCommit", value: a })).toMatchObject({ ok: false, code: "busy" });
    h.groupVoters.set("p1", ["hs1"]);
    // Both previewed on epoch 0 (b last); a is applied first and wins, and b then loses as a conflict.
    expect(await h.machine.previewCommit(a, BigInt(h.index + 1))).toMatchObject({ epoch: 0n });
    expect(await h.machine.previewCommit(b, BigInt(h.index + 2))).toMatchObject({ epoch: 0n });
    expect(await h.apply({ case: "submitCommit", value: a })).toMatchObject({ ok: true, kind: "commit-accepted", epoch: 0n });
    expect(await h.apply({ case: "submitCommit", value: b })).toMatchObject({ ok: false, code: "conflict", currentEpoch: 1n });
  });

  it("orders encrypted-handshake commits by framing and the next GroupInfo's outline: epoch, group, members", async () => {
    const h = new Harness(servers);
    const group = await buildGroup(["alice@hs1"]);
    const create = { channelId: "e1", groupInfo: group.initialGroupInfo, contentType: "text/plain", handshakeMode: HandshakeMode.ENCRYPTED };
    expect(await h.apply({ case: "createChannel", value: create })).toMatchObject({ ok: true, kind: "created" });
    const bob = await makeDevice("bob@hs2");
    const alice = memberOf(group, "alice@hs1").state;
    const add = await makeCommit(alice, { add: [bob.keyPackage.publicPackage], publicMessage: false });
    const rival = await makeCommit(alice, { publicMessage: false });
    const other = await buildGroup(["mallory@hs1"]);
    const foreign = await makeCommit(memberOf(other, "mallory@hs1").state, { publicMessage: false });
    // A PublicMessage commit, another group's next GroupInfo, or a GroupInfo of the wrong epoch: refused.
    expect(await h.commit("e1", 0n, await makeCommit(alice, {}))).toMatchObject({ ok: false, code: "invalid" });
    expect(await h.commit("e1", 0n, { ...add, nextGroupInfo: foreign.nextGroupInfo })).toMatchObject({ ok: false, code: "invalid", reason: expect.stringMatching(/another group/) });
    expect(await h.commit("e1", 0n, { ...add, nextGroupInfo: group.initialGroupInfo })).toMatchObject({ ok: false, code: "invalid", reason: expect.stringMatching(/epoch 0, expected 1/) });
    // The add is accepted; its members (from the outline) make hs1 and hs2 the voters of the next epoch.
    expect(await h.commit("e1", 0n, add)).toMatchObject({ ok: true, kind: "commit-accepted", voters: ["hs1"] });
    expect(h.machine.channel("e1")?.members.map((m) => m.deviceId)).toEqual(["alice@hs1", "bob@hs2"]);
    // The rival commit for the same epoch loses, deterministically.
    expect(await h.commit("e1", 0n, rival)).toMatchObject({ ok: false, code: "conflict", currentEpoch: 1n, builtOn: 0n });
    const update = await makeCommit(add.newState, { publicMessage: false });
    expect(await h.commit("e1", 1n, update)).toMatchObject({ ok: true, kind: "commit-accepted", voters: ["hs1", "hs2"] });
  });

  it("accepts application messages of the current epoch and a few before, and nothing else", async () => {
    const h = new Harness(servers);
    const group = await threeMemberChannel(h, "c5");
    const { bytes: atEpoch1 } = await makeApplicationMessage(memberOf(group, "bob@hs2").state, "hi");
    const first = await h.apply({ case: "sendMessage", value: { channelId: "c5", epoch: 1n, message: atEpoch1 } });
    expect(first).toMatchObject({ ok: true, kind: "message-accepted" });
    // The same bytes again (a client retrying after a lost answer): answered with the first place, nothing added.
    const lastSequence = h.machine.channel("c5")!.lastSequence;
    const again = await h.apply({ case: "sendMessage", value: { channelId: "c5", epoch: 1n, message: atEpoch1 } });
    expect(again).toMatchObject({ ok: true, kind: "message-accepted", duplicate: true, sequence: (first as { sequence: bigint }).sequence });
    expect(h.machine.channel("c5")!.lastSequence).toBe(lastSequence);
    expect(await h.apply({ case: "sendMessage", value: { channelId: "c5", epoch: 2n, message: atEpoch1 } })).toMatchObject({ ok: false, code: "invalid" });
    for (let epoch = 1n; epoch <= 5n; epoch++) {
      const committer = memberOf(group, "alice@hs1");
      const update = await makeCommit(committer.state);
      expect(await h.commit("c5", epoch, update)).toMatchObject({ ok: true });
      await applyAcceptedCommit(group, "alice@hs1", update);
    }
    // Channel at epoch 6: epoch 1 is now outside the window of 4.
    expect(await h.apply({ case: "sendMessage", value: { channelId: "c5", epoch: 1n, message: atEpoch1 } })).toMatchObject({ ok: false, code: "invalid", reason: expect.stringMatching(/outside the accepted window/) });
    const other = await buildGroup(["mallory@hs1"]);
    const { bytes: foreign } = await makeApplicationMessage(memberOf(other, "mallory@hs1").state, "x");
    expect(await h.apply({ case: "sendMessage", value: { channelId: "c5", epoch: 0n, message: foreign } })).toMatchObject({ ok: false, code: "invalid" });
  });

  it("with a group per channel: takes no command while the group's voters differ from the members' homeservers, and a certificate names the group's voters", async () => {
    const g = new Harness(servers, true);
    const group = await buildGroup(["alice@hs1"]);
    g.groupVoters.set("g1", ["hs1"]);
    expect(await g.apply({ case: "createChannel", value: { channelId: "g1", groupInfo: group.initialGroupInfo, contentType: "text/plain" } })).toMatchObject({ ok: true });
    const bob = await makeDevice("bob@hs2");
    const add = await makeCommit(memberOf(group, "alice@hs1").state, { add: [bob.keyPackage.publicPackage] });
    // The add is certified by the group's voters of its epoch (hs1 alone).
    expect(await g.commit("g1", 0n, add)).toMatchObject({ ok: true, kind: "commit-accepted", voters: ["hs1"] });
    await applyAcceptedCommit(group, "alice@hs1", add);
    group.members.set("bob@hs2", { device: bob.device, state: await joinFromWelcome(bob.keyPackage, add.welcome!) });
    // hs2 sponsors a member but does not vote yet: commits and messages wait, deterministically, and change nothing.
    const update = await makeCommit(memberOf(group, "bob@hs2").state);
    const { bytes: hello } = await makeApplicationMessage(memberOf(group, "alice@hs1").state, "hi");
    const before = new Map(g.stored);
    expect(await g.commit("g1", 1n, update)).toMatchObject({ ok: false, code: "busy" });
    expect(await g.apply({ case: "sendMessage", value: { channelId: "g1", epoch: 1n, message: hello } })).toMatchObject({ ok: false, code: "busy" });
    expect(g.stored).toEqual(before);
    // Once hs2 votes, the same commit is accepted and certified by both.
    g.groupVoters.set("g1", ["hs2", "hs1"]);
    expect(await g.commit("g1", 1n, update)).toMatchObject({ ok: true, kind: "commit-accepted", epoch: 1n, voters: ["hs1", "hs2"] });
  });

  it("witnesses: named by the GroupContext at creation, they count as voters, and no commit may change them", async () => {
    const g = new Harness(servers, true);
    const group = await buildGroup(["alice@hs1"], undefined, ["hs3"]);
    // Apply does not read the cluster directory: a homeserver whose directory does not know the
    // witness yet (it lags) decides the creation exactly as the others (ChannelService refuses
    // unknown witnesses before proposing).
    const lagging = new Harness(new Map([...servers].filter(([id]) => id !== "hs3")), true);
    lagging.groupVoters.set("w1", ["hs1"]);
    expect(await lagging.apply({ case: "createChannel", value: { channelId: "w1", groupInfo: group.initialGroupInfo, contentType: "text/plain", handshakeMode: HandshakeMode.ENCRYPTED } })).toMatchObject({ ok: true });
    g.groupVoters.set("w1", ["hs1"]);
    const created = { channelId: "w1", groupInfo: group.initialGroupInfo, contentType: "text/plain", handshakeMode: HandshakeMode.ENCRYPTED };
    expect(await g.apply({ case: "createChannel", value: created })).toMatchObject({ ok: true });
    expect(g.machine.channel("w1")?.witnesses).toEqual(["hs3"]);
    expect(g.stored).toEqual(lagging.stored);
    const bob = await makeDevice("bob@hs2");
    const add = await makeCommit(memberOf(group, "alice@hs1").state, { add: [bob.keyPackage.publicPackage], publicMessage: false });
    // Until the witness votes, the channel takes nothing; then its certificates count it.
    expect(await g.commit("w1", 0n, add)).toMatchObject({ ok: false, code: "busy" });
    g.groupVoters.set("w1", ["hs1", "hs3"]);
    // A commit whose next GroupInfo drops the witnesses (a twin group without them, same id and epoch) is refused.
    const twin = await buildGroup(["alice@hs1"], group.groupId);
    const dropping = await makeCommit(memberOf(twin, "alice@hs1").state, { add: [bob.keyPackage.publicPackage], publicMessage: false });
    expect(await g.commit("w1", 0n, dropping)).toMatchObject({ ok: false, code: "invalid", reason: expect.stringMatching(/may not change the channel's witnesses/) });
    expect(await g.commit("w1", 0n, add)).toMatchObject({ ok: true, kind: "commit-accepted", voters: ["hs1", "hs3"] });
    // The group now follows hs1, hs2 (bob) and hs3 (witness).
    g.groupVoters.set("w1", ["hs1", "hs2", "hs3"]);
    expect(await g.commit("w1", 1n, await makeCommit(add.newState, { publicMessage: false }))).toMatchObject({ ok: true, voters: ["hs1", "hs2", "hs3"] });
  });

  it("a slimmed record (its group hibernates) keeps members and epoch in memory; the whole record is read from the store", async () => {
    const h = new Harness(servers);
    await threeMemberChannel(h, "s1");
    const whole = h.machine.channel("s1")!;
    const get = async (key: Uint8Array) => h.stored.get(Buffer.concat([Buffer.from([0x43]), key]).toString("hex"));
    h.machine.slim("s1");
    const slim = h.machine.channel("s1")!;
    expect(slim.groupInfo.byteLength).toBe(0);
    expect({ epoch: slim.epoch, members: slim.members }).toEqual({ epoch: whole.epoch, members: whole.members });
    expect(await h.machine.wholeRecord("s1", get)).toEqual(whole);
  });

  it("is deterministic: replaying the same log gives the same stored bytes", async () => {
    const log: CommandInit[] = [];
    const recorder = new Harness(servers);
    const apply = recorder.apply.bind(recorder);
    recorder.apply = async (command) => {
      log.push(command);
      return apply(command);
    };
    const group = await threeMemberChannel(recorder, "c6");
    await recorder.commit("c6", 1n, await makeCommit(memberOf(group, "carol@hs3").state));
    const replay = new Harness(servers);
    for (const command of log) await replay.apply(command);
    expect(replay.stored.size).toBeGreaterThan(0);
    expect([...replay.stored.entries()].sort()).toEqual([...recorder.stored.entries()].sort());
  });
});
