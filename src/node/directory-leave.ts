/**
 * `epochd leave` on the leaving homeserver: refuse when the voters left
 * behind would not form a reachable quorum; mark it "left" in the directory;
 * hand over the leadership of every group it leads; wait until the
 * directory group's leader has removed it (the directory reconciler does
 * that); the caller then stops the process. A removed homeserver may never
 * learn that its removal committed, so it asks the leader.
 */
import { randomBytes } from "node:crypto";
import type { RaftStatus } from "../raft/raw-node.ts";
import { Role, type GroupId, type NodeId } from "../raft/types.ts";
import type { HomeserverRecord } from "./directory-command.ts";
import { encodeMembershipCommand } from "./directory-membership-command.ts";
import type { DirectoryMembership } from "./directory-membership.ts";
import { MembershipError } from "./directory-invites.ts";

/** How often leave re-asks for a transfer or polls the leader. */
const pollMs = 250;

/** Membership of a group as another homeserver sees it. */
export interface RemoteMembership {
  readonly leaderId: NodeId;
  readonly members: readonly NodeId[];
  readonly appliedIndex: number;
}

/** What leaving needs from the homeserver. */
export interface LeaveContext {
  readonly selfId: NodeId;
  /** The directory group. */
  readonly groupId: GroupId;
  readonly driver: {
    status(groupId: GroupId): RaftStatus;
    groupIds(): GroupId[];
    transferLeadership(groupId: GroupId, to: NodeId): void;
  };
  /** Whether this homeserver's stream to `peer` is up right now. */
  isConnected(peer: NodeId): boolean;
  readonly membership: DirectoryMembership;
  directory(): ReadonlyMap<string, HomeserverRecord>;
  proposeAnywhere(data: Uint8Array): boolean;
  /** Asks homeserver `id` for its view of the directory group; undefined when it does not answer. */
  askMembership(id: NodeId): Promise<RemoteMembership | undefined>;
}

/**
 * Refuses (FAILED_PRECONDITION) when removing this homeserver from a group it
 * votes in would leave no reachable quorum, or the directory group no voter.
 */
export function checkLeaveQuorum(context: LeaveContext): void {
  for (const groupId of context.driver.groupIds()) {
    const conf = context.driver.status(groupId).confState;
    if (!conf.voters.includes(context.selfId)) continue;
    const remaining = conf.voters.filter((id) => id !== context.selfId);
    // A group this homeserver alone votes in ends with it, except the directory group, which must outlive it.
    if (remaining.length === 0 && groupId !== context.groupId) continue;
    if (remaining.length === 0) throw new MembershipError("precondition", `${context.selfId} is the only voter of ${groupId}; it cannot leave`);
    const reachable = remaining.filter((id) => context.isConnected(id)).length;
    const quorum = Math.floor(remaining.length / 2) + 1;
    if (reachable < quorum) {
      throw new MembershipError("precondition", `leaving would leave ${groupId} with ${reachable} reachable of ${remaining.length} voters, below its quorum of ${quorum}`);
    }
  }
}

async function until<T>(deadline: number, what: string, attempt: () => Promise<T | undefined> | T | undefined): Promise<T> {
  while (Date.now() < deadline) {
    const value = await attempt();
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
  throw new MembershipError("unavailable", `timed out ${what}; run leave again`);
}

/** Runs the whole leave; resolves with the leader's applied index once this homeserver is no longer a member. */
export async function leaveCluster(context: LeaveContext, waitMs: number): Promise<{ index: number }> {
  const deadline = Date.now() + waitMs;
  const self = context.selfId;
  if (context.directory().get(self)?.status !== "left") checkLeaveQuorum(context);
  await until(deadline, "recording the leave", async () => {
    if (context.directory().get(self)?.status === "left") return true;
    const nonce = randomBytes(12).toString("hex");
    const waiting = context.membership.wait(nonce, 2000);
    if (!context.proposeAnywhere(encodeMembershipCommand({ kind: "leave", nonce, homeserverId: self }))) return undefined;
    const result = await waiting;
    if (result !== undefined && !result.ok) throw new MembershipError(result.code, result.reason);
    return result === undefined ? undefined : true;
  });
  const asked = new Map<GroupId, number>();
  await until(deadline, "handing leadership over", () => {
    const leading = context.driver.groupIds().filter((g) => {
      const status = context.driver.status(g);
      return status.role === Role.Leader && status.confState.voters.some((id) => id !== self);
    });
    for (const groupId of leading) handOver(context, groupId, asked);
    return leading.length === 0 ? true : undefined;
  });
  return until(deadline, "waiting to be removed", async () => {
    const status = context.driver.status(context.groupId);
    const local = [...status.confState.voters, ...status.confState.learners];
    if (!local.includes(self)) return { index: status.applied };
    if (status.leader === "" || status.leader === self) return undefined;
    const remote = await context.askMembership(status.leader);
    return remote !== undefined && !remote.members.includes(self) ? { index: remote.appliedIndex } : undefined;
  });
}

/** Asks (again, at most every second) for leadership of `groupId` to move to its most caught-up other voter. */
function handOver(context: LeaveContext, groupId: GroupId, asked: Map<GroupId, number>): void {
  if (Date.now() - (asked.get(groupId) ?? 0) < 1000) return;
  const status = context.driver.status(groupId);
  let best: NodeId | undefined;
  let bestMatch = -1;
  for (const id of [...status.confState.voters].sort()) {
    const match = status.progress.get(id)?.match ?? 0;
    if (id !== context.selfId && context.isConnected(id) && match > bestMatch) {
      best = id;
      bestMatch = match;
    }
  }
  if (best === undefined) return;
  asked.set(groupId, Date.now());
  context.driver.transferLeadership(groupId, best);
}
