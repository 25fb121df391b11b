/**
 * The public half of processing a commit: the next epoch's ratchet tree and GroupContext, computed from the
 * current view and the commit alone. No group secret is involved: proposals change leaves, the UpdatePath
 * carries the new public keys and parent hashes, and the transcript hash needs only the current GroupInfo's
 * confirmed transcript hash and confirmation tag. The committer's next GroupInfo must match this exactly,
 * so a committer cannot hand the channel a tree or context its members would not compute themselves.
 */
import type { CiphersuiteImpl, Extension, RatchetTree, UpdatePath } from "ts-mls";
import type { FramedContentCommit } from "ts-mls/framedContent.js";
import { addLeafNode, encodeRatchetTree, removeLeafNode, updateLeafNode } from "ts-mls/ratchetTree.js";
import { applyUpdatePath } from "ts-mls/updatePath.js";
import { treeHashRoot } from "ts-mls/treeHash.js";
import { nextEpochContext, validateLeafNodeCredentialAndKeyUniqueness } from "ts-mls/clientState.js";
import { encodeGroupContext } from "ts-mls/groupContext.js";
import type { LeafIndex } from "ts-mls/treemath.js";
import { leafCount, membersOf, type DecodedGroupInfo, type Member } from "./group-view.ts";
import { maxMembers } from "./limits.ts";
import type { ProposalEffect } from "./proposals.ts";
import { reject, type Rejection } from "./rejection.ts";

/** The next epoch as the channel's members will compute it. */
export interface ExpectedNextEpoch {
  /** The encoded GroupContext of the next epoch (epoch + 1, tree hash, confirmed transcript hash, extensions). */
  readonly groupContext: Uint8Array;
  /** The encoded ratchet tree of the next epoch (as the ratchet_tree extension carries it). */
  readonly ratchetTree: Uint8Array;
  /** The members of the next epoch. */
  readonly members: readonly Member[];
}

/** The proposals of a commit, grouped by kind in the order MLS applies them. */
export interface GroupedEffects {
  readonly updates: readonly Extract<ProposalEffect, { kind: "update" }>[];
  readonly removes: readonly Extract<ProposalEffect, { kind: "remove" }>[];
  readonly adds: readonly Extract<ProposalEffect, { kind: "add" }>[];
  readonly contextExtensions: readonly Extension[];
}

async function mutateTree(current: DecodedGroupInfo, effects: GroupedEffects): Promise<RatchetTree | Rejection> {
  let tree = current.tree;
  for (const update of effects.updates) {
    const err = await validateLeafNodeCredentialAndKeyUniqueness(current.tree, update.leafNode, update.leafIndex);
    if (err !== undefined) return reject(`update of leaf ${update.leafIndex}: keys not unique or credential unsupported`);
    tree = updateLeafNode(tree, update.leafNode, update.leafIndex as LeafIndex);
  }
  for (const remove of effects.removes) tree = removeLeafNode(tree, remove.removed.leafIndex as LeafIndex);
  for (const add of effects.adds) {
    const err = await validateLeafNodeCredentialAndKeyUniqueness(current.tree, add.added.keyPackage.leafNode);
    if (err !== undefined) return reject(`add of ${add.added.deviceId}: keys not unique or credential unsupported`);
    tree = addLeafNode(tree, add.added.keyPackage.leafNode)[0];
    if (leafCount(tree) > maxMembers) return reject(`commit: the tree would exceed ${maxMembers} leaves`);
  }
  return tree;
}

async function applyPath(tree: RatchetTree, senderLeafIndex: number, path: UpdatePath, impl: CiphersuiteImpl): Promise<RatchetTree | Rejection> {
  const err = await validateLeafNodeCredentialAndKeyUniqueness(tree, path.leafNode, senderLeafIndex);
  if (err !== undefined) return reject("commit path: leaf keys not unique or credential unsupported");
  try {
    return await applyUpdatePath(tree, senderLeafIndex as LeafIndex, path, impl.hash);
  } catch {
    return reject("commit path: UpdatePath does not fit the tree (length, reused keys or parent hash)");
  }
}

/**
 * Computes the next epoch from the current view and a commit whose signature and proposals were already
 * checked. `content` and `signature` are the commit's framed content and signature (they enter the
 * confirmed transcript hash).
 */
export async function computeNextEpoch(current: DecodedGroupInfo, content: FramedContentCommit, signature: Uint8Array, senderLeafIndex: number, effects: GroupedEffects, impl: CiphersuiteImpl): Promise<ExpectedNextEpoch | Rejection> {
  const mutated = await mutateTree(current, effects);
  if ("reason" in mutated) return mutated;
  const path = content.commit.path;
  const tree = path === undefined ? mutated : await applyPath(mutated, senderLeafIndex, path, impl);
  if ("reason" in tree) return tree;
  const members = membersOf(tree);
  if (!Array.isArray(members)) return members;
  const treeHash = await treeHashRoot(tree, impl.hash);
  // Same rule as ts-mls 1.6 processCommit: a GroupContextExtensions proposal replaces the extensions
  // only when it carries at least one extension.
  const extensions = effects.contextExtensions.length > 0 ? [...effects.contextExtensions] : current.context.extensions;
  const context = await nextEpochContext({ ...current.context, extensions }, "mls_public_message", content, signature, treeHash, current.groupInfo.confirmationTag, impl.hash);
  return { groupContext: encodeGroupContext(context), ratchetTree: encodeRatchetTree(tree), members };
}
