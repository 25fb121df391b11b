/**
 * A commit intent is what the caller wants a commit to achieve (add these devices, remove those, rotate my
 * keys), independent of the epoch it lands in. After losing a race, the SDK rebuilds the intent against
 * the winner's epoch: what the winner already did is dropped, and an intent the winner fully achieved
 * needs no commit at all.
 */
import type { ClientState, KeyPackage, Proposal } from "ts-mls";
import { verifyKeyPackage } from "ts-mls/keyPackage.js";
import type { CiphersuiteImpl } from "ts-mls";
import { channelCipherSuite } from "../mls/identity.ts";
import { deviceIdOfCredential, treeMembers, toHex } from "./mls-codec.ts";

/** What a commit should achieve. */
export type CommitIntent =
  | { readonly kind: "add"; readonly keyPackages: readonly KeyPackage[] }
  | { readonly kind: "remove"; readonly deviceIds: readonly string[] }
  | { readonly kind: "update" };

/** The proposals realizing an intent on one state, or "satisfied" when nothing is left to do. */
export type BuiltProposals = { readonly kind: "proposals"; readonly proposals: Proposal[] } | { readonly kind: "satisfied" };

/**
 * Checks KeyPackages handed to addMembers before any commit is built: suite 1, a device-id credential,
 * a valid signature, and no device twice. Throws with the reason (bad caller input, not a retry case).
 */
export async function checkKeyPackages(keyPackages: readonly KeyPackage[], impl: CiphersuiteImpl): Promise<void> {
  const seen = new Set<string>();
  for (const kp of keyPackages) {
    if (kp.cipherSuite !== channelCipherSuite) throw new Error(`KeyPackage uses ${String(kp.cipherSuite)}, channels use ${channelCipherSuite}`);
    const deviceId = deviceIdOfCredential(kp.leafNode.credential);
    if (deviceId === undefined) throw new Error("KeyPackage credential is not a device id");
    if (seen.has(deviceId)) throw new Error(`two KeyPackages for ${deviceId}`);
    seen.add(deviceId);
    if (!(await verifyKeyPackage(kp, impl.signature))) throw new Error(`KeyPackage of ${deviceId} has a bad signature`);
  }
}

function addProposals(keyPackages: readonly KeyPackage[], state: ClientState): BuiltProposals {
  const members = treeMembers(state.ratchetTree);
  const memberIds = new Set(members.map((m) => m.deviceId));
  const memberKeys = new Set<string>();
  for (const m of members) {
    const node = state.ratchetTree[m.leafIndex * 2];
    if (node?.nodeType === "leaf") memberKeys.add(toHex(node.leaf.signaturePublicKey));
  }
  const remaining = keyPackages.filter((kp) => {
    const deviceId = deviceIdOfCredential(kp.leafNode.credential);
    return deviceId !== undefined && !memberIds.has(deviceId) && !memberKeys.has(toHex(kp.leafNode.signaturePublicKey));
  });
  if (remaining.length === 0) return { kind: "satisfied" };
  return { kind: "proposals", proposals: remaining.map((keyPackage) => ({ proposalType: "add", add: { keyPackage } })) };
}

function removeProposals(deviceIds: readonly string[], state: ClientState, ownLeafIndex: number): BuiltProposals {
  const wanted = new Set(deviceIds);
  const leaves = treeMembers(state.ratchetTree).filter((m) => wanted.has(m.deviceId));
  if (leaves.some((m) => m.leafIndex === ownLeafIndex)) throw new Error("a device cannot commit its own removal; another member must remove it");
  if (leaves.length === 0) return { kind: "satisfied" };
  return { kind: "proposals", proposals: leaves.map((m) => ({ proposalType: "remove", remove: { removed: m.leafIndex } })) };
}

/**
 * The proposals that realize `intent` on `state`: adds of devices not yet members, removes of devices still
 * members, or nothing for a key update (an empty commit, which carries a fresh UpdatePath).
 */
export function buildProposals(intent: CommitIntent, state: ClientState, ownLeafIndex: number): BuiltProposals {
  switch (intent.kind) {
    case "add":
      return addProposals(intent.keyPackages, state);
    case "remove":
      return removeProposals(intent.deviceIds, state, ownLeafIndex);
    case "update":
      return { kind: "proposals", proposals: [] };
  }
}
