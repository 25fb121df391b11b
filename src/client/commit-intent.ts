/**
 * A commit intent is what the caller wants a commit to achieve (add these devices, remove those, rotate my
 * keys), independent of the epoch it lands in. After losing a race, the SDK rebuilds the intent against
 * the winner's epoch: what the winner already did is dropped, and an intent the winner fully achieved
 * needs no commit at all.
 */
import type { ClientState, KeyPackage, Proposal, UnappliedProposals } from "ts-mls";
import { verifyKeyPackage } from "ts-mls/keyPackage.js";
import type { CiphersuiteImpl } from "ts-mls";
import { channelCipherSuite } from "../mls/identity.ts";
import { deviceIdOfCredential, treeMembers, toHex } from "./mls-codec.ts";

/** What a commit should achieve. */
export type CommitIntent =
  | { readonly kind: "add"; readonly keyPackages: readonly KeyPackage[] }
  | { readonly kind: "remove"; readonly deviceIds: readonly string[] }
  | { readonly kind: "update" }
  /** Commit the standalone proposals this device received in the current epoch (nothing to do if none). */
  | { readonly kind: "pending" };

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

/**
 * Whether this device may commit a received proposal: RFC 9420 (12.2) forbids a commit that removes its own
 * committer or applies the committer's own Update, so a device whose own removal is pending cannot carry it
 * (another member must).
 */
function committable(proposal: Proposal, ownLeafIndex: number, senderLeafIndex: number | undefined): boolean {
  if (proposal.proposalType === "remove") return proposal.remove.removed !== ownLeafIndex;
  if (proposal.proposalType === "update") return senderLeafIndex !== ownLeafIndex;
  return true;
}

/**
 * The standalone proposals of the current epoch this device will commit by reference: ts-mls' createCommit
 * includes every entry of `state.unappliedProposals`, so the SDK hands it a state holding only these.
 */
export function committableProposals(state: ClientState, ownLeafIndex: number): UnappliedProposals {
  const kept: UnappliedProposals = {};
  for (const [ref, pending] of Object.entries(state.unappliedProposals)) {
    if (committable(pending.proposal, ownLeafIndex, pending.senderLeafIndex)) kept[ref] = pending;
  }
  return kept;
}

/** Leaves removed, and signature keys (hex) added, by the pending proposals a commit will carry by reference. */
function pendingEffects(pending: UnappliedProposals): { removedLeaves: Set<number>; addedKeys: Set<string> } {
  const removedLeaves = new Set<number>();
  const addedKeys = new Set<string>();
  for (const { proposal } of Object.values(pending)) {
    if (proposal.proposalType === "remove") removedLeaves.add(proposal.remove.removed);
    if (proposal.proposalType === "add") addedKeys.add(toHex(proposal.add.keyPackage.leafNode.signaturePublicKey));
  }
  return { removedLeaves, addedKeys };
}

function addProposals(keyPackages: readonly KeyPackage[], state: ClientState, pending: UnappliedProposals): BuiltProposals {
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
  // A pending Add proposal for the same key already does it: adding it by value too would add the device twice.
  const proposedKeys = pendingEffects(pending).addedKeys;
  const byValue = remaining.filter((kp) => !proposedKeys.has(toHex(kp.leafNode.signaturePublicKey)));
  return { kind: "proposals", proposals: byValue.map((keyPackage) => ({ proposalType: "add", add: { keyPackage } })) };
}

function removeProposals(deviceIds: readonly string[], state: ClientState, ownLeafIndex: number, pending: UnappliedProposals): BuiltProposals {
  const wanted = new Set(deviceIds);
  const leaves = treeMembers(state.ratchetTree).filter((m) => wanted.has(m.deviceId));
  if (leaves.some((m) => m.leafIndex === ownLeafIndex)) throw new Error("a device cannot commit its own removal; another member must remove it");
  if (leaves.length === 0) return { kind: "satisfied" };
  // A member leaving at the same time has a pending self-Remove: the commit carries that one by reference,
  // and a second Remove of the same leaf by value would make the commit invalid (RFC 9420 12.2).
  const proposedRemovals = pendingEffects(pending).removedLeaves;
  const byValue = leaves.filter((m) => !proposedRemovals.has(m.leafIndex));
  return { kind: "proposals", proposals: byValue.map((m) => ({ proposalType: "remove", remove: { removed: m.leafIndex } })) };
}

/**
 * The proposals (by value) that realize `intent` on `state`, next to the committable pending proposals the
 * commit carries by reference (committableProposals): adds of devices not yet members, removes of devices
 * still members, nothing for a key update (an empty commit, which carries a fresh UpdatePath), nothing for
 * "pending" (satisfied when no proposal is pending). What a pending proposal already does is not repeated.
 */
export function buildProposals(intent: CommitIntent, state: ClientState, ownLeafIndex: number): BuiltProposals {
  const pending = committableProposals(state, ownLeafIndex);
  switch (intent.kind) {
    case "add":
      return addProposals(intent.keyPackages, state, pending);
    case "remove":
      return removeProposals(intent.deviceIds, state, ownLeafIndex, pending);
    case "update":
      return { kind: "proposals", proposals: [] };
    case "pending":
      return Object.keys(pending).length === 0 ? { kind: "satisfied" } : { kind: "proposals", proposals: [] };
  }
}
