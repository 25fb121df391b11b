/**
 * Check 2: a PublicMessage commit against the channel's current view.
 */
import type { Extension } from "ts-mls";
import type { FramedContentCommit } from "ts-mls/framedContent.js";
import { sha256, toHex } from "./decode.ts";
import type { Member, PublicGroupView } from "./group-view.ts";
import { maxProposalsPerCommit } from "./limits.ts";
import { computeNextEpoch, type ExpectedNextEpoch, type GroupedEffects } from "./next-epoch.ts";
import { checkOwnLeafNode, checkProposal, type ProposalEffect, type ProposalKind } from "./proposals.ts";
import { verifyPublicFraming, type VerifiedPublicMessage } from "./public-message.ts";
import { guarded, reject, type Rejection } from "./rejection.ts";
import { verifyPublicProposal } from "./verify-proposal.ts";

/** What a verified commit does; the channel state machine decides roles and membership from it. */
export interface VerifiedCommit {
  readonly ok: true;
  readonly groupId: Uint8Array;
  /** The epoch the commit builds on (the view's epoch). */
  readonly epoch: bigint;
  /** The committer. */
  readonly sender: Member;
  /** Device ids added (by value and by reference), in commit order. */
  readonly adds: readonly string[];
  /** The added devices with their homeservers and KeyPackageRefs (to match the Welcome's recipients). */
  readonly added: readonly { readonly deviceId: string; readonly homeserver: string; readonly keyPackageRef: Uint8Array }[];
  /** Members removed (by value and by reference). */
  readonly removes: readonly Member[];
  /** Members whose Update proposals (always by reference) the commit applies. */
  readonly updates: readonly Member[];
  /** Kinds of the other proposals applied (psk, group_context_extensions, custom). */
  readonly others: readonly ProposalKind[];
  /** True when the commit carries an UpdatePath: the committer's own key update. */
  readonly hasPath: boolean;
  /** References of the proposals included by reference, in commit order. */
  readonly proposalRefs: readonly Uint8Array[];
  readonly confirmationTag: Uint8Array;
  /** SHA-256 of the commit's MLSMessage bytes: its name in certificates. */
  readonly commitHash: Uint8Array;
  /** The next epoch as members will compute it; verifyNextGroupInfo compares the committer's GroupInfo to it. */
  readonly next: ExpectedNextEpoch;
}

interface Resolved {
  readonly effect: ProposalEffect;
  readonly proposer: number;
}

async function resolveReferences(view: PublicGroupView, framed: VerifiedPublicMessage, commit: FramedContentCommit["commit"], accepted: readonly Uint8Array[]): Promise<Resolved[] | Rejection> {
  const wanted = new Set(commit.proposals.flatMap((p) => (p.proposalOrRefType === "reference" ? [toHex(p.reference)] : [])));
  const byRef = new Map<string, Resolved>();
  if (wanted.size > 0) {
    for (const bytes of accepted.slice(0, maxProposalsPerCommit * 4)) {
      const proposal = await verifyPublicProposal(view, bytes);
      if (proposal.ok && wanted.has(toHex(proposal.ref))) byRef.set(toHex(proposal.ref), { effect: proposal.effect, proposer: proposal.sender.leafIndex });
    }
  }
  const resolved: Resolved[] = [];
  for (const item of commit.proposals) {
    if (item.proposalOrRefType === "proposal") {
      if (item.proposal.proposalType === "update") return reject("commit: an Update proposal may not be committed by value");
      const effect = await checkProposal(item.proposal, framed.sender.leafIndex, framed.current, framed.impl);
      if ("reason" in effect) return reject(`commit: ${effect.reason}`);
      resolved.push({ effect, proposer: framed.sender.leafIndex });
    } else {
      const found = byRef.get(toHex(item.reference));
      if (found === undefined) return reject(`commit: proposal ${toHex(item.reference).slice(0, 16)}... is not an accepted proposal of this epoch`);
      resolved.push(found);
    }
  }
  return resolved;
}

/** RFC 9420 section 12.2 rules on a commit's proposal list that ts-mls clients enforce too. */
function groupEffects(resolved: readonly Resolved[], committer: number): GroupedEffects | Rejection {
  const touched = new Set<number>();
  const updates: Extract<ProposalEffect, { kind: "update" }>[] = [];
  const removes: Extract<ProposalEffect, { kind: "remove" }>[] = [];
  const adds: Extract<ProposalEffect, { kind: "add" }>[] = [];
  const contextExtensions: Extension[] = [];
  let extensionProposals = 0;
  for (const { effect } of resolved) {
    if (effect.kind === "update" || effect.kind === "remove") {
      const leaf = effect.kind === "update" ? effect.leafIndex : effect.removed.leafIndex;
      if (leaf === committer) return reject(`commit: may not ${effect.kind} the committer's own leaf through a proposal`);
      if (touched.has(leaf)) return reject(`commit: leaf ${leaf} is updated or removed twice`);
      touched.add(leaf);
    }
    if (effect.kind === "update") updates.push(effect);
    else if (effect.kind === "remove") removes.push(effect);
    else if (effect.kind === "add") adds.push(effect);
    else if (effect.kind === "group_context_extensions" && effect.proposal.proposalType === "group_context_extensions") {
      extensionProposals += 1;
      contextExtensions.push(...effect.proposal.groupContextExtensions.extensions);
    }
  }
  if (extensionProposals > 1) return reject("commit: more than one GroupContextExtensions proposal");
  return { updates, removes, adds, contextExtensions };
}

async function checkCommit(view: PublicGroupView, commitBytes: Uint8Array, accepted: readonly Uint8Array[]): Promise<VerifiedCommit | Rejection> {
  const framed = await verifyPublicFraming(view, commitBytes, "commit");
  if ("reason" in framed) return framed;
  const { content, auth, sender } = framed;
  if (content.contentType !== "commit" || auth.contentType !== "commit") return reject("commit: content type is not commit");
  const commit = content.commit;
  if (commit.proposals.length > maxProposalsPerCommit) return reject(`commit: more than ${maxProposalsPerCommit} proposals`);
  const resolved = await resolveReferences(view, framed, commit, accepted);
  if ("reason" in resolved) return resolved;
  const effects = groupEffects(resolved, sender.leafIndex);
  if ("reason" in effects) return effects;
  const needsPath = resolved.length === 0 || effects.updates.length > 0 || effects.removes.length > 0;
  if (needsPath && commit.path === undefined) return reject("commit: an UpdatePath is required (empty commit, update or remove)");
  if (commit.path !== undefined) {
    const ok = await checkOwnLeafNode(commit.path.leafNode, sender.leafIndex, framed.current, framed.impl, "commit path");
    if (ok !== true) return ok;
  }
  const next = await computeNextEpoch(framed.current, { ...content, contentType: "commit", commit }, auth.signature, sender.leafIndex, effects, framed.impl);
  if ("reason" in next) return next;
  return {
    ok: true,
    groupId: content.groupId,
    epoch: content.epoch,
    sender,
    adds: effects.adds.map((a) => a.added.deviceId),
    added: effects.adds.map(({ added }) => ({ deviceId: added.deviceId, homeserver: added.homeserver, keyPackageRef: added.keyPackageRef })),
    removes: effects.removes.map((r) => r.removed),
    updates: effects.updates.map((u) => framed.current.members.find((m) => m.leafIndex === u.leafIndex) ?? sender),
    others: resolved.flatMap(({ effect }) => (effect.kind === "psk" || effect.kind === "group_context_extensions" || effect.kind === "custom" ? [effect.kind] : [])),
    hasPath: commit.path !== undefined,
    proposalRefs: commit.proposals.flatMap((p) => (p.proposalOrRefType === "reference" ? [p.reference] : [])),
    confirmationTag: auth.confirmationTag,
    commitHash: sha256(commitBytes),
    next,
  };
}

/**
 * Verifies a PublicMessage commit against the channel's current view: size, framing, group, epoch (old
 * and future epochs are told apart in the reason), content type, a member sender whose signature verifies
 * with its leaf key in the current tree, every proposal (by value, or by reference to one of
 * `acceptedProposals`, the MLSMessage bytes of the standalone proposals the channel accepted this epoch),
 * the MLS rules on the proposal list, the UpdatePath (leaf signature, unchanged identity, parent hashes),
 * and computes the next epoch's tree and GroupContext. Never throws; the result depends only on the inputs.
 */
export async function verifyPublicCommit(view: PublicGroupView, commitBytes: Uint8Array, acceptedProposals: readonly Uint8Array[] = []): Promise<VerifiedCommit | Rejection> {
  return guarded("commit", () => checkCommit(view, commitBytes, acceptedProposals));
}
