import type { GroupId, NodeId } from "../raft/types.ts";

/**
 * The proposal or read went to a node that does not lead the group; retry at
 * `leader` ("" if unknown), whose client API listens at `leaderAddress` ("" if unknown).
 */
export class NotLeaderError extends Error {
  constructor(readonly groupId: GroupId, readonly leader: NodeId, readonly leaderAddress = "") {
    super(leader === "" ? `group ${groupId} has no known leader` : `not the leader of group ${groupId}; the leader is ${leader}`);
    this.name = "NotLeaderError";
  }
}

/** The leader refused the proposal for now: too much uncommitted data, or a leadership transfer. */
export class ProposalRefusedError extends Error {
  constructor(readonly groupId: GroupId, readonly reason: string) {
    super(`group ${groupId} refused the proposal: ${reason}`);
    this.name = "ProposalRefusedError";
  }
}

/** The proposal's log slot went to another entry (a leader change); it was not applied. */
export class ProposalDroppedError extends Error {
  constructor(readonly groupId: GroupId) {
    super(`the proposal to group ${groupId} was dropped by a leader change; retry`);
    this.name = "ProposalDroppedError";
  }
}

/** The outcome is unknown: the node moved past the proposal through a snapshot, or stopped. */
export class OutcomeUnknownError extends Error {
  constructor(readonly groupId: GroupId, reason: string) {
    super(`outcome of the proposal to group ${groupId} is unknown: ${reason}`);
    this.name = "OutcomeUnknownError";
  }
}

/** The group is not hosted by this homeserver. */
export class UnknownGroupError extends Error {
  constructor(readonly groupId: GroupId) {
    super(`group ${groupId} is not hosted here`);
    this.name = "UnknownGroupError";
  }
}
