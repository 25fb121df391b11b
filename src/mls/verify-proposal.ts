/**
 * Check 4: a standalone PublicMessage proposal for the channel's current epoch.
 */
import { makeProposalRef } from "ts-mls/authenticatedContent.js";
import type { PublicGroupView, Member } from "./group-view.ts";
import { checkProposal, type AddedDevice, type ProposalEffect, type ProposalKind } from "./proposals.ts";
import { verifyPublicFraming } from "./public-message.ts";
import { guarded, type Rejection } from "./rejection.ts";

/** A verified standalone proposal. */
export interface VerifiedProposal {
  readonly ok: true;
  readonly epoch: bigint;
  readonly sender: Member;
  readonly kind: ProposalKind;
  /**
   * Its proposal reference (RFC 9420 section 5.2: RefHash("MLS 1.0 Proposal Reference", AuthenticatedContent)),
   * which a later commit uses to include it by reference.
   */
  readonly ref: Uint8Array;
  /** For an Add: the device it adds. */
  readonly add?: AddedDevice;
  /** For a Remove: the member it removes. */
  readonly remove?: Member;
  /** The checked effect, used when a commit includes this proposal by reference. */
  readonly effect: ProposalEffect;
}

/**
 * Verifies a PublicMessage proposal from a member for the view's epoch: framing, signature, and the
 * proposal itself (KeyPackage signatures and device id for Add, target a member for Remove, own leaf
 * signature and unchanged identity for Update). Never throws; deterministic.
 */
export async function verifyPublicProposal(view: PublicGroupView, bytes: Uint8Array): Promise<VerifiedProposal | Rejection> {
  return guarded("proposal", async () => {
    const framed = await verifyPublicFraming(view, bytes, "proposal");
    if ("reason" in framed) return framed;
    if (framed.content.contentType !== "proposal") return { ok: false, reason: "proposal: content type is not proposal" } as const;
    const effect = await checkProposal(framed.content.proposal, framed.sender.leafIndex, framed.current, framed.impl);
    if ("reason" in effect) return effect;
    const ref = await makeProposalRef({ wireformat: "mls_public_message", content: framed.content, auth: framed.auth }, framed.impl.hash);
    return {
      ok: true,
      epoch: framed.content.epoch,
      sender: framed.sender,
      kind: effect.kind,
      ref,
      ...(effect.kind === "add" ? { add: effect.added } : {}),
      ...(effect.kind === "remove" ? { remove: effect.removed } : {}),
      effect,
    };
  });
}
