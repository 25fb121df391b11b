/**
 * A channel's public MLS view (its current GroupInfo) and the decoding every check starts from.
 */
import type { GroupContext, GroupInfo, RatchetTree } from "ts-mls";
import { channelCipherSuite, parseDeviceId } from "./identity.ts";
import { bytesEqual, decodeFramed, sha256, toHex } from "./decode.ts";
import { maxGroupInfoBytes, maxMembers } from "./limits.ts";
import { reject, type Rejection } from "./rejection.ts";
import { decodeRatchetTree } from "ts-mls/ratchetTree.js";
import { witnessesOf } from "./witnesses.ts";

/**
 * A channel's current public MLS view, kept by the channel state machine as bytes so it is easy to persist
 * and compare. Invariant: `groupInfo` is an MLSMessage-framed GroupInfo of epoch `epoch` for group
 * `groupId`, carrying the ratchet tree extension, signed by a member, and accepted by
 * verifyInitialGroupInfo or verifyNextGroupInfo. Treat the arrays as immutable.
 */
export interface PublicGroupView {
  readonly groupId: Uint8Array;
  readonly epoch: bigint;
  readonly groupInfo: Uint8Array;
}

/** One member of a channel: a non-blank leaf of its ratchet tree. */
export interface Member {
  readonly leafIndex: number;
  readonly deviceId: string;
  /** The homeserver sponsoring the device (the part of deviceId after the last '@'). */
  readonly homeserver: string;
}

/** A decoded GroupInfo with its tree and members; internal currency of the checks. */
export interface DecodedGroupInfo {
  readonly groupInfo: GroupInfo;
  readonly context: GroupContext;
  readonly tree: RatchetTree;
  /** The exact bytes of the ratchet_tree extension (the encoded tree). */
  readonly treeBytes: Uint8Array;
  readonly members: readonly Member[];
  /** The channel's witness homeservers, as its GroupContext names them (see witnesses.ts). */
  readonly witnesses: readonly string[];
  /** Size of the encoded GroupInfo message. */
  readonly byteSize: number;
}

/** The number of leaves of a ratchet tree (its array holds 2 * leaves - 1 nodes). */
export function leafCount(tree: RatchetTree): number {
  return (tree.length + 1) / 2;
}

/**
 * Lists the members of `tree`; rejects a tree with a leaf whose credential is not a Basic credential
 * holding a valid device id, or a node of the wrong kind at a position.
 */
export function membersOf(tree: RatchetTree): Member[] | Rejection {
  const members: Member[] = [];
  for (let nodeIndex = 0; nodeIndex < tree.length; nodeIndex++) {
    const node = tree[nodeIndex];
    if (node === undefined) continue;
    const isLeafPosition = nodeIndex % 2 === 0;
    if ((node.nodeType === "leaf") !== isLeafPosition) return reject(`ratchet tree: node ${nodeIndex} has the wrong kind`);
    if (node.nodeType !== "leaf") continue;
    const credential = node.leaf.credential;
    if (credential.credentialType !== "basic") return reject(`ratchet tree: leaf ${nodeIndex / 2} has a non-Basic credential`);
    const identity = parseDeviceId(credential.identity);
    if (identity === undefined) return reject(`ratchet tree: leaf ${nodeIndex / 2} identity is not a device id`);
    members.push({ leafIndex: nodeIndex / 2, deviceId: identity.deviceId, homeserver: identity.homeserver });
  }
  return members;
}

/**
 * Most total GroupInfo bytes whose decodings are memoized (see {@link decodeGroupInfoMessage}); the
 * decoded objects take about three times as much again. Enough for the channels active right now.
 */
export const decodedGroupInfoCacheBytesMax = 4 * 1_048_576;

const decodedCache = new Map<string, DecodedGroupInfo>();
let decodedCacheBytes = 0;

/**
 * Decodes an MLSMessage-framed GroupInfo: size, framing, suite, ratchet tree extension present and
 * decodable, tree within {@link maxMembers} leaves, every leaf a device. Signatures are NOT checked here.
 *
 * Memoized by the SHA-256 of the bytes: ts-mls 1.6 decodes enums by rebuilding a reverse map per value,
 * which makes a 32-member tree cost milliseconds, and the same view is decoded by every check of an epoch
 * (and the next GroupInfo becomes the next view). A pure function's cache cannot change a result, so apply
 * stays deterministic. The returned object is shared: treat it as immutable.
 */
export function decodeGroupInfoMessage(bytes: Uint8Array): DecodedGroupInfo | Rejection {
  if (!(bytes instanceof Uint8Array) || bytes.length > maxGroupInfoBytes) return decodeGroupInfoUncached(bytes);
  const key = toHex(sha256(bytes));
  const hit = decodedCache.get(key);
  if (hit !== undefined) return hit;
  // Decoded from a copy: the decoding's byte fields are views into its input, which would otherwise keep
  // alive whatever larger buffer `bytes` is a view of (a gRPC message, a RocksDB value).
  const decoded = decodeGroupInfoUncached(bytes.slice());
  if ("reason" in decoded) return decoded;
  decodedCache.set(key, decoded);
  decodedCacheBytes += decoded.byteSize;
  for (const [oldKey, old] of decodedCache) {
    if (decodedCacheBytes <= decodedGroupInfoCacheBytesMax) break;
    decodedCache.delete(oldKey);
    decodedCacheBytes -= old.byteSize;
  }
  return decoded;
}

function decodeGroupInfoUncached(bytes: Uint8Array): DecodedGroupInfo | Rejection {
  const message = decodeFramed(bytes, maxGroupInfoBytes, "GroupInfo");
  if ("reason" in message) return message;
  if (message.wireformat !== "mls_group_info") return reject(`GroupInfo: wire format is ${message.wireformat}, expected mls_group_info`);
  const groupInfo = message.groupInfo;
  const context = groupInfo.groupContext;
  if (context.cipherSuite !== channelCipherSuite) return reject(`GroupInfo: cipher suite ${String(context.cipherSuite)} is not allowed`);
  if (context.version !== "mls10") return reject("GroupInfo: unsupported protocol version");
  const treeExtensions = groupInfo.extensions.filter((e) => e.extensionType === "ratchet_tree");
  if (treeExtensions.length !== 1 || treeExtensions[0] === undefined) return reject("GroupInfo: needs exactly one ratchet_tree extension");
  const treeBytes = treeExtensions[0].extensionData;
  let tree: RatchetTree | undefined;
  try {
    const decoded = decodeRatchetTree(treeBytes, 0);
    tree = decoded !== undefined && decoded[1] === treeBytes.length ? decoded[0] : undefined;
  } catch {
    tree = undefined;
  }
  if (tree === undefined) return reject("GroupInfo: ratchet tree extension does not decode");
  if (leafCount(tree) > maxMembers) return reject(`GroupInfo: tree has ${leafCount(tree)} leaves, more than ${maxMembers}`);
  const members = membersOf(tree);
  if (!Array.isArray(members)) return members;
  if (!members.some((m) => m.leafIndex === groupInfo.signer)) return reject(`GroupInfo: signer ${groupInfo.signer} is not a member`);
  const witnesses = witnessesOf(context.extensions);
  if (!Array.isArray(witnesses)) return reject(`GroupInfo: ${witnesses.reason}`);
  return { groupInfo, context, tree, treeBytes, members, witnesses, byteSize: bytes.length };
}

/** Decodes the channel's current view and checks it is self-consistent (group id and epoch). */
export function decodeView(view: PublicGroupView): DecodedGroupInfo | Rejection {
  const decoded = decodeGroupInfoMessage(view.groupInfo);
  if ("reason" in decoded) return reject(`current view: ${decoded.reason}`);
  if (!bytesEqual(decoded.context.groupId, view.groupId) || decoded.context.epoch !== view.epoch) {
    return reject("current view: GroupInfo does not match the view's group id and epoch");
  }
  return decoded;
}
