/**
 * A GroupInfo's outline, read straight from its TLS encoding: group id,
 * epoch, cipher suite, signer and the device id of every leaf of its ratchet
 * tree; nothing is verified and nothing else is decoded.
 *
 * This is what a channel with encrypted handshakes needs from the next-epoch
 * GroupInfo a committer uploads (the homeservers cannot check its signature
 * against a commit they cannot read). ts-mls 1.6 decodes a whole GroupInfo,
 * every capability and extension, and rebuilds a reverse enum map for each
 * enum value it meets, which made this decode the largest single cost of
 * applying such a commit. The walk below follows RFC 9420 (sections 2.1,
 * 6, 7.1, 7.2, 12.4.3) and accepts exactly the layouts ts-mls' decoder
 * accepts for these structures; a test holds the two to the same answers.
 * Total: malformed input gives a Rejection, never an exception.
 */
import { channelCipherSuite, parseDeviceId } from "./identity.ts";
import { maxGroupInfoBytes, maxMembers } from "./limits.ts";
import type { Member } from "./group-view.ts";
import { reject, type Rejection } from "./rejection.ts";
import { witnessesExtensionType, witnessesOf } from "./witnesses.ts";

/** What {@link outlineGroupInfoMessage} reads. */
export interface GroupInfoOutline {
  readonly groupId: Uint8Array;
  readonly epoch: bigint;
  /** Leaf index of the member that signed the GroupInfo. */
  readonly signer: number;
  readonly members: readonly Member[];
  /** The channel's witness homeservers, as its GroupContext names them (see witnesses.ts). */
  readonly witnesses: readonly string[];
}

/** Suite 1's code point (RFC 9420 section 17.1), the only suite channels accept. */
const suiteOneCode = 1;
const wireFormatGroupInfo = 4;
const ratchetTreeExtension = 2;
const credentialBasic = 1;

class Truncated extends Error {}

/** A bounds-checked reader over TLS presentation-language bytes. */
class Reader {
  at = 0;
  constructor(private readonly bytes: Uint8Array) {}

  get done(): boolean {
    return this.at === this.bytes.length;
  }

  private need(n: number): void {
    if (this.at + n > this.bytes.length) throw new Truncated();
  }

  u8(): number {
    this.need(1);
    return this.bytes[this.at++]!;
  }

  u16(): number {
    return (this.u8() << 8) | this.u8();
  }

  u32(): number {
    return this.u16() * 0x10000 + this.u16();
  }

  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }

  /** A variable-length vector's bytes (RFC 9420 section 2.1.2: 1, 2 or 4 byte length). */
  vector(): Uint8Array {
    const first = this.u8();
    const prefix = first >> 6;
    let length = first & 0x3f;
    if (prefix === 1) length = (length << 8) | this.u8();
    else if (prefix === 2) length = ((length << 24) | (this.u8() << 16) | (this.u8() << 8) | this.u8()) >>> 0;
    else if (prefix === 3) throw new Truncated();
    this.need(length);
    const out = this.bytes.subarray(this.at, this.at + length);
    this.at += length;
    return out;
  }

  skipVector(): void {
    this.vector();
  }

  /** Skips a vector of fixed-size elements, whose length must be a whole number of them. */
  skipVectorOf(elementBytes: number): void {
    if (this.vector().length % elementBytes !== 0) throw new Truncated();
  }
}

/** Reads an Extension list (each: u16 type, opaque data<V>); returns the data of every extension of `type`. */
function extensionsOfType(reader: Reader, type: number): Uint8Array[] {
  const list = new Reader(reader.vector());
  const found: Uint8Array[] = [];
  while (!list.done) {
    const extensionType = list.u16();
    const data = list.vector();
    if (extensionType === type) found.push(data);
  }
  return found;
}

/** Reads one LeafNode and returns its Basic credential identity, or a reason. */
function leafIdentity(reader: Reader): Uint8Array | string {
  reader.skipVector(); // encryption_key
  reader.skipVector(); // signature_key
  const credentialType = reader.u16();
  if (credentialType !== credentialBasic) return "non-Basic credential";
  const identity = reader.vector();
  for (let i = 0; i < 5; i++) reader.skipVectorOf(2); // capabilities: versions, suites, extensions, proposals, credentials (u16 each)
  const source = reader.u8();
  if (source === 1) reader.u64(), reader.u64(); // key_package: lifetime
  else if (source === 3) reader.skipVector(); // commit: parent_hash
  else if (source !== 2) return "unknown leaf node source";
  extensionsOfType(reader, -1); // extensions: walked for their framing only
  reader.skipVector(); // signature
  return identity;
}

/** Walks the ratchet_tree extension's nodes and lists the members. */
function treeMembers(treeBytes: Uint8Array): Member[] | Rejection {
  const nodes = new Reader(new Reader(treeBytes).vector());
  const outer = new Reader(treeBytes);
  outer.skipVector();
  if (!outer.done) return reject("GroupInfo: ratchet tree extension does not decode");
  const members: Member[] = [];
  for (let nodeIndex = 0; !nodes.done; nodeIndex++) {
    if (nodeIndex >= 2 * maxMembers - 1) return reject(`GroupInfo: tree has more than ${maxMembers} leaves`);
    // ts-mls 1.6 reads any presence octet but 1 as "blank"; members decode with it, so the outline does too.
    if (nodes.u8() !== 1) continue;
    const nodeType = nodes.u8();
    if (nodeType !== 1 && nodeType !== 2) return reject("GroupInfo: ratchet tree extension does not decode");
    if ((nodeType === 1) !== (nodeIndex % 2 === 0)) return reject(`ratchet tree: node ${nodeIndex} has the wrong kind`);
    if (nodeType === 2) {
      nodes.skipVector(); // encryption_key
      nodes.skipVector(); // parent_hash
      nodes.skipVectorOf(4); // unmerged_leaves (u32 each)
      continue;
    }
    const identity = leafIdentity(nodes);
    if (typeof identity === "string") return reject(`ratchet tree: leaf ${nodeIndex / 2} has a ${identity}`);
    const device = parseDeviceId(identity);
    if (device === undefined) return reject(`ratchet tree: leaf ${nodeIndex / 2} identity is not a device id`);
    members.push({ leafIndex: nodeIndex / 2, deviceId: device.deviceId, homeserver: device.homeserver });
  }
  return members;
}

function outline(bytes: Uint8Array): GroupInfoOutline | Rejection {
  const reader = new Reader(bytes);
  if (reader.u16() !== 1) return reject("GroupInfo: unsupported protocol version");
  if (reader.u16() !== wireFormatGroupInfo) return reject("GroupInfo: wire format is not mls_group_info");
  if (reader.u16() !== 1) return reject("GroupInfo: unsupported protocol version");
  if (reader.u16() !== suiteOneCode) return reject(`GroupInfo: cipher suite is not ${channelCipherSuite}`);
  const groupId = reader.vector();
  const epoch = reader.u64();
  reader.skipVector(); // tree_hash
  reader.skipVector(); // confirmed_transcript_hash
  const witnessData = extensionsOfType(reader, witnessesExtensionType); // GroupContext extensions
  const trees = extensionsOfType(reader, ratchetTreeExtension);
  reader.skipVector(); // confirmation_tag
  const signer = reader.u32();
  reader.skipVector(); // signature
  if (!reader.done) return reject(`GroupInfo: ${bytes.length - reader.at} trailing bytes after the MLSMessage`);
  if (trees.length !== 1) return reject("GroupInfo: needs exactly one ratchet_tree extension");
  const members = treeMembers(trees[0]!);
  if (!Array.isArray(members)) return members;
  if (!members.some((m) => m.leafIndex === signer)) return reject(`GroupInfo: signer ${signer} is not a member`);
  const witnesses = witnessesOf(witnessData.map((extensionData) => ({ extensionType: witnessesExtensionType, extensionData })));
  if (!Array.isArray(witnesses)) return reject(`GroupInfo: ${witnesses.reason}`);
  return { groupId, epoch, signer, members, witnesses };
}

/** Reads the outline of an MLSMessage-framed GroupInfo (see the module comment). */
export function outlineGroupInfoMessage(bytes: Uint8Array): GroupInfoOutline | Rejection {
  if (!(bytes instanceof Uint8Array)) return reject("GroupInfo: not a byte array");
  if (bytes.length === 0) return reject("GroupInfo: empty");
  if (bytes.length > maxGroupInfoBytes) return reject(`GroupInfo: ${bytes.length} bytes exceeds the limit of ${maxGroupInfoBytes}`);
  try {
    return outline(bytes);
  } catch (error) {
    if (error instanceof Truncated) return reject("GroupInfo: not a decodable MLSMessage");
    throw error;
  }
}
