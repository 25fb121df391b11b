/**
 * What a received commit does to this device, read before ts-mls processes it.
 *
 * The ts-mls fact (1.6.4): processCommit decides that the commit removed the receiver by looking at the
 * receiver's leaf slot AFTER applying all proposals (`selfRemoved = tree[ownLeaf] === undefined`). A commit
 * that removes the receiver and adds a device in the same commit puts the newcomer into that freed slot (adds
 * fill the leftmost blank leaf), so ts-mls takes the removed receiver for a member, tries to decrypt the
 * UpdatePath and throws "No overlap between provided private keys and update path" (an InternalError).
 * Found by the ordering property: a member's self-Remove proposal committed by reference together with an
 * add. The SDK therefore checks the removal itself, on the commit's proposals (by value and by reference).
 */
import type { ClientState, MLSMessage } from "ts-mls";
import { bytesToBase64 } from "ts-mls/util/byteArray.js";

/**
 * True when `message` is a PublicMessage commit whose proposals (by value, or by reference to a proposal
 * `state` holds) remove the leaf of `state`'s device. False for anything else, including PrivateMessage
 * commits, whose proposals only ts-mls can read.
 */
export function commitRemovesOwnLeaf(message: MLSMessage, state: ClientState): boolean {
  if (message.wireformat !== "mls_public_message") return false;
  const content = message.publicMessage.content;
  if (content.contentType !== "commit") return false;
  const ownLeaf = state.privatePath.leafIndex;
  return content.commit.proposals.some((item) => {
    const proposal = item.proposalOrRefType === "proposal" ? item.proposal : state.unappliedProposals[bytesToBase64(item.reference)]?.proposal;
    return proposal?.proposalType === "remove" && proposal.remove.removed === ownLeaf;
  });
}
