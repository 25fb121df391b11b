/**
 * The part every PublicMessage check shares: framing, group, epoch, content type, member sender, and the
 * sender's signature against its leaf in the channel's current tree.
 */
import type { CiphersuiteImpl, FramedContent, FramedContentAuthData } from "ts-mls";
import { verifyFramedContentSignature } from "ts-mls/framedContent.js";
import { bytesEqual, decodeFramed } from "./decode.ts";
import { decodeView, leafCount, type DecodedGroupInfo, type Member, type PublicGroupView } from "./group-view.ts";
import { maxMessageBytes } from "./limits.ts";
import { reject, type Rejection } from "./rejection.ts";
import { memberAt } from "./proposals.ts";
import { channelSuiteImpl } from "./suite.ts";

/** A PublicMessage whose framing and signature were verified against the current view. */
export interface VerifiedPublicMessage {
  readonly content: FramedContent;
  readonly auth: FramedContentAuthData;
  readonly sender: Member;
  readonly current: DecodedGroupInfo;
  readonly impl: CiphersuiteImpl;
}

/** Explains an epoch mismatch the way clients need it (behind: catch up; ahead: impossible). */
export function epochMismatch(what: string, got: bigint, current: bigint): Rejection {
  const relation = got < current ? "an old epoch" : "a future epoch";
  return reject(`${what}: built on epoch ${got}, ${relation}; the channel is at epoch ${current}`);
}

/**
 * Decodes `bytes` as a PublicMessage of `contentType` for the view's group and epoch, sent by a member,
 * and verifies its signature with the sender's leaf key from the view's ratchet tree. The membership tag
 * is not checked: it needs the epoch's membership key, a group secret the server does not have.
 */
export async function verifyPublicFraming(view: PublicGroupView, bytes: Uint8Array, contentType: "commit" | "proposal"): Promise<VerifiedPublicMessage | Rejection> {
  const message = decodeFramed(bytes, maxMessageBytes, contentType);
  if ("reason" in message) return message;
  if (message.wireformat === "mls_private_message") return reject(`${contentType}: got a PrivateMessage where this channel requires a PublicMessage`);
  if (message.wireformat !== "mls_public_message") return reject(`${contentType}: wire format ${message.wireformat} is not a PublicMessage`);
  const { content, auth } = message.publicMessage;
  if (!bytesEqual(content.groupId, view.groupId)) return reject(`${contentType}: addressed to another group`);
  if (content.epoch !== view.epoch) return epochMismatch(contentType, content.epoch, view.epoch);
  if (content.contentType !== contentType) return reject(`${contentType}: content type is ${content.contentType}`);
  if (content.sender.senderType !== "member") return reject(`${contentType}: sender type ${content.sender.senderType} is not supported, only members`);
  const current = decodeView(view);
  if ("reason" in current) return current;
  const leafIndex = content.sender.leafIndex;
  const sender = leafIndex < leafCount(current.tree) ? memberAt(current, leafIndex) : undefined;
  if (sender === undefined) return reject(`${contentType}: sender leaf ${leafIndex} is not a member`);
  const node = current.tree[leafIndex * 2];
  if (node === undefined || node.nodeType !== "leaf") return reject(`${contentType}: sender leaf ${leafIndex} is not a member`);
  const impl = await channelSuiteImpl();
  const valid = await verifyFramedContentSignature(node.leaf.signaturePublicKey, "mls_public_message", content, auth, current.context, impl.signature);
  if (!valid) return reject(`${contentType}: signature does not verify with the key of leaf ${leafIndex} (${sender.deviceId})`);
  return { content, auth, sender, current, impl };
}
