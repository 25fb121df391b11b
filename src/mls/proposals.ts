/**
 * What a single MLS proposal does to a channel, checked against the channel's current tree. Shared by the
 * standalone-proposal check and the commit check (proposals by value and resolved references).
 */
import type { CiphersuiteImpl, KeyPackage, LeafNode, Proposal } from "ts-mls";
import { makeKeyPackageRef, verifyKeyPackage } from "ts-mls/keyPackage.js";
import { verifyLeafNodeSignature, verifyLeafNodeSignatureKeyPackage } from "ts-mls/leafNode.js";
import { extensionsSupportedByCapabilities } from "ts-mls/extension.js";
import { channelCipherSuite, parseDeviceId } from "./identity.ts";
import { bytesEqual } from "./decode.ts";
import { leafCount, type DecodedGroupInfo, type Member } from "./group-view.ts";
import { reject, type Rejection } from "./rejection.ts";

/** The proposal kinds epochd reports. `reinit` and `external_init` are refused (not supported yet). */
export type ProposalKind = "add" | "remove" | "update" | "psk" | "group_context_extensions" | "custom";

/** A device a proposal adds: its id and the KeyPackage that will become its leaf. */
export interface AddedDevice {
  readonly deviceId: string;
  readonly homeserver: string;
  readonly keyPackage: KeyPackage;
  /** Its KeyPackageRef (RFC 9420 section 5.2): how a Welcome names this recipient. */
  readonly keyPackageRef: Uint8Array;
}

/** The checked effect of one proposal. */
export type ProposalEffect =
  | { readonly kind: "add"; readonly added: AddedDevice }
  | { readonly kind: "remove"; readonly removed: Member }
  | { readonly kind: "update"; readonly leafIndex: number; readonly leafNode: LeafNode }
  | { readonly kind: "psk" | "group_context_extensions" | "custom"; readonly proposal: Proposal };

/** The member at `leafIndex` in the decoded tree, if that leaf is occupied. */
export function memberAt(decoded: DecodedGroupInfo, leafIndex: number): Member | undefined {
  return decoded.members.find((m) => m.leafIndex === leafIndex);
}

/** Checks an Add's KeyPackage: suite, version, signatures, device-id credential, distinct keys. */
export async function checkKeyPackage(keyPackage: KeyPackage, decoded: DecodedGroupInfo, impl: CiphersuiteImpl): Promise<AddedDevice | Rejection> {
  if (keyPackage.cipherSuite !== channelCipherSuite) return reject("add: KeyPackage uses another cipher suite");
  if (keyPackage.version !== "mls10") return reject("add: KeyPackage has an unsupported protocol version");
  const leaf = keyPackage.leafNode;
  if (leaf.credential.credentialType !== "basic") return reject("add: KeyPackage credential is not Basic");
  const identity = parseDeviceId(leaf.credential.identity);
  if (identity === undefined) return reject("add: KeyPackage identity is not a device id");
  if (bytesEqual(keyPackage.initKey, leaf.hpkePublicKey)) return reject("add: KeyPackage init key equals its encryption key");
  if (!extensionsSupportedByCapabilities(decoded.context.extensions, leaf.capabilities)) {
    return reject(`add: ${identity.deviceId} does not support the group's extensions`);
  }
  if (!(await verifyKeyPackage(keyPackage, impl.signature))) return reject(`add: KeyPackage signature of ${identity.deviceId} is invalid`);
  if (!(await verifyLeafNodeSignatureKeyPackage(leaf, impl.signature))) return reject(`add: leaf node signature of ${identity.deviceId} is invalid`);
  const keyPackageRef = await makeKeyPackageRef(keyPackage, impl.hash);
  return { deviceId: identity.deviceId, homeserver: identity.homeserver, keyPackage, keyPackageRef };
}

/**
 * Checks a leaf node a member sends for its own leaf (Update proposal or a commit's UpdatePath): signed by
 * its own key over (group id, leaf index), and the identity unchanged, so a key update can never rename a
 * device (or move it to another homeserver).
 */
export async function checkOwnLeafNode(leafNode: LeafNode, leafIndex: number, decoded: DecodedGroupInfo, impl: CiphersuiteImpl, what: string): Promise<true | Rejection> {
  const current = decoded.tree[leafIndex * 2];
  if (current === undefined || current.nodeType !== "leaf") return reject(`${what}: leaf ${leafIndex} is not a member`);
  const before = current.leaf.credential;
  const after = leafNode.credential;
  if (before.credentialType !== "basic" || after.credentialType !== "basic" || !bytesEqual(before.identity, after.identity)) {
    return reject(`${what}: a leaf node may not change its device identity`);
  }
  if (!(await verifyLeafNodeSignature(leafNode, decoded.context.groupId, leafIndex, impl.signature))) {
    return reject(`${what}: leaf node signature is invalid`);
  }
  return true;
}

/**
 * Checks one proposal sent (or, for a commit by value, committed) by the member at `senderLeafIndex` and
 * returns its effect. Reinit and ExternalInit are refused: epochd channels do not support them yet.
 */
export async function checkProposal(proposal: Proposal, senderLeafIndex: number, decoded: DecodedGroupInfo, impl: CiphersuiteImpl): Promise<ProposalEffect | Rejection> {
  switch (proposal.proposalType) {
    case "add": {
      const added = await checkKeyPackage(proposal.add.keyPackage, decoded, impl);
      return "reason" in added ? added : { kind: "add", added };
    }
    case "remove": {
      const leafIndex = proposal.remove.removed;
      const removed = leafIndex < leafCount(decoded.tree) ? memberAt(decoded, leafIndex) : undefined;
      return removed === undefined ? reject(`remove: leaf ${leafIndex} is not a member`) : { kind: "remove", removed };
    }
    case "update": {
      const leafNode = proposal.update.leafNode;
      if (leafNode.leafNodeSource !== "update") return reject("update: leaf node source is not update");
      const ok = await checkOwnLeafNode(leafNode, senderLeafIndex, decoded, impl, "update");
      return ok === true ? { kind: "update", leafIndex: senderLeafIndex, leafNode } : ok;
    }
    case "psk":
    case "group_context_extensions":
      return { kind: proposal.proposalType, proposal };
    case "reinit":
    case "external_init":
      return reject(`${proposal.proposalType}: proposal type not supported by epochd channels`);
    default:
      return { kind: "custom", proposal };
  }
}
