/**
 * Server-side MLS checks of epochd (ts-mls 1.6). Every function is deterministic (its result depends only
 * on its arguments: no clock, no randomness, no configuration) and total (malformed input gives a
 * Rejection with a reason, never an exception), so the channel state machine can call it inside Raft
 * apply on every homeserver. Conventions: see identity.ts. Limits: see limits.ts.
 */
export * from "./limits.ts";
export { channelCipherSuite, parseDeviceId, deviceIdentityBytes, isValidDeviceHomeserver, type DeviceIdentity } from "./identity.ts";
export { reject, isRejection, type Rejection } from "./rejection.ts";
export { sha256 } from "./decode.ts";
export type { WireformatShortName } from "./decode.ts";
export { decodeGroupInfoMessage, type PublicGroupView, type Member } from "./group-view.ts";
export { outlineGroupInfoMessage, type GroupInfoOutline } from "./group-info-outline.ts";
export type { ProposalKind, AddedDevice } from "./proposals.ts";
export type { ExpectedNextEpoch } from "./next-epoch.ts";
export { inspectMessage, inspectPrivateCommit, inspectApplicationMessage, inspectWelcome, type InspectedMessage, type InspectedWelcome } from "./inspect.ts";
export { verifyPublicCommit, type VerifiedCommit } from "./verify-commit.ts";
export { verifyPublicProposal, type VerifiedProposal } from "./verify-proposal.ts";
export { verifyNextGroupInfo, verifyInitialGroupInfo, type VerifiedGroupInfo } from "./verify-group-info.ts";
