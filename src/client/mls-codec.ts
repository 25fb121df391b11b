/**
 * The MLS framing the client speaks with the cluster: GroupInfo, Welcome and KeyPackage travel as
 * MLSMessage-framed bytes (the servers reject them bare), commits as PublicMessage, application messages
 * as PrivateMessage. Also the member view of a ratchet tree (device id and sponsoring homeserver per leaf),
 * which is where the client derives a certificate's expected voters from.
 */
import { createHash } from "node:crypto";
import { decodeMlsMessage, encodeMlsMessage, type GroupInfo, type KeyPackage, type MLSMessage, type RatchetTree, type Welcome } from "ts-mls";
import { parseDeviceId } from "../mls/identity.ts";

/** One member of a group as the client sees it in its own tree. */
export interface TreeMember {
  readonly leafIndex: number;
  readonly deviceId: string;
  /** The homeserver sponsoring the device: the part of the device id after the last '@'. */
  readonly homeserver: string;
}

/** SHA-256 of `bytes` (a commit hash is SHA-256 of the commit's MLSMessage bytes). */
export function sha256(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(bytes).digest());
}

/** Lower-case hex of `bytes`, for logs, map keys and the demo's output. */
export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

/** Encodes a GroupInfo as an MLSMessage. */
export function encodeGroupInfoMessage(groupInfo: GroupInfo): Uint8Array {
  return encodeMlsMessage({ version: "mls10", wireformat: "mls_group_info", groupInfo });
}

/** Encodes a Welcome as an MLSMessage. */
export function encodeWelcomeMessage(welcome: Welcome): Uint8Array {
  return encodeMlsMessage({ version: "mls10", wireformat: "mls_welcome", welcome });
}

/** Encodes a KeyPackage as an MLSMessage (how KeyPackages are published and handed to an adder). */
export function encodeKeyPackageMessage(keyPackage: KeyPackage): Uint8Array {
  return encodeMlsMessage({ version: "mls10", wireformat: "mls_key_package", keyPackage });
}

/** Decodes a whole MLSMessage; throws a clear error on malformed or trailing bytes. */
export function decodeWholeMessage(bytes: Uint8Array, what: string): MLSMessage {
  let decoded: [MLSMessage, number] | undefined;
  try {
    decoded = decodeMlsMessage(bytes, 0);
  } catch (error) {
    throw new Error(`${what}: malformed MLSMessage (${(error as Error).message})`);
  }
  if (decoded === undefined) throw new Error(`${what}: malformed MLSMessage`);
  if (decoded[1] !== bytes.length) throw new Error(`${what}: ${bytes.length - decoded[1]} trailing bytes after the MLSMessage`);
  return decoded[0];
}

/** Decodes an MLSMessage-framed Welcome. */
export function decodeWelcomeMessage(bytes: Uint8Array): Welcome {
  const message = decodeWholeMessage(bytes, "Welcome");
  if (message.wireformat !== "mls_welcome") throw new Error(`Welcome: wire format is ${message.wireformat}`);
  return message.welcome;
}

/** Decodes an MLSMessage-framed KeyPackage. */
export function decodeKeyPackageMessage(bytes: Uint8Array): KeyPackage {
  const message = decodeWholeMessage(bytes, "KeyPackage");
  if (message.wireformat !== "mls_key_package") throw new Error(`KeyPackage: wire format is ${message.wireformat}`);
  return message.keyPackage;
}

/** The device id of a Basic credential, or undefined when it does not follow the device-id convention. */
export function deviceIdOfCredential(credential: { credentialType: string; identity?: Uint8Array }): string | undefined {
  if (credential.credentialType !== "basic" || credential.identity === undefined) return undefined;
  return parseDeviceId(credential.identity)?.deviceId;
}

/**
 * The members of `tree` (its non-blank leaves). Throws if a leaf's credential is not a device id: the
 * client accepted that tree through its authentication service, so this is a programmer error.
 */
export function treeMembers(tree: RatchetTree): TreeMember[] {
  const members: TreeMember[] = [];
  for (let nodeIndex = 0; nodeIndex < tree.length; nodeIndex += 2) {
    const node = tree[nodeIndex];
    if (node === undefined || node.nodeType !== "leaf") continue;
    const credential = node.leaf.credential;
    const parsed = credential.credentialType === "basic" ? parseDeviceId(credential.identity) : undefined;
    if (parsed === undefined) throw new Error(`leaf ${nodeIndex / 2} does not carry a device-id credential`);
    members.push({ leafIndex: nodeIndex / 2, deviceId: parsed.deviceId, homeserver: parsed.homeserver });
  }
  return members;
}

/** The sorted, distinct homeservers sponsoring the members of `tree`: the channel's voters as the client knows them. */
export function treeHomeservers(tree: RatchetTree): string[] {
  return [...new Set(treeMembers(tree).map((m) => m.homeserver))].sort();
}
