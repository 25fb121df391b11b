/**
 * A channel group's state machine over a real RocksDB store: certificates the
 * leader records inside the entry of the channel's next command (appended to
 * its encoding, see ChannelCommand.certificates) are checked and stored like a
 * `signatures` entry's, before the command itself; those of another channel
 * and invalid signatures are not.
 */
import { createPublicKey, generateKeyPairSync, sign, type KeyObject } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { afterEach, describe, expect, it } from "vitest";
import { batchSigningMessage, statementBytes } from "../../src/channel/certificate.ts";
import { encodeChannelCommand } from "../../src/channel/channel-command.ts";
import { ChannelStateMachine, type ChannelResult } from "../../src/channel/channel-state-machine.ts";
import { buildMerkleTree, merkleLeafHash } from "../../src/channel/merkle.ts";
import { SignatureSchema } from "../../src/gen/epochd/channel/v1/channel_pb.ts";
import { ChannelCommandSchema, type CommitSignaturesSchema } from "../../src/gen/epochd/state/v1/channel_state_pb.ts";
import { ChannelGroupMachine, withNamespace } from "../../src/node/channel-group-machine.ts";
import { EntryType, type Entry } from "../../src/raft/types.ts";
import { StorageEngine } from "../../src/storage/storage-engine.ts";
import { EntryKind, GapReason } from "../../src/gen/epochd/inbox/v1/inbox_pb.ts";
import { InboxFanout } from "../../src/inbox/inbox-fanout.ts";
import { defaultInboxLimits } from "../../src/inbox/inbox-limits.ts";
import { InboxStore } from "../../src/inbox/inbox-store.ts";
import { localWriter } from "../../src/inbox/local-write.ts";
import { applyAcceptedCommit, buildGroup, joinFromWelcome, makeCommit, makeDevice, memberOf } from "../fixtures/mls-group.ts";

const clusterId = "test-cluster";
type CommandInit = NonNullable<MessageInitShape<typeof ChannelCommandSchema>["command"]>;
type Accepted = Extract<ChannelResult, { kind: "commit-accepted" }>;

interface Signer {
  readonly privateKey: KeyObject;
  readonly publicKeyRaw: Uint8Array;
}

function signer(): Signer {
  const { privateKey } = generateKeyPairSync("ed25519");
  const spki = createPublicKey(privateKey).export({ format: "der", type: "spki" });
  return { privateKey, publicKeyRaw: new Uint8Array(spki.subarray(spki.length - 32)) };
}

const signers = new Map(["hs1", "hs2", "hs3"].map((id) => [id, signer()]));

/** `id`'s signature over the accepted commit at `logIndex`, as a batch of one. */
function signatureOf(id: string, accepted: Accepted, logIndex: number, tamper = false) {
  const statement = statementBytes(clusterId, accepted.channelId, accepted.epoch, accepted.commitHash, BigInt(logIndex));
  const tree = buildMerkleTree([merkleLeafHash(statement)]);
  const signature = new Uint8Array(sign(null, batchSigningMessage(tree.root), signers.get(id)!.privateKey));
  if (tamper) signature[0]! ^= 1;
  return create(SignatureSchema, { homeserverId: id, signature, leafIndex: 0, leafCount: 1, proof: tree.proof(0) });
}

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe("ChannelGroupMachine", () => {
  it("records the certificates appended to a command's entry, before the command, and only valid ones of its own channel; tells the proposer before the write", async () => {
    const dir = mkdtempSync(join(tmpdir(), "epochd-group-machine-"));
    dirs.push(dir);
    const engine = await StorageEngine.open(dir, { sync: false });
    try {
      const store = await engine.openGroup("channel/c1", ["hs1"]);
      const channels = new ChannelStateMachine({ clusterId, signingKeyOf: (id) => signers.get(id)?.publicKeyRaw });
      /** Results told as soon as applied (with whether the batch was written by then), and after the write. */
      const applied: Array<{ result: ChannelResult; index: number; requestId: string; written: boolean }> = [];
      const announced: Array<{ result: ChannelResult; index: number }> = [];
      let written = false;
      const machine = new ChannelGroupMachine("c1", store, {
        channels,
        inbox: undefined,
        inboxStore: undefined,
        listener: {
          onCommandApplied: (result, index, requestId) => applied.push({ result, index, requestId: Buffer.from(requestId).toString("hex"), written }),
          onChannelResult: (result, index) => announced.push({ result, index }),
          onMembership: () => {},
          onMembersApplied: () => {},
          onCommitAccepted: () => {},
          onCommitStored: () => {},
        },
      });
      let index = 1;
      /** Applies one entry holding `command` (its request id 0xaa), with `along` appended to its encoding; returns the command's result. */
      const apply = async (command: CommandInit, along: Array<MessageInitShape<typeof CommitSignaturesSchema>> = []) => {
        const body = toBinary(ChannelCommandSchema, create(ChannelCommandSchema, { command, requestId: Uint8Array.of(0xaa) }));
        const extra = toBinary(ChannelCommandSchema, create(ChannelCommandSchema, { certificates: along }));
        const entry: Entry = { index: ++index, term: 1, type: EntryType.Normal, data: encodeChannelCommand(Buffer.concat([body, extra])) };
        written = false;
        const outcome = await machine.apply([entry]);
        await engine.apply([{ group: store, appliedIndex: entry.index, writes: outcome.writes }]);
        written = true;
        outcome.afterWrite?.();
        return outcome.results.get(entry.index) as ChannelResult;
      };

      const group = await buildGroup(["alice@hs1"]);
      expect(await apply({ case: "createChannel", value: { channelId: "c1", groupInfo: group.initialGroupInfo, contentType: "text/plain" } })).toMatchObject({ ok: true });
      const bob = await makeDevice("bob@hs2");
      const carol = await makeDevice("carol@hs3");
      const add = await makeCommit(memberOf(group, "alice@hs1").state, { add: [bob.keyPackage.publicPackage, carol.keyPackage.publicPackage] });
      expect(await apply({ case: "submitCommit", value: { channelId: "c1", epoch: 0n, commit: add.commit, nextGroupInfo: add.nextGroupInfo, welcome: add.welcome! } })).toMatchObject({ ok: true });
      await applyAcceptedCommit(group, "alice@hs1", add);
      group.members.set("bob@hs2", { device: bob.device, state: await joinFromWelcome(bob.keyPackage, add.welcome!) });
      const update = await makeCommit(memberOf(group, "alice@hs1").state);
      const accepted = (await apply({ case: "submitCommit", value: { channelId: "c1", epoch: 1n, commit: update.commit, nextGroupInfo: update.nextGroupInfo } })) as Accepted;
      expect(accepted).toMatchObject({ ok: true, kind: "commit-accepted", epoch: 1n, voters: ["hs1", "hs2", "hs3"] });
      const acceptedAt = index;
      await applyAcceptedCommit(group, "alice@hs1", update);
      announced.length = 0;
      applied.length = 0;

      // Along with Bob's next commit: hs1's signature and a tampered one of hs3 (no quorum), and a
      // valid-looking item of another channel, which this group does not order.
      const bobUpdate = await makeCommit(memberOf(group, "bob@hs2").state);
      const bobCommit = { case: "submitCommit", value: { channelId: "c1", epoch: 2n, commit: bobUpdate.commit, nextGroupInfo: bobUpdate.nextGroupInfo } } as const;
      const alongFirst = [
        { channelId: "c1", epoch: 1n, signatures: [signatureOf("hs1", accepted, acceptedAt), signatureOf("hs3", accepted, acceptedAt, true)] },
        { channelId: "c2", epoch: 1n, signatures: [signatureOf("hs2", { ...accepted, channelId: "c2" }, acceptedAt)] },
      ];
      expect(await apply(bobCommit, alongFirst)).toMatchObject({ ok: true, kind: "commit-accepted", epoch: 2n });
      expect(announced.map((a) => a.result)).toEqual([expect.objectContaining({ kind: "commit-accepted", epoch: 2n })]);
      const get = (key: Uint8Array) => store.get(withNamespace(key));
      expect(await channels.recordedCertificate(get, "c1", 1n)).toBeUndefined();
      expect(channels.isGathering("c1", 1n)).toBe(true);

      // Along with a rival for epoch 2 (a conflict): hs3's valid signature completes the certificate,
      // announced after the write before the command's own result; the proposer (request id 0xaa) is
      // told the result as soon as it is applied, before the write.
      announced.length = 0;
      applied.length = 0;
      const rival = await makeCommit(memberOf(group, "alice@hs1").state);
      const conflict = await apply({ case: "submitCommit", value: { channelId: "c1", epoch: 2n, commit: rival.commit, nextGroupInfo: rival.nextGroupInfo } }, [
        { channelId: "c1", epoch: 1n, signatures: [signatureOf("hs3", accepted, acceptedAt)] },
      ]);
      expect(conflict).toMatchObject({ ok: false, code: "conflict" });
      expect(announced).toEqual([
        { result: { ok: true, kind: "signatures", certified: [{ channelId: "c1", epoch: 1n }] }, index },
        { result: conflict, index },
      ]);
      expect(applied).toEqual([{ result: conflict, index, requestId: "aa", written: false }]);
      expect(channels.isGathering("c1", 1n)).toBe(false);
      expect((await channels.recordedCertificate(get, "c1", 1n))?.signatures.map((s) => s.homeserverId)).toEqual(["hs1", "hs3"]);
    } finally {
      await engine.close();
    }
  });
  it("taking up a restored state gives each local member of the channel a gap marker at the snapshot's index", async () => {
    const dir = mkdtempSync(join(tmpdir(), "epochd-group-machine-"));
    dirs.push(dir);
    const engine = await StorageEngine.open(dir, { sync: false });
    try {
      const [cluster, store] = await Promise.all([engine.openGroup("cluster", ["hs1"]), engine.openGroup("channel/c1", ["hs1"])]);
      const inboxes = new InboxStore({ scan: (p, l, f) => cluster.scan(p, l, f), write: localWriter(engine, cluster) }, defaultInboxLimits);
      const channels = new ChannelStateMachine({ clusterId, signingKeyOf: (id) => signers.get(id)?.publicKeyRaw });
      const listener = { onCommandApplied: () => {}, onChannelResult: () => {}, onMembership: () => {}, onMembersApplied: () => {}, onCommitAccepted: () => {}, onCommitStored: () => {} };
      const machine = new ChannelGroupMachine("c1", store, { channels, inbox: new InboxFanout("hs1", inboxes, channels), inboxStore: cluster, listener });
      const group = await buildGroup(["alice@hs1"]);
      const creation = toBinary(ChannelCommandSchema, create(ChannelCommandSchema, { command: { case: "createChannel", value: { channelId: "c1", groupInfo: group.initialGroupInfo, contentType: "text/plain" } } }));
      const outcome = await machine.apply([{ index: 2, term: 1, type: EntryType.Normal, data: encodeChannelCommand(creation) }]);
      expect(outcome.results.get(2)).toMatchObject({ ok: true, kind: "created" });
      await engine.apply([{ group: store, appliedIndex: 2, writes: outcome.writes }], outcome.localWrites);
      outcome.afterWrite?.();
      // The group's state restored (here from its own snapshot), then taken up as after a leader's snapshot at 30.
      await machine.restoreStored(machine.snapshotChunks());
      await machine.afterRestore(30);
      const entries = await inboxes.read("alice@hs1", 0n, 100);
      expect(entries.at(-1)).toMatchObject({ kind: EntryKind.GAP, channelId: "c1", gapReason: GapReason.SNAPSHOT, logIndex: 30n });
    } finally {
      await engine.close();
    }
  });
});
