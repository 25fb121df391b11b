/**
 * Checks 3 and 6: the GroupInfo a channel's view moves to, after a commit or at creation.
 */
import type { AuthenticationService, Credential } from "ts-mls";
import { verifyGroupInfoSignature } from "ts-mls/groupInfo.js";
import { encodeGroupContext } from "ts-mls/groupContext.js";
import { validateRatchetTree } from "ts-mls/clientState.js";
import { bytesEqual } from "./decode.ts";
import { decodeGroupInfoMessage, type DecodedGroupInfo, type Member, type PublicGroupView } from "./group-view.ts";
import { parseDeviceId } from "./identity.ts";
import { guarded, reject, type Rejection } from "./rejection.ts";
import { channelSuiteImpl } from "./suite.ts";
import type { VerifiedCommit } from "./verify-commit.ts";

/** A GroupInfo accepted as the channel's new view. */
export interface VerifiedGroupInfo {
  readonly ok: true;
  readonly epoch: bigint;
  /** Members of the new epoch (leafIndex -> deviceId), in leaf order. */
  readonly members: readonly Member[];
  /** The channel's new view, to store in place of the old one. */
  readonly view: PublicGroupView;
}

/** Accepts a credential only when it is a Basic credential holding a device id (the epochd convention). */
const deviceAuthService: AuthenticationService = {
  validateCredential: (credential: Credential) => Promise.resolve(credential.credentialType === "basic" && parseDeviceId(credential.identity) !== undefined),
};

/** Lifetimes are not checked on receive: that would read the clock, and apply must be deterministic. */
const noClockLifetimeConfig = { maximumTotalLifetime: 2_628_000n, validateLifetimeOnReceive: false };

async function verifySignerSignature(decoded: DecodedGroupInfo, what: string): Promise<true | Rejection> {
  const signerNode = decoded.tree[decoded.groupInfo.signer * 2];
  if (signerNode === undefined || signerNode.nodeType !== "leaf") return reject(`${what}: signer is not a member`);
  const impl = await channelSuiteImpl();
  if (!(await verifyGroupInfoSignature(decoded.groupInfo, signerNode.leaf.signaturePublicKey, impl.signature))) {
    return reject(`${what}: signature does not verify with the signer's leaf key`);
  }
  return true;
}

async function checkNext(view: PublicGroupView, commit: VerifiedCommit, bytes: Uint8Array): Promise<VerifiedGroupInfo | Rejection> {
  const what = "next GroupInfo";
  if (!bytesEqual(commit.groupId, view.groupId) || commit.epoch !== view.epoch) return reject(`${what}: the commit was verified against another view`);
  const decoded = decodeGroupInfoMessage(bytes);
  if ("reason" in decoded) return reject(`${what}: ${decoded.reason}`);
  const context = decoded.context;
  if (!bytesEqual(context.groupId, view.groupId)) return reject(`${what}: belongs to another group`);
  if (context.epoch !== view.epoch + 1n) return reject(`${what}: is for epoch ${context.epoch}, expected ${view.epoch + 1n}`);
  if (decoded.groupInfo.signer !== commit.sender.leafIndex) return reject(`${what}: signed by leaf ${decoded.groupInfo.signer}, not by the committer (leaf ${commit.sender.leafIndex})`);
  if (!bytesEqual(decoded.groupInfo.confirmationTag, commit.confirmationTag)) return reject(`${what}: confirmation tag differs from the commit's`);
  if (!bytesEqual(decoded.treeBytes, commit.next.ratchetTree)) return reject(`${what}: ratchet tree is not the tree this commit produces`);
  if (!bytesEqual(encodeGroupContext(context), commit.next.groupContext)) {
    return reject(`${what}: group context (tree hash, transcript hash or extensions) is not the one this commit produces`);
  }
  const signed = await verifySignerSignature(decoded, what);
  if (signed !== true) return signed;
  return { ok: true, epoch: context.epoch, members: decoded.members, view: { groupId: view.groupId, epoch: context.epoch, groupInfo: bytes } };
}

/**
 * Verifies the committer's GroupInfo for the epoch after `commit` (the result of verifyPublicCommit on the
 * same view): same group, epoch + 1, signed by the committer with its key in the NEW tree, the commit's
 * confirmation tag, and exactly the ratchet tree and GroupContext (tree hash, confirmed transcript hash,
 * extensions) the commit produces. Never throws; deterministic.
 */
export async function verifyNextGroupInfo(view: PublicGroupView, commit: VerifiedCommit, nextGroupInfoBytes: Uint8Array): Promise<VerifiedGroupInfo | Rejection> {
  return guarded("next GroupInfo", () => checkNext(view, commit, nextGroupInfoBytes));
}

async function checkInitial(groupId: Uint8Array, bytes: Uint8Array): Promise<VerifiedGroupInfo | Rejection> {
  const what = "initial GroupInfo";
  const decoded = decodeGroupInfoMessage(bytes);
  if ("reason" in decoded) return reject(`${what}: ${decoded.reason}`);
  const context = decoded.context;
  if (!bytesEqual(context.groupId, groupId)) return reject(`${what}: belongs to another group`);
  if (context.epoch !== 0n) return reject(`${what}: is for epoch ${context.epoch}, a new channel starts at epoch 0`);
  if (context.confirmedTranscriptHash.length !== 0) return reject(`${what}: epoch 0 must have an empty transcript hash`);
  if (decoded.members.length !== 1) return reject(`${what}: a new channel has exactly one member, its creator`);
  const impl = await channelSuiteImpl();
  const invalid = await validateRatchetTree(decoded.tree, context, noClockLifetimeConfig, deviceAuthService, context.treeHash, impl);
  if (invalid !== undefined) return reject(`${what}: ratchet tree is invalid (leaf signature, parent hash or tree hash)`);
  const signed = await verifySignerSignature(decoded, what);
  if (signed !== true) return signed;
  return { ok: true, epoch: 0n, members: decoded.members, view: { groupId, epoch: 0n, groupInfo: bytes } };
}

/**
 * Verifies a channel creator's initial GroupInfo (ts-mls groups start at epoch 0): the requested group id,
 * epoch 0, one member (the creator, a valid device), a valid tree, signed by that member. Never throws.
 */
export async function verifyInitialGroupInfo(groupId: Uint8Array, groupInfoBytes: Uint8Array): Promise<VerifiedGroupInfo | Rejection> {
  return guarded("initial GroupInfo", () => checkInitial(groupId, groupInfoBytes));
}
