/**
 * Mode (a) of `npm run bench -- commits`: the bytes a client of a channel with
 * encrypted handshakes submits, framed cheaply enough that the load generator
 * does not become the bottleneck.
 *
 * On such a channel the homeservers see a commit's framing only (PrivateMessage,
 * group id, epoch, content type commit, size; the sender and content are
 * encrypted) and decode the next GroupInfo to check its epoch and learn the
 * members (src/channel/channel-state-machine.ts `commit()`). So per channel the
 * generator needs:
 *
 * - a real, verifiable initial GroupInfo (CreateChannel checks its tree and
 *   signature): one real ts-mls group is made, and its epoch-0 GroupInfo is
 *   re-signed by its creator under a fresh random group id per channel, so no
 *   two channels share a group id (and the servers' GroupInfo decode cache gets
 *   no unrealistic hits);
 * - per commit, a PrivateMessage for (group id, epoch, commit) with random
 *   bytes in place of the AEAD ciphertext, sized to `commitBytes` in total;
 * - per commit, a GroupInfo for epoch + 1: the real 3-member GroupInfo of a
 *   second real group (alice@hs1, bob@hs2, carol@hs3, so from epoch 1 every
 *   certificate needs 2 of the 3 homeservers) re-encoded with the channel's
 *   group id. Its signature is not redone for every epoch: the servers do not
 *   verify it on these channels, so this costs them exactly what a re-signed one
 *   would.
 *
 * Both per-commit messages are templates whose epoch field is patched in place.
 */
import { randomBytes } from "node:crypto";
import type { GroupInfo } from "ts-mls";
import { signGroupInfo } from "ts-mls/groupInfo.js";
import { decodeMlsMessage, encodeMlsMessage } from "ts-mls/message.js";
import { decodeGroupInfoMessage, inspectPrivateCommit, verifyInitialGroupInfo } from "../../src/mls/index.ts";
import { buildGroup, clientSuiteImpl, createTestGroup, makeDevice } from "../../test/fixtures/mls-group.ts";

/** Bytes of the MLSMessage header (version and wire format, two uint16). */
const mlsHeaderBytes = 4;
/** Bytes of a GroupContext's version and cipher suite fields, before its group id. */
const groupContextPrefixBytes = 4;
/** Encrypted SenderData of suite 1: leaf index, generation and reuse guard (12 bytes) plus a 16-byte AES-GCM tag. */
const encryptedSenderDataBytes = 28;
/** Group ids are 16 random bytes, as ts-mls clients choose them. */
const groupIdBytes = 16;

/** Length in bytes of an MLS variable-length size prefix (RFC 9000 varint, as RFC 9420 uses it). */
function mlsVarintBytes(length: number): number {
  return length < 64 ? 1 : length < 16_384 ? 2 : 4;
}

/** One channel's material for mode (a): its creation GroupInfo and the commit templates. */
export interface EncryptedChannel {
  readonly channelId: string;
  readonly groupId: Uint8Array;
  /** MLSMessage-framed GroupInfo of epoch 0 (one member, alice@hs1), signed for this channel's group id. */
  readonly initialGroupInfo: Uint8Array;
  /** The commit building on `epoch`: a PrivateMessage of `commitBytes` bytes. Valid until the next call. */
  commit(epoch: number): Uint8Array;
  /** The GroupInfo for `epoch` (the members from epoch 1 on). Valid until the next call. */
  groupInfo(epoch: number): Uint8Array;
  /** How many members the channel has from epoch 1 on. */
  readonly memberCount: number;
}

/** Offset of the epoch field in an MLSMessage-framed PrivateMessage with a `groupIdLength`-byte group id. */
function privateMessageEpochOffset(groupIdLength: number): number {
  return mlsHeaderBytes + mlsVarintBytes(groupIdLength) + groupIdLength;
}

/** Offset of the GroupContext epoch in an MLSMessage-framed GroupInfo with a `groupIdLength`-byte group id. */
function groupInfoEpochOffset(groupIdLength: number): number {
  return mlsHeaderBytes + groupContextPrefixBytes + mlsVarintBytes(groupIdLength) + groupIdLength;
}

/** A PrivateMessage commit template of exactly `commitBytes` bytes (epoch 0; random "ciphertext"). */
function commitTemplate(groupId: Uint8Array, commitBytes: number): Uint8Array {
  let ciphertextBytes = Math.max(16, commitBytes - 64);
  for (let attempt = 0; attempt < 4; attempt++) {
    const bytes = encodeMlsMessage({
      version: "mls10",
      wireformat: "mls_private_message",
      privateMessage: {
        groupId,
        epoch: 0n,
        contentType: "commit",
        authenticatedData: new Uint8Array(0),
        encryptedSenderData: randomBytes(encryptedSenderDataBytes),
        ciphertext: randomBytes(ciphertextBytes),
      },
    });
    if (bytes.length === commitBytes || ciphertextBytes + commitBytes - bytes.length < 16) return bytes;
    ciphertextBytes += commitBytes - bytes.length;
  }
  throw new Error(`cannot frame a commit of exactly ${commitBytes} bytes`);
}

function frameGroupInfo(groupInfo: GroupInfo): Uint8Array {
  return encodeMlsMessage({ version: "mls10", wireformat: "mls_group_info", groupInfo });
}

function unframeGroupInfo(bytes: Uint8Array): GroupInfo {
  const decoded = decodeMlsMessage(bytes, 0);
  if (decoded === undefined || decoded[0].wireformat !== "mls_group_info") throw new Error("fixture GroupInfo does not decode");
  return decoded[0].groupInfo;
}

/** Writes `epoch` as the uint64 at `offset`. */
function patchEpoch(bytes: Uint8Array, offset: number, epoch: number): void {
  new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).setBigUint64(offset, BigInt(epoch));
}

/**
 * Makes `count` channels' material, ids `${prefix}-00000` and up: two real ts-mls groups (a few hundred
 * ms), then one Ed25519 signature and three encodings per channel. From epoch 1 the members are
 * `memberIds` (the creator, alice@hs1, first).
 */
export async function makeEncryptedChannels(prefix: string, count: number, commitBytes: number, memberIds: readonly string[] = ["alice@hs1", "bob@hs2", "carol@hs3"]): Promise<EncryptedChannel[]> {
  const impl = await clientSuiteImpl();
  const creator = await makeDevice("alice@hs1");
  const initial = unframeGroupInfo((await createTestGroup(creator.keyPackage)).groupInfo);
  const three = await buildGroup(memberIds);
  const threeMembers = unframeGroupInfo(three.view.groupInfo);
  const channels: EncryptedChannel[] = [];
  for (let i = 0; i < count; i++) {
    const groupId = new Uint8Array(randomBytes(groupIdBytes));
    const tbs = { groupContext: { ...initial.groupContext, groupId }, extensions: initial.extensions, confirmationTag: initial.confirmationTag, signer: initial.signer };
    const initialGroupInfo = frameGroupInfo(await signGroupInfo(tbs, creator.device.signatureKeys.signKey, impl.signature));
    const commit = commitTemplate(groupId, commitBytes);
    const next = frameGroupInfo({ ...threeMembers, groupContext: { ...threeMembers.groupContext, groupId, epoch: 1n } });
    const commitEpochAt = privateMessageEpochOffset(groupId.length);
    const groupInfoEpochAt = groupInfoEpochOffset(groupId.length);
    channels.push({
      channelId: `${prefix}-${String(i).padStart(5, "0")}`,
      groupId,
      initialGroupInfo,
      commit(epoch) {
        patchEpoch(commit, commitEpochAt, epoch);
        return commit;
      },
      groupInfo(epoch) {
        patchEpoch(next, groupInfoEpochAt, epoch);
        return next;
      },
      memberCount: memberIds.length,
    });
  }
  return channels;
}

/**
 * Runs the homeservers' own checks (src/mls) on `channel`'s material for its first `epochs` epochs and
 * throws on the first refusal: a framing mistake here would otherwise show up as a benchmark full of
 * INVALID_ARGUMENT errors.
 */
export async function selfCheckEncryptedChannel(channel: EncryptedChannel, epochs: number): Promise<void> {
  const initial = await verifyInitialGroupInfo(channel.groupId, channel.initialGroupInfo);
  if (!initial.ok) throw new Error(`mode (a) initial GroupInfo refused: ${initial.reason}`);
  for (let epoch = 0; epoch < epochs; epoch++) {
    const view = { groupId: channel.groupId, epoch: BigInt(epoch), groupInfo: channel.initialGroupInfo };
    const framed = inspectPrivateCommit(view, channel.commit(epoch));
    if (!framed.ok) throw new Error(`mode (a) commit for epoch ${epoch} refused: ${framed.reason}`);
    const next = decodeGroupInfoMessage(channel.groupInfo(epoch + 1));
    if ("reason" in next) throw new Error(`mode (a) GroupInfo for epoch ${epoch + 1} refused: ${next.reason}`);
    if (next.context.epoch !== BigInt(epoch + 1) || next.members.length !== channel.memberCount) throw new Error(`mode (a) GroupInfo for epoch ${epoch + 1} decodes as epoch ${next.context.epoch} with ${next.members.length} members`);
  }
}
